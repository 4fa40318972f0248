//! Pointwise strided convolution (1x1 kernel, no padding, stride above 1: the ResNet
//! shortcut projections) as plain matrix products over the subsampled input `Xs`, the
//! pixels `(oy * sh, ox * sw)` of every input channel; no padded copy of the full-resolution
//! image, no column matrix.
//!
//! - Forward, per image: `Xs` gathered into a per-thread scratch (`Cin x HoWo`), then
//!   `Y = W * Xs` by GEMM over the weights packed once per call, into a per-thread scratch
//!   of whole row panels (no edge tiles along `Cout`), which gets the bias, a residual if
//!   any, and the ReLU and is copied into place.
//! - Input gradient, per image: `W^T * dY` by GEMM over `W^T` packed once per call into a
//!   per-thread scratch (`Cin x HoWo`), then spread into `dX`: each element of `dX` is
//!   written once, the product at the strided positions and zero elsewhere.
//! - Weight gradient: `dW[co, ci] = sum over the batch's output pixels of
//!   dY[co, p] * Xs[ci, p]`. The reduction runs along the pixels, which are contiguous in
//!   both `dY` and `Xs`, so it is computed as dot products without transposing either: a
//!   4-channel x 3-channel register tile of 8-lane partial sums walks the pixels of a block
//!   of images, loading 4 + 3 vectors for 12 fused multiply-adds (on AVX2, or the portable
//!   `wide` vectors; the AVX-512 FMA peak of the AMD machines this runs on is the AVX2 one).
//!   The batch is cut into blocks of whole images and the blocks into at most
//!   [`WGRAD_CHUNKS`] chunks, both from the shapes only; each chunk (one task) keeps its own
//!   lane sums, reduces them in a fixed lane order at its end, and the chunks' sums are added
//!   in chunk order. Every output is therefore the same sequence of operations whatever the
//!   number of threads.

use crate::error::Result;
use crate::kernels::conv::{with_scratch, Conv2d, Store};
use crate::kernels::gemm::{
    gemm_prepacked, pack_a, pack_b, packed_a_len, packed_b_len, tile_shape, MatMut, MatRef, PackedA,
};
use crate::kernels::simd::{self, Simd, LANES};
use rayon::prelude::*;
use std::cell::RefCell;

/// Output pixels per block of the weight gradient (whole images, at least one): the lane
/// sums of a tile stay in registers over a block.
pub(super) const BLOCK_PIXELS: usize = 256;
/// The most chunks (tasks, each with its own partial sums) of the weight gradient.
pub(super) const WGRAD_CHUNKS: usize = 16;
/// Output channels (rows of `dY`) and input channels (rows of `Xs`) of a weight-gradient
/// tile: 12 accumulators, 3 held `Xs` vectors and one streamed `dY` vector fill the sixteen
/// AVX2 registers.
const TR: usize = 4;
const TC: usize = 3;

thread_local! {
    /// The weights packed for the GEMM (`W` forward, `W^T` input gradient), once per call.
    static WPACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// An image's (forward) or a block's (weight gradient) subsampled input.
    static SUB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The GEMM's B operand in panels (64-byte aligned inside).
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The GEMM's output for one image (whole row panels, see [`panel_rows`]).
    static OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A block's `dY` with rows padded to whole vectors (when `HoWo` is not a multiple of 8).
    static DYPAD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A chunk's lane sums, tile after tile.
    static LANE_SUMS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Every chunk's `dW`, chunk after chunk.
    static CHUNK_SUMS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of scratch a pass asks [`with_scratch`] for: what the calling thread holds once
/// and what every thread of the pool may hold (see `scratch.rs`).
pub(super) struct Scratch {
    pub once: usize,
    pub per_thread: usize,
}

/// Floats of an aligned panel buffer of `len` floats (see [`with_panels`]).
fn panels_len(len: usize) -> usize {
    len + 16
}

/// Runs `f` on `len` floats of this thread's panel scratch starting at a 64-byte boundary.
fn with_panels<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch(&PANELS, panels_len(len), |v| {
        let off = v.as_ptr().align_offset(64);
        f(&mut v[off..off + len])
    })
}

