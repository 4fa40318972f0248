//! Slow, obviously correct f64 versions of the kernels, for tests and fuzzing.
//!
//! The references accumulate in f64 (more accurate than the code under test), so a test
//! compares against a value whose own error is negligible.

use crate::kernels::gemm::MatRef;

/// `alpha * op(A) * op(B) + beta * C` in f64, where `c` holds C's current values row-major
/// (`m x n`, read only when `beta != 0`). Views are already transposed as wanted.
pub fn gemm_f64(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &[f32]) -> Vec<f64> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert_eq!(k, b.rows(), "reference gemm: inner dimensions differ");
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += f64::from(a.get(i, p)) * f64::from(b.get(p, j));
            }
            let mut v = f64::from(alpha) * s;
            if beta != 0.0 {
                v += f64::from(beta) * f64::from(c[i * n + j]);
            }
            out[i * n + j] = v;
        }
    }
    out
}

/// The error bound a single-precision dot product of length `k` may have against the exact
/// value: `k * eps * sum |a_p b_p|`, the textbook forward-error bound of recursive summation
/// (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), plus a little slack.
pub fn gemm_tolerance(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &[f32]) -> Vec<f64> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let eps = f64::from(f32::EPSILON);
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += (f64::from(a.get(i, p)) * f64::from(b.get(p, j))).abs();
            }
            let mut mag = f64::from(alpha).abs() * s;
            if beta != 0.0 {
                mag += (f64::from(beta) * f64::from(c[i * n + j])).abs();
            }
            out[i * n + j] = (k as f64 + 3.0) * eps * mag + 1e-30;
        }
    }
    out
}

pub mod contrastive;
pub mod conv;
pub mod layers;
pub mod losses;
