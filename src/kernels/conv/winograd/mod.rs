//! Winograd minimal filtering F(2x2, 3x3) (Lavin & Gray 2016) for the forward pass of 3x3,
//! stride-1, pad-1 convolutions on AVX-512 and on AVX2: 16 multiplications per 2x2 output
//! tile and channel pair instead of the direct convolution's 36. The transforms are written
//! once over a vector of `N` tiles (`lanes.rs`: 16 with AVX-512, 8 with AVX2) and compiled
//! for each instruction set.
//!
//! Each output tile `(ty, tx)` of an image covers the output pixels `2ty..2ty+2 x
//! 2tx..2tx+2` and reads the 4x4 input patch at `(2ty - 1, 2tx - 1)` (outside the image:
//! zero, the padding; a last tile of an odd output size is cut short when stored). With
//! `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`, `G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
//! 0 0 1]` and `A^T = [1 1 1 0; 0 1 -1 -1]`:
//!
//! - filter transform, once per call: `U = G g G^T` of every `(co, ci)` kernel, stored as
//!   16 matrices `U[k]` (`Cout x Cin`, `Cout` rounded up to [`ROWS`]) in [`ROWS`]-row panels;
//! - per group of whole images (the group's size from the shapes only, so that its
//!   transformed tiles stay in L2; an image too large for that is taken a block of tile rows
//!   at a time), the input transform `V = B^T d B` of every 4x4 patch into 16 matrices
//!   `V[k]` (`Cin x T`, the group's `T` tiles rounded up to 16), computed `N` tiles of a
//!   tile row at a time (the lanes): the plane is first split into its even and odd columns
//!   (two permutes per `2 N` floats) so that every patch column is a contiguous vector, and
//!   each vector's masks and offsets are worked out once for all 16 loads;
//! - the 16 independent products `M[k] = U[k] * V[k]` on a register tile (8 output
//!   channels x 32 tiles with AVX-512, 4 x 16 with AVX2), each output one chain of fused
//!   multiply-adds in input-channel order;
//! - the output transform `Y = A^T M A` `N` tiles of a tile row at a time, the two output
//!   pixels of each tile row interleaved into NCHW rows, with the bias, a residual and the
//!   ReLU applied as they are stored (`act(y + bias + residual)`).
//!
//! Every output is the same sequence of operations whatever the number of threads. The
//! transforms' entries are 0, +-1 and +-1/2, so the rounding error stays of the order of
//! the direct sum's.

use crate::error::Result;
use crate::kernels::conv::{images_per_group, with_scratch, Conv2d, Store};
use rayon::prelude::*;
use std::cell::RefCell;

mod lanes;
mod weight_grad;
use lanes::{Avx2, Avx512, Lanes, ROWS};
pub(super) use weight_grad::{weight_grad, WgradLayout};

/// Bytes of a group's `V` and `M` (whole images, at least one): about half the L2.
pub(super) const GROUP_BYTES: usize = 640 * 1024;
/// A batch of at least this many images is cut into at least this many groups.
pub(super) const MIN_GROUPS: usize = 8;

