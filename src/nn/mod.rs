//! Model builders on the static graph: the ResNet-mini encoder of docs/performance.md
//! (configurable; above 64 pixels with the stride-2 stem of resnet_mini96), SimCLR's
//! projection head, RotNet's rotation classifier and the linear probe.
//!
//! Tensor names follow the PyTorch reference model (the PyTorch reference of docs/performance.md):
//! `stem.0` (convolution), `stem.1` (BatchNorm), `l1.c1`, `l1.b1`, `l1.c2`, `l1.b2`, `l2.sc.0`,
//! `l2.sc.1`, ..., `head.0`, `head.2`, with `.weight`, `.bias`, `.running_mean` and
//! `.running_var` suffixes, so a checkpoint maps onto a PyTorch `state_dict` key for key.
//! With more than one block per stage the blocks are `l1.0`, `l1.1`, ...

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, GraphMemory, TensorId};

/// The encoder's configuration. [`ResNetConfig::default`] is the canonical ResNet-mini
/// (3 x 32 x 32 input, widths 32/64/128, one block per stage, head 128 -> 128 -> 64).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// Input channels (3 for RGB, 1 for Fashion-MNIST).
    pub in_channels: usize,
    /// Input height and width. Above [`ResNetConfig::STRIDE_1_STEM_MAX`] pixels the stem
    /// convolution has stride 2 (see [`ResNetConfig::stem_stride`]).
    pub image_size: usize,
    /// Channels of each stage; stage `s > 0` halves the resolution.
    pub widths: Vec<usize>,
    /// BasicBlocks per stage.
    pub blocks: Vec<usize>,
    /// Hidden width of the projection head.
    pub head_hidden: usize,
    /// Output width of the projection head (z).
    pub head_out: usize,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            image_size: 32,
            widths: vec![32, 64, 128],
            blocks: vec![1, 1, 1],
            head_hidden: 128,
            head_out: 64,
        }
    }
}

impl ResNetConfig {
    /// The largest input size whose stem convolution keeps stride 1.
    pub const STRIDE_1_STEM_MAX: usize = 64;

