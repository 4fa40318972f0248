//! AdamW, Adam with decoupled weight decay (Loshchilov and Hutter 2019, "Decoupled Weight
//! Decay Regularization"), exactly `torch.optim.AdamW`'s update (without `amsgrad`).
//!
//! At step `t` (1 for the first step), for every element of a group, with the decay applied
//! only where the group's `decay` is set:
//! ```text
//! p = p * (1 - lr * wd)
//! m = beta1 * m + (1 - beta1) * g
//! v = beta2 * v + (1 - beta2) * g * g
//! p = p - (lr / (1 - beta1^t)) * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps))
//! ```
//! As in PyTorch, `1 - lr * wd`, `lr / (1 - beta1^t)` and `sqrt(1 - beta2^t)` are computed
//! in `f64` and rounded to `f32`; `eps` is added outside the square root.

use super::{check_hyper, check_step, chunks3, load_named, ParamGroup};
use crate::error::Result;

pub(crate) const KIND: &str = "adamw";
const OP: &str = "optim::adamw";
const NAMES: [&str; 2] = ["adamw.exp_avg", "adamw.exp_avg_sq"];

/// AdamW hyperparameters (PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay
/// 0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment, in `[0, 1)`.
    pub beta1: f32,
    /// Decay of the second moment, in `[0, 1)`.
    pub beta2: f32,
    /// Added to the denominator outside the square root, `>= 0`.
    pub eps: f32,
    /// Decoupled weight decay, `>= 0`, applied to groups with `decay` set.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        check_hyper(OP, "beta1", self.beta1, 0.0, 1.0, true)?;
        check_hyper(OP, "beta2", self.beta2, 0.0, 1.0, true)?;
        check_hyper(OP, "eps", self.eps, 0.0, f32::MAX, false)?;
        check_hyper(OP, "weight_decay", self.weight_decay, 0.0, f32::MAX, false)
    }
}

/// AdamW over the flat arena; the two moments are arenas of the same length.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: u64,
}

impl AdamW {
    /// An optimizer for an arena of `len` parameters, its moments allocated (zeroed).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the config is out of range.
    pub fn new(config: AdamWConfig, len: usize) -> Result<Self> {
        config.validate()?;
        Ok(AdamW {
            config,
            m: vec![0.0; len],
            v: vec![0.0; len],
            steps: 0,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The arena length.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
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
        check_step(OP, self.m.len(), params, grads, groups, lr)?;
        let c = self.config;
        let t = (self.steps + 1) as f64;
        let lr64 = f64::from(lr);
        let bc1 = 1.0 - f64::from(c.beta1).powf(t);
        let bc2 = 1.0 - f64::from(c.beta2).powf(t);
        let step_size = (lr64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let shrink = (1.0 - lr64 * f64::from(c.weight_decay)) as f32;
        let (b1, b2, eps) = (c.beta1, c.beta2, c.eps);
        let (k1, k2) = (1.0 - b1, 1.0 - b2);
        for group in groups {
            let r = group.range.clone();
            let shrink = if group.decay { shrink } else { 1.0 };
            chunks3(
                &mut params[r.clone()],
                &mut self.m[r.clone()],
                &mut self.v[r.clone()],
                &grads[r],
                |p, m, v, g| {
                    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v).zip(g) {
                        let q = *p * shrink;
                        *m = b1 * *m + k1 * g;
                        *v = b2 * *v + k2 * g * g;
                        let denom = v.sqrt() / bc2_sqrt + eps;
                        *p = q - step_size * (*m / denom);
                    }
                },
            );
        }
        self.steps += 1;
        Ok(())
    }

    /// `[("adamw.exp_avg", m), ("adamw.exp_avg_sq", v)]`.
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        vec![
            (NAMES[0].to_string(), &self.m[..]),
            (NAMES[1].to_string(), &self.v[..]),
        ]
    }

    /// Restores the step counter (which sets the bias corrections) and both moments.
    ///
    /// # Errors
    /// As [`super::Optimizer::load_state_tensors`].
    pub fn load_state_tensors<I, N, T>(&mut self, steps: u64, tensors: I) -> Result<()>
    where
        I: IntoIterator<Item = (N, T)>,
        N: AsRef<str>,
        T: AsRef<[f32]>,
    {
        load_named(OP, &NAMES, &mut [&mut self.m, &mut self.v], tensors)?;
        self.steps = steps;
        Ok(())
    }
}
