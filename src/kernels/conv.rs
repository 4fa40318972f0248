//! 2-D convolution (NCHW, any kernel size, stride and padding; dilation 1, groups 1) as GEMM
//! with implicit im2col: the GEMM's packers read panels straight from the image, so no
//! column matrix is ever materialized (Chellapilla et al. 2006 for the lowering; the BLIS
//! packing interface of `gemm` for doing it on the fly).
//!
//! - forward, per image: `Y[n] (Cout x HoWo) = W (Cout x Cin*Kh*Kw) * col(X[n])`, bias and
//!   ReLU in the GEMM epilogue; parallel over images, one sequential GEMM per image (a
//!   single image runs one parallel GEMM instead).
//! - weight gradient: `dW = sum_n dY[n] * col(X[n])^T` as ONE GEMM whose reduction runs over
//!   every pixel of the batch (`dY` and `col(X)^T` both packed from the tensors), so the sum
//!   over images is never split across threads and the result does not depend on them.
//! - input gradient: for stride 1 a forward convolution of `dY` with the flipped, transposed
//!   kernel (padding `K - 1 - p`); for larger strides `dcol = W^T * dY[n]` per image into a
//!   per-thread scratch, then col2im accumulation into `dX[n]`.
//! - 1x1, stride 1, no padding: the image itself is the GEMM operand (no im2col at all).

use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, gemm_packed, Fused, GemmParams, MatMut, MatRef, PackA, PackB};
use rayon::prelude::*;
use std::cell::RefCell;

/// The geometry of one convolution: input `N x Cin x H x W`, weights `Cout x Cin x Kh x Kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
}

impl Conv2d {
    /// A square-kernel convolution with equal stride and padding in both directions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Self {
            n,
            c_in,
            h,
            w,
            c_out,
            kh: k,
            kw: k,
            stride: (stride, stride),
            pad: (pad, pad),
        }
    }
    /// Output height `(H + 2 ph - Kh) / sh + 1`.
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad.0 - self.kh) / self.stride.0 + 1
    }
    /// Output width `(W + 2 pw - Kw) / sw + 1`.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad.1 - self.kw) / self.stride.1 + 1
    }
    /// Elements of the input tensor.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of the weight tensor.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }
    /// Elements of the output tensor.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    /// The GEMM depth `Cin * Kh * Kw`.
    fn depth(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Checks the geometry: positive sizes and strides, a kernel that fits the padded input,
    /// and no size overflow.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument { op: "conv2d", msg });
        if self.c_in == 0 || self.c_out == 0 || self.kh == 0 || self.kw == 0 {
            return bad(format!(
                "channels and kernel size must be positive: {self:?}"
            ));
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return bad(format!("stride must be positive: {:?}", self.stride));
        }
        let ph = self.h.checked_add(self.pad.0.saturating_mul(2));
        let pw = self.w.checked_add(self.pad.1.saturating_mul(2));
        match (ph, pw) {
            (Some(ph), Some(pw)) if ph >= self.kh && pw >= self.kw => {}
            _ => {
                return bad(format!(
                    "kernel {}x{} does not fit the padded input {}x{} (padding {:?})",
                    self.kh, self.kw, self.h, self.w, self.pad
                ))
            }
        }
        let sizes = [
            [self.n, self.c_in, self.h, self.w],
            [self.c_out, self.c_in, self.kh, self.kw],
            [self.n, self.c_out, self.out_h(), self.out_w()],
        ];
        if sizes.iter().any(|s| {
            s.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_none()
        }) {
            return bad(format!("tensor sizes overflow: {self:?}"));
        }
        Ok(())
    }

    fn check_len(&self, what: &'static str, got: usize, want: usize) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                op: what,
                lhs: [got].into(),
                rhs: [want].into(),
            })
        }
    }

    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0)
    }
}

/// `col(X[n])` of one image as the GEMM's B operand (`Cin*Kh*Kw x Ho*Wo`), packed on the fly.
struct Im2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
}

impl Im2col<'_> {
    /// Writes `col[p, j0 .. j0 + count]` (row p of the column matrix) into
    /// `dst[0], dst[stride], ...`.
    #[inline]
    fn row_segment(&self, p: usize, j0: usize, count: usize, dst: &mut [f32], stride: usize) {
        let g = &self.g;
        let (ci, r) = (p / (g.kh * g.kw), p % (g.kh * g.kw));
        let (ky, kx) = (r / g.kw, r % g.kw);
        let plane = &self.x[ci * g.h * g.w..][..g.h * g.w];
        let (sh, sw) = g.stride;
        let mut j = j0;
        let end = j0 + count;
        let mut out = 0;
        while j < end {
            let (oy, ox0) = (j / self.wo, j % self.wo);
            let run = (self.wo - ox0).min(end - j);
            let iy = (oy * sh + ky) as isize - g.pad.0 as isize;
            if iy < 0 || iy >= g.h as isize {
                for t in 0..run {
                    dst[(out + t) * stride] = 0.0;
                }
            } else {
                let row = &plane[iy as usize * g.w..][..g.w];
                for t in 0..run {
                    let ix = ((ox0 + t) * sw + kx) as isize - g.pad.1 as isize;
                    dst[(out + t) * stride] = if ix < 0 || ix >= g.w as isize {
                        0.0
                    } else {
                        row[ix as usize]
                    };
                }
            }
            out += run;
            j += run;
        }
    }
}

