//! The static graph: build once, check every shape, plan every buffer, then run training
//! steps that allocate nothing (the llm.c way: explicit per-node forward and backward over
//! explicit dimensions, parameters in one arena with each tensor's name and shape beside it).
//!
//! - [`GraphBuilder`] adds nodes in execution order. Every node checks its input shapes as it
//!   is added and returns [`Error::Graph`] naming the node and the shapes.
//! - [`GraphBuilder::build`] lays out one flat arena each for the activations, the
//!   activation gradients, the parameters, the parameter gradients and the non-trained
//!   buffers (BatchNorm running statistics), and initializes the parameters from a seed as
//!   PyTorch does: Kaiming-uniform convolution and linear weights
//!   (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, PyTorch's default `a = sqrt(5)`), linear biases
//!   from the same range, BatchNorm `gamma = 1`, `beta = 0`, running mean 0 and variance 1.
//! - [`Graph::forward`] runs the nodes in order, [`Graph::backward`] in reverse. A tensor read
//!   by several nodes (a residual input) receives the sum of their gradients: the first
//!   backward to reach it overwrites its gradient, later ones accumulate. Parameter gradients
//!   are overwritten by every backward. Graph inputs get no gradient, so the stem
//!   convolution skips its input-gradient pass.
//! - Every kernel is bit-identical for any number of threads, so the graph is too.

use crate::dist::{
    all_reduce_sum_f64, gather_f64, reduce_scatter_rows, Collectives, Scratch, SingleProcess,
};
use crate::error::{Error, Result};
use crate::kernels::batchnorm::{
    batchnorm_backward, batchnorm_backward_synced, batchnorm_fold, batchnorm_forward_eval,
    batchnorm_forward_train, batchnorm_forward_train_synced, batchnorm_merge_moments,
    batchnorm_relu_backward, batchnorm_relu_forward_eval, batchnorm_relu_forward_train,
    BatchNorm2d, BnAffine, BnGrads, BnRunning, BnSaved, BnSync, MOMENTS_PER_CHANNEL,
};
use crate::kernels::contrastive::ntxent::{NtXent, NtXentConfig, NtXentOutput, Pairing};
use crate::kernels::contrastive::quickthought::{
    qt_pairwise_logistic, QtBatch, QtInBatch, QtStats,
};
use crate::kernels::conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d};
use crate::kernels::elementwise::{
    add, add_assign, add_relu, add_relu_backward, copy, relu, relu_backward,
};
use crate::kernels::linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward, Linear,
};
use crate::kernels::pool::{
    global_avg_pool_backward, global_avg_pool_forward, global_max_pool_backward,
    global_max_pool_forward, global_max_pool_relu_backward, global_max_pool_relu_forward,
};
use crate::kernels::softmax::softmax_cross_entropy;
use crate::optim::ParamGroup;
use crate::rng::SplitMix64;
use rayon::prelude::{IndexedParallelIterator, ParallelIterator, ParallelSlice, ParallelSliceMut};

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

/// What a parameter tensor is; decides its initialization and whether weight decay and LARS
/// adaptation apply (only to convolution and linear weights, as in SimCLR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution weight `[C_out, C_in, K, K]`.
    ConvWeight,
    /// A linear weight `[out, in]`.
    LinearWeight,
    /// A linear bias `[out]`.
    LinearBias,
    /// BatchNorm scale `[C]`.
    BnGamma,
    /// BatchNorm shift `[C]`.
    BnBeta,
    /// A token embedding table `[vocab, dim]` (initialized N(0, 1) as PyTorch's
    /// `nn.Embedding`; a padding row starts at zero).
    Embedding,
}

impl ParamKind {
    /// Whether weight decay (and LARS adaptation) applies.
    pub fn is_weight(self) -> bool {
        matches!(
            self,
            ParamKind::ConvWeight | ParamKind::LinearWeight | ParamKind::Embedding
        )
    }
}

/// One parameter tensor in the arena.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    /// Where it lives in [`Graph::params`].
    pub range: std::ops::Range<usize>,
    /// Fan-in for the initialization.
    fan_in: usize,
}

/// One non-trained buffer (BatchNorm running statistics) in the buffer arena.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
    init: f32,
}

#[derive(Clone, Debug)]
struct TensorInfo {
    #[allow(dead_code)] // kept for debugging output
    name: String,
    shape: Vec<usize>,
    /// Range in the activation arena.
    act: std::ops::Range<usize>,
    /// Range in the gradient arena (graph inputs have none).
    grad: Option<std::ops::Range<usize>>,
}

#[derive(Debug)]
enum Op {
    Input,
    /// Token ids (set with [`Graph::set_tokens`]) looked up in `table`: `N x L` ids to an
    /// `N x dim x 1 x L` image, or with `mean` to the `N x dim` mean of each row's
    /// non-padding embeddings (PyTorch's `EmbeddingBag`, mode `mean`).
    Embedding {
        table: usize,
        ids: Vec<u32>,
        n: usize,
        len: usize,
        vocab: usize,
        dim: usize,
        padding: Option<u32>,
        mean: bool,
    },
    Conv {
        g: Conv2d,
        w: usize,
    },
    BatchNorm {
        bn: BatchNorm2d,
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
        relu: bool,
        saved: BnSaved,
        /// Synchronized BatchNorm's per-channel values (`3 C` moments; the backward uses
        /// the first `2 C`).
        sync: Vec<f64>,
    },
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
    Linear {
        l: Linear,
        w: usize,
        b: Option<usize>,
        relu: bool,
    },
    /// The training forward computes the gradient too (into `dz`); the backward scales it.
    NtXent {
        tau: f32,
        halves: bool,
        ws: Box<NtXent>,
        out: Option<NtXentOutput>,
        dz: Vec<f32>,
        loss64: f64,
        /// Data-parallel: every rank's rows, and the gradient of all of them (sized on the
        /// first distributed step).
        gathered: Vec<f32>,
        dz_all: Vec<f32>,
    },
    /// Quick Thoughts' in-batch classification of anchors `f` (input 0) against candidates
    /// `g` (input 1), with targets set by [`Graph::set_targets`]; the training forward
    /// computes both gradients (into `df`, `dg`), the backward scales them.
    QtInBatch {
        scale: f32,
        self_offset: Option<usize>,
        targets: Vec<(u32, u32)>,
        ws: Box<QtInBatch>,
        stats: Option<QtStats>,
        df: Vec<f32>,
        dg: Vec<f32>,
        loss64: f64,
        /// Data-parallel: every rank's candidates and their gradient (sized on the first
        /// distributed step).
        gathered: Vec<f32>,
        dg_all: Vec<f32>,
    },
    /// Quick Thoughts' pairwise logistic loss over `(anchor, pos, neg)` triplets set by
    /// [`Graph::set_triplets`]: anchors are rows of `a` (input 0, `n_a x d`), positives and
    /// negatives rows of `b` (input 1, `n_b x d`). The forward computes both gradients (the
    /// kernel produces them with the loss) into `da`, `db`; the backward scales them.
    QtPairwise {
        n_a: usize,
        n_b: usize,
        triplets: Vec<(u32, u32, u32)>,
        /// `(hits, triplets)` of the last successful forward: how many triplets scored their
        /// positive above their negative.
        hits: Option<(usize, usize)>,
        da: Vec<f32>,
        db: Vec<f32>,
        loss64: f64,
    },
    SoftmaxCe {
        n: usize,
        c: usize,
        labels: Vec<u32>,
        correct: usize,
        /// The rows `correct` counts over (`n`, or `n` times the ranks of a data-parallel
        /// step).
        total: usize,
        dlogits: Vec<f32>,
        loss64: f64,
    },
}