/// `dst[c * ld + oy * Wo + ox] = x[c, oy * sh, ox * sw]` for the `Cin` channels of one image
/// `x`; the `ld - HoWo` floats after each channel's pixels are zeroed.
fn subsample(g: &Conv2d, x: &[f32], ld: usize, dst: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (sh, sw) = g.stride;
    for (plane, out) in x
        .chunks_exact(g.h * g.w)
        .zip(dst.chunks_exact_mut(ld))
        .take(g.c_in)
    {
        let (pix, pad) = out.split_at_mut(ho * wo);
        for (oy, o) in pix.chunks_exact_mut(wo).enumerate() {
            let row = &plane[oy * sh * g.w..][..g.w];
            if sw == 2 {
                // The common stride: whole pairs, which the compiler turns into shuffles,
                // then the last pixel of an odd row.
                let full = g.w / 2;
                for (d, pair) in o[..full].iter_mut().zip(row.chunks_exact(2)) {
                    *d = pair[0];
                }
                if wo > full {
                    o[full] = row[2 * full];
                }
            } else {
                for (d, &v) in o.iter_mut().zip(row.iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
        pad.fill(0.0);
    }
}

/// Images per task of the forward pass and the input gradient (in the input gradient a
/// task fetches the next image's `dY` ahead while it multiplies the current one).
const TASK_IMAGES: usize = 4;

/// Hints the CPU to fetch the cache lines of `v` (nothing on other architectures).
#[inline]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch is only a hint and never faults; the address is in `v`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Rows of the GEMM's output for `rows` rows of A: whole `mr`-row panels, so that no tile
/// is an edge tile along the rows (those go through a zeroed scratch tile and a copy).
fn panel_rows(rows: usize) -> usize {
    let mr = tile_shape().0;
    rows.div_ceil(mr) * mr
}

/// Runs `f` on `W` (`rows x depth`, strides as given) packed for the GEMM, as an operand of
/// [`panel_rows`] rows (the padding rows packed as zeros).
fn with_packed_weights<R>(w: MatRef<'_>, f: impl FnOnce(PackedA<'_>) -> Result<R>) -> Result<R> {
    let (rows, depth) = (w.rows(), w.cols());
    with_scratch(&WPACK, packed_a_len(rows, depth), |buf| {
        pack_a(w, buf)?;
        f(PackedA::from_packed(buf, panel_rows(rows), depth)?)
    })
}

/// The forward pass of [`conv2d_forward`](crate::kernels::conv::conv2d_forward) for a
/// pointwise strided geometry (arguments checked, `N > 0`).
pub(super) fn forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    store: Store<'_>,
    y: &mut [f32],
) -> Result<()> {
    let hw = g.out_h() * g.out_w();
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * hw);
    let rows = panel_rows(g.c_out);
    let y0 = y.as_ptr() as usize;
    with_packed_weights(MatRef::row_major(w, g.c_out, g.c_in)?, |wa| {
        let task = |(xt, yt): (&[f32], &mut [f32])| -> Result<()> {
            with_scratch(&SUB, g.c_in * hw, |sub| {
                with_scratch(&OUT, rows * hw, |out| {
                    let images = xt.chunks_exact(xs).zip(yt.chunks_exact_mut(ys));
                    for (xi, yi) in images {
                        subsample(g, xi, hw, sub);
                        with_panels(packed_b_len(g.c_in, hw), |bbuf| {
                            let b = pack_b(MatRef::row_major(sub, g.c_in, hw)?, bbuf)?;
                            gemm_prepacked(1.0, wa, b, 0.0, MatMut::row_major(out, rows, hw)?)
                        })?;
                        // The bias, the residual and the ReLU, then the output rows into
                        // place.
                        let res = &mut out[..ys];
                        if let Some(bias) = store.bias {
                            for (row, &b) in res.chunks_exact_mut(hw).zip(bias) {
                                row.iter_mut().for_each(|v| *v += b);
                            }
                        }
                        if let Some(r) = store.residual {
                            let at = (yi.as_ptr() as usize - y0) / 4;
                            res.iter_mut()
                                .zip(&r[at..at + ys])
                                .for_each(|(v, &r)| *v += r);
                        }
                        if store.relu {
                            // `v < 0` is false for NaN: NaN propagates, as in PyTorch.
                            res.iter_mut()
                                .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
                        }
                        yi.copy_from_slice(res);
                    }
                    Ok(())
                })
            })
        };
        x.par_chunks(xs * TASK_IMAGES)
            .zip(y.par_chunks_mut(ys * TASK_IMAGES))
            .try_for_each(task)
    })
}

