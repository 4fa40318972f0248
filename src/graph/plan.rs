//! The buffer plan of a built graph and its initial parameters: one flat arena for the
//! activations and their gradients, where tensors whose lifetimes do not overlap share bytes
//! (the liveness plans of [`super::liveness`], one for training passes and one for
//! evaluation forwards), and one each for the parameters, the
//! parameter gradients and the non-trained buffers (BatchNorm running statistics), each
//! tensor's range beside its name and shape; the convolutions the evaluation forward folds a
//! BatchNorm (and the residual join after it) into, and the BatchNorms a training pass fuses
//! with the residual join after them; parameters initialized from a seed as PyTorch does
//! (Kaiming-uniform convolution and linear weights, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` from PyTorch's
//! default `a = sqrt(5)`, linear biases from the same range, BatchNorm `gamma = 1`,
//! `beta = 0`, running mean 0 and variance 1, embeddings N(0, 1)).

use super::builder::GraphBuilder;
use super::liveness::{plan, Fold, Plan, Tensors, ALIGN};
use super::ops::Op;
use super::tensors::{BufferInfo, ParamInfo, ParamKind, TensorInfo};
use super::{err, Graph, Mode};
use crate::dist::Scratch;
use crate::error::Result;
use crate::optim::ParamGroup;
use crate::rng::SplitMix64;

/// Where everything of a graph goes, before any arena is allocated: the parameters' and
/// buffers' ranges, the liveness plans of both passes and the lengths of the arenas.
struct Layout {
    params: Vec<ParamInfo>,
    p_len: usize,
    buffers: Vec<BufferInfo>,
    b_len: usize,
    consumed: Vec<bool>,
    fusable: Vec<Fold>,
    train_fusable: Vec<bool>,
    kept: Vec<bool>,
    fold_w: usize,
    fold_c: usize,
    /// The training plan (none for a graph built with [`GraphBuilder::eval_only`]).
    train: Option<Plan>,
    eval: Plan,
    arena_len: usize,
}

/// The bytes a graph's arenas and buffers take, from its plan (what
/// [`GraphBuilder::build`] allocates, and what its passes leave in the kernels'
/// per-thread scratch), each saturating at `u64::MAX` rather than overflowing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphMemory {
    /// The arena of the activations, their gradients and the backwards' scratch (the
    /// larger of the training and the evaluation plan): grows with the batch and, for
    /// images, with the pixels of an image.
    pub activations: u64,
    /// The parameters (and as much again for their gradients).
    pub params: u64,
    /// The non-trained buffers (BatchNorm running statistics), the evaluation's folded
    /// convolution weights and the nodes' own buffers (a loss's saved gradient, token ids,
    /// labels).
    pub buffers: u64,
    /// The per-thread scratch the kernels grow to over a training step and an evaluation
    /// forward (an estimate from their blocking: see [`crate::kernels::conv::scratch_bytes`]).
    pub workspace: u64,
    /// The number of parameters (an optimizer keeps one or two values per parameter).
    pub param_count: u64,
}

impl GraphMemory {
    /// Everything the graph holds: activations, parameters and their gradients, buffers
    /// and workspace.
    pub fn total(&self) -> u64 {
        self.activations
            .saturating_add(self.params.saturating_mul(2))
            .saturating_add(self.buffers)
            .saturating_add(self.workspace)
    }
}

/// `floats` as bytes, saturating.
fn bytes(floats: usize) -> u64 {
    (floats as u64).saturating_mul(4)
}

/// Everything the liveness plan can place, in `f32`s, if that fits in `usize`: each
/// tensor's value and gradient apart, and each node's scratch as large as the largest
/// tensor. The plan's offsets never pass it, so when it fits, none of them overflows.
fn unshared_bound(lens: &[usize], nodes: usize) -> Option<usize> {
    let aligned = |l: usize| l.div_ceil(ALIGN).checked_mul(ALIGN);
    let largest = aligned(lens.iter().copied().max().unwrap_or(0))?;
    let all = lens
        .iter()
        .try_fold(0usize, |a, &l| a.checked_add(aligned(l)?.checked_mul(2)?))?;
    all.checked_add(largest.checked_mul(nodes)?)?
        .checked_mul(4)
        .map(|b| b / 4)
}

