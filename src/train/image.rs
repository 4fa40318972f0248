//! SimCLR (Chen et al. 2020) and RotNet (Gidaris et al. 2018) on an [`ImageSet`]: the
//! model (encoder + projection head + NT-Xent, or encoder + 4-way rotation classifier), the
//! epoch sampler and the augmenting loader, one step at a time, and the kNN monitor.
//!
//! - [`Pretrainer`] implements [`Method`]: [`crate::train::fit()`] runs a whole run of it.
//!   [`Pretrainer::loader`] prepares the augmented batches of the coming steps on a worker
//!   thread; [`Pretrainer::train_on`] runs one step on a prepared batch.
//! - Every batch is a function of `(seed, step)` only, and every kernel is bit-identical for
//!   any thread count, so a run is reproducible bit for bit with 1 or 2 threads, and a run
//!   resumed from a checkpoint continues exactly as the uninterrupted one.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::data::augment::{self, RotnetAugment, SimclrAugment};
use crate::data::loader::{Batch, EpochSampler, Loader};
use crate::data::{fmt_err, ImageSet, Splits};
use crate::dist::{self, Collectives, SingleProcess};
use crate::error::{Error, Result};
use crate::eval::knn::{knn_accuracy, KnnConfig};
use crate::graph::{Graph, Mode, TensorId};
use crate::nn::SimclrModel;
use crate::nn::{
    encoder_classifier, encoder_classifier_memory, encoder_memory, simclr, simclr_memory,
    ClassifierModel, ResNetConfig,
};
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig, SgdConfig};
use crate::rng::mix;
use crate::train::core::{at_step, non_finite, Core};
pub use crate::train::embed::Embedder;
use crate::train::group::{run_step, Group};
use crate::train::memory::MemoryPlan;
use crate::train::method::{Method, MonitorKind, StepStats, Unit};
use crate::train::run_dir::RunSettings;
use crate::train::state::Metadata;

/// The self-supervised task on images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageMethod {
    /// Two augmented views per image, NT-Xent over the `2N` views.
    SimClr,
    /// Each image in its four rotations, a 4-way classifier on the encoder.
    RotNet,
}

impl ImageMethod {
    /// `"simclr"` or `"rotnet"`.
    pub fn name(self) -> &'static str {
        match self {
            ImageMethod::SimClr => "simclr",
            ImageMethod::RotNet => "rotnet",
        }
    }

    /// Encoder inputs per image: 2 views for SimCLR, 4 rotations for RotNet.
    pub fn inputs_per_image(self) -> usize {
        match self {
            ImageMethod::SimClr => 2,
            ImageMethod::RotNet => 4,
        }
    }
}

/// Everything that defines a pretraining run (the data aside).
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    /// The task.
    pub method: ImageMethod,
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
    /// SimCLR's recipe (or RotNet's) for square images of `channels x size x size`: the
    /// default ResNet (widths 32/64/128), batch 256, tau 0.5, SGD with momentum 0.9 and
    /// weight decay 5e-4, colour-jitter strength 0.5, seed 0. [`crate::train::fit()`] sets
    /// the schedule over the run's length; set the fields to change the rest.
    pub fn for_images(method: ImageMethod, channels: usize, size: usize) -> Self {
        Self {
            method,
            model: ResNetConfig {
                in_channels: channels,
                image_size: size,
                ..ResNetConfig::default()
            },
            batch: 256,
            tau: crate::train::run_dir::SIMCLR_TAU,
            optimizer: OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                weight_decay: 5e-4,
                ..SgdConfig::default()
            }),
            // Replaced by `fit` with the run's; valid arguments cannot fail.
            schedule: LrSchedule::new(0.06, 0, 1).unwrap_or_else(|_| unreachable!()),
            augment: SimclrAugment::for_image(size, channels, 0.5),
            rotnet: RotnetAugment::default(),
            seed: 0,
            sync_bn: false,
            local_negatives: false,
        }
    }

    /// The settings a run of this configuration on `data` (the data's name) records, as
    /// [`crate::train::fit()`] checks them on resume.
    pub fn settings(&self, data: &str) -> RunSettings {
        RunSettings {
            method: self.method.name().into(),
            data: data.into(),
            batch: self.batch,
            seed: self.seed,
            optimizer: Some(
                match self.optimizer {
                    OptimizerConfig::Sgd(_) => "sgd",
                    OptimizerConfig::Lars(_) => "lars",
                    OptimizerConfig::AdamW(_) => "adamw",
                }
                .into(),
            ),
            tau: Some(self.tau),
            widths: self.model.widths.clone(),
            image_size: Some(self.model.image_size),
            ..RunSettings::default()
        }
    }

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

