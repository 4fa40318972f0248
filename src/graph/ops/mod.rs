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
use std::ops::Range;

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

    /// Which values of the forward the node's backward reads: `(its inputs', its
    /// output's)`. The liveness plan keeps exactly these alive until the backward, and the
    /// backward is handed only these (an empty slice for the others).
    pub(crate) fn backward_reads(&self) -> (bool, bool) {
        match self {
            // The input for the weight gradient; BatchNorm's (fused ReLU's) mask is
            // recomputed from the input and the saved statistics.
            Op::Conv { .. } | Op::BatchNorm(_) | Op::GlobalMaxPool { .. } => (true, false),
            Op::Relu => (false, true),
            Op::Add { relu } => (false, *relu),
            Op::Linear(l) => (true, l.relu),
            // Shapes only, or the gradient saved by the loss's forward.
            Op::Input
            | Op::Embedding(_)
            | Op::GlobalAvgPool { .. }
            | Op::NtXent(_)
            | Op::QtInBatch(_)
            | Op::QtPairwise(_)
            | Op::SoftmaxCe(_) => (false, false),
        }
    }
}

impl Op {
    /// Bytes of the per-thread scratch its kernels grow to on `threads` threads, where it
    /// is sizable (the convolutions'; see [`crate::kernels::conv::scratch_bytes`]).
    pub(crate) fn workspace_bytes(&self, threads: usize) -> usize {
        match self {
            Op::Conv { g, .. } => crate::kernels::conv::scratch_bytes(g, threads),
            _ => 0,
        }
    }
}

/// A node: its operation, the tensors it takes (at most two) and the one it makes.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) op: Op,
    pub(crate) inputs: Vec<TensorId>,
    pub(crate) output: TensorId,
}

impl Node {
    /// The scratch the node's backward takes (elements): `len(t)` is a tensor's length,
    /// `has_grad(t)` whether it has a gradient, `written(t)` whether a later node's backward
    /// wrote its gradient already. As [`InputGrads::emit`], `elementwise::add_backward`
    /// and `linear::backward` use it: a gradient added to one already written goes through
    /// the scratch, as does BatchNorm's input gradient when the input has none (the kernel
    /// computes it with the parameters' gradients), the residual join's gradient unless it
    /// goes straight to its first input's buffer, and linear's ReLU-masked output gradient.
    pub(crate) fn backward_scratch(
        &self,
        len: &dyn Fn(TensorId) -> usize,
        has_grad: &dyn Fn(TensorId) -> bool,
        written: &dyn Fn(TensorId) -> bool,
    ) -> usize {
        match &self.op {
            Op::Input | Op::Embedding(_) => 0,
            Op::Linear(l) => {
                if l.relu {
                    len(self.output)
                } else {
                    0
                }
            }
            Op::Add { .. } => {
                let a = self.inputs[0];
                if has_grad(a) && !written(a) {
                    0
                } else {
                    len(self.output)
                }
            }
            op => {
                let always = matches!(op, Op::BatchNorm(_));
                let inputs = &self.inputs;
                (0..inputs.len())
                    .filter(|&i| {
                        let t = inputs[i];
                        if has_grad(t) {
                            written(t) || inputs[..i].contains(&t)
                        } else {
                            always
                        }
                    })
                    .map(|i| len(inputs[i]))
                    .max()
                    .unwrap_or(0)
            }
        }
    }
}

impl Node {
    /// Bytes of the buffers the node holds itself (`len(t)` a tensor's length): a loss's
    /// saved input gradient and its kernel's workspace (about as large again), token ids,
    /// labels, BatchNorm's saved and synchronized statistics. A data-parallel loss's
    /// gathered rows, which grow with the group, are not counted.
    pub(crate) fn held_bytes(&self, len: &dyn Fn(TensorId) -> usize) -> u64 {
        let inputs = |k: u64| {
            self.inputs
                .iter()
                .fold(0u64, |a, &t| a.saturating_add(len(t) as u64))
                .saturating_mul(k)
        };
        match &self.op {
            Op::Embedding(e) => 4 * e.ids.len() as u64,
            Op::BatchNorm(b) => 8 * b.sync.len() as u64 + 4 * 2 * b.saved.mean.len() as u64,
            Op::NtXent(_) | Op::QtInBatch(_) | Op::QtPairwise(_) => inputs(2 * 4),
            Op::SoftmaxCe(s) => inputs(4).saturating_add(4 * s.labels.len() as u64),
            _ => 0,
        }
    }
}

/// An empty range, for a buffer a node does not use.
const NONE: Range<usize> = 0..0;

