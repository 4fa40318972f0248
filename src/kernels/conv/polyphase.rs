//! The input gradient of a strided convolution by polyphase decomposition of the transposed
//! convolution, on the direct convolution's gather microkernel (`direct/`): the input pixels
//! of one residue class (`(iy + ph) mod sh`, `(ix + pw) mod sw`) receive gradient from the
//! kernel taps of that class only, a stride-1 correlation of `dY` with a sub-kernel (for 3x3
//! stride 2: sub-kernels of 1x1, 1x2, 2x1 and 2x2 taps), so every class is R-pixel x
//! L-channel gather tiles over its own taps, with no column matrix and no scatter-add.
//!
//! Along one axis (rows or columns) with kernel `K`, stride `s` and padding `p`, the input
//! position `i` of residue `r = (i + p) mod s` receives `dY` at `o = q - j` through tap
//! `k = r + j s` (`q = (i + p - r) / s`, `j` below `ceil((K - r) / s)`). `dY` of a group of
//! images is copied once into a zero-padded scratch (`ceil(K / s) - 1` zeros before it, zeros
//! after it up to the last `q`), so that the taps of every class read `dY` at fixed offsets
//! from the pixel's position with no bounds test. The weights are packed once per call into
//! L-lane panels (lanes are input channels), per class in the flipped tap order. Each input
//! pixel is one tile row's single pass over its class's taps in a fixed order, so every
//! output is the same sequence of fused multiply-adds whatever the threads or the grouping.
//! The tiles of a block of consecutive input rows (every class in them) are staged channel-
//! major (8 x 8 transposes in AVX registers), then each channel's rows go out to `dX` in
//! order, the column classes interleaved: `dX` is written once, front to back per channel
//! like the forward pass's output, every element of it (classes that no tap reaches, with a
//! kernel smaller than the stride, as zeros).

use super::direct::{Tile, GROUP_BYTES, MIN_GROUPS};
use super::{for_each_group, images_per_group, with_scratch, Conv2d};
use crate::error::Result;
use std::cell::RefCell;

/// Input pixels (whole rows, at least one) staged per block before they are written out.
const BLOCK_PIXELS: usize = 256;
/// The most rows and the largest tile of any [`Tile`].
const MAX_R: usize = 8;
const MAX_TILE: usize = 256;

thread_local! {
    static PP_WEIGHTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PP_OFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static PP_PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PP_STAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One axis (rows or columns) of the decomposition: input size `n`, kernel `k`, stride
/// `s`, padding `p`, `outs` outputs; `before` zeros before `dY` in the padded copy, which
/// is `padded` long.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    n: usize,
    k: usize,
    s: usize,
    p: usize,
    before: usize,
    pub(super) padded: usize,
}

/// The class of residue `r` along one axis: its `taps` kernel taps `r + j s`, its `count`
/// input positions `i0 + s u`, and `first`, the padded `dY` position its flipped tap 0 reads
/// for position `i0` (position `i0 + s u` reads from `first + u` on).
#[derive(Clone, Copy, Debug)]
struct Phase {
    taps: usize,
    i0: usize,
    count: usize,
    first: usize,
}

impl Axis {
    pub(super) fn new(n: usize, k: usize, s: usize, p: usize, outs: usize) -> Self {
        let mut a = Axis {
            n,
            k,
            s,
            p,
            before: k.div_ceil(s) - 1,
            padded: 0,
        };
        // Past the last output, up to the furthest q any input position reads.
        let end = (0..s).map(|r| a.q0(r) + a.count(r)).fold(outs, usize::max);
        a.padded = a.before + end;
        a
    }

    /// The first input position of residue `r`.
    fn i0(&self, r: usize) -> usize {
        (r + self.s - self.p % self.s) % self.s
    }

    /// Input positions of residue `r`.
    fn count(&self, r: usize) -> usize {
        self.n.saturating_sub(self.i0(r)).div_ceil(self.s)
    }

    /// `q` of the first input position of residue `r` (exact: `i0 + p = r` modulo `s`).
    fn q0(&self, r: usize) -> usize {
        (self.i0(r) + self.p - r) / self.s
    }

    fn phase(&self, r: usize) -> Phase {
        let taps = self.k.saturating_sub(r).div_ceil(self.s);
        Phase {
            taps,
            i0: self.i0(r),
            count: self.count(r),
            // q0 - (taps - 1) + before, at least 0 as taps <= before + 1.
            first: (self.q0(r) + self.before + 1).saturating_sub(taps),
        }
    }

