//! The static graph: build once, check every shape, plan every buffer, then run training
//! steps that allocate nothing (the llm.c way: explicit per-node forward and backward over
//! explicit dimensions, parameters in one arena with each tensor's name and shape beside it).
//! This file is the interpreter; the other jobs have their own files:
//!
//! - `builder.rs`: [`GraphBuilder`] adds nodes in execution order. Every node checks its
//!   input shapes as it is added and returns [`Error::Graph`] naming the node and the shapes.
//! - `plan.rs`: [`GraphBuilder::build`] lays out one flat arena for the activations and
//!   their gradients and one each for the parameters, the parameter gradients and the
//!   non-trained buffers (BatchNorm running statistics), and initializes the parameters from
//!   a seed as PyTorch does: Kaiming-uniform convolution and linear weights
//!   (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, PyTorch's default `a = sqrt(5)`), linear biases
//!   from the same range, BatchNorm `gamma = 1`, `beta = 0`, running mean 0 and variance 1.
//! - `liveness.rs`: over which steps of a pass each value and gradient must hold, and the
//!   offsets that let the ones whose lifetimes do not overlap share bytes of the arena (a
//!   tensor marked with [`GraphBuilder::keep`], a graph input or output never shares).
//! - `ops/`: one file per operation family, its forward directly above its backward, and
//!   the dispatch from a node to its family.
//! - `access.rs`: a built graph's arenas, what a step feeds in and what it reads out.
//! - `dist.rs`: the data-parallel context of a forward or backward.
//! - `train_fusion.rs`: training passes of a BatchNorm fused with the residual join after
//!   it.
//!
//! [`Graph::forward`] runs the nodes in order, [`Graph::backward`] in reverse. A tensor read
//! by several nodes (a residual input) receives the sum of their gradients: the first
//! backward to reach it overwrites its gradient, later ones accumulate. Parameter gradients
//! are overwritten by every backward. Graph inputs get no gradient, so the stem convolution
//! skips its input-gradient pass. Values and gradients share the arena's bytes wherever
//! their lifetimes do not overlap, so after a pass only the kept tensors' (graph inputs,
//! outputs, those marked with [`GraphBuilder::keep`]) are sure to be readable, and each
//! backward needs a forward of its own. Every kernel is bit-identical for any number of
//! threads, so the graph is too.

mod access;
mod builder;
mod dist;
mod liveness;
mod ops;
mod plan;
mod tensors;
mod train_fusion;

pub use builder::GraphBuilder;
pub use plan::GraphMemory;
pub use tensors::{BufferInfo, ParamInfo, ParamKind};

use crate::dist::{Collectives, Scratch, SingleProcess};
use crate::error::{Error, Result};
use crate::kernels::batchnorm::BnAffine;
use crate::optim::ParamGroup;
use dist::DistCtx;
use liveness::Fold;
use ops::{backward_node, conv, forward_node, Node, Op};
use tensors::TensorInfo;

/// A tensor of the graph (an activation), returned by the builder's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(usize);

/// Training (batch statistics in BatchNorm, running statistics updated) or evaluation
/// (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A built graph: its buffers, parameters and the per-step entry points.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    tensors: Vec<TensorInfo>,
    params: Vec<ParamInfo>,
    buffers: Vec<BufferInfo>,
    groups: Vec<ParamGroup>,
    /// The activations and their gradients, at the ranges of the liveness plan.
    arena: Vec<f32>,
    param: Vec<f32>,
    param_grad: Vec<f32>,
    buffer: Vec<f32>,
    /// Per node: its backward's scratch in the arena (see [`Node::backward_scratch`]).
    scratch: Vec<std::ops::Range<usize>>,
    /// Planned for evaluation forwards only ([`GraphBuilder::eval_only`]).
    eval_only: bool,
    /// Per tensor: whether its gradient has been written in the current backward.
    written: Vec<bool>,
    /// Per tensor: whether some node reads it.
    consumed: Vec<bool>,
    /// The mode and the number of nodes of the last forward, until a backward consumes it.
    forwarded: Option<(Mode, usize)>,
    /// The plan and the last step (see [`liveness`]) of the last pass that completed.
    pass_end: Option<(Mode, usize)>,
    /// Per node: a convolution whose output only feeds the BatchNorm right after it, which
    /// the evaluation forward folds into the convolution (see [`Graph::set_eval_fusion`]).
    fusable: Vec<Fold>,
    eval_fusion: bool,
    /// Per node: a BatchNorm without ReLU that a training pass fuses with the residual join
    /// right after it (see [`Graph::set_train_fusion`]).
    train_fusable: Vec<bool>,
    train_fusion: bool,
    /// Whether the last forward ran its mode's fusions (the pairs of `train_fusable` in
    /// training, the folds of `fusable` in evaluation).
    fused_pass: bool,
    /// Per node: accumulated forward and backward seconds, when profiling.
    profile: Option<Vec<(f64, f64)>>,
    fold_w: Vec<f32>,
    fold_scale: Vec<f32>,
    fold_shift: Vec<f32>,
    /// Whether a data-parallel training forward normalizes with the whole group's batch
    /// statistics (see [`Graph::set_sync_batchnorm`]).
    sync_bn: bool,
    /// Whether a data-parallel NT-Xent contrasts each rank's rows among themselves only
    /// (see [`Graph::set_local_negatives`]).
    local_negatives: bool,
    /// The reductions' buffers of data-parallel steps.
    dist: Scratch,
}