impl Op {
    /// The `f64` loss of a loss node (from its last forward); `None` for other nodes.
    fn loss64(&self) -> Option<f64> {
        match self {
            Op::NtXent { loss64, .. }
            | Op::SoftmaxCe { loss64, .. }
            | Op::QtInBatch { loss64, .. }
            | Op::QtPairwise { loss64, .. } => Some(*loss64),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    op: Op,
    inputs: Vec<TensorId>,
    output: TensorId,
}

/// Adds nodes in execution order, checking shapes as it goes; [`GraphBuilder::build`] plans
/// the buffers.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    tensors: Vec<(String, Vec<usize>, bool)>,
    nodes: Vec<Node>,
    params: Vec<(String, Vec<usize>, ParamKind, usize)>,
    buffers: Vec<(String, Vec<usize>, f32)>,
}

fn err(node: &str, msg: String) -> Error {
    Error::Graph {
        node: node.to_string(),
        msg,
    }
}

fn shape_str(s: &[usize]) -> String {
    crate::error::Shape(s.to_vec()).to_string()
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shape of a tensor added so far.
    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.tensors[t.0].1
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(err(name, "empty node name".into()));
        }
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(err(name, "a node of this name already exists".into()));
        }
        Ok(())
    }

    fn tensor(&mut self, name: &str, shape: Vec<usize>, grad: bool) -> Result<TensorId> {
        if shape.contains(&0) {
            return Err(err(
                name,
                format!("empty output shape {}", shape_str(&shape)),
            ));
        }
        shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(name, format!("shape {} overflows", shape_str(&shape))))?;
        self.tensors.push((name.to_string(), shape, grad));
        Ok(TensorId(self.tensors.len() - 1))
    }

    fn param(&mut self, name: String, shape: Vec<usize>, kind: ParamKind, fan_in: usize) -> usize {
        self.params.push((name, shape, kind, fan_in));
        self.params.len() - 1
    }

    fn buffer(&mut self, name: String, shape: Vec<usize>, init: f32) -> usize {
        self.buffers.push((name, shape, init));
        self.buffers.len() - 1
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<TensorId>, output: TensorId) -> TensorId {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            output,
        });
        output
    }

    fn nchw(&self, name: &str, x: TensorId) -> Result<[usize; 4]> {
        let s = self.shape(x);
        <[usize; 4]>::try_from(s).map_err(|_| {
            err(
                name,
                format!("expects an N x C x H x W input, got shape {}", shape_str(s)),
            )
        })
    }

    fn matrix(&self, name: &str, x: TensorId) -> Result<[usize; 2]> {
        let s = self.shape(x);
        <[usize; 2]>::try_from(s).map_err(|_| {
            err(
                name,
                format!("expects an N x features input, got shape {}", shape_str(s)),
            )
        })
    }

    /// A graph input of the given shape (filled with [`Graph::input_mut`]; no gradient).
    ///
    /// # Errors
    /// A duplicate or empty name, or an empty shape.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<TensorId> {
        self.check_name(name)?;
        let t = self.tensor(name, shape.to_vec(), false)?;
        Ok(self.push(name, Op::Input, vec![], t))
    }

    /// A token embedding: `N x L` token ids (set with [`Graph::set_tokens`]; all
    /// `padding`, if given, until then) looked up in the table `name.weight` (`vocab x dim`),
    /// giving the `N x dim x 1 x L` image that a `1 x K` [`GraphBuilder::conv2d_rect`] slides
    /// over. The `padding` row (PyTorch's `padding_idx`) starts at zero and gets no gradient,
    /// so padded positions stay zero vectors.
    ///
    /// # Errors
    /// A duplicate or empty name, zero sizes, or `padding >= vocab`.
    pub fn embedding(
        &mut self,
        name: &str,
        n: usize,
        len: usize,
        vocab: usize,
        dim: usize,
        padding: Option<u32>,
    ) -> Result<TensorId> {
        self.embedding_node(name, n, len, vocab, dim, padding, false)
    }

    /// A bag of token embeddings (PyTorch's `EmbeddingBag` with mode `mean`): `N x L` token
    /// ids (set with [`Graph::set_tokens`]) to the `N x dim` mean of each row's embeddings,
    /// `padding` positions left out of the mean (a row of padding only gives a zero vector).
    /// The table is `name.weight` (`vocab x dim`), initialized and treated as in
    /// [`GraphBuilder::embedding`].
    ///
    /// # Errors
    /// As [`GraphBuilder::embedding`].
    pub fn embedding_bag(
        &mut self,
        name: &str,
        n: usize,
        len: usize,
        vocab: usize,
        dim: usize,
        padding: Option<u32>,
    ) -> Result<TensorId> {
        self.embedding_node(name, n, len, vocab, dim, padding, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn embedding_node(
        &mut self,
        name: &str,
        n: usize,
        len: usize,
        vocab: usize,
        dim: usize,
        padding: Option<u32>,
        mean: bool,
    ) -> Result<TensorId> {
        self.check_name(name)?;
        if vocab == 0 || dim == 0 || vocab > u32::MAX as usize {
            return Err(err(
                name,
                format!("embedding of {vocab} tokens x {dim} dimensions"),
            ));
        }
        if let Some(pid) = padding.filter(|&p| p as usize >= vocab) {
            return Err(err(
                name,
                format!("padding id {pid} is not below the vocabulary size {vocab}"),
            ));
        }
        let shape = if mean {
            vec![n, dim]
        } else {
            vec![n, dim, 1, len]
        };
        let out = self.tensor(name, shape, true)?;
        let table = self.param(
            format!("{name}.weight"),
            vec![vocab, dim],
            ParamKind::Embedding,
            dim,
        );
        let op = Op::Embedding {
            table,
            ids: vec![padding.unwrap_or(0); n * len],
            n,
            len,
            vocab,
            dim,
            padding,
            mean,
        };
        Ok(self.push(name, op, vec![], out))
    }

    /// A convolution without bias, `K x K`, with the given stride and zero padding; weight
    /// `name.weight` of shape `[c_out, C_in, k, k]`.
    ///
    /// # Errors
    /// A non-NCHW input or a geometry the convolution rejects (kernel larger than the padded
    /// input, zero sizes).
    pub fn conv2d(
        &mut self,
        name: &str,
        x: TensorId,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<TensorId> {
        self.conv2d_rect(name, x, c_out, (k, k), (stride, stride), (pad, pad))
    }

    /// A convolution without bias with a `KH x KW` kernel and per-direction (height, width)
    /// stride and zero padding; weight `name.weight` of shape `[c_out, C_in, KH, KW]`. With
    /// `H = 1` and a `1 x K` kernel it is the 1-D convolution over a token sequence (a
    /// sentence as a `1 x L` image with the embedding as channels).
    ///
    /// # Errors
    /// As [`GraphBuilder::conv2d`].
    pub fn conv2d_rect(
        &mut self,
        name: &str,
        x: TensorId,
        c_out: usize,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
    ) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, c, h, w] = self.nchw(name, x)?;
        let g = Conv2d {
            n,
            c_in: c,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
        };
        g.validate().map_err(|e| {
            err(
                name,
                format!(
                    "conv {kh}x{kw} stride {stride:?} pad {pad:?} on input {}: {e}",
                    shape_str(self.shape(x))
                ),
            )
        })?;
        let out = self.tensor(name, vec![n, c_out, g.out_h(), g.out_w()], true)?;
        let wp = self.param(
            format!("{name}.weight"),
            vec![c_out, c, kh, kw],
            ParamKind::ConvWeight,
            c * kh * kw,
        );
        Ok(self.push(name, Op::Conv { g, w: wp }, vec![x], out))
    }

    /// BatchNorm2d (PyTorch defaults: eps 1e-5, momentum 0.1), optionally fused with ReLU;
    /// parameters `name.weight` (gamma) and `name.bias` (beta), buffers `name.running_mean`
    /// and `name.running_var`.
    ///
    /// # Errors
    /// A non-NCHW input.
    pub fn batchnorm(&mut self, name: &str, x: TensorId, relu: bool) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, c, h, w] = self.nchw(name, x)?;
        let out = self.tensor(name, vec![n, c, h, w], true)?;
        let gamma = self.param(format!("{name}.weight"), vec![c], ParamKind::BnGamma, c);
        let beta = self.param(format!("{name}.bias"), vec![c], ParamKind::BnBeta, c);
        let mean = self.buffer(format!("{name}.running_mean"), vec![c], 0.0);
        let var = self.buffer(format!("{name}.running_var"), vec![c], 1.0);
        let op = Op::BatchNorm {
            bn: BatchNorm2d::new(n, c, h, w),
            gamma,
            beta,
            mean,
            var,
            relu,
            saved: BnSaved::new(c),
            sync: vec![0.0; MOMENTS_PER_CHANNEL * c],
        };
        Ok(self.push(name, op, vec![x], out))
    }

    /// `max(x, 0)`.
    ///
    /// # Errors
    /// A duplicate name.
    pub fn relu(&mut self, name: &str, x: TensorId) -> Result<TensorId> {
        self.check_name(name)?;
        let out = self.tensor(name, self.shape(x).to_vec(), true)?;
        Ok(self.push(name, Op::Relu, vec![x], out))
    }

    /// `a + b`, optionally followed by ReLU (the residual join).
    ///
    /// # Errors
    /// Different shapes, or the same tensor twice.
    pub fn add(&mut self, name: &str, a: TensorId, b: TensorId, relu: bool) -> Result<TensorId> {
        self.check_name(name)?;
        if self.shape(a) != self.shape(b) {
            return Err(err(
                name,
                format!(
                    "cannot add shapes {} and {}",
                    shape_str(self.shape(a)),
                    shape_str(self.shape(b))
                ),
            ));
        }
        if a == b {
            return Err(err(name, "both inputs are the same tensor".into()));
        }
        let out = self.tensor(name, self.shape(a).to_vec(), true)?;
        Ok(self.push(name, Op::Add { relu }, vec![a, b], out))
    }

    /// Global average pooling `N x C x H x W -> N x C`.
    ///
    /// # Errors
    /// A non-NCHW input.
    pub fn global_avg_pool(&mut self, name: &str, x: TensorId) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, c, h, w] = self.nchw(name, x)?;
        let out = self.tensor(name, vec![n, c], true)?;
        let op = Op::GlobalAvgPool {
            planes: n * c,
            hw: h * w,
        };
        Ok(self.push(name, op, vec![x], out))
    }

    /// Global max pooling `N x C x H x W -> N x C` (max over time for a `1 x L` sequence);
    /// the gradient goes to the first maximum of each plane.
    ///
    /// # Errors
    /// A non-NCHW input.
    pub fn global_max_pool(&mut self, name: &str, x: TensorId) -> Result<TensorId> {
        self.max_pool_node(name, x, false)
    }

    /// ReLU then global max pooling as one node, `y = max(0, max over the plane of x)`: the
    /// same values and gradients as [`GraphBuilder::relu`] followed by
    /// [`GraphBuilder::global_max_pool`], without the ReLU's full-size output and its two
    /// passes over it (the max over time of a convolutional sentence encoder).
    ///
    /// # Errors
    /// A non-NCHW input.
    pub fn global_max_pool_relu(&mut self, name: &str, x: TensorId) -> Result<TensorId> {
        self.max_pool_node(name, x, true)
    }

    fn max_pool_node(&mut self, name: &str, x: TensorId, relu: bool) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, c, h, w] = self.nchw(name, x)?;
        let out = self.tensor(name, vec![n, c], true)?;
        let op = Op::GlobalMaxPool {
            planes: n * c,
            hw: h * w,
            relu,
        };
        Ok(self.push(name, op, vec![x], out))
    }

    /// `y = x W^T + b`, optionally followed by ReLU; weight `name.weight` `[out, in]`, bias
    /// `name.bias` `[out]`.
    ///
    /// # Errors
    /// A non-matrix input or `out == 0`.
    pub fn linear(
        &mut self,
        name: &str,
        x: TensorId,
        out_features: usize,
        bias: bool,
        relu: bool,
    ) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, fin] = self.matrix(name, x)?;
        let out = self.tensor(name, vec![n, out_features], true)?;
        let w = self.param(
            format!("{name}.weight"),
            vec![out_features, fin],
            ParamKind::LinearWeight,
            fin,
        );
        let b = bias.then(|| {
            self.param(
                format!("{name}.bias"),
                vec![out_features],
                ParamKind::LinearBias,
                fin,
            )
        });
        let l = Linear {
            n,
            in_features: fin,
            out_features,
        };
        Ok(self.push(name, Op::Linear { l, w, b, relu }, vec![x], out))
    }

    /// Quick Thoughts' in-batch classification loss (Logeswaran and Lee 2018): anchors `f`
    /// (`n x d`) scored against candidates `g` (`m x d`) by `scale * f_i . g_j`, a softmax
    /// per anchor over the candidates (its own sentence, candidate `i + self_offset`, left
    /// out), the loss the mean of `-log p` over the target pairs set with
    /// [`Graph::set_targets`] (usually the previous and next sentence:
    /// [`crate::kernels::contrastive::quickthought::qt_neighbor_targets`]). `f` and `g` may
    /// be the same tensor. Streamed over tiles, so no `n x m` matrix is stored.
    ///
    /// # Errors
    /// Non-matrix inputs, different widths, a non-finite `scale`, or `n + self_offset > m`.
    pub fn qt_in_batch(
        &mut self,
        name: &str,
        f: TensorId,
        g: TensorId,
        scale: f32,
        self_offset: Option<usize>,
    ) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, d] = self.matrix(name, f)?;
        let [m, dg] = self.matrix(name, g)?;
        if d != dg {
            return Err(err(
                name,
                format!("anchors {n} x {d} and candidates {m} x {dg} differ in width"),
            ));
        }
        if !scale.is_finite() {
            return Err(err(name, format!("scale {scale} must be finite")));
        }
        if let Some(off) = self_offset {
            if n.checked_add(off).is_none_or(|e| e > m) {
                return Err(err(
                    name,
                    format!("{n} anchors at self offset {off} do not fit {m} candidates"),
                ));
            }
        }
        let out = self.tensor(name, vec![1], true)?;
        let op = Op::QtInBatch {
            scale,
            self_offset,
            targets: Vec::new(),
            ws: Box::default(),
            stats: None,
            df: vec![0.0; n * d],
            dg: vec![0.0; m * d],
            loss64: 0.0,
            gathered: Vec::new(),
            dg_all: Vec::new(),
        };
        Ok(self.push(name, op, vec![f, g], out))
    }

    /// Quick Thoughts' pairwise logistic loss (Logeswaran and Lee 2018): the mean over the
    /// `(anchor, pos, neg)` triplets set with [`Graph::set_triplets`] of
    /// `log(1 + exp(a_anchor . b_neg - a_anchor . b_pos))`, anchors being rows of `a`
    /// (`n_a x d`), positives and negatives rows of `b` (`n_b x d`). `a` and `b` may be the
    /// same tensor (the paper's single encoder f: `log(1 + exp(f(x) . f(x-) - f(x) . f(x+)))`),
    /// which then receives the sum of both gradients. Output: the scalar loss;
    /// [`Graph::accuracy`] is the share of triplets whose positive scores above the negative.
    ///
    /// # Errors
    /// Non-matrix inputs or different widths (naming both shapes).
    pub fn qt_pairwise(&mut self, name: &str, a: TensorId, b: TensorId) -> Result<TensorId> {
        self.check_name(name)?;
        let [n_a, d] = self.matrix(name, a)?;
        let [n_b, db] = self.matrix(name, b)?;
        if d != db {
            return Err(err(
                name,
                format!(
                    "anchors {} and candidates {} differ in width",
                    shape_str(self.shape(a)),
                    shape_str(self.shape(b))
                ),
            ));
        }
        let out = self.tensor(name, vec![1], true)?;
        let op = Op::QtPairwise {
            n_a,
            n_b,
            triplets: Vec::new(),
            hits: None,
            da: vec![0.0; n_a * d],
            db: vec![0.0; n_b * d],
            loss64: 0.0,
        };
        Ok(self.push(name, op, vec![a, b], out))
    }

    /// The NT-Xent loss (SimCLR) over the rows of `z` (`2N x d`): rows `2k`, `2k+1` are the
    /// two views of image k (or rows `k`, `k + N` with `halves`). Output: the scalar loss.
    ///
    /// # Errors
    /// A non-matrix input, an odd or too small row count, or an invalid `tau`.
    pub fn nt_xent(&mut self, name: &str, z: TensorId, tau: f32, halves: bool) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, d] = self.matrix(name, z)?;
        if n < 2 || n % 2 != 0 {
            return Err(err(
                name,
                format!("needs an even number (>= 2) of rows, got {n}"),
            ));
        }
        if !(tau.is_finite() && tau > 0.0 && (1.0 / tau).is_finite()) {
            return Err(err(
                name,
                format!("temperature tau = {tau} must be positive and finite"),
            ));
        }
        let out = self.tensor(name, vec![1], true)?;
        let op = Op::NtXent {
            tau,
            halves,
            ws: Box::default(),
            out: None,
            dz: vec![0.0; n * d],
            loss64: 0.0,
            gathered: Vec::new(),
            dz_all: Vec::new(),
        };
        Ok(self.push(name, op, vec![z], out))
    }

    /// Softmax cross-entropy of `logits` (`N x C`) with integer labels set by
    /// [`Graph::set_labels`]. Output: the scalar mean loss.
    ///
    /// # Errors
    /// A non-matrix input.
    pub fn softmax_cross_entropy(&mut self, name: &str, logits: TensorId) -> Result<TensorId> {
        self.check_name(name)?;
        let [n, c] = self.matrix(name, logits)?;
        let out = self.tensor(name, vec![1], true)?;
        let op = Op::SoftmaxCe {
            n,
            c,
            labels: vec![0; n],
            correct: 0,
            total: n,
            dlogits: vec![0.0; n * c],
            loss64: 0.0,
        };
        Ok(self.push(name, op, vec![logits], out))
    }

    /// Plans the buffers and initializes the parameters from `seed`.
    ///
    /// # Errors
    /// A graph without nodes.
    pub fn build(self, seed: u64) -> Result<Graph> {
        if self.nodes.is_empty() {
            return Err(err("(graph)", "no nodes".into()));
        }
        let mut act_len = 0usize;
        let mut grad_len = 0usize;
        let mut scratch = 0usize;
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (name, shape, needs_grad) in self.tensors {
            let len: usize = shape.iter().product();
            let act = act_len..act_len + len;
            act_len += len;
            let grad = needs_grad.then(|| {
                let r = grad_len..grad_len + len;
                grad_len += len;
                r
            });
            scratch = scratch.max(len);
            tensors.push(TensorInfo {
                name,
                shape,
                act,
                grad,
            });
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
        let n_tensors = tensors.len();
        let mut consumed = vec![false; n_tensors];
        for node in &self.nodes {
            for t in &node.inputs {
                consumed[t.0] = true;
            }
        }
        // Conv followed by a BatchNorm that is the only reader of its output.
        let mut fusable = vec![false; self.nodes.len()];
        let (mut fold_w, mut fold_c) = (0usize, 0usize);
        let mut readers = vec![0usize; n_tensors];
        for node in &self.nodes {
            for t in &node.inputs {
                readers[t.0] += 1;
            }
        }
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
        let mut g = Graph {
            nodes: self.nodes,
            tensors,
            params,
            buffers,
            groups,
            act: vec![0.0; act_len],
            grad: vec![0.0; grad_len],
            param: vec![0.0; p_len],
            param_grad: vec![0.0; p_len],
            buffer: vec![0.0; b_len],
            scratch: vec![0.0; scratch],
            written: vec![false; n_tensors],
            consumed,
            forwarded: None,
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

/// A built graph: its buffers, parameters and the per-step entry points.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    tensors: Vec<TensorInfo>,
    params: Vec<ParamInfo>,
    buffers: Vec<BufferInfo>,
    groups: Vec<ParamGroup>,
    act: Vec<f32>,
    grad: Vec<f32>,
    param: Vec<f32>,
    param_grad: Vec<f32>,
    buffer: Vec<f32>,
    scratch: Vec<f32>,
    /// Per tensor: whether its gradient has been written in the current backward.
    written: Vec<bool>,
    /// Per tensor: whether some node reads it.
    consumed: Vec<bool>,
    /// The mode and the number of nodes of the last forward.
    forwarded: Option<(Mode, usize)>,
    /// Per node: a convolution whose output only feeds the BatchNorm right after it, which
    /// the evaluation forward folds into the convolution (see [`Graph::set_eval_fusion`]).
    fusable: Vec<bool>,
    eval_fusion: bool,
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
            if let Op::Embedding {
                table,
                dim,
                padding: Some(pid),
                ..
            } = &node.op
            {
                let start = self.params[*table].range.start + *pid as usize * dim;
                self.param[start..start + dim].fill(0.0);
            }
        }
        for b in &self.buffers {
            self.buffer[b.range.clone()].fill(b.init);
        }
    }

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
        4 * (self.act.len()
            + self.grad.len()
            + self.param.len()
            + self.param_grad.len()
            + self.buffer.len()
            + self.scratch.len())
    }

    /// The shape of a tensor.
    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.tensors[t.0].shape
    }
    /// The value of a tensor after the last forward.
    pub fn value(&self, t: TensorId) -> &[f32] {
        &self.act[self.tensors[t.0].act.clone()]
    }
    /// The gradient of a tensor after the last backward (`None` for graph inputs).
    pub fn grad(&self, t: TensorId) -> Option<&[f32]> {
        self.tensors[t.0].grad.clone().map(|r| &self.grad[r])
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
        Ok(&mut self.act[self.tensors[t.0].act.clone()])
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
            Op::QtInBatch { targets, .. } => {
                targets.clear();
                targets.extend_from_slice(pairs);
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
            Op::QtPairwise {
                n_a,
                n_b,
                triplets: tr,
                ..
            } => {
                check_triplets(&node.name, triplets, *n_a, *n_b)?;
                tr.clear();
                tr.extend_from_slice(triplets);
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
            Op::Embedding {
                ids, n, len, vocab, ..
            } => {
                check_ids(&node.name, "token id", tokens, *n * *len, *vocab)?;
                ids.copy_from_slice(tokens);
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
            Op::SoftmaxCe {
                n, c, labels: l, ..
            } => {
                check_ids(&node.name, "label", labels, *n, *c)?;
                l.copy_from_slice(labels);
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
            Op::NtXent { out, .. } => out.map(|o| o.accuracy),
            Op::QtInBatch { stats, .. } => stats.map(|s| s.accuracy() as f32),
            Op::QtPairwise { hits, .. } => hits.map(|(h, t)| (h as f64 / t as f64) as f32),
            Op::SoftmaxCe { correct, total, .. } => Some(*correct as f32 / *total as f32),
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

    /// Starts (or, with `false`, stops and clears) accumulating the time each node spends
    /// in forward and backward; see [`Graph::profile`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0.0); self.nodes.len()]);
    }

    /// Per node: name, accumulated forward seconds, accumulated backward seconds (empty when
    /// profiling is off). A node folded into the one before it in eval mode has its time
    /// counted there.
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
        self.forwarded = None;
        let mut k = 0;
        while k < count {
            if mode == Mode::Eval && self.eval_fusion && self.fusable[k] && k + 1 < count {
                self.forward_conv_bn_eval(k)
                    .map_err(|e| wrap(&self.nodes[k].name, e))?;
                k += 2;
                continue;
            }
            let t0 = self.profile.is_some().then(std::time::Instant::now);
            let node = &mut self.nodes[k];
            forward_node(
                node,
                mode,
                &self.tensors,
                &mut self.act,
                &self.param,
                &self.params,
                &mut self.buffer,
                &self.buffers,
                &mut DistCtx {
                    comm,
                    scratch: &mut self.dist,
                    sync_bn: self.sync_bn,
                    local_negatives: self.local_negatives,
                },
            )
            .map_err(|e| wrap(&node.name, e))?;
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                p[k].0 += t0.elapsed().as_secs_f64();
            }
            k += 1;
        }
        self.forwarded = Some((mode, count));
        Ok(())
    }

    /// Node `k` (a convolution) and node `k + 1` (BatchNorm in eval mode) as one convolution.
    fn forward_conv_bn_eval(&mut self, k: usize) -> Result<()> {
        let (
            Op::Conv { g, w },
            Op::BatchNorm {
                bn,
                gamma,
                beta,
                mean,
                var,
                relu,
                ..
            },
        ) = (&self.nodes[k].op, &self.nodes[k + 1].op)
        else {
            unreachable!("fusable marks conv + batchnorm pairs only");
        };
        let c = g.c_out;
        let p = |i: usize| &self.param[self.params[i].range.clone()];
        batchnorm_fold(
            BnAffine {
                gamma: p(*gamma),
                beta: p(*beta),
            },
            &self.buffer[self.buffers[*mean].range.clone()],
            &self.buffer[self.buffers[*var].range.clone()],
            bn.eps,
            &mut self.fold_scale[..c],
            &mut self.fold_shift[..c],
        )?;
        let wv = p(*w);
        let per = wv.len() / c;
        let fw = &mut self.fold_w[..wv.len()];
        for ((dst, src), &s) in fw
            .chunks_exact_mut(per)
            .zip(wv.chunks_exact(per))
            .zip(&self.fold_scale[..c])
        {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * s;
            }
        }
        let x_r = self.tensors[self.nodes[k].inputs[0].0].act.clone();
        let y_r = self.tensors[self.nodes[k + 1].output.0].act.clone();
        let (lo, y) = split_io(&mut self.act, &y_r);
        conv2d_forward(g, &lo[x_r], fw, Some(&self.fold_shift[..c]), *relu, y)
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
        self.written.fill(false);
        // Tensors nothing reads: a loss gets d loss / d loss = 1, anything else 0.
        for (t, info) in self.tensors.iter().enumerate() {
            if let (Some(r), false) = (info.grad.clone(), self.consumed[t]) {
                let is_loss = self
                    .nodes
                    .iter()
                    .any(|n| n.output.0 == t && n.op.loss64().is_some());
                self.grad[r].fill(if is_loss { 1.0 } else { 0.0 });
                self.written[t] = true;
            }
        }
        for k in (0..self.nodes.len()).rev() {
            let t0 = self.profile.is_some().then(std::time::Instant::now);
            let node = &mut self.nodes[k];
            backward_node(
                node,
                &self.tensors,
                &self.act,
                &mut self.grad,
                &mut self.written,
                &mut self.scratch,
                &self.param,
                &mut self.param_grad,
                &self.params,
                &mut DistCtx {
                    comm,
                    scratch: &mut self.dist,
                    sync_bn: self.sync_bn,
                    local_negatives: self.local_negatives,
                },
            )
            .map_err(|e| wrap(&node.name, e))?;
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                p[k].1 += t0.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }
}

fn wrap(node: &str, e: Error) -> Error {
    match e {
        Error::Graph { .. } => e,
        other => err(node, other.to_string()),
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

/// Triplets per parallel chunk of [`pairwise_hits`].
const HITS_CHUNK: usize = 256;

/// How many triplets `(i, p, q)` have `a_i . (b_q - b_p) < 0` (the positive scores above
/// the negative), each margin summed in `f64` in index order. The count is an integer sum,
/// so it is the same for any thread count; allocates nothing. Indices must be in range.
fn pairwise_hits(a: &[f32], b: &[f32], d: usize, triplets: &[(u32, u32, u32)]) -> usize {
    triplets
        .par_chunks(HITS_CHUNK)
        .map(|chunk| {
            chunk
                .iter()
                .filter(|&&(i, p, q)| {
                    let ai = &a[i as usize * d..][..d];
                    let bp = &b[p as usize * d..][..d];
                    let bq = &b[q as usize * d..][..d];
                    let margin: f64 = ai
                        .iter()
                        .zip(bq.iter().zip(bp))
                        .map(|(&x, (&yq, &yp))| f64::from(x) * (f64::from(yq) - f64::from(yp)))
                        .sum();
                    margin < 0.0
                })
                .count()
        })
        .sum()
}

/// `(inputs, output)` of a node: the output's range lies after every input's (tensors are
/// laid out in creation order), so one split separates them.
fn split_io<'a>(buf: &'a mut [f32], out: &std::ops::Range<usize>) -> (&'a [f32], &'a mut [f32]) {
    let (lo, hi) = buf.split_at_mut(out.start);
    (lo, &mut hi[..out.len()])
}

/// The process group of a forward or backward and its reduction buffers.
struct DistCtx<'a> {
    comm: &'a dyn Collectives,
    scratch: &'a mut Scratch,
    sync_bn: bool,
    local_negatives: bool,
}

impl DistCtx<'_> {
    /// Whether this pass spans several ranks.
    fn spans(&self) -> bool {
        self.comm.size() > 1
    }

    /// A per-item loss whose mean over this rank's `count` items is `loss` (with `hits`
    /// of them counted correct), made the group's: the mean over every rank's items.
    fn group_mean(&mut self, loss: f64, hits: usize, count: usize) -> Result<GroupMean> {
        let mut v = [loss * count as f64, hits as f64, count as f64];
        all_reduce_sum_f64(self.comm, &mut v, self.scratch)?;
        let total = v[2] as usize;
        Ok(GroupMean {
            loss: v[0] / v[2],
            hits: v[1] as usize,
            total,
            share: count as f64 / v[2],
        })
    }

    /// An NT-Xent result whose loss is already this rank's part of the group's mean (the
    /// kernel divided by the group's anchor count), made the group's: the summed loss and
    /// the mean accuracy (every rank has as many anchors).
    fn group_ntxent(&mut self, o: NtXentOutput) -> Result<NtXentOutput> {
        let mut v = [o.loss_f64, f64::from(o.accuracy)];
        all_reduce_sum_f64(self.comm, &mut v, self.scratch)?;
        Ok(NtXentOutput {
            loss: v[0] as f32,
            loss_f64: v[0],
            accuracy: (v[1] / self.comm.size() as f64) as f32,
        })
    }
}