    /// The Fashion-MNIST variant: 1 x 28 x 28 input.
    pub fn fashion_mnist() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            ..Self::default()
        }
    }

    /// The width of the representation h.
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// The stride of the stem convolution: 1 up to [`ResNetConfig::STRIDE_1_STEM_MAX`]
    /// pixels (ResNet-mini, 32 x 32 and 28 x 28), 2 above (resnet_mini96, 96 x 96).
    ///
    /// Derived from `image_size` rather than stored, so that the configuration's JSON (kept
    /// in every checkpoint's metadata) is unchanged. Why: after a stride-1 stem the feature
    /// maps of a 96-pixel image are 9x the area of a 32-pixel image's, and so is the cost of
    /// every layer; the stride-2 stem (96 -> 48) keeps them at 2.25x, as the resnet_mini96
    /// benchmark model defines.
    pub fn stem_stride(&self) -> usize {
        if self.image_size > Self::STRIDE_1_STEM_MAX {
            2
        } else {
            1
        }
    }

    /// The height (and width) of the feature maps: `[0]` after the stem, then after each
    /// stage. Every 3 x 3 padding-1 convolution and 1 x 1 shortcut of stride `s` maps `n` to
    /// `(n - 1) / s + 1`, `n / s` rounded up (stride 2: 96 -> 48, 65 -> 33), so no map of a
    /// non-empty image is ever empty.
    pub fn feature_map_sizes(&self) -> Vec<usize> {
        let down = |n: usize, s: usize| n.div_ceil(s);
        let mut size = down(self.image_size, self.stem_stride());
        let mut sizes = vec![size];
        for s in 0..self.widths.len() {
            if s > 0 {
                size = down(size, 2);
            }
            sizes.push(size);
        }
        sizes
    }

    /// The multiply-adds of one image's forward pass through the encoder, times 2 (the
    /// convolutions' and, with `head`, the projection head's flops; BatchNorm, ReLU and
    /// pooling are not counted, as FLOP counts of CNNs conventionally leave them out).
    /// ResNet-mini at 32 x 32: about 0.098 GFLOP. A training step costs about 3x the
    /// forward (forward, input gradient, weight gradient).
    pub fn forward_flops(&self, head: bool) -> f64 {
        let sizes = self.feature_map_sizes();
        let conv = |c_in: usize, c_out: usize, k: usize, out: usize| {
            2.0 * (c_in * c_out * k * k) as f64 * (out * out) as f64
        };
        let mut flops = conv(self.in_channels, self.widths[0], 3, sizes[0]);
        let mut c_in = self.widths[0];
        for (s, (&w, &nb)) in self.widths.iter().zip(&self.blocks).enumerate() {
            let out = sizes[s + 1];
            for k in 0..nb {
                let stride = if s > 0 && k == 0 { 2 } else { 1 };
                flops += conv(c_in, w, 3, out) + conv(w, w, 3, out);
                if stride != 1 || c_in != w {
                    flops += conv(c_in, w, 1, out);
                }
                c_in = w;
            }
        }
        if head {
            flops += 2.0 * (c_in * self.head_hidden + self.head_hidden * self.head_out) as f64;
        }
        flops
    }

    /// Checks that the configuration describes a buildable network.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidArgument {
                op: "resnet config",
                msg,
            })
        };
        if self.in_channels == 0 || self.image_size == 0 {
            return bad(format!(
                "input {} x {} x {} is empty",
                self.in_channels, self.image_size, self.image_size
            ));
        }
        if self.widths.is_empty() || self.widths.len() != self.blocks.len() {
            return bad(format!(
                "widths {:?} and blocks {:?} must be non-empty and of equal length",
                self.widths, self.blocks
            ));
        }
        if self.widths.contains(&0) || self.blocks.contains(&0) {
            return bad(format!(
                "widths {:?} and blocks {:?} must be positive",
                self.widths, self.blocks
            ));
        }
        if self.head_hidden == 0 || self.head_out == 0 {
            return bad("head widths must be positive".into());
        }
        Ok(())
    }
}

/// The encoder's input and its representation `h` (`N x feature_dim`), with the feature
/// maps of the stem and of the last stage (whose shapes follow
/// [`ResNetConfig::feature_map_sizes`]).
#[derive(Clone, Copy, Debug)]
pub struct Encoder {
    pub input: TensorId,
    /// The stem's output (convolution, BatchNorm, ReLU).
    pub stem: TensorId,
    /// The last stage's output, the maps the global average pool reduces to `h`.
    pub features: TensorId,
    /// Kept readable after any pass ([`GraphBuilder::keep`]).
    pub h: TensorId,
}

fn basic_block(
    b: &mut GraphBuilder,
    name: &str,
    x: TensorId,
    c_out: usize,
    stride: usize,
) -> Result<TensorId> {
    let c_in = b.shape(x)[1];
    let y = b.conv2d(&format!("{name}.c1"), x, c_out, 3, stride, 1)?;
    let y = b.batchnorm(&format!("{name}.b1"), y, true)?;
    let y = b.conv2d(&format!("{name}.c2"), y, c_out, 3, 1, 1)?;
    let y = b.batchnorm(&format!("{name}.b2"), y, false)?;
    let shortcut = if stride != 1 || c_in != c_out {
        let s = b.conv2d(&format!("{name}.sc.0"), x, c_out, 1, stride, 0)?;
        b.batchnorm(&format!("{name}.sc.1"), s, false)?
    } else {
        x
    };
    b.add(&format!("{name}.out"), y, shortcut, true)
}

