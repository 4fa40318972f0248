//! The GEMM workloads of `selfsup bench`: dense single-precision `C = A * B` on the square
//! shapes of docs/performance.md and the shapes ResNet-mini lowers to, timed on this
//! crate's kernels or on `matrixmultiply`, checked entry by entry against f64 dot products.

use anyhow::{bail, Context, Result};
use selfsup::kernels::gemm::matmul;

use super::inputs::{filled, XorShift};
use super::workload::{Reference, Work, Workload};

/// A dense row-major single-precision GEMM `C (m x n) = A (m x k) * B (k x n)`.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub name: &'static str,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Where the shape comes from.
    pub why: &'static str,
}

/// The GEMM workloads: the square figures of docs/performance.md and the shapes that
/// the convolutions and heads of ResNet-mini lower to (batch 32 of 32x32 images for the
/// stem and block1, batch 128 of 8x8 for block3, 2 x 4096 rows through a 128-wide layer).
pub const SGEMM_SHAPES: &[GemmShape] = &[
    gemm_shape("sgemm_256", 256, 256, 256, "square"),
    gemm_shape("sgemm_1024", 1024, 1024, 1024, "square"),
    gemm_shape("sgemm_2048", 2048, 2048, 2048, "square"),
    gemm_shape(
        "sgemm_conv_k27",
        32,
        32768,
        27,
        "stem conv 3->32, 3x3, 32 images 32x32",
    ),
    gemm_shape(
        "sgemm_conv_c32",
        32,
        32768,
        288,
        "conv 32->32, 3x3, 32 images 32x32",
    ),
    gemm_shape(
        "sgemm_conv_c128",
        128,
        8192,
        1152,
        "conv 128->128, 3x3, 128 images 8x8",
    ),
    gemm_shape(
        "sgemm_tall_skinny",
        8192,
        64,
        128,
        "8192 rows through a 128->64 layer",
    ),
];

pub const fn gemm_shape(
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    why: &'static str,
) -> GemmShape {
    GemmShape { name, m, n, k, why }
}

/// The GEMM workload of `shape`, on this crate's kernels and on `matrixmultiply`.
pub fn sgemm_workload(shape: GemmShape) -> Workload {
    let GemmShape { m, n, k, .. } = shape;
    Workload {
        name: shape.name,
        about: format!("C = A*B, M={m} N={n} K={k} ({})", shape.why),
        work: Work::Flops(2.0 * m as f64 * n as f64 * k as f64),
        references: &[Reference::Selfsup, Reference::Matrixmultiply],
        setup: Box::new(move |reference| {
            let mut bench = Sgemm::new(shape, reference)?;
            bench.run()?;
            bench.check()?;
            Ok(Box::new(move || bench.run()))
        }),
    }
}

/// The operands of one GEMM workload, allocated and filled once, outside the timing.
struct Sgemm {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    reference: Reference,
}

impl Sgemm {
    fn new(shape: GemmShape, reference: Reference) -> Result<Self> {
        let GemmShape { m, n, k, .. } = shape;
        // matrixmultiply takes strides as isize.
        for d in [m, n, k] {
            isize::try_from(d).context("dimension does not fit in isize")?;
        }
        Ok(Self {
            m,
            n,
            k,
            a: filled(m * k, 0x5eed_0001),
            b: filled(k * n, 0x5eed_0002),
            c: vec![0.0; m * n],
            reference,
        })
    }

    fn run(&mut self) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        match self.reference {
            Reference::Selfsup => matmul(m, n, k, &self.a, &self.b, &mut self.c)?,
            Reference::Matrixmultiply => {
                // SAFETY: `a` is m*k, `b` is k*n and `c` is m*n dense row-major f32 buffers
                // owned by `self` (so they live across the call and `c` is not aliased); the
                // strides (k, 1), (n, 1), (n, 1) stay inside them; `new` checked that the
                // dimensions fit in isize.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        self.a.as_ptr(),
                        k as isize,
                        1,
                        self.b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        self.c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
        }
        Ok(())
    }

    /// Spot-checks a few entries of C against an f64 dot product, so a broken kernel cannot
    /// report a fast time. The bound is the classical 2*K*eps on the sum of |a_ip * b_pj|.
    fn check(&self) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut rng = XorShift::new(0xc0ffee);
        let picks = (0..16).map(|_| (rng.below(m), rng.below(n)));
        for (i, j) in picks.chain([(0, 0), (m - 1, n - 1)]) {
            let (mut exact, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = f64::from(self.a[i * k + p]) * f64::from(self.b[p * n + j]);
                exact += t;
                abs += t.abs();
            }
            let got = f64::from(self.c[i * n + j]);
            let bound = 2.0 * k as f64 * f64::from(f32::EPSILON) * abs + 1e-6;
            let err = (got - exact).abs();
            if err.is_nan() || err > bound {
                bail!(
                    "wrong result from {}: C[{i}, {j}] = {got}, expected {exact} (within {bound:.1e})",
                    self.reference.name()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_gemm_runs_and_checks_on_both_references() {
        let shape = gemm_shape("t", 7, 19, 5, "test");
        for r in [Reference::Selfsup, Reference::Matrixmultiply] {
            let w = sgemm_workload(shape);
            let mut op = w.setup(r).unwrap();
            op().unwrap();
        }
    }

    #[test]
    fn check_catches_a_wrong_result() {
        let shape = gemm_shape("t", 4, 4, 4, "test");
        let mut g = Sgemm::new(shape, Reference::Selfsup).unwrap();
        g.run().unwrap();
        g.c[15] += 1.0;
        let err = g.check().unwrap_err().to_string();
        assert!(err.contains("C[3, 3]"), "{err}");
    }
}
