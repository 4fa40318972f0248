//! Self-supervised pretraining, one step at a time: SimCLR (Chen et al. 2020) and RotNet
//! (Gidaris et al. 2018) on an [`ImageSet`], and the frozen encoder's features afterwards.
//!
//! - [`Pretrainer`] owns the model (encoder + projection head + NT-Xent, or encoder +
//!   4-way rotation classifier), the optimizer, the learning-rate schedule and the epoch
//!   sampler. [`Pretrainer::loader`] prepares the augmented batches of the coming steps on
//!   a worker thread; [`Pretrainer::train_step`] runs one step on a prepared batch.
//! - Every batch is a function of `(seed, step)` only, and every kernel is bit-identical for
//!   any thread count, so a run is reproducible bit for bit with 1 or 2 threads, and a run
//!   resumed from a checkpoint continues exactly as the uninterrupted one.
//! - [`Embedder`] computes the representation `h` (eval-mode BatchNorm, before the head) of
//!   any number of images in fixed-size batches, from a trainer or from a checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{self, CheckpointError};
use crate::data::augment::{self, RotnetAugment, SimclrAugment};
use crate::data::loader::{Batch, EpochSampler, Loader};
use crate::data::{fmt_err, ImageSet};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, Mode, TensorId};
use crate::nn::SimclrModel;
use crate::nn::{encoder_classifier, resnet_encoder, simclr, ClassifierModel, ResNetConfig};
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig};
use crate::rng::mix;
use crate::train::{self, Metadata};

/// The self-supervised task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Two augmented views per image, NT-Xent over the `2N` views.
    SimClr,
    /// Each image in its four rotations, a 4-way classifier on the encoder.
    RotNet,
}

impl Method {
    /// `"simclr"` or `"rotnet"`.
    pub fn name(self) -> &'static str {
        match self {
            Method::SimClr => "simclr",
            Method::RotNet => "rotnet",
        }
    }

    /// Encoder inputs per image: 2 views for SimCLR, 4 rotations for RotNet.
    pub fn inputs_per_image(self) -> usize {
        match self {
            Method::SimClr => 2,
            Method::RotNet => 4,
        }
    }
}

/// Everything that defines a pretraining run (the data aside).
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    /// The task.
    pub method: Method,
    /// The encoder (and SimCLR's head).
    pub model: ResNetConfig,
    /// Images per step (SimCLR sees twice as many views, RotNet four times as many inputs).
    pub batch: usize,
    /// NT-Xent temperature (SimCLR).
    pub tau: f32,
    /// The optimizer and its hyperparameters.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over the whole run (its total is the run's length).
    pub schedule: LrSchedule,
    /// SimCLR's augmentations.
    pub augment: SimclrAugment,
    /// RotNet's (the four rotations and an optional flip).
    pub rotnet: RotnetAugment,
    /// The seed of the weights, the data order and every augmentation.
    pub seed: u64,
}

impl PretrainConfig {
    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidArgument {
                op: "pretrain",
                msg,
            })
        };
        if self.batch < 2 {
            return bad(format!(
                "the batch must hold at least 2 images, got {}",
                self.batch
            ));
        }
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return bad(format!("tau must be positive and finite, got {}", self.tau));
        }
        self.model.validate()?;
        self.rotnet
            .validate()
            .and_then(|()| self.augment.validate())
            .map_err(|e| Error::InvalidArgument {
                op: "pretrain",
                msg: format!("augmentation: {e}"),
            })
    }
}

enum Model {
    SimClr(SimclrModel),
    RotNet(ClassifierModel),
}

impl Model {
    fn graph(&self) -> &Graph {
        match self {
            Model::SimClr(m) => &m.graph,
            Model::RotNet(m) => &m.graph,
        }
    }
    fn graph_mut(&mut self) -> &mut Graph {
        match self {
            Model::SimClr(m) => &mut m.graph,
            Model::RotNet(m) => &mut m.graph,
        }
    }
    fn input(&self) -> TensorId {
        match self {
            Model::SimClr(m) => m.input,
            Model::RotNet(m) => m.input,
        }
    }
    fn loss(&self) -> TensorId {
        match self {
            Model::SimClr(m) => m.loss,
            Model::RotNet(m) => m.loss,
        }
    }
}

/// What one step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The step just taken (0-based).
    pub step: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The loss of the batch (before the update).
    pub loss: f64,
    /// SimCLR: how often the positive is the most similar of all candidates; RotNet: the
    /// rotation accuracy.
    pub accuracy: f64,
    /// The learning rate used.
    pub lr: f32,
}

