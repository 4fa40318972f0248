//! A built graph's data: its arenas (parameters, their gradients, the buffers), each
//! tensor's shape, value and gradient, what a step feeds in (inputs, token ids, labels,
//! Quick Thoughts targets and triplets, checked as they are set) and what it reads out
//! (losses, accuracies).

use super::liveness::Fold;
use super::ops::{Node, Op};
use super::{err, BufferInfo, Graph, Mode, ParamInfo, TensorId};
use crate::error::Result;
use crate::optim::ParamGroup;

impl Graph {
    /// The parameter arena.
    pub fn params(&self) -> &[f32] {
        &self.param
    }
    /// The parameter arena, mutable (for the optimizer and checkpoint loading).
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.param
    }
    /// The parameter gradient arena, filled by [`Graph::backward`].
    pub fn param_grads(&self) -> &[f32] {
        &self.param_grad
    }
    /// The parameter gradients, writable (a data-parallel step sums them over its group).
    pub fn param_grads_mut(&mut self) -> &mut [f32] {
        &mut self.param_grad
    }
    /// Parameters and gradients together, for an optimizer step.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &[f32], &[ParamGroup]) {
        (&mut self.param, &self.param_grad, &self.groups)
    }
    /// One entry per parameter tensor: name, range, and whether decay / adaptation apply.
    pub fn param_groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    /// The parameter tensors, in arena order.
    pub fn param_info(&self) -> &[ParamInfo] {
        &self.params
    }
    /// The non-trained buffers (BatchNorm running statistics), in arena order.
    pub fn buffer_info(&self) -> &[BufferInfo] {
        &self.buffers
    }
    /// The buffer arena.
    pub fn buffers(&self) -> &[f32] {
        &self.buffer
    }
    /// The buffer arena, mutable (checkpoint loading).
    pub fn buffers_mut(&mut self) -> &mut [f32] {
        &mut self.buffer
    }
    /// Bytes held by the graph's arenas.
    pub fn arena_bytes(&self) -> usize {
        4 * (self.arena.len() + self.param.len() + self.param_grad.len() + self.buffer.len())
    }

    /// Bytes the activations and their gradients would take without sharing (each value and
    /// gradient in bytes of its own), against which the planned arena's
    /// ([`Graph::activation_bytes`]) compares.
    pub fn unshared_activation_bytes(&self) -> usize {
        4 * self
            .tensors
            .iter()
            .map(|t| t.act.len() + t.grad.as_ref().map_or(0, |g| g.len()))
            .sum::<usize>()
    }

    /// Bytes of the arena of the activations and their gradients, as planned.
    pub fn activation_bytes(&self) -> usize {
        4 * self.arena.len()
    }

    /// The shape of a tensor.
    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.tensors[t.0].shape
    }

    /// Whether the value of `t` is readable now: always for a kept tensor (a graph input,
    /// an output, one marked with [`GraphBuilder::keep`](super::GraphBuilder::keep)), else
    /// while its lifetime lasts at the end of the last pass (after a forward that produced
    /// it and whose last node still needed it, for example a [`Graph::forward_to`] it).
    pub fn is_readable(&self, t: TensorId) -> bool {
        let info = &self.tensors[t.0];
        info.kept
            || self.pass_end.is_some_and(|(mode, s)| {
                info.life(mode).contains(s) && !self.fused_away(t, mode, s)
            })
    }

    /// Whether the value of `t` was left unwritten by the last pass (of `mode`, ended at
    /// step `s`, past `t`'s node) because its fusions ran: in training the output of a
    /// BatchNorm fused with its join; in evaluation the output of a folded convolution, and
    /// the BatchNorm's when the residual join ran in the convolution too.
    fn fused_away(&self, t: TensorId, mode: Mode, s: usize) -> bool {
        let Some(k) = self.nodes.iter().position(|n| n.output == t) else {
            return false;
        };
        let skipped = match mode {
            Mode::Train => self.train_fusable[k],
            Mode::Eval => {
                self.fusable[k] != Fold::None || (k > 0 && self.fusable[k - 1] == Fold::BnJoin)
            }
        };
        self.fused_pass && skipped && s > k
    }

    /// The value of a tensor after the last forward.
    ///
    /// # Panics
    /// When it is not readable ([`Graph::is_readable`]): its bytes may hold another tensor's
    /// by now. Mark it with [`GraphBuilder::keep`](super::GraphBuilder::keep).
    pub fn value(&self, t: TensorId) -> &[f32] {
        let info = &self.tensors[t.0];
        assert!(
            self.is_readable(t),
            "tensor '{}' is not readable after this pass (its bytes are shared): mark it \
             with GraphBuilder::keep",
            info.name
        );
        // A kept tensor's range is the same in both plans.
        let mode = self.pass_end.map_or(Mode::Train, |(mode, _)| mode);
        &self.arena[info.value(mode)]
    }

    /// The gradient of a tensor after the last backward (`None` for graph inputs).
    ///
    /// # Panics
    /// When the tensor is not kept: its gradient's bytes may hold another tensor's by now.
    /// Mark it with [`GraphBuilder::keep`](super::GraphBuilder::keep).
    pub fn grad(&self, t: TensorId) -> Option<&[f32]> {
        let info = &self.tensors[t.0];
        let r = info.grad.clone()?;
        assert!(
            info.kept,
            "the gradient of tensor '{}' is not kept (its bytes are shared): mark it with \
             GraphBuilder::keep",
            info.name
        );
        Some(&self.arena[r])
    }
    /// The buffer of a graph input, to fill before [`Graph::forward`].
    ///
    /// # Errors
    /// When `t` is not an input.
    pub fn input_mut(&mut self, t: TensorId) -> Result<&mut [f32]> {
        let node = self.producer(t);
        if !matches!(node.op, Op::Input) {
            return Err(err(&node.name, "is not a graph input".into()));
        }
        Ok(&mut self.arena[self.tensors[t.0].act.clone()])
    }
    /// Sets the `(anchor, candidate)` target pairs of a Quick Thoughts node (given by its
    /// output tensor); they are checked by the next forward (indices in range, no repeats,
    /// none the anchor's own sentence, at least one). In a data-parallel training forward
    /// ([`Graph::forward_with`] over `P` ranks) the candidates are every rank's rows in
    /// gather order: rank `q`'s candidate `k` is `q m + k` (`m` candidates per rank), so a
    /// target may be a sentence another rank holds; with one rank this is the usual
    /// numbering.
    ///
    /// # Errors
    /// When `t` is not such a node's output.
    pub fn set_targets(&mut self, t: TensorId, pairs: &[(u32, u32)]) -> Result<()> {
        let node = self.producer_mut(t);
        match &mut node.op {
            Op::QtInBatch(q) => {
                q.targets.clear();
                q.targets.extend_from_slice(pairs);
                Ok(())
            }
            _ => Err(err(&node.name, "is not a Quick Thoughts node".into())),
        }
    }

    /// Sets the `(anchor, pos, neg)` triplets of a Quick Thoughts pairwise node (given by its
    /// output tensor): anchors index rows of its `a`, positives and negatives rows of its
    /// `b`. Stored without allocating unless there are more than ever before.
    ///
    /// # Errors
    /// When `t` is not such a node's output, `triplets` is empty, or an index is out of
    /// range (naming the first bad triplet); the node's triplets are then unchanged.
    pub fn set_triplets(&mut self, t: TensorId, triplets: &[(u32, u32, u32)]) -> Result<()> {
        let node = self.producer_mut(t);
        match &mut node.op {
            Op::QtPairwise(q) => {
                check_triplets(&node.name, triplets, q.n_a, q.n_b)?;
                q.triplets.clear();
                q.triplets.extend_from_slice(triplets);
                Ok(())
            }
            _ => Err(err(
                &node.name,
                "is not a Quick Thoughts pairwise node".into(),
            )),
        }
    }

    /// Sets the `N x L` token ids of an embedding node (given by its output tensor).
    ///
    /// # Errors
    /// When `t` is not an embedding's output, the length is not `N * L`, or an id is not
    /// below the vocabulary size.
    pub fn set_tokens(&mut self, t: TensorId, tokens: &[u32]) -> Result<()> {
        let node = self.producer_mut(t);
        match &mut node.op {
            Op::Embedding(e) => {
                check_ids(&node.name, "token id", tokens, e.g.n * e.g.len, e.g.vocab)?;
                e.ids.copy_from_slice(tokens);
                Ok(())
            }
            _ => Err(err(&node.name, "is not an embedding node".into())),
        }
    }

    /// Sets the labels of a softmax cross-entropy node (given by its output tensor).
    ///
    /// # Errors
    /// When `t` is not such a node's output, the length differs from its batch, or a label
    /// is out of range.
    pub fn set_labels(&mut self, t: TensorId, labels: &[u32]) -> Result<()> {
        let node = self.producer_mut(t);
        match &mut node.op {
            Op::SoftmaxCe(s) => {
                check_ids(&node.name, "label", labels, s.n, s.c)?;
                s.labels.copy_from_slice(labels);
                Ok(())
            }
            _ => Err(err(
                &node.name,
                "is not a softmax cross-entropy node".into(),
            )),
        }
    }
    /// The scalar a loss node computed in the last forward.
    pub fn loss(&self, t: TensorId) -> f32 {
        self.value(t)[0]
    }
    /// The loss of a loss node before rounding to `f32` (the kernels sum it in `f64`), for
    /// finite-difference checks; the value of any other scalar tensor.
    pub fn loss_f64(&self, t: TensorId) -> f64 {
        self.nodes
            .iter()
            .find(|n| n.output == t)
            .and_then(|n| n.op.loss64())
            .unwrap_or_else(|| f64::from(self.value(t)[0]))
    }
    /// Contrastive top-1 accuracy of an NT-Xent node, the target accuracy of a Quick
    /// Thoughts in-batch node, the share of triplets ranked right (positive above negative)
    /// of a Quick Thoughts pairwise node, or the top-1 accuracy of a softmax cross-entropy
    /// node, from the last forward.
    pub fn accuracy(&self, t: TensorId) -> Option<f32> {
        let node = self.nodes.iter().find(|n| n.output == t)?;
        match &node.op {
            Op::NtXent(z) => z.out.map(|o| o.accuracy),
            Op::QtInBatch(q) => q.stats.map(|s| s.accuracy() as f32),
            Op::QtPairwise(q) => q.hits.map(|(h, t)| (h as f64 / t as f64) as f32),
            Op::SoftmaxCe(s) => Some(s.correct as f32 / s.total as f32),
            _ => None,
        }
    }

    fn producer(&self, t: TensorId) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.output == t)
            .expect("every tensor has a producer")
    }

    fn producer_mut(&mut self, t: TensorId) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.output == t)
            .expect("every tensor has a producer")
    }
}

