//! The learning-rate schedule of SimCLR (Chen et al. 2020): linear warmup, then cosine decay
//! (Loshchilov and Hutter 2017, "SGDR", without restarts), and SimCLR's batch-size scaling
//! rules for the peak learning rate.
//!
//! With peak `lr`, `warmup` steps, `total` steps and final fraction `alpha`, the learning rate
//! of step `s` (0-based: `s` updates have been applied before this one) is
//! ```text
//! s <  warmup:          lr * s / warmup
//! warmup <= s < total:  lr * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * (s - warmup) / (total - warmup))))
//! s >= total:           lr * alpha
//! ```
//! exactly SimCLR's `learning_rate` (TF `CosineDecay` over `total - warmup` steps with
//! `alpha`), so the first update of a warmed-up run has learning rate 0, the first step after
//! warmup has the peak `lr`, and the learning rate falls monotonically to `lr * alpha`.
//! Computed in `f64` and rounded once to `f32`.

use crate::error::{Error, Result};

const OP: &str = "optim::LrSchedule";

/// How the peak learning rate grows with the batch size (SimCLR's `learning_rate_scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrScaling {
    /// `lr = base * batch / 256` (Goyal et al. 2017; SimCLR's default, base 0.3 for LARS).
    Linear,
    /// `lr = base * sqrt(batch)` (SimCLR's `sqrt`, base 0.075; better for small batches and
    /// long runs, SimCLR appendix B.1).
    Sqrt,
}

impl LrScaling {
    /// The peak learning rate for `batch` examples per step from the base learning rate.
    pub fn scale(self, base: f32, batch: usize) -> f32 {
        let b = batch as f64;
        let s = match self {
            LrScaling::Linear => b / 256.0,
            LrScaling::Sqrt => b.sqrt(),
        };
        (f64::from(base) * s) as f32
    }
}

/// Linear warmup then cosine decay (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    peak: f32,
    warmup: u64,
    total: u64,
    final_fraction: f32,
}

impl LrSchedule {
    /// A schedule with peak learning rate `peak`, `warmup` warmup steps among `total` steps,
    /// decaying to 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `total` is 0, `warmup > total`, or `peak` is negative
    /// or not finite.
    pub fn new(peak: f32, warmup: u64, total: u64) -> Result<Self> {
        Self::with_final_fraction(peak, warmup, total, 0.0)
    }

    /// As [`new`](Self::new), decaying to `peak * final_fraction` instead of 0 (TF's
    /// `CosineDecay` `alpha`).
    ///
    /// # Errors
    /// As [`new`](Self::new), and when `final_fraction` is outside `[0, 1]`.
    pub fn with_final_fraction(
        peak: f32,
        warmup: u64,
        total: u64,
        final_fraction: f32,
    ) -> Result<Self> {
        let bad = |msg: String| Err(Error::InvalidArgument { op: OP, msg });
        if total == 0 {
            return bad("the total number of steps is 0".into());
        }
        if warmup > total {
            return bad(format!(
                "{warmup} warmup steps exceed the {total} total steps"
            ));
        }
        if !(peak.is_finite() && peak >= 0.0) {
            return bad(format!("learning rate {peak} is not a finite value >= 0"));
        }
        if !(0.0..=1.0).contains(&final_fraction) {
            return bad(format!("final fraction {final_fraction} is outside [0, 1]"));
        }
        Ok(LrSchedule {
            peak,
            warmup,
            total,
            final_fraction,
        })
    }

    /// A schedule whose peak is `scaling.scale(base, batch)`.
    ///
    /// # Errors
    /// As [`with_final_fraction`](Self::with_final_fraction).
    pub fn scaled(
        base: f32,
        scaling: LrScaling,
        batch: usize,
        warmup: u64,
        total: u64,
        final_fraction: f32,
    ) -> Result<Self> {
        Self::with_final_fraction(scaling.scale(base, batch), warmup, total, final_fraction)
    }

    /// The peak learning rate.
    pub fn peak(&self) -> f32 {
        self.peak
    }

    /// The number of warmup steps.
    pub fn warmup_steps(&self) -> u64 {
        self.warmup
    }

    /// The total number of steps.
    pub fn total_steps(&self) -> u64 {
        self.total
    }

    /// The fraction of the peak reached at the end.
    pub fn final_fraction(&self) -> f32 {
        self.final_fraction
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        let peak = f64::from(self.peak);
        let alpha = f64::from(self.final_fraction);
        let v = if step < self.warmup {
            peak * step as f64 / self.warmup as f64
        } else if step >= self.total {
            peak * alpha
        } else {
            let x = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * x).cos());
            peak * (alpha + (1.0 - alpha) * cosine)
        };
        v as f32
    }
}
