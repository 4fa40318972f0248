//! The geometry of a 2-D convolution: input, kernel, stride and padding sizes, the output
//! size they give, and their validation.

use crate::error::{Error, Result};

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
    pub(super) fn depth(&self) -> usize {
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

    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0)
    }

    /// A 1x1 unpadded kernel with a stride above 1 in some direction (a ResNet shortcut).
    pub(super) fn is_pointwise_strided(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride != (1, 1) && self.pad == (0, 0)
    }
}
