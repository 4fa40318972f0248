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
/// second's.
pub(crate) fn add_backward(
    relu: bool,
    y: &[f32],
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    a: TensorId,
    b: TensorId,
) -> Result<()> {
    let InputGrads {
        tensors,
        written,
        scratch,
        lo,
    } = gx;
    let ga = tensors[a.0].grad.clone();
    let in_a = ga.as_ref().is_some_and(|_| !written[a.0]);
    {
        let dst: &mut [f32] = match (&ga, in_a) {
            (Some(r), true) => &mut lo[r.clone()],
            _ => &mut scratch[..dy.len()],
        };
        if relu {
            add_relu_backward(y, dy, dst)?;
        } else {
            copy(dy, dst)?;
        }
    }
    if let Some(r) = &ga {
        if !in_a {
            add_assign(&mut lo[r.clone()], &scratch[..dy.len()])?;
        }
        written[a.0] = true;
    }
    if let Some(rb) = tensors[b.0].grad.clone() {
        let first = !written[b.0];
        written[b.0] = true;
        let (src, dst): (&[f32], &mut [f32]) = match (&ga, in_a) {
            (Some(ra), true) => {
                // Disjoint ranges of the same arena.
                if ra.start < rb.start {
                    let (x, y) = lo.split_at_mut(rb.start);
                    (&x[ra.clone()], &mut y[..rb.len()])
                } else {
                    let (x, y) = lo.split_at_mut(ra.start);
                    (&y[..ra.len()], &mut x[rb])
                }
            }
            _ => (&scratch[..dy.len()], &mut lo[rb]),
        };
        if first {
            copy(src, dst)?;
        } else {
            add_assign(dst, src)?;
        }
    }
    Ok(())
}
