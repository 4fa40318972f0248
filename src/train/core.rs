//! What every trainer holds beside its model: the process group, the optimizer, the
//! learning-rate schedule and the step counter; the update that ends each step (gradients
//! summed over the group in rank order, the scheduled learning rate, the optimizer's step)
//! and the run's checkpoints (written by rank 0, read back collectively).

use std::path::{Path, PathBuf};

use crate::dist::Collectives;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::io::checkpoint::CheckpointError;
use crate::optim::{LrSchedule, Optimizer};
use crate::train::group::Group;
use crate::train::state::Metadata;

/// The state a trainer shares with every other: its group, optimizer, schedule and step.
pub struct Core {
    method: &'static str,
    /// The name errors of a step carry (`pretrain`, `quick thoughts`).
    op: &'static str,
    group: Group,
    opt: Optimizer,
    schedule: LrSchedule,
    step: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("method", &self.method)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The core of a `method` (its name in checkpoints) trainer in `group`, at step 0;
    /// its step errors say `op`.
    pub(crate) fn new(
        method: &'static str,
        op: &'static str,
        group: Group,
        opt: Optimizer,
        schedule: LrSchedule,
    ) -> Self {
        Self {
            method,
            op,
            group,
            opt,
            schedule,
            step: 0,
        }
    }

    /// The method's name, as checkpoints record it (`simclr`, `rotnet`, `quickthought`).
    pub fn method(&self) -> &'static str {
        self.method
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

    /// Whether `flag` is true on any rank, on every rank (a stop asked on one rank stops
    /// all of them at the same step); `flag` itself in a single process.
    ///
    /// # Errors
    /// A failed collective.
    pub fn any_rank(&self, flag: bool) -> Result<bool> {
        self.group.any_rank(flag)
    }

    /// Steps taken so far (the next step's index).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Replaces the learning-rate schedule (a wall-clock budget fits the run's length to
    /// the measured speed after the first steps, which are in the warmup of both).
    pub fn set_schedule(&mut self, schedule: LrSchedule) {
        self.schedule = schedule;
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// The group's transport (for a graph's forward and backward passes).
    pub(crate) fn comm(&self) -> &dyn Collectives {
        &*self.group.comm
    }

    /// Rank 0's non-trained buffers (BatchNorm running statistics) to every rank.
    pub(crate) fn broadcast_buffers(&self, g: &mut Graph) -> Result<()> {
        self.group.broadcast_buffers(g)
    }

    /// Whether a step moves onto the rayon pool (see [`crate::train::group::run_step`]).
    pub(crate) fn steps_on_pool(&self) -> bool {
        self.group.steps_on_pool()
    }

    /// The end of a step whose backward pass filled `g`'s gradients: the gradients summed
    /// over the group, the optimizer's update at the scheduled learning rate, the step
    /// counter advanced. Returns the learning rate used; errors name the step.
    pub(crate) fn update(&mut self, g: &mut Graph) -> Result<f32> {
        let (op, step) = (self.op, self.step);
        self.group.sum_grads(g).map_err(|e| at_step(op, step, e))?;
        let lr = self.schedule.lr(step);
        let (p, gr, groups) = g.params_and_grads();
        self.opt
            .step(p, gr, groups, lr)
            .map_err(|e| at_step(op, step, e))?;
        self.step += 1;
        Ok(lr)
    }

    /// Writes `ckpt-<step>.safetensors` into `dir` (the model `graph`, the optimizer
    /// state, `metadata` plus the step, the method and the number of ranks), keeping the
    /// newest `keep_last`. In a data-parallel run only rank 0 writes (every rank holds the
    /// same weights); the others return `Ok(None)` at once.
    ///
    /// # Errors
    /// As [`crate::train::save_in`].
    pub fn save_in(
        &self,
        dir: &Path,
        graph: &Graph,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError> {
        self.group.save(
            dir,
            self.step,
            self.method,
            graph,
            &self.opt,
            metadata,
            keep_last,
        )
    }

    /// Continues from the newest checkpoint in `dir`, if there is one (the model into
    /// `graph`); returns its step. In a data-parallel run rank 0 reads the checkpoint (it
    /// must be of a run with as many ranks) and sends its state to the others.
    ///
    /// # Errors
    /// As [`crate::train::load`]: another architecture, optimizer or method, a corrupt
    /// file; a failure is an error on every rank.
    pub fn resume_from(
        &mut self,
        dir: &Path,
        graph: &mut Graph,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let resumed = self.group.resume(dir, self.method, graph, &mut self.opt)?;
        if let Some(step) = resumed {
            self.step = step;
        }
        Ok(resumed)
    }
}

/// A failure inside step `step` of an `op` trainer, naming it (the weights stay as they
/// were before it).
pub(crate) fn at_step(op: &'static str, step: u64, e: Error) -> Error {
    Error::InvalidArgument {
        op,
        msg: format!("at step {step}: {e}; training stopped (the last checkpoint is kept)"),
    }
}

/// The error of a loss that is not finite at step `step` of an `op` trainer.
pub(crate) fn non_finite(op: &'static str, loss: f64, step: u64) -> Error {
    Error::InvalidArgument {
        op,
        msg: format!(
            "the loss is {loss} at step {step}; training stopped (the last checkpoint is kept)"
        ),
    }
}
