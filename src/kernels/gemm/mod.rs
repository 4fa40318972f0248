//! Cache-blocked, SIMD-vectorized single-precision GEMM in the BLIS style.
//!
//! `C <- alpha * op(A) * op(B) + beta * C`, then an optional [`Epilogue`]; if `beta` is
//! zero, C is never read (it may hold NaN). All views are strided ([`MatRef`], [`MatMut`]);
//! transposes swap strides. Shapes and strides are checked before any unsafe code runs.
//!
//! ```
//! use selfsup::kernels::gemm::{gemm, GemmParams, MatMut, MatRef, Transpose};
//! let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 x 3
//! let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3 x 2
//! let mut c = [0.0f32; 4];
//! gemm(
//!     &GemmParams::default(),
//!     MatRef::row_major(&a, 2, 3).unwrap(),
//!     MatRef::row_major(&b, 3, 2).unwrap(),
//!     MatMut::row_major(&mut c, 2, 2).unwrap(),
//! )
//! .unwrap();
//! assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
//! # let _ = Transpose::No;
//! ```
//!
//! Structure (see `loops.rs`): A and B are packed into aligned micro-panels through the
//! [`PackA`] / [`PackB`] traits (pluggable: convolution packs straight from an image), a
//! register-blocked microkernel chosen once at run time (AVX-512 12x32 or AVX2+FMA 6x16 on
//! x86_64, a portable `wide` 6x8 elsewhere or with `SELFSUP_FORCE_PORTABLE=1`) computes
//! each tile, and the rayon-parallel loop nest splits only independent output blocks, never
//! the K reduction. Operands reused across many small products can be packed once
//! ([`pack_a`], [`pack_b`]) and multiplied with [`gemm_prepacked`].

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
mod epilogue;
mod kernel;
mod loops;
mod pack;
mod portable;
mod prepacked;
mod view;

pub use epilogue::{Epilogue, Fused, Identity};
pub use pack::{PackA, PackB};
pub use prepacked::{
    gemm_prepacked, pack_a, pack_b, packed_a_len, packed_b_len, PackedA, PackedB, PanelBuf,
};
pub use view::{MatMut, MatRef};

use crate::error::{Error, Result};
use crate::kernels::dispatch::{isa, Isa};
use kernel::MicroKernel;
use loops::Problem;

/// Bytes the GEMMs' per-thread packing buffers grow to on a pool of `threads` threads at
/// most, for this CPU's kernel (for a memory estimate).
pub fn pack_bytes(threads: usize) -> usize {
    let one = match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => loops::pack_bytes::<avx512::Avx512>(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => loops::pack_bytes::<avx2::Avx2Fma>(),
        _ => loops::pack_bytes::<portable::Portable>(),
    };
    one.saturating_mul(threads.max(1))
}

/// Whether an operand enters the product as stored or transposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transpose {
    /// `op(X) = X`.
    #[default]
    No,
    /// `op(X) = X^T`.
    Yes,
}

/// The scalar arguments of a GEMM, in BLAS order.
#[derive(Clone, Copy)]
pub struct GemmParams<'e> {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: Transpose,
    pub trans_b: Transpose,
    /// Applied to each tile of C after its final update (default: none).
    pub epilogue: &'e dyn Epilogue,
    /// Split the work over the current rayon pool (default). `false` runs on the calling
    /// thread only: for callers that already run one GEMM per thread, such as a convolution
    /// parallel over images. The result is the same bits either way.
    pub parallel: bool,
}

impl Default for GemmParams<'_> {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            beta: 0.0,
            trans_a: Transpose::No,
            trans_b: Transpose::No,
            epilogue: &Identity,
            parallel: true,
        }
    }
}

impl std::fmt::Debug for GemmParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmParams")
            .field("alpha", &self.alpha)
            .field("beta", &self.beta)
            .field("trans_a", &self.trans_a)
            .field("trans_b", &self.trans_b)
            .field("parallel", &self.parallel)
            .finish_non_exhaustive()
    }
}

impl<'e> GemmParams<'e> {
    /// `alpha = 1, beta = 0`, no transposes, no epilogue.
    pub fn new() -> Self {
        Self::default()
    }
    #[must_use]
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    #[must_use]
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }
    #[must_use]
    pub fn trans_a(mut self, t: Transpose) -> Self {
        self.trans_a = t;
        self
    }
    #[must_use]
    pub fn trans_b(mut self, t: Transpose) -> Self {
        self.trans_b = t;
        self
    }
    #[must_use]
    pub fn epilogue(mut self, e: &'e dyn Epilogue) -> Self {
        self.epilogue = e;
        self
    }
    /// Runs on the calling thread only (see [`GemmParams::parallel`]).
    #[must_use]
    pub fn sequential(mut self) -> Self {
        self.parallel = false;
        self
    }
}

