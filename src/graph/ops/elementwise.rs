//! Element-wise nodes: ReLU and the residual join `a + b` (optionally followed by ReLU),
//! forward and backward, on [`crate::kernels::elementwise`].

use super::InputGrads;
use crate::error::Result;
use crate::graph::TensorId;
use crate::kernels::elementwise::{add, add_assign, add_relu, add_relu_backward, copy, relu};

// x [any shape] -> y [same shape]

/// `y = max(x, 0)`.
pub(crate) fn relu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    relu(x, y)
}

/// `dx = dy` where `y > 0`, else 0.
pub(crate) fn relu_backward(
    y: &[f32],
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit(x0, false, &mut |dx| {
        crate::kernels::elementwise::relu_backward(y, dy, dx)
    })
}

// a [any shape], b [same shape] -> y [same shape]

/// `y = a + b`, or `max(a + b, 0)` with `relu`.
pub(crate) fn add_forward(a: &[f32], b: &[f32], relu: bool, y: &mut [f32]) -> Result<()> {
    if relu {
        add_relu(a, b, y)
    } else {
        add(a, b, y)
    }
}

/// Both inputs get the same (masked) gradient: computed once into the first input's buffer
/// when that is its first write (else into the scratch), then copied or added to the
/// second's. `y` is read only with `relu`.
pub(crate) fn add_backward(
    relu: bool,
    y: &[f32],
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    a: TensorId,
    b: TensorId,
) -> Result<()> {
    let InputGrads {
        written,
        scratch,
        slots,
        ..
    } = gx;
    // The builder rejects a == b, so the slots are a's and b's, in that order.
    let [(_, ga), (_, gb)] = slots;
    let in_a = ga.is_some() && !written[a.0];
    {
        let dst: &mut [f32] = match (ga.as_deref_mut(), in_a) {
            (Some(g), true) => g,
            _ => &mut scratch[..dy.len()],
        };
        if relu {
            add_relu_backward(y, dy, dst)?;
        } else {
            copy(dy, dst)?;
        }
    }
    if let Some(g) = ga.as_deref_mut() {
        if !in_a {
            add_assign(g, &scratch[..dy.len()])?;
        }
        written[a.0] = true;
    }
    if let Some(dst) = gb.as_deref_mut() {
        let first = !written[b.0];
        written[b.0] = true;
        let src: &[f32] = match (ga.as_deref(), in_a) {
            (Some(g), true) => g,
            _ => &scratch[..dy.len()],
        };
        if first {
            copy(src, dst)?;
        } else {
            add_assign(dst, src)?;
        }
    }
    Ok(())
}