impl GraphBuilder {
    /// The bytes the graph will take once built ([`GraphBuilder::build`]), from its plan,
    /// without allocating any arena; the workspace for `threads` threads.
    pub fn memory(&self, threads: usize) -> GraphMemory {
        let (activations, p_len, b_len, fold) = match self.layout() {
            Ok(l) => (
                bytes(l.arena_len),
                l.p_len,
                l.b_len,
                l.fold_w.saturating_add(l.fold_c.saturating_mul(2)),
            ),
            // Sizes that do not fit in the address space.
            Err(_) => {
                let sum = |it: &mut dyn Iterator<Item = usize>| {
                    it.fold(0usize, |a, l| a.saturating_add(l))
                };
                let p = sum(&mut self.params.iter().map(|p| p.1.iter().product()));
                let b = sum(&mut self.buffers.iter().map(|b| b.1.iter().product()));
                (u64::MAX, p, b, 0)
            }
        };
        let lens: Vec<usize> = self.tensors.iter().map(|t| t.1.iter().product()).collect();
        let held = self
            .nodes
            .iter()
            .fold(0u64, |a, n| a.saturating_add(n.held_bytes(&|t| lens[t.0])));
        let workspace = self
            .nodes
            .iter()
            .map(|n| n.op.workspace_bytes(threads))
            .max()
            .unwrap_or(0)
            .saturating_add(crate::kernels::gemm::pack_bytes(threads));
        GraphMemory {
            activations,
            params: bytes(p_len),
            buffers: bytes(b_len)
                .saturating_add(bytes(fold))
                .saturating_add(held),
            workspace: workspace as u64,
            param_count: p_len as u64,
        }
    }

    /// The plan of every buffer.
    ///
    /// # Errors
    /// A graph without nodes, or buffers too large to be addressed.
    fn layout(&self) -> Result<Layout> {
        if self.nodes.is_empty() {
            return Err(err("(graph)", "no nodes".into()));
        }
        let too_large = || {
            err(
                "(graph)",
                "its buffers are too large to be addressed".into(),
            )
        };
        let mut p_len = 0usize;
        let mut params = Vec::with_capacity(self.params.len());
        for (name, shape, kind, fan_in) in &self.params {
            let len: usize = shape.iter().product();
            let end = p_len.checked_add(len).ok_or_else(too_large)?;
            params.push(ParamInfo {
                name: name.clone(),
                shape: shape.clone(),
                kind: *kind,
                range: p_len..end,
                fan_in: *fan_in,
            });
            p_len = end;
        }
        let mut b_len = 0usize;
        let mut buffers = Vec::with_capacity(self.buffers.len());
        for (name, shape, init) in &self.buffers {
            let len: usize = shape.iter().product();
            let end = b_len.checked_add(len).ok_or_else(too_large)?;
            buffers.push(BufferInfo {
                name: name.clone(),
                shape: shape.clone(),
                range: b_len..end,
                init: *init,
            });
            b_len = end;
        }
        let n_tensors = self.tensors.len();
        let mut readers = vec![0usize; n_tensors];
        for node in &self.nodes {
            for t in &node.inputs {
                readers[t.0] += 1;
            }
        }
        let consumed: Vec<bool> = readers.iter().map(|&r| r > 0).collect();
        // Inputs, outputs and the marked tensors stay readable.
        let mut kept = vec![self.keep_all; n_tensors];
        for t in &self.kept {
            kept[t.0] = true;
        }
        for node in &self.nodes {
            if matches!(node.op, Op::Input) || !consumed[node.output.0] {
                kept[node.output.0] = true;
            }
        }
        // Conv followed by a BatchNorm that is the only reader of its output; and the residual
        // join after that BatchNorm when they pair up (`joins_next`).
        let mut fusable = vec![Fold::None; self.nodes.len()];
        let (mut fold_w, mut fold_c) = (0usize, 0usize);
        let nodes = &self.nodes;
        for k in 0..nodes.len().saturating_sub(1) {
            let (Op::Conv { g, .. }, Op::BatchNorm(_)) = (&nodes[k].op, &nodes[k + 1].op) else {
                continue;
            };
            let out = nodes[k].output;
            if nodes[k + 1].inputs != [out] || readers[out.0] != 1 {
                continue;
            }
            fusable[k] = if self.joins_next(k + 1, &readers, &kept) {
                Fold::BnJoin
            } else {
                Fold::Bn
            };
            fold_w = fold_w.max(g.w_len());
            fold_c = fold_c.max(g.c_out);
        }
        let has_grad: Vec<bool> = self.tensors.iter().map(|t| t.2).collect();
        let train_fusable = self.train_fusable(&readers, &kept, &has_grad);
        let lens: Vec<usize> = self.tensors.iter().map(|t| t.1.iter().product()).collect();
        // Every offset of the plans stays below this bound, so none overflows.
        unshared_bound(&lens, self.nodes.len()).ok_or_else(too_large)?;
        let sizes = Tensors {
            lens: &lens,
            has_grad: &has_grad,
            kept: &kept,
        };
        let train = (!self.eval_only).then(|| plan(&self.nodes, &sizes, &fusable, Mode::Train));
        let eval = plan(&self.nodes, &sizes, &fusable, Mode::Eval);
        let arena_len = train.as_ref().map_or(0, |t| t.len).max(eval.len);
        Ok(Layout {
            params,
            p_len,
            buffers,
            b_len,
            consumed,
            fusable,
            train_fusable,
            kept,
            fold_w,
            fold_c,
            train,
            eval,
            arena_len,
        })
    }

