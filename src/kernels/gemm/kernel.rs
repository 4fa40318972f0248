//! The microkernel contract: one `MR x NR` register tile, `C <- alpha * A_panel * B_panel + beta * C`.

/// A register-blocked GEMM microkernel and the cache blocking that suits it.
///
/// The loop nest (`loops.rs`) only ever calls [`MicroKernel::kernel`] on full `MR x NR`
/// tiles; edge tiles go through a scratch tile, so each ISA writes only the full case.
pub(crate) trait MicroKernel {
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// Rows of the A block kept in L2 (a multiple of `MR`).
    const MC: usize;
    /// Depth of the packed panels (the B micro-panel `KC x NR` stays in L1).
    const KC: usize;
    /// Columns of the B block kept in L3 (a multiple of `NR`).
    const NC: usize;

    /// `C <- alpha * sum_p a[p*MR + i] * b[p*NR + j] + beta * C` for the `MR x NR` tile at `c`.
    ///
    /// Bit-for-bit the same arithmetic for every tile and every stride, so where a tile
    /// falls never changes a result. When `beta == 0`, C is not read.
    ///
    /// # Safety
    /// `a` must be valid for reading `kc * MR` floats and `b` for `kc * NR` floats, `b`
    /// 32-byte aligned (every packed B panel is: `kc * NR * 4` bytes from a 64-byte-aligned
    /// start); `c.add(i * rsc + j * csc)` must be valid for reading and writing for
    /// all `i < MR`, `j < NR`, and not accessed by anyone else during the call. The CPU
    /// features the kernel was compiled for must be present.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        beta: f32,
        c: *mut f32,
        rsc: usize,
        csc: usize,
    );
}