/// A pretraining run in memory.
pub struct Pretrainer {
    cfg: PretrainConfig,
    model: Model,
    opt: Optimizer,
    data: Arc<ImageSet>,
    sampler: EpochSampler,
    step: u64,
}

impl std::fmt::Debug for Pretrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrainer")
            .field("method", &self.cfg.method)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "pretrain",
        msg,
    }
}

impl Pretrainer {
    /// Builds the model, the optimizer and the sampler for `data` (its labels are never
    /// read).
    ///
    /// # Errors
    /// An invalid configuration, or data whose images do not fit the model.
    pub fn new(cfg: PretrainConfig, data: Arc<ImageSet>) -> Result<Self> {
        cfg.validate()?;
        let m = &cfg.model;
        if data.channels != m.in_channels
            || data.height != m.image_size
            || data.width != m.image_size
        {
            return Err(invalid(format!(
                "the images are {}x{}x{}, the model takes {}x{}x{}",
                data.channels, data.height, data.width, m.in_channels, m.image_size, m.image_size
            )));
        }
        if cfg.augment.out_size != m.image_size {
            return Err(invalid(format!(
                "the augmentation makes {0}x{0} views, the model takes {1}x{1}",
                cfg.augment.out_size, m.image_size
            )));
        }
        let sampler = EpochSampler::new(data.n, cfg.batch, mix(cfg.seed, &[1])).map_err(invalid)?;
        let seed = mix(cfg.seed, &[0]);
        let model = match cfg.method {
            Method::SimClr => Model::SimClr(simclr(m, cfg.batch, cfg.tau, seed)?),
            Method::RotNet => Model::RotNet(encoder_classifier(m, 4 * cfg.batch, 4, seed)?),
        };
        let opt = Optimizer::new(cfg.optimizer, model.graph().params().len())?;
        Ok(Self {
            cfg,
            model,
            opt,
            data,
            sampler,
            step: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PretrainConfig {
        &self.cfg
    }

    /// Replaces the learning-rate schedule (a wall-clock budget fits the run's length to
    /// the measured speed after the first steps, which are in the warmup of both).
    pub fn set_schedule(&mut self, schedule: LrSchedule) {
        self.cfg.schedule = schedule;
    }

    /// The training graph.
    pub fn graph(&self) -> &Graph {
        self.model.graph()
    }

    /// Steps taken so far (the next step's index).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.sampler.steps_per_epoch()
    }

    fn input_len(&self) -> usize {
        let g = self.model.graph();
        g.shape(self.model.input()).iter().product()
    }

    /// A loader preparing the batches of steps `self.step() .. end`, `depth` ahead.
    pub fn loader(&self, end: u64, depth: usize) -> Loader {
        let data = Arc::clone(&self.data);
        let mut sampler = self.sampler.clone();
        let aug = self.cfg.augment.clone();
        let rot = self.cfg.rotnet.clone();
        let (method, seed) = (self.cfg.method, mix(self.cfg.seed, &[2]));
        let labels_len = match method {
            Method::SimClr => 0,
            Method::RotNet => 4 * self.cfg.batch,
        };
        Loader::spawn(
            self.step,
            end,
            depth,
            self.input_len(),
            labels_len,
            move |step, b: &mut Batch| {
                let (epoch, idx) = sampler.batch_of(step);
                let r = match method {
                    Method::SimClr => {
                        augment::simclr_views(&data, idx, &aug, seed, epoch, &mut b.data)
                    }
                    Method::RotNet => augment::rotnet_batch(
                        &data,
                        idx,
                        &rot,
                        seed,
                        epoch,
                        &mut b.data,
                        &mut b.labels,
                    ),
                };
                r.map_err(|e| fmt_err(Path::new("<augmentation>"), e.to_string()))
            },
        )
    }

    /// One training step on the batch the loader prepared for this step.
    ///
    /// # Errors
    /// A batch of another step or size; a loss that is not finite (the step is named, the
    /// parameters are left as they were before the step).
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepStats> {
        if batch.step != self.step {
            return Err(invalid(format!(
                "the batch is for step {}, the run is at step {}",
                batch.step, self.step
            )));
        }
        let (input, loss_t) = (self.model.input(), self.model.loss());
        let g = self.model.graph_mut();
        let x = g.input_mut(input)?;
        if x.len() != batch.data.len() {
            return Err(invalid(format!(
                "the batch holds {} values, the model takes {}",
                batch.data.len(),
                x.len()
            )));
        }
        x.copy_from_slice(&batch.data);
        if !batch.labels.is_empty() {
            g.set_labels(loss_t, &batch.labels)?;
        }
        let step = self.step;
        let at_step = |e: Error| {
            invalid(format!(
                "at step {step}: {e}; training stopped (the last checkpoint is kept)"
            ))
        };
        g.forward(Mode::Train).map_err(at_step)?;
        let loss = g.loss_f64(loss_t);
        if !loss.is_finite() {
            return Err(invalid(format!(
                "the loss is {loss} at step {}; training stopped (the last checkpoint is kept)",
                self.step
            )));
        }
        let accuracy = g.accuracy(loss_t).map_or(f64::NAN, f64::from);
        g.backward().map_err(at_step)?;
        let lr = self.cfg.schedule.lr(self.step);
        let (p, gr, groups) = g.params_and_grads();
        self.opt.step(p, gr, groups, lr).map_err(at_step)?;
        let stats = StepStats {
            step: self.step,
            epoch: self.sampler.epoch_of(self.step),
            loss,
            accuracy,
            lr,
        };
        self.step += 1;
        Ok(stats)
    }

    /// Writes a checkpoint `ckpt-<step>.safetensors` into `dir` (the model, the optimizer
    /// state and `metadata` plus the step and method), keeping the newest `keep_last`.
    ///
    /// # Errors
    /// As [`train::save_in`].
    pub fn save_in(
        &self,
        dir: impl AsRef<Path>,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<PathBuf, CheckpointError> {
        save_run(
            dir.as_ref(),
            self.step,
            self.cfg.method.name(),
            self.graph(),
            &self.opt,
            metadata,
            keep_last,
        )
    }

    /// Continues from the newest checkpoint in `dir`, if there is one; returns its step.
    ///
    /// # Errors
    /// As [`train::load`]: another architecture or optimizer, a corrupt file.
    pub fn resume_from(
        &mut self,
        dir: impl AsRef<Path>,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let resumed = resume_run(
            dir.as_ref(),
            self.cfg.method.name(),
            self.model.graph_mut(),
            &mut self.opt,
        )?;
        if let Some(step) = resumed {
            self.step = step;
        }
        Ok(resumed)
    }
}

/// A training run's checkpoint: `ckpt-<step>.safetensors` in `dir` with the model, the
/// optimizer state and `metadata` plus the step and the method's name, the newest
/// `keep_last` kept. Shared by the image and the text trainers.
pub(crate) fn save_run(
    dir: &Path,
    step: u64,
    method: &str,
    graph: &Graph,
    opt: &Optimizer,
    metadata: &Metadata,
    keep_last: usize,
) -> std::result::Result<PathBuf, CheckpointError> {
    let mut meta = metadata.clone();
    meta.insert(STEP_KEY.into(), step.to_string());
    meta.insert(METHOD_KEY.into(), method.into());
    train::save_in(dir, step, graph, Some(opt), &meta, keep_last)
}

/// Loads the newest checkpoint of `dir` into `graph` and `opt`, if there is one, and
/// returns its step; a checkpoint of another method is an error naming the file.
pub(crate) fn resume_run(
    dir: &Path,
    method: &str,
    graph: &mut Graph,
    opt: &mut Optimizer,
) -> std::result::Result<Option<u64>, CheckpointError> {
    let Some((step, path)) = checkpoint::latest_in(dir)? else {
        return Ok(None);
    };
    let meta = train::load(&path, graph, Some(opt))?;
    if let Some(m) = meta.get(METHOD_KEY) {
        if m != method {
            return Err(CheckpointError::InvalidArgument {
                path,
                reason: format!("is a '{m}' run, this run is '{method}'"),
            });
        }
    }
    Ok(Some(step))
}

/// Checkpoint metadata key of the training step.
pub const STEP_KEY: &str = "step";
/// Checkpoint metadata key of the method.
pub const METHOD_KEY: &str = "method";

/// The frozen encoder: `h` of any number of images, `batch` at a time, eval-mode BN.
pub struct Embedder {
    graph: Graph,
    input: TensorId,
    h: TensorId,
    batch: usize,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("batch", &self.batch)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// A randomly initialized encoder (the random-init baseline of the probe).
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(cfg: &ResNetConfig, batch: usize, seed: u64) -> Result<Self> {
        let mut b = GraphBuilder::new();
        let enc = resnet_encoder(&mut b, cfg, batch.max(1))?;
        let graph = b.build(mix(seed, &[0]))?;
        Ok(Self {
            graph,
            input: enc.input,
            h: enc.h,
            batch: batch.max(1),
            dim: cfg.feature_dim(),
        })
    }

    /// The encoder of a trainer's current weights.
    ///
    /// # Errors
    /// As [`Embedder::new`].
    pub fn from_graph(cfg: &ResNetConfig, batch: usize, src: &Graph) -> Result<Self> {
        let mut e = Self::new(cfg, batch, 0)?;
        copy_by_name(src, &mut e.graph)?;
        Ok(e)
    }

    /// The encoder stored in a checkpoint (extra tensors, such as the head or the
    /// optimizer state, are ignored; every encoder tensor must be there with its shape).
    ///
    /// # Errors
    /// A checkpoint that is unreadable, corrupt or of another encoder architecture.
    pub fn from_checkpoint(
        cfg: &ResNetConfig,
        batch: usize,
        path: impl AsRef<Path>,
    ) -> std::result::Result<Self, CheckpointError> {
        let path = path.as_ref();
        let bad = |reason: String| CheckpointError::InvalidArgument {
            path: path.to_path_buf(),
            reason,
        };
        let mut e = Self::new(cfg, batch, 0).map_err(|err| bad(err.to_string()))?;
        let ck = checkpoint::load(path)?;
        let g = &mut e.graph;
        let params: Vec<_> = g.param_info().to_vec();
        for p in &params {
            ck.copy_into(&p.name, &p.shape, &mut g.params_mut()[p.range.clone()])?;
        }
        let buffers: Vec<_> = g.buffer_info().to_vec();
        for b in &buffers {
            ck.copy_into(&b.name, &b.shape, &mut g.buffers_mut()[b.range.clone()])?;
        }
        Ok(e)
    }

    /// The width of `h`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `h` of the images `indices` of `set` into `out` (`indices.len() x dim`), in batches.
    ///
    /// # Errors
    /// Images of another size than the encoder's, a wrong `out` length, an index out of
    /// range.
    pub fn embed(&mut self, set: &ImageSet, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let want = self.graph.shape(self.input).to_vec();
        if [set.channels, set.height, set.width] != want[1..] {
            return Err(invalid(format!(
                "the images are {}x{}x{}, the encoder takes {}x{}x{}",
                set.channels, set.height, set.width, want[1], want[2], want[3]
            )));
        }
        if out.len() != indices.len() * self.dim {
            return Err(Error::InvalidArgument {
                op: "embed",
                msg: format!(
                    "output of {} values for {} images",
                    out.len(),
                    indices.len()
                ),
            });
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= set.n) {
            return Err(invalid(format!("image {i} of a set of {}", set.n)));
        }
        let len = set.image_len();
        for (chunk, o) in indices
            .chunks(self.batch)
            .zip(out.chunks_mut(self.batch * self.dim))
        {
            let x = self.graph.input_mut(self.input)?;
            for (k, &i) in chunk.iter().enumerate() {
                x[k * len..(k + 1) * len].copy_from_slice(set.image(i));
            }
            // A short last batch: the unused rows are zero and their outputs dropped.
            x[chunk.len() * len..].fill(0.0);
            self.graph.forward_to(self.h, Mode::Eval)?;
            o.copy_from_slice(&self.graph.value(self.h)[..chunk.len() * self.dim]);
        }
        Ok(())
    }

    /// `h` of every image of `set`, `n x dim`.
    ///
    /// # Errors
    /// As [`Embedder::embed`].
    pub fn embed_all(&mut self, set: &ImageSet) -> Result<Vec<f32>> {
        let idx: Vec<usize> = (0..set.n).collect();
        let mut out = vec![0.0; set.n * self.dim];
        self.embed(set, &idx, &mut out)?;
        Ok(out)
    }
}

/// Copies every parameter and buffer of `dst` from the tensor of the same name in `src`.
pub(crate) fn copy_by_name(src: &Graph, dst: &mut Graph) -> Result<()> {
    type Entry = (String, Vec<usize>, std::ops::Range<usize>);
    let params = |g: &Graph| -> Vec<Entry> {
        g.param_info()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone(), p.range.clone()))
            .collect()
    };
    let buffers = |g: &Graph| -> Vec<Entry> {
        g.buffer_info()
            .iter()
            .map(|b| (b.name.clone(), b.shape.clone(), b.range.clone()))
            .collect()
    };
    let copy = |want: Vec<Entry>, have: Vec<Entry>, from: &[f32], to: &mut [f32]| {
        for (name, shape, range) in want {
            let (_, _, r) = have
                .iter()
                .find(|(n, s, _)| *n == name && *s == shape)
                .ok_or_else(|| invalid(format!("the source model has no tensor '{name}'")))?;
            to[range].copy_from_slice(&from[r.clone()]);
        }
        Ok::<(), Error>(())
    };
    copy(params(dst), params(src), src.params(), dst.params_mut())?;
    copy(buffers(dst), buffers(src), src.buffers(), dst.buffers_mut())
}
