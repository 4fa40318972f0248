//! The training loop, once for every method and every process group: the run's length
//! (steps, epochs, or a wall-clock budget fitted to the measured speed), the warmup and
//! cosine schedule over it, checkpoints every N steps with the newest kept, resume checked
//! against the run's recorded settings, the stop on a non-finite loss that keeps the last
//! good checkpoint, the monitor every N epochs, `metrics.jsonl` and `loss.png`, the early
//! stop a [`StopSignal`] asks for (a checkpoint at the step reached, agreed by every rank),
//! and an [`Observer`] told of each event (burn-train's `Learner::fit` and its interrupter,
//! llm.c's `main`).

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::optim::LrSchedule;
use crate::train::method::Method;
use crate::train::observer::{FitSummary, Observer, RunStart};
use crate::train::run_dir::{MetricsLog, RunArgs, RunDir};
use crate::train::stop::StopSignal;

/// How long a run trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunLength {
    /// This many epochs (full batches of the whole group).
    Epochs(u64),
    /// This many steps.
    Steps(u64),
    /// A wall-clock budget in minutes: the length is fitted to the measured speed after
    /// the first steps (and the schedule with it).
    Minutes(f64),
}

/// Epochs of a run whose length is not given.
pub const DEFAULT_EPOCHS: u64 = 10;

/// Checkpoints a run folder keeps (the newest).
pub const KEEP_CHECKPOINTS: usize = 2;

/// The provisional length of a run on a wall-clock budget, before its first fit.
const UNFITTED_STEPS: u64 = 1_000_000;

/// Everything [`fit`] needs besides the method: the run folder, the run's length and
/// schedule, the checkpoint and monitor cadence, and the settings it records.
#[derive(Clone, Debug)]
pub struct FitConfig<A: RunArgs> {
    /// The run folder.
    pub out: PathBuf,
    /// The settings recorded in `config.json` (checked by a resumed run).
    pub args: A,
    /// The run's length; `None`: [`DEFAULT_EPOCHS`] epochs.
    pub length: Option<RunLength>,
    /// The peak learning rate.
    pub lr: f64,
    /// The optimizer's weight decay, as recorded.
    pub weight_decay: f32,
    /// The share of the steps spent in the linear warmup, in `[0, 1)`.
    pub warmup: f64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Run the monitor every this many epochs (0: only at the end).
    pub monitor_every: u64,
    /// Continue the run in `out` from its newest checkpoint; without it, a folder that
    /// already holds checkpoints is refused.
    pub resume: bool,
    /// Once given, the run stops before its next step and saves a checkpoint there (see
    /// [`fit`]); a clone of it is the handle to stop the run with.
    pub stop: StopSignal,
}

impl<A: RunArgs> FitConfig<A> {
    /// A run of `args` into `out`: 10 epochs, the learning rate `lr` with a 5% warmup, no
    /// weight decay recorded, a checkpoint every 500 steps, the monitor every epoch.
    pub fn new(out: impl Into<PathBuf>, args: A, lr: f64) -> Self {
        Self {
            out: out.into(),
            args,
            length: None,
            lr,
            weight_decay: 0.0,
            warmup: 0.05,
            checkpoint_every: 500,
            monitor_every: 1,
            resume: false,
            stop: StopSignal::new(),
        }
    }

    /// Warmup steps of a run of `total` steps.
    pub fn warmup_steps(&self, total: u64) -> u64 {
        ((total as f64 * self.warmup) as u64).min(total.saturating_sub(1))
    }

    /// The schedule of a run of `total` steps.
    ///
    /// # Errors
    /// An invalid learning rate or warmup.
    pub fn schedule(&self, total: u64) -> Result<LrSchedule> {
        LrSchedule::new(self.lr as f32, self.warmup_steps(total), total)
    }

    /// The run's length in steps for `steps_per_epoch` (provisional for a budget).
    pub fn total_steps(&self, steps_per_epoch: u64) -> u64 {
        match self.length {
            Some(RunLength::Epochs(e)) => e * steps_per_epoch,
            Some(RunLength::Steps(s)) => s,
            Some(RunLength::Minutes(_)) => UNFITTED_STEPS,
            None => DEFAULT_EPOCHS * steps_per_epoch,
        }
    }

    fn minutes(&self) -> Option<f64> {
        match self.length {
            Some(RunLength::Minutes(m)) => Some(m),
            _ => None,
        }
    }
}