thread_local! {
    /// `U`, once per call.
    static WU: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A group's `V`.
    static WV: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A group's `M`.
    static WM: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One input plane split into its even and odd (padded) columns.
    static WEO: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether the forward pass of `g` runs here: 3x3, stride 1, padding 1, on AVX-512 or AVX2,
/// at least 32 input and output channels (2026-12-08, AMD EPYC KVM, 2 threads, the
/// benchmark model's layers: AVX-512 1.27x the direct convolution at 32 channels, 32 x 32
/// pixels, 1.2-1.9x at 64 and 128; AVX2 forced 1.1x, 1.2-1.3x and 1.5x).
pub(super) fn applies(g: &Conv2d) -> bool {
    g.n > 0
        && (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.pad == (1, 1)
        && g.c_in >= 32
        && g.c_out >= 32
        && matches!(
            crate::kernels::isa(),
            crate::kernels::Isa::Avx512 | crate::kernels::Isa::Avx2Fma
        )
}

/// Whether the weight gradient of `g` runs here ([`weight_grad`]): a geometry [`applies`]
/// accepts with at least 64 input and output channels, on AVX-512 (2026-12-08, AMD EPYC KVM,
/// 2 threads: 1.14-1.22x the direct weight gradient at 64 and 128 channels).
pub(super) fn weight_grad_applies(g: &Conv2d) -> bool {
    applies(g)
        && g.c_in >= 64
        && g.c_out >= 64
        && crate::kernels::isa() == crate::kernels::Isa::Avx512
}

/// Tiles per vector on this CPU's instruction set.
fn lanes() -> usize {
    if crate::kernels::isa() == crate::kernels::Isa::Avx512 {
        Avx512::N
    } else {
        Avx2::N
    }
}

/// Whether a vector of `lanes` tiles holds whole tile rows of `tw` tiles (else runs of one
/// row): when a row has at most half as many tiles as the vector.
fn rows_per_vector(tw: usize, lanes: usize) -> bool {
    tw <= lanes / 2
}

/// The cut of a geometry into tiles and groups (from the shapes only).
#[derive(Clone, Copy)]
pub(super) struct Layout {
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
    /// Images per group.
    pub images: usize,
    /// Tiles per vector of the transforms: 16 (AVX-512) or 8 (AVX2).
    lanes: usize,
    /// Tile rows per block: a group is processed a block of tile rows of its images at a
    /// time (all the rows, unless one image's transforms exceed [`GROUP_BYTES`]).
    block_rows: usize,
    /// Tiles of a full group, rounded up to 16 (the row stride of `V` and `M`).
    pub tp: usize,
    /// `Cout` rounded up to [`ROWS`].
    pub coutp: usize,
    /// Floats from `V[k]` to `V[k + 1]` and from `M[k]` to `M[k + 1]`: the matrices' sizes
    /// plus one cache line, so that the 16 rows one tile's transform reads or writes do not
    /// all fall in one set of the L1 cache (the sizes are multiples of 4 KiB).
    vks: usize,
    mks: usize,
    /// Row stride of the even/odd column planes, and their length (both planes).
    eo_stride: usize,
    pub eo_len: usize,
}

impl Layout {
    pub fn of(g: &Conv2d) -> Self {
        let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
        let tiles = th * tw;
        let coutp = g.c_out.div_ceil(ROWS) * ROWS;
        let per_tile = 16 * (g.c_in + coutp) * 4;
        let images = images_per_group(g.n, GROUP_BYTES, per_tile * tiles, MIN_GROUPS);
        // An image whose V and M exceed the budget is cut into blocks of whole tile rows
        // (when its tile rows are vectors of their own).
        let lanes = lanes();
        let block_rows =
            if images == 1 && !rows_per_vector(tw, lanes) && per_tile * tiles > GROUP_BYTES {
                (GROUP_BYTES / (per_tile * tw)).clamp(1, th)
            } else {
                th
            };
        let eo_stride = tw + 1;
        let tp = (images * block_rows * tw).next_multiple_of(16);
        Self {
            th,
            tw,
            images,
            lanes,
            block_rows,
            tp,
            coutp,
            vks: g.c_in * tp + 16,
            mks: coutp * tp + 16,
            eo_stride,
            eo_len: 2 * (2 * th + 2) * eo_stride,
        }
    }
    /// The blocks of tile rows a group is processed in, `(first, end)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.th.div_ceil(self.block_rows)).map(|b| {
            let r0 = b * self.block_rows;
            (r0, (r0 + self.block_rows).min(self.th))
        })
    }
    /// Floats of `U`, of a group's `V` and of its `M`.
    pub fn u_len(&self, g: &Conv2d) -> usize {
        16 * self.coutp * g.c_in
    }
    pub fn v_len(&self) -> usize {
        16 * self.vks
    }
    pub fn m_len(&self) -> usize {
        16 * self.mks
    }
    /// The vectors of an image's tiles in order: whole tile rows, as many as fit the lanes,
    /// when a row has at most half as many tiles; else runs of at most a vector's lanes of
    /// one row.
    fn vectors(&self) -> impl Iterator<Item = TileVec> + '_ {
        let (th, tw, lanes) = (self.th, self.tw, self.lanes);
        let whole = rows_per_vector(tw, lanes);
        let rows = if whole { lanes / tw } else { 1 };
        let per_row = if whole { 1 } else { tw.div_ceil(lanes) };
        (0..th.div_ceil(rows) * per_row).map(move |v| {
            let (ty0, tx0) = (v / per_row * rows, v % per_row * lanes);
            let (nrows, n) = if whole {
                (rows.min(th - ty0), tw)
            } else {
                (1, (tw - tx0).min(lanes))
            };
            TileVec {
                t0: ty0 * tw + tx0,
                lanes: nrows * n,
                ty0,
                tx0,
                nrows,
                n,
            }
        })
    }
}