/// A pretraining run in memory.
pub struct Pretrainer {
    cfg: PretrainConfig,
    model: Model,
    core: Core,
    data: Arc<ImageSet>,
    sampler: EpochSampler,
    /// The batches being prepared ([`Method::prepare`]).
    loader: Option<Loader>,
    /// The labeled splits of the kNN monitor.
    monitor: Option<Arc<Splits>>,
}

impl std::fmt::Debug for Pretrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrainer")
            .field("method", &self.cfg.method)
            .field("step", &self.core.step())
            .finish_non_exhaustive()
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "pretrain",
        msg,
    }
}

/// Images the kNN monitor's bank holds at most (evenly spread over the training set).
const KNN_BANK: usize = 10_000;
/// Test images the kNN monitor classifies at most.
const KNN_QUERIES: usize = 2_000;
/// Images per batch of the monitor's and the embedder's forward passes.
const EMBED_BATCH: usize = 256;
/// Batches the loader prepares ahead of the steps.
const LOADER_DEPTH: usize = 3;

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
                "{cfg:?} data {} {}x{:?} {:016x}",
                data.n,
                data.channels,
                data.side_range(),
                images_hash(&data)
            )
        })?;
        cfg.validate()?;
        let m = &cfg.model;
        if data.channels != m.in_channels {
            return Err(invalid(format!(
                "the images have {} channels, the model takes {}",
                data.channels, m.in_channels
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
            ImageMethod::SimClr => Model::SimClr(simclr(m, cfg.batch, cfg.tau, seed)?),
            ImageMethod::RotNet => Model::RotNet(encoder_classifier(m, 4 * cfg.batch, 4, seed)?),
        };
        model.graph_mut().set_sync_batchnorm(cfg.sync_bn);
        model.graph_mut().set_local_negatives(cfg.local_negatives);
        let opt = Optimizer::new(cfg.optimizer, model.graph().params().len())?;
        let core = Core::new(cfg.method.name(), "pretrain", group, opt, cfg.schedule);
        Ok(Self {
            cfg,
            model,
            core,
            data,
            sampler,
            loader: None,
            monitor: None,
        })
    }

    /// The kNN monitor on `splits` (their labeled training images vote for their test
    /// images; see [`Method::monitor`]); splits without labels or a test split give none.
    pub fn with_monitor(mut self, splits: Arc<Splits>) -> Self {
        self.monitor = Some(splits);
        self
    }

    /// The memory a run of `cfg` on `data` takes at its peak in this process, from the plan
    /// of its graph, before anything large is allocated ([`Pretrainer::new`] allocates it):
    /// the activations and their gradients (they grow with the batch and with the pixels of
    /// an image), the parameters, their gradients and the optimizer's state (they grow with
    /// the widths), the kernels' scratch, the loader's batches prepared ahead, with
    /// `monitor` (the splits [`Pretrainer::with_monitor`] takes) the kNN monitor's encoder
    /// and features, and the dataset, already loaded. Check it with [`MemoryPlan::check`]
    /// against [`crate::train::memory::available_memory`].
    ///
    /// # Errors
    /// An invalid configuration (as [`Pretrainer::new`]).
    pub fn memory_plan(
        cfg: &PretrainConfig,
        data: &ImageSet,
        monitor: Option<&Splits>,
    ) -> Result<MemoryPlan> {
        cfg.validate()?;
        let m = &cfg.model;
        let threads = rayon::current_num_threads();
        let inputs = cfg.method.inputs_per_image();
        let graph = match cfg.method {
            ImageMethod::SimClr => simclr_memory(m, cfg.batch, cfg.tau, threads)?,
            ImageMethod::RotNet => {
                let batch = cfg
                    .batch
                    .checked_mul(4)
                    .ok_or_else(|| invalid(format!("a batch of {} images overflows", cfg.batch)))?;
                encoder_classifier_memory(m, batch, 4, threads)?
            }
        };
        let (c, s) = (m.in_channels, m.image_size);
        let what = match cfg.method {
            ImageMethod::SimClr => "views",
            ImageMethod::RotNet => "rotations",
        };
        let per_step = format!("{inputs} x {} {what} of {c} x {s} x {s}", cfg.batch);
        let mut plan = MemoryPlan::default();
        plan.add_graph(
            "",
            &graph,
            &format!("grows with the batch and the pixels: {per_step}"),
            true,
        );
        plan.add_optimizer(&cfg.optimizer, graph.param_count);
        let input = (inputs as u64)
            .saturating_mul(cfg.batch as u64)
            .saturating_mul((c as u64).saturating_mul((s * s) as u64));
        let batches = Loader::buffers(LOADER_DEPTH);
        // RotNet's rotation labels.
        let labels = match cfg.method {
            ImageMethod::SimClr => 0,
            ImageMethod::RotNet => 4 * cfg.batch,
        };
        plan.add(
            "loader",
            format!("{batches} batches of {per_step} prepared ahead"),
            input
                .saturating_add(labels as u64)
                .saturating_mul(4 * batches as u64),
        );
        if let Some(l) = monitor.and_then(Splits::labeled) {
            let enc = encoder_memory(m, EMBED_BATCH, threads)?;
            let d = m.feature_dim() as u64;
            let (bank, queries) = (l.train.n.min(KNN_BANK), l.test.n.min(KNN_QUERIES));
            // The features, their normalized copies and a block of similarities.
            let features = ((bank + queries) as u64)
                .saturating_mul(d)
                .saturating_mul(2 * 4)
                .saturating_add(4 * (256 * bank) as u64);
            plan.add(
                "kNN monitor",
                format!(
                    "the encoder at {EMBED_BATCH} images, features of {bank} + {queries} images"
                ),
                enc.activations
                    .saturating_add(enc.params)
                    .saturating_add(enc.buffers)
                    .saturating_add(features),
            );
        }
        let mut stored = data.memory_bytes() as u64;
        if let Some(sp) = monitor {
            let labels = sp.train_labels.as_ref().map_or(0, Vec::len);
            stored = stored.saturating_add(4 * labels as u64);
            if let Some(t) = &sp.test {
                let tl = t.labels.as_ref().map_or(0, Vec::len);
                stored = stored
                    .saturating_add(t.memory_bytes() as u64)
                    .saturating_add(4 * tl as u64);
            }
        }
        plan.add_loaded("dataset", format!("{} images", data.n), stored);
        Ok(plan)
    }

    /// The line describing a run of `cfg` on `data` of `steps_per_epoch` steps an epoch
    /// ([`Method::describe`]): the data as stored and trained, the encoder and the batch.
    pub fn description(cfg: &PretrainConfig, data: &ImageSet, steps_per_epoch: u64) -> String {
        let (m, d) = (&cfg.model, data);
        let stored = match (d.uniform_size(), d.side_range()) {
            (Some((h, w)), _) => format!("{h}x{w}"),
            (None, (lo, hi)) => format!("{lo} to {hi} pixels a side"),
        };
        let widths: Vec<String> = m.widths.iter().map(|w| w.to_string()).collect();
        let s = m.image_size;
        format!(
            "{}: {} images of {} channel(s) stored at {stored} ({} in memory), trained at \
             {s}x{s}; encoder widths {}, stem stride {}; batch {}, {} steps per epoch",
            cfg.method.name(),
            d.n,
            d.channels,
            crate::data::folder::human_bytes(d.memory_bytes() as u64),
            widths.join("/"),
            m.stem_stride(),
            cfg.batch,
            steps_per_epoch
        )
    }

    /// The configuration (its schedule is the one the run started with).
    pub fn config(&self) -> &PretrainConfig {
        &self.cfg
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

    /// A loader preparing the batches of steps `step() .. end`, `depth` ahead.
    pub fn loader(&self, end: u64, depth: usize) -> Loader {
        let data = Arc::clone(&self.data);
        let mut sampler = self.sampler.clone();
        let aug = self.cfg.augment.clone();
        let rot = self.cfg.rotnet.clone();
        let (method, seed) = (self.cfg.method, mix(self.cfg.seed, &[2]));
        let size = self.cfg.model.image_size;
        let labels_len = match method {
            ImageMethod::SimClr => 0,
            ImageMethod::RotNet => 4 * self.cfg.batch,
        };
        Loader::spawn(
            self.core.step(),
            end,
            depth,
            self.input_len(),
            labels_len,
            move |step, b: &mut Batch| {
                let (epoch, idx) = sampler.batch_of(step);
                let r = match method {
                    ImageMethod::SimClr => {
                        augment::simclr_views(&data, idx, &aug, seed, epoch, &mut b.data)
                    }
                    ImageMethod::RotNet => augment::rotnet_batch(
                        &data,
                        idx,
                        &rot,
                        size,
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

    /// One training step on `batch`, the batch a [`Pretrainer::loader`] prepared for
    /// this step ([`Method::train_step`] takes it from the trainer's own loader).
    ///
    /// # Errors
    /// A batch of another step or size; a loss that is not finite (the step is named, the
    /// parameters are left as they were before the step).
    pub fn train_on(&mut self, batch: &Batch) -> Result<StepStats> {
        let on_pool = self.core.steps_on_pool();
        run_step(on_pool, || self.train_here(batch))
    }

    fn train_here(&mut self, batch: &Batch) -> Result<StepStats> {
        let step = self.core.step();
        if batch.step != step {
            return Err(invalid(format!(
                "the batch is for step {}, the run is at step {step}",
                batch.step
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
        let at_step = |e: Error| at_step("pretrain", step, e);
        g.forward_with(Mode::Train, self.core.comm())
            .map_err(at_step)?;
        if !self.cfg.sync_bn {
            // Each rank's BatchNorm updated its running statistics from its own batch: rank
            // 0's become every rank's (as PyTorch's DistributedDataParallel broadcasts its
            // buffers), so all ranks hold the same model and a checkpoint is every rank's.
            self.core.broadcast_buffers(g).map_err(at_step)?;
        }
        // The loss is the global batch's: the same on every rank, so all stop together.
        let loss = g.loss_f64(loss_t);
        if !loss.is_finite() {
            return Err(non_finite("pretrain", loss, step));
        }
        let accuracy = g.accuracy(loss_t).map_or(f64::NAN, f64::from);
        g.backward_with(self.core.comm()).map_err(at_step)?;
        let lr = self.core.update(g)?;
        Ok(StepStats {
            step,
            epoch: self.sampler.epoch_of(step),
            loss,
            accuracy,
            lr,
        })
    }
}

/// What `config.json` records of an image run besides its settings.
#[derive(Clone, Debug, Serialize)]
pub struct ImageRecord {
    /// The encoder (and SimCLR's head).
    pub model: ResNetConfig,
    /// Images of the training set.
    pub train_images: usize,
}

impl Method for Pretrainer {
    type Embedder = Embedder;
    type Record = ImageRecord;

    fn core(&self) -> &Core {
        &self.core
    }

    fn parts_mut(&mut self) -> (&mut Core, &mut Graph) {
        (&mut self.core, self.model.graph_mut())
    }

    fn graph(&self) -> &Graph {
        self.model.graph()
    }

    fn unit(&self) -> Unit {
        Unit::Images
    }

    fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    fn steps_per_epoch(&self) -> u64 {
        self.sampler.steps_per_epoch()
    }

    fn prepare(&mut self, end: u64) -> Result<()> {
        // The old loader stops before the new one starts (both would hold a batch's buffers).
        self.loader = None;
        if end > self.core.step() {
            self.loader = Some(self.loader(end, LOADER_DEPTH));
        }
        Ok(())
    }

    fn train_step(&mut self) -> Result<StepStats> {
        if self.loader.is_none() {
            self.prepare(u64::MAX)?;
        }
        let Some(mut loader) = self.loader.take() else {
            return Err(invalid("no loader".into()));
        };
        let out = match loader.next_batch() {
            Some(Ok(batch)) => {
                let out = self.train_on(&batch);
                loader.recycle(batch);
                out
            }
            Some(Err(e)) => Err(Error::Run(format!("preparing a batch: {e}"))),
            None => Err(invalid(format!(
                "no batch was prepared for step {}",
                self.core.step()
            ))),
        };
        self.loader = Some(loader);
        out
    }

    /// The kNN accuracy of the current encoder: the labeled training images (at most
    /// 10,000, evenly spread) vote for the test images (at most 2,000).
    fn monitor(&self) -> Result<Option<f64>> {
        let Some(l) = self.monitor.as_deref().and_then(Splits::labeled) else {
            return Ok(None);
        };
        let mut emb = self.embedder(EMBED_BATCH)?;
        let bank_idx = spread_indices(l.train.n, KNN_BANK);
        let query_idx = spread_indices(l.test.n, KNN_QUERIES);
        let d = emb.dim();
        let mut bank = vec![0.0; bank_idx.len() * d];
        emb.embed(l.train, &bank_idx, &mut bank)?;
        let mut query = vec![0.0; query_idx.len() * d];
        emb.embed(l.test, &query_idx, &mut query)?;
        let bl: Vec<u32> = bank_idx.iter().map(|&i| l.train_labels[i]).collect();
        let ql: Vec<u32> = query_idx.iter().map(|&i| l.test_labels[i]).collect();
        let acc = knn_accuracy(&bank, &bl, &query, &ql, d, l.classes, &KnnConfig::default())?;
        Ok(Some(acc))
    }

    fn monitor_kind(&self) -> MonitorKind {
        MonitorKind {
            key: "knn_accuracy",
            label: "kNN accuracy",
            min_seconds: 0.0,
        }
    }

    fn describe(&self) -> Option<String> {
        Some(Pretrainer::description(
            &self.cfg,
            &self.data,
            self.sampler.steps_per_epoch(),
        ))
    }

    fn checkpoint_metadata(&self) -> Metadata {
        let mut meta = Metadata::new();
        let config = serde_json::to_string(&self.cfg.model).unwrap_or_default();
        meta.insert(CONFIG_KEY.into(), config);
        meta
    }

    fn record(&self) -> ImageRecord {
        ImageRecord {
            model: self.cfg.model.clone(),
            train_images: self.data.n,
        }
    }

    fn embedder(&self, batch: usize) -> Result<Embedder> {
        Embedder::from_graph(&self.cfg.model, batch, self.model.graph())
    }
}

/// Checkpoint metadata key of the model configuration (JSON).
pub const CONFIG_KEY: &str = "config";

/// At most `max` indices of `0..n`, evenly spread (all of them when `n <= max`).
fn spread_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|k| k * n / max).collect()
    }
}

/// A hash of a sample of an image set's pixels (first, middle and last image): ranks that
/// read different files of the same shape are told apart.
fn images_hash(set: &ImageSet) -> u64 {
    let sample: &[usize] = match set.n {
        0 => &[],
        n => &[0, n / 2, n - 1],
    };
    dist::content_hash(sample.iter().map(|&i| set.image(i).pixels))
}
