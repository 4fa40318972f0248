//! The im2col forward pass: per group of small images (about `GROUP_COLS` columns) one GEMM
//! `Y = W * col(X)` with the bias and the ReLU in its epilogue, its B packer reading
//! `col(X)` from the images; a group of one image of a 1x1, stride-1, unpadded kernel
//! multiplies the image itself.

use super::{for_each_image_run, Im2col};
use crate::error::Result;
use crate::kernels::conv::{for_each_group, with_scratch, Conv2d, GROUP_COLS};
use crate::kernels::gemm::{gemm, gemm_packed, Fused, GemmParams, MatMut, MatRef, PackB};
use std::cell::RefCell;

/// Columns packed per step through a stack buffer.
const SEG: usize = 512;

thread_local! {
    static OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The forward pass of [`conv2d_forward`](crate::kernels::conv::conv2d_forward) (arguments
/// checked, `N > 0`).
pub(in crate::kernels::conv) fn forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let wm = MatRef::row_major(w, g.c_out, g.depth())?;
    let epi = Fused {
        row_bias: bias,
        relu,
        ..Fused::default()
    };
    // Small images are grouped so each GEMM has about GROUP_COLS columns: the weights are
    // packed once per group instead of once per image. A group's output goes through a
    // per-thread scratch (Cout x group*HoWo) and is copied into place.
    let hw = ho * wo;
    let group = (GROUP_COLS / hw).clamp(1, g.n);
    let parallel_groups = g.n > group;
    let one = |(xg, yg): (&[f32], &mut [f32])| -> Result<()> {
        let gn = xg.len() / xs;
        let mut params = GemmParams::new().epilogue(&epi);
        if parallel_groups {
            params = params.sequential();
        }
        if gn == 1 {
            let c = MatMut::row_major(yg, g.c_out, hw)?;
            return if g.is_pointwise() {
                gemm(&params, wm, MatRef::row_major(xg, g.c_in, g.h * g.w)?, c)
            } else {
                gemm_packed(
                    &params,
                    &wm,
                    &GroupIm2col {
                        x: xg,
                        g: *g,
                        ho,
                        wo,
                        images: 1,
                    },
                    c,
                )
            };
        }
        with_scratch(&OUT, g.c_out * gn * hw, |scratch| {
            let b = GroupIm2col {
                x: xg,
                g: *g,
                ho,
                wo,
                images: gn,
            };
            gemm_packed(
                &params,
                &wm,
                &b,
                MatMut::row_major(scratch, g.c_out, gn * hw)?,
            )?;
            for (img, yi) in yg.chunks_exact_mut(ys).enumerate() {
                for (co, dst) in yi.chunks_exact_mut(hw).enumerate() {
                    dst.copy_from_slice(&scratch[co * gn * hw + img * hw..][..hw]);
                }
            }
            Ok(())
        })
    };
    for_each_group(x, xs * group, y, ys * group, one)
}

/// `col(X)` of `images` consecutive images as the GEMM's B operand
/// (`Cin*Kh*Kw x images*HoWo`), packed on the fly.
struct GroupIm2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
    images: usize,
}

impl PackB for GroupIm2col<'_> {
    fn depth(&self) -> usize {
        self.g.depth()
    }
    fn cols(&self) -> usize {
        self.images * self.ho * self.wo
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let (hw, xs) = (self.ho * self.wo, self.g.c_in * self.g.h * self.g.w);
        let panel = kc * nr;
        let mut buf = [0.0f32; SEG];
        // Row by row of the column matrix, SEG columns at a time, scattered into the panels.
        for c0 in (0..w).step_by(SEG / nr * nr) {
            let len = (SEG / nr * nr).min(w - c0);
            for p in 0..kc {
                for_each_image_run(hw, j0 + c0, len, |img, pix, at, run| {
                    let x = &self.x[img * xs..][..xs];
                    let im = Im2col {
                        x,
                        g: self.g,
                        wo: self.wo,
                    };
                    im.row_segment(p0 + p, pix, &mut buf[at..at + run]);
                });
                for (t, chunk) in buf[..len].chunks(nr).enumerate() {
                    let dst = &mut out[(c0 / nr + t) * panel + p * nr..][..nr];
                    dst[..chunk.len()].copy_from_slice(chunk);
                    dst[chunk.len()..].fill(0.0);
                }
            }
        }
    }
}