/// One vector of tiles of an image: `nrows` runs of `n` tiles from `(ty0 + r, tx0)`, in
/// consecutive lanes, the tiles `t0..t0 + lanes` of the image in row-major tile order.
#[derive(Clone, Copy)]
struct TileVec {
    t0: usize,
    lanes: usize,
    ty0: usize,
    tx0: usize,
    nrows: usize,
    n: usize,
}

/// A run of `n` tiles of tile row `ty` from column `tx0`, in lanes `lane0..lane0 + n`.
#[derive(Clone, Copy)]
struct Segment {
    ty: usize,
    tx0: usize,
    lane0: usize,
    n: usize,
}

impl TileVec {
    fn segments(&self) -> impl Iterator<Item = Segment> {
        let v = *self;
        (0..v.nrows).map(move |r| Segment {
            ty: v.ty0 + r,
            tx0: v.tx0,
            lane0: r * v.n,
            n: v.n,
        })
    }
}

/// The forward pass of [`conv2d_forward`](crate::kernels::conv::conv2d_forward) for a
/// geometry [`applies`] accepts (arguments checked).
pub(super) fn forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    store: Store<'_>,
    y: &mut [f32],
) -> Result<()> {
    let lay = Layout::of(g);
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    with_scratch(&WU, lay.u_len(g), |u| {
        filter_transform(g, &lay, w, u);
        let u = &*u;
        let task = |(gi, (xg, yg)): (usize, (&[f32], &mut [f32]))| {
            with_scratch(&WV, lay.v_len(), |v| {
                with_scratch(&WM, lay.m_len(), |m| {
                    with_scratch(&WEO, lay.eo_len, |eo| {
                        let images = xg.len() / xs;
                        let res = store
                            .residual
                            .map(|r| &r[gi * lay.images * ys..][..images * ys]);
                        for rows in lay.blocks() {
                            let bufs = (&mut *v, &mut *m, &mut *eo);
                            // SAFETY: `applies` checked the instruction set, which `lanes`
                            // and the layout follow; the buffers have the layout's lengths,
                            // the slices the group's, `rows` a block's.
                            unsafe {
                                if lay.lanes == Avx512::N {
                                    block_avx512(g, &lay, u, xg, bufs, store, res, yg, rows)
                                } else {
                                    block_avx2(g, &lay, u, xg, bufs, store, res, yg, rows)
                                }
                            }
                        }
                    })
                })
            })
        };
        if g.n > lay.images {
            x.par_chunks(xs * lay.images)
                .zip(y.par_chunks_mut(ys * lay.images))
                .enumerate()
                .for_each(task);
        } else {
            task((0, (x, y)));
        }
    });
    Ok(())
}