/// Adds the ResNet encoder for a batch of `batch` images; returns its input and `h`.
///
/// # Errors
/// An invalid configuration, an empty image included (any non-empty one fits the strides:
/// see [`ResNetConfig::feature_map_sizes`]).
pub fn resnet_encoder(b: &mut GraphBuilder, cfg: &ResNetConfig, batch: usize) -> Result<Encoder> {
    cfg.validate()?;
    let input = b.input(
        "input",
        &[batch, cfg.in_channels, cfg.image_size, cfg.image_size],
    )?;
    let y = b.conv2d("stem.0", input, cfg.widths[0], 3, cfg.stem_stride(), 1)?;
    let stem = b.batchnorm("stem.1", y, true)?;
    let mut y = stem;
    for (s, (&w, &nb)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
        for k in 0..nb {
            let name = if nb == 1 {
                format!("l{}", s + 1)
            } else {
                format!("l{}.{k}", s + 1)
            };
            let stride = if s > 0 && k == 0 { 2 } else { 1 };
            y = basic_block(b, &name, y, w, stride)?;
        }
    }
    let h = b.global_avg_pool("pool", y)?;
    // Read by the embedder after a pass.
    b.keep(h);
    Ok(Encoder {
        input,
        stem,
        features: y,
        h,
    })
}

/// SimCLR's projection head g: `Linear(h -> hidden) -> ReLU -> Linear(hidden -> out)`.
///
/// # Errors
/// A non-matrix `h`.
pub fn projection_head(
    b: &mut GraphBuilder,
    h: TensorId,
    hidden: usize,
    out: usize,
) -> Result<TensorId> {
    let y = b.linear("head.0", h, hidden, true, true)?;
    b.linear("head.2", y, out, true, false)
}

/// A SimCLR model: encoder, projection head and NT-Xent over `2 * images` views.
#[derive(Debug)]
pub struct SimclrModel {
    pub graph: Graph,
    /// `2N x C x H x W`, rows `2k` and `2k + 1` the two views of image k.
    pub input: TensorId,
    pub h: TensorId,
    pub z: TensorId,
    pub loss: TensorId,
}

/// Builds SimCLR for `images` images per step (`2 * images` views).
///
/// # Errors
/// An invalid configuration or temperature.
pub fn simclr(cfg: &ResNetConfig, images: usize, tau: f32, seed: u64) -> Result<SimclrModel> {
    let (b, enc, z, loss) = simclr_nodes(cfg, images, tau)?;
    Ok(SimclrModel {
        graph: b.build(seed)?,
        input: enc.input,
        h: enc.h,
        z,
        loss,
    })
}

/// The memory [`simclr`] would take on `threads` threads, from its plan (nothing large is
/// allocated).
///
/// # Errors
/// As [`simclr`].
pub fn simclr_memory(
    cfg: &ResNetConfig,
    images: usize,
    tau: f32,
    threads: usize,
) -> Result<GraphMemory> {
    Ok(simclr_nodes(cfg, images, tau)?.0.memory(threads))
}

fn simclr_nodes(
    cfg: &ResNetConfig,
    images: usize,
    tau: f32,
) -> Result<(GraphBuilder, Encoder, TensorId, TensorId)> {
    let mut b = GraphBuilder::new();
    let views = images
        .checked_mul(2)
        .ok_or_else(|| Error::InvalidArgument {
            op: "simclr",
            msg: format!("{images} images: twice as many views overflow"),
        })?;
    let enc = resnet_encoder(&mut b, cfg, views)?;
    let z = projection_head(&mut b, enc.h, cfg.head_hidden, cfg.head_out)?;
    let loss = b.nt_xent("loss", z, tau, false)?;
    Ok((b, enc, z, loss))
}

/// The memory of an encoder alone for `batch` images, planned for evaluation only (an
/// embedder's graph: [`GraphBuilder::eval_only`]) on `threads` threads.
///
/// # Errors
/// As [`resnet_encoder`].
pub fn encoder_memory(cfg: &ResNetConfig, batch: usize, threads: usize) -> Result<GraphMemory> {
    let mut b = GraphBuilder::new();
    resnet_encoder(&mut b, cfg, batch)?;
    b.eval_only();
    Ok(b.memory(threads))
}

