//! What a training run reports as it goes: the `Observer` trait, whose methods
//! [`crate::train::fit()`] calls on rank 0 (the start, every step, a changed run length,
//! each monitor run and checkpoint, the end or an early stop), and `Silent`, which ignores
//! them all.

use std::path::Path;

use crate::train::method::{MonitorKind, StepStats, Unit};

/// The run as it starts.
#[derive(Clone, Debug)]
pub struct RunStart<'a> {
    /// The method's name (`simclr`, `rotnet`, `quickthought`).
    pub method: &'static str,
    /// What a step consumes.
    pub unit: Unit,
    /// Items of one step over the whole group.
    pub items_per_step: usize,
    /// The processes of the run.
    pub ranks: usize,
    /// The first step of this call (the resumed checkpoint's step, or 0).
    pub start_step: u64,
    /// The run's length in steps (for a wall-clock budget, a provisional one until it is
    /// fitted: see [`Observer::length_changed`]).
    pub total_steps: u64,
    /// What the monitor measures.
    pub monitor: MonitorKind,
    /// The method's description of its data and model, if it gives one.
    pub description: Option<&'a str>,
}

/// The run as it ends.
#[derive(Clone, Debug, PartialEq)]
pub struct FitSummary {
    /// The method's name.
    pub method: &'static str,
    /// The final checkpoint (`None` on the ranks other than 0 of a data-parallel run); for
    /// a stopped run, the checkpoint to resume from (`None` if there is none yet).
    pub checkpoint: Option<std::path::PathBuf>,
    /// The step a [`crate::train::StopSignal`] stopped the run at, before its end (`None`:
    /// the run trained to its end).
    pub stopped_at: Option<u64>,
    /// Steps taken by this call.
    pub steps: u64,
    /// Training seconds (data preparation and the monitor excluded).
    pub seconds: f64,
    /// Items (images, sentences) per training second over the whole group.
    pub items_per_s: f64,
    /// What a step consumes.
    pub unit: Unit,
    /// The processes of the run.
    pub ranks: usize,
    /// What the monitor measures, and its last value (`None` when the data has nothing to
    /// measure on).
    pub monitor: MonitorKind,
    /// The monitor's last value.
    pub monitor_value: Option<f64>,
}

/// Receives a training run's events (on rank 0 only). Every method has an empty default,
/// so an observer implements what it shows.
pub trait Observer {
    /// Resuming found the newest checkpoint of `dir` at `step`, or (`None`) no checkpoint:
    /// the run starts at step 0.
    fn resumed(&mut self, dir: &Path, step: Option<u64>) {
        let _ = (dir, step);
    }

    /// Training starts.
    fn started(&mut self, run: &RunStart<'_>) {
        let _ = run;
    }

    /// A step was taken: its statistics, the run's length and this step's speed in items
    /// per second (of the whole group).
    fn step(&mut self, stats: &StepStats, total_steps: u64, items_per_s: f64) {
        let _ = (stats, total_steps, items_per_s);
    }

    /// A wall-clock budget fitted the run's length to the measured speed.
    fn length_changed(&mut self, total_steps: u64) {
        let _ = total_steps;
    }

    /// The monitor ran at the end of `epoch` (at `step`).
    fn monitor(&mut self, kind: &MonitorKind, epoch: u64, step: u64, value: f64) {
        let _ = (kind, epoch, step, value);
    }

    /// A checkpoint was written.
    fn checkpoint(&mut self, path: &Path) {
        let _ = path;
    }

    /// The run ended (its final checkpoint written).
    fn finished(&mut self, summary: &FitSummary) {
        let _ = summary;
    }

    /// The run's [`crate::train::StopSignal`] stopped it before `step` (steps `0..step` are
    /// done); `checkpoint` is the one to resume from: written at `step`, or an earlier one
    /// when no step was taken since it, or `None` when there is none (nothing was trained,
    /// or a run on a wall-clock budget stopped before its length was fitted: its schedule
    /// was still provisional).
    fn stopped(&mut self, step: u64, checkpoint: Option<&Path>) {
        let _ = (step, checkpoint);
    }

    /// The run stopped with an error (a non-finite loss, a failed write).
    fn failed(&mut self) {}
}

/// An observer that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}
