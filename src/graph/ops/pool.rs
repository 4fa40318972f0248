//! Global pooling nodes: average, and max (optionally after ReLU, `max(0, max x)`: the max
//! over time of a convolutional sentence encoder), forward and backward, on
//! [`crate::kernels::pool`].

use super::InputGrads;
use crate::error::Result;
use crate::graph::TensorId;
use crate::kernels::pool::{
    global_avg_pool_backward, global_avg_pool_forward, global_max_pool_backward,
    global_max_pool_forward, global_max_pool_relu_backward, global_max_pool_relu_forward,
};

// x [N, C, H, W] -> y [N, C] (planes = N C, hw = H W)

/// `y[n, c] = mean(x[n, c, :, :])`.
pub(crate) fn avg_forward(planes: usize, hw: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    global_avg_pool_forward(planes, hw, x, y)
}

/// `dx[n, c, :, :] = dy[n, c] / HW`.
pub(crate) fn avg_backward(
    planes: usize,
    hw: usize,
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit(x0, false, &mut |dx| {
        global_avg_pool_backward(planes, hw, dy, dx)
    })
}

// x [N, C, H, W] -> y [N, C] (planes = N C, hw = H W)

/// `y[n, c] = max(x[n, c, :, :])`, or `max(0, max x[n, c, :, :])` with `relu`.
pub(crate) fn max_forward(
    planes: usize,
    hw: usize,
    relu: bool,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    if relu {
        global_max_pool_relu_forward(planes, hw, x, y)
    } else {
        global_max_pool_forward(planes, hw, x, y)
    }
}

/// `dy[n, c]` to the first maximum of each plane of `x` (none where the ReLU cut it).
pub(crate) fn max_backward(
    planes: usize,
    hw: usize,
    relu: bool,
    x: &[f32],
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit(x0, false, &mut |dx| {
        if relu {
            global_max_pool_relu_backward(planes, hw, x, dy, dx)
        } else {
            global_max_pool_backward(planes, hw, x, dy, dx)
        }
    })
}
