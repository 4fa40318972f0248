//! The liveness plan of the graph's arena: over which steps of a pass each tensor's value
//! and gradient (and each node's scratch) must hold, and the offsets (greedy by size) that
//! let buffers whose lifetimes do not overlap share bytes.
//!
//! Steps of a training pass: of `n` nodes, the forward of node `k` is step `k` and its
//! backward step `2n - 1 - k`; the gradients of the tensors no node reads are set just
//! before step `n`. A value lives from its node's forward to its last reader: the forward
//! of a node taking it, the backward of such a node when that backward reads its inputs
//! (convolution, BatchNorm, max pooling, linear), the backward of its own node when that
//! reads its output (ReLU, the residual join with ReLU, linear with ReLU); the evaluation
//! forward that folds a BatchNorm into the convolution before it also reads the
//! convolution's input at the BatchNorm's step (at the residual join's, when the join after
//! the BatchNorm runs in the convolution's store too). A gradient lives from the backward of
//! the last node taking the tensor (the first backward to write it: earlier nodes'
//! backwards add to it, so no zeroing is needed) to its own node's backward, which reads
//! it. A node's scratch (an input gradient on its way to being added, a masked output
//! gradient) lives at its backward's step only.
//!
//! An evaluation forward has a plan of its own over the same arena, with the forward's
//! readers only: no value waits for a backward. A kept tensor (a graph input, one no node
//! reads, one marked with [`GraphBuilder::keep`](super::GraphBuilder::keep)) lives over
//! every step, so its value and gradient never share bytes and stay readable after any
//! pass; kept values come first in the arena, at the same offsets in both plans.

use std::ops::Range;

use super::ops::Node;
use super::{Mode, TensorId};

/// What the evaluation forward runs together with node `k`, a convolution: nothing, the
/// BatchNorm after it folded in, or that and the residual join after the BatchNorm (its
/// other addend read in the convolution's store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fold {
    None,
    Bn,
    BnJoin,
}

impl Fold {
    /// The nodes after the convolution that run inside it.
    pub(crate) fn extra(self) -> usize {
        match self {
            Fold::None => 0,
            Fold::Bn => 1,
            Fold::BnJoin => 2,
        }
    }
}

/// Offsets and lengths in the arena are multiples of this many `f32` (64 bytes, a cache
/// line and an AVX-512 register).
pub(crate) const ALIGN: usize = 16;

pub(crate) use super::tensors::Lifetime;

/// The graph's tensors as the plan sees them, indexed like the graph's: length, whether
/// each has a gradient, whether each is kept.
pub(crate) struct Tensors<'a> {
    pub(crate) lens: &'a [usize],
    pub(crate) has_grad: &'a [bool],
    pub(crate) kept: &'a [bool],
}

/// Where the buffers of one kind of pass lie in the arena.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Per tensor: its value's range and lifetime.
    pub(crate) value: Vec<Range<usize>>,
    pub(crate) life: Vec<Lifetime>,
    /// Per tensor: its gradient's range (in evaluation only a kept tensor's, reserved).
    pub(crate) grad: Vec<Option<Range<usize>>>,
    /// Per node: its backward's scratch (training; empty in evaluation).
    pub(crate) scratch: Vec<Range<usize>>,
    /// The arena's length.
    pub(crate) len: usize,
}