impl PackB for Im2col<'_> {
    fn depth(&self) -> usize {
        self.g.depth()
    }
    fn cols(&self) -> usize {
        self.ho * self.wo
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let panel = kc * nr;
        for (q, dst) in out.chunks_exact_mut(panel).enumerate() {
            let c0 = q * nr;
            let wq = nr.min(w - c0);
            for p in 0..kc {
                let row = &mut dst[p * nr..][..nr];
                self.row_segment(p0 + p, j0 + c0, wq, row, 1);
                row[wq..].fill(0.0);
            }
        }
    }
}

/// `Y = conv(X, W) (+ bias) (ReLU)`. `x` is `N x Cin x H x W`, `w` is `Cout x Cin x Kh x Kw`,
/// `bias` has `Cout` entries, `y` is `N x Cout x Ho x Wo` and is overwritten.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    g.validate()?;
    g.check_len("conv2d input", x.len(), g.x_len())?;
    g.check_len("conv2d weight", w.len(), g.w_len())?;
    g.check_len("conv2d output", y.len(), g.y_len())?;
    if let Some(b) = bias {
        g.check_len("conv2d bias", b.len(), g.c_out)?;
    }
    if g.n == 0 {
        return Ok(());
    }
    let (ho, wo) = (g.out_h(), g.out_w());
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let wm = MatRef::row_major(w, g.c_out, g.depth())?;
    let epi = Fused {
        row_bias: bias,
        relu,
        ..Fused::default()
    };
    let per_image = g.n > 1;
    let one = |(xi, yi): (&[f32], &mut [f32])| -> Result<()> {
        let mut params = GemmParams::new().epilogue(&epi);
        if per_image {
            params = params.sequential();
        }
        let c = MatMut::row_major(yi, g.c_out, ho * wo)?;
        if g.is_pointwise() {
            gemm(&params, wm, MatRef::row_major(xi, g.c_in, g.h * g.w)?, c)
        } else {
            gemm_packed(
                &params,
                &wm,
                &Im2col {
                    x: xi,
                    g: *g,
                    ho,
                    wo,
                },
                c,
            )
        }
    };
    if per_image {
        x.par_chunks(xs).zip(y.par_chunks_mut(ys)).try_for_each(one)
    } else {
        one((x, y))
    }
}

/// `dY` of the whole batch as the GEMM's A operand: `Cout x (N * HoWo)`.
struct BatchRows<'a> {
    dy: &'a [f32],
    rows: usize,
    hw: usize,
    n: usize,
}

impl PackA for BatchRows<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.n * self.hw
    }
    fn pack(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        let panel = kc * mr;
        for (q, dst) in out.chunks_exact_mut(panel).enumerate() {
            for i in 0..mr {
                let r = q * mr + i;
                if r >= h {
                    dst[i..].iter_mut().step_by(mr).for_each(|d| *d = 0.0);
                    continue;
                }
                let co = i0 + r;
                // Walk the columns p0 .. p0 + kc image by image (each a contiguous run).
                let mut p = p0;
                while p < p0 + kc {
                    let (img, pix) = (p / self.hw, p % self.hw);
                    let run = (self.hw - pix).min(p0 + kc - p);
                    let src = &self.dy[(img * self.rows + co) * self.hw + pix..][..run];
                    let dst_run = dst[(p - p0) * mr + i..].iter_mut().step_by(mr);
                    for (d, &v) in dst_run.zip(src) {
                        *d = v;
                    }
                    p += run;
                }
            }
        }
    }
}

/// `col(X)^T` of the whole batch as the GEMM's B operand: `(N * HoWo) x (Cin*Kh*Kw)`.
struct BatchIm2colT<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
}

