//! 2-D max and average pooling and global average pooling over NCHW, forward and backward,
//! with PyTorch semantics (floor mode; padding is `-inf` for max and counts as zero in the
//! divisor-`k*k` average, `count_include_pad = true`). Parallel over `N*C` planes; every
//! plane is computed sequentially, so results are identical for any thread count.
//!
//! Max pooling saves the argmax of each window as a `u32` index into its input plane
//! (`h * W + w`, as PyTorch's indices); ties go to the first maximum in row-major window
//! order and a NaN wins over any number, as in PyTorch. The backward scatters `dY` there.

use crate::error::{Error, Result};
use crate::kernels::elementwise::{check_len, sum_seq};
use rayon::prelude::*;
use wide::f32x8;

/// The geometry of a square 2-D pooling: input `N x C x H x W`, window `kernel x kernel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2d {
    /// Output height `floor((H + 2p - k) / s) + 1`.
    ///
    /// # Panics
    /// When `stride == 0` or the padded input is smaller than the kernel (rejected by
    /// [`Pool2d::check`], which every kernel calls first).
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.kernel) / self.stride + 1
    }
    /// Output width `floor((W + 2p - k) / s) + 1`.
    ///
    /// # Panics
    /// As [`Pool2d::out_h`].
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.kernel) / self.stride + 1
    }
    /// Elements of the input, `N*C*H*W`.
    pub fn in_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Elements of the output, `N*C*Ho*Wo`.
    ///
    /// # Panics
    /// As [`Pool2d::out_h`].
    pub fn out_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }
    /// Checks the hyper-parameters as PyTorch does: `kernel > 0`, `stride > 0`,
    /// `padding <= kernel / 2`, the padded input at least one window, and planes small
    /// enough for `u32` indices.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `op` and the failed condition.
    pub fn check(&self, op: &'static str) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument { op, msg });
        if self.kernel == 0 || self.stride == 0 {
            return bad(format!(
                "kernel and stride must be positive, got kernel {} stride {}",
                self.kernel, self.stride
            ));
        }
        if self.padding > self.kernel / 2 {
            return bad(format!(
                "padding {} must be at most half the kernel {}",
                self.padding, self.kernel
            ));
        }
        if self.h + 2 * self.padding < self.kernel || self.w + 2 * self.padding < self.kernel {
            return bad(format!(
                "padded input {}x{} is smaller than the kernel {}",
                self.h + 2 * self.padding,
                self.w + 2 * self.padding,
                self.kernel
            ));
        }
        if u32::try_from(self.h * self.w).is_err() {
            return bad(format!(
                "plane {}x{} too large for u32 indices",
                self.h, self.w
            ));
        }
        Ok(())
    }
    /// The clamped input range `[start, end)` of output position `o` along a side of `len`.
    fn window(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(len as isize);
        (start.max(0) as usize, end as usize)
    }
}

/// Max pooling forward: `y` (`N*C*Ho*Wo`) and the `argmax` of every window.
///
/// # Errors
/// [`Error::InvalidArgument`] from [`Pool2d::check`]; [`Error::ShapeMismatch`] on a wrong
/// slice length.
pub fn max_pool2d_forward(p: &Pool2d, x: &[f32], y: &mut [f32], argmax: &mut [u32]) -> Result<()> {
    const OP: &str = "max_pool2d_forward";
    p.check(OP)?;
    check_len(OP, x.len(), p.in_len())?;
    check_len(OP, y.len(), p.out_len())?;
    check_len(OP, argmax.len(), p.out_len())?;
    let (hw, ohw) = (p.h * p.w, p.out_h() * p.out_w());
    if hw == 0 || ohw == 0 {
        return Ok(());
    }
    y.par_chunks_mut(ohw)
        .zip(argmax.par_chunks_mut(ohw))
        .zip(x.par_chunks(hw))
        .for_each(|((yp, ap), xp)| {
            for oh in 0..p.out_h() {
                let (h0, h1) = p.window(oh, p.h);
                for ow in 0..p.out_w() {
                    let (w0, w1) = p.window(ow, p.w);
                    let mut best = f32::NEG_INFINITY;
                    let mut arg = h0 * p.w + w0;
                    for ih in h0..h1 {
                        for iw in w0..w1 {
                            let v = xp[ih * p.w + iw];
                            if v > best || v.is_nan() {
                                best = v;
                                arg = ih * p.w + iw;
                            }
                        }
                    }
                    yp[oh * p.out_w() + ow] = best;
                    ap[oh * p.out_w() + ow] = arg as u32;
                }
            }
        });
    Ok(())
}

