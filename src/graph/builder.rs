//! The graph builder: nodes added in execution order, each checking its input shapes as it
//! is added and returning [`Error::Graph`] naming the node and the shapes; parameters and
//! buffers named after their node (`name.weight`, `name.bias`, `name.running_mean`, ...);
//! the tensors to keep readable after any pass. [`GraphBuilder::build`] (in the plan) lays
//! out the arenas.

use super::ops::batchnorm::BatchNormNode;
use super::ops::embedding::EmbeddingNode;
use super::ops::linear::LinearNode;
use super::ops::ntxent::NtXentNode;
use super::ops::quickthought::{QtInBatchNode, QtPairwiseNode};
use super::ops::softmax::SoftmaxCeNode;
use super::ops::{Node, Op};
use super::{err, ParamKind, TensorId};
use crate::error::Result;
use crate::kernels::batchnorm::{BatchNorm2d, BnSaved, MOMENTS_PER_CHANNEL};
use crate::kernels::conv::Conv2d;
use crate::kernels::embedding::Embedding;
use crate::kernels::linear::Linear;
#[cfg(doc)]
use {super::Graph, crate::error::Error};

/// Adds nodes in execution order, checking shapes as it goes; [`GraphBuilder::build`] plans
/// the buffers.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    /// Name, shape, whether it has a gradient.
    pub(crate) tensors: Vec<(String, Vec<usize>, bool)>,
    pub(crate) nodes: Vec<Node>,
    /// Name, shape, kind, fan-in.
    pub(crate) params: Vec<(String, Vec<usize>, ParamKind, usize)>,
    /// Name, shape, initial value.
    pub(crate) buffers: Vec<(String, Vec<usize>, f32)>,
    /// Tensors marked with [`GraphBuilder::keep`].
    pub(crate) kept: Vec<TensorId>,
    /// Set by [`GraphBuilder::keep_all`].
    pub(crate) keep_all: bool,
    /// Set by [`GraphBuilder::eval_only`].
    pub(crate) eval_only: bool,
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

    /// Keeps `t` readable after any pass: its value ([`Graph::value`]) and gradient
    /// ([`Graph::grad`]) get bytes of their own, where otherwise the plan lets tensors whose
    /// lifetimes do not overlap share bytes, so that a value only holds until its last
    /// reader in the forward or backward. Graph inputs and the tensors no node reads (losses,
    /// outputs) are always kept. Returns `t`.
    pub fn keep(&mut self, t: TensorId) -> TensorId {
        self.kept.push(t);
        t
    }

    /// Keeps every tensor readable after any pass, as [`GraphBuilder::keep`] does one: no
    /// bytes are shared, so the arena holds every value and every gradient at once (for
    /// inspecting a whole pass, or comparing against the shared plan).
    pub fn keep_all(&mut self) {
        self.keep_all = true;
    }

    /// Plans the evaluation forward only: the arena holds what an evaluation pass needs (no
    /// gradients, no value waiting for a backward), and a training forward of the built
    /// graph is an error. For an encoder that only embeds (a monitor, `embed`, a probe's
    /// features), whose training plan would be several times larger and never used.
    pub fn eval_only(&mut self) {
        self.eval_only = true;
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
        let op = Op::Embedding(EmbeddingNode {
            table,
            ids: vec![padding.unwrap_or(0); n * len],
            g: Embedding {
                n,
                len,
                vocab,
                dim,
                padding,
            },
            mean,
        });
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
        let op = Op::BatchNorm(BatchNormNode {
            bn: BatchNorm2d::new(n, c, h, w),
            gamma,
            beta,
            mean,
            var,
            relu,
            saved: BnSaved::new(c),
            sync: vec![0.0; MOMENTS_PER_CHANNEL * c],
        });
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
        let op = Op::Linear(LinearNode { l, w, b, relu });
        Ok(self.push(name, op, vec![x], out))
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
        let op = Op::QtInBatch(QtInBatchNode {
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
        });
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
        let op = Op::QtPairwise(QtPairwiseNode {
            n_a,
            n_b,
            triplets: Vec::new(),
            hits: None,
            da: vec![0.0; n_a * d],
            db: vec![0.0; n_b * d],
            loss64: 0.0,
        });
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
        let op = Op::NtXent(NtXentNode {
            tau,
            halves,
            ws: Box::default(),
            out: None,
            dz: vec![0.0; n * d],
            loss64: 0.0,
            gathered: Vec::new(),
            dz_all: Vec::new(),
        });
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
        let op = Op::SoftmaxCe(SoftmaxCeNode {
            n,
            c,
            labels: vec![0; n],
            correct: 0,
            total: n,
            dlogits: vec![0.0; n * c],
            loss64: 0.0,
        });
        Ok(self.push(name, op, vec![logits], out))
    }
}