/// Trains `method` for the run `cfg` describes, reporting to `observer` (on rank 0), and
/// returns the run's summary. Every rank of a data-parallel run calls it; rank 0 alone
/// writes the run folder.
///
/// When `cfg.stop` is given (on any rank: the ranks agree before every step), the run
/// stops before its next step: it saves a checkpoint at the step reached (unless no step
/// was taken since the last one, or a wall-clock budget's length is not fitted yet),
/// writes its metrics, tells [`Observer::stopped`] and returns a summary whose
/// `stopped_at` is that step. Resuming from that checkpoint gives the same bits as the run
/// that was not stopped.
///
/// # Errors
/// A run folder that cannot be written, or holds checkpoints without `resume`, or whose
/// recorded settings differ from `cfg.args`; a checkpoint that does not fit; a failed step
/// (a non-finite loss: the message names the last checkpoint, which is kept).
pub fn fit<M: Method, A: RunArgs>(
    method: &mut M,
    cfg: &FitConfig<A>,
    observer: &mut dyn Observer,
) -> Result<FitSummary> {
    let root = method.rank() == 0;
    let ranks = method.ranks();
    let dir = RunDir::new(&cfg.out);
    let settings = cfg.args.settings();
    if root {
        dir.create()?;
    }
    let spe = method.steps_per_epoch();
    let mut total = cfg.total_steps(spe);
    if cfg.resume {
        if root {
            total = dir.check_resume(&settings)?.total_steps;
        }
        total = method.root_value(total)?;
    }
    method.set_schedule(cfg.schedule(total)?);
    start_or_resume(method, &dir, cfg.resume, observer)?;
    if root {
        for (name, contents) in method.run_files() {
            dir.write_file(name, contents.as_bytes())?;
        }
    }
    let record = method.record();
    let write_config = |total: u64| -> Result<()> {
        if root {
            dir.write_config(
                &cfg.args,
                &record,
                total,
                cfg.lr,
                cfg.weight_decay,
                cfg.warmup_steps(total),
            )?;
        }
        Ok(())
    };
    write_config(total)?;

    let mut meta = method.checkpoint_metadata();
    meta.insert("data".into(), settings.data.clone());
    let (unit, monitor_kind) = (method.unit(), method.monitor_kind());
    let items_per_step = method.batch_size() * ranks;
    let start_step = method.step();
    let description = method.describe();
    if root {
        observer.started(&RunStart {
            method: method.name(),
            unit,
            items_per_step,
            ranks,
            start_step,
            total_steps: total,
            monitor: monitor_kind,
            description: description.as_deref(),
        });
    }
    let mut log = MetricsLog::open(&dir, root)?;
    // The second fit is due by the clock, which differs between ranks: a data-parallel
    // run fits once, at a step every rank reaches together.
    let fits = if ranks > 1 { 1 } else { method.budget_fits() };
    let mut budget = BudgetFit::new(cfg.minutes(), cfg.resume, start_step, fits);
    let mut train_seconds = 0.0;
    let mut last_monitor = Instant::now();
    let mut last_ckpt: Option<PathBuf> = None;
    let mut saved_at = None;
    let mut stopped_at = None;
    let mut monitor_last = None;
    let stopped = |e: Error, last: &Option<PathBuf>| {
        let kept = last
            .as_ref()
            .map(|p| format!("; the last checkpoint {} is kept", p.display()))
            .unwrap_or_default();
        Error::Run(format!("{e}{kept}"))
    };
    method.prepare(total)?;
    while method.step() < total {
        // A stop asked since the last step, on any rank: every rank stops here (a single
        // process reads its flag and nothing more).
        if method.core().any_rank(cfg.stop.is_stopped())? {
            stopped_at = Some(method.step());
            break;
        }
        let ts = Instant::now();
        let stats = match method.train_step() {
            Ok(s) => s,
            Err(e) => {
                if root {
                    observer.failed();
                }
                return Err(stopped(e, &last_ckpt));
            }
        };
        let dt = ts.elapsed().as_secs_f64();
        train_seconds += dt;
        let rate = items_per_step as f64 / dt;
        if let Some(t) = budget.refit(method.step()) {
            // Each rank timed itself: all take rank 0's length.
            total = method.root_value(t)?;
            method.set_schedule(cfg.schedule(total)?);
            write_config(total)?;
            method.prepare(total)?;
            if root {
                observer.length_changed(total);
            }
        }
        log.step(&stats, unit.rate_key(), rate)?;
        if root {
            observer.step(&stats, total, rate);
        }
        let step = method.step();
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) && step < total {
            last_ckpt = method.save_in(dir.path(), &meta, KEEP_CHECKPOINTS)?;
            saved_at = Some(step);
            // Only rank 0 writes, so only rank 0 has a path to report.
            if let Some(p) = &last_ckpt {
                observer.checkpoint(p);
            }
        }
        let epoch = step / spe;
        if step.is_multiple_of(spe)
            && root
            && cfg.monitor_every > 0
            && epoch.is_multiple_of(cfg.monitor_every)
            && step < total
            && last_monitor.elapsed().as_secs_f64() >= monitor_kind.min_seconds
        {
            last_monitor = Instant::now();
            if let Some(v) = method.monitor()? {
                observer.monitor(&monitor_kind, epoch, step, v);
                log.monitor(epoch, step, monitor_kind.key, v)?;
                monitor_last = Some(v);
            }
        }
    }
    method.prepare(method.step())?;
    let steps = method.step() - start_step;
    let summary = |checkpoint: Option<PathBuf>, stopped_at: Option<u64>| FitSummary {
        method: method.name(),
        checkpoint,
        steps,
        seconds: train_seconds,
        items_per_s: steps as f64 * items_per_step as f64 / train_seconds.max(1e-9),
        unit,
        ranks,
        monitor: monitor_kind,
        monitor_value: monitor_last,
        stopped_at,
    };
    if let Some(step) = stopped_at {
        // A checkpoint at the step reached, unless it is the last one written, or no step
        // was taken (the newest checkpoint stands), or a budget's length is not fitted yet
        // (the steps' schedule was provisional, and a resumed run would keep it).
        let checkpoint = if step > start_step && saved_at != Some(step) && !budget.unfitted() {
            let written = method.save_in(dir.path(), &meta, KEEP_CHECKPOINTS)?;
            if let Some(p) = &written {
                observer.checkpoint(p);
            }
            written
        } else if root {
            dir.latest_checkpoint()?.map(|(_, p)| p)
        } else {
            None
        };
        log.finish()?;
        if root {
            observer.stopped(step, checkpoint.as_deref());
        }
        return Ok(summary(checkpoint, Some(step)));
    }
    let checkpoint = method.save_in(dir.path(), &meta, KEEP_CHECKPOINTS)?;
    let mut summary = summary(checkpoint, None);
    if summary.checkpoint.is_none() {
        // Rank r > 0: rank 0 reports and holds the run.
        return Ok(summary);
    }
    if let Some(v) = method.monitor()? {
        let step = method.step();
        log.monitor(step / spe, step, monitor_kind.key, v)?;
        monitor_last = Some(v);
    }
    log.finish()?;
    summary.monitor_value = monitor_last;
    if let Some(p) = &summary.checkpoint {
        observer.checkpoint(p);
    }
    observer.finished(&summary);
    Ok(summary)
}

