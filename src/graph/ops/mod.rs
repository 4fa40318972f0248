//! The operations of the graph: the node set ([`Op`]), one module per operation family
//! (each with its forward directly above its backward, the llm.c way), and the dispatch
//! from a node to its family. Adding an operation touches its family's module, [`Op`] and
//! the two `match`es here.

pub(crate) mod batchnorm;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod linear;
pub(crate) mod ntxent;
pub(crate) mod pool;
pub(crate) mod quickthought;
pub(crate) mod softmax;

use super::dist::DistCtx;
use super::tensors::{BufferInfo, ParamInfo, TensorInfo};
use super::{Mode, TensorId};
use crate::error::Result;
use crate::kernels::conv::Conv2d;
use crate::kernels::elementwise::{add_assign, copy, scale};

#[derive(Debug)]
pub(crate) enum Op {
    Input,
    Embedding(embedding::EmbeddingNode),
    Conv {
        g: Conv2d,
        w: usize,
    },
    BatchNorm(batchnorm::BatchNormNode),
    Relu,
    Add {
        relu: bool,
    },
    GlobalAvgPool {
        planes: usize,
        hw: usize,
    },
    GlobalMaxPool {
        planes: usize,
        hw: usize,
        /// ReLU folded in (`max(0, max x)`).
        relu: bool,
    },
    Linear(linear::LinearNode),
    NtXent(ntxent::NtXentNode),
    QtInBatch(quickthought::QtInBatchNode),
    QtPairwise(quickthought::QtPairwiseNode),
    SoftmaxCe(softmax::SoftmaxCeNode),
}

impl Op {
    /// The `f64` loss of a loss node (from its last forward); `None` for other nodes.
    pub(crate) fn loss64(&self) -> Option<f64> {
        match self {
            Op::NtXent(z) => Some(z.loss64),
            Op::SoftmaxCe(s) => Some(s.loss64),
            Op::QtInBatch(q) => Some(q.loss64),
            Op::QtPairwise(q) => Some(q.loss64),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) op: Op,
    pub(crate) inputs: Vec<TensorId>,
    pub(crate) output: TensorId,
}

/// `(inputs, output)` of a node: the output's range lies after every input's (tensors are
/// laid out in creation order), so one split separates them.
pub(crate) fn split_io<'a>(
    buf: &'a mut [f32],
    out: &std::ops::Range<usize>,
) -> (&'a [f32], &'a mut [f32]) {
    let (lo, hi) = buf.split_at_mut(out.start);
    (lo, &mut hi[..out.len()])
}

/// Runs the forward of `node`: reads its inputs' values, writes its output's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_node(
    node: &mut Node,
    mode: Mode,
    tensors: &[TensorInfo],
    act: &mut [f32],
    param: &[f32],
    params: &[ParamInfo],
    buffer: &mut [f32],
    buffers: &[BufferInfo],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let out_r = tensors[node.output.0].act.clone();
    let (lo, y) = split_io(act, &out_r);
    let x_of = |i: usize| &lo[tensors[node.inputs[i].0].act.clone()];
    let shape = |i: usize| &tensors[node.inputs[i].0].shape[..];
    let p = |i: usize| &param[params[i].range.clone()];
    match &mut node.op {
        Op::Input => Ok(()),
        Op::Embedding(e) => embedding::forward(e, p(e.table), y),
        Op::Conv { g, w } => conv::forward(g, x_of(0), p(*w), y),
        Op::BatchNorm(bn) => {
            let aff = batchnorm::affine(bn, param, params);
            batchnorm::forward(bn, mode, aff, x_of(0), buffer, buffers, y, dist)
        }
        Op::Relu => elementwise::relu_forward(x_of(0), y),
        Op::Add { relu } => elementwise::add_forward(x_of(0), x_of(1), *relu, y),
        Op::GlobalAvgPool { planes, hw } => pool::avg_forward(*planes, *hw, x_of(0), y),
        Op::GlobalMaxPool { planes, hw, relu } => {
            pool::max_forward(*planes, *hw, *relu, x_of(0), y)
        }
        Op::Linear(l) => linear::forward(l, x_of(0), p(l.w), l.b.map(p), y),
        Op::NtXent(z) => ntxent::forward(z, &node.name, mode, x_of(0), shape(0), y, dist),
        Op::QtInBatch(q) => {
            let (f, g) = ((x_of(0), shape(0)), (x_of(1), shape(1)));
            quickthought::in_batch_forward(q, mode, f, g, y, dist)
        }
        Op::QtPairwise(q) => {
            let d = shape(0)[1];
            quickthought::pairwise_forward(q, &node.name, mode, x_of(0), x_of(1), d, y, dist)
        }
        Op::SoftmaxCe(s) => softmax::forward(s, mode, x_of(0), y, dist),
    }
}