/// The plan of the passes of `mode` over `nodes` (in execution order, every tensor the
/// output of exactly one of them; `folded[k]` what the evaluation forward runs together
/// with node `k`): kept values first, in tensor order, then kept gradients, then every
/// other buffer placed by [`place`].
pub(crate) fn plan(nodes: &[Node], tensors: &Tensors<'_>, folded: &[Fold], mode: Mode) -> Plan {
    let n = nodes.len();
    let train = mode == Mode::Train;
    let backward = |k: usize| 2 * n - 1 - k;
    let whole = Lifetime {
        first: 0,
        last: if train { 2 * n - 1 } else { n - 1 },
    };
    let count = tensors.lens.len();
    let mut life = vec![whole; count];
    let mut producer = vec![0usize; count];
    // The last node taking each tensor, whose backward writes its gradient first.
    let mut last_reader: Vec<Option<usize>> = vec![None; count];
    for (k, node) in nodes.iter().enumerate() {
        let out = node.output.0;
        producer[out] = k;
        life[out] = Lifetime { first: k, last: k };
        let (reads_inputs, reads_output) = node.op.backward_reads();
        for t in &node.inputs {
            let v = &mut life[t.0];
            v.extend_to(k);
            if reads_inputs && train {
                v.extend_to(backward(k));
            }
            v.extend_to(k + folded[k].extra());
            last_reader[t.0] = Some(k);
        }
        if reads_output && train {
            life[out].extend_to(backward(k));
        }
    }
    let kept = |t: usize| tensors.kept[t];
    for t in (0..count).filter(|&t| kept(t)) {
        life[t] = whole;
    }
    let grad_life = |t: usize| {
        (train && tensors.has_grad[t]).then(|| Lifetime {
            first: last_reader[t].map_or(n, backward),
            last: backward(producer[t]),
        })
    };
    let scratch_len = |k: usize| {
        let written = |t: TensorId| last_reader[t.0].is_some_and(|r| r > k);
        let (len, has_grad) = (
            |t: TensorId| tensors.lens[t.0],
            |t: TensorId| tensors.has_grad[t.0],
        );
        if train {
            nodes[k].backward_scratch(&len, &has_grad, &written)
        } else {
            0
        }
    };
    // Kept buffers, one after the other.
    let mut at = 0usize;
    let mut next = |len: usize| {
        let r = at..at + len;
        at += aligned(len);
        r
    };
    let mut value: Vec<Range<usize>> = (0..count)
        .map(|t| if kept(t) { next(tensors.lens[t]) } else { 0..0 })
        .collect();
    // Kept gradients are placed in both plans, so that an evaluation pass leaves the last
    // backward's alone.
    let mut grad: Vec<Option<Range<usize>>> = (0..count)
        .map(|t| (kept(t) && tensors.has_grad[t]).then(|| next(tensors.lens[t])))
        .collect();
    let shared_from = at;
    // The others, sharing: (length, lifetime, where the range goes).
    enum Slot {
        Value(usize),
        Grad(usize),
        Scratch(usize),
    }
    let mut items: Vec<(usize, Lifetime, Slot)> = Vec::new();
    for t in (0..count).filter(|&t| !kept(t)) {
        items.push((tensors.lens[t], life[t], Slot::Value(t)));
        if let Some(l) = grad_life(t) {
            items.push((tensors.lens[t], l, Slot::Grad(t)));
        }
    }
    for k in 0..n {
        let len = scratch_len(k);
        if len > 0 {
            let step = Lifetime {
                first: backward(k),
                last: backward(k),
            };
            items.push((len, step, Slot::Scratch(k)));
        }
    }
    let spans: Vec<(usize, Lifetime)> = items.iter().map(|(len, l, _)| (*len, *l)).collect();
    let (offsets, shared_len) = place(&spans);
    let mut scratch = vec![0..0; n];
    for ((len, _, slot), off) in items.iter().zip(offsets) {
        let r = shared_from + off..shared_from + off + len;
        match *slot {
            Slot::Value(t) => value[t] = r,
            Slot::Grad(t) => grad[t] = Some(r),
            Slot::Scratch(k) => scratch[k] = r,
        }
    }
    Plan {
        value,
        life,
        grad,
        scratch,
        len: shared_from + shared_len,
    }
}

