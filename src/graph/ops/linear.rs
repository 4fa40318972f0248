//! Fully connected nodes `y = x W^T + b`, optionally followed by ReLU, forward and
//! backward, on [`crate::kernels::linear`].

use super::{slot, InputGrads};
use crate::error::Result;
use crate::graph::tensors::ParamInfo;
use crate::graph::TensorId;
use crate::kernels::elementwise::relu_backward;
use crate::kernels::linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward, Linear,
};

#[derive(Debug)]
pub(crate) struct LinearNode {
    pub(crate) l: Linear,
    /// Parameters: the weight, the bias if any.
    pub(crate) w: usize,
    pub(crate) b: Option<usize>,
    pub(crate) relu: bool,
}

// x [N, in], w [out, in], b [out] -> y [N, out]

/// `y = x W^T + b` (ReLU'd with `relu`).
pub(crate) fn forward(
    n: &LinearNode,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    linear_forward(&n.l, x, w, b, n.relu, y)
}

/// The weight and bias gradients (overwritten) and the input gradient of `x0`. A fused ReLU
/// masks the output gradient first (into the front of the scratch; the input gradient then
/// goes straight to its buffer, accumulating with beta = 1 when needed, so the rest of the
/// scratch is not used). `y` is read only with ReLU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    n: &LinearNode,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    param: &[f32],
    param_grad: &mut [f32],
    params: &[ParamInfo],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    let LinearNode { l, w, b, relu } = n;
    let InputGrads {
        written,
        scratch,
        slots,
        ..
    } = gx;
    let (masked, _) = scratch.split_at_mut(if *relu { dy.len() } else { 0 });
    let dyv: &[f32] = if *relu {
        relu_backward(y, dy, masked)?;
        masked
    } else {
        dy
    };
    let wr = params[*w].range.clone();
    linear_backward_weight(l, dyv, x, &mut param_grad[wr.clone()], 0.0)?;
    if let Some(b) = b {
        let br = params[*b].range.clone();
        linear_backward_bias(l, dyv, &mut param_grad[br], 0.0)?;
    }
    if let Some(dx) = slot(slots, x0) {
        let beta = if written[x0.0] { 1.0 } else { 0.0 };
        written[x0.0] = true;
        linear_backward_input(l, dyv, &param[wr], dx, beta)?;
    }
    Ok(())
}