    /// Whether node `k` is a BatchNorm without ReLU whose output only the residual join at
    /// `k + 1` reads and that does not stay readable (a fused pass never writes it): the
    /// pair both fusions run as one, the evaluation's inside the convolution before it.
    fn joins_next(&self, k: usize, readers: &[usize], kept: &[bool]) -> bool {
        let (Op::BatchNorm(bn), Some(join)) = (&self.nodes[k].op, self.nodes.get(k + 1)) else {
            return false;
        };
        let y = self.nodes[k].output;
        !bn.relu
            && matches!(join.op, Op::Add { .. })
            && join.inputs.contains(&y)
            && readers[y.0] == 1
            && !kept[y.0]
    }

    /// Per node: whether it is a BatchNorm without ReLU that a training pass fuses with the
    /// residual join after it (see [`Graph::set_train_fusion`]): the pair of
    /// [`Self::joins_next`]; the join's other input is not the BatchNorm's input, has a
    /// gradient, and no later node reads it (so the join's backward writes that gradient
    /// first, and it holds the BatchNorm's output gradient until the BatchNorm's backward,
    /// the next step). The liveness plan needs nothing more: the
    /// join's step already holds the BatchNorm's input (which its backward reads), and the
    /// BatchNorm's output and its gradient stay planned, unused.
    fn train_fusable(&self, readers: &[usize], kept: &[bool], has_grad: &[bool]) -> Vec<bool> {
        let nodes = &self.nodes;
        let mut last_reader = vec![0usize; readers.len()];
        for (k, node) in nodes.iter().enumerate() {
            for t in &node.inputs {
                last_reader[t.0] = k;
            }
        }
        (0..nodes.len())
            .map(|k| {
                if !self.joins_next(k, readers, kept) {
                    return false;
                }
                let y = nodes[k].output;
                let Some(other) = nodes[k + 1].inputs.iter().copied().find(|&t| t != y) else {
                    return false;
                };
                other != nodes[k].inputs[0] && has_grad[other.0] && last_reader[other.0] == k + 1
            })
            .collect()
    }

    /// Plans the buffers and initializes the parameters from `seed`.
    ///
    /// # Errors
    /// A graph without nodes; buffers too large to be addressed or to be allocated (an
    /// error, never an abort).
    pub fn build(self, seed: u64) -> Result<Graph> {
        let l = self.layout()?;
        let groups = l
            .params
            .iter()
            .map(|p| ParamGroup {
                name: p.name.clone(),
                range: p.range.clone(),
                decay: p.kind.is_weight(),
                adapt: p.kind.is_weight(),
            })
            .collect();
        let n_tensors = self.tensors.len();
        // An evaluation-only graph's training ranges are its evaluation ones (a training
        // forward of it is refused).
        let (eval, kept) = (&l.eval, &l.kept);
        let train = l.train.as_ref().unwrap_or(eval);
        let tensors: Vec<TensorInfo> = self
            .tensors
            .into_iter()
            .enumerate()
            .map(|(t, (name, shape, _))| TensorInfo {
                name,
                shape,
                act: train.value[t].clone(),
                act_eval: eval.value[t].clone(),
                grad: train.grad[t].clone(),
                life: train.life[t],
                life_eval: eval.life[t],
                kept: kept[t],
            })
            .collect();
        let scratch = match l.train {
            Some(t) => t.scratch,
            None => vec![0..0; self.nodes.len()],
        };
        let mut g = Graph {
            nodes: self.nodes,
            tensors,
            params: l.params,
            buffers: l.buffers,
            groups,
            arena: zeroed(l.arena_len, "activations")?,
            param: zeroed(l.p_len, "parameters")?,
            param_grad: zeroed(l.p_len, "parameter gradients")?,
            buffer: zeroed(l.b_len, "buffers")?,
            scratch,
            eval_only: self.eval_only,
            written: vec![false; n_tensors],
            consumed: l.consumed,
            forwarded: None,
            pass_end: None,
            fusable: l.fusable,
            eval_fusion: true,
            train_fusable: l.train_fusable,
            train_fusion: true,
            fused_pass: false,
            profile: None,
            fold_w: zeroed(l.fold_w, "folded weights")?,
            fold_scale: vec![0.0; l.fold_c],
            fold_shift: vec![0.0; l.fold_c],
            sync_bn: false,
            local_negatives: false,
            dist: Scratch::default(),
        };
        g.init_params(seed);
        Ok(g)
    }
}

