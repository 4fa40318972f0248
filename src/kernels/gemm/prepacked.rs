//! GEMM over operands packed once and reused: [`pack_a`] / [`pack_b`] copy a matrix into the
//! micro-panels of the kernel in use (the BLIS layout of `pack.rs`), and [`gemm_prepacked`]
//! runs the inner BLIS loops (LOOP 2 over the `nr`-column panels of B, LOOP 1 over the
//! `mr`-row panels of A, the depth cut into the same blocks as `loops.rs`) straight over
//! them, on the calling thread.
//!
//! For the small products that a streamed loss repeats over the same rows (NT-Xent's
//! 64- to 256-row tiles, where every row meets every other tile several times), packing
//! inside each GEMM costs about as much as the multiply itself; packing each operand once
//! removes that. The arithmetic per output element is the kernel's, in the order of the
//! depth, so the result does not depend on who calls it or from which thread.

use super::kernel::MicroKernel;
use super::loops::tile;
use super::pack::{PackA, PackB};
use super::view::{MatMut, MatRef};
use crate::error::{Error, Result};
use crate::kernels::dispatch::{isa, Isa};

const OP: &str = "gemm_prepacked";

/// The alignment (bytes) of packed B panels that the kernels' loads may assume.
const PANEL_ALIGN: usize = 64;

/// A growable buffer of `f32` whose slices start at a 64-byte boundary (packed panels).
#[derive(Debug, Default)]
pub struct PanelBuf {
    v: Vec<f32>,
}

impl PanelBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `len` floats (allocating only when the buffer must grow).
    pub fn reserve(&mut self, len: usize) {
        let need = len + PANEL_ALIGN / 4;
        if self.v.len() < need {
            self.v.resize(need, 0.0);
        }
    }

    fn offset(&self) -> usize {
        self.v.as_ptr().align_offset(PANEL_ALIGN)
    }

    /// The first `len` floats, 64-byte aligned. Call [`PanelBuf::reserve`] first.
    ///
    /// # Panics
    /// When fewer than `len` floats were reserved.
    #[track_caller]
    pub fn get(&self, len: usize) -> &[f32] {
        let off = self.offset();
        &self.v[off..off + len]
    }

    /// The first `len` floats, 64-byte aligned, writable. Call [`PanelBuf::reserve`] first.
    ///
    /// # Panics
    /// When fewer than `len` floats were reserved.
    #[track_caller]
    pub fn get_mut(&mut self, len: usize) -> &mut [f32] {
        let off = self.offset();
        &mut self.v[off..off + len]
    }
}

/// The register tile `(mr, nr)` the packed layouts are made for.
fn widths() -> (usize, usize) {
    super::tile_shape()
}

/// Floats that [`pack_a`] writes for a `rows x depth` operand.
pub fn packed_a_len(rows: usize, depth: usize) -> usize {
    let mr = widths().0;
    rows.div_ceil(mr) * depth * mr
}

/// Floats that [`pack_b`] writes for a `depth x cols` operand (a multiple of 16, so panels
/// packed one after another stay 64-byte aligned).
pub fn packed_b_len(depth: usize, cols: usize) -> usize {
    let nr = widths().1;
    (cols.div_ceil(nr) * depth * nr).next_multiple_of(16)
}

/// A left operand (`rows x depth`) in `mr`-row micro-panels.
#[derive(Clone, Copy, Debug)]
pub struct PackedA<'a> {
    data: &'a [f32],
    rows: usize,
    depth: usize,
}

/// A right operand (`depth x cols`) in `nr`-column micro-panels.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    data: &'a [f32],
    depth: usize,
    cols: usize,
}