    /// Taps of the residues below `r`.
    fn taps_below(&self, r: usize) -> usize {
        (0..r).map(|r| self.phase(r).taps).sum()
    }
}

/// The two axes of `g`'s decomposition.
pub(super) fn axes(g: &Conv2d) -> (Axis, Axis) {
    (
        Axis::new(g.h, g.kh, g.stride.0, g.pad.0, g.out_h()),
        Axis::new(g.w, g.kw, g.stride.1, g.pad.1, g.out_w()),
    )
}

/// Input pixels of a block: whole rows of `w` pixels, at least one row.
pub(super) fn block_rows(w: usize) -> usize {
    (BLOCK_PIXELS / w.max(1)).max(1)
}

/// Images per group: at most `GROUP_BYTES` of padded `dY`, at least `MIN_GROUPS` groups
/// when the batch has the images.
pub(super) fn group_images(g: &Conv2d, padded_image: usize) -> usize {
    images_per_group(g.n, GROUP_BYTES, 4 * padded_image, MIN_GROUPS)
}

/// The taps before class `(ry, rx)` in the class order (rows of classes, then columns).
fn class_start(g: &Conv2d, ay: &Axis, ax: &Axis, ry: usize, rx: usize) -> usize {
    g.c_out * (ay.taps_below(ry) * g.kw + ay.phase(ry).taps * ax.taps_below(rx))
}

/// The input gradient of
/// [`conv2d_backward_input`](crate::kernels::conv::conv2d_backward_input) by polyphase
/// decomposition on the tile `T` (arguments checked, `N > 0`, `T`'s CPU features present).
pub(super) fn input_grad<T: Tile>(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    assert!(
        T::R <= MAX_R && 8 * T::L <= MAX_TILE,
        "polyphase: tile too large"
    );
    let (ay, ax) = axes(g);
    let (hp, wp) = (ay.padded, ax.padded);
    let l = T::L;
    let panels = g.c_in.div_ceil(l);
    let taps = g.c_out * g.kh * g.kw;
    let (sh, sw) = g.stride;
    // Per panel q, the classes one after another, each tap p of class c (from
    // `class_start`) a row of L input channels: wpan[(q * taps + start + p) * L + j].
    with_scratch(&PP_WEIGHTS, panels * taps * l, |wpan| {
        with_scratch(&PP_OFFSETS, taps, |offs| {
            for ry in 0..sh {
                let py = ay.phase(ry);
                for rx in 0..sw {
                    let px = ax.phase(rx);
                    let start = class_start(g, &ay, &ax, ry, rx);
                    let mut p = start;
                    for co in 0..g.c_out {
                        for jy in 0..py.taps {
                            let ky = ry + (py.taps - 1 - jy) * sh;
                            for jx in 0..px.taps {
                                let kx = rx + (px.taps - 1 - jx) * sw;
                                offs[p] = (co * hp + jy) * wp + jx;
                                for q in 0..panels {
                                    let row = &mut wpan[(q * taps + p) * l..][..l];
                                    for (j, v) in row.iter_mut().enumerate() {
                                        let ci = q * l + j;
                                        *v = if ci < g.c_in {
                                            w[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx]
                                        } else {
                                            0.0
                                        };
                                    }
                                }
                                p += 1;
                            }
                        }
                    }
                }
            }
            let (wpan, offs): (&[f32], &[usize]) = (wpan, offs);
            let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * g.out_h() * g.out_w());
            let group = group_images(g, g.c_out * hp * wp);
            let one = |(dyg, dxg): (&[f32], &mut [f32])| {
                group_input_grad::<T>(g, &ay, &ax, dyg, dxg, wpan, offs);
                Ok(())
            };
            for_each_group(dy, ys * group, dx, xs * group, one)
        })
    })
}