/// `len` rounded up to a multiple of [`ALIGN`].
pub(crate) fn aligned(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

/// Offsets for `items` (length, lifetime) such that two items whose lifetimes overlap never
/// share an element: the largest first (ties by first step, then by index), each at the
/// lowest multiple of [`ALIGN`] clear of the items already placed whose lifetimes overlap
/// its own. Returns the offsets, in the order of `items`, and the arena's length.
pub(crate) fn place(items: &[(usize, Lifetime)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(items[i].0), items[i].1.first, i));
    let mut offset = vec![0usize; items.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(items.len());
    let mut busy: Vec<(usize, usize)> = Vec::with_capacity(items.len());
    let mut total = 0usize;
    for i in order {
        let (len, life) = items[i];
        busy.clear();
        busy.extend(
            placed
                .iter()
                .filter(|&&j| items[j].1.overlaps(life))
                .map(|&j| (offset[j], offset[j] + aligned(items[j].0))),
        );
        busy.sort_unstable();
        let mut at = 0usize;
        for &(start, end) in &busy {
            if start >= at + aligned(len) {
                break;
            }
            at = at.max(end);
        }
        offset[i] = at;
        total = total.max(at + aligned(len));
        placed.push(i);
    }
    (offset, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::Op;
    use crate::graph::{Graph, GraphBuilder};
    use crate::nn::{encoder_classifier, simclr, ResNetConfig};
    use std::ops::Range;

    fn life(first: usize, last: usize) -> Lifetime {
        Lifetime { first, last }
    }

    #[test]
    fn placement_shares_only_between_disjoint_lifetimes() {
        // a and c overlap nothing of each other; b overlaps both.
        let items = [
            (40, life(0, 2)),
            (20, life(2, 5)),
            (40, life(3, 6)),
            (8, life(7, 7)),
        ];
        let (off, total) = place(&items);
        for i in 0..items.len() {
            for j in 0..i {
                let (ri, rj) = (off[i]..off[i] + items[i].0, off[j]..off[j] + items[j].0);
                let share = ri.start < rj.end && rj.start < ri.end;
                assert!(!(share && items[i].1.overlaps(items[j].1)), "{i} and {j}");
            }
            assert_eq!(off[i] % ALIGN, 0);
        }
        // a and c share, d fits under either: 48 (a or c) + 32 (b, aligned).
        assert_eq!(total, 48 + 32);
    }

    /// One buffer of the arena (a value or a gradient) and the steps at which a pass
    /// writes and reads it.
    struct Buffer {
        what: String,
        range: Range<usize>,
        writes: Vec<usize>,
        reads: Vec<usize>,
        kept: bool,
    }

    /// Replays a pass of `mode` (a training forward and backward with the training fusion,
    /// or an evaluation forward with its folding) over the node list, recording at which
    /// step each value, gradient and scratch is written and read, from what the node
    /// families' forward and backward (ops/*.rs, train_fusion.rs) take: independent of
    /// `plan`. A buffer the pass never touches is left out.
    fn replay(g: &Graph, mode: Mode) -> Vec<Buffer> {
        let n = g.nodes.len();
        let back = |k: usize| 2 * n - 1 - k;
        let buffer = |what: String, range: Range<usize>, kept: bool| Buffer {
            what,
            range,
            writes: vec![],
            reads: vec![],
            kept,
        };
        let mut value: Vec<Buffer> = g
            .tensors
            .iter()
            .map(|t| buffer(format!("value of {}", t.name), t.value(mode), t.kept))
            .collect();
        let mut grad: Vec<Option<Buffer>> = g
            .tensors
            .iter()
            .map(|t| {
                let r = t.grad.clone().filter(|_| mode == Mode::Train);
                r.map(|r| buffer(format!("gradient of {}", t.name), r, t.kept))
            })
            .collect();
        let mut scratch = Vec::new();
        let mut read_by_some = vec![false; g.tensors.len()];
        // A training BatchNorm fused with the join after it: its output is never written
        // nor read, nor its gradient.
        let train = mode == Mode::Train;
        let skipped = |k: usize| train && g.train_fusable[k];
        let joined = |k: usize| train && k > 0 && g.train_fusable[k - 1];
        for (k, node) in g.nodes.iter().enumerate() {
            if !skipped(k) {
                value[node.output.0].writes.push(k);
            }
            for t in &node.inputs {
                if !joined(k) || *t != g.nodes[k - 1].output {
                    value[t.0].reads.push(k);
                }
                read_by_some[t.0] = true;
            }
            // The fused join reads the BatchNorm's input.
            if joined(k) {
                value[g.nodes[k - 1].inputs[0].0].reads.push(k);
            }
            // The evaluation forward of a folded pair reads the convolution's input while
            // writing the BatchNorm's output (or, joined, the residual join's).
            let extra = g.fusable[k].extra();
            if extra > 0 {
                value[node.inputs[0].0].reads.push(k + extra);
            }
        }
        if mode == Mode::Eval {
            return value;
        }
        // The backward: the gradients of the tensors nothing reads are set first.
        for (t, r) in read_by_some.iter().enumerate() {
            if let (false, Some(b)) = (r, grad[t].as_mut()) {
                b.writes.push(n);
            }
        }
        for (k, node) in g.nodes.iter().enumerate().rev() {
            let s = back(k);
            if matches!(node.op, Op::Input) {
                continue;
            }
            if let Some(b) = grad[node.output.0].as_mut() {
                if !skipped(k) {
                    b.reads.push(s);
                }
            }
            // The fused join's backward reads the BatchNorm's input and writes the other
            // addend's gradient only; the BatchNorm's reads that gradient back.
            if joined(k) {
                value[g.nodes[k - 1].inputs[0].0].reads.push(s);
            }
            if skipped(k) {
                let join = &g.nodes[k + 1];
                let other = join.inputs.iter().find(|&&t| t != node.output).unwrap();
                grad[other.0].as_mut().unwrap().reads.push(s);
            }
            let reads_x = matches!(
                &node.op,
                Op::Conv { .. } | Op::BatchNorm(_) | Op::GlobalMaxPool { .. } | Op::Linear(_)
            );
            let reads_y = match &node.op {
                Op::Relu => true,
                Op::Add { relu } => *relu,
                Op::Linear(l) => l.relu,
                _ => false,
            };
            for t in &node.inputs {
                if reads_x {
                    value[t.0].reads.push(s);
                }
                if joined(k) && *t == g.nodes[k - 1].output {
                    continue;
                }
                if let Some(b) = grad[t.0].as_mut() {
                    // Overwritten by the first, added to by later ones.
                    if !b.writes.is_empty() {
                        b.reads.push(s);
                    }
                    b.writes.push(s);
                }
            }
            if reads_y {
                value[node.output.0].reads.push(s);
            }
            let mut b = buffer(
                format!("scratch of {}", node.name),
                g.scratch[k].clone(),
                false,
            );
            (b.writes, b.reads) = (vec![s], vec![s]);
            scratch.push(b);
        }
        value.extend(grad.into_iter().flatten());
        value.extend(scratch);
        value.retain(|b| !b.writes.is_empty() || !b.reads.is_empty());
        value
    }

    /// In both plans no two buffers whose bytes meet are both live at one step (from a
    /// buffer's first write to its last read), a kept buffer's bytes meet no other's, and a
    /// kept value lies at the same range.
    fn assert_sound(g: &Graph) {
        for t in g.tensors.iter().filter(|t| t.kept) {
            assert_eq!(t.act, t.act_eval, "{}", t.name);
        }
        for mode in [Mode::Train, Mode::Eval] {
            let buffers = replay(g, mode);
            let span = |b: &Buffer| {
                let first = *b.writes.iter().min().expect("every buffer is written");
                let last = b.reads.iter().copied().max().unwrap_or(first).max(first);
                (first, last)
            };
            for (i, a) in buffers
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.range.is_empty())
            {
                // A read before the first write of the pass would see another pass's bytes.
                let (first, _) = span(a);
                assert!(
                    a.kept || a.reads.iter().all(|&r| r >= first),
                    "{} read before written",
                    a.what
                );
                for b in &buffers[..i] {
                    if a.range.start < b.range.end && b.range.start < a.range.end {
                        assert!(!a.kept && !b.kept, "{} and {} share bytes", a.what, b.what);
                        let ((fa, la), (fb, lb)) = (span(a), span(b));
                        assert!(
                            la < fb || lb < fa,
                            "{mode:?}: {} (steps {fa}..={la}) and {} (steps {fb}..={lb}) \
                             share bytes",
                            a.what,
                            b.what
                        );
                    }
                }
            }
        }
    }

    fn tiny() -> ResNetConfig {
        ResNetConfig {
            in_channels: 2,
            image_size: 8,
            widths: vec![4, 6],
            blocks: vec![1, 2],
            head_hidden: 8,
            head_out: 5,
        }
    }

    #[test]
    fn no_two_live_buffers_share_bytes() {
        let g = simclr(&tiny(), 3, 0.5, 1).unwrap().graph;
        // Each residual block's last BatchNorm is fused with its join in training.
        let fused: Vec<&str> = (0..g.nodes.len())
            .filter(|&k| g.train_fusable[k])
            .map(|k| g.nodes[k].name.as_str())
            .collect();
        assert_eq!(fused.len(), 3, "{fused:?}");
        assert_sound(&g);
        assert_sound(
            &encoder_classifier(&ResNetConfig::default(), 4, 4, 1)
                .unwrap()
                .graph,
        );
        // ReLU and linear with ReLU (backwards reading outputs), max pooling, a tensor
        // on both sides of a loss, an embedding, a tensor read by three nodes.
        let mut b = GraphBuilder::new();
        let e = b.embedding("emb", 4, 6, 9, 5, Some(0)).unwrap();
        let c = b.conv2d_rect("conv", e, 8, (1, 3), (1, 1), (0, 1)).unwrap();
        let r = b.relu("relu", c).unwrap();
        let a = b.add("add", r, c, true).unwrap();
        let a2 = b.add("add2", a, c, false).unwrap();
        let h = b.global_max_pool("max", a2).unwrap();
        let f = b.linear("f", h, 6, true, true).unwrap();
        let f = b.linear("f2", f, 6, false, false).unwrap();
        b.qt_pairwise("qt", f, f).unwrap();
        assert_sound(&b.build(2).unwrap());
    }

    #[test]
    fn the_plan_of_a_resnet_is_smaller_than_its_tensors() {
        let g = simclr(&ResNetConfig::default(), 8, 0.5, 1).unwrap().graph;
        assert_sound(&g);
        let (planned, unshared) = (g.activation_bytes(), g.unshared_activation_bytes());
        // The values the backward reads (about two fifths of all values and gradients) and
        // a few gradients at a time.
        assert!(
            planned * 2 < unshared,
            "planned {planned} bytes of {unshared}"
        );
        // An evaluation forward of an encoder holds a few maps at a time, not all of them.
        let mut b = GraphBuilder::new();
        crate::nn::resnet_encoder(&mut b, &ResNetConfig::default(), 16).unwrap();
        let g = b.build(1).unwrap();
        assert_sound(&g);
        let values: usize = g.tensors.iter().map(|t| t.act.len()).sum();
        let eval_end = g.tensors.iter().map(|t| t.act_eval.end).max().unwrap();
        assert!(eval_end * 3 < values, "{eval_end} of {values}");
        // Keeping everything shares nothing.
        let mut b = GraphBuilder::new();
        let enc = crate::nn::resnet_encoder(&mut b, &ResNetConfig::default(), 16).unwrap();
        crate::nn::projection_head(&mut b, enc.h, 128, 64).unwrap();
        b.keep_all();
        let g = b.build(1).unwrap();
        assert_sound(&g);
        assert!(g.activation_bytes() >= g.unshared_activation_bytes());
    }
}
