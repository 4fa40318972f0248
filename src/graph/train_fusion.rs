//! Training passes of a BatchNorm without ReLU fused with the residual join right after it
//! (`y = act(bn(x) + other)`, the end of a ResNet basic block), on the kernels of
//! [`crate::kernels::batchnorm`]: both memory-bound passes of each node become one.
//!
//! - Forward: the BatchNorm's step takes the batch statistics only (saved, running
//!   statistics updated); the join's step writes `y` from `x`, the statistics and `other` in
//!   one pass. The BatchNorm's output is never written (it stays planned, unused).
//! - Backward: the join's step writes the gradient both addends get (`y > 0 ? dy : 0`, or
//!   `dy`) into `other`'s gradient, whose first write this is (see
//!   `GraphBuilder::train_fusable`), and sums it plane by plane for gamma's and beta's
//!   gradients; the BatchNorm's step reads it back from there for its input's gradient.
//!   The BatchNorm's output gradient is never written.
//!
//! Every value is computed by the unfused passes' `f32` operations in their order, so a
//! step is bit-identical with or without the fusion. Synchronized BatchNorm over several
//! ranks is not fused (its statistics need collectives between the passes).

use super::ops::{batchnorm, InputGrads, Op};
use super::{Graph, TensorId};
use crate::dist::Collectives;
use crate::error::Result;

impl Graph {
    /// Whether the training passes with the group `comm` fuse the pairs of
    /// `train_fusable`.
    pub(super) fn train_fusing(&self, comm: &dyn Collectives) -> bool {
        self.train_fusion && !(self.sync_bn && comm.size() > 1)
    }

    /// The fused pair whose BatchNorm is node `k`: the BatchNorm's input, the join's other
    /// input, its output and whether it applies ReLU.
    fn fused_pair(&self, k: usize) -> (TensorId, TensorId, TensorId, bool) {
        let (bn, join) = (&self.nodes[k], &self.nodes[k + 1]);
        let Op::Add { relu } = join.op else {
            unreachable!("train_fusable marks batchnorm + add pairs only");
        };
        let y = bn.output;
        let other = if join.inputs[0] == y {
            join.inputs[1]
        } else {
            join.inputs[0]
        };
        (bn.inputs[0], other, join.output, relu)
    }

    /// Step `k` of a fused training forward: node `k` is a fused BatchNorm (its statistics)
    /// or the join after one.
    pub(super) fn forward_fused(&mut self, k: usize) -> Result<()> {
        let is_bn = self.train_fusable[k];
        let b = if is_bn { k } else { k - 1 };
        let (x_t, other, out, relu) = self.fused_pair(b);
        let r = |t: TensorId| self.tensors[t.0].act.clone();
        let (xr, or, yr) = (r(x_t), r(other), r(out));
        let Op::BatchNorm(bn) = &mut self.nodes[b].op else {
            unreachable!("train_fusable marks batchnorms only");
        };
        if is_bn {
            return batchnorm::join_statistics(
                bn,
                &self.arena[xr],
                &mut self.buffer,
                &self.buffers,
            );
        }
        let aff = batchnorm::affine(bn, &self.param, &self.params);
        // The plan holds the BatchNorm's input (its backward reads it), the join's inputs
        // and output at the join's step.
        let [y, x, a] = self
            .arena
            .get_disjoint_mut([yr, xr, or])
            .expect("the plan keeps the buffers of one step apart");
        batchnorm::join_forward(bn, aff, x, a, relu, y)
    }

    /// Step `k` of a fused training backward: node `k` is the join after a fused
    /// BatchNorm (the addends' gradient, gamma's and beta's) or the BatchNorm (its input's
    /// gradient).
    pub(super) fn backward_fused(&mut self, k: usize) -> Result<()> {
        let is_bn = self.train_fusable[k];
        let b = if is_bn { k } else { k - 1 };
        let (x_t, other, out, relu) = self.fused_pair(b);
        let t = |t: TensorId| &self.tensors[t.0];
        let g_r = t(other)
            .grad
            .clone()
            .expect("train_fusable: other has a gradient");
        let x_r = t(x_t).act.clone();
        let Op::BatchNorm(bn) = &self.nodes[b].op else {
            unreachable!("train_fusable marks batchnorms only");
        };
        let aff = batchnorm::affine(bn, &self.param, &self.params);
        if !is_bn {
            let dy_r = t(out).grad.clone().expect("only inputs lack gradients");
            let y_r = if relu { t(out).act.clone() } else { 0..0 };
            // All live at the join's backward step: the output's gradient (and value with
            // ReLU) it reads, the BatchNorm's input its backward reads next, and `other`'s
            // gradient, first written here.
            let [dy, y, x, g] = self
                .arena
                .get_disjoint_mut([dy_r, y_r, x_r, g_r])
                .expect("the plan keeps the buffers of one step apart");
            let y = relu.then_some(&*y);
            let pg = &mut self.param_grad;
            batchnorm::join_backward_params(bn, aff.gamma, x, y, dy, g, pg, &self.params)?;
            self.written[other.0] = true;
            return Ok(());
        }
        let xg_r = t(x_t).grad.clone();
        let [x, g, xg, scratch] = self
            .arena
            .get_disjoint_mut([
                x_r,
                g_r,
                xg_r.clone().unwrap_or(0..0),
                self.scratch[k].clone(),
            ])
            .expect("the plan keeps the buffers of one step apart");
        let none = TensorId(usize::MAX);
        let gx = &mut InputGrads {
            tensors: &self.tensors,
            written: &mut self.written,
            scratch,
            slots: [(x_t, xg_r.map(|_| xg)), (none, None)],
        };
        let sums = batchnorm::affine_grads_of(bn, &self.param_grad, &self.params);
        batchnorm::join_backward_input(bn, aff, x, g, sums, gx, x_t)
    }
}
