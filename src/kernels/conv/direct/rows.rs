//! The direct forward pass by output rows: pixels in the vector lanes, output channels
//! broadcast. A tile is `R` output channels by `V` vectors of consecutive output pixels of
//! one row, `Y[co, oy, ox0 + j] = sum_p W[co, p] * x_padded[base + offs[p] + j]`: per kernel
//! tap, `V` contiguous loads from the zero-padded image and `R` weights broadcast from an
//! `R`-channel panel; the bias and the ReLU are applied in registers and each channel's
//! pixels are stored straight into the NCHW output.
//!
//! A horizontal stride `s > 1` would make the `V` loads strided; the padded copy therefore
//! splits each padded row into its `s` column phases (`x[.., c]` at `(c % s) * ceil(Wp / s)
//! + c / s`), in which tap `kx` of consecutive output pixels is contiguous again.
//!
//! Against the gather tiles (pixels broadcast, channels in the lanes) the tile needs no
//! transposition into the channel-major output, and an `R`-channel weight panel is a few
//! KiB that stay in L1. Each output is the same chain of fused multiply-adds over the taps
//! in order, from zero, then the bias: the same bits as the gather tiles, whatever the
//! threads.

use super::PADDED;
use crate::error::Result;
use crate::kernels::conv::{for_each_group, with_scratch, Conv2d, Store};
use std::arch::x86_64::*;
use std::cell::RefCell;

thread_local! {
    static RPANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Where a row tile goes and what is applied on the way: `rows` channels, each `stride`
/// floats after the previous one from `y`, `n` pixels each; `bias` (null for none) holds
/// `rows` values; `res` (null for none) is read at the same offsets as `y`.
pub(in crate::kernels::conv) struct RowOut {
    pub y: *mut f32,
    pub stride: usize,
    pub rows: usize,
    pub n: usize,
    pub bias: *const f32,
    /// Null for none; else laid out as `y`, added after the bias.
    pub res: *const f32,
    pub relu: bool,
}

/// A row microkernel: `R` channels by up to `VMAX` vectors of `LANES` pixels.
pub(in crate::kernels::conv) trait RowTile {
    const R: usize;
    const LANES: usize;
    const VMAX: usize;
    /// `y[r * stride + j] = act(sum_p x[offs[p] + j] * w[R p + r] (+ bias[r])
    /// (+ res[r * stride + j]))` for `r < out.rows`, `j < out.n`, with
    /// `v = out.n.div_ceil(LANES)` vectors.
    ///
    /// # Safety
    /// The kernel's CPU features must be present; `1 <= out.rows <= R`,
    /// `1 <= out.n <= LANES * VMAX`; `offs` valid for `k` reads; `x.add(o + j)` readable
    /// for every `o` in `offs[..k]` and `j < LANES * v`; `w` valid for `k * R` reads;
    /// `y` valid for the writes above, `res`, if not null, for the reads at the same
    /// offsets, and `bias`, if not null, for `rows` reads.
    unsafe fn run(k: usize, offs: *const usize, x: *const f32, w: *const f32, out: &RowOut);
}

/// The AVX-512 row tile: 8 channels by 1 to 3 vectors of 16 pixels (up to 24 zmm
/// accumulators).
pub(in crate::kernels::conv) struct Avx512Rows;
/// The AVX2+FMA row tile: 6 channels by 1 or 2 vectors of 8 pixels (up to 12 ymm
/// accumulators).
pub(in crate::kernels::conv) struct Avx2Rows;

impl RowTile for Avx512Rows {
    const R: usize = 8;
    const LANES: usize = 16;
    const VMAX: usize = 3;
    unsafe fn run(k: usize, offs: *const usize, x: *const f32, w: *const f32, out: &RowOut) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match out.n.div_ceil(16) {
                1 => rows_avx512::<1>(k, offs, x, w, out),
                2 => rows_avx512::<2>(k, offs, x, w, out),
                _ => rows_avx512::<3>(k, offs, x, w, out),
            }
        }
    }
}

