//! Per-feature standardization (z-scores): each feature's mean and population standard
//! deviation, accumulated in `f64` in two passes over the train features.
//!
//! [`Standardizer`] learns the statistics on the train features (a constant feature keeps a
//! standard deviation of 1) and applies them to train and test features alike.

use super::check::check_features;
use crate::error::Result;

/// Per-feature standardization `(x - mean) / std`, fitted on the train features.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// The mean of each feature.
    pub mean: Vec<f32>,
    /// The (population) standard deviation of each feature; 1 for a constant feature.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Means and standard deviations of the `n x dim` row-major features `x`, accumulated in
    /// `f64` (two passes). A feature whose standard deviation is below `1e-6 * (1 + |mean|)`
    /// counts as constant and keeps a standard deviation of 1, so it standardizes to 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `n` or `dim` is 0 or a
    /// value is NaN or infinite; [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) when
    /// `x.len() != n * dim`.
    pub fn fit(x: &[f32], n: usize, dim: usize) -> Result<Self> {
        check_features("Standardizer::fit", x, n, dim)?;
        let mut sum = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut sq = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n as f64).sqrt();
                if sd < 1e-6 * (1.0 + m.abs()) {
                    1.0
                } else {
                    sd as f32
                }
            })
            .collect();
        Ok(Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// The number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Standardizes the `n x dim` features `x` in place.
    ///
    /// # Errors
    /// As [`Standardizer::fit`], with `dim` the standardizer's.
    pub fn transform_in_place(&self, x: &mut [f32], n: usize) -> Result<()> {
        check_features("Standardizer::transform", x, n, self.dim())?;
        for row in x.chunks_exact_mut(self.dim()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }

    /// A standardized copy of the `n x dim` features `x`.
    ///
    /// # Errors
    /// As [`Standardizer::transform_in_place`].
    pub fn transform(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut out = x.to_vec();
        self.transform_in_place(&mut out, n)?;
        Ok(out)
    }
}