/// An encoder with a classifier on `h` and softmax cross-entropy: RotNet's 4-way rotation
/// head (`classes = 4`), or a supervised baseline.
#[derive(Debug)]
pub struct ClassifierModel {
    pub graph: Graph,
    pub input: TensorId,
    pub h: TensorId,
    pub logits: TensorId,
    pub loss: TensorId,
}

/// Builds the encoder with a linear classifier `classifier` on `h`.
///
/// # Errors
/// An invalid configuration or `classes == 0`.
pub fn encoder_classifier(
    cfg: &ResNetConfig,
    batch: usize,
    classes: usize,
    seed: u64,
) -> Result<ClassifierModel> {
    let (b, enc, logits, loss) = classifier_nodes(cfg, batch, classes)?;
    Ok(ClassifierModel {
        graph: b.build(seed)?,
        input: enc.input,
        h: enc.h,
        logits,
        loss,
    })
}

/// The memory [`encoder_classifier`] would take on `threads` threads, from its plan.
///
/// # Errors
/// As [`encoder_classifier`].
pub fn encoder_classifier_memory(
    cfg: &ResNetConfig,
    batch: usize,
    classes: usize,
    threads: usize,
) -> Result<GraphMemory> {
    Ok(classifier_nodes(cfg, batch, classes)?.0.memory(threads))
}

fn classifier_nodes(
    cfg: &ResNetConfig,
    batch: usize,
    classes: usize,
) -> Result<(GraphBuilder, Encoder, TensorId, TensorId)> {
    let mut b = GraphBuilder::new();
    let enc = resnet_encoder(&mut b, cfg, batch)?;
    let logits = b.linear("classifier", enc.h, classes, true, false)?;
    let loss = b.softmax_cross_entropy("loss", logits)?;
    Ok((b, enc, logits, loss))
}

/// The linear probe: a linear layer and softmax cross-entropy on frozen features.
#[derive(Debug)]
pub struct ProbeModel {
    pub graph: Graph,
    /// `batch x features`.
    pub input: TensorId,
    pub logits: TensorId,
    pub loss: TensorId,
}

/// Builds a linear probe for `features`-wide inputs and `classes` classes.
///
/// # Errors
/// Zero sizes.
pub fn linear_probe(
    batch: usize,
    features: usize,
    classes: usize,
    seed: u64,
) -> Result<ProbeModel> {
    let mut b = GraphBuilder::new();
    let input = b.input("features", &[batch, features])?;
    let logits = b.linear("probe", input, classes, true, false)?;
    let loss = b.softmax_cross_entropy("loss", logits)?;
    Ok(ProbeModel {
        graph: b.build(seed)?,
        input,
        logits,
        loss,
    })
}

/// The sentence encoder of Quick Thoughts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SentenceEncoderKind {
    /// Token embedding, a `1 x kernel` convolution over time, ReLU, max over time.
    Cnn,
    /// The bag-of-words baseline: the mean of the sentence's token embeddings (padding
    /// left out, PyTorch's `EmbeddingBag`).
    Bow,
}

/// The configuration of a Quick Thoughts sentence encoder (each of f and g).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentenceEncoderConfig {
    pub kind: SentenceEncoderKind,
    /// Vocabulary size (token ids are below it; id 0 is the padding, a zero vector).
    pub vocab: usize,
    /// Embedding width.
    pub embed_dim: usize,
    /// Convolution output channels, the width of the representation (CNN only).
    pub channels: usize,
    /// Convolution width in tokens, odd (CNN only).
    pub kernel: usize,
    /// Tokens per sentence: longer sentences are truncated, shorter ones padded.
    pub max_len: usize,
}

impl SentenceEncoderConfig {
    /// The width of one encoder's representation (`channels` for the CNN, `embed_dim`
    /// for the bag of words); the sentence representation `[f(s); g(s)]` is twice that.
    pub fn feature_dim(&self) -> usize {
        match self.kind {
            SentenceEncoderKind::Cnn => self.channels,
            SentenceEncoderKind::Bow => self.embed_dim,
        }
    }

