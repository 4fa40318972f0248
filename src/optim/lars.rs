//! LARS, layer-wise adaptive rate scaling (You, Gitman and Ginsburg 2017, "Large Batch
//! Training of Convolutional Networks"), as SimCLR uses it (the `LARSOptimizer` of
//! google-research/simclr, `classic_momentum=True`).
//!
//! For every tensor (group), with `wd` applied only where the group's `decay` is set and the
//! trust ratio only where its `adapt` is set:
//! ```text
//! g'    = g + wd * p
//! trust = eta * ||p|| / ||g'||     (1 when either norm is 0, or when not adapted)
//! v     = momentum * v + (lr * trust) * g'
//! p     = p - (momentum * v + (lr * trust) * g')   (Nesterov)   or   p = p - v
//! ```
//! The norms are L2 norms over the whole tensor, summed in `f64` by fixed-tree reductions;
//! the trust ratio and `lr * trust` are computed in `f64` and rounded once to `f32`. The
//! velocity starts at zero, so the first step gives `v = lr * trust * g'`.

use super::{check_hyper, check_step, chunks2, decayed_grad_sum_squares, load_named, ParamGroup};
use crate::error::Result;
use crate::kernels::elementwise::sum_squares;

pub(crate) const KIND: &str = "lars";
const OP: &str = "optim::lars";
const NAMES: [&str; 1] = ["lars.momentum"];

/// LARS hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LarsConfig {
    /// Momentum factor, in `[0, 1)`; SimCLR uses 0.9 (the default).
    pub momentum: f32,
    /// Weight decay, `>= 0`, added to the gradient of groups with `decay` set; SimCLR uses
    /// 1e-6 (the default).
    pub weight_decay: f32,
    /// The trust coefficient, `>= 0`; 0.001 (the default) as in SimCLR and the paper.
    pub eta: f32,
    /// Nesterov momentum (default off, as in SimCLR).
    pub nesterov: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        LarsConfig {
            momentum: 0.9,
            weight_decay: 1e-6,
            eta: 0.001,
            nesterov: false,
        }
    }
}

impl LarsConfig {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        check_hyper(OP, "momentum", self.momentum, 0.0, 1.0, true)?;
        check_hyper(OP, "weight_decay", self.weight_decay, 0.0, f32::MAX, false)?;
        check_hyper(OP, "eta", self.eta, 0.0, f32::MAX, false)
    }
}

/// The LARS trust ratio from the squared norms of the parameters and of the decayed
/// gradient: `eta * ||p|| / ||g'||`, or 1 when either norm is 0 (or not a number).
pub fn trust_ratio(eta: f32, p_sum_squares: f64, g_sum_squares: f64) -> f64 {
    let (pn, gn) = (p_sum_squares.sqrt(), g_sum_squares.sqrt());
    if pn > 0.0 && gn > 0.0 {
        f64::from(eta) * pn / gn
    } else {
        1.0
    }
}

/// LARS over the flat arena; the velocity is an arena of the same length.
#[derive(Debug, Clone)]
pub struct Lars {
    config: LarsConfig,
    v: Vec<f32>,
    steps: u64,
}

impl Lars {
    /// An optimizer for an arena of `len` parameters, its velocity allocated (zeroed).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the config is out of range.
    pub fn new(config: LarsConfig, len: usize) -> Result<Self> {
        config.validate()?;
        Ok(Lars {
            config,
            v: vec![0.0; len],
            steps: 0,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LarsConfig {
        &self.config
    }

    /// The arena length.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
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
        check_step(OP, self.v.len(), params, grads, groups, lr)?;
        let c = self.config;
        for group in groups {
            let r = group.range.clone();
            let wd = (group.decay && c.weight_decay != 0.0).then_some(c.weight_decay);
            let trust = if group.adapt {
                let pss = sum_squares(&params[r.clone()]);
                let gss = decayed_grad_sum_squares(&grads[r.clone()], &params[r.clone()], wd);
                trust_ratio(c.eta, pss, gss)
            } else {
                1.0
            };
            let k = Coeffs {
                scaled_lr: (f64::from(lr) * trust) as f32,
                wd: c.weight_decay,
                momentum: c.momentum,
            };
            let body = kernel(wd.is_some(), c.nesterov);
            chunks2(
                &mut params[r.clone()],
                &mut self.v[r.clone()],
                &grads[r],
                |p, v, g| body(p, v, g, &k),
            );
        }
        self.steps += 1;
        Ok(())
    }

    /// `[("lars.momentum", velocity)]`.
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        vec![(NAMES[0].to_string(), &self.v[..])]
    }

    /// Restores the step counter and the velocity.
    ///
    /// # Errors
    /// As [`super::Optimizer::load_state_tensors`].
    pub fn load_state_tensors<I, N, T>(&mut self, steps: u64, tensors: I) -> Result<()>
    where
        I: IntoIterator<Item = (N, T)>,
        N: AsRef<str>,
        T: AsRef<[f32]>,
    {
        load_named(OP, &NAMES, &mut [&mut self.v], tensors)?;
        self.steps = steps;
        Ok(())
    }
}

/// The scalars of one tensor's update.
struct Coeffs {
    scaled_lr: f32,
    wd: f32,
    momentum: f32,
}

type Kernel = fn(&mut [f32], &mut [f32], &[f32], &Coeffs);

/// The update of one chunk with the switches resolved at compile time (one straight-line,
/// vectorizable loop per case).
#[inline(always)]
fn body<const DECAY: bool, const NESTEROV: bool>(
    p: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    k: &Coeffs,
) {
    let n = p.len();
    let (v, g) = (&mut v[..n], &g[..n]);
    for i in 0..n {
        let d = if DECAY { g[i] + k.wd * p[i] } else { g[i] };
        v[i] = k.momentum * v[i] + k.scaled_lr * d;
        p[i] -= if NESTEROV {
            k.momentum * v[i] + k.scaled_lr * d
        } else {
            v[i]
        };
    }
}

/// The compiled case of [`body`] for these switches.
fn kernel(decay: bool, nesterov: bool) -> Kernel {
    match (decay, nesterov) {
        (false, false) => body::<false, false>,
        (false, true) => body::<false, true>,
        (true, false) => body::<true, false>,
        (true, true) => body::<true, true>,
    }
}