impl PackB for BatchIm2colT<'_> {
    fn depth(&self) -> usize {
        self.g.n * self.ho * self.wo
    }
    fn cols(&self) -> usize {
        self.g.depth()
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let hw = self.ho * self.wo;
        let xs = self.g.c_in * self.g.h * self.g.w;
        let panel = kc * nr;
        for (q, dst) in out.chunks_exact_mut(panel).enumerate() {
            for jj in 0..nr {
                let col = q * nr + jj;
                if col >= w {
                    dst[jj..].iter_mut().step_by(nr).for_each(|d| *d = 0.0);
                    continue;
                }
                // Column `j0 + col` of B is row `j0 + col` of col(X): walk the pixels of
                // p0 .. p0 + kc image by image.
                let mut p = p0;
                while p < p0 + kc {
                    let (img, pix) = (p / hw, p % hw);
                    let run = (hw - pix).min(p0 + kc - p);
                    let im = Im2col {
                        x: &self.x[img * xs..][..xs],
                        g: self.g,
                        ho: self.ho,
                        wo: self.wo,
                    };
                    im.row_segment(j0 + col, pix, run, &mut dst[(p - p0) * nr + jj..], nr);
                    p += run;
                }
            }
        }
    }
}

/// `dW (+)= sum_n dY[n] * col(X[n])^T`: the weight gradient, `Cout x Cin x Kh x Kw`.
/// With `accumulate`, adds to `dw` (gradient accumulation); otherwise overwrites it.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_backward_weight(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    g.validate()?;
    g.check_len("conv2d input", x.len(), g.x_len())?;
    g.check_len("conv2d output gradient", dy.len(), g.y_len())?;
    g.check_len("conv2d weight gradient", dw.len(), g.w_len())?;
    let (ho, wo) = (g.out_h(), g.out_w());
    let a = BatchRows {
        dy,
        rows: g.c_out,
        hw: ho * wo,
        n: g.n,
    };
    let b = BatchIm2colT { x, g: *g, ho, wo };
    let params = GemmParams::new().beta(if accumulate { 1.0 } else { 0.0 });
    gemm_packed(&params, &a, &b, MatMut::row_major(dw, g.c_out, g.depth())?)
}

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dX = conv2d_input_gradient(dY, W)`, `N x Cin x H x W`, overwritten.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_backward_input(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    g.validate()?;
    g.check_len("conv2d output gradient", dy.len(), g.y_len())?;
    g.check_len("conv2d weight", w.len(), g.w_len())?;
    g.check_len("conv2d input gradient", dx.len(), g.x_len())?;
    if g.n == 0 {
        return Ok(());
    }
    let (ho, wo) = (g.out_h(), g.out_w());
    if g.stride == (1, 1) && g.pad.0 < g.kh && g.pad.1 < g.kw {
        // The transposed convolution of a stride-1 convolution is a convolution of dY with
        // the kernel flipped in space and transposed in channels, padded by K - 1 - p.
        let mut wf = vec![0.0f32; g.w_len()];
        let (kh, kw) = (g.kh, g.kw);
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        wf[((ci * g.c_out + co) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)] =
                            w[((co * g.c_in + ci) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let t = Conv2d {
            n: g.n,
            c_in: g.c_out,
            h: ho,
            w: wo,
            c_out: g.c_in,
            kh,
            kw,
            stride: (1, 1),
            pad: (kh - 1 - g.pad.0, kw - 1 - g.pad.1),
        };
        debug_assert_eq!((t.out_h(), t.out_w()), (g.h, g.w));
        return conv2d_forward(&t, dy, &wf, None, false, dx);
    }
    // Strided (or padded beyond the kernel): dcol = W^T dY[n] into a per-thread scratch,
    // then col2im.
    let depth = g.depth();
    let wm = MatRef::row_major(w, g.c_out, depth)?.t();
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let per_image = g.n > 1;
    let one = |(dyi, dxi): (&[f32], &mut [f32])| -> Result<()> {
        COLS.with(|cell| {
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let cols = match guard.as_deref_mut() {
                Ok(v) => v,
                Err(_) => &mut fresh,
            };
            cols.resize(depth * ho * wo, 0.0);
            let mut params = GemmParams::new();
            if per_image {
                params = params.sequential();
            }
            gemm(
                &params,
                wm,
                MatRef::row_major(dyi, g.c_out, ho * wo)?,
                MatMut::row_major(cols, depth, ho * wo)?,
            )?;
            col2im(g, ho, wo, cols, dxi);
            Ok(())
        })
    };
    if per_image {
        dy.par_chunks(ys)
            .zip(dx.par_chunks_mut(xs))
            .try_for_each(one)
    } else {
        one((dy, dx))
    }
}

/// `dx = col2im(cols)`: each column entry added back to the input pixel it was read from.
fn col2im(g: &Conv2d, ho: usize, wo: usize, cols: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let (sh, sw) = g.stride;
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let p = (ci * g.kh + ky) * g.kw + kx;
                let row = &cols[p * ho * wo..][..ho * wo];
                for oy in 0..ho {
                    let iy = (oy * sh + ky) as isize - g.pad.0 as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    for ox in 0..wo {
                        let ix = (ox * sw + kx) as isize - g.pad.1 as isize;
                        if ix >= 0 && ix < g.w as isize {
                            dst[ix as usize] += row[oy * wo + ox];
                        }
                    }
                }
            }
        }
    }
}