    /// Checks that the configuration describes a buildable encoder.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidArgument {
                op: "sentence encoder config",
                msg,
            })
        };
        if self.vocab < 2 || self.embed_dim == 0 || self.max_len == 0 {
            return bad(format!(
                "vocab {} (at least 2: padding and a token), embed_dim {} and max_len {} must be positive",
                self.vocab, self.embed_dim, self.max_len
            ));
        }
        if self.kind == SentenceEncoderKind::Cnn
            && (self.channels == 0 || self.kernel.is_multiple_of(2))
        {
            return bad(format!(
                "channels {} must be positive and kernel {} odd",
                self.channels, self.kernel
            ));
        }
        Ok(())
    }
}

/// One sentence encoder: its token input (an embedding node, fed with
/// [`Graph::set_tokens`]) and its representation (`batch x feature_dim`).
#[derive(Clone, Copy, Debug)]
pub struct SentenceEncoder {
    pub tokens: TensorId,
    /// Kept readable after any pass ([`GraphBuilder::keep`]).
    pub h: TensorId,
}

/// Adds a sentence encoder named `prefix` (`{prefix}.emb`, `{prefix}.conv`, ...) for
/// `batch` sentences.
///
/// # Errors
/// An invalid configuration.
pub fn sentence_encoder(
    b: &mut GraphBuilder,
    prefix: &str,
    cfg: &SentenceEncoderConfig,
    batch: usize,
) -> Result<SentenceEncoder> {
    cfg.validate()?;
    let name = format!("{prefix}.emb");
    let (len, vocab, dim) = (cfg.max_len, cfg.vocab, cfg.embed_dim);
    if cfg.kind == SentenceEncoderKind::Bow {
        let tokens = b.embedding_bag(&name, batch, len, vocab, dim, Some(0))?;
        // Read by the embedder after a pass.
        b.keep(tokens);
        return Ok(SentenceEncoder { tokens, h: tokens });
    }
    let tokens = b.embedding(&name, batch, len, vocab, dim, Some(0))?;
    let h = match cfg.kind {
        SentenceEncoderKind::Cnn => {
            let y = b.conv2d_rect(
                &format!("{prefix}.conv"),
                tokens,
                cfg.channels,
                (1, cfg.kernel),
                (1, 1),
                (0, cfg.kernel / 2),
            )?;
            // ReLU and max over time as one node (the same values, without the ReLU's
            // full-size output).
            b.global_max_pool_relu(&format!("{prefix}.pool"), y)?
        }
        SentenceEncoderKind::Bow => unreachable!("returned above"),
    };
    // Read by the embedder after a pass.
    b.keep(h);
    Ok(SentenceEncoder { tokens, h })
}

/// The Quick Thoughts objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QtObjective {
    /// The paper's, with two encoders f and g: a softmax per sentence over `f(s) . g(c)` for
    /// every other sentence `c` of the batch; the targets are its previous and next
    /// sentence. The representation is `[f(s); g(s)]`.
    InBatch,
    /// The pairwise logistic form of the lecture notes, with one encoder f:
    /// `log(1 + exp(f(s) . f(s-) - f(s) . f(s+)))`, `s+` a neighbour and `s-` another
    /// sentence of the batch. The representation is `f(s)`.
    Pairwise,
}

impl QtObjective {
    /// How many sentence encoders the objective trains (f and g, or f alone).
    pub fn encoders(self) -> usize {
        match self {
            QtObjective::InBatch => 2,
            QtObjective::Pairwise => 1,
        }
    }
}

/// Quick Thoughts (Logeswaran and Lee 2018): the sentence encoders of `objective` (f and g,
/// or f alone, in which case `g` is `f`) of the same batch of contiguous sentences, and its
/// loss: the in-batch classification of f's sentences against g's (each sentence's own row
/// excluded; targets set with [`Graph::set_targets`]) or the pairwise logistic loss
/// (triplets set with [`Graph::set_triplets`]).
#[derive(Debug)]
pub struct QuickThoughtsModel {
    pub graph: Graph,
    pub f: SentenceEncoder,
    pub g: SentenceEncoder,
    pub loss: TensorId,
}