/// The input gradient of
/// [`conv2d_backward_input`](crate::kernels::conv::conv2d_backward_input) for a pointwise
/// strided geometry (arguments checked, `N > 0`).
pub(super) fn input_grad(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let hw = ho * wo;
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * hw);
    let (sh, sw) = g.stride;
    let rows = panel_rows(g.c_in);
    with_packed_weights(MatRef::row_major(w, g.c_out, g.c_in)?.t(), |wt| {
        let task = |(dyt, dxt): (&[f32], &mut [f32])| -> Result<()> {
            with_scratch(&OUT, rows * hw, |out| {
                let images = dyt.chunks_exact(ys).zip(dxt.chunks_exact_mut(xs));
                for (i, (dyi, dxi)) in images.enumerate() {
                    with_panels(packed_b_len(g.c_out, hw), |bbuf| {
                        let b = pack_b(MatRef::row_major(dyi, g.c_out, hw)?, bbuf)?;
                        if let Some(next) = dyt.get((i + 1) * ys..(i + 2) * ys) {
                            prefetch(next);
                        }
                        gemm_prepacked(1.0, wt, b, 0.0, MatMut::row_major(out, rows, hw)?)
                    })?;
                    // Spread each channel over its plane: rows and columns off the stride
                    // are zero; every element is written once.
                    for (plane, src) in dxi.chunks_exact_mut(g.h * g.w).zip(out.chunks_exact(hw)) {
                        for (iy, row) in plane.chunks_exact_mut(g.w).enumerate() {
                            if iy % sh != 0 {
                                row.fill(0.0);
                                continue;
                            }
                            let s = &src[iy / sh * wo..][..wo];
                            if sw == 2 {
                                // The common stride: (value, 0) pairs, the last one cut short
                                // in an odd row.
                                for (pair, &v) in row.chunks_mut(2).zip(s) {
                                    pair[0] = v;
                                    if let Some(z) = pair.get_mut(1) {
                                        *z = 0.0;
                                    }
                                }
                            } else {
                                row.fill(0.0);
                                for (d, &v) in row.iter_mut().step_by(sw).zip(s) {
                                    *d = v;
                                }
                            }
                        }
                    }
                }
                Ok(())
            })
        };
        dy.par_chunks(ys * TASK_IMAGES)
            .zip(dx.par_chunks_mut(xs * TASK_IMAGES))
            .try_for_each(task)
    })
}

/// How the weight gradient of a geometry cuts its work (from the shapes only).
#[derive(Clone, Copy)]
struct Wgrad {
    /// Output pixels per image, and rounded up to whole vectors.
    hw: usize,
    hw8: usize,
    /// Images per block, blocks, chunks.
    images: usize,
    blocks: usize,
    chunks: usize,
    /// Tiles along the output and the input channels.
    co_tiles: usize,
    ci_tiles: usize,
}

impl Wgrad {
    fn of(g: &Conv2d) -> Self {
        let hw = g.out_h() * g.out_w();
        let hw8 = hw.next_multiple_of(LANES);
        let images = (BLOCK_PIXELS / hw8).clamp(1, g.n.max(1));
        let blocks = g.n.div_ceil(images);
        Self {
            hw,
            hw8,
            images,
            blocks,
            chunks: blocks.min(WGRAD_CHUNKS),
            co_tiles: g.c_out.div_ceil(TR),
            ci_tiles: g.c_in.div_ceil(TC),
        }
    }
    /// Floats of one chunk's lane sums.
    fn lane_sums(&self) -> usize {
        self.co_tiles * self.ci_tiles * TR * TC * LANES
    }
}

