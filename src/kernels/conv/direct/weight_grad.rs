//! The direct weight gradient: R-tap x L-channel tiles of `dW^T` on the gather microkernel,
//! stepping over the pixels of a group of images; the batch cut into a fixed number of
//! chunks of groups (from the shapes only), each with its own partial sum, the partials
//! added in chunk order.

use super::{pad_into, pixel_positions, tap_offsets, Tile, MAX_R, MAX_TILE};
use super::{OFFSETS, PADDED};
use crate::kernels::conv::{images_per_group, with_scratch, Conv2d};
use rayon::prelude::*;
use std::cell::RefCell;

/// Padded input and transposed output gradient per group of the weight gradient.
pub(in crate::kernels::conv) const WGRAD_GROUP_BYTES: usize = 1024 * 1024;
/// The most chunks (tasks, each with its own partial sum) of the weight gradient.
pub(in crate::kernels::conv) const WGRAD_CHUNKS: usize = 16;

thread_local! {
    static DYT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PIXELS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static TILES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The per-image sizes of a geometry the weight gradient works with.
#[derive(Clone, Copy)]
struct Sizes {
    /// Output pixels.
    hw: usize,
    /// Taps, `Cin * Kh * Kw`.
    depth: usize,
    /// Input, output and zero-padded input floats.
    xs: usize,
    ys: usize,
    ps: usize,
}

impl Sizes {
    fn of(g: &Conv2d) -> Self {
        let hw = g.out_h() * g.out_w();
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        Self {
            hw,
            depth: g.depth(),
            xs: g.c_in * g.h * g.w,
            ys: g.c_out * hw,
            ps: g.c_in * hp * wp,
        }
    }
}

/// `dW (+)= sum over the batch of x_padded[pixel + tap] * dY[co, pixel]`, as R-tap x
/// L-channel tiles of `dW^T` on the gather microkernel: the rows are taps (their
/// offsets the kernel's R bases), the steps are the pixels of a group of images (their
/// padded positions the offset table) and `dY^T` is the L-channel panel.
///
/// The batch is cut into at most [`WGRAD_CHUNKS`] chunks of whole groups, a number that
/// depends on the shapes only. Each chunk is one task: group after group it pads the
/// images, transposes their `dY` and runs every tile over them while they sit in its
/// core's cache, adding each group's sum to the chunk's own partial `dW^T`. The
/// partials are then added in chunk order. Every sum therefore runs in the same order
/// whatever the number of threads, and a step costs one fork-join instead of three
/// per group (measured 2026-12-03 on 2 cores: the per-group version sped up only
/// 1.1-1.3x from 1 to 2 threads).
pub(in crate::kernels::conv) fn weight_grad<T: Tile>(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let sizes = Sizes::of(g);
    let Sizes {
        hw,
        depth,
        xs,
        ys,
        ps,
    } = sizes;
    let (r, l) = (T::R, T::L);
    let panels = g.c_out.div_ceil(l);
    let tiles = depth.div_ceil(r) * panels;
    let acc_len = tiles * r * l;
    let per_image = 4 * (ps + panels * l * hw);
    // As many chunks as WGRAD_CHUNKS allows when the batch has the images (a group per
    // chunk for small images, which would otherwise make two or three chunks that two
    // threads split unevenly); from the shapes only, so the sums keep their order.
    let group = images_per_group(g.n, WGRAD_GROUP_BYTES, per_image, WGRAD_CHUNKS);
    let groups = g.n.div_ceil(group);
    let chunks = groups.min(WGRAD_CHUNKS);
    with_scratch(&OFFSETS, depth, |offs| {
        tap_offsets(g, offs);
        let offs: &[usize] = offs;
        with_scratch(&TILES, chunks * acc_len, |partials| {
            let chunk = |(c, acc): (usize, &mut [f32])| {
                acc.fill(0.0);
                for gi in groups * c / chunks..groups * (c + 1) / chunks {
                    let (i0, i1) = (gi * group, g.n.min((gi + 1) * group));
                    group_weight_grad::<T>(
                        g,
                        &sizes,
                        &x[i0 * xs..i1 * xs],
                        &dy[i0 * ys..i1 * ys],
                        offs,
                        acc,
                        chunks == 1,
                    );
                }
            };
            if chunks > 1 {
                partials.par_chunks_mut(acc_len).enumerate().for_each(chunk);
            } else {
                chunk((0, partials));
            }
            let (acc, rest) = partials.split_at_mut(acc_len);
            for part in rest.chunks_exact(acc_len) {
                for (a, &v) in acc.iter_mut().zip(part) {
                    *a += v;
                }
            }
            // Scatter the tiles of dW^T into dW (Cout x Cin*Kh*Kw).
            for (task, tile) in acc.chunks_exact(r * l).enumerate() {
                let (t, q) = (task / panels, task % panels);
                for i in 0..r {
                    let p = r * t + i;
                    if p >= depth {
                        break;
                    }
                    for j in 0..l {
                        let co = l * q + j;
                        if co >= g.c_out {
                            break;
                        }
                        let d = &mut dw[co * depth + p];
                        *d = if accumulate {
                            *d + tile[i * l + j]
                        } else {
                            tile[i * l + j]
                        };
                    }
                }
            }
        });
    });
}

/// One group of images of the weight gradient (the sizes those of `g`): pads `xg`,
/// transposes `dyg` into L-channel panels and adds every tile's sum over the group's
/// pixels to its tile of `acc` (`tiles x R x L`, tap tile major). With `parallel`, the
/// tiles run on the pool (a batch of a single chunk); otherwise all on this thread.
fn group_weight_grad<T: Tile>(
    g: &Conv2d,
    &Sizes {
        hw,
        depth,
        xs,
        ys,
        ps,
    }: &Sizes,
    xg: &[f32],
    dyg: &[f32],
    offs: &[usize],
    acc: &mut [f32],
    parallel: bool,
) {
    let (r, l) = (T::R, T::L);
    let panels = g.c_out.div_ceil(l);
    let gn = xg.len() / xs;
    let npix = gn * hw;
    with_scratch(&PADDED, gn * ps, |xp| {
        pad_into(g, xg, xp);
        let xp: &[f32] = xp;
        with_scratch(&DYT, panels * npix * l, |dyt| {
            // dY^T panels: dyt[q][s * L + j] = dY[img(s), L q + j, pix(s)], one plane
            // of dY after another.
            for (task, part) in dyt.chunks_exact_mut(hw * l).enumerate() {
                let (q, img) = (task / gn, task % gn);
                let plane = &dyg[img * ys..][..ys];
                transpose_panel(plane, hw, l * q, g.c_out, part, l);
            }
            let dyt: &[f32] = dyt;
            with_scratch(&PIXELS, npix, |pix| {
                pixel_positions(g, pix);
                let pix: &[usize] = pix;
                // The largest element read: the last tap at the last pixel.
                let last = pix[npix - 1] + offs[depth - 1];
                assert!(last < xp.len(), "direct conv: padded input too short");
                let tile = |(task, tile_acc): (usize, &mut [f32])| {
                    let (t, q) = (task / panels, task % panels);
                    // Taps past the last one repeat it (in bounds), never stored.
                    let mut bases = [std::ptr::null(); MAX_R];
                    for (i, b) in bases[..r].iter_mut().enumerate() {
                        *b = xp[offs[(r * t + i).min(depth - 1)]..].as_ptr();
                    }
                    let mut out = [0.0f32; MAX_TILE];
                    // SAFETY: the caller checked the tile's CPU features; `pix` has npix
                    // entries; every base + pixel offset is at most `last` (both grow
                    // monotonically), which is inside `xp`; the dY^T panel holds
                    // npix * L floats.
                    unsafe {
                        T::run(
                            npix,
                            pix.as_ptr(),
                            &bases[..r],
                            dyt[q * npix * l..].as_ptr(),
                            &mut out[..r * l],
                        )
                    };
                    for (a, &v) in tile_acc.iter_mut().zip(&out) {
                        *a += v;
                    }
                };
                if parallel {
                    acc.par_chunks_mut(r * l).enumerate().for_each(tile);
                } else {
                    acc.chunks_exact_mut(r * l).enumerate().for_each(tile);
                }
            });
        });
    });
}

/// `part[s * l + j] = plane[(c0 + j) * hw + s]` for `s < hw`, `j < l` (zero where
/// `c0 + j >= c_out`): the `l` channels from `c0` of one image's `dY` (`c_out x hw`),
/// pixel-major. In 8 x 8 blocks transposed in registers where whole; the edges one
/// float at a time (a transposition that wrote a whole plane per channel, a float every
/// `l`, took 14% of the 32-channel layer's weight gradient and 60% of the stem's).
fn transpose_panel(plane: &[f32], hw: usize, c0: usize, c_out: usize, part: &mut [f32], l: usize) {
    assert!(plane.len() >= c_out * hw && part.len() >= hw * l);
    let whole = (c_out.saturating_sub(c0).min(l) / 8) * 8;
    let s_whole = (hw / 8) * 8;
    // Eight channels at a time down their planes: their rows are HoWo floats apart (4 KiB
    // at 32 x 32, one L1 set), so the eight lines in use stay while the next blocks read
    // them on; all channels per block of pixels cycled 32 such lines through one set.
    for j0 in (0..whole).step_by(8) {
        for s0 in (0..s_whole).step_by(8) {
            // SAFETY: the Tile's caller checked AVX2 (hence AVX); rows `c0 + j0 .. + 8`
            // < c_out of `plane` hold pixels `s0 .. s0 + 8` <= hw, and `part` rows
            // `s0 .. s0 + 8` hold columns `j0 .. j0 + 8` <= l (asserted lengths).
            unsafe {
                transpose_8x8(
                    plane[(c0 + j0) * hw + s0..].as_ptr(),
                    hw,
                    part[s0 * l + j0..].as_mut_ptr(),
                    l,
                )
            };
        }
    }
    for s in 0..hw {
        let from = if s < s_whole { whole } else { 0 };
        for j in from..l {
            let co = c0 + j;
            part[s * l + j] = if co < c_out { plane[co * hw + s] } else { 0.0 };
        }
    }
}

/// `dst[i * ds + j] = src[j * ss + i]` for `i, j < 8`.
///
/// # Safety
/// AVX must be available; `src` readable at `j * ss + 0 .. 8` and `dst` writable at
/// `i * ds + 0 .. 8` for `i, j < 8`.
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the reads and writes are those the caller guarantees.
    unsafe {
        let r: [__m256; 8] = [
            _mm256_loadu_ps(src),
            _mm256_loadu_ps(src.add(ss)),
            _mm256_loadu_ps(src.add(2 * ss)),
            _mm256_loadu_ps(src.add(3 * ss)),
            _mm256_loadu_ps(src.add(4 * ss)),
            _mm256_loadu_ps(src.add(5 * ss)),
            _mm256_loadu_ps(src.add(6 * ss)),
            _mm256_loadu_ps(src.add(7 * ss)),
        ];
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, &v) in out.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ds), v);
        }
    }
}
