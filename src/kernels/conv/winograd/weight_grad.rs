//! The Winograd F(2x2, 3x3) weight gradient (Lavin & Gray 2016) of 3x3, stride-1, pad-1
//! convolutions on AVX-512: the gradient of the forward's 16 element-wise products, summed
//! over every tile of the batch as 16 matrix products, then taken back through the filter
//! transform.
//!
//! The forward pass computes each 2x2 output tile as `y = A^T [U ⊙ V] A` with `U = G g G^T`
//! and `V = B^T d B` (see the parent module). So, per tile, `dL/dU = Z ⊙ V` with
//! `Z = A dY A^T`, the 4x4 transform of the tile's 2x2 output gradient (`A = [1 0; 1 1;
//! 1 -1; 0 -1]`; the entries of a tile cut short by an odd output size are zero), and
//!
//! - `dU[k][co][ci] = sum over tiles t of Z[k][co][t] * V[k][ci][t]`: 16 products
//!   `Cout x Cin` whose reduction runs over every tile of the batch;
//! - `dW[co][ci] = G^T dU[co][ci] G` (4x4 to 3x3).
//!
//! Per group of whole images (its size from the shapes only), the input transform of the
//! forward pass writes `V` 16 channels at a time into a staging buffer, which 16x16
//! register transposes turn into `V^T` (`[k][t][ci]`, channels in the lanes); the output
//! gradient's transform writes `Z` (`[k][co][t]`, tiles in the lanes, with the forward's
//! tile vectors). The products run on an 8x32 register tile: 8 output channels broadcast
//! from the rows of `Z`, 32 input channels in two vectors of `V^T`, one fused multiply-add
//! chain per output along the tiles, continued from group to group.
//!
//! The batch is cut into a fixed number of chunks of whole groups (from the shapes only),
//! each a task with its own partial `dU`; the partials are added in chunk order and
//! transformed into `dW`, in parallel over the output channels. Every sum therefore runs in
//! the same order whatever the number of threads.

use super::lanes::{Avx512, Lanes};
use super::{input_transform, patch_entry, runs, split_plane, Layout, ROWS, WEO};
use crate::kernels::conv::{images_per_group, with_scratch, Conv2d};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Bytes of a group's `V^T` and `Z` (whole images, at least one): about half the L2.
pub(in crate::kernels::conv) const WGRAD_GROUP_BYTES: usize = 640 * 1024;
/// The most chunks (tasks, each with its own partial `dU`) of a weight gradient.
pub(in crate::kernels::conv) const WGRAD_CHUNKS: usize = 16;