/// An error of the graph naming the node.
fn err(node: &str, msg: String) -> Error {
    Error::Graph {
        node: node.to_string(),
        msg,
    }
}

/// A kernel's error from a node, made an error of the graph naming the node.
fn wrap(node: &str, e: Error) -> Error {
    match e {
        Error::Graph { .. } => e,
        other => err(node, other.to_string()),
    }
}

impl Graph {
    /// Runs every node in order.
    ///
    /// # Errors
    /// A kernel error (non-finite input to a loss, for example), naming the node.
    pub fn forward(&mut self, mode: Mode) -> Result<()> {
        crate::kernels::on_pool(|| self.forward_nodes(mode, self.nodes.len(), &SingleProcess))
    }

    /// The forward of one rank of a data-parallel group (`comm`), each rank holding its
    /// own part of the batch. In training mode the loss nodes see the whole group's batch:
    /// NT-Xent and Quick Thoughts' in-batch loss take every rank's rows as candidates (each
    /// rank's anchors against all of them); every loss is the mean over the whole group's
    /// anchors (or rows), the same value on every rank; BatchNorm uses the group's
    /// statistics when [`Graph::set_sync_batchnorm`] is on. With a group of one this is
    /// [`Graph::forward`]. Every rank must call it at the same point.
    ///
    /// # Errors
    /// As [`Graph::forward`]; a failed collective; NT-Xent built with the `halves` layout
    /// (a data-parallel group needs the adjacent one).
    pub fn forward_with(&mut self, mode: Mode, comm: &dyn Collectives) -> Result<()> {
        self.forward_nodes(mode, self.nodes.len(), comm)
    }

    /// Whether a data-parallel training forward ([`Graph::forward_with`]) normalizes each
    /// BatchNorm with the statistics of the whole group's batch ("global BN", as SimCLR
    /// trains), instead of each rank's own (off by default). With it, `P` ranks of batch
    /// `B` compute what one process of batch `P B` does, up to rounding; it costs two small
    /// collectives per BatchNorm and step. No effect on a group of one.
    pub fn set_sync_batchnorm(&mut self, on: bool) {
        self.sync_bn = on;
    }

    /// Whether a data-parallel NT-Xent takes its negatives from each rank's own batch only
    /// (off by default: every rank's rows are candidates). The loss is still the mean over
    /// the whole group's anchors, but nothing is gathered: a step moves no z and no dz,
    /// and each rank's NT-Xent costs what it does alone, at the price of `2B - 2` negatives
    /// per anchor instead of `2PB - 2`. No effect on a group of one.
    pub fn set_local_negatives(&mut self, on: bool) {
        self.local_negatives = on;
    }

    /// Runs the nodes up to and including the one producing `t` (for example the
    /// representation `h`, without the head and the loss).
    ///
    /// # Errors
    /// As [`Graph::forward`].
    pub fn forward_to(&mut self, t: TensorId, mode: Mode) -> Result<()> {
        let last = self
            .nodes
            .iter()
            .position(|n| n.output == t)
            .expect("every tensor has a producer");
        crate::kernels::on_pool(|| self.forward_nodes(mode, last + 1, &SingleProcess))
    }

    /// Whether the evaluation forward folds each BatchNorm into the convolution before it
    /// (on by default): `w' = w * scale[c]` and the shift as the convolution's bias, with
    /// `scale` and `shift` from the running statistics, so eval BatchNorm costs no pass over
    /// the activations. The convolution's own output is then not written (only the
    /// BatchNorm's). Results differ from the unfused ones by rounding only.
    pub fn set_eval_fusion(&mut self, on: bool) {
        self.eval_fusion = on;
    }