/// Builds Quick Thoughts for batches of `batch` sentences; the in-batch objective's logits
/// are `f(s) . g(c) / temperature` (the paper's: 1; the pairwise objective ignores it).
///
/// # Errors
/// An invalid configuration, `batch < 2` or a temperature that is not positive and finite.
pub fn quick_thoughts(
    cfg: &SentenceEncoderConfig,
    batch: usize,
    objective: QtObjective,
    temperature: f32,
    seed: u64,
) -> Result<QuickThoughtsModel> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::InvalidArgument {
            op: "quick thoughts",
            msg: format!("the temperature must be positive and finite, got {temperature}"),
        });
    }
    quick_thoughts_nodes(cfg, batch, objective, objective, temperature)?.build(seed)
}

/// The memory [`quick_thoughts`] would take on `threads` threads, from its plan (nothing
/// large is allocated).
///
/// # Errors
/// As [`quick_thoughts`].
pub fn quick_thoughts_memory(
    cfg: &SentenceEncoderConfig,
    batch: usize,
    objective: QtObjective,
    threads: usize,
) -> Result<GraphMemory> {
    let nodes = quick_thoughts_nodes(cfg, batch, objective, objective, 1.0)?;
    Ok(nodes.builder.memory(threads))
}

/// The memory [`quick_thoughts_in_batch_eval`] would take on `threads` threads.
///
/// # Errors
/// As [`quick_thoughts_in_batch_eval`].
pub fn quick_thoughts_in_batch_eval_memory(
    cfg: &SentenceEncoderConfig,
    batch: usize,
    objective: QtObjective,
    threads: usize,
) -> Result<GraphMemory> {
    let mut nodes = quick_thoughts_nodes(cfg, batch, objective, QtObjective::InBatch, 1.0)?;
    nodes.builder.eval_only();
    Ok(nodes.builder.memory(threads))
}

/// The encoders of `objective` with the in-batch loss over them (`f . g`, or `f . f` for
/// a single encoder): how the previous/next accuracy of any Quick Thoughts model is
/// measured.
///
/// # Errors
/// As [`quick_thoughts`].
pub fn quick_thoughts_in_batch_eval(
    cfg: &SentenceEncoderConfig,
    batch: usize,
    objective: QtObjective,
) -> Result<QuickThoughtsModel> {
    // Ranks do not depend on a positive scale of the scores.
    let mut nodes = quick_thoughts_nodes(cfg, batch, objective, QtObjective::InBatch, 1.0)?;
    nodes.builder.eval_only();
    nodes.build(0)
}

/// A Quick Thoughts graph before it is built.
struct QtNodes {
    builder: GraphBuilder,
    f: SentenceEncoder,
    g: SentenceEncoder,
    loss: TensorId,
}

impl QtNodes {
    fn build(self, seed: u64) -> Result<QuickThoughtsModel> {
        Ok(QuickThoughtsModel {
            graph: self.builder.build(seed)?,
            f: self.f,
            g: self.g,
            loss: self.loss,
        })
    }
}

fn quick_thoughts_nodes(
    cfg: &SentenceEncoderConfig,
    batch: usize,
    encoders: QtObjective,
    loss: QtObjective,
    temperature: f32,
) -> Result<QtNodes> {
    if batch < 2 {
        return Err(Error::InvalidArgument {
            op: "quick thoughts",
            msg: format!("a batch needs at least 2 sentences, got {batch}"),
        });
    }
    let mut b = GraphBuilder::new();
    let f = sentence_encoder(&mut b, "f", cfg, batch)?;
    let g = if encoders.encoders() == 2 {
        sentence_encoder(&mut b, "g", cfg, batch)?
    } else {
        f
    };
    let loss = match loss {
        QtObjective::InBatch => b.qt_in_batch("loss", f.h, g.h, 1.0 / temperature, Some(0))?,
        QtObjective::Pairwise => b.qt_pairwise("loss", f.h, g.h)?,
    };
    Ok(QtNodes {
        builder: b,
        f,
        g,
        loss,
    })
}