/// The disjoint buffers `ranges` of the arena, at once. The liveness plan never places two
/// buffers a node uses at one step in shared bytes; a failure is a planning bug.
fn disjoint<const N: usize>(arena: &mut [f32], ranges: [Range<usize>; N]) -> [&mut [f32]; N] {
    arena
        .get_disjoint_mut(ranges)
        .expect("the plan keeps the buffers of one step apart")
}

/// The second input of a node, unless it is the first again (Quick Thoughts' losses may
/// take one tensor on both sides): its buffers are then the first's.
fn distinct_second(inputs: &[TensorId]) -> Option<TensorId> {
    inputs
        .get(1)
        .copied()
        .filter(|&t| Some(&t) != inputs.first())
}

/// Runs the forward of `node`: reads its inputs' values, writes its output's, at the
/// ranges of `mode`'s plan.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_node(
    node: &mut Node,
    mode: Mode,
    tensors: &[TensorInfo],
    arena: &mut [f32],
    param: &[f32],
    params: &[ParamInfo],
    buffer: &mut [f32],
    buffers: &[BufferInfo],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    if matches!(node.op, Op::Input) {
        return Ok(());
    }
    let act = |t: Option<TensorId>| t.map_or(NONE, |t| tensors[t.0].value(mode));
    let second = distinct_second(&node.inputs);
    let ranges = [
        tensors[node.output.0].value(mode),
        act(node.inputs.first().copied()),
        act(second),
    ];
    let [y, x0, x1] = disjoint(arena, ranges);
    let x0: &[f32] = x0;
    let xs = [x0, if second.is_some() { &*x1 } else { x0 }];
    let x_of = |i: usize| xs[i];
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
    arena: &mut [f32],
    written: &mut [bool],
    scratch: Range<usize>,
    param: &[f32],
    param_grad: &mut [f32],
    params: &[ParamInfo],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    if matches!(node.op, Op::Input) {
        return Ok(());
    }
    let out = &tensors[node.output.0];
    let (reads_inputs, reads_output) = node.op.backward_reads();
    let first = node.inputs.first().copied();
    let second = distinct_second(&node.inputs);
    let act = |t: Option<TensorId>| match t {
        Some(t) if reads_inputs => tensors[t.0].act.clone(),
        _ => NONE,
    };
    let grad = |t: Option<TensorId>| t.and_then(|t| tensors[t.0].grad.clone());
    let ranges = [
        out.grad.clone().expect("only inputs lack gradients"),
        if reads_output { out.act.clone() } else { NONE },
        act(first),
        act(second),
        grad(first).unwrap_or(NONE),
        grad(second).unwrap_or(NONE),
        scratch,
    ];
    let [dy, y, x0, x1, g0, g1, scratch] = disjoint(arena, ranges);
    let (dy, y, x0): (&[f32], &[f32], &[f32]) = (dy, y, x0);
    let xs = [x0, if second.is_some() { &*x1 } else { x0 }];
    let x_of = |i: usize| xs[i];
    let p = |i: usize| &param[params[i].range.clone()];
    let none = TensorId(usize::MAX);
    let gx = &mut InputGrads {
        tensors,
        written,
        scratch,
        slots: [
            (first.unwrap_or(none), grad(first).map(|_| g0)),
            (second.unwrap_or(none), grad(second).map(|_| g1)),
        ],
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
    /// The node's scratch, as long as [`Node::backward_scratch`] says.
    pub(crate) scratch: &'a mut [f32],
    /// The gradient buffers of the node's first and second input, in that order (`None`
    /// for an input without a gradient; for a second input that is the first again, whose
    /// buffer is the first's; and past the node's inputs).
    pub(crate) slots: [(TensorId, Option<&'a mut [f32]>); 2],
}

/// The gradient buffer of input `t` among `slots` (`None` for a graph input).
pub(crate) fn slot<'s>(
    slots: &'s mut [(TensorId, Option<&mut [f32]>); 2],
    t: TensorId,
) -> Option<&'s mut [f32]> {
    slots
        .iter_mut()
        .find(|(id, g)| *id == t && g.is_some())
        .and_then(|(_, g)| g.as_deref_mut())
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
        let len = self.tensors[t.0].act.len();
        let Some(dst) = slot(&mut self.slots, t) else {
            if always {
                f(&mut self.scratch[..len])?;
            }
            return Ok(());
        };
        if self.written[t.0] {
            let s = &mut self.scratch[..len];
            f(s)?;
            add_assign(dst, s)?;
        } else {
            self.written[t.0] = true;
            f(dst)?;
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