/// `U[k][co][ci]` of `G g G^T`, stored at `((k * coutp / ROWS + co / ROWS) * Cin + ci) *
/// ROWS + co % ROWS`; the padding rows are zero.
fn filter_transform(g: &Conv2d, lay: &Layout, w: &[f32], u: &mut [f32]) {
    let panels = lay.coutp / ROWS;
    u.fill(0.0);
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let k = &w[(co * g.c_in + ci) * 9..][..9];
            // t = G g (4 x 3), then t G^T (4 x 4).
            let mut t = [[0.0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (k[c], k[3 + c], k[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (r, row) in t.iter().enumerate() {
                let (g0, g1, g2) = (row[0], row[1], row[2]);
                let vals = [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
                for (c, &val) in vals.iter().enumerate() {
                    let kk = 4 * r + c;
                    u[((kk * panels + co / ROWS) * g.c_in + ci) * ROWS + co % ROWS] = val;
                }
            }
        }
    }
}

/// [`block`] on AVX-512.
///
/// # Safety
/// AVX-512F; as [`block`].
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(
    g: &Conv2d,
    lay: &Layout,
    u: &[f32],
    x: &[f32],
    (v, m, eo): (&mut [f32], &mut [f32], &mut [f32]),
    store: Store<'_>,
    res: Option<&[f32]>,
    y: &mut [f32],
    rows: (usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { block(Avx512::new(), g, lay, u, x, (v, m, eo), store, res, y, rows) }
}

/// [`block`] on AVX2.
///
/// # Safety
/// AVX2 and FMA; as [`block`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(
    g: &Conv2d,
    lay: &Layout,
    u: &[f32],
    x: &[f32],
    (v, m, eo): (&mut [f32], &mut [f32], &mut [f32]),
    store: Store<'_>,
    res: Option<&[f32]>,
    y: &mut [f32],
    rows: (usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { block(Avx2::new(), g, lay, u, x, (v, m, eo), store, res, y, rows) }
}

/// Tile rows `rows.0..rows.1` of every image of a group: the input transform, the 16
/// products, the output transform, in `L`'s vectors.
///
/// # Safety
/// `L`'s instruction set; `u`, `v`, `m`, `eo` of the layout's lengths (the layout made for
/// `L::N` lanes), `x` and `y` whole images (at most `lay.images`), `res` (if any) of `y`'s
/// length, `rows` one of the layout's blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<L: Lanes>(
    l: L,
    g: &Conv2d,
    lay: &Layout,
    u: &[f32],
    x: &[f32],
    (v, m, eo): (&mut [f32], &mut [f32], &mut [f32]),
    store: Store<'_>,
    res: Option<&[f32]>,
    y: &mut [f32],
    (r0, r1): (usize, usize),
) {
    debug_assert_eq!(lay.lanes, L::N);
    let (tw, tp) = (lay.tw, lay.tp);
    let plane = g.h * g.w;
    let images = x.len() / (g.c_in * plane);
    // The block's tiles per image; tile `t` of the image is column `img * tiles + t - first`.
    let (tiles, first) = ((r1 - r0) * tw, r0 * tw);
    let used = images * tiles;
    // The lanes past the group's tiles: zero (their products are never read).
    if used < tp {
        for vk in v.chunks_exact_mut(lay.vks) {
            for row in vk[..g.c_in * tp].chunks_exact_mut(tp) {
                row[used..].fill(0.0);
            }
        }
    }
    // Input transform.
    for (img, xi) in x.chunks_exact(g.c_in * plane).enumerate() {
        // SAFETY: `L`'s instruction set (the caller's contract); `v` holds the 16 matrices
        // of `Cin` rows of `tp` floats at stride `vks`, the block's tiles from `img *
        // tiles`.
        unsafe { input_transform(l, g, lay, xi, eo, v, (lay.vks, tp), img * tiles, (r0, r1)) };
    }
    // The 16 products M[k] = U[k] * V[k].
    let panels = lay.coutp / ROWS;
    for kk in 0..16 {
        let uk = &u[kk * panels * ROWS * g.c_in..][..panels * ROWS * g.c_in];
        let vk = &v[kk * lay.vks..][..g.c_in * tp];
        let mk = &mut m[kk * lay.mks..][..lay.coutp * tp];
        let mut c0 = 0;
        while c0 < used {
            // A multiple of L::N: tp is a multiple of 16, c0 of L::N.
            let cols = L::COLS.min(tp - c0);
            for (p, up) in uk.chunks_exact(ROWS * g.c_in).enumerate() {
                // SAFETY: `up` holds `ROWS * Cin` floats, `vk` rows of `tp` floats from
                // `c0` (+ cols <= tp), `mk` rows `p * ROWS..` of `tp` floats.
                unsafe {
                    let out = mk.as_mut_ptr().add(p * ROWS * tp + c0);
                    l.product(g.c_in, up.as_ptr(), vk.as_ptr().add(c0), tp, out, cols);
                }
            }
            c0 += cols;
        }
    }
    // Output transform.
    let n = L::N;
    let ys = g.c_out * plane;
    for img in 0..images {
        for vec in lay.vectors().filter(|v| (r0..r1).contains(&v.ty0)) {
            let k = l.lanes(0, vec.lanes);
            let t0 = img * tiles + vec.t0 - first;
            // The vector's stores: output row r of the tiles (0 or 1), half hh of the
            // interleaved pair, the offset in the plane of that half's lane 0 (wrapping) and
            // its lanes.
            let mut stores = [(0usize, 0usize, 0usize, l.lanes(0, 0)); 64];
            let mut ns = 0;
            for r in 0..2 {
                for sg in vec.segments() {
                    let oy = 2 * sg.ty + r;
                    if oy >= g.h {
                        continue;
                    }
                    // Interleaved positions [2 lane0, 2 lane0 + count): pixels 2 tx0.. of
                    // output row oy.
                    let count = (2 * sg.n).min(g.w - 2 * sg.tx0);
                    let (p0, p1) = (2 * sg.lane0, 2 * sg.lane0 + count);
                    for hh in 0..2 {
                        let (h0, h1) = (n * hh, n * hh + n);
                        if p1 <= h0 || p0 >= h1 {
                            continue;
                        }
                        let km = l.lanes(p0.max(h0) - h0, p1.min(h1) - h0);
                        // Lane q of this half is pixel 2 tx0 + h0 + q - p0.
                        let at = (oy * g.w + 2 * sg.tx0 + h0).wrapping_sub(p0);
                        stores[ns] = (r, hh, at, km);
                        ns += 1;
                    }
                }
            }
            let stores = &stores[..ns];
            for co in 0..g.c_out {
                let b = store.bias.map(|b| l.splat(b[co]));
                let base = img * ys + co * plane;
                let mut mv = [l.zero(); 16];
                for (kk, mvk) in mv.iter_mut().enumerate() {
                    let at = kk * lay.mks + co * tp + t0;
                    debug_assert!(at + vec.lanes <= m.len());
                    // SAFETY: the lanes of tiles `t0..t0 + lanes` of row `(k, co)`.
                    *mvk = unsafe { l.load(k, m.as_ptr().add(at)) };
                }
                // s = A^T M (2 x 4), then s A (2 x 2).
                let mut sm = [[l.zero(); 4]; 2];
                for j in 0..4 {
                    sm[0][j] = l.add(l.add(mv[j], mv[4 + j]), mv[8 + j]);
                    sm[1][j] = l.sub(l.sub(mv[4 + j], mv[8 + j]), mv[12 + j]);
                }
                // Lane 2q + e of the interleaved pair of row r holds pixel e of tile lane q.
                let mut halves = [[l.zero(); 2]; 2];
                for (hr, sr) in halves.iter_mut().zip(&sm) {
                    let y0 = l.add(l.add(sr[0], sr[1]), sr[2]);
                    let y1 = l.sub(l.sub(sr[1], sr[2]), sr[3]);
                    let (a, b) = l.interleave(y0, y1);
                    *hr = [a, b];
                }
                for &(r, hh, at, km) in stores {
                    let at = base.wrapping_add(at);
                    let mut a = halves[r][hh];
                    if let Some(b) = b {
                        a = l.add(a, b);
                    }
                    if let Some(rs) = res {
                        // SAFETY: the unmasked lanes read pixels of one output row of this
                        // plane.
                        a = l.add(a, unsafe { l.load(km, rs.as_ptr().wrapping_add(at)) });
                    }
                    if store.relu {
                        a = l.relu(a);
                    }
                    // SAFETY: as the residual's load.
                    unsafe { l.store(y.as_mut_ptr().wrapping_add(at), km, a) };
                }
            }
        }
    }
}

/// Splits the input rows that tile rows `rows` read of one `h x w` plane into its even and
/// odd columns: `ev[yp][j] = x[yp - 1][2j - 1]`, `od[yp][j] = x[yp - 1][2j]` (zero outside
/// the plane), the two halves of `eo`.
///
/// # Safety
/// `L`'s instruction set; `eo` of `lay.eo_len` floats.
#[inline(always)]
unsafe fn split_plane<L: Lanes>(
    l: L,
    g: &Conv2d,
    lay: &Layout,
    xp: &[f32],
    eo: &mut [f32],
    (r0, r1): (usize, usize),
) {
    let s = lay.eo_stride;
    let hp = 2 * lay.th + 2;
    let (ev, od) = eo.split_at_mut(hp * s);
    for yp in 2 * r0..hp.min(2 * r1 + 2) {
        let (er, or) = (&mut ev[yp * s..][..s], &mut od[yp * s..][..s]);
        if yp == 0 || yp > g.h {
            er.fill(0.0);
            or.fill(0.0);
            continue;
        }
        let row = &xp[(yp - 1) * g.w..][..g.w];
        // SAFETY: `L`'s instruction set (the caller's contract); `2 s >= w`.
        unsafe { split_row(l, row, er, or) };
    }
}

/// The runs of a tile vector in the split planes: the offset of each run's lane 0 in the
/// planes' rows (the row of the patch's top, wrapping: lane0 may exceed 2 ty s + tx0) and
/// its lanes; the first `n` of the 16 entries.
#[inline(always)]
fn runs<L: Lanes>(l: L, lay: &Layout, vec: &TileVec) -> ([(usize, L::K); 16], usize) {
    let mut runs = [(0usize, l.lanes(0, 0)); 16];
    let mut n = 0;
    for sg in vec.segments() {
        runs[n] = (
            (2 * sg.ty * lay.eo_stride + sg.tx0).wrapping_sub(sg.lane0),
            l.lanes(sg.lane0, sg.lane0 + sg.n),
        );
        n += 1;
    }
    (runs, n)
}

/// Entry `(i, c)` of the 4x4 patches of a tile vector (its `runs`), from a plane split by
/// [`split_plane`]: `x[2 ty + i - 1][2 tx + c - 1]` in each tile's lane.
///
/// # Safety
/// `L`'s instruction set; `eo` split from a plane of this layout, for the vector's rows.
#[inline(always)]
unsafe fn patch_entry<L: Lanes>(
    l: L,
    lay: &Layout,
    eo: &[f32],
    runs: &[(usize, L::K)],
    i: usize,
    c: usize,
) -> L::V {
    let s = lay.eo_stride;
    let (ev, od) = eo.split_at((2 * lay.th + 2) * s);
    let (src, off) = match c {
        0 => (ev, 0),
        1 => (od, 0),
        2 => (ev, 1),
        _ => (od, 1),
    };
    let mut val = l.zero();
    for &(at, km) in runs {
        // SAFETY: the run's lanes `lane0..lane0 + n` read `src[at + lane0 + i s + off..][..n]`,
        // inside a row of `s = tw + 1` floats; the other lanes are masked off.
        val = unsafe {
            l.load_into(
                val,
                km,
                src.as_ptr().wrapping_add(at.wrapping_add(i * s + off)),
            )
        };
    }
    val
}

/// The input transform `V = B^T d B` of the tiles in tile rows `rows` of the channels `xi`
/// (whole `h x w` planes) of one image, `N` tiles at a time (the lanes of a [`TileVec`]):
/// entry `k = 4 r + j` of the image's tile `t` of channel `ci` goes to `v[k * ks + ci * ld
/// + t0 + t - rows.0 * tw]`; the lanes past the tiles are left as they are.
///
/// # Safety
/// `L`'s instruction set; `eo` of `lay.eo_len` floats; `v` long enough for every entry
/// written (`16` matrices of the channels' rows).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_transform<L: Lanes>(
    l: L,
    g: &Conv2d,
    lay: &Layout,
    xi: &[f32],
    eo: &mut [f32],
    v: &mut [f32],
    (ks, ld): (usize, usize),
    t0: usize,
    (r0, r1): (usize, usize),
) {
    for (ci, xp) in xi.chunks_exact(g.h * g.w).enumerate() {
        // SAFETY: the caller's contract.
        unsafe { split_plane(l, g, lay, xp, eo, (r0, r1)) };
        let eo = &*eo;
        for vec in lay.vectors().filter(|v| (r0..r1).contains(&v.ty0)) {
            let k = l.lanes(0, vec.lanes);
            let (runs, nr) = runs(l, lay, &vec);
            let mut d = [[l.zero(); 4]; 4];
            for (i, di) in d.iter_mut().enumerate() {
                for (c, dc) in di.iter_mut().enumerate() {
                    // SAFETY: `eo` was split from this plane for the block's rows.
                    *dc = unsafe { patch_entry(l, lay, eo, &runs[..nr], i, c) };
                }
            }
            // h = d B (columns), then B^T h (rows).
            let mut h = [[l.zero(); 4]; 4];
            for (hi, di) in h.iter_mut().zip(&d) {
                hi[0] = l.sub(di[0], di[2]);
                hi[1] = l.add(di[1], di[2]);
                hi[2] = l.sub(di[2], di[1]);
                hi[3] = l.sub(di[1], di[3]);
            }
            let t = t0 + vec.t0 - r0 * lay.tw;
            #[allow(clippy::needless_range_loop)] // Column j of every row of h.
            for j in 0..4 {
                let vals = [
                    l.sub(h[0][j], h[2][j]),
                    l.add(h[1][j], h[2][j]),
                    l.sub(h[2][j], h[1][j]),
                    l.sub(h[1][j], h[3][j]),
                ];
                for (r, &val) in vals.iter().enumerate() {
                    let at = (4 * r + j) * ks + ci * ld + t;
                    debug_assert!(at + vec.lanes <= v.len());
                    // SAFETY: the lanes of tiles `t..t + lanes` of row `(k, ci)`.
                    unsafe { l.store(v.as_mut_ptr().add(at), k, val) };
                }
            }
        }
    }
}

/// `er[0] = 0`, `er[j] = row[2j - 1]` and `or[j] = row[2j]` for `j < er.len()`, zero past
/// the row's end: the odd and even columns of a row, `2 N` floats at a time, deinterleaved
/// by two permutes.
///
/// # Safety
/// `L`'s instruction set; `er` and `or` of one length `s` with `2 s >= row.len()`.
#[inline(always)]
unsafe fn split_row<L: Lanes>(l: L, row: &[f32], er: &mut [f32], or: &mut [f32]) {
    let (w, s, n) = (row.len(), er.len(), L::N);
    debug_assert!(or.len() == s && 2 * s >= w);
    er[0] = 0.0;
    let mut j0 = 0;
    while j0 < s {
        let c0 = 2 * j0;
        let left = w.saturating_sub(c0);
        // SAFETY: lanes `l` with `c0 + l < w` read inside `row`; the rest are masked off.
        let (a, b) = unsafe {
            (
                l.load(l.lanes(0, left.min(n)), row.as_ptr().wrapping_add(c0)),
                l.load(
                    l.lanes(0, left.saturating_sub(n).min(n)),
                    row.as_ptr().wrapping_add(c0 + n),
                ),
            )
        };
        let (evens, odds) = l.deinterleave(a, b);
        // Lane i: or[j0 + i] = row[c0 + 2i], er[j0 + 1 + i] = row[c0 + 2i + 1].
        // SAFETY: lanes `i < min(N, s - j0)` write `or[j0 + i]`; and `er[j0 + 1 + i]` for
        // `j0 + 1 + i < s`.
        unsafe {
            l.store(or.as_mut_ptr().add(j0), l.lanes(0, (s - j0).min(n)), evens);
            l.store(
                er.as_mut_ptr().add(j0 + 1),
                l.lanes(0, (s - j0 - 1).min(n)),
                odds,
            );
        }
        j0 += n;
    }
}
