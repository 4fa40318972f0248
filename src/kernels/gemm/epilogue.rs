//! Epilogues: element-wise work applied to each output tile right after its last update,
//! while it is still in L1 (bias, ReLU, per-row and per-column scale, or anything custom).

use crate::error::{Error, Result};

/// Work applied to every final output row segment `C[i, j0 .. j0 + row.len()]`.
///
/// The GEMM calls [`Epilogue::apply`] exactly once per element of C, after the element has
/// its final value `alpha * A*B + beta * C`, in no particular order and from several threads.
pub trait Epilogue: Sync {
    /// Checks that the epilogue fits an `m x n` output; called before any work starts.
    ///
    /// # Errors
    /// A shape error when a vector has the wrong length.
    fn check(&self, m: usize, n: usize) -> Result<()> {
        let _ = (m, n);
        Ok(())
    }
    /// Transforms the row segment `row = C[i, j0 .. j0 + row.len()]` in place.
    fn apply(&self, i: usize, j0: usize, row: &mut [f32]);
    /// True when `apply` does nothing; lets the GEMM skip the pass.
    fn is_identity(&self) -> bool {
        false
    }
}

/// No epilogue.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Epilogue for Identity {
    fn apply(&self, _i: usize, _j0: usize, _row: &mut [f32]) {}
    fn is_identity(&self) -> bool {
        true
    }
}

/// The usual fused epilogue:
/// `C[i, j] = act(C[i, j] * row_scale[i] * col_scale[j] + row_bias[i] + col_bias[j])`,
/// each part optional, `act` the identity or ReLU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fused<'a> {
    pub row_scale: Option<&'a [f32]>,
    pub col_scale: Option<&'a [f32]>,
    pub row_bias: Option<&'a [f32]>,
    pub col_bias: Option<&'a [f32]>,
    pub relu: bool,
}

impl Epilogue for Fused<'_> {
    fn check(&self, m: usize, n: usize) -> Result<()> {
        let parts = [
            ("row_scale", self.row_scale, m),
            ("col_scale", self.col_scale, n),
            ("row_bias", self.row_bias, m),
            ("col_bias", self.col_bias, n),
        ];
        for (name, v, want) in parts {
            if let Some(v) = v {
                if v.len() != want {
                    return Err(Error::ShapeMismatch {
                        op: name,
                        lhs: [v.len()].into(),
                        rhs: [want].into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn apply(&self, i: usize, j0: usize, row: &mut [f32]) {
        let w = row.len();
        if let Some(rs) = self.row_scale {
            let s = rs[i];
            row.iter_mut().for_each(|x| *x *= s);
        }
        if let Some(cs) = self.col_scale {
            row.iter_mut()
                .zip(&cs[j0..j0 + w])
                .for_each(|(x, s)| *x *= s);
        }
        if let Some(rb) = self.row_bias {
            let b = rb[i];
            row.iter_mut().for_each(|x| *x += b);
        }
        if let Some(cb) = self.col_bias {
            row.iter_mut()
                .zip(&cb[j0..j0 + w])
                .for_each(|(x, b)| *x += b);
        }
        if self.relu {
            // `x < 0` is false for NaN, so NaN propagates as in PyTorch. A select, not a
            // branch: it vectorizes, and a branch on the sign mispredicts half the time.
            row.iter_mut()
                .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x });
        }
    }

    fn is_identity(&self) -> bool {
        self.row_scale.is_none()
            && self.col_scale.is_none()
            && self.row_bias.is_none()
            && self.col_bias.is_none()
            && !self.relu
    }
}
