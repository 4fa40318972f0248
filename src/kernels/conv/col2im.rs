//! The input gradient by col2im (strides above 1, or padding of at least the kernel size):
//! `dcol = W^T * dY` by GEMM per group of images into a per-thread scratch, then every column
//! entry added back into `dX` at the input pixel it was read from.

use super::im2col::for_each_image_run;
use crate::error::Result;
use crate::kernels::conv::{for_each_group, with_scratch, Conv2d, GROUP_COLS};
use crate::kernels::gemm::{gemm_packed, GemmParams, MatMut, MatRef, PackB};
use std::cell::RefCell;

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The input gradient of
/// [`conv2d_backward_input`](crate::kernels::conv::conv2d_backward_input) by col2im
/// (arguments checked, `N > 0`).
pub(super) fn input_grad(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    // Strided (or padded beyond the kernel): dcol = W^T dY into a per-thread scratch for a
    // group of images (about GROUP_COLS columns, so W^T is packed once per group), then
    // col2im for each image of the group.
    let depth = g.depth();
    let wm = MatRef::row_major(w, g.c_out, depth)?.t();
    let hw = ho * wo;
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * hw);
    let group = (GROUP_COLS / hw).clamp(1, g.n);
    let parallel_groups = g.n > group;
    let one = |(dyg, dxg): (&[f32], &mut [f32])| -> Result<()> {
        let gn = dyg.len() / ys;
        let mut params = GemmParams::new();
        if parallel_groups {
            params = params.sequential();
        }
        with_scratch(&COLS, depth * gn * hw, |cols| {
            let b = GroupRows {
                x: dyg,
                rows: g.c_out,
                hw,
                images: gn,
            };
            gemm_packed(&params, &wm, &b, MatMut::row_major(cols, depth, gn * hw)?)?;
            for (img, dxi) in dxg.chunks_exact_mut(xs).enumerate() {
                col2im(g, ho, wo, &cols[img * hw..], gn * hw, dxi);
            }
            Ok(())
        })
    };
    for_each_group(dy, ys * group, dx, xs * group, one)
}

/// `images` consecutive `rows x hw` planes side by side as one GEMM operand
/// `rows x images*hw` (`B[r, img*hw + pix] = x[img, r, pix]`).
struct GroupRows<'a> {
    x: &'a [f32],
    rows: usize,
    hw: usize,
    images: usize,
}

impl PackB for GroupRows<'_> {
    fn depth(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.images * self.hw
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let panel = kc * nr;
        for p in 0..kc {
            let r = p0 + p;
            for (q, c0) in (0..w).step_by(nr).enumerate() {
                let dst = &mut out[q * panel + p * nr..][..nr];
                let len = nr.min(w - c0);
                for_each_image_run(self.hw, j0 + c0, len, |img, pix, at, run| {
                    let src = &self.x[(img * self.rows + r) * self.hw + pix..][..run];
                    dst[at..at + run].copy_from_slice(src);
                });
                dst[len..].fill(0.0);
            }
        }
    }
}

/// `dx = col2im(cols)`: each column entry added back to the input pixel it was read from.
/// Row `p` of the column matrix starts at `cols[p * ld]`.
fn col2im(g: &Conv2d, ho: usize, wo: usize, cols: &[f32], ld: usize, dx: &mut [f32]) {
    dx.fill(0.0);
    let (sh, sw) = g.stride;
    let (ph, pw) = g.pad;
    // The outputs `o` whose input position `o * s + k - p` lies in `0..n`: `lo..hi`.
    let valid = |k: usize, s: usize, p: usize, n: usize, outs: usize| {
        let lo = p.saturating_sub(k).div_ceil(s);
        let hi = (n + p).saturating_sub(k).div_ceil(s).min(outs);
        (lo, hi.max(lo))
    };
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            let (oy0, oy1) = valid(ky, sh, ph, g.h, ho);
            for kx in 0..g.kw {
                let (ox0, ox1) = valid(kx, sw, pw, g.w, wo);
                if ox0 == ox1 {
                    continue;
                }
                let p = (ci * g.kh + ky) * g.kw + kx;
                let row = &cols[p * ld..][..ho * wo];
                for oy in oy0..oy1 {
                    let iy = oy * sh + ky - ph;
                    // Input columns ox * sw + kx - pw for ox in ox0..ox1, all in bounds.
                    let start = ox0 * sw + kx - pw;
                    let dst = &mut plane[iy * g.w + start..][..(ox1 - ox0 - 1) * sw + 1];
                    let src = &row[oy * wo + ox0..oy * wo + ox1];
                    for (d, &v) in dst.iter_mut().step_by(sw).zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}