impl RowTile for Avx2Rows {
    const R: usize = 6;
    const LANES: usize = 8;
    const VMAX: usize = 2;
    unsafe fn run(k: usize, offs: *const usize, x: *const f32, w: *const f32, out: &RowOut) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match out.n.div_ceil(8) {
                1 => rows_avx2::<1>(k, offs, x, w, out),
                _ => rows_avx2::<2>(k, offs, x, w, out),
            }
        }
    }
}

/// The AVX-512 row tile of `V` vectors (see [`RowTile::run`]).
///
/// # Safety
/// As [`RowTile::run`], with AVX-512F present and `out.n` in `16 (V - 1) + 1 ..= 16 V`.
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const V: usize>(
    k: usize,
    offs: *const usize,
    x: *const f32,
    w: *const f32,
    out: &RowOut,
) {
    const R: usize = 8;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (mut offs, mut w) = (offs, w);
    macro_rules! step {
        () => {{
            // SAFETY: the caller guarantees `k` offsets, `k * R` weights and readable
            // `x[o .. o + 16 V]`; the loops below run `k` steps.
            unsafe {
                let o = *offs;
                let mut xv = [_mm512_setzero_ps(); V];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(x.add(o + 16 * i));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let wr = _mm512_set1_ps(*w.add(r));
                    for (a, &xi) in row.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(xi, wr, *a);
                    }
                }
                offs = offs.add(1);
                w = w.add(R);
            }
        }};
    }
    for _ in 0..k / 2 {
        step!();
        step!();
    }
    for _ in 0..k % 2 {
        step!();
    }
    let last = out.n - 16 * (V - 1);
    let mask: __mmask16 = if last >= 16 {
        0xffff
    } else {
        (1u16 << last) - 1
    };
    let zero = _mm512_setzero_ps();
    for (r, row) in acc.iter().enumerate() {
        if r >= out.rows {
            break;
        }
        // SAFETY: `r < rows`; the caller guarantees `bias[r]`, `y[r * stride + j]` and
        // `res[r * stride + j]`, j < n, are valid; the last vector's load and store are
        // masked to the `last` pixels.
        unsafe {
            let b = (!out.bias.is_null()).then(|| _mm512_set1_ps(*out.bias.add(r)));
            let yr = out.y.add(r * out.stride);
            let rr = (!out.res.is_null()).then(|| out.res.add(r * out.stride));
            for (i, &a) in row.iter().enumerate() {
                let mut a = a;
                if let Some(b) = b {
                    a = _mm512_add_ps(a, b);
                }
                if let Some(rr) = rr {
                    let m = if i + 1 < V { 0xffff } else { mask };
                    a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, rr.add(16 * i)));
                }
                if out.relu {
                    // max(0, a) returns `a` when it is NaN or -0, as `if a < 0 { 0 }`.
                    a = _mm512_max_ps(zero, a);
                }
                if i + 1 < V {
                    _mm512_storeu_ps(yr.add(16 * i), a);
                } else {
                    _mm512_mask_storeu_ps(yr.add(16 * i), mask, a);
                }
            }
        }
    }
}

