//! The direct forward pass: per group of images a zero-padded copy, then R-pixel x
//! L-channel tiles of the gather microkernel over the whole depth (`W^T` packed once per
//! call into L-channel panels), staged per block of tiles and written out channel by
//! channel with the bias and the ReLU.

use super::{
    pack_weight_panels, pad_into, pixel_positions, tap_offsets, Tile, MAX_L, MAX_R, MAX_TILE,
};
use super::{rows, OFFSETS, PADDED};
use crate::error::Result;
use crate::kernels::conv::{for_each_group, images_per_group, with_scratch, Conv2d, Store};
use std::cell::RefCell;

/// Tiles of pixels the forward pass stages before writing them out per channel.
const BLOCK_TILES: usize = 8;

thread_local! {
    static FWD_PIXELS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static WPANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of padded input per group: the group stays in L2 while every channel panel of
/// the weights passes over it.
pub(in crate::kernels::conv) const GROUP_BYTES: usize = 256 * 1024;
/// The fewest groups (tasks) a batch is cut into when it has that many images, in the
/// forward pass and, as chunks, in the weight gradient.
pub(in crate::kernels::conv) const MIN_GROUPS: usize = 16;

/// `Y = act(conv(X, W) + bias + residual)`: the row tiles for wide outputs (residual in
/// their store), the gather tiles otherwise.
pub(in crate::kernels::conv) fn forward<T: Tile>(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    out: Store<'_>,
    y: &mut [f32],
) -> Result<()> {
    let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
    let ps = g.c_in * hp * wp;
    // At most GROUP_BYTES per group, and at least MIN_GROUPS groups: a batch of small
    // images (a sentence is 1 x L) would otherwise fit in two or three groups, which
    // two threads split unevenly. Every output is the same sums whatever the grouping.
    let group = images_per_group(g.n, GROUP_BYTES, 4 * ps, MIN_GROUPS);
    // Wide outputs: the row tiles, over the same groups.
    if rows::suits::<T::Rows>(g) {
        return rows::forward::<T::Rows>(g, x, w, out, y, group);
    }
    out.after(y, |bias, relu, y| {
        gather_forward::<T>(g, x, w, bias, relu, y, group)
    })
}

/// The gather tiles' forward pass over groups of `group` images.
fn gather_forward<T: Tile>(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
    group: usize,
) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let depth = g.depth();
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let l = T::L;
    let panels = g.c_out.div_ceil(l);
    // Weights as W^T in L-channel panels: wp[q][p * L + j] = W[L q + j, p].
    with_scratch(&WPANELS, panels * depth * l, |wpan| {
        pack_weight_panels(g, w, l, wpan);
        let wpan: &[f32] = wpan;
        with_scratch(&OFFSETS, depth, |offs| {
            tap_offsets(g, offs);
            let offs: &[usize] = offs;
            let one = |(xg, yg): (&[f32], &mut [f32])| {
                group_forward::<T>(g, xg, yg, wpan, offs, bias, relu);
                Ok(())
            };
            for_each_group(x, xs * group, y, ys * group, one)
        })
    })
}

/// One group of images: pad, then every (channel panel, pixel tile).
fn group_forward<T: Tile>(
    g: &Conv2d,
    xg: &[f32],
    yg: &mut [f32],
    wpan: &[f32],
    offs: &[usize],
    bias: Option<&[f32]>,
    relu: bool,
) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let hw = ho * wo;
    let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
    let depth = g.depth();
    let (xs, ps) = (g.c_in * g.h * g.w, g.c_in * hp * wp);
    let gn = xg.len() / xs;
    let npix = gn * hw;
    with_scratch(&PADDED, gn * ps, |xp| {
        pad_into(g, xg, xp);
        with_scratch(&FWD_PIXELS, npix, |pin| {
            // For each output pixel j of the group: its padded input position.
            pixel_positions(g, pin);
            let pin: &[usize] = pin;
            // Largest offset read: the last tap from the last pixel; checked once so the
            // kernel's reads are in bounds.
            let last = pin[npix - 1] + offs[depth - 1];
            assert!(last < xp.len(), "direct conv: padded input too short");
            let (r, l) = (T::R, T::L);
            let pb = r * BLOCK_TILES;
            let mut tile = [0.0f32; MAX_TILE];
            let mut bases = [std::ptr::null(); MAX_R];
            // A block of BLOCK_TILES tiles, channel-major: stage[lane * pb + pixel]. The
            // tiles are pixel-major; writing them straight to the NCHW output touched L
            // channel rows HoWo floats apart for every R pixels (4 KiB apart at 32 x 32:
            // one L1 set, evicted and fetched again tile after tile). Through the stage,
            // each channel's pixels of the block go out as one contiguous run.
            let mut stage = [0.0f32; MAX_L * MAX_R * BLOCK_TILES];
            for q in 0..g.c_out.div_ceil(l) {
                let panel = &wpan[q * depth * l..][..depth * l];
                let cos = (l * q)..(l * q + l).min(g.c_out);
                for b0 in (0..npix).step_by(pb) {
                    let bn = pb.min(npix - b0);
                    for t0 in (b0..b0 + bn).step_by(r) {
                        let valid = r.min(b0 + bn - t0);
                        // Rows past the last pixel repeat it (in bounds), never stored.
                        for (i, b) in bases[..r].iter_mut().enumerate() {
                            *b = xp[pin[(t0 + i).min(npix - 1)]..].as_ptr();
                        }
                        // SAFETY: the caller checked the tile's CPU features (`isa()`);
                        // `offs` has `depth` entries; every base is a pixel's padded
                        // position and every base + offset is at most `last`, which is
                        // inside `xp` (asserted above: positions and offsets grow with
                        // the pixel and the tap); the panel holds depth * L floats.
                        unsafe {
                            T::run(
                                depth,
                                offs.as_ptr(),
                                &bases[..r],
                                panel.as_ptr(),
                                &mut tile[..r * l],
                            )
                        };
                        for (i, row) in tile[..valid * l].chunks_exact(l).enumerate() {
                            let at = t0 - b0 + i;
                            for (lane, &v) in row.iter().enumerate() {
                                stage[lane * pb + at] = v;
                            }
                        }
                    }
                    // Each channel's run of the block, split where an image ends.
                    for co in cos.clone() {
                        let src = &stage[(co - l * q) * pb..][..bn];
                        let add = bias.map(|b| b[co]);
                        let mut j = 0;
                        while j < bn {
                            let (img, at) = ((b0 + j) / hw, (b0 + j) % hw);
                            let run = (hw - at).min(bn - j);
                            let dst = &mut yg[(img * g.c_out + co) * hw + at..][..run];
                            for (d, &v) in dst.iter_mut().zip(&src[j..j + run]) {
                                let mut v = v;
                                if let Some(b) = add {
                                    v += b;
                                }
                                if relu && v < 0.0 {
                                    v = 0.0;
                                }
                                *d = v;
                            }
                            j += run;
                        }
                    }
                }
            }
        });
    });
}
