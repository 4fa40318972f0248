//! SGD with momentum, dampening, Nesterov and coupled (L2) weight decay, exactly
//! `torch.optim.SGD`'s update (Sutskever et al. 2013 for the momentum form).
//!
//! For every element of a group, with `wd` applied only where the group's `decay` is set:
//! ```text
//! d = g + wd * p                          (when wd != 0)
//! if momentum != 0:
//!     b = d                               (first step)
//!     b = momentum * b + (1 - dampening) * d   (later steps)
//!     d = d + momentum * b                (Nesterov)   or   d = b
//! p = p - lr * d
//! ```

use super::{check_hyper, check_step, chunks2, load_named, ParamGroup};
use crate::error::Result;

pub(crate) const KIND: &str = "sgd";
const OP: &str = "optim::sgd";
const NAMES: [&str; 1] = ["sgd.momentum_buffer"];

/// SGD hyperparameters (PyTorch's names and defaults: everything 0, no Nesterov).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SgdConfig {
    /// Momentum factor, in `[0, 1)`.
    pub momentum: f32,
    /// Dampening of the gradient added to the momentum buffer, in `[0, 1]`.
    pub dampening: f32,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`, as in PyTorch).
    pub nesterov: bool,
    /// Coupled (L2) weight decay, `>= 0`, applied to groups with `decay` set.
    pub weight_decay: f32,
}

impl SgdConfig {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        check_hyper(OP, "momentum", self.momentum, 0.0, 1.0, true)?;
        check_hyper(OP, "dampening", self.dampening, 0.0, 1.0, false)?;
        check_hyper(OP, "weight_decay", self.weight_decay, 0.0, f32::MAX, false)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return super::invalid(
                OP,
                "Nesterov momentum requires momentum > 0 and dampening = 0".into(),
            );
        }
        Ok(())
    }
}

/// SGD over the flat arena; the momentum buffer is an arena of the same length.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    buf: Vec<f32>,
    steps: u64,
}

impl Sgd {
    /// An optimizer for an arena of `len` parameters, its momentum buffer allocated (zeroed).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the config is out of range.
    pub fn new(config: SgdConfig, len: usize) -> Result<Self> {
        config.validate()?;
        Ok(Sgd {
            config,
            buf: vec![0.0; len],
            steps: 0,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The arena length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update (see the module docs); allocates nothing.
    ///
    /// # Errors
    /// As [`super::Optimizer::step`].
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        groups: &[ParamGroup],
        lr: f32,
    ) -> Result<()> {
        check_step(OP, self.buf.len(), params, grads, groups, lr)?;
        let c = self.config;
        let k = Coeffs {
            lr,
            wd: c.weight_decay,
            momentum: c.momentum,
            keep: 1.0 - c.dampening,
        };
        let first = self.steps == 0;
        for group in groups {
            let r = group.range.clone();
            let decay = group.decay && c.weight_decay != 0.0;
            let body = kernel(decay, c.momentum != 0.0, first, c.nesterov);
            chunks2(
                &mut params[r.clone()],
                &mut self.buf[r.clone()],
                &grads[r],
                |p, b, g| body(p, b, g, &k),
            );
        }
        self.steps += 1;
        Ok(())
    }

    /// `[("sgd.momentum_buffer", buffer)]`.
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        vec![(NAMES[0].to_string(), &self.buf[..])]
    }

    /// Restores the step counter and the momentum buffer.
    ///
    /// # Errors
    /// As [`super::Optimizer::load_state_tensors`].
    pub fn load_state_tensors<I, N, T>(&mut self, steps: u64, tensors: I) -> Result<()>
    where
        I: IntoIterator<Item = (N, T)>,
        N: AsRef<str>,
        T: AsRef<[f32]>,
    {
        load_named(OP, &NAMES, &mut [&mut self.buf], tensors)?;
        self.steps = steps;
        Ok(())
    }
}

/// The scalars of one step.
struct Coeffs {
    lr: f32,
    wd: f32,
    momentum: f32,
    keep: f32,
}

type Kernel = fn(&mut [f32], &mut [f32], &[f32], &Coeffs);

/// The update of one chunk with every loop-invariant switch resolved at compile time, so each
/// case is one straight-line loop the compiler vectorizes.
#[inline(always)]
fn body<const DECAY: bool, const MOMENTUM: bool, const FIRST: bool, const NESTEROV: bool>(
    p: &mut [f32],
    b: &mut [f32],
    g: &[f32],
    k: &Coeffs,
) {
    let n = p.len();
    let (b, g) = (&mut b[..n], &g[..n]);
    for i in 0..n {
        let mut d = if DECAY { g[i] + k.wd * p[i] } else { g[i] };
        if MOMENTUM {
            b[i] = if FIRST {
                d
            } else {
                k.momentum * b[i] + k.keep * d
            };
            d = if NESTEROV {
                d + k.momentum * b[i]
            } else {
                b[i]
            };
        }
        p[i] -= k.lr * d;
    }
}

/// The compiled case of [`body`] for these switches.
fn kernel(decay: bool, momentum: bool, first: bool, nesterov: bool) -> Kernel {
    match (decay, momentum, first, nesterov) {
        (false, false, _, _) => body::<false, false, false, false>,
        (true, false, _, _) => body::<true, false, false, false>,
        (false, true, false, false) => body::<false, true, false, false>,
        (false, true, false, true) => body::<false, true, false, true>,
        (false, true, true, false) => body::<false, true, true, false>,
        (false, true, true, true) => body::<false, true, true, true>,
        (true, true, false, false) => body::<true, true, false, false>,
        (true, true, false, true) => body::<true, true, false, true>,
        (true, true, true, false) => body::<true, true, true, false>,
        (true, true, true, true) => body::<true, true, true, true>,
    }
}