thread_local! {
    /// The chunks' partial `dU`, on the calling thread.
    static WDU: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A group's `V^T`.
    static WVT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A group's `Z`.
    static WZ: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// `V` of 16 channels of one image, before its transposition.
    static WSTAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The cut of a geometry's weight gradient into groups and chunks, and its buffers' shapes
/// (from the shapes only).
#[derive(Clone, Copy)]
pub(in crate::kernels::conv) struct WgradLayout {
    /// The forward's tiles and tile vectors.
    lay: Layout,
    /// Tiles per image.
    tiles: usize,
    /// Images per group, groups, chunks.
    images: usize,
    groups: usize,
    pub chunks: usize,
    /// Tiles of a full group: the rows of `V^T[k]`, the row stride of `Z`.
    tg: usize,
    /// `Cin` rounded up to 16 (the row stride of `V^T` and `dU`), `Cout` to [`ROWS`].
    cinp: usize,
    coutp: usize,
    /// Row stride of the staging buffer: an image's tiles rounded up to 16.
    sld: usize,
}

impl WgradLayout {
    pub fn of(g: &Conv2d) -> Self {
        let lay = Layout::of(g);
        let tiles = lay.th * lay.tw;
        let cinp = g.c_in.next_multiple_of(16);
        let coutp = g.c_out.next_multiple_of(ROWS);
        let per_image = 16 * (cinp + coutp) * tiles * 4;
        let images = images_per_group(g.n, WGRAD_GROUP_BYTES, per_image, WGRAD_CHUNKS);
        let groups = g.n.div_ceil(images);
        Self {
            lay,
            tiles,
            images,
            groups,
            chunks: groups.min(WGRAD_CHUNKS),
            tg: images * tiles,
            cinp,
            coutp,
            sld: tiles.next_multiple_of(16),
        }
    }
    /// Floats of one partial `dU`, of a group's `V^T` and `Z`, of the staging buffer and of
    /// the split plane.
    pub fn du_len(&self) -> usize {
        16 * self.coutp * self.cinp
    }
    pub fn vt_len(&self) -> usize {
        16 * self.tg * self.cinp
    }
    pub fn z_len(&self) -> usize {
        16 * self.coutp * self.tg
    }
    pub fn stage_len(&self) -> usize {
        16 * 16 * self.sld
    }
    pub fn eo_len(&self) -> usize {
        self.lay.eo_len
    }
}

/// The weight gradient of
/// [`conv2d_backward_weight`](crate::kernels::conv::conv2d_backward_weight) for a geometry
/// [`applies`](super::applies) accepts (arguments checked): `dW (+)= sum over the batch`.
pub(in crate::kernels::conv) fn weight_grad(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let wl = WgradLayout::of(g);
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    let du_len = wl.du_len();
    with_scratch(&WDU, wl.chunks * du_len, |partials| {
        let chunk = |(c, acc): (usize, &mut [f32])| {
            acc.fill(0.0);
            with_scratch(&WVT, wl.vt_len(), |vt| {
                with_scratch(&WZ, wl.z_len(), |z| {
                    with_scratch(&WSTAGE, wl.stage_len(), |stage| {
                        with_scratch(&WEO, wl.eo_len(), |eo| {
                            let (groups, chunks) = (wl.groups, wl.chunks);
                            for gi in groups * c / chunks..groups * (c + 1) / chunks {
                                let (i0, i1) = (gi * wl.images, g.n.min((gi + 1) * wl.images));
                                // SAFETY: `applies` checked AVX-512F; the buffers have the
                                // layout's lengths and the slices whole images of a group.
                                unsafe {
                                    group(
                                        g,
                                        &wl,
                                        &x[i0 * xs..i1 * xs],
                                        &dy[i0 * ys..i1 * ys],
                                        vt,
                                        z,
                                        stage,
                                        eo,
                                        acc,
                                    )
                                };
                            }
                        })
                    })
                })
            });
        };
        if wl.chunks > 1 {
            partials.par_chunks_mut(du_len).enumerate().for_each(chunk);
        } else {
            chunk((0, partials));
        }
        let partials = &*partials;
        let finish = |(co, row): (usize, &mut [f32])| {
            filter_gradient(g, &wl, partials, co, row, accumulate);
        };
        if wl.chunks > 1 {
            dw.par_chunks_mut(g.c_in * 9).enumerate().for_each(finish);
        } else {
            dw.chunks_mut(g.c_in * 9).enumerate().for_each(finish);
        }
    });
}

/// Row `co` of `dW` (`Cin x 3 x 3`): `G^T dU G` of the chunks' partial `dU` added in chunk
/// order, stored or (with `accumulate`) added.
fn filter_gradient(
    g: &Conv2d,
    wl: &WgradLayout,
    partials: &[f32],
    co: usize,
    row: &mut [f32],
    accumulate: bool,
) {
    let du_len = wl.du_len();
    // 16 input channels at a time: u[k][l] = dU[k][co][ci0 + l] (within the padded row).
    for ci0 in (0..g.c_in).step_by(16) {
        let mut u = [[0.0f32; 16]; 16];
        for (k, uk) in u.iter_mut().enumerate() {
            let at = (k * wl.coutp + co) * wl.cinp + ci0;
            uk.copy_from_slice(&partials[at..at + 16]);
            for c in 1..wl.chunks {
                for (a, &p) in uk.iter_mut().zip(&partials[c * du_len + at..][..16]) {
                    *a += p;
                }
            }
        }
        for l in 0..(g.c_in - ci0).min(16) {
            // t = G^T u (3 x 4), then t G (3 x 3); G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
            // 0 0 1].
            let mut t = [[0.0f32; 4]; 3];
            for c in 0..4 {
                let (u0, u1, u2, u3) = (u[c][l], u[4 + c][l], u[8 + c][l], u[12 + c][l]);
                t[0][c] = u0 + 0.5 * (u1 + u2);
                t[1][c] = 0.5 * (u1 - u2);
                t[2][c] = 0.5 * (u1 + u2) + u3;
            }
            let out = &mut row[(ci0 + l) * 9..][..9];
            for (r, tr) in t.iter().enumerate() {
                let (t0, t1, t2, t3) = (tr[0], tr[1], tr[2], tr[3]);
                let vals = [t0 + 0.5 * (t1 + t2), 0.5 * (t1 - t2), 0.5 * (t1 + t2) + t3];
                for (o, v) in out[3 * r..][..3].iter_mut().zip(vals) {
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}

/// One group of images: `V^T` of `x`, `Z` of `dy`, then `acc[k] += Z[k] V^T[k]` (`acc` one
/// partial `dU`, `[k][co][ci]` at row stride `cinp`).
///
/// # Safety
/// AVX-512F; the buffers of the layout's lengths; `x` and `dy` whole images, at most
/// `wl.images`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn group(
    g: &Conv2d,
    wl: &WgradLayout,
    x: &[f32],
    dy: &[f32],
    vt: &mut [f32],
    z: &mut [f32],
    stage: &mut [f32],
    eo: &mut [f32],
    acc: &mut [f32],
) {
    // SAFETY: the caller's contract (AVX-512F).
    let l = unsafe { Avx512::new() };
    let lay = &wl.lay;
    let (tiles, tg, cinp, coutp, sld) = (wl.tiles, wl.tg, wl.cinp, wl.coutp, wl.sld);
    let plane = g.h * g.w;
    let images = x.len() / (g.c_in * plane);
    let used = images * tiles;
    assert!(used <= tg && vt.len() >= 16 * tg * cinp && z.len() >= 16 * coutp * tg);
    assert!(acc.len() >= 16 * coutp * cinp && stage.len() >= 16 * 16 * sld);
    // V^T: 16 channels of an image at a time through the staging buffer.
    for (img, xi) in x.chunks_exact(g.c_in * plane).enumerate() {
        for ci0 in (0..g.c_in).step_by(16) {
            let nc = (g.c_in - ci0).min(16);
            // SAFETY: `stage` holds 16 x 16 rows of `sld >= tiles` floats.
            unsafe {
                input_transform(
                    l,
                    g,
                    lay,
                    &xi[ci0 * plane..][..nc * plane],
                    eo,
                    stage,
                    (16 * sld, sld),
                    0,
                    (0, lay.th),
                )
            };
            // The channels past Cin: zero columns of V^T.
            for k in 0..16 {
                stage[(16 * k + nc) * sld..(16 * k + 16) * sld].fill(0.0);
            }
            for k in 0..16 {
                for tb in (0..tiles).step_by(16) {
                    // SAFETY: rows `16 k..16 k + 16` of `stage` hold floats `tb..tb + 16 <=
                    // sld`; rows `k * tg + img * tiles + tb + i` (< (k + 1) tg for i <
                    // tiles - tb) of `vt` hold columns `ci0..ci0 + 16 <= cinp`.
                    unsafe {
                        transpose_16x16(
                            stage.as_ptr().add(16 * k * sld + tb),
                            sld,
                            vt.as_mut_ptr()
                                .add((k * tg + img * tiles + tb) * cinp + ci0),
                            cinp,
                            (tiles - tb).min(16),
                        )
                    };
                }
            }
        }
    }
    // Z: the padding rows zero, then A dY A^T of every tile of every output channel.
    for k in 0..16 {
        for co in g.c_out..coutp {
            z[(k * coutp + co) * tg..][..used].fill(0.0);
        }
    }
    let zero = _mm512_setzero_ps();
    for (img, dyi) in dy.chunks_exact(g.c_out * plane).enumerate() {
        for (co, dp) in dyi.chunks_exact(plane).enumerate() {
            // SAFETY: the caller's contract (AVX-512F).
            unsafe { split_plane(l, g, lay, dp, eo, (0, lay.th)) };
            let eo = &*eo;
            for vec in lay.vectors() {
                let (runs, nr) = runs(l, lay, &vec);
                let runs = &runs[..nr];
                // d_rc = dY[2 ty + r][2 tx + c]: entry (1 + r, 1 + c) of the patch.
                // SAFETY: `eo` was split from a plane of this layout.
                let (d00, d01, d10, d11) = unsafe {
                    (
                        patch_entry(l, lay, eo, runs, 1, 1),
                        patch_entry(l, lay, eo, runs, 1, 2),
                        patch_entry(l, lay, eo, runs, 2, 1),
                        patch_entry(l, lay, eo, runs, 2, 2),
                    )
                };
                // p = A dY (4 x 2), then Z = p A^T (4 x 4).
                let p = [
                    [d00, d01],
                    [_mm512_add_ps(d00, d10), _mm512_add_ps(d01, d11)],
                    [_mm512_sub_ps(d00, d10), _mm512_sub_ps(d01, d11)],
                    [_mm512_sub_ps(zero, d10), _mm512_sub_ps(zero, d11)],
                ];
                let k = l.lanes(0, vec.lanes);
                let t = img * tiles + vec.t0;
                for (i, [p0, p1]) in p.iter().enumerate() {
                    let vals = [
                        *p0,
                        _mm512_add_ps(*p0, *p1),
                        _mm512_sub_ps(*p0, *p1),
                        _mm512_sub_ps(zero, *p1),
                    ];
                    for (j, &val) in vals.iter().enumerate() {
                        let at = ((4 * i + j) * coutp + co) * tg + t;
                        debug_assert!(at + vec.lanes <= z.len());
                        // SAFETY: the lanes of tiles `t..t + lanes <= used` of row (k, co).
                        unsafe { l.store(z.as_mut_ptr().add(at), k, val) };
                    }
                }
            }
        }
    }
    // The 16 products dU[k] += Z[k] V^T[k].
    for kk in 0..16 {
        for p in 0..coutp / ROWS {
            let zp = &z[(kk * coutp + p * ROWS) * tg..][..ROWS * tg];
            let vk = &vt[kk * tg * cinp..][..tg * cinp];
            let out = &mut acc[(kk * coutp + p * ROWS) * cinp..][..ROWS * cinp];
            let mut c0 = 0;
            while c0 < cinp {
                let wide = c0 + 32 <= cinp;
                // SAFETY: `zp` holds ROWS rows of `tg >= used` floats, `vk` `used` rows of
                // `cinp` floats (columns `c0..c0 + 32` or `+ 16 <= cinp`), `out` ROWS rows of
                // `cinp` floats.
                unsafe {
                    let (vp, op) = (vk.as_ptr().add(c0), out.as_mut_ptr().add(c0));
                    if wide {
                        tile::<2>(used, zp.as_ptr(), tg, vp, cinp, op);
                    } else {
                        tile::<1>(used, zp.as_ptr(), tg, vp, cinp, op);
                    }
                }
                c0 += if wide { 32 } else { 16 };
            }
        }
    }
}

/// `acc[r * ldv + j] += sum_{t < steps} z[r * ldz + t] * vt[t * ldv + j]` for `r < ROWS`,
/// `j < 16 * NV`: one fused multiply-add chain per output, continued from `acc`, in `t`
/// order.
///
/// # Safety
/// AVX-512F; `z` valid for `ROWS` rows of `steps` floats at stride `ldz`, `vt` for `steps`
/// rows of `16 * NV` floats at stride `ldv`, `acc` for `ROWS` rows of `16 * NV` floats at
/// stride `ldv`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const NV: usize>(
    steps: usize,
    z: *const f32,
    ldz: usize,
    vt: *const f32,
    ldv: usize,
    acc: *mut f32,
) {
    let mut c = [[_mm512_setzero_ps(); NV]; ROWS];
    for (r, row) in c.iter_mut().enumerate() {
        for (j, cj) in row.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *cj = unsafe { _mm512_loadu_ps(acc.add(r * ldv + 16 * j)) };
        }
    }
    let zr: [*const f32; ROWS] = std::array::from_fn(|r| z.wrapping_add(r * ldz));
    let mut vt = vt;
    for t in 0..steps {
        // SAFETY: the caller's contract; `steps` rows.
        unsafe {
            let mut b = [_mm512_setzero_ps(); NV];
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm512_loadu_ps(vt.add(16 * j));
            }
            for (row, zp) in c.iter_mut().zip(&zr) {
                let a = _mm512_set1_ps(*zp.add(t));
                for (j, &bj) in b.iter().enumerate() {
                    row[j] = _mm512_fmadd_ps(a, bj, row[j]);
                }
            }
            vt = vt.add(ldv);
        }
    }
    for (r, row) in c.iter().enumerate() {
        for (j, &val) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_ps(acc.add(r * ldv + 16 * j), val) };
        }
    }
}

