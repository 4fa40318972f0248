//! The im2col weight gradient: `dW^T = col(X) * dY^T`, one GEMM whose reduction runs over
//! every pixel of the batch (so the sum over images is never split across threads), its
//! packers interleaving row segments of `col(X)` and of `dY` into micro-panels.

use super::{for_each_image_run, Im2col};
use crate::error::Result;
use crate::kernels::conv::Conv2d;
use crate::kernels::gemm::{gemm_packed, GemmParams, MatMut, PackA, PackB};

/// Columns staged per step by [`interleave_panel`].
const CH: usize = 128;
/// Staging rows for one panel: up to 32 rows (the widest micro-panel) of CH columns.
type Stage = [[f32; CH]; 32];

/// Fills one k-major panel of width `R` from `rows` source rows (the rest zero):
/// `panel[p * R + i] = row_i[p]`, where `fetch(i, p_off, dst)` writes row `i`'s columns
/// `p_off .. p_off + dst.len()` (relative to the panel's first column). `tmp` is staging
/// space, passed in so it is not re-initialized for every panel.
fn interleave_panel<const R: usize>(
    rows: usize,
    kc: usize,
    panel: &mut [f32],
    tmp: &mut Stage,
    mut fetch: impl FnMut(usize, usize, &mut [f32]),
) {
    for c0 in (0..kc).step_by(CH) {
        let len = CH.min(kc - c0);
        for (i, t) in tmp[..R].iter_mut().enumerate() {
            if i < rows {
                fetch(i, c0, &mut t[..len]);
            } else {
                t[..len].fill(0.0);
            }
        }
        for (p, d) in panel[c0 * R..][..len * R].chunks_exact_mut(R).enumerate() {
            for i in 0..R {
                d[i] = tmp[i][p];
            }
        }
    }
}

/// [`interleave_panel`] for a run-time panel width.
fn interleave_any(
    width: usize,
    rows: usize,
    kc: usize,
    panel: &mut [f32],
    tmp: &mut Stage,
    fetch: impl FnMut(usize, usize, &mut [f32]),
) {
    match width {
        6 => interleave_panel::<6>(rows, kc, panel, tmp, fetch),
        8 => interleave_panel::<8>(rows, kc, panel, tmp, fetch),
        12 => interleave_panel::<12>(rows, kc, panel, tmp, fetch),
        16 => interleave_panel::<16>(rows, kc, panel, tmp, fetch),
        32 => interleave_panel::<32>(rows, kc, panel, tmp, fetch),
        _ => {
            let mut fetch = fetch;
            let mut row = vec![0.0f32; kc];
            panel[..kc * width].fill(0.0);
            for i in 0..rows {
                fetch(i, 0, &mut row);
                for (d, &v) in panel[i..].iter_mut().step_by(width).zip(&row) {
                    *d = v;
                }
            }
        }
    }
}

/// `col(X)` of the whole batch as the GEMM's A operand: `(Cin*Kh*Kw) x (N * HoWo)`.
struct BatchIm2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
}

impl PackA for BatchIm2col<'_> {
    fn rows(&self) -> usize {
        self.g.depth()
    }
    fn depth(&self) -> usize {
        self.g.n * self.ho * self.wo
    }
    fn pack(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        let (hw, xs) = (self.ho * self.wo, self.g.c_in * self.g.h * self.g.w);
        let mut tmp: Stage = [[0.0; CH]; 32];
        for (q, panel) in out.chunks_exact_mut(kc * mr).enumerate() {
            let rows = mr.min(h - q * mr);
            interleave_any(mr, rows, kc, panel, &mut tmp, |i, off, dst| {
                let kidx = i0 + q * mr + i;
                for_each_image_run(hw, p0 + off, dst.len(), |img, pix, at, run| {
                    let x = &self.x[img * xs..][..xs];
                    let im = Im2col {
                        x,
                        g: self.g,
                        wo: self.wo,
                    };
                    im.row_segment(kidx, pix, &mut dst[at..at + run]);
                });
            });
        }
    }
}

/// `dY^T` of the whole batch as the GEMM's B operand: `(N * HoWo) x Cout`.
struct BatchDyT<'a> {
    dy: &'a [f32],
    c_out: usize,
    hw: usize,
    n: usize,
}

impl PackB for BatchDyT<'_> {
    fn depth(&self) -> usize {
        self.n * self.hw
    }
    fn cols(&self) -> usize {
        self.c_out
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let mut tmp: Stage = [[0.0; CH]; 32];
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let cols = nr.min(w - q * nr);
            interleave_any(nr, cols, kc, panel, &mut tmp, |jj, off, dst| {
                let co = j0 + q * nr + jj;
                for_each_image_run(self.hw, p0 + off, dst.len(), |img, pix, at, run| {
                    let src = &self.dy[(img * self.c_out + co) * self.hw + pix..][..run];
                    dst[at..at + run].copy_from_slice(src);
                });
            });
        }
    }
}

/// The weight gradient of
/// [`conv2d_backward_weight`](crate::kernels::conv::conv2d_backward_weight) (arguments
/// checked): `dW^T = col(X) * dY^T` written through a transposed view of `dw`.
pub(in crate::kernels::conv) fn weight_grad(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let a = BatchIm2col { x, g: *g, ho, wo };
    let b = BatchDyT {
        dy,
        c_out: g.c_out,
        hw: ho * wo,
        n: g.n,
    };
    let params = GemmParams::new().beta(if accumulate { 1.0 } else { 0.0 });
    let depth = g.depth();
    gemm_packed(&params, &a, &b, MatMut::new(dw, depth, g.c_out, 1, depth)?)
}