impl<'a> PackedA<'a> {
    /// A view of panels written earlier by [`pack_a`] for a `rows x depth` operand.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `data` is not [`packed_a_len`] long.
    pub fn from_packed(data: &'a [f32], rows: usize, depth: usize) -> Result<Self> {
        crate::error::check_len(OP, data.len(), packed_a_len(rows, depth))?;
        Ok(Self { data, rows, depth })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn depth(&self) -> usize {
        self.depth
    }
}

impl<'a> PackedB<'a> {
    /// A view of panels written earlier by [`pack_b`] for a `depth x cols` operand.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `data` is not [`packed_b_len`] long;
    /// [`Error::InvalidArgument`] when it does not start at a 64-byte boundary.
    pub fn from_packed(data: &'a [f32], depth: usize, cols: usize) -> Result<Self> {
        crate::error::check_len(OP, data.len(), packed_b_len(depth, cols))?;
        if !data.is_empty() && data.as_ptr().align_offset(PANEL_ALIGN) != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: "packed B panels must start at a 64-byte boundary (use PanelBuf)".into(),
            });
        }
        Ok(Self { data, depth, cols })
    }
    pub fn depth(&self) -> usize {
        self.depth
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Packs `a` (`rows x depth`, any strides) into `out` (exactly [`packed_a_len`] floats).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `out` has the wrong length.
pub fn pack_a<'o>(a: MatRef<'_>, out: &'o mut [f32]) -> Result<PackedA<'o>> {
    let (rows, depth) = (a.rows(), a.cols());
    crate::error::check_len(OP, out.len(), packed_a_len(rows, depth))?;
    if rows > 0 && depth > 0 {
        PackA::pack(&a, 0, rows, 0, depth, widths().0, out);
    }
    PackedA::from_packed(out, rows, depth)
}

/// Packs `b` (`depth x cols`, any strides) into `out` (exactly [`packed_b_len`] floats,
/// starting at a 64-byte boundary: a slice of a [`PanelBuf`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `out` has the wrong length; [`Error::InvalidArgument`]
/// when it is not aligned.
pub fn pack_b<'o>(b: MatRef<'_>, out: &'o mut [f32]) -> Result<PackedB<'o>> {
    let (depth, cols) = (b.rows(), b.cols());
    crate::error::check_len(OP, out.len(), packed_b_len(depth, cols))?;
    let used = cols.div_ceil(widths().1) * depth * widths().1;
    if cols > 0 && depth > 0 {
        PackB::pack(&b, 0, depth, 0, cols, widths().1, &mut out[..used]);
    }
    out[used..].fill(0.0);
    PackedB::from_packed(out, depth, cols)
}

/// `C <- alpha * A * B + beta * C` over packed operands, on the calling thread; if `beta`
/// is zero C is not read.
///
/// # Errors
/// [`Error::ShapeMismatch`] when A is not `m x k`, B not `k x n` for C `m x n`.
pub fn gemm_prepacked(
    alpha: f32,
    a: PackedA<'_>,
    b: PackedB<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<()> {
    if a.depth != b.depth || c.rows() != a.rows || c.cols() != b.cols {
        return Err(Error::ShapeMismatch {
            op: "gemm_prepacked (C vs A x B)",
            lhs: [c.rows(), c.cols()].into(),
            rhs: [a.rows, a.depth, b.depth, b.cols].into(),
        });
    }
    let (ptr, _, _, rsc, csc) = c.raw_parts();
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `c` is a checked view without self-overlap, exclusively borrowed for the
        // call; the panels were checked to hold the packed lengths of these shapes (and B's
        // alignment); `isa()` returns Avx512 only after detection.
        Isa::Avx512 => unsafe { run::<super::avx512::Avx512>(alpha, &a, &b, beta, ptr, rsc, csc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `isa()` returns Avx2Fma only after detection.
        Isa::Avx2Fma => unsafe { run::<super::avx2::Avx2Fma>(alpha, &a, &b, beta, ptr, rsc, csc) },
        // SAFETY: as above; the portable kernel needs no CPU feature.
        _ => unsafe { run::<super::portable::Portable>(alpha, &a, &b, beta, ptr, rsc, csc) },
    }
    Ok(())
}

/// The loops over the panels with kernel `K`.
///
/// # Safety
/// `c.add(i * rsc + j * csc)` valid, pairwise distinct and exclusively ours for `i < m`,
/// `j < n`; the packed lengths of `a` and `b` checked for `K`'s `MR` and `NR`, B 64-byte
/// aligned; `K`'s CPU features present.
unsafe fn run<K: MicroKernel>(
    alpha: f32,
    a: &PackedA<'_>,
    b: &PackedB<'_>,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
) {
    let (m, n, k) = (a.rows, b.cols, a.depth);
    let (mr, nr) = (K::MR, K::NR);
    debug_assert_eq!((mr, nr), widths());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside C (caller contract).
                unsafe {
                    let e = c.add(i * rsc + j * csc);
                    *e = if beta == 0.0 { 0.0 } else { beta * *e };
                }
            }
        }
        return;
    }
    // The depth blocks of `loops.rs`: equal blocks of at most 1.25 KC, from k alone.
    let kblocks = k.div_ceil(K::KC + K::KC / 4);
    let kc_step = k.div_ceil(kblocks);
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(nr));
    // LOOP 4: the depth blocks (a range of every packed panel).
    for pc in (0..k).step_by(kc_step) {
        let kc = kc_step.min(k - pc);
        let beta = if pc == 0 { beta } else { 1.0 };
        // LOOP 2: the B panels (one stays in L1 while the A panels stream past it).
        for jp in 0..np {
            let j0 = jp * nr;
            let w = nr.min(n - j0);
            let bp = b.data[jp * k * nr + pc * nr..][..kc * nr].as_ptr();
            // LOOP 1: the A panels.
            for ip in 0..mp {
                let i0 = ip * mr;
                let h = mr.min(m - i0);
                let ap = a.data[ip * k * mr + pc * mr..][..kc * mr].as_ptr();
                // SAFETY: the tile (i0.., j0..) of h x w lies inside C (caller contract);
                // the panel slices hold kc * mr and kc * nr floats, B's at a multiple of
                // nr floats from a 64-byte boundary.
                unsafe {
                    tile::<K>(
                        kc,
                        alpha,
                        ap,
                        bp,
                        beta,
                        c.add(i0 * rsc + j0 * csc),
                        rsc,
                        csc,
                        h,
                        w,
                    )
                };
            }
        }
    }
}