/// Runs the backward of `node`: reads its output's gradient, writes its parameters'
/// gradients (overwritten) and hands its inputs' gradients to [`InputGrads`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_node(
    node: &mut Node,
    tensors: &[TensorInfo],
    act: &[f32],
    grad: &mut [f32],
    written: &mut [bool],
    scratch: &mut [f32],
    param: &[f32],
    param_grad: &mut [f32],
    params: &[ParamInfo],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    if matches!(node.op, Op::Input) {
        return Ok(());
    }
    let out = &tensors[node.output.0];
    let gout_r = out.grad.clone().expect("only inputs lack gradients");
    let y = &act[out.act.clone()];
    let x_of = |i: usize| &act[tensors[node.inputs[i].0].act.clone()];
    let p = |i: usize| &param[params[i].range.clone()];
    let (lo, hi) = grad.split_at_mut(gout_r.start);
    let dy = &hi[..gout_r.len()];
    let gx = &mut InputGrads {
        tensors,
        written,
        scratch,
        lo,
    };
    let inputs = &node.inputs[..];
    match &mut node.op {
        Op::Input => Ok(()),
        Op::Embedding(e) => {
            embedding::backward(e, dy, &mut param_grad[params[e.table].range.clone()])
        }
        Op::Conv { g, w } => {
            let dw = &mut param_grad[params[*w].range.clone()];
            conv::backward(g, x_of(0), dy, p(*w), dw, gx, inputs[0])
        }
        Op::BatchNorm(bn) => {
            let aff = batchnorm::affine(bn, param, params);
            batchnorm::backward(
                bn,
                aff,
                x_of(0),
                dy,
                param_grad,
                params,
                gx,
                inputs[0],
                dist,
            )
        }
        Op::Relu => elementwise::relu_backward(y, dy, gx, inputs[0]),
        Op::Add { relu } => elementwise::add_backward(*relu, y, dy, gx, inputs[0], inputs[1]),
        Op::GlobalAvgPool { planes, hw } => pool::avg_backward(*planes, *hw, dy, gx, inputs[0]),
        Op::GlobalMaxPool { planes, hw, relu } => {
            pool::max_backward(*planes, *hw, *relu, x_of(0), dy, gx, inputs[0])
        }
        Op::Linear(l) => {
            linear::backward(l, x_of(0), y, dy, param, param_grad, params, gx, inputs[0])
        }
        Op::NtXent(z) => ntxent::backward(z, dy, gx, inputs[0]),
        Op::QtInBatch(q) => quickthought::in_batch_backward(q, dy, gx, inputs),
        Op::QtPairwise(q) => quickthought::pairwise_backward(q, dy, gx, inputs),
        Op::SoftmaxCe(s) => softmax::backward(s, dy, gx, inputs[0]),
    }
}

/// Where a node's backward writes the gradients of its inputs. A tensor read by several
/// nodes receives the sum of their gradients: the first backward to reach it overwrites its
/// gradient, later ones accumulate (through the scratch). Graph inputs have no gradient.
pub(crate) struct InputGrads<'a> {
    pub(crate) tensors: &'a [TensorInfo],
    /// Per tensor: whether its gradient has been written in the current backward.
    pub(crate) written: &'a mut [bool],
    /// As long as the largest tensor.
    pub(crate) scratch: &'a mut [f32],
    /// The gradient arena below the node's output (where every input's gradient lies).
    pub(crate) lo: &'a mut [f32],
}

impl InputGrads<'_> {
    /// Writes the gradient of input `t` with `f(dst)`, which overwrites `dst`: straight into
    /// the tensor's gradient buffer on the first write of this backward, else into the
    /// scratch and then added. For a tensor without a gradient (a graph input) `f` runs on
    /// the scratch only when `always` (the kernel also produces parameter gradients), else
    /// not at all.
    pub(crate) fn emit(
        &mut self,
        t: TensorId,
        always: bool,
        f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let Some(range) = self.tensors[t.0].grad.clone() else {
            if always {
                f(&mut self.scratch[..self.tensors[t.0].act.len()])?;
            }
            return Ok(());
        };
        if self.written[t.0] {
            let s = &mut self.scratch[..range.len()];
            f(s)?;
            add_assign(&mut self.lo[range], s)?;
        } else {
            self.written[t.0] = true;
            f(&mut self.lo[range])?;
        }
        Ok(())
    }

    /// [`InputGrads::emit`] of `seed * g` as the gradient of input `t`.
    pub(crate) fn emit_scaled(&mut self, t: TensorId, seed: f32, g: &[f32]) -> Result<()> {
        self.emit(t, false, &mut |dx| {
            copy(g, dx)?;
            scale(dx, seed);
            Ok(())
        })
    }
}