    /// Whether training passes fuse each BatchNorm without ReLU with the residual join
    /// after it, `act(bn(x) + other)` (on by default; see `train_fusion.rs`): the forward
    /// normalizes and adds in one pass and never writes the BatchNorm's output, the backward
    /// writes the join's gradient and sums it for the BatchNorm's in one pass. The results
    /// are bit-identical to the unfused passes. Synchronized BatchNorm over several ranks
    /// is never fused.
    pub fn set_train_fusion(&mut self, on: bool) {
        self.train_fusion = on;
    }

    /// Starts (or, with `false`, stops and clears) accumulating the time each node spends
    /// in forward and backward; see [`Graph::profile`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0.0); self.nodes.len()]);
    }

    /// Per node: name, accumulated forward seconds, accumulated backward seconds (empty when
    /// profiling is off). A node folded into the one before it in eval mode has its time
    /// counted there. A BatchNorm fused with the residual join after it in training counts
    /// its statistics and `dx` passes, the join the fused passes.
    pub fn profile(&self) -> Vec<(&str, f64, f64)> {
        self.profile
            .as_ref()
            .map(|p| {
                self.nodes
                    .iter()
                    .zip(p)
                    .map(|(n, &(f, b))| (n.name.as_str(), f, b))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn forward_nodes(&mut self, mode: Mode, count: usize, comm: &dyn Collectives) -> Result<()> {
        if mode == Mode::Train && self.eval_only {
            return Err(err(
                "(graph)",
                "built for evaluation only: a training forward needs a graph built without \
                 eval_only"
                    .into(),
            ));
        }
        self.forwarded = None;
        self.pass_end = None;
        let fuse = mode == Mode::Train && self.train_fusing(comm);
        self.fused_pass = fuse || (mode == Mode::Eval && self.eval_fusion);
        let mut k = 0;
        while k < count {
            let t0 = self.profile.is_some().then(std::time::Instant::now);
            let fused_pair = k + 1 < count && self.train_fusable[k];
            let fused_join = k > 0 && self.train_fusable[k - 1];
            // A folded group runs whole or not at all: an evaluation forward that stops
            // inside it (at the BatchNorm) runs the BatchNorm on its own.
            let fold = match self.fusable[k] {
                Fold::BnJoin if k + 2 >= count => Fold::Bn,
                f => f,
            };
            // The nodes the step ran.
            let ran = if fuse && (fused_pair || fused_join) {
                self.forward_fused(k)
                    .map_err(|e| wrap(&self.nodes[k].name, e))?;
                1
            } else if mode == Mode::Eval && self.eval_fusion && fold != Fold::None && k + 1 < count
            {
                self.forward_conv_bn_eval(k, fold == Fold::BnJoin)
                    .map_err(|e| wrap(&self.nodes[k].name, e))?;
                1 + fold.extra()
            } else {
                let node = &mut self.nodes[k];
                forward_node(
                    node,
                    mode,
                    &self.tensors,
                    &mut self.arena,
                    &self.param,
                    &self.params,
                    &mut self.buffer,
                    &self.buffers,
                    &mut DistCtx::new(comm, &mut self.dist, self.sync_bn, self.local_negatives),
                )
                .map_err(|e| wrap(&node.name, e))?;
                1
            };
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                p[k].0 += t0.elapsed().as_secs_f64();
            }
            k += ran;
        }
        self.forwarded = Some((mode, count));
        self.pass_end = Some((mode, count - 1));
        Ok(())
    }

    /// Node `k` (a convolution) and node `k + 1` (BatchNorm in eval mode) as one convolution;
    /// with `join`, node `k + 2` (the residual join of the BatchNorm's output and another
    /// value) too, its other addend added in the convolution's store.
    fn forward_conv_bn_eval(&mut self, k: usize, join: bool) -> Result<()> {
        let (Op::Conv { g, w }, Op::BatchNorm(bn)) = (&self.nodes[k].op, &self.nodes[k + 1].op)
        else {
            unreachable!("fusable marks conv + batchnorm pairs only");
        };
        let p = |i: usize| &self.param[self.params[i].range.clone()];
        let b = |i: usize| &self.buffer[self.buffers[i].range.clone()];
        let affine = BnAffine {
            gamma: p(bn.gamma),
            beta: p(bn.beta),
        };
        let range = |t: TensorId| self.tensors[t.0].act_eval.clone();
        let x_r = range(self.nodes[k].inputs[0]);
        let (y_r, res) = if join {
            let j = &self.nodes[k + 2];
            let Op::Add { relu } = j.op else {
                unreachable!("a joined fold ends with a residual join");
            };
            let bn_out = self.nodes[k + 1].output;
            let other = *j
                .inputs
                .iter()
                .find(|&&t| t != bn_out)
                .expect("two addends");
            (range(j.output), Some((range(other), relu)))
        } else {
            (range(self.nodes[k + 1].output), None)
        };
        // The plan keeps the convolution's input (and the join's other addend, which may be
        // that same input) alive over the step of the last node of the group.
        let apart = "the plan keeps the buffers of one step apart";
        let (y, x, other): (&mut [f32], &[f32], &[f32]) = match &res {
            Some((r, _)) if *r != x_r => {
                let [y, x, o] = self
                    .arena
                    .get_disjoint_mut([y_r, x_r, r.clone()])
                    .expect(apart);
                (y, x, o)
            }
            _ => {
                let [y, x] = self.arena.get_disjoint_mut([y_r, x_r]).expect(apart);
                (y, x, x)
            }
        };
        let fold = conv::Fold {
            w: &mut self.fold_w,
            scale: &mut self.fold_scale,
            shift: &mut self.fold_shift,
        };
        let (m, v) = (b(bn.mean), b(bn.var));
        let (relu, res) = match res {
            Some((_, relu)) => (relu, Some(other)),
            None => (bn.relu, None),
        };
        conv::forward_bn_folded(g, x, p(*w), &bn.bn, affine, m, v, res, relu, fold, y)
    }

    /// Runs every node's backward in reverse order, from a full training forward. The loss
    /// node seeds the gradient (d loss / d loss = 1).
    ///
    /// # Errors
    /// When the last forward was not a full training forward, or a kernel error.
    pub fn backward(&mut self) -> Result<()> {
        crate::kernels::on_pool(|| self.backward_with(&SingleProcess))
    }

    /// The backward of [`Graph::forward_with`], with the same group: synchronized
    /// BatchNorm sums its gradient statistics over the group. Parameter gradients stay this
    /// rank's (the trainer sums them over the group before the optimizer step).
    ///
    /// # Errors
    /// As [`Graph::backward`]; a failed collective.
    pub fn backward_with(&mut self, comm: &dyn Collectives) -> Result<()> {
        if self.forwarded != Some((Mode::Train, self.nodes.len())) {
            return Err(err(
                "(graph)",
                "backward needs a full forward in training mode first".into(),
            ));
        }
        // The values the backward reads are overwritten as their lifetimes end, so another
        // backward needs another forward.
        self.forwarded = None;
        self.pass_end = None;
        self.written.fill(false);
        // Tensors nothing reads: a loss gets d loss / d loss = 1, anything else 0.
        for (t, info) in self.tensors.iter().enumerate() {
            if let (Some(r), false) = (info.grad.clone(), self.consumed[t]) {
                let is_loss = self
                    .nodes
                    .iter()
                    .any(|n| n.output.0 == t && n.op.loss64().is_some());
                self.arena[r].fill(if is_loss { 1.0 } else { 0.0 });
                self.written[t] = true;
            }
        }
        // The backward fuses what the forward fused.
        let fuse = self.fused_pass;
        for k in (0..self.nodes.len()).rev() {
            let t0 = self.profile.is_some().then(std::time::Instant::now);
            let fused = self.train_fusable[k] || (k > 0 && self.train_fusable[k - 1]);
            if fuse && fused {
                self.backward_fused(k)
                    .map_err(|e| wrap(&self.nodes[k].name, e))?;
            } else {
                let node = &mut self.nodes[k];
                backward_node(
                    node,
                    &self.tensors,
                    &mut self.arena,
                    &mut self.written,
                    self.scratch[k].clone(),
                    &self.param,
                    &mut self.param_grad,
                    &self.params,
                    &mut DistCtx::new(comm, &mut self.dist, self.sync_bn, self.local_negatives),
                )
                .map_err(|e| wrap(&node.name, e))?;
            }
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                p[k].1 += t0.elapsed().as_secs_f64();
            }
        }
        self.pass_end = Some((Mode::Train, 2 * self.nodes.len() - 1));
        Ok(())
    }
}