/// The AVX2 row tile of `V` vectors (see [`RowTile::run`]).
///
/// # Safety
/// As [`RowTile::run`], with AVX2 and FMA present and `out.n` in `8 (V - 1) + 1 ..= 8 V`.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const V: usize>(
    k: usize,
    offs: *const usize,
    x: *const f32,
    w: *const f32,
    out: &RowOut,
) {
    const R: usize = 6;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let (mut offs, mut w) = (offs, w);
    macro_rules! step {
        () => {{
            // SAFETY: the caller guarantees `k` offsets, `k * R` weights and readable
            // `x[o .. o + 8 V]`; the loops below run `k` steps.
            unsafe {
                let o = *offs;
                let mut xv = [_mm256_setzero_ps(); V];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(o + 8 * i));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let wr = _mm256_broadcast_ss(&*w.add(r));
                    for (a, &xi) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(xi, wr, *a);
                    }
                }
                offs = offs.add(1);
                w = w.add(R);
            }
        }};
    }
    for _ in 0..k / 2 {
        step!();
        step!();
    }
    for _ in 0..k % 2 {
        step!();
    }
    let last = (out.n - 8 * (V - 1)) as i32;
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(last),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let zero = _mm256_setzero_ps();
    for (r, row) in acc.iter().enumerate() {
        if r >= out.rows {
            break;
        }
        // SAFETY: `r < rows`; the caller guarantees `bias[r]`, `y[r * stride + j]` and
        // `res[r * stride + j]`, j < n, are valid; the last vector's load and store are
        // masked to the `last` pixels.
        unsafe {
            let b = (!out.bias.is_null()).then(|| _mm256_set1_ps(*out.bias.add(r)));
            let yr = out.y.add(r * out.stride);
            let rr = (!out.res.is_null()).then(|| out.res.add(r * out.stride));
            for (i, &a) in row.iter().enumerate() {
                let mut a = a;
                if let Some(b) = b {
                    a = _mm256_add_ps(a, b);
                }
                if let Some(rr) = rr {
                    let v = if i + 1 < V || last == 8 {
                        _mm256_loadu_ps(rr.add(8 * i))
                    } else {
                        _mm256_maskload_ps(rr.add(8 * i), mask)
                    };
                    a = _mm256_add_ps(a, v);
                }
                if out.relu {
                    // max(0, a) returns `a` when it is NaN or -0, as `if a < 0 { 0 }`.
                    a = _mm256_max_ps(zero, a);
                }
                if i + 1 < V || last == 8 {
                    _mm256_storeu_ps(yr.add(8 * i), a);
                } else {
                    _mm256_maskstore_ps(yr.add(8 * i), mask, a);
                }
            }
        }
    }
}

/// The padded row layout of a geometry for the row tiles.
#[derive(Clone, Copy)]
struct Layout {
    /// Padded rows.
    hp: usize,
    /// Floats per column phase of a padded row, `ceil(Wp / sx)`.
    cw: usize,
    /// Floats per padded row, `sx * cw`.
    wq: usize,
    /// Floats per padded image, `Cin * hp * wq`.
    ps: usize,
}

impl Layout {
    fn of(g: &Conv2d) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let sx = g.stride.1;
        let cw = wp.div_ceil(sx);
        let wq = sx * cw;
        Self {
            hp,
            cw,
            wq,
            ps: g.c_in * hp * wq,
        }
    }
}