/// One group of images: the padded copy of `dY`, then per channel panel and block of
/// input rows, the tiles of every class, staged and written out channel by channel.
fn group_input_grad<T: Tile>(
    g: &Conv2d,
    ay: &Axis,
    ax: &Axis,
    dyg: &[f32],
    dxg: &mut [f32],
    wpan: &[f32],
    offs: &[usize],
) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (hp, wp) = (ay.padded, ax.padded);
    let (ps, ys) = (g.c_out * hp * wp, g.c_out * ho * wo);
    let gn = dyg.len() / ys;
    let l = T::L;
    let rows_per_block = block_rows(g.w);
    with_scratch(&PP_PADDED, gn * ps, |xp| {
        xp.fill(0.0);
        for (dst, src) in xp.chunks_exact_mut(ps).zip(dyg.chunks_exact(ys)) {
            for (c, plane) in src.chunks_exact(ho * wo).enumerate() {
                for (oy, row) in plane.chunks_exact(wo).enumerate() {
                    let at = (c * hp + oy + ay.before) * wp + ax.before;
                    dst[at..at + wo].copy_from_slice(row);
                }
            }
        }
        let xp: &[f32] = xp;
        with_scratch(&PP_STAGE, l * rows_per_block * g.w, |stage| {
            let mut cx = Block {
                g,
                ay,
                ax,
                xp,
                wpan,
                offs,
                stage,
                rows: [BlockRow::default(); MAX_BLOCK_ROWS],
                rn: 0,
            };
            let rows = gn * g.h;
            for q in 0..g.c_in.div_ceil(l) {
                for r0 in (0..rows).step_by(rows_per_block) {
                    cx.run::<T>(q, r0, rows_per_block.min(rows - r0), dxg);
                }
            }
        });
    });
}

/// The most rows of a block (rows of at least one pixel).
const MAX_BLOCK_ROWS: usize = BLOCK_PIXELS;

/// One input row of a block.
#[derive(Clone, Copy, Default)]
struct BlockRow {
    /// Its row class, and whether no tap reaches it (its gradient is zero).
    ry: usize,
    zero: bool,
    /// The padded position of the `dY` row its class's flipped tap 0 reads.
    src: usize,
    /// Where it starts in the group's `dX` (channel 0).
    dst: usize,
    /// Where its class's part of the stage starts, the class's rows in the block, and its
    /// index among them.
    region: usize,
    class_rows: usize,
    j: usize,
}

/// A block of consecutive input rows of a group (image after image), every class of them:
/// the geometry, the padded `dY`, the packed weights and tap offsets, and the stage.
struct Block<'a> {
    g: &'a Conv2d,
    ay: &'a Axis,
    ax: &'a Axis,
    xp: &'a [f32],
    wpan: &'a [f32],
    offs: &'a [usize],
    /// Per row class present in the block (from `region`), per column class `rx` (from
    /// `L * class_rows * (columns of the column classes below)`), `L` lanes of
    /// `class_rows * count` pixels, the class's rows one after another.
    stage: &'a mut [f32],
    rows: [BlockRow; MAX_BLOCK_ROWS],
    rn: usize,
}

