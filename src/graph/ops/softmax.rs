//! Softmax cross-entropy nodes with integer labels (set by
//! [`crate::graph::Graph::set_labels`]) on [`crate::kernels::softmax`]: the training
//! forward computes the gradient with the loss (the mean over the whole group's rows in a
//! data-parallel step), the backward scales it.

use super::InputGrads;
use crate::error::Result;
use crate::graph::dist::DistCtx;
use crate::graph::{Mode, TensorId};
use crate::kernels::elementwise::scale;
use crate::kernels::softmax::softmax_cross_entropy;

#[derive(Debug)]
pub(crate) struct SoftmaxCeNode {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) labels: Vec<u32>,
    pub(crate) correct: usize,
    /// The rows `correct` counts over (`n`, or `n` times the ranks of a data-parallel step).
    pub(crate) total: usize,
    /// The gradient of the last training forward.
    pub(crate) dlogits: Vec<f32>,
    pub(crate) loss64: f64,
}

// logits [N, C], labels [N] -> loss [1]

/// The mean loss into `y[0]`; in training also its gradient into the node's `dlogits`.
pub(crate) fn forward(
    s: &mut SoftmaxCeNode,
    mode: Mode,
    logits: &[f32],
    y: &mut [f32],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let SoftmaxCeNode {
        n,
        c,
        labels,
        correct,
        total,
        dlogits,
        loss64,
    } = s;
    let train = mode == Mode::Train;
    let dl = train.then_some(&mut dlogits[..]);
    let st = softmax_cross_entropy(logits, *n, *c, labels, dl)?;
    let (mut loss, mut hits, mut rows) = (st.loss, st.correct, *n);
    if train && dist.spans() {
        // The mean over the whole group's rows.
        let g = dist.group_mean(loss, hits, *n)?;
        scale(dlogits, g.share as f32);
        (loss, hits, rows) = (g.loss, g.hits, g.total);
    }
    *correct = hits;
    *total = rows;
    y[0] = loss as f32;
    *loss64 = loss;
    Ok(())
}

/// `dlogits` scaled by the gradient arriving at the loss, `dy[0]`.
pub(crate) fn backward(
    s: &SoftmaxCeNode,
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit_scaled(x0, dy[0], &s.dlogits)
}
