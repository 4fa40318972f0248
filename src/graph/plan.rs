//! The buffer plan of a built graph and its initial parameters: one flat arena for the
//! activations and their gradients, where tensors whose lifetimes do not overlap share bytes
//! (the liveness plans of [`super::liveness`], one for training passes and one for
//! evaluation forwards), and one each for the parameters, the
//! parameter gradients and the non-trained buffers (BatchNorm running statistics), each
//! tensor's range beside its name and shape; the convolutions the evaluation forward folds a
//! BatchNorm into; parameters initialized from a seed as PyTorch does (Kaiming-uniform
//! convolution and linear weights, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` from PyTorch's
//! default `a = sqrt(5)`, linear biases from the same range, BatchNorm `gamma = 1`,
//! `beta = 0`, running mean 0 and variance 1, embeddings N(0, 1)).

use super::builder::GraphBuilder;
use super::liveness::{plan, Tensors};
use super::ops::Op;
use super::tensors::{BufferInfo, ParamInfo, ParamKind, TensorInfo};
use super::{err, Graph, Mode};
use crate::dist::Scratch;
use crate::error::Result;
use crate::optim::ParamGroup;
use crate::rng::SplitMix64;

impl GraphBuilder {
    /// Plans the buffers and initializes the parameters from `seed`.
    ///
    /// # Errors
    /// A graph without nodes.
    pub fn build(self, seed: u64) -> Result<Graph> {
        if self.nodes.is_empty() {
            return Err(err("(graph)", "no nodes".into()));
        }
        let mut p_len = 0usize;
        let params: Vec<ParamInfo> = self
            .params
            .into_iter()
            .map(|(name, shape, kind, fan_in)| {
                let len: usize = shape.iter().product();
                let range = p_len..p_len + len;
                p_len += len;
                ParamInfo {
                    name,
                    shape,
                    kind,
                    range,
                    fan_in,
                }
            })
            .collect();
        let mut b_len = 0usize;
        let buffers: Vec<BufferInfo> = self
            .buffers
            .into_iter()
            .map(|(name, shape, init)| {
                let len: usize = shape.iter().product();
                let range = b_len..b_len + len;
                b_len += len;
                BufferInfo {
                    name,
                    shape,
                    range,
                    init,
                }
            })
            .collect();
        let groups = params
            .iter()
            .map(|p| ParamGroup {
                name: p.name.clone(),
                range: p.range.clone(),
                decay: p.kind.is_weight(),
                adapt: p.kind.is_weight(),
            })
            .collect();
        let n_tensors = self.tensors.len();
        let mut readers = vec![0usize; n_tensors];
        for node in &self.nodes {
            for t in &node.inputs {
                readers[t.0] += 1;
            }
        }
        let consumed: Vec<bool> = readers.iter().map(|&r| r > 0).collect();
        // Conv followed by a BatchNorm that is the only reader of its output.
        let mut fusable = vec![false; self.nodes.len()];
        let (mut fold_w, mut fold_c) = (0usize, 0usize);
        #[allow(clippy::needless_range_loop)] // k and k + 1 index the same vector
        for k in 0..self.nodes.len().saturating_sub(1) {
            if let (Op::Conv { g, .. }, Op::BatchNorm { .. }) =
                (&self.nodes[k].op, &self.nodes[k + 1].op)
            {
                let out = self.nodes[k].output;
                if self.nodes[k + 1].inputs == [out] && readers[out.0] == 1 {
                    fusable[k] = true;
                    fold_w = fold_w.max(g.w_len());
                    fold_c = fold_c.max(g.c_out);
                }
            }
        }
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
        let has_grad: Vec<bool> = self.tensors.iter().map(|t| t.2).collect();
        let lens: Vec<usize> = self.tensors.iter().map(|t| t.1.iter().product()).collect();
        let sizes = Tensors {
            lens: &lens,
            has_grad: &has_grad,
            kept: &kept,
        };
        let train = plan(&self.nodes, &sizes, &fusable, Mode::Train);
        let eval = plan(&self.nodes, &sizes, &fusable, Mode::Eval);
        let arena_len = train.len.max(eval.len);
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
        let mut g = Graph {
            nodes: self.nodes,
            tensors,
            params,
            buffers,
            groups,
            arena: vec![0.0; arena_len],
            param: vec![0.0; p_len],
            param_grad: vec![0.0; p_len],
            buffer: vec![0.0; b_len],
            scratch: train.scratch,
            written: vec![false; n_tensors],
            consumed,
            forwarded: None,
            pass_end: None,
            fusable,
            eval_fusion: true,
            profile: None,
            fold_w: vec![0.0; fold_w],
            fold_scale: vec![0.0; fold_c],
            fold_shift: vec![0.0; fold_c],
            sync_bn: false,
            local_negatives: false,
            dist: Scratch::default(),
        };
        g.init_params(seed);
        Ok(g)
    }
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
