//! Direct convolution on a gather microkernel (AVX2 6x16 or AVX-512 8x32): no column
//! matrix at all.
//!
//! The input of a group of images is copied once into a zero-padded scratch; each R-pixel x
//! L-channel output tile is then `sum_p x_padded[base_i + offs[p]] * W^T[p, co]` over every
//! kernel tap `p = (ci, ky, kx)` (`offs[p] = (ci * Hp + ky) * Wp + kx`, `base_i` the padded
//! position of pixel i), the R input values broadcast straight from the padded image. The
//! weights are packed once per call into L-channel panels. The whole depth runs in one pass
//! per tile, so every output is the same sequence of fused multiply-adds whatever the threads.
//!
//! Outputs at least 16 pixels wide take the row tiles of `rows.rs` in the forward pass
//! instead: the same sums with the pixels in the lanes and the channels broadcast, written
//! straight into NCHW rows (ResNet-mini's stem and its 32 x 32 and 16 x 16 layers, and
//! their input gradients).
//!
//! This file holds the tiles and what both passes share: the zero-padded copy of a group of
//! images and the tap and pixel offset tables. The forward pass is in `forward.rs` (and
//! `rows.rs`), the weight gradient in `weight_grad.rs`.

use super::Conv2d;
use crate::kernels::gemm::avx2::gather_tile_6x16;
use crate::kernels::gemm::avx512::gather_tile_8x32;
use std::cell::RefCell;

mod forward;
mod rows;
mod weight_grad;

pub(super) use forward::{forward, GROUP_BYTES, MIN_GROUPS};
pub(super) use weight_grad::{weight_grad, WGRAD_CHUNKS, WGRAD_GROUP_BYTES};

/// The most rows, lanes and the largest tile of any [`Tile`].
const MAX_R: usize = 8;
const MAX_L: usize = 32;
const MAX_TILE: usize = 256;

/// A gather microkernel: `R` rows (output pixels, or taps in the weight gradient), each
/// its own base pointer, by `L` lanes (the channels of one weight or gradient panel).
pub(super) trait Tile {
    const R: usize;
    const L: usize;
    /// The row tile of the same instruction set, for the forward pass of wide outputs.
    type Rows: rows::RowTile;
    /// `out[L i + j] = sum_p bases[i][offs[p]] * b[L p + j]` for `i < R`, `j < L`.
    ///
    /// # Safety
    /// The CPU features of the kernel must be present; `bases.len() == R`,
    /// `out.len() == R * L`; `offs` valid for `k` reads, `bases[i].add(o)` valid for
    /// reading for every `i` and every `o` in `offs[..k]`, `b` valid for `k * L` reads.
    unsafe fn run(
        k: usize,
        offs: *const usize,
        bases: &[*const f32],
        b: *const f32,
        out: &mut [f32],
    );
}

/// A [`Tile`] named `$name` of `$r` rows by `$l` lanes on the kernel `$kernel`, which
/// takes `&[*const f32; $r]` bases and a `&mut [f32; $r * $l]` tile.
macro_rules! tile {
    ($(#[$doc:meta])* $name:ident, $r:literal, $l:literal, $kernel:ident, $rows:ty) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl Tile for $name {
            const R: usize = $r;
            const L: usize = $l;
            type Rows = $rows;
            unsafe fn run(
                k: usize,
                offs: *const usize,
                bases: &[*const f32],
                b: *const f32,
                out: &mut [f32],
            ) {
                let bases: &[*const f32; $r] = bases.try_into().expect("R bases");
                let out: &mut [f32; $r * $l] = out.try_into().expect("an R x L tile");
                // SAFETY: forwarded from the caller (the kernel's CPU features are
                // present, every read is in bounds).
                unsafe { $kernel(k, offs, bases, b, out) }
            }
        }
    };
}

tile!(
    /// The AVX2+FMA 6x16 tile.
    Avx2Tile, 6, 16, gather_tile_6x16, rows::Avx2Rows
);
tile!(
    /// The AVX-512 8x32 tile.
    Avx512Tile, 8, 32, gather_tile_8x32, rows::Avx512Rows
);

/// Whether `c_out` output channels are too few for the AVX-512 tile: at most 16 fill
/// half of its 32 lanes or less, and the AVX2 tile's 16 lanes run them faster on an
/// AVX-512 machine too (measured 2026-12-03, Xeon, 2 threads: the default run's
/// 8/16/32-channel ResNet trained 744 images/s on the AVX2 tiles, 574-596 on the
/// AVX-512 ones). The choice depends on the shape only.
pub(super) fn narrow(c_out: usize) -> bool {
    c_out <= Avx2Tile::L
}

thread_local! {
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static OFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// `offs[p]`: the offset of kernel tap `p = (ci, ky, kx)` from a pixel's position in the
/// zero-padded input, `(ci * Hp + ky) * Wp + kx`.
fn tap_offsets(g: &Conv2d, offs: &mut [usize]) {
    let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
    let taps = (0..g.c_in).flat_map(|ci| {
        (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ci * hp + ky) * wp + kx))
    });
    for (o, t) in offs.iter_mut().zip(taps) {
        *o = t;
    }
}

/// `pos[j]`: the position in the zero-padded input of a group of the top-left tap of
/// output pixel `j` (images one after another).
fn pixel_positions(g: &Conv2d, pos: &mut [usize]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
    let ps = g.c_in * hp * wp;
    let all = (0..).flat_map(|img| {
        (0..ho).flat_map(move |oy| {
            (0..wo).map(move |ox| img * ps + oy * g.stride.0 * wp + ox * g.stride.1)
        })
    });
    for (p, v) in pos.iter_mut().zip(all) {
        *p = v;
    }
}

/// Copies images `xg` into `xp` with their zero border (`Cin` planes of `hp x wp` each).
fn pad_into(g: &Conv2d, xg: &[f32], xp: &mut [f32]) {
    let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
    let (xs, ps) = (g.c_in * g.h * g.w, g.c_in * hp * wp);
    xp.chunks_exact_mut(ps)
        .zip(xg.chunks_exact(xs))
        .for_each(|(dst, src)| {
            dst.fill(0.0);
            for ci in 0..g.c_in {
                for r in 0..g.h {
                    let at = (ci * hp + r + g.pad.0) * wp + g.pad.1;
                    dst[at..at + g.w].copy_from_slice(&src[(ci * g.h + r) * g.w..][..g.w]);
                }
            }
        });
}

/// The weights as `W^T` in panels of `width` output channels:
/// `out[q][p * width + j] = W[width * q + j, p]`, zero past the last channel.
pub(super) fn pack_weight_panels(g: &Conv2d, w: &[f32], width: usize, out: &mut [f32]) {
    let depth = g.depth();
    for (q, panel) in out.chunks_exact_mut(depth * width).enumerate() {
        for (p, row) in panel.chunks_exact_mut(width).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let co = width * q + j;
                *v = if co < g.c_out { w[co * depth + p] } else { 0.0 };
            }
        }
    }
}