/// `dst[i * ds + c] = src[c * ss + i]` for `c < 16`, `i < n <= 16`: a 16x16 block
/// transposed in registers, its first `n` rows stored.
///
/// # Safety
/// AVX-512F; `src` readable at `c * ss + 0..16` for `c < 16`, `dst` writable at
/// `i * ds + 0..16` for `i < n`.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_16x16(src: *const f32, ss: usize, dst: *mut f32, ds: usize, n: usize) {
    let mut r = [_mm512_setzero_ps(); 16];
    for (c, rc) in r.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        *rc = unsafe { _mm512_loadu_ps(src.add(c * ss)) };
    }
    // Pairs of rows interleaved within 128-bit lanes, then quadruples, then the lanes.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let a0 = _mm512_castps_pd(t[4 * i]);
        let a1 = _mm512_castps_pd(t[4 * i + 1]);
        let b0 = _mm512_castps_pd(t[4 * i + 2]);
        let b1 = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    // Lane L of u[4 i + j] holds column 4 L + j of rows 4 i..4 i + 4.
    for j in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let w1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
        let cols = [
            (j, _mm512_shuffle_f32x4::<0x88>(v0, w0)),
            (4 + j, _mm512_shuffle_f32x4::<0x88>(v1, w1)),
            (8 + j, _mm512_shuffle_f32x4::<0xdd>(v0, w0)),
            (12 + j, _mm512_shuffle_f32x4::<0xdd>(v1, w1)),
        ];
        for (i, val) in cols {
            if i < n {
                // SAFETY: the caller's contract.
                unsafe { _mm512_storeu_ps(dst.add(i * ds), val) };
            }
        }
    }
}
