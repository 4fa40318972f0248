//! Fully connected layer in PyTorch layout on top of [`gemm`]: `Y = X W^T + b` with the bias
//! (and an optional ReLU) in the GEMM epilogue; backward `dX = dY W`, `dW = dY^T X`,
//! `db = column sums of dY`, each with a `beta` for gradient accumulation.
//!
//! Shapes: `X` is `N x in`, `W` is `out x in`, `b` and `db` are `out`, `Y`/`dY` `N x out`,
//! all dense row-major. The GEMM never splits its reduction across threads and the bias
//! gradient sums every column sequentially in `f64`, so results are identical for any
//! thread count.

use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, Fused, GemmParams, MatMut, MatRef, Transpose};
use rayon::prelude::*;

/// The dimensions of one linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Batch rows.
    pub n: usize,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    fn check(&self, op: &'static str, len: usize, rows: usize, cols: usize) -> Result<()> {
        if len != rows * cols {
            return Err(Error::ShapeMismatch {
                op,
                lhs: [len].into(),
                rhs: [rows, cols].into(),
            });
        }
        Ok(())
    }
}

/// `y = act(x W^T + b)`, `act` the identity or ReLU; `b` optional.
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `linear_forward` when a slice does not fit the dimensions.
pub fn linear_forward(
    l: &Linear,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "linear_forward";
    l.check(OP, x.len(), l.n, l.in_features)?;
    l.check(OP, w.len(), l.out_features, l.in_features)?;
    l.check(OP, y.len(), l.n, l.out_features)?;
    if let Some(b) = b {
        l.check(OP, b.len(), 1, l.out_features)?;
    }
    let epi = Fused {
        col_bias: b,
        relu,
        ..Fused::default()
    };
    gemm(
        &GemmParams::new().trans_b(Transpose::Yes).epilogue(&epi),
        MatRef::row_major(x, l.n, l.in_features)?,
        MatRef::row_major(w, l.out_features, l.in_features)?,
        MatMut::row_major(y, l.n, l.out_features)?,
    )
}

/// Input gradient `dx <- dy W + beta * dx` (`beta = 0`: `dx` is not read).
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `linear_backward_input`.
pub fn linear_backward_input(
    l: &Linear,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    beta: f32,
) -> Result<()> {
    const OP: &str = "linear_backward_input";
    l.check(OP, dy.len(), l.n, l.out_features)?;
    l.check(OP, w.len(), l.out_features, l.in_features)?;
    l.check(OP, dx.len(), l.n, l.in_features)?;
    gemm(
        &GemmParams::new().beta(beta),
        MatRef::row_major(dy, l.n, l.out_features)?,
        MatRef::row_major(w, l.out_features, l.in_features)?,
        MatMut::row_major(dx, l.n, l.in_features)?,
    )
}

/// Weight gradient `dw <- dy^T x + beta * dw` (`beta = 1` accumulates).
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `linear_backward_weight`.
pub fn linear_backward_weight(
    l: &Linear,
    dy: &[f32],
    x: &[f32],
    dw: &mut [f32],
    beta: f32,
) -> Result<()> {
    const OP: &str = "linear_backward_weight";
    l.check(OP, dy.len(), l.n, l.out_features)?;
    l.check(OP, x.len(), l.n, l.in_features)?;
    l.check(OP, dw.len(), l.out_features, l.in_features)?;
    gemm(
        &GemmParams::new().beta(beta).trans_a(Transpose::Yes),
        MatRef::row_major(dy, l.n, l.out_features)?,
        MatRef::row_major(x, l.n, l.in_features)?,
        MatMut::row_major(dw, l.out_features, l.in_features)?,
    )
}

/// Columns per parallel task of the bias gradient.
const COLS: usize = 64;

/// Bias gradient `db[j] <- sum_i dy[i, j] + beta * db[j]` (`beta = 0`: `db` is not read);
/// every column summed over the rows in order, in `f64`.
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `linear_backward_bias`.
pub fn linear_backward_bias(l: &Linear, dy: &[f32], db: &mut [f32], beta: f32) -> Result<()> {
    const OP: &str = "linear_backward_bias";
    l.check(OP, dy.len(), l.n, l.out_features)?;
    l.check(OP, db.len(), 1, l.out_features)?;
    let out = l.out_features;
    db.par_chunks_mut(COLS).enumerate().for_each(|(t, dbc)| {
        let j0 = t * COLS;
        let mut acc = [0.0f64; COLS];
        for i in 0..l.n {
            let row = &dy[i * out + j0..i * out + j0 + dbc.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += f64::from(v);
            }
        }
        for (o, &a) in dbc.iter_mut().zip(&acc) {
            *o = if beta == 0.0 {
                a as f32
            } else {
                (a + f64::from(beta) * f64::from(*o)) as f32
            };
        }
    });
    Ok(())
}