/// Max pooling backward: `dx` (overwritten) gets each `dy` added at its window's argmax.
///
/// # Errors
/// As [`max_pool2d_forward`], and [`Error::InvalidArgument`] when an index in `argmax` lies
/// outside its plane.
pub fn max_pool2d_backward(p: &Pool2d, dy: &[f32], argmax: &[u32], dx: &mut [f32]) -> Result<()> {
    const OP: &str = "max_pool2d_backward";
    p.check(OP)?;
    check_len(OP, dy.len(), p.out_len())?;
    check_len(OP, argmax.len(), p.out_len())?;
    check_len(OP, dx.len(), p.in_len())?;
    let (hw, ohw) = (p.h * p.w, p.out_h() * p.out_w());
    if let Some(&bad) = argmax.iter().find(|&&i| i as usize >= hw) {
        return Err(Error::InvalidArgument {
            op: OP,
            msg: format!("argmax index {bad} outside a plane of {hw} elements"),
        });
    }
    if hw == 0 || ohw == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw))
        .zip(argmax.par_chunks(ohw))
        .for_each(|((dxp, dyp), ap)| {
            dxp.fill(0.0);
            for (&d, &i) in dyp.iter().zip(ap) {
                dxp[i as usize] += d;
            }
        });
    Ok(())
}

/// Average pooling forward, divisor `kernel^2` (padding counts, PyTorch's default).
///
/// # Errors
/// As [`max_pool2d_forward`].
pub fn avg_pool2d_forward(p: &Pool2d, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "avg_pool2d_forward";
    p.check(OP)?;
    check_len(OP, x.len(), p.in_len())?;
    check_len(OP, y.len(), p.out_len())?;
    let (hw, ohw) = (p.h * p.w, p.out_h() * p.out_w());
    if hw == 0 || ohw == 0 {
        return Ok(());
    }
    let div = (p.kernel * p.kernel) as f32;
    y.par_chunks_mut(ohw)
        .zip(x.par_chunks(hw))
        .for_each(|(yp, xp)| {
            for oh in 0..p.out_h() {
                let (h0, h1) = p.window(oh, p.h);
                for ow in 0..p.out_w() {
                    let (w0, w1) = p.window(ow, p.w);
                    let mut s = 0.0f32;
                    for ih in h0..h1 {
                        for &v in &xp[ih * p.w + w0..ih * p.w + w1] {
                            s += v;
                        }
                    }
                    yp[oh * p.out_w() + ow] = s / div;
                }
            }
        });
    Ok(())
}

/// Average pooling backward: `dx` (overwritten) gets `dy / kernel^2` from every window that
/// covers it.
///
/// # Errors
/// As [`max_pool2d_forward`].
pub fn avg_pool2d_backward(p: &Pool2d, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    const OP: &str = "avg_pool2d_backward";
    p.check(OP)?;
    check_len(OP, dy.len(), p.out_len())?;
    check_len(OP, dx.len(), p.in_len())?;
    let (hw, ohw) = (p.h * p.w, p.out_h() * p.out_w());
    if hw == 0 || ohw == 0 {
        return Ok(());
    }
    let div = (p.kernel * p.kernel) as f32;
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw))
        .for_each(|(dxp, dyp)| {
            dxp.fill(0.0);
            for oh in 0..p.out_h() {
                let (h0, h1) = p.window(oh, p.h);
                for ow in 0..p.out_w() {
                    let (w0, w1) = p.window(ow, p.w);
                    let g = dyp[oh * p.out_w() + ow] / div;
                    for ih in h0..h1 {
                        for v in &mut dxp[ih * p.w + w0..ih * p.w + w1] {
                            *v += g;
                        }
                    }
                }
            }
        });
    Ok(())
}

/// Global average pooling forward: `y[n, c] = mean(x[n, c, :, :])` (`N*C*HW -> N*C`), each
/// plane summed in `f64`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `x` is not `planes * hw` or `y` not `planes` long;
/// [`Error::InvalidArgument`] when `hw == 0`.
pub fn global_avg_pool_forward(planes: usize, hw: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "global_avg_pool_forward";
    check_gap(OP, planes, hw, x.len(), y.len())?;
    y.par_iter_mut()
        .zip(x.par_chunks(hw))
        .for_each(|(o, xp)| *o = (sum_seq(xp) / hw as f64) as f32);
    Ok(())
}

/// Global average pooling backward: `dx[n, c, :, :] = dy[n, c] / HW` (overwritten).
///
/// # Errors
/// As [`global_avg_pool_forward`].
pub fn global_avg_pool_backward(
    planes: usize,
    hw: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    const OP: &str = "global_avg_pool_backward";
    check_gap(OP, planes, hw, dx.len(), dy.len())?;
    let div = hw as f32;
    dx.par_chunks_mut(hw)
        .zip(dy.par_iter())
        .for_each(|(dxp, &d)| dxp.fill(d / div));
    Ok(())
}

/// The index of the first maximum of `xp`: the first NaN if there is one (a NaN maximum
/// propagates, as in PyTorch), else the first entry equal to the largest value. The maximum
/// and the presence of a NaN come from a branch-free pass, eight lanes at a time; one
/// search then finds the index. (A data-dependent branch per value, the plain loop,
/// mispredicts often enough on short planes to cost about 10 cycles per value.)
fn first_max(xp: &[f32]) -> usize {
    let mut acc = f32x8::splat(f32::NEG_INFINITY);
    let mut nan = f32x8::splat(0.0);
    let mut lanes = xp.chunks_exact(8);
    for c in &mut lanes {
        let v = f32x8::from(<[f32; 8]>::try_from(c).expect("8 lanes"));
        acc = acc.max(v);
        nan |= v.is_nan();
    }
    let mut m = acc.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max);
    let mut has_nan = nan.any();
    for &v in lanes.remainder() {
        has_nan |= v.is_nan();
        m = if v > m { v } else { m };
    }
    if has_nan {
        xp.iter().position(|v| v.is_nan()).unwrap_or(0)
    } else {
        // The maximum is one of the values (all are finite or infinite, none NaN).
        xp.iter().position(|&v| v == m).unwrap_or(0)
    }
}

