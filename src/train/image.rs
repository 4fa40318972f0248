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

use crate::io::checkpoint::{self, CheckpointError};
use crate::data::augment::{self, RotnetAugment, SimclrAugment};
use crate::data::loader::{Batch, EpochSampler, Loader};
use crate::data::{fmt_err, ImageSet};
use crate::dist::{self, Collectives, Scratch, SingleProcess};
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
    /// Data-parallel runs: normalize every BatchNorm with the statistics of the whole
    /// group's batch (global BN, as SimCLR trains) instead of each rank's. No effect in a
    /// single process.
    pub sync_bn: bool,
    /// Data-parallel SimCLR: take each anchor's negatives from its own rank's batch only
    /// (nothing gathered; see [`Graph::set_local_negatives`]) instead of the global batch.
    /// No effect in a single process.
    pub local_negatives: bool,
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
    group: Group,
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
        Self::in_group(cfg, data, Box::new(SingleProcess))
    }

    /// One rank of a data-parallel run over the group `comm` (see [`crate::dist`]): every
    /// rank takes `cfg.batch` images of each global batch of `size() * cfg.batch` (disjoint,
    /// a function of the seed, the epoch and the rank: across the ranks every image of an
    /// epoch's full batches once), SimCLR's negatives span the global batch, the loss is
    /// the global batch's, the parameter gradients are summed over the ranks in rank order
    /// before each update, so every rank holds the same weights, and `P` ranks of batch
    /// `B` train as one process of batch `P B` does (with `sync_bn`, up to rounding).
    ///
    /// # Errors
    /// As [`Pretrainer::new`]; ranks whose configuration or data differ from rank 0's (an
    /// error on every rank); a failed collective.
    pub fn in_group(
        cfg: PretrainConfig,
        data: Arc<ImageSet>,
        comm: Box<dyn Collectives>,
    ) -> Result<Self> {
        let group = Group::join(comm, "configuration or data", || {
            format!(
                "{cfg:?} data {} {}x{}x{} {:016x}",
                data.n,
                data.channels,
                data.height,
                data.width,
                images_hash(&data)
            )
        })?;
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
        let (rank, ranks) = (group.comm.rank(), group.comm.size());
        let global = cfg.batch.saturating_mul(ranks);
        let sampler = EpochSampler::sharded(data.n, global, mix(cfg.seed, &[1]), rank, ranks)
            .map_err(invalid)?;
        let seed = mix(cfg.seed, &[0]);
        let mut model = match cfg.method {
            Method::SimClr => Model::SimClr(simclr(m, cfg.batch, cfg.tau, seed)?),
            Method::RotNet => Model::RotNet(encoder_classifier(m, 4 * cfg.batch, 4, seed)?),
        };
        model.graph_mut().set_sync_batchnorm(cfg.sync_bn);
        model.graph_mut().set_local_negatives(cfg.local_negatives);
        let opt = Optimizer::new(cfg.optimizer, model.graph().params().len())?;
        Ok(Self {
            cfg,
            model,
            opt,
            data,
            sampler,
            step: 0,
            group,
        })
    }

    /// This process's rank in its data-parallel group (0 in a single process).
    pub fn rank(&self) -> usize {
        self.group.comm.rank()
    }

    /// The number of ranks (1 in a single process).
    pub fn ranks(&self) -> usize {
        self.group.comm.size()
    }

    /// Rank 0's `value`, on every rank (a decision taken from a rank's own clock, such as
    /// a run length fitted to the measured speed, must be the same on all).
    ///
    /// # Errors
    /// A failed collective.
    pub fn root_value(&self, value: u64) -> Result<u64> {
        self.group.root_value(value)
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

    /// Full batches per epoch (of the global batch, in a data-parallel run).
    pub fn steps_per_epoch(&self) -> u64 {
        self.sampler.steps_per_epoch()
    }

    /// The dataset indices of this rank's images of step `step`, and its epoch (what the
    /// loader augments for that step; for inspection and tests).
    pub fn batch_images(&mut self, step: u64) -> (u64, &[usize]) {
        self.sampler.batch_of(step)
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
        let on_pool = self.group.steps_on_pool();
        run_step(on_pool, || self.train_step_here(batch))
    }

    fn train_step_here(&mut self, batch: &Batch) -> Result<StepStats> {
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
        let comm = &*self.group.comm;
        g.forward_with(Mode::Train, comm).map_err(at_step)?;
        if !self.cfg.sync_bn {
            // Each rank's BatchNorm updated its running statistics from its own batch: rank
            // 0's become every rank's (as PyTorch's DistributedDataParallel broadcasts its
            // buffers), so all ranks hold the same model and a checkpoint is every rank's.
            self.group.broadcast_buffers(g).map_err(at_step)?;
        }
        // The loss is the global batch's: the same on every rank, so all stop together.
        let loss = g.loss_f64(loss_t);
        if !loss.is_finite() {
            return Err(invalid(format!(
                "the loss is {loss} at step {}; training stopped (the last checkpoint is kept)",
                self.step
            )));
        }
        let accuracy = g.accuracy(loss_t).map_or(f64::NAN, f64::from);
        g.backward_with(comm).map_err(at_step)?;
        self.group.sum_grads(g).map_err(at_step)?;
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
    /// state and `metadata` plus the step, the method and the number of ranks), keeping
    /// the newest `keep_last`. In a data-parallel run only rank 0 writes (every rank holds
    /// the same weights); the others return `Ok(None)` at once.
    ///
    /// # Errors
    /// As [`train::save_in`].
    pub fn save_in(
        &self,
        dir: impl AsRef<Path>,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError> {
        self.group.save(
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
    /// In a data-parallel run rank 0 reads the checkpoint (it must be of a run with as
    /// many ranks) and sends its state to the others, so only rank 0 needs the folder; a
    /// failure is an error on every rank.
    pub fn resume_from(
        &mut self,
        dir: impl AsRef<Path>,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let resumed = self.group.resume(
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

/// Loads the newest checkpoint of `dir` into `graph` and `opt`, if there is one, and
/// returns its step; a checkpoint of another method, or of a run with another number of
/// ranks, is an error naming the file.
pub(crate) fn resume_run(
    dir: &Path,
    method: &str,
    graph: &mut Graph,
    opt: &mut Optimizer,
    ranks: usize,
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
    let saved = meta.get(RANKS_KEY).map_or("1", String::as_str);
    if saved != ranks.to_string() {
        return Err(CheckpointError::InvalidArgument {
            path,
            reason: format!(
                "was written by a run of {saved} process(es), this run has {ranks}: a \
                 data-parallel run resumes with the same number of processes"
            ),
        });
    }
    Ok(Some(step))
}

/// A trainer's process group and its reduction buffers. Shared by the image and the text
/// trainers.
pub(crate) struct Group {
    pub(crate) comm: Box<dyn Collectives>,
    scratch: Scratch,
}

/// Runs a trainer's step: on the rayon pool (see `kernels::on_pool`) when `on_pool`, in
/// place otherwise (the answer of [`Group::steps_on_pool`]).
pub(crate) fn run_step<R: Send>(on_pool: bool, step: impl FnOnce() -> R + Send) -> R {
    if on_pool {
        crate::kernels::on_pool(step)
    } else {
        step()
    }
}

impl Group {
    /// Whether a step moves onto the pool: yes, unless the group's other ranks are threads
    /// of this process sharing the same pool, where a rank waiting for its peers on a pool
    /// thread could leave none free to run them (a deadlock).
    pub(crate) fn steps_on_pool(&self) -> bool {
        !self.comm.ranks_share_the_pool()
    }

    /// The group of a trainer, after checking that every rank runs the same `what` (as
    /// its text `fingerprint()`, computed only for a group of several ranks): a mismatch is
    /// the same error on every rank.
    pub(crate) fn join(
        comm: Box<dyn Collectives>,
        what: &str,
        fingerprint: impl FnOnce() -> String,
    ) -> Result<Self> {
        if comm.size() > 1 {
            dist::check_same_config(&*comm, what, &fingerprint())?;
        }
        Ok(Self {
            comm,
            scratch: Scratch::default(),
        })
    }

    /// A training run's checkpoint, written by rank 0 (the others return `Ok(None)`):
    /// `ckpt-<step>.safetensors` in `dir` with the model, the optimizer state and
    /// `metadata` plus the step, the method's name and the number of ranks, the newest
    /// `keep_last` kept.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn save(
        &self,
        dir: &Path,
        step: u64,
        method: &str,
        graph: &Graph,
        opt: &Optimizer,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError> {
        if self.comm.rank() != 0 {
            return Ok(None);
        }
        let mut meta = metadata.clone();
        meta.insert(STEP_KEY.into(), step.to_string());
        meta.insert(METHOD_KEY.into(), method.into());
        meta.insert(RANKS_KEY.into(), self.comm.size().to_string());
        train::save_in(dir, step, graph, Some(opt), &meta, keep_last).map(Some)
    }

    /// Rank 0's `value`, on every rank.
    pub(crate) fn root_value(&self, value: u64) -> Result<u64> {
        let mut all = vec![0u64; self.comm.size()];
        self.comm.all_gather_u64(&[value], &mut all)?;
        Ok(all[0])
    }

    /// Rank 0's non-trained buffers (BatchNorm running statistics) to every rank.
    pub(crate) fn broadcast_buffers(&self, g: &mut Graph) -> Result<()> {
        if self.comm.size() > 1 {
            self.comm.broadcast_f32(g.buffers_mut())?;
        }
        Ok(())
    }

    /// Sums the parameter gradients over the group, in rank order (same bits on every
    /// rank).
    pub(crate) fn sum_grads(&mut self, g: &mut Graph) -> Result<()> {
        dist::all_reduce_sum(&*self.comm, g.param_grads_mut(), &mut self.scratch)
    }

    /// [`resume_run`] on rank 0, the outcome agreed by all ranks, then rank 0's weights,
    /// buffers and optimizer state sent to every rank.
    pub(crate) fn resume(
        &self,
        dir: &Path,
        method: &str,
        graph: &mut Graph,
        opt: &mut Optimizer,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let comm = &*self.comm;
        let ranks = comm.size();
        if ranks == 1 {
            return resume_run(dir, method, graph, opt, 1);
        }
        let failed = |reason: String| CheckpointError::InvalidArgument {
            path: dir.to_path_buf(),
            reason,
        };
        let mine = if comm.rank() == 0 {
            resume_run(dir, method, graph, opt, ranks)
        } else {
            Ok(None)
        };
        // [status, step] of every rank: 0 = nothing to resume, 1 = resumed, 2 = failed.
        let status = match &mine {
            Ok(None) => [0, 0],
            Ok(Some(s)) => [1, *s],
            Err(_) => [2, 0],
        };
        let mut all = vec![0u64; 2 * ranks];
        comm.all_gather_u64(&status, &mut all)
            .map_err(|e| failed(e.to_string()))?;
        match all[0] {
            2 => {
                return mine.and_then(|_| {
                    Err(failed(
                        "rank 0 could not resume from this folder (its message says why)".into(),
                    ))
                })
            }
            0 => return Ok(None),
            _ => {}
        }
        let step = all[1];
        let broadcast =
            |buf: &mut [f32]| comm.broadcast_f32(buf).map_err(|e| failed(e.to_string()));
        broadcast(graph.params_mut())?;
        broadcast(graph.buffers_mut())?;
        let mut state: Vec<(String, Vec<f32>)> = opt
            .state_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.to_vec()))
            .collect();
        for (_, v) in &mut state {
            broadcast(v)?;
        }
        let steps = self
            .root_value(opt.steps())
            .map_err(|e| failed(e.to_string()))?;
        opt.load_state_tensors(steps, state)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Some(step))
    }
}

/// A hash of a sample of an image set's pixels (first, middle and last image): ranks that
/// read different files of the same shape are told apart.
fn images_hash(set: &ImageSet) -> u64 {
    let sample: &[usize] = match set.n {
        0 => &[],
        n => &[0, n / 2, n - 1],
    };
    dist::content_hash(
        sample
            .iter()
            .map(|&i| bytemuck::cast_slice::<f32, u8>(set.image(i))),
    )
}

/// Checkpoint metadata key of the number of processes of the run that wrote it.
pub const RANKS_KEY: &str = "ranks";

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