/// A loss averaged over a data-parallel group's items.
struct GroupMean {
    /// The mean over every rank's items.
    loss: f64,
    /// Items counted correct, over every rank.
    hits: usize,
    /// Items over every rank.
    total: usize,
    /// This rank's items over `total`: the factor of its own mean's gradient.
    share: f64,
}

/// `v *= k`.
fn scale_in_place(v: &mut [f32], k: f64) {
    let k = k as f32;
    for x in v {
        *x *= k;
    }
}

/// Resizes a buffer of a data-parallel step on its first use (later steps reuse it).
fn sized<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() != len {
        v.resize(len, T::default());
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn forward_node(
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
    let p = |i: usize| &param[params[i].range.clone()];
    match &mut node.op {
        Op::Input => {}
        Op::Embedding {
            table,
            ids,
            len,
            dim,
            padding,
            mean: true,
            ..
        } => {
            let (tab, len, dim, padding) = (p(*table), *len, *dim, *padding);
            y.par_chunks_mut(dim)
                .zip(ids.par_chunks(len))
                .for_each(|(ys, seq)| {
                    ys.fill(0.0);
                    let mut count = 0usize;
                    for &id in seq.iter().filter(|&&id| Some(id) != padding) {
                        let row = &tab[id as usize * dim..(id as usize + 1) * dim];
                        ys.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                        count += 1;
                    }
                    if count > 0 {
                        let inv = 1.0 / count as f32;
                        ys.iter_mut().for_each(|a| *a *= inv);
                    }
                });
        }
        Op::Embedding {
            table,
            ids,
            len,
            dim,
            mean: false,
            ..
        } => {
            let (tab, len, dim) = (p(*table), *len, *dim);
            y.par_chunks_mut(dim * len)
                .zip(ids.par_chunks(len))
                .for_each(|(ys, seq)| {
                    for (t, &id) in seq.iter().enumerate() {
                        let row = &tab[id as usize * dim..(id as usize + 1) * dim];
                        for (e, &v) in row.iter().enumerate() {
                            ys[e * len + t] = v;
                        }
                    }
                });
        }
        Op::Conv { g, w } => conv2d_forward(g, x_of(0), p(*w), None, false, y)?,
        Op::BatchNorm {
            bn,
            gamma,
            beta,
            mean,
            var,
            relu,
            saved,
            sync,
        } => {
            let aff = BnAffine {
                gamma: p(*gamma),
                beta: p(*beta),
            };
            let (rm, rv) = (buffers[*mean].range.clone(), buffers[*var].range.clone());
            match mode {
                Mode::Train => {
                    let (a, b) = buffer.split_at_mut(rv.start);
                    let running = BnRunning {
                        mean: &mut a[rm],
                        var: &mut b[..rv.len()],
                    };
                    if dist.sync_bn && dist.spans() {
                        let (comm, scratch) = (dist.comm, &mut *dist.scratch);
                        let ranks = comm.size();
                        let mut reduce = |buf: &mut [f64]| {
                            let all = gather_f64(comm, buf, scratch)?;
                            batchnorm_merge_moments(all, buf)
                        };
                        let sync = BnSync {
                            buf: sync,
                            reduce: &mut reduce,
                            ranks,
                        };
                        batchnorm_forward_train_synced(
                            bn,
                            aff,
                            x_of(0),
                            running,
                            saved,
                            y,
                            *relu,
                            sync,
                        )?;
                    } else if *relu {
                        batchnorm_relu_forward_train(bn, aff, x_of(0), running, saved, y)?;
                    } else {
                        batchnorm_forward_train(bn, aff, x_of(0), running, saved, y)?;
                    }
                }
                Mode::Eval => {
                    let (m, v) = (&buffer[rm], &buffer[rv]);
                    if *relu {
                        batchnorm_relu_forward_eval(bn, aff, m, v, x_of(0), y)?;
                    } else {
                        batchnorm_forward_eval(bn, aff, m, v, x_of(0), y)?;
                    }
                }
            }
        }
        Op::Relu => relu(x_of(0), y)?,
        Op::Add { relu } => {
            if *relu {
                add_relu(x_of(0), x_of(1), y)?;
            } else {
                add(x_of(0), x_of(1), y)?;
            }
        }
        Op::GlobalAvgPool { planes, hw } => global_avg_pool_forward(*planes, *hw, x_of(0), y)?,
        Op::GlobalMaxPool { planes, hw, relu } => {
            if *relu {
                global_max_pool_relu_forward(*planes, *hw, x_of(0), y)?;
            } else {
                global_max_pool_forward(*planes, *hw, x_of(0), y)?;
            }
        }
        Op::Linear { l, w, b, relu } => {
            linear_forward(l, x_of(0), p(*w), b.map(p), *relu, y)?;
        }
        Op::NtXent {
            tau,
            halves,
            ws,
            out,
            dz,
            loss64,
            gathered,
            dz_all,
        } => {
            let s = &tensors[node.inputs[0].0].shape;
            let (m, d) = (s[0], s[1]);
            let pairing = if *halves {
                Pairing::Halves
            } else {
                Pairing::Adjacent
            };
            let o = if mode == Mode::Train && dist.spans() && dist.local_negatives {
                // Each rank's rows contrasted among themselves; the loss (and so the
                // gradient) is this rank's share of the mean over the group's anchors.
                let cfg = NtXentConfig::new(*tau)
                    .pairing(pairing)
                    .mean_over(dist.comm.size() * m);
                let o = ws.forward_backward(x_of(0), m, d, &cfg, dz)?;
                dist.group_ntxent(o)?
            } else if mode == Mode::Train && dist.spans() {
                // Every rank's z gathered (rank order); this rank's rows are the anchors,
                // every row a candidate; the loss is the mean over all ranks' anchors; the
                // gradient of every row is summed back to the rank that owns it.
                if *halves {
                    return Err(err(
                        &node.name,
                        "a data-parallel NT-Xent needs the adjacent layout (views 2k, 2k+1)".into(),
                    ));
                }
                let (p, r) = (dist.comm.size(), dist.comm.rank());
                let all = sized(gathered, p * m * d);
                dist.comm.all_gather_f32(x_of(0), all)?;
                let cfg = NtXentConfig::new(*tau)
                    .pairing(Pairing::Adjacent)
                    .anchors(r * m..(r + 1) * m)
                    .mean_over(p * m);
                let dall = sized(dz_all, p * m * d);
                let o = ws.forward_backward(all, p * m, d, &cfg, dall)?;
                reduce_scatter_rows(dist.comm, dall, dz, dist.scratch)?;
                dist.group_ntxent(o)?
            } else {
                let cfg = NtXentConfig::new(*tau).pairing(pairing);
                match mode {
                    Mode::Train => ws.forward_backward(x_of(0), m, d, &cfg, dz)?,
                    Mode::Eval => ws.forward(x_of(0), m, d, &cfg)?,
                }
            };
            *out = Some(o);
            y[0] = o.loss;
            *loss64 = o.loss_f64;
        }
        Op::QtInBatch {
            scale,
            self_offset,
            targets,
            ws,
            stats,
            df,
            dg,
            loss64,
            gathered,
            dg_all,
        } => {
            let (fs, gs) = (
                &tensors[node.inputs[0].0].shape,
                &tensors[node.inputs[1].0].shape,
            );
            let (n, m, d) = (fs[0], gs[0], fs[1]);
            let st = if mode == Mode::Train && dist.spans() {
                // This rank's anchors f against every rank's candidates g, gathered in rank
                // order: the targets' candidates are numbered in that order (rank q's row k
                // is q m + k, see `Graph::set_targets`), the excluded self is moved there.
                // The loss is the mean over the group's target pairs: this rank's mean and
                // gradients are weighted by its share of them, and the candidates' gradients
                // summed back to their owners.
                let (p, r) = (dist.comm.size(), dist.comm.rank());
                let all = sized(gathered, p * m * d);
                dist.comm.all_gather_f32(x_of(1), all)?;
                let b = QtBatch {
                    f: x_of(0),
                    n,
                    g: all,
                    m: p * m,
                    d,
                    scale: *scale,
                    self_offset: self_offset.map(|o| o + r * m),
                    targets,
                };
                let dall = sized(dg_all, p * m * d);
                let st = ws.forward_backward(&b, df, dall)?;
                let g = dist.group_mean(st.loss, st.hits, st.targets)?;
                scale_in_place(df, g.share);
                scale_in_place(dall, g.share);
                reduce_scatter_rows(dist.comm, dall, dg, dist.scratch)?;
                QtStats {
                    loss: g.loss,
                    hits: g.hits,
                    targets: g.total,
                }
            } else {
                let b = QtBatch {
                    f: x_of(0),
                    n,
                    g: x_of(1),
                    m,
                    d,
                    scale: *scale,
                    self_offset: *self_offset,
                    targets,
                };
                match mode {
                    Mode::Train => ws.forward_backward(&b, df, dg)?,
                    Mode::Eval => ws.forward(&b)?,
                }
            };
            *stats = Some(st);
            y[0] = st.loss as f32;
            *loss64 = st.loss;
        }
        Op::QtPairwise {
            n_a,
            n_b,
            triplets,
            hits,
            da,
            db,
            loss64,
        } => {
            *hits = None;
            if triplets.is_empty() {
                return Err(err(
                    &node.name,
                    "no triplets set (Graph::set_triplets)".into(),
                ));
            }
            let d = tensors[node.inputs[0].0].shape[1];
            let (a, b) = (x_of(0), x_of(1));
            // The gradients come with the loss; in evaluation mode they are simply not used.
            let mut loss = qt_pairwise_logistic(a, *n_a, b, *n_b, d, triplets, da, db)?;
            let mut h = (pairwise_hits(a, b, d, triplets), triplets.len());
            if mode == Mode::Train && dist.spans() {
                // The mean over the group's triplets (negatives stay in the rank's batch).
                let g = dist.group_mean(loss, h.0, h.1)?;
                scale_in_place(da, g.share);
                scale_in_place(db, g.share);
                loss = g.loss;
                h = (g.hits, g.total);
            }
            *hits = Some(h);
            y[0] = loss as f32;
            *loss64 = loss;
        }
        Op::SoftmaxCe {
            n,
            c,
            labels,
            correct,
            total,
            dlogits,
            loss64,
        } => {
            let train = mode == Mode::Train;
            let dl = train.then_some(&mut dlogits[..]);
            let st = softmax_cross_entropy(x_of(0), *n, *c, labels, dl)?;
            let (mut loss, mut hits, mut rows) = (st.loss, st.correct, *n);
            if train && dist.spans() {
                // The mean over the whole group's rows.
                let g = dist.group_mean(loss, hits, *n)?;
                scale_in_place(dlogits, g.share);
                (loss, hits, rows) = (g.loss, g.hits, g.total);
            }
            *correct = hits;
            *total = rows;
            y[0] = loss as f32;
            *loss64 = loss;
        }
    }
    Ok(())
}

/// Writes the gradient of input `t` with `f(dst)`, which overwrites `dst`: straight into
/// the tensor's gradient buffer on the first write of this backward, else into `scratch` and
/// then added. For a tensor without a gradient (a graph input) `f` runs on the scratch only
/// when `always` (the kernel also produces parameter gradients), else not at all.
#[allow(clippy::too_many_arguments)]
fn emit(
    tensors: &[TensorInfo],
    written: &mut [bool],
    scratch: &mut [f32],
    lo: &mut [f32],
    t: TensorId,
    always: bool,
    f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
) -> Result<()> {
    let Some(range) = tensors[t.0].grad.clone() else {
        if always {
            f(&mut scratch[..tensors[t.0].act.len()])?;
        }
        return Ok(());
    };
    if written[t.0] {
        let s = &mut scratch[..range.len()];
        f(s)?;
        add_assign(&mut lo[range], s)?;
    } else {
        written[t.0] = true;
        f(&mut lo[range])?;
    }
    Ok(())
}

/// [`emit`] of `seed * g` as the gradient of input `t`.
fn emit_scaled(
    tensors: &[TensorInfo],
    written: &mut [bool],
    scratch: &mut [f32],
    lo: &mut [f32],
    t: TensorId,
    seed: f32,
    g: &[f32],
) -> Result<()> {
    emit(tensors, written, scratch, lo, t, false, &mut |dx| {
        for (d, &v) in dx.iter_mut().zip(g) {
            *d = seed * v;
        }
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn backward_node(
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
    let x_r = |i: usize| tensors[node.inputs[i].0].act.clone();
    let p = |i: usize| &param[params[i].range.clone()];
    let (lo, hi) = grad.split_at_mut(gout_r.start);
    if let Op::Add { relu } = node.op {
        // Both inputs get the same (masked) gradient: computed once into the first input's
        // buffer when that is its first write (else into the scratch), then copied or added
        // to the second's.
        let dy = &hi[..gout_r.len()];
        let (a, b) = (node.inputs[0], node.inputs[1]);
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
        return Ok(());
    }
    let dy = &hi[..gout_r.len()];
    let x0 = node.inputs.first().copied();
    match &mut node.op {
        Op::Input => {}
        Op::Embedding {
            table,
            ids,
            len,
            dim,
            padding,
            mean,
            ..
        } => {
            // Summed sequentially in row and position order (N * L * dim additions, cheap
            // beside the convolution), so the sums do not depend on the thread count. Each
            // non-padding token gets its position's gradient, or with `mean` its row's
            // gradient divided by the row's count of such tokens.
            let (len, dim, padding, mean) = (*len, *dim, *padding, *mean);
            let g = &mut param_grad[params[*table].range.clone()];
            g.fill(0.0);
            for (b, seq) in ids.chunks(len).enumerate() {
                let tokens = seq
                    .iter()
                    .enumerate()
                    .filter(|&(_, &id)| Some(id) != padding);
                if mean {
                    let count = tokens.clone().count();
                    if count == 0 {
                        continue;
                    }
                    let inv = 1.0 / count as f32;
                    let dys = &dy[b * dim..(b + 1) * dim];
                    for (_, &id) in tokens {
                        let row = &mut g[id as usize * dim..(id as usize + 1) * dim];
                        row.iter_mut().zip(dys).for_each(|(r, &d)| *r += inv * d);
                    }
                } else {
                    let dys = &dy[b * dim * len..(b + 1) * dim * len];
                    for (t, &id) in tokens {
                        let row = &mut g[id as usize * dim..(id as usize + 1) * dim];
                        for (e, r) in row.iter_mut().enumerate() {
                            *r += dys[e * len + t];
                        }
                    }
                }
            }
        }
        Op::Conv { g, w } => {
            let pr = params[*w].range.clone();
            conv2d_backward_weight(g, &act[x_r(0)], dy, &mut param_grad[pr], false)?;
            let wv = p(*w);
            let x0 = x0.expect("one input");
            emit(tensors, written, scratch, lo, x0, false, &mut |dx| {
                conv2d_backward_input(g, dy, wv, dx)
            })?;
        }
        Op::BatchNorm {
            bn,
            gamma,
            beta,
            relu,
            saved,
            sync,
            ..
        } => {
            // gamma and beta are adjacent in the arena (added one after the other).
            let (gr, br) = (params[*gamma].range.clone(), params[*beta].range.clone());
            let (pg_lo, pg_hi) = param_grad.split_at_mut(br.start);
            let mut dg = Some((&mut pg_lo[gr], &mut pg_hi[..br.len()]));
            let affine = BnAffine {
                gamma: p(*gamma),
                beta: p(*beta),
            };
            let x = &act[x_r(0)];
            let x0 = x0.expect("one input");
            let synced = dist.sync_bn && dist.spans();
            let (comm, dscratch) = (dist.comm, &mut *dist.scratch);
            let c = bn.c;
            emit(tensors, written, scratch, lo, x0, true, &mut |dx| {
                let (dgamma, dbeta) = dg.take().expect("called once");
                let grads = BnGrads { dx, dgamma, dbeta };
                if synced {
                    let mut reduce = |buf: &mut [f64]| all_reduce_sum_f64(comm, buf, dscratch);
                    let sync = BnSync {
                        buf: &mut sync[..2 * c],
                        reduce: &mut reduce,
                        ranks: comm.size(),
                    };
                    batchnorm_backward_synced(bn, affine, *relu, saved, x, dy, grads, sync)
                } else if *relu {
                    batchnorm_relu_backward(bn, affine, saved, x, dy, grads)
                } else {
                    batchnorm_backward(bn, affine.gamma, saved, x, dy, grads)
                }
            })?;
        }
        Op::Relu => {
            let x0 = x0.expect("one input");
            emit(tensors, written, scratch, lo, x0, false, &mut |dx| {
                relu_backward(y, dy, dx)
            })?;
        }
        Op::Add { .. } => unreachable!("handled above"),
        Op::GlobalAvgPool { planes, hw } => {
            let x0 = x0.expect("one input");
            emit(tensors, written, scratch, lo, x0, false, &mut |dx| {
                global_avg_pool_backward(*planes, *hw, dy, dx)
            })?;
        }
        Op::GlobalMaxPool { planes, hw, relu } => {
            let x = &act[x_r(0)];
            let x0 = x0.expect("one input");
            emit(tensors, written, scratch, lo, x0, false, &mut |dx| {
                if *relu {
                    global_max_pool_relu_backward(*planes, *hw, x, dy, dx)
                } else {
                    global_max_pool_backward(*planes, *hw, x, dy, dx)
                }
            })?;
        }
        Op::Linear { l, w, b, relu } => {
            // A fused ReLU masks the output gradient first (into the front of the scratch;
            // the input gradient then goes straight to its buffer, accumulating with
            // beta = 1 when needed, so the rest of the scratch is not used).
            let (masked, _) = scratch.split_at_mut(if *relu { dy.len() } else { 0 });
            let dyv: &[f32] = if *relu {
                relu_backward(y, dy, masked)?;
                masked
            } else {
                dy
            };
            let x = &act[x_r(0)];
            let wr = params[*w].range.clone();
            linear_backward_weight(l, dyv, x, &mut param_grad[wr], 0.0)?;
            if let Some(b) = b {
                let br = params[*b].range.clone();
                linear_backward_bias(l, dyv, &mut param_grad[br], 0.0)?;
            }
            let t = x0.expect("one input");
            if let Some(range) = tensors[t.0].grad.clone() {
                let beta = if written[t.0] { 1.0 } else { 0.0 };
                written[t.0] = true;
                linear_backward_input(l, dyv, p(*w), &mut lo[range], beta)?;
            }
        }
        // Loss nodes computed their input gradients in the forward; the backward scales them
        // by the gradient arriving at the loss.
        Op::QtInBatch { df: g0, dg: g1, .. } | Op::QtPairwise { da: g0, db: g1, .. } => {
            // With both inputs the same tensor, the second emit adds to the first.
            for (k, g) in [(0, &*g0), (1, &*g1)] {
                emit_scaled(tensors, written, scratch, lo, node.inputs[k], dy[0], g)?;
            }
        }
        Op::NtXent { dz: g, .. } | Op::SoftmaxCe { dlogits: g, .. } => {
            let x0 = x0.expect("one input");
            emit_scaled(tensors, written, scratch, lo, x0, dy[0], g)?;
        }
    }
    Ok(())
}
