//! Winograd minimal filtering F(2x2, 3x3) (Lavin & Gray 2016) for the forward pass (here)
//! and the weight gradient (`weight_grad.rs`) of 3x3, stride-1, pad-1 convolutions on
//! AVX-512: 16 multiplications per 2x2 output tile and channel pair instead of the direct
//! convolution's 36.
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
//!   transformed tiles stay in L2), the input transform `V = B^T d B` of every 4x4 patch into
//!   16 matrices `V[k]` (`Cin x T`, the group's `T` tiles rounded up to 16 lanes), computed
//!   16 tiles of a tile row at a time (the lanes): the plane is first split into its even
//!   and odd columns so that every patch column is a contiguous vector;
//! - the 16 independent products `M[k] = U[k] * V[k]` on an 8x32 register tile (8 output
//!   channels broadcast, 32 tiles in two vectors), each output one chain of fused
//!   multiply-adds in input-channel order;
//! - the output transform `Y = A^T M A` 16 tiles of a tile row at a time, the two output
//!   pixels of each tile row interleaved into NCHW rows, with the bias, a residual and the
//!   ReLU applied as they are stored (`act(y + bias + residual)`).
//!
//! Every output is the same sequence of operations whatever the number of threads. The
//! transforms' entries are 0, +-1 and +-1/2, so the rounding error stays of the order of
//! the direct sum's.

mod weight_grad;

pub(super) use weight_grad::{weight_grad, WgradLayout};

use crate::error::Result;
use crate::kernels::conv::{images_per_group, with_scratch, Conv2d, Store};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Output channels per panel of `U` (the broadcast rows of the product tile).
pub(super) const ROWS: usize = 8;
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

