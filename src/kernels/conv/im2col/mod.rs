//! GEMM with implicit im2col (Chellapilla et al. 2006 for the lowering): the column matrix
//! `col(X)` is never materialized; the GEMM's packers read its row segments straight from
//! the images.
//!
//! This file holds the row reader both passes' packers use. The forward pass is in
//! `forward.rs`, the weight gradient in `weight_grad.rs`.

use super::Conv2d;

mod forward;
mod weight_grad;

pub(super) use forward::forward;
pub(super) use weight_grad::weight_grad;

/// `col(X[n])` of one image, read a row segment at a time by the packers below.
struct Im2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    wo: usize,
}

impl Im2col<'_> {
    /// Writes `col[p, j0 .. j0 + dst.len()]` (row p of the column matrix) into `dst`: for
    /// each output row, zeros where the kernel tap falls in the padding and a copy (stride 1)
    /// or a gather (larger strides) of the input row in between.
    #[inline]
    fn row_segment(&self, p: usize, j0: usize, dst: &mut [f32]) {
        let g = &self.g;
        let (ci, r) = (p / (g.kh * g.kw), p % (g.kh * g.kw));
        let (ky, kx) = (r / g.kw, r % g.kw);
        let plane = &self.x[ci * g.h * g.w..][..g.h * g.w];
        let (sh, sw) = g.stride;
        let pw = g.pad.1;
        // Output columns whose tap is inside the row: ox in [lo, hi).
        let lo = if pw > kx { (pw - kx).div_ceil(sw) } else { 0 };
        let hi = if g.w + pw > kx {
            ((g.w - 1 + pw - kx) / sw + 1).min(self.wo)
        } else {
            0
        };
        // One division for the start; then whole output rows, counted incrementally.
        let (mut oy, mut ox0) = (j0 / self.wo, j0 % self.wo);
        let mut out = 0;
        while out < dst.len() {
            let run = (self.wo - ox0).min(dst.len() - out);
            let seg = &mut dst[out..out + run];
            let iy = (oy * sh + ky) as isize - g.pad.0 as isize;
            if iy < 0 || iy >= g.h as isize || lo >= hi {
                seg.fill(0.0);
            } else {
                let row = &plane[iy as usize * g.w..][..g.w];
                let a = lo.clamp(ox0, ox0 + run);
                let b = hi.clamp(a, ox0 + run);
                seg[..a - ox0].fill(0.0);
                seg[b - ox0..].fill(0.0);
                // a < b means at least one tap inside the row, so a >= lo and the first
                // input column below is not negative.
                if a < b {
                    let mid = &mut seg[a - ox0..b - ox0];
                    let first = a * sw + kx - pw;
                    if sw == 1 {
                        mid.copy_from_slice(&row[first..first + mid.len()]);
                    } else {
                        for (d, &v) in mid.iter_mut().zip(row[first..].iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                }
            }
            out += run;
            ox0 = 0;
            oy += 1;
        }
    }
}

/// Walks the batch-wide column range `p0 .. p0 + len` (`hw` columns per image) image by
/// image: `f(image, first column in the image, offset into the range, run length)`.
pub(super) fn for_each_image_run(
    hw: usize,
    p0: usize,
    len: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let mut p = p0;
    while p < p0 + len {
        let (img, pix) = (p / hw, p % hw);
        let run = (hw - pix).min(p0 + len - p);
        f(img, pix, p - p0, run);
        p += run;
    }
}