/// The weight gradient of
/// [`conv2d_backward_weight`](crate::kernels::conv::conv2d_backward_weight) for a pointwise
/// strided geometry (arguments checked, `N > 0`).
pub(super) fn weight_grad(g: &Conv2d, x: &[f32], dy: &[f32], dw: &mut [f32], accumulate: bool) {
    let lay = Wgrad::of(g);
    let wl = g.c_out * g.c_in;
    with_scratch(&CHUNK_SUMS, lay.chunks * wl, |sums| {
        let chunk = |(c, out): (usize, &mut [f32])| {
            let blocks = lay.blocks * c / lay.chunks..lay.blocks * (c + 1) / lay.chunks;
            let dy_len = if lay.hw8 != lay.hw {
                lay.images * g.c_out * lay.hw8
            } else {
                0
            };
            with_scratch(&LANE_SUMS, lay.lane_sums(), |lanes| {
                with_scratch(&SUB, lay.images * g.c_in * lay.hw8, |sub| {
                    with_scratch(&DYPAD, dy_len, |dypad| {
                        let bufs = ChunkBufs { lanes, sub, dypad };
                        #[cfg(target_arch = "x86_64")]
                        if let Some(t) = simd::avx2() {
                            // SAFETY: the token proves AVX2 and FMA.
                            unsafe { chunk_avx2(t, g, &lay, x, dy, blocks, bufs, out) };
                            return;
                        }
                        chunk_sums(simd::Portable, g, &lay, x, dy, blocks, bufs, out);
                    })
                })
            });
        };
        if lay.chunks > 1 {
            sums.par_chunks_mut(wl).enumerate().for_each(chunk);
        } else {
            chunk((0, sums));
        }
        let (first, rest) = sums.split_at_mut(wl);
        for part in rest.chunks_exact(wl) {
            for (a, &v) in first.iter_mut().zip(part) {
                *a += v;
            }
        }
        for (d, &v) in dw.iter_mut().zip(first.iter()) {
            *d = if accumulate { *d + v } else { v };
        }
    });
}

/// A chunk's scratch: its lane sums, a block's subsampled input and padded `dY`.
struct ChunkBufs<'a> {
    lanes: &'a mut [f32],
    sub: &'a mut [f32],
    dypad: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn chunk_avx2(
    t: simd::Avx2,
    g: &Conv2d,
    lay: &Wgrad,
    x: &[f32],
    dy: &[f32],
    blocks: std::ops::Range<usize>,
    bufs: ChunkBufs<'_>,
    out: &mut [f32],
) {
    chunk_sums(t, g, lay, x, dy, blocks, bufs, out);
}

/// One chunk of the weight gradient: `out = dW` (`Cout x Cin`) summed over the images of
/// `blocks`, lane sums kept per tile over the blocks and reduced at the end. (No closures
/// here or below: they would not inherit the caller's target features, and the vector
/// operations inside them would become calls.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_sums<S: Simd>(
    s: S,
    g: &Conv2d,
    lay: &Wgrad,
    x: &[f32],
    dy: &[f32],
    blocks: std::ops::Range<usize>,
    bufs: ChunkBufs<'_>,
    out: &mut [f32],
) {
    let Wgrad { hw, hw8, .. } = *lay;
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * hw);
    let ChunkBufs { lanes, sub, dypad } = bufs;
    lanes.fill(0.0);
    for b in blocks {
        let i0 = b * lay.images;
        let gn = lay.images.min(g.n - i0);
        let sub = &mut sub[..gn * g.c_in * hw8];
        for (xi, si) in x[i0 * xs..][..gn * xs]
            .chunks_exact(xs)
            .zip(sub.chunks_exact_mut(g.c_in * hw8))
        {
            subsample(g, xi, hw8, si);
        }
        // dY rows of whole vectors: in place, or copied with a zero tail.
        let dyg = &dy[i0 * ys..][..gn * ys];
        let dyb: &[f32] = if hw8 != hw {
            let d = &mut dypad[..gn * g.c_out * hw8];
            for (dst, src) in d.chunks_exact_mut(hw8).zip(dyg.chunks_exact(hw)) {
                dst[..hw].copy_from_slice(src);
                dst[hw..].fill(0.0);
            }
            d
        } else {
            dyg
        };
        // The next block's dY (its first reads would wait on memory inside the tiles).
        let next = match g.n - (i0 + gn) {
            0 => &[][..],
            rest => &dy[(i0 + gn) * ys..][..lay.images.min(rest) * ys],
        };
        block_tiles(s, g, lay, gn, dyb, sub, next, lanes);
    }
    // Reduce each tile's lanes in a fixed order (tiles past the channels are dropped).
    for (t, tile) in lanes.chunks_exact(TR * TC * LANES).enumerate() {
        let (ct, it) = (t / lay.ci_tiles, t % lay.ci_tiles);
        for r in 0..TR {
            let co = ct * TR + r;
            for c in 0..TC {
                let ci = it * TC + c;
                if co < g.c_out && ci < g.c_in {
                    let v = s.load(&tile[(r * TC + c) * LANES..]);
                    out[co * g.c_in + ci] = s.reduce_add(v);
                }
            }
        }
    }
}

