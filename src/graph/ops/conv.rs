//! Convolution nodes (no bias; square or `KH x KW` kernels), forward and backward, on
//! [`crate::kernels::conv`]; and the evaluation forward of a convolution with the BatchNorm
//! after it folded in (`w' = w * scale[c]`, the shift as the convolution's bias), and the
//! residual join after that BatchNorm added in the convolution's store.

use super::InputGrads;
use crate::error::Result;
use crate::graph::TensorId;
use crate::kernels::batchnorm::{batchnorm_fold, BatchNorm2d, BnAffine};
use crate::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, conv2d_forward_residual, Conv2d,
};
use crate::kernels::elementwise::{copy, scale};

// x [N, C_in, H, W], w [C_out, C_in, KH, KW] -> y [N, C_out, H_out, W_out]

/// `y = conv(x, w)`.
pub(crate) fn forward(g: &Conv2d, x: &[f32], w: &[f32], y: &mut [f32]) -> Result<()> {
    conv2d_forward(g, x, w, None, false, y)
}

/// The weight gradient `dw` (overwritten), then the input gradient of `x0` (skipped for a
/// graph input).
pub(crate) fn backward(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    w: &[f32],
    dw: &mut [f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    conv2d_backward_weight(g, x, dy, dw, false)?;
    gx.emit(x0, false, &mut |dx| conv2d_backward_input(g, dy, w, dx))
}

// x [N, C_in, H, W], w [C_out, C_in, KH, KW], BatchNorm of C_out channels
//   -> y [N, C_out, H_out, W_out] (eval only: no backward)

/// Scratch of the folded forward: the scaled weights, the per-channel scale and shift.
pub(crate) struct Fold<'a> {
    pub(crate) w: &'a mut [f32],
    pub(crate) scale: &'a mut [f32],
    pub(crate) shift: &'a mut [f32],
}

/// A convolution and the evaluation BatchNorm after it (with its running statistics and
/// fused ReLU) as one convolution: the BatchNorm's `scale` multiplies each output channel's
/// weights and its `shift` becomes the bias. With `residual`, the residual join after the
/// BatchNorm too (`relu` then the join's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_bn_folded(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bn: &BatchNorm2d,
    affine: BnAffine<'_>,
    running_mean: &[f32],
    running_var: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    fold: Fold<'_>,
    y: &mut [f32],
) -> Result<()> {
    let c = g.c_out;
    let (fold_scale, fold_shift) = (&mut fold.scale[..c], &mut fold.shift[..c]);
    batchnorm_fold(
        affine,
        running_mean,
        running_var,
        bn.eps,
        fold_scale,
        fold_shift,
    )?;
    let per = w.len() / c;
    let fw = &mut fold.w[..w.len()];
    copy(w, fw)?;
    for (dst, &s) in fw.chunks_exact_mut(per).zip(&*fold_scale) {
        scale(dst, s);
    }
    match residual {
        Some(r) => conv2d_forward_residual(g, x, fw, Some(fold_shift), r, relu, y),
        None => conv2d_forward(g, x, fw, Some(fold_shift), relu, y),
    }
}