/// `len` zeros, or an error naming `what` when the allocator refuses them. The size is
/// asked for first, so that a refusal (more than the machine's memory and swap can give) is
/// an error instead of an abort; the vector itself then comes zeroed from the allocator, its
/// pages untouched until used, as `vec!` gives them.
fn zeroed(len: usize, what: &str) -> Result<Vec<f32>> {
    Vec::<f32>::new().try_reserve_exact(len).map_err(|_| {
        err(
            "(graph)",
            format!(
                "could not allocate {} for its {what}",
                crate::data::folder::human_bytes(bytes(len))
            ),
        )
    })?;
    Ok(vec![0.0; len])
}

/// Uniform in `[-1, 1)` from 24 bits of the stream (the stream never changes between
/// versions, so a seed means the same initial weights forever).
fn symmetric(rng: &mut SplitMix64) -> f32 {
    ((rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

impl Graph {
    fn init_params(&mut self, seed: u64) {
        for (i, p) in self.params.iter().enumerate() {
            // One stream per tensor, so adding a tensor does not change the others.
            let mut rng =
                SplitMix64::new(seed ^ (i as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
            let dst = &mut self.param[p.range.clone()];
            match p.kind {
                ParamKind::ConvWeight | ParamKind::LinearWeight | ParamKind::LinearBias => {
                    let bound = 1.0 / (p.fan_in.max(1) as f32).sqrt();
                    for x in dst.iter_mut() {
                        *x = bound * symmetric(&mut rng);
                    }
                }
                ParamKind::BnGamma => dst.fill(1.0),
                ParamKind::BnBeta => dst.fill(0.0),
                ParamKind::Embedding => {
                    // N(0, 1) by Box-Muller, one pair of uniforms per value.
                    for x in dst.iter_mut() {
                        let u1 = 1.0 - rng.next_f64(); // in (0, 1]
                        let u2 = rng.next_f64();
                        *x = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
                    }
                }
            }
        }
        for node in &self.nodes {
            if let Op::Embedding(e) = &node.op {
                if let Some(pid) = e.g.padding {
                    let start = self.params[e.table].range.start + pid as usize * e.g.dim;
                    self.param[start..start + e.g.dim].fill(0.0);
                }
            }
        }
        for b in &self.buffers {
            self.buffer[b.range.clone()].fill(b.init);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{GraphBuilder, Mode};
    use crate::nn::{resnet_encoder, ResNetConfig};

    fn encoder(eval_only: bool) -> GraphBuilder {
        let mut b = GraphBuilder::new();
        let cfg = ResNetConfig {
            widths: vec![4, 8],
            blocks: vec![1, 1],
            image_size: 8,
            ..ResNetConfig::default()
        };
        resnet_encoder(&mut b, &cfg, 3).unwrap();
        if eval_only {
            b.eval_only();
        }
        b
    }

    #[test]
    fn the_estimate_is_what_build_allocates() {
        for eval_only in [false, true] {
            let b = encoder(eval_only);
            let m = b.memory(2);
            let g = b.build(1).unwrap();
            assert_eq!(m.activations, g.activation_bytes() as u64);
            assert_eq!(m.params, 4 * g.params().len() as u64);
            assert_eq!(m.param_count, g.params().len() as u64);
            assert!(m.workspace > 0 && m.buffers >= 4 * g.buffers().len() as u64);
        }
    }

    #[test]
    fn an_eval_only_graph_is_smaller_computes_the_same_and_refuses_training() {
        let (full, eval) = (encoder(false), encoder(true));
        assert!(eval.memory(1).activations * 2 < full.memory(1).activations);
        let (mut full, mut eval) = (full.build(5).unwrap(), eval.build(5).unwrap());
        for g in [&mut full, &mut eval] {
            let x = g.input_mut(crate::graph::TensorId(0)).unwrap();
            for (i, v) in x.iter_mut().enumerate() {
                *v = (i % 7) as f32 / 7.0;
            }
            g.forward(Mode::Eval).unwrap();
        }
        let h = crate::graph::TensorId(full.tensors.len() - 1);
        assert_eq!(full.value(h), eval.value(h));
        let e = eval.forward(Mode::Train).unwrap_err().to_string();
        assert!(e.contains("evaluation only"), "{e}");
    }

    #[test]
    fn sizes_beyond_the_address_space_are_an_error_and_a_saturated_estimate() {
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[1 << 40, 1 << 22]).unwrap();
        b.relu("r", x).unwrap();
        assert_eq!(b.memory(1).activations, u64::MAX);
        let e = b.build(0).unwrap_err().to_string();
        assert!(e.contains("too large to be addressed"), "{e}");
    }
}
