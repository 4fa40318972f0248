//! The `Method` trait: what a self-supervised method says about itself (its model, its
//! batches, one step, its monitor, its frozen encoder) so that one loop, [`crate::train::fit()`],
//! can run any of them. SimCLR and RotNet ([`crate::train::image::Pretrainer`]) and Quick
//! Thoughts ([`crate::train::text::QtTrainer`]) implement it.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::graph::Graph;
use crate::io::checkpoint::CheckpointError;
use crate::optim::LrSchedule;
use crate::train::core::Core;
use crate::train::state::Metadata;

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
    /// rotation accuracy; Quick Thoughts: the in-batch previous/next accuracy.
    pub accuracy: f64,
    /// The learning rate used.
    pub lr: f32,
}

/// What a method's steps consume, for rates and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Images (SimCLR, RotNet).
    Images,
    /// Sentences (Quick Thoughts).
    Sentences,
}

impl Unit {
    /// `images` or `sentences`.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Images => "images",
            Unit::Sentences => "sentences",
        }
    }

    /// The key of a step's rate in `metrics.jsonl` (`images_per_s`, `sentences_per_s`).
    pub fn rate_key(self) -> &'static str {
        match self {
            Unit::Images => "images_per_s",
            Unit::Sentences => "sentences_per_s",
        }
    }
}

/// A method's monitor: what it measures and how often it may run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MonitorKind {
    /// Its key in `metrics.jsonl` (`knn_accuracy`, `held_out_neighbour_accuracy`).
    pub key: &'static str,
    /// Its name in messages (`kNN accuracy`).
    pub label: &'static str,
    /// The fewest seconds between two runs during training (a fast method runs many
    /// epochs a minute).
    pub min_seconds: f64,
}

/// A self-supervised method, ready to train: its model and optimizer built, its data
/// attached. [`crate::train::fit()`] runs the whole training run; a method can also be
/// stepped by hand with [`Method::train_step`].
///
/// Every batch is a function of the seed and the step only and every kernel gives the same
/// bits for any thread count, so a run is reproducible bit for bit, and a run resumed from
/// a checkpoint continues exactly as the uninterrupted one.
pub trait Method {
    /// The frozen encoder this method trains, for features after training.
    type Embedder;

    /// What the run folder's `config.json` records of the model and the data, besides the
    /// run's own settings (its fields are merged into the record).
    type Record: serde::Serialize;

    /// The state shared by every trainer (group, optimizer, schedule, step).
    fn core(&self) -> &Core;

    /// The core and the model's graph, both mutable (resuming fills both).
    fn parts_mut(&mut self) -> (&mut Core, &mut Graph);

    /// The training graph.
    fn graph(&self) -> &Graph;

    /// What a step consumes.
    fn unit(&self) -> Unit;

    /// Items (images, sentences) of one step on this rank.
    fn batch_size(&self) -> usize;

    /// Full steps per epoch (of the whole group's batch).
    fn steps_per_epoch(&self) -> u64;

    /// Prepares the batches of steps `step() .. end` (the image methods augment them on a
    /// worker thread ahead of the steps); called again when the run's length changes.
    /// `end <= step()` releases what was prepared.
    ///
    /// # Errors
    /// None by default.
    fn prepare(&mut self, end: u64) -> Result<()> {
        let _ = end;
        Ok(())
    }

    /// One step: the batch of `step()`, forward, backward, the optimizer's update.
    ///
    /// # Errors
    /// A batch that could not be prepared; a loss that is not finite (the parameters are
    /// left as they were before the step).
    fn train_step(&mut self) -> Result<StepStats>;

    /// The method's monitor on the current weights (kNN accuracy on a labeled split, the
    /// held-out previous/next accuracy); `None` when the data has nothing to measure on.
    ///
    /// # Errors
    /// A failed evaluation.
    fn monitor(&self) -> Result<Option<f64>>;

    /// What [`Method::monitor`] measures.
    fn monitor_kind(&self) -> MonitorKind;

    /// How many times a wall-clock budget fits the run's length: the first after four
    /// steps, then at every tenth of the budget up to nine tenths (each later fit from the
    /// speed since the one before).
    fn budget_fits(&self) -> u8 {
        10
    }

    /// A line describing the run's data and model, printed when training starts.
    fn describe(&self) -> Option<String> {
        None
    }

    /// The metadata every checkpoint of the run carries (the model's configuration, what a
    /// reader needs to open it without the run folder).
    fn checkpoint_metadata(&self) -> Metadata;

    /// The model and data record of `config.json`.
    fn record(&self) -> Self::Record;

    /// Files the run folder holds beside the checkpoints (name, contents), written when the
    /// run starts (the text method's `vocab.json`).
    fn run_files(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The frozen encoder of the current weights, embedding `batch` items at a time.
    ///
    /// # Errors
    /// An invalid batch.
    fn embedder(&self, batch: usize) -> Result<Self::Embedder>;

    /// The method's name, as checkpoints record it.
    fn name(&self) -> &'static str {
        self.core().method()
    }

    /// Steps taken so far (the next step's index).
    fn step(&self) -> u64 {
        self.core().step()
    }

    /// This process's rank in its data-parallel group (0 in a single process).
    fn rank(&self) -> usize {
        self.core().rank()
    }

    /// The number of ranks (1 in a single process).
    fn ranks(&self) -> usize {
        self.core().ranks()
    }

    /// Rank 0's `value`, on every rank.
    ///
    /// # Errors
    /// A failed collective.
    fn root_value(&self, value: u64) -> Result<u64> {
        self.core().root_value(value)
    }

    /// Replaces the learning-rate schedule.
    fn set_schedule(&mut self, schedule: LrSchedule) {
        self.parts_mut().0.set_schedule(schedule);
    }

    /// Writes `ckpt-<step>.safetensors` into `dir` (model, optimizer state, `metadata`
    /// plus the step, the method and the number of ranks), keeping the newest `keep_last`;
    /// `Ok(None)` on ranks other than 0.
    ///
    /// # Errors
    /// As [`crate::train::save_in`].
    fn save_in(
        &self,
        dir: impl AsRef<Path>,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError>
    where
        Self: Sized,
    {
        self.core()
            .save_in(dir.as_ref(), self.graph(), metadata, keep_last)
    }

    /// Continues from the newest checkpoint in `dir`, if there is one; returns its step.
    ///
    /// # Errors
    /// As [`crate::train::load`]: another architecture, optimizer or method, a corrupt file.
    fn resume_from(
        &mut self,
        dir: impl AsRef<Path>,
    ) -> std::result::Result<Option<u64>, CheckpointError>
    where
        Self: Sized,
    {
        let (core, graph) = self.parts_mut();
        core.resume_from(dir.as_ref(), graph)
    }
}