/// Whether the forward pass of `g` runs here: 3x3, stride 1, padding 1, on AVX-512, at least
/// 64 input and output channels (2026-12-08, AMD EPYC KVM, 2 threads: 1.2-1.9x the direct
/// convolution at 64 and 128 channels; at 32 channels the transforms cost more than the
/// multiplications saved, 0.65-0.75x).
pub(super) fn applies(g: &Conv2d) -> bool {
    g.n > 0
        && (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.pad == (1, 1)
        && g.c_in >= 64
        && g.c_out >= 64
        && crate::kernels::isa() == crate::kernels::Isa::Avx512
}

/// The cut of a geometry into tiles and groups (from the shapes only).
#[derive(Clone, Copy)]
pub(super) struct Layout {
    /// Image rows and columns (of the input and of the output).
    h: usize,
    w: usize,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
    /// Images per group.
    pub images: usize,
    /// Tiles of a full group, rounded up to 16 (the row stride of `V` and `M`).
    pub tp: usize,
    /// `Cout` rounded up to [`ROWS`].
    pub coutp: usize,
    /// Row stride of the even/odd column planes, and their length (both planes).
    eo_stride: usize,
    pub eo_len: usize,
}

impl Layout {
    pub fn of(g: &Conv2d) -> Self {
        let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
        let tiles = th * tw;
        let coutp = g.c_out.div_ceil(ROWS) * ROWS;
        let per_image = 16 * (g.c_in + coutp) * tiles * 4;
        let images = images_per_group(g.n, GROUP_BYTES, per_image, MIN_GROUPS);
        let eo_stride = tw + 1;
        Self {
            h: g.h,
            w: g.w,
            th,
            tw,
            images,
            tp: (images * tiles).next_multiple_of(16),
            coutp,
            eo_stride,
            eo_len: 2 * (2 * th + 2) * eo_stride,
        }
    }
    /// Floats of `U`, of a group's `V` and of its `M`.
    pub fn u_len(&self, g: &Conv2d) -> usize {
        16 * self.coutp * g.c_in
    }
    pub fn v_len(&self, g: &Conv2d) -> usize {
        16 * g.c_in * self.tp
    }
    pub fn m_len(&self) -> usize {
        16 * self.coutp * self.tp
    }
    /// The vectors of an image's tiles in order: whole tile rows, as many as fit the 16
    /// lanes, when a row has at most 8 tiles; else runs of at most 16 tiles of one row.
    fn vectors(&self) -> impl Iterator<Item = TileVec> + '_ {
        let (th, tw) = (self.th, self.tw);
        let rows = if tw <= 8 { 16 / tw } else { 1 };
        let per_row = if tw <= 8 { 1 } else { tw.div_ceil(16) };
        (0..th.div_ceil(rows) * per_row).map(move |v| {
            let (ty0, tx0) = (v / per_row * rows, v % per_row * 16);
            let (nrows, n) = if tw <= 8 {
                (rows.min(th - ty0), tw)
            } else {
                (1, (tw - tx0).min(16))
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

impl Segment {
    fn mask(&self) -> __mmask16 {
        mask(self.lane0 + self.n) & !mask(self.lane0)
    }
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
            with_scratch(&WV, lay.v_len(g), |v| {
                with_scratch(&WM, lay.m_len(), |m| {
                    with_scratch(&WEO, lay.eo_len, |eo| {
                        let images = xg.len() / xs;
                        let res = store
                            .residual
                            .map(|r| &r[gi * lay.images * ys..][..images * ys]);
                        // SAFETY: `applies` checked AVX-512F; the buffers have the
                        // layout's lengths and the slices the group's.
                        unsafe { group(g, &lay, u, xg, v, m, eo, store, res, yg) };
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

/// Lanes `0..n` of a vector.
#[inline]
fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Splits the plane `xp` (`h x w`) into its even and odd padded columns, rows `yp < 2 th + 2`
/// of `s = tw + 1` floats each: `ev[yp][j] = x[yp - 1][2j - 1]` and `od[yp][j] = x[yp - 1][2j]`
/// (zero outside the plane), so that every column of the 4x4 patches of a tile row is a
/// contiguous run.
///
/// # Safety
/// AVX-512F (only for the code generated; every access is checked).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split_columns(lay: &Layout, xp: &[f32], eo: &mut [f32]) {
    let s = lay.eo_stride;
    let hp = 2 * lay.th + 2;
    let w = lay.w;
    let (ev, od) = eo[..2 * hp * s].split_at_mut(hp * s);
    for yp in 0..hp {
        let (er, or) = (&mut ev[yp * s..][..s], &mut od[yp * s..][..s]);
        if yp == 0 || yp > lay.h {
            er.fill(0.0);
            or.fill(0.0);
            continue;
        }
        let row = &xp[(yp - 1) * w..][..w];
        // Pixel 2j goes to od[j], pixel 2j + 1 to er[j + 1]; the columns past the plane
        // are zero (`s = ceil(w / 2) + 1`).
        er[0] = 0.0;
        for ((pair, o), e) in row.chunks_exact(2).zip(or.iter_mut()).zip(&mut er[1..]) {
            *o = pair[0];
            *e = pair[1];
        }
        let half = w / 2;
        if w % 2 == 1 {
            or[half] = row[w - 1];
            or[half + 1..].fill(0.0);
        } else {
            or[half..].fill(0.0);
        }
        er[half + 1..].fill(0.0);
    }
}

/// Entry `(i, c)` of the 4x4 patches of the tiles of `vec` from a plane split by
/// [`split_columns`]: lane `q` holds `x[2 ty + i - 1][2 tx + c - 1]` of the lane's tile
/// (zero outside the plane), the lanes past `vec.lanes` zero.
///
/// # Safety
/// AVX-512F; `eo` split from a plane of the layout's geometry.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn patch_entry(lay: &Layout, eo: &[f32], vec: &TileVec, i: usize, c: usize) -> __m512 {
    let s = lay.eo_stride;
    let (ev, od) = eo.split_at((2 * lay.th + 2) * s);
    let (src, off) = match c {
        0 => (ev, 0),
        1 => (od, 0),
        2 => (ev, 1),
        _ => (od, 1),
    };
    let mut val = _mm512_setzero_ps();
    for sg in vec.segments() {
        let at = (2 * sg.ty + i) * s + sg.tx0 + off;
        debug_assert!(at + sg.n <= src.len());
        // SAFETY: lanes `lane0..lane0 + n` read `src[at..at + n]`, inside a row of
        // `s = tw + 1` floats; the other lanes are masked off.
        val = unsafe {
            _mm512_mask_loadu_ps(
                val,
                sg.mask(),
                src.as_ptr().wrapping_add(at).wrapping_sub(sg.lane0),
            )
        };
    }
    val
}

/// The input transform `V = B^T d B` of every tile of the channels `xi` (whole `h x w`
/// planes) of one image: entry `k = 4 r + j` of tile `t` of channel `ci` goes to
/// `v[(k * rows + ci) * ld + t0 + t]`, 16 tiles at a time (the lanes of a [`TileVec`]); the
/// lanes past the image's tiles are left as they are.
///
/// # Safety
/// AVX-512F; `eo` of `lay.eo_len` floats; `v` holds `16 * rows` rows of `ld` floats,
/// `rows >=` the channels of `xi` and `t0 + th * tw <= ld`.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(
    lay: &Layout,
    xi: &[f32],
    eo: &mut [f32],
    v: &mut [f32],
    rows: usize,
    ld: usize,
    t0: usize,
) {
    for (ci, xp) in xi.chunks_exact(lay.h * lay.w).enumerate() {
        // SAFETY: the caller's contract (AVX-512F).
        unsafe { split_columns(lay, xp, eo) };
        let eo = &*eo;
        for vec in lay.vectors() {
            let k = mask(vec.lanes);
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for (i, di) in d.iter_mut().enumerate() {
                for (c, dc) in di.iter_mut().enumerate() {
                    // SAFETY: `eo` was split from this layout's plane.
                    *dc = unsafe { patch_entry(lay, eo, &vec, i, c) };
                }
            }
            // h = d B (columns), then B^T h (rows).
            let mut h = [[_mm512_setzero_ps(); 4]; 4];
            for (hi, di) in h.iter_mut().zip(&d) {
                hi[0] = _mm512_sub_ps(di[0], di[2]);
                hi[1] = _mm512_add_ps(di[1], di[2]);
                hi[2] = _mm512_sub_ps(di[2], di[1]);
                hi[3] = _mm512_sub_ps(di[1], di[3]);
            }
            let t = t0 + vec.t0;
            #[allow(clippy::needless_range_loop)] // Column j of every row of h.
            for j in 0..4 {
                let vals = [
                    _mm512_sub_ps(h[0][j], h[2][j]),
                    _mm512_add_ps(h[1][j], h[2][j]),
                    _mm512_sub_ps(h[2][j], h[1][j]),
                    _mm512_sub_ps(h[1][j], h[3][j]),
                ];
                for (r, &val) in vals.iter().enumerate() {
                    let at = ((4 * r + j) * rows + ci) * ld + t;
                    debug_assert!(at + vec.lanes <= v.len());
                    // SAFETY: the lanes of tiles `t..t + lanes` of row `(k, ci)`.
                    unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), k, val) };
                }
            }
        }
    }
}

/// One group of images: the input transform, the 16 products, the output transform.
///
/// # Safety
/// AVX-512F must be available; `u`, `v`, `m`, `eo` of the layout's lengths, `x` and `y`
/// whole images (at most `lay.images`), `res` (if any) of `y`'s length.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn group(
    g: &Conv2d,
    lay: &Layout,
    u: &[f32],
    x: &[f32],
    v: &mut [f32],
    m: &mut [f32],
    eo: &mut [f32],
    store: Store<'_>,
    res: Option<&[f32]>,
    y: &mut [f32],
) {
    let (th, tw, tp) = (lay.th, lay.tw, lay.tp);
    let plane = g.h * g.w;
    let images = x.len() / (g.c_in * plane);
    let tiles = th * tw;
    let used = images * tiles;
    // The lanes past the group's tiles: zero (their products are never read).
    if used < tp {
        for row in v.chunks_exact_mut(tp) {
            row[used..].fill(0.0);
        }
    }
    // Input transform.
    for (img, xi) in x.chunks_exact(g.c_in * plane).enumerate() {
        // SAFETY: the caller's contract; `v` rows of `tp` floats hold the group's tiles.
        unsafe { input_transform(lay, xi, eo, v, g.c_in, tp, img * tiles) };
    }
    // The 16 products M[k] = U[k] * V[k].
    let panels = lay.coutp / ROWS;
    for kk in 0..16 {
        let uk = &u[kk * panels * ROWS * g.c_in..][..panels * ROWS * g.c_in];
        let vk = &v[kk * g.c_in * tp..][..g.c_in * tp];
        let mk = &mut m[kk * lay.coutp * tp..][..lay.coutp * tp];
        let mut c0 = 0;
        while c0 < used {
            let wide = c0 + 32 <= tp;
            for (p, up) in uk.chunks_exact(ROWS * g.c_in).enumerate() {
                // SAFETY: `up` holds `ROWS * Cin` floats, `vk` rows of `tp` floats from
                // `c0` (+32 or +16 <= tp), `mk` rows `p * ROWS..` of `tp` floats.
                unsafe {
                    let out = mk.as_mut_ptr().add(p * ROWS * tp + c0);
                    if wide {
                        tile::<2>(g.c_in, up.as_ptr(), vk.as_ptr().add(c0), tp, out);
                    } else {
                        tile::<1>(g.c_in, up.as_ptr(), vk.as_ptr().add(c0), tp, out);
                    }
                }
            }
            c0 += if wide { 32 } else { 16 };
        }
    }
    // Output transform.
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let zero = _mm512_setzero_ps();
    let ys = g.c_out * plane;
    for img in 0..images {
        for co in 0..g.c_out {
            let b = store.bias.map(|b| _mm512_set1_ps(b[co]));
            let base = img * ys + co * plane;
            for vec in lay.vectors() {
                let k = mask(vec.lanes);
                let t0 = img * tiles + vec.t0;
                let mut mv = [zero; 16];
                for (kk, mvk) in mv.iter_mut().enumerate() {
                    let at = (kk * lay.coutp + co) * tp + t0;
                    debug_assert!(at + vec.lanes <= m.len());
                    // SAFETY: the lanes of tiles `t0..t0 + lanes` of row `(k, co)`.
                    *mvk = unsafe { _mm512_maskz_loadu_ps(k, m.as_ptr().add(at)) };
                }
                // s = A^T M (2 x 4), then s A (2 x 2).
                let mut sm = [[zero; 4]; 2];
                for j in 0..4 {
                    sm[0][j] = _mm512_add_ps(_mm512_add_ps(mv[j], mv[4 + j]), mv[8 + j]);
                    sm[1][j] = _mm512_sub_ps(_mm512_sub_ps(mv[4 + j], mv[8 + j]), mv[12 + j]);
                }
                for (r, sr) in sm.iter().enumerate() {
                    let y0 = _mm512_add_ps(_mm512_add_ps(sr[0], sr[1]), sr[2]);
                    let y1 = _mm512_sub_ps(_mm512_sub_ps(sr[1], sr[2]), sr[3]);
                    // Lane 2q + e of the interleaved pair holds pixel e of tile lane q.
                    let halves = [
                        _mm512_permutex2var_ps(y0, lo, y1),
                        _mm512_permutex2var_ps(y0, hi, y1),
                    ];
                    for sg in vec.segments() {
                        let oy = 2 * sg.ty + r;
                        if oy >= g.h {
                            continue;
                        }
                        // Interleaved positions [2 lane0, 2 lane0 + count): pixels
                        // 2 tx0.. of output row oy.
                        let count = (2 * sg.n).min(g.w - 2 * sg.tx0);
                        let (p0, p1) = (2 * sg.lane0, 2 * sg.lane0 + count);
                        for (hh, &val) in halves.iter().enumerate() {
                            let (h0, h1) = (16 * hh, 16 * hh + 16);
                            if p1 <= h0 || p0 >= h1 {
                                continue;
                            }
                            let km = (mask(p1.min(h1) - h0) & !mask(p0.max(h0) - h0)) as __mmask16;
                            // Lane q of this half is pixel 2 tx0 + h0 + q - p0.
                            let at = base + oy * g.w + 2 * sg.tx0;
                            let mut a = val;
                            if let Some(b) = b {
                                a = _mm512_add_ps(a, b);
                            }
                            if let Some(rs) = res {
                                // SAFETY: the unmasked lanes read pixels of row `oy` of this
                                // plane (`count` pixels from `2 tx0`).
                                a = _mm512_add_ps(a, unsafe {
                                    _mm512_maskz_loadu_ps(
                                        km,
                                        rs.as_ptr().wrapping_add(at + h0).wrapping_sub(p0),
                                    )
                                });
                            }
                            if store.relu {
                                // max(0, a) returns `a` when it is NaN or -0, as
                                // `if a < 0 { 0 }`.
                                a = _mm512_max_ps(zero, a);
                            }
                            // SAFETY: as the residual's load.
                            unsafe {
                                _mm512_mask_storeu_ps(
                                    y.as_mut_ptr().wrapping_add(at + h0).wrapping_sub(p0),
                                    km,
                                    a,
                                )
                            };
                        }
                    }
                }
            }
        }
    }
}

/// `out[r * ld + j] = sum_ci u[ci * ROWS + r] * v[ci * ld + j]` for `r < ROWS`,
/// `j < 16 * NV`: one fused multiply-add chain per output, in `ci` order.
///
/// # Safety
/// AVX-512F; `u` valid for `cin * ROWS` reads, `v` for rows `ci < cin` of `16 * NV` floats
/// at stride `ld`, `out` for `ROWS` rows of `16 * NV` floats at stride `ld`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const NV: usize>(
    cin: usize,
    u: *const f32,
    v: *const f32,
    ld: usize,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
    let (mut u, mut v) = (u, v);
    for _ in 0..cin {
        // SAFETY: the caller's contract; `cin` steps.
        unsafe {
            let mut b = [_mm512_setzero_ps(); NV];
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm512_loadu_ps(v.add(16 * j));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*u.add(r));
                for (j, &bj) in b.iter().enumerate() {
                    row[j] = _mm512_fmadd_ps(a, bj, row[j]);
                }
            }
            u = u.add(ROWS);
            v = v.add(ld);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &val) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_ps(out.add(r * ld + 16 * j), val) };
        }
    }
}