/// `Ok` when `ids` holds `count` values, each below `bound`; else an error naming the node
/// and the first bad value (`what` names the values: "label", "token id").
fn check_ids(node: &str, what: &str, ids: &[u32], count: usize, bound: usize) -> Result<()> {
    if ids.len() != count {
        return Err(err(
            node,
            format!("{} {what}s where {count} are needed", ids.len()),
        ));
    }
    if let Some((i, &v)) = ids.iter().enumerate().find(|&(_, &v)| v as usize >= bound) {
        return Err(err(
            node,
            format!("{what} {v} at position {i} is not below {bound}"),
        ));
    }
    Ok(())
}

/// `Ok` when `triplets` is non-empty and every `(anchor, pos, neg)` indexes one of `n_a`
/// anchors and two of `n_b` candidates; else an error naming the node and the first bad one.
fn check_triplets(node: &str, triplets: &[(u32, u32, u32)], n_a: usize, n_b: usize) -> Result<()> {
    if triplets.is_empty() {
        return Err(err(node, "no triplets".into()));
    }
    if let Some((k, &(i, p, q))) = triplets
        .iter()
        .enumerate()
        .find(|&(_, &(i, p, q))| i as usize >= n_a || p as usize >= n_b || q as usize >= n_b)
    {
        return Err(err(
            node,
            format!(
                "triplet {k} = ({i}, {p}, {q}) is out of range for {n_a} anchors and {n_b} \
                 candidates"
            ),
        ));
    }
    Ok(())
}