/// Copies images `xg` into `xq` zero-padded, each padded row split into its column
/// phases (see the file's comment); `xq` may be longer (its tail is zeroed).
fn pad_phases(g: &Conv2d, lay: &Layout, xg: &[f32], xq: &mut [f32]) {
    let sx = g.stride.1;
    let xs = g.c_in * g.h * g.w;
    xq.fill(0.0);
    for (dst, src) in xq.chunks_exact_mut(lay.ps).zip(xg.chunks_exact(xs)) {
        for ci in 0..g.c_in {
            for r in 0..g.h {
                let row = &mut dst[(ci * lay.hp + r + g.pad.0) * lay.wq..][..lay.wq];
                let s = &src[(ci * g.h + r) * g.w..][..g.w];
                if sx == 1 {
                    row[g.pad.1..g.pad.1 + g.w].copy_from_slice(s);
                    continue;
                }
                // Source column `m sx + j` is padded column `m sx + j + pw`: phase
                // `(j + pw) % sx`, at `m + (j + pw) / sx` in it.
                let at = |j: usize| {
                    let c = j + g.pad.1;
                    (c % sx) * lay.cw + c / sx
                };
                if sx == 2 {
                    let (e, o) = (at(0), at(1));
                    for (m, pair) in s.chunks_exact(2).enumerate() {
                        row[e + m] = pair[0];
                        row[o + m] = pair[1];
                    }
                    if g.w % 2 == 1 {
                        row[e + g.w / 2] = s[g.w - 1];
                    }
                } else {
                    for j in 0..sx.min(g.w) {
                        let dst = row[at(j)..].iter_mut();
                        for (d, &v) in dst.zip(s[j..].iter().step_by(sx)) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// The narrowest output rows the row tiles take: one AVX-512 vector, two AVX2 ones.
const MIN_WIDTH: usize = 16;

/// Whether the forward pass of `g` runs on the row tiles `T`: output rows of at least
/// [`MIN_WIDTH`] pixels and a whole vector, whose vectors are at least 7/8 full (a row's
/// last vector is partly empty; the gather tiles run the pixels of a group of images
/// without a break).
///
/// Measured 2026-12-07 (AMD EPYC KVM, AVX-512, 2 vCPUs, 512 images, or 256 at 96
/// pixels), 3x3 convolutions in GFLOP/s on one and two threads, row tiles against gather
/// tiles: 32 channels at 32 x 32 (two full vectors a row) 100 / 197 against 90 / 165; 64
/// channels at 16 x 16 (one) 108 / 216 against 100 / 198; 32 channels at 48 x 48 (three)
/// 102 / 188 against 72 / 150; but 64 channels at 24 x 24 (two vectors 3/4 full) 82 /
/// 150 against 89 / 180.
pub(super) fn suits<T: RowTile>(g: &Conv2d) -> bool {
    let wo = g.out_w();
    wo >= MIN_WIDTH.max(T::LANES) && 8 * wo >= 7 * T::LANES * wo.div_ceil(T::LANES)
}

/// `Y = act(conv(X, W) (+ bias) (+ residual))` on the row tiles `T`, groups of `group`
/// images at a time in parallel.
pub(super) fn forward<T: RowTile>(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    out: Store<'_>,
    y: &mut [f32],
    group: usize,
) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let depth = g.depth();
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let r = T::R;
    let blocks = g.c_out.div_ceil(r);
    let lay = Layout::of(g);
    let sx = g.stride.1;
    // Weights in R-channel panels: wpk[b][p * R + i] = W[R b + i, p].
    with_scratch(&RPANELS, blocks * depth * r, |wpk| {
        super::pack_weight_panels(g, w, r, wpk);
        let wpk: &[f32] = wpk;
        with_scratch(&ROFFSETS, depth, |offs| {
            let taps = (0..g.c_in).flat_map(|ci| {
                (0..g.kh).flat_map(move |ky| {
                    (0..g.kw)
                        .map(move |kx| (ci * lay.hp + ky) * lay.wq + (kx % sx) * lay.cw + kx / sx)
                })
            });
            for (o, t) in offs.iter_mut().zip(taps) {
                *o = t;
            }
            let offs: &[usize] = offs;
            // Tiles of a row: as few as VMAX vectors allow, their vectors spread evenly.
            let nv = wo.div_ceil(T::LANES);
            let width = T::LANES * nv.div_ceil(nv.div_ceil(T::VMAX));
            let tiles = Tiles {
                g,
                lay,
                offs,
                wpk,
                bias: out.bias,
                relu: out.relu,
            };
            let y0 = y.as_ptr() as usize;
            let one = |(xg, yg): (&[f32], &mut [f32])| {
                let gn = xg.len() / xs;
                // The group's part of the residual: at the offset of its output.
                let at = (yg.as_ptr() as usize - y0) / 4;
                let res = out.residual.map(|r| &r[at..at + yg.len()]);
                // The tail lets the last tile's vectors run past the last pixel.
                let len = gn * lay.ps + T::LANES * T::VMAX;
                with_scratch(&PADDED, len, |xq| {
                    pad_phases(g, &lay, xg, xq);
                    let xq: &[f32] = xq;
                    // Channel block by channel block: its weight panel (depth x R floats)
                    // stays in L1 while the tiles go down the image, and the output is
                    // written R planes at a time (measured 2026-12-07, 2 threads: the
                    // 3-channel stem 92-122 GFLOP/s with the block loop innermost, 114-161
                    // this way; the 32-channel layer 173-202 and 182-209).
                    //
                    // Meanwhile the input of the group after this one (the next one this
                    // thread takes, usually: the pool hands out runs of consecutive
                    // groups) is fetched towards L2, a share per row of tiles; otherwise
                    // its padded copy would wait for it (a batch of 32 x 32 images does
                    // not fit in the caches).
                    let at = (xg.as_ptr() as usize - x.as_ptr() as usize) / 4 + xg.len();
                    let next = &x[at.min(x.len())..(at + xg.len()).min(x.len())];
                    let rows = gn * blocks * ho;
                    for img in 0..gn {
                        for b in 0..blocks {
                            for oy in 0..ho {
                                let row = (img * blocks + b) * ho + oy;
                                prefetch(
                                    &next[next.len() * row / rows..next.len() * (row + 1) / rows],
                                );
                                for x0 in (0..wo).step_by(width) {
                                    let xs = x0..wo.min(x0 + width);
                                    tiles.run::<T>(xq, yg, res, img, oy, xs, b);
                                }
                            }
                        }
                    }
                });
                Ok(())
            };
            for_each_group(x, xs * group, y, ys * group, one)
        })
    })
}

/// What every row tile of a forward pass shares.
struct Tiles<'a> {
    g: &'a Conv2d,
    lay: Layout,
    /// The tap offsets in the padded layout.
    offs: &'a [usize],
    /// The weights in R-channel panels.
    wpk: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
}

impl Tiles<'_> {
    /// The tile of channel block `b` over pixels `xs` of row `oy` of image `img` of the
    /// group: padded input `xq`, output `yg`, residual `res` (laid out as `yg`).
    #[allow(clippy::too_many_arguments)]
    fn run<T: RowTile>(
        &self,
        xq: &[f32],
        yg: &mut [f32],
        res: Option<&[f32]>,
        img: usize,
        oy: usize,
        xs: std::ops::Range<usize>,
        b: usize,
    ) {
        let g = self.g;
        let (ho, wo) = (g.out_h(), g.out_w());
        let depth = self.offs.len();
        let n = xs.len();
        let base = img * self.lay.ps + oy * g.stride.0 * self.lay.wq + xs.start;
        // The farthest float the tile reads: in bounds.
        let end = base + self.offs[depth - 1] + T::LANES * n.div_ceil(T::LANES);
        assert!(end <= xq.len(), "direct conv: padded input too short");
        let co = T::R * b;
        let at = (img * g.c_out + co) * ho * wo + oy * wo + xs.start;
        let out = RowOut {
            y: yg[at..].as_mut_ptr(),
            stride: ho * wo,
            rows: T::R.min(g.c_out - co),
            n,
            bias: self.bias.map_or(std::ptr::null(), |b| b[co..].as_ptr()),
            res: res.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
            relu: self.relu,
        };
        // SAFETY: the caller checked the tile's CPU features; offsets grow with the tap, so
        // every read is below `end`, inside `xq` (asserted); the panel holds depth * R
        // floats; channel `co + i < Cout` of this image has its row's pixels `xs` in `yg`
        // (and in `res`, of `yg`'s length) and its bias at `co + i`.
        unsafe {
            T::run(
                depth,
                self.offs.as_ptr(),
                xq[base..].as_ptr(),
                self.wpk[b * depth * T::R..].as_ptr(),
                &out,
            )
        };
    }
}

/// Hints the caches to fetch `v` towards L2, a 64-byte line at a time.
fn prefetch(v: &[f32]) {
    for line in v.chunks(16) {
        // SAFETY: a prefetch only hints the caches (SSE, always present on x86_64); the
        // address is inside `v`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
    }
}