/// Planes per parallel task of the global max pooling (a sentence's plane is a few dozen
/// values: one task per plane would cost more in scheduling than the plane's work).
const MAX_POOL_PLANES_PER_TASK: usize = 256;

/// The global max pooling forward of `op` (with `relu`: ReLU folded in), its arguments
/// checked.
fn max_pool_forward(
    op: &'static str,
    planes: usize,
    hw: usize,
    x: &[f32],
    y: &mut [f32],
    relu: bool,
) -> Result<()> {
    check_gap(op, planes, hw, x.len(), y.len())?;
    y.par_chunks_mut(MAX_POOL_PLANES_PER_TASK)
        .zip(x.par_chunks(MAX_POOL_PLANES_PER_TASK * hw))
        .for_each(|(yb, xb)| {
            for (o, xp) in yb.iter_mut().zip(xb.chunks_exact(hw)) {
                let m = xp[first_max(xp)];
                // `m < 0` is false for NaN, which propagates.
                *o = if relu && m < 0.0 { 0.0 } else { m };
            }
        });
    Ok(())
}

/// The global max pooling backward of `op` (with `relu`: ReLU folded in), its arguments
/// checked.
fn max_pool_backward(
    op: &'static str,
    planes: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    relu: bool,
) -> Result<()> {
    check_gap(op, planes, hw, x.len(), dy.len())?;
    check_len(op, dx.len(), x.len())?;
    dx.par_chunks_mut(MAX_POOL_PLANES_PER_TASK * hw)
        .zip(x.par_chunks(MAX_POOL_PLANES_PER_TASK * hw))
        .zip(dy.par_chunks(MAX_POOL_PLANES_PER_TASK))
        .for_each(|((dxb, xb), dyb)| {
            for ((dxp, xp), &d) in dxb.chunks_exact_mut(hw).zip(xb.chunks_exact(hw)).zip(dyb) {
                dxp.fill(0.0);
                let i = first_max(xp);
                // Through the ReLU only where the maximum is positive (ReLU's gradient is
                // `x > 0`, false for NaN).
                if !relu || xp[i] > 0.0 {
                    dxp[i] = d;
                }
            }
        });
    Ok(())
}

/// Global max pooling forward: `y[n, c] = max(x[n, c, :, :])` (`N*C*HW -> N*C`); the
/// max-over-time pooling of a sentence encoder (a sentence as a `1 x L` image). A NaN in a
/// plane makes its output NaN.
///
/// # Errors
/// As [`global_avg_pool_forward`].
pub fn global_max_pool_forward(planes: usize, hw: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    max_pool_forward("global_max_pool_forward", planes, hw, x, y, false)
}

/// Global max pooling backward: `dx` (overwritten) is `dy[n, c]` at the first maximum of
/// each plane of `x` (recomputed from `x`, as [`global_max_pool_forward`] chose it) and zero
/// elsewhere.
///
/// # Errors
/// As [`global_avg_pool_forward`], and [`Error::ShapeMismatch`] when `dx` and `x` differ in
/// length.
pub fn global_max_pool_backward(
    planes: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    max_pool_backward("global_max_pool_backward", planes, hw, x, dy, dx, false)
}

/// ReLU then global max pooling in one pass, `y[n, c] = max(0, max(x[n, c, :, :]))`, which
/// equals `max` over the plane of `relu(x)` without writing `relu(x)`: the max-over-time
/// pooling of a convolutional sentence encoder, its ReLU folded in. A NaN propagates.
///
/// # Errors
/// As [`global_avg_pool_forward`].
pub fn global_max_pool_relu_forward(
    planes: usize,
    hw: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    max_pool_forward("global_max_pool_relu_forward", planes, hw, x, y, true)
}

/// The backward of [`global_max_pool_relu_forward`]: `dy[n, c]` at the first maximum of the
/// plane when that maximum is positive, zero elsewhere (`dx` overwritten); the gradient of
/// ReLU followed by [`global_max_pool_backward`].
///
/// # Errors
/// As [`global_max_pool_backward`].
pub fn global_max_pool_relu_backward(
    planes: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    max_pool_backward("global_max_pool_relu_backward", planes, hw, x, dy, dx, true)
}

fn check_gap(op: &'static str, planes: usize, hw: usize, big: usize, small: usize) -> Result<()> {
    if hw == 0 {
        return Err(Error::InvalidArgument {
            op,
            msg: "spatial size H*W must be positive".into(),
        });
    }
    check_len(op, big, planes * hw)?;
    check_len(op, small, planes)
}