impl Block<'_> {
    /// Rows `r0..r0 + rn` of the group, input channels of panel `q`: every class's tiles
    /// into the stage, then each channel's rows out to `dx`.
    fn run<T: Tile>(&mut self, q: usize, r0: usize, rn: usize, dx: &mut [f32]) {
        let g = self.g;
        let (l, sh) = (T::L, g.stride.0);
        let wp = self.ax.padded;
        let ps = g.c_out * self.ay.padded * wp;
        self.rn = rn;
        for (k, row) in self.rows[..rn].iter_mut().enumerate() {
            let (img, iy) = ((r0 + k) / g.h, (r0 + k) % g.h);
            let ry = (iy + g.pad.0) % sh;
            let py = self.ay.phase(ry);
            let u = (iy - py.i0) / sh;
            (row.ry, row.zero) = (ry, py.taps == 0);
            row.src = img * ps + (py.first + u) * wp;
            row.dst = (img * g.c_in * g.h + iy) * g.w;
        }
        let mut region = 0;
        for ry in 0..sh {
            let mut nr = 0;
            for row in self.rows[..rn].iter_mut().filter(|r| r.ry == ry) {
                (row.region, row.j) = (region, nr);
                nr += 1;
            }
            if nr == 0 {
                continue;
            }
            for row in self.rows[..rn].iter_mut().filter(|r| r.ry == ry) {
                row.class_rows = nr;
            }
            // A row class with no tap is written as zeros, with no stage.
            if !self.rows[..rn].iter().any(|r| r.ry == ry && r.zero) {
                self.class::<T>(q, ry, nr, region);
                region += l * nr * g.w;
            }
        }
        // SAFETY: AVX2 is present with either tile's features.
        unsafe { self.write_out(q, l, dx) };
    }

    /// The `nr` rows of row class `ry` in the block, every column class: tiles into the
    /// stage from `region`.
    fn class<T: Tile>(&mut self, q: usize, ry: usize, nr: usize, region: usize) {
        let g = self.g;
        let (r, l) = (T::R, T::L);
        let taps = g.c_out * g.kh * g.kw;
        let py = self.ay.phase(ry);
        let mut src = [0usize; MAX_BLOCK_ROWS];
        for (s, row) in src
            .iter_mut()
            .zip(self.rows[..self.rn].iter().filter(|r| r.ry == ry))
        {
            *s = row.src;
        }
        let mut tile = [0.0f32; MAX_TILE];
        let mut bases = [std::ptr::null(); MAX_R];
        let mut so = region;
        for rx in 0..g.stride.1 {
            let px = self.ax.phase(rx);
            let ls = nr * px.count;
            let sc = &mut self.stage[so..][..l * ls];
            so += l * ls;
            let depth = g.c_out * py.taps * px.taps;
            if ls == 0 {
                continue;
            }
            if depth == 0 {
                // No tap reaches these pixels: their gradient is zero.
                sc.fill(0.0);
                continue;
            }
            let start = class_start(g, self.ay, self.ax, ry, rx);
            let panel = &self.wpan[(q * taps + start) * l..][..depth * l];
            let co = &self.offs[start..start + depth];
            // Largest offset read: the last tap from the class's last pixel in the block;
            // checked once so that the kernel's reads are in bounds.
            let last = src[nr - 1] + px.first + px.count - 1 + co[depth - 1];
            assert!(last < self.xp.len(), "polyphase: padded dY too short");
            // The class's pixels in order: row, then column v.
            let (mut row, mut v) = (0, 0);
            for t0 in (0..ls).step_by(r) {
                let valid = r.min(ls - t0);
                for i in 0..r {
                    // Rows past the last pixel repeat it (in bounds), never stored.
                    if i < valid {
                        bases[i] = self.xp[src[row] + px.first + v..].as_ptr();
                        v += 1;
                        if v == px.count {
                            (row, v) = (row + 1, 0);
                        }
                    } else {
                        bases[i] = bases[i - 1];
                    }
                }
                // SAFETY: the caller checked the tile's CPU features; `co` has `depth`
                // entries; every base is a pixel's padded position and every base + offset
                // is at most `last`, inside `xp` (asserted above: positions and offsets
                // grow with the pixel and the tap); the panel holds depth * L floats.
                unsafe {
                    T::run(
                        depth,
                        co.as_ptr(),
                        &bases[..r],
                        panel.as_ptr(),
                        &mut tile[..r * l],
                    )
                };
                if valid == r && t0 + 8 <= ls && l.is_multiple_of(8) {
                    // Eight pixels per lane in AVX registers. With R = 6, rows 6 and 7 of the
                    // tile are stale and land on pixels t0 + 6 and t0 + 7 of each lane, which
                    // the next tile (t0 + 8 <= ls: there is one) overwrites.
                    // SAFETY: AVX2 is present with either tile's features; the tile holds
                    // 8 x L floats (MAX_TILE) and every lane's run t0..t0 + 8 lies in its ls
                    // floats.
                    unsafe { transpose_8xl(&tile[..8 * l], l, sc[t0..].as_mut_ptr(), ls) };
                } else {
                    for (i, px_row) in tile[..valid * l].chunks_exact(l).enumerate() {
                        for (lane, &x) in px_row.iter().enumerate() {
                            sc[lane * ls + t0 + i] = x;
                        }
                    }
                }
            }
        }
    }

    /// The block's rows of the stage out to `dx`, lane `j` to input channel `L q + j`: column
    /// class `rx`'s pixel `v` of a row at column `i0 + sw v`.
    ///
    /// # Safety
    /// AVX2 must be present.
    #[target_feature(enable = "avx2")]
    unsafe fn write_out(&self, q: usize, l: usize, dx: &mut [f32]) {
        let g = self.g;
        let (hw, w, sw) = (g.h * g.w, g.w, g.stride.1);
        let cis = (l * q)..(l * q + l).min(g.c_in);
        let rows = &self.rows[..self.rn];
        if rows.iter().any(|r| r.zero) {
            for ci in cis.clone() {
                for row in rows.iter().filter(|r| r.zero) {
                    dx[ci * hw + row.dst..][..w].fill(0.0);
                }
            }
        }
        let rows = rows.iter().filter(|r| !r.zero);
        match sw {
            1 => {
                for (lane, ci) in cis.enumerate() {
                    for row in rows.clone() {
                        let at = row.region + (lane * row.class_rows + row.j) * w;
                        dx[ci * hw + row.dst..][..w].copy_from_slice(&self.stage[at..][..w]);
                    }
                }
            }
            2 => {
                let (a, b) = (self.ax.phase(0), self.ax.phase(1));
                // The column class starting at column 0 (the extra pixel of an odd row)
                // first; `prefix`: the columns of the classes below it.
                let ((ne, pe), (no, po)) = if a.i0 == 0 {
                    ((a.count, 0), (b.count, a.count))
                } else {
                    ((b.count, a.count), (a.count, 0))
                };
                for (lane, ci) in cis.enumerate() {
                    for row in rows.clone() {
                        let nr = row.class_rows;
                        let e_at = row.region + l * nr * pe + lane * nr * ne + row.j * ne;
                        let o_at = row.region + l * nr * po + lane * nr * no + row.j * no;
                        // SAFETY: AVX2 is present (this function's contract).
                        unsafe {
                            zip2(
                                &self.stage[e_at..][..ne],
                                &self.stage[o_at..][..no],
                                &mut dx[ci * hw + row.dst..][..w],
                            )
                        };
                    }
                }
            }
            _ => {
                for (lane, ci) in cis.enumerate() {
                    for row in rows.clone() {
                        let nr = row.class_rows;
                        let mut prefix = 0;
                        for rx in 0..sw {
                            let px = self.ax.phase(rx);
                            let n = px.count;
                            let at = row.region + l * nr * prefix + lane * nr * n + row.j * n;
                            prefix += n;
                            if n == 0 {
                                continue;
                            }
                            let src = &self.stage[at..][..n];
                            let d = &mut dx[ci * hw + row.dst + px.i0..][..(n - 1) * sw + 1];
                            for (y, &x) in d.iter_mut().step_by(sw).zip(src) {
                                *y = x;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `d[2 v] = even[v]`, `d[2 v + 1] = odd[v]`: `even` has `ceil(len / 2)` values, `odd`
/// `floor(len / 2)`; eight pairs at a time in AVX registers.
///
/// # Safety
/// AVX2 must be present.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn zip2(even: &[f32], odd: &[f32], d: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = odd.len();
    assert!(even.len() >= n && d.len() >= 2 * n);
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: k + 8 <= n <= even.len(), odd.len(), and 2 k + 16 <= d.len().
        unsafe {
            let e = _mm256_loadu_ps(even.as_ptr().add(k));
            let o = _mm256_loadu_ps(odd.as_ptr().add(k));
            let (lo, hi) = (_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o));
            let out = d.as_mut_ptr().add(2 * k);
            _mm256_storeu_ps(out, _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(out.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
        }
        k += 8;
    }
    for v in k..n {
        d[2 * v] = even[v];
        d[2 * v + 1] = odd[v];
    }
    if !d.len().is_multiple_of(2) {
        d[d.len() - 1] = even[even.len() - 1];
    }
}

/// `out[lane * ls + i] = tile[i * l + lane]` for the 8 pixels `i` and the `l` lanes (a
/// multiple of 8) of a tile: 8 x 8 transposes in AVX registers.
///
/// # Safety
/// AVX2 must be present; `tile` holds `8 * l` floats; `out + lane * ls + i` is valid for
/// writing for every lane below `l` and every `i` below 8.
#[target_feature(enable = "avx2")]
unsafe fn transpose_8xl(tile: &[f32], l: usize, out: *mut f32, ls: usize) {
    use std::arch::x86_64::*;
    debug_assert!(tile.len() >= 8 * l && l.is_multiple_of(8));
    let t = tile.as_ptr();
    for c in (0..l).step_by(8) {
        // SAFETY: rows i < 8 of columns c..c + 8 lie in the tile (8 * l floats); the stores
        // are in bounds by the caller's contract.
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(t.add(i * l + c));
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            // u0: columns 0 | 4 of rows 0..4; u1: 1 | 5; u2: 2 | 6; u3: 3 | 7; u4..u7 the
            // same for rows 4..8.
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let o = |j: usize| out.add((c + j) * ls);
            _mm256_storeu_ps(o(0), _mm256_permute2f128_ps::<0x20>(u0, u4));
            _mm256_storeu_ps(o(1), _mm256_permute2f128_ps::<0x20>(u1, u5));
            _mm256_storeu_ps(o(2), _mm256_permute2f128_ps::<0x20>(u2, u6));
            _mm256_storeu_ps(o(3), _mm256_permute2f128_ps::<0x20>(u3, u7));
            _mm256_storeu_ps(o(4), _mm256_permute2f128_ps::<0x31>(u0, u4));
            _mm256_storeu_ps(o(5), _mm256_permute2f128_ps::<0x31>(u1, u5));
            _mm256_storeu_ps(o(6), _mm256_permute2f128_ps::<0x31>(u2, u6));
            _mm256_storeu_ps(o(7), _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
    }
}