fn op(m: MatRef<'_>, t: Transpose) -> MatRef<'_> {
    match t {
        Transpose::No => m,
        Transpose::Yes => m.t(),
    }
}

/// `C <- epilogue(alpha * op(A) * op(B) + beta * C)`.
///
/// Runs on the current rayon pool; the result is bit-identical for any number of threads.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `op(A)` is not `m x k`, `op(B)` not `k x n` for C `m x n`,
/// or the epilogue does not fit C.
pub fn gemm(params: &GemmParams<'_>, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>) -> Result<()> {
    let a = op(a, params.trans_a);
    let b = op(b, params.trans_b);
    gemm_impl(params, &a, &b, c)
}

/// `C <- alpha * A * B` with `A`, `B`, `C` dense row-major.
///
/// # Errors
/// As [`gemm`], and [`Error::OutOfBounds`] when a slice is shorter than its shape.
pub fn matmul(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    gemm(
        &GemmParams::default(),
        MatRef::row_major(a, m, k)?,
        MatRef::row_major(b, k, n)?,
        MatMut::row_major(c, m, n)?,
    )
}

/// [`gemm`] with pluggable packers: `C <- epilogue(alpha * A * B + beta * C)` where A and B
/// are whatever the packers produce (for example B read straight from an image: implicit
/// im2col). The `trans_a` / `trans_b` flags must be [`Transpose::No`] here; a packer does
/// its own transposition.
///
/// # Errors
/// [`Error::ShapeMismatch`] on mismatched shapes; [`Error::InvalidArgument`] when a
/// transpose flag is set.
pub fn gemm_packed(
    params: &GemmParams<'_>,
    a: &dyn PackA,
    b: &dyn PackB,
    c: MatMut<'_>,
) -> Result<()> {
    if params.trans_a != Transpose::No || params.trans_b != Transpose::No {
        return Err(Error::InvalidArgument {
            op: "gemm_packed",
            msg: "transpose flags must be Transpose::No; the packers transpose".into(),
        });
    }
    gemm_impl(params, a, b, c)
}

/// The checked entry shared by [`gemm`] and [`gemm_packed`]; transpose flags already applied.
fn gemm_impl(
    params: &GemmParams<'_>,
    a: &dyn PackA,
    b: &dyn PackB,
    mut c: MatMut<'_>,
) -> Result<()> {
    let (m, k) = (a.rows(), a.depth());
    let (kb, n) = (b.depth(), b.cols());
    if k != kb {
        return Err(Error::ShapeMismatch {
            op: "gemm (op(A) x op(B))",
            lhs: [m, k].into(),
            rhs: [kb, n].into(),
        });
    }
    if c.rows() != m || c.cols() != n {
        return Err(Error::ShapeMismatch {
            op: "gemm (C vs op(A) x op(B))",
            lhs: [c.rows(), c.cols()].into(),
            rhs: [m, n].into(),
        });
    }
    params.epilogue.check(m, n)?;
    let (ptr, _, _, rsc, csc) = c.raw_parts();
    let problem = Problem {
        m,
        n,
        k,
        alpha: params.alpha,
        beta: params.beta,
        a,
        b,
        epi: params.epilogue,
        c: loops::CPtr(ptr),
        rsc,
        csc,
        parallel: params.parallel,
    };
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `c` is a checked view without self-overlap, exclusively borrowed for the
        // call; shapes were checked above; `isa()` returns Avx512 only after detection.
        Isa::Avx512 => unsafe { loops::run::<avx512::Avx512>(&problem) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `isa()` returns Avx2Fma only after detection.
        Isa::Avx2Fma => unsafe { loops::run::<avx2::Avx2Fma>(&problem) },
        // SAFETY: as above; the portable kernel needs no CPU feature.
        _ => unsafe { loops::run::<portable::Portable>(&problem) },
    }
    Ok(())
}

/// The register tile `(MR, NR)` of the kernel in use (edge-case tests use it).
pub fn tile_shape() -> (usize, usize) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (avx512::Avx512::MR, avx512::Avx512::NR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => (avx2::Avx2Fma::MR, avx2::Avx2Fma::NR),
        _ => (portable::Portable::MR, portable::Portable::NR),
    }
}