/// Adds the products of one block of `gn` images to every tile's lane sums: `dyb` holds
/// their `dY` (`gn x Cout` rows of `hw8` floats apart) and `sub` their subsampled input
/// (`gn x Cin` rows), each row a whole number of vectors; `next` (the next block's `dY`) is
/// prefetched along the way.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_tiles<S: Simd>(
    s: S,
    g: &Conv2d,
    lay: &Wgrad,
    gn: usize,
    dyb: &[f32],
    sub: &[f32],
    next: &[f32],
    lanes: &mut [f32],
) {
    let hw8 = lay.hw8;
    let steps = hw8 / LANES;
    // Each tile asks for its share of `next`: spread out, the fetches overlap the arithmetic
    // (asked for all at once, they stalled it: measured slower).
    let share = next.len().div_ceil(lay.co_tiles * lay.ci_tiles);
    for (t, tile) in lanes.chunks_exact_mut(TR * TC * LANES).enumerate() {
        let (ct, it) = (t / lay.ci_tiles, t % lay.ci_tiles);
        if let Some(p) = next.get(t * share..) {
            prefetch(&p[..share.min(p.len())]);
        }
        // Channels past the last repeat it (in bounds); their sums are never read.
        let mut co = [0; TR];
        for (r, v) in co.iter_mut().enumerate() {
            *v = (ct * TR + r).min(g.c_out - 1);
        }
        let mut ci = [0; TC];
        for (c, v) in ci.iter_mut().enumerate() {
            *v = (it * TC + c).min(g.c_in - 1);
        }
        let mut acc = [s.splat(0.0); TR * TC];
        for (k, v) in acc.iter_mut().enumerate() {
            *v = s.load(&tile[k * LANES..]);
        }
        for img in 0..gn {
            let mut a: [&[f32]; TR] = [&[]; TR];
            for (r, v) in a.iter_mut().enumerate() {
                *v = &dyb[(img * g.c_out + co[r]) * hw8..][..hw8];
            }
            let mut b: [&[f32]; TC] = [&[]; TC];
            for (c, v) in b.iter_mut().enumerate() {
                *v = &sub[(img * g.c_in + ci[c]) * hw8..][..hw8];
            }
            for q in 0..steps {
                let p = q * LANES;
                let mut bv = [s.splat(0.0); TC];
                for c in 0..TC {
                    bv[c] = s.load(&b[c][p..p + LANES]);
                }
                for r in 0..TR {
                    let av = s.load(&a[r][p..p + LANES]);
                    for c in 0..TC {
                        acc[r * TC + c] = s.fma(av, bv[c], acc[r * TC + c]);
                    }
                }
            }
        }
        for (k, v) in acc.iter().enumerate() {
            s.store(&mut tile[k * LANES..], *v);
        }
    }
}

/// The scratch floats of the three passes of a pointwise strided geometry.
pub(super) fn scratch(g: &Conv2d) -> [Scratch; 3] {
    let hw = g.out_h().saturating_mul(g.out_w());
    let lay = Wgrad::of(g);
    let padded = if lay.hw8 != hw {
        lay.images.saturating_mul(g.c_out).saturating_mul(lay.hw8)
    } else {
        0
    };
    [
        // Forward: WPACK once; SUB, OUT and PANELS per thread.
        Scratch {
            once: packed_a_len(g.c_out, g.c_in),
            per_thread: g
                .c_in
                .saturating_add(panel_rows(g.c_out))
                .saturating_mul(hw)
                .saturating_add(panels_len(packed_b_len(g.c_in, hw))),
        },
        // Weight gradient: CHUNK_SUMS once; LANE_SUMS, SUB and DYPAD per thread.
        Scratch {
            once: lay.chunks.saturating_mul(g.c_out).saturating_mul(g.c_in),
            per_thread: lay
                .lane_sums()
                .saturating_add(lay.images.saturating_mul(g.c_in).saturating_mul(lay.hw8))
                .saturating_add(padded),
        },
        // Input gradient: WPACK once; OUT and PANELS per thread.
        Scratch {
            once: packed_a_len(g.c_in, g.c_out),
            per_thread: panel_rows(g.c_in)
                .saturating_mul(hw)
                .saturating_add(panels_len(packed_b_len(g.c_out, hw))),
        },
    ]
}