/// With `resume`, continues from the run folder's newest checkpoint, if there is one;
/// without it, refuses a folder that already holds checkpoints (on rank 0; resuming is
/// collective: rank 0 reads, every rank receives).
fn start_or_resume<M: Method>(
    method: &mut M,
    dir: &RunDir,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<()> {
    if method.rank() != 0 {
        if resume {
            method.resume_from(dir.path())?;
        }
        return Ok(());
    }
    if resume {
        let step = method.resume_from(dir.path())?;
        observer.resumed(dir.path(), step);
    } else if dir.latest_checkpoint()?.is_some() {
        return Err(Error::Run(format!(
            "{} already holds checkpoints: pass --resume to continue it, or choose another --out",
            dir.path().display()
        )));
    }
    Ok(())
}

/// When the later fits of a budget are due, as shares of the budget: the first fit comes
/// after four steps, the later ones at every tenth of the budget up to nine tenths, so that
/// a machine that speeds up or slows down halfway (another job starting or ending beside
/// the run) moves the end by at most a tenth of the budget.
const REFIT_AT: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// A wall-clock budget: the run's length fitted from the measured speed, after the first
/// few steps and then (up to `max_fits` in all) at the shares of [`REFIT_AT`]. The first
/// steps' speed is a rough guess (caches start cold, a build beside the run may end): each
/// later fit divides the budget still left by the speed measured since the fit before, so
/// the run ends near its budget whatever the first steps measured. A resumed run keeps the
/// length it recorded.
pub(crate) struct BudgetFit {
    budget: Option<f64>,
    start_step: u64,
    t0: Instant,
    fits: u8,
    max_fits: u8,
    /// The seconds and step of the last fit.
    last: Option<(f64, u64)>,
}

impl BudgetFit {
    pub(crate) fn new(minutes: Option<f64>, resumed: bool, start_step: u64, max_fits: u8) -> Self {
        Self {
            budget: minutes.filter(|_| !resumed).map(|m| m * 60.0),
            start_step,
            t0: Instant::now(),
            fits: 0,
            max_fits,
            last: None,
        }
    }

    /// Whether the run is on a budget whose length is not fitted yet (its schedule is
    /// provisional).
    pub(crate) fn unfitted(&self) -> bool {
        self.budget.is_some() && self.fits == 0
    }

    /// The run's new length in steps, when `step` is the moment to (re)fit it.
    pub(crate) fn refit(&mut self, step: u64) -> Option<u64> {
        let budget = self.budget?;
        let elapsed = self.t0.elapsed().as_secs_f64();
        let due = match self.fits {
            _ if self.fits >= self.max_fits => false,
            0 => step >= self.start_step + 4,
            k => REFIT_AT
                .get(usize::from(k) - 1)
                .is_some_and(|&share| elapsed >= share * budget),
        };
        let (t_prev, s_prev) = self.last.unwrap_or((0.0, self.start_step));
        if !due || step <= s_prev {
            return None;
        }
        self.fits += 1;
        self.last = Some((elapsed, step));
        let per_step = (elapsed - t_prev) / (step - s_prev) as f64;
        let left = ((budget - elapsed).max(0.0) / per_step) as u64;
        Some(step.saturating_add(left).max(step + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::BudgetFit;

    #[test]
    fn the_budget_is_fitted_twice_and_never_for_a_resumed_run() {
        // A budget of 6 microseconds: the second fit is due a millisecond later.
        let mut fit = BudgetFit::new(Some(1e-7), false, 10, 2);
        assert_eq!(fit.refit(11), None, "not before 4 steps");
        assert_eq!(fit.refit(13), None);
        let first = fit.refit(14).expect("the first fit after 4 steps");
        assert!(first >= 15, "at least one more step: {first}");
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(fit.refit(15).is_some(), "the second fit");
        assert_eq!(fit.refit(16), None, "two fits only");
        assert_eq!(fit.refit(1000), None);
        let mut resumed = BudgetFit::new(Some(5.0), true, 10, 2);
        assert_eq!(resumed.refit(14), None);
        let mut steps = BudgetFit::new(None, false, 0, 2);
        let mut once = BudgetFit::new(Some(1e-7), false, 0, 1);
        assert!(once.refit(4).is_some());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!(once.refit(5), None, "one fit only");
        assert_eq!(steps.refit(4), None);
        // A long budget: the first fit projects far beyond the steps taken so far.
        let mut long = BudgetFit::new(Some(60.0), false, 0, 2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let total = long.refit(4).unwrap();
        assert!(total > 1000, "{total}");
        assert_eq!(
            long.refit(5),
            None,
            "the second fit waits for a tenth of the budget"
        );
    }

    /// A slow start (a build beside the run, cold caches) does not shorten the run: the
    /// later fits divide the budget left by the speed since the fit before, not by the
    /// average since the start.
    #[test]
    fn later_fits_take_the_recent_speed_and_the_budget_left() {
        let t0 = std::time::Instant::now();
        // A budget of one second, its first four steps taking 50 ms.
        let mut fit = BudgetFit::new(Some(1.0 / 60.0), false, 0, 3);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let first = fit.refit(4).unwrap();
        assert!(first < 100, "{first}");
        // Then 396 steps by a tenth of the budget: much faster.
        std::thread::sleep(std::time::Duration::from_millis(60));
        let elapsed = t0.elapsed().as_secs_f64();
        let second = fit.refit(400).expect("the second fit at a tenth");
        let average = 400.0 / elapsed;
        assert!(
            second as f64 > 1.15 * average,
            "{second} steps vs {average:.0} from the average speed"
        );
        assert_eq!(fit.refit(401), None, "the third waits for two tenths");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(fit.refit(402).is_some(), "the third fit");
        assert_eq!(fit.refit(403), None, "three fits only");
    }

    /// A machine that doubles its speed halfway through the budget (a job beside the run
    /// ended) still ends the run near its budget: the fits at every tenth follow the speed.
    /// With the fits at 10% and 30% only, the run ended at about 60% of its budget.
    #[test]
    fn a_run_that_speeds_up_halfway_still_fills_its_budget() {
        use std::time::{Duration, Instant};
        let budget = Duration::from_millis(1500);
        let mut fit = BudgetFit::new(Some(budget.as_secs_f64() / 60.0), false, 0, 10);
        let t0 = Instant::now();
        let mut total = u64::MAX;
        let mut step = 0u64;
        while step < total {
            // 4 ms a step for the first half of the budget, 2 ms after.
            let slow = t0.elapsed() < budget / 2;
            std::thread::sleep(Duration::from_millis(if slow { 4 } else { 2 }));
            step += 1;
            if let Some(t) = fit.refit(step) {
                total = t;
            }
            assert!(t0.elapsed() < 3 * budget, "the run does not end");
        }
        let used = t0.elapsed().as_secs_f64() / budget.as_secs_f64();
        assert!(
            (0.85..1.2).contains(&used),
            "the run took {used:.2} of its budget ({step} steps)"
        );
    }
}
