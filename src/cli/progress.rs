//! The progress a training run shows on stderr: an indicatif bar with the loss, learning
//! rate and speed (smoothed) on a terminal; plain lines every few seconds with `--quiet` or
//! when stderr is not a terminal (a log file, a pipe, a scheduler's output); the monitor's
//! results, the resume point and the closing line in either case; where an interrupted
//! run's checkpoint is and how to resume it.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use selfsup::train::{FitSummary, MonitorKind, Observer, RunStart, StepStats, Unit};

use super::group;
use super::interrupt;

/// Time between two plain progress lines (the first step's line comes at once).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The observer of `selfsup pretrain`.
pub struct Progress {
    bar: ProgressBar,
    /// Plain lines instead of the bar.
    plain: bool,
    unit: Unit,
    ema_rate: f64,
    ema_acc: f64,
    /// When the last plain line was printed.
    last_line: Option<Instant>,
    /// The processes of the run.
    ranks: usize,
}

impl Progress {
    /// A bar on a terminal, plain lines with `quiet` or when stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        let plain = quiet || !std::io::stderr().is_terminal();
        let bar = ProgressBar::new(0);
        if plain {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
        Self {
            bar,
            plain,
            unit: Unit::Images,
            ema_rate: 0.0,
            ema_acc: f64::NAN,
            last_line: None,
            ranks: 1,
        }
    }

    /// A line above the bar, or on stderr when there is no bar.
    fn say(&self, line: String) {
        if self.plain {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// The step's figures: loss, (text) the smoothed in-batch accuracy, lr, speed.
    fn figures(&self, stats: &StepStats) -> String {
        match self.unit {
            Unit::Images => format!(
                "loss {:.4}  lr {:.4}  {:.0} img/s",
                stats.loss, stats.lr, self.ema_rate
            ),
            Unit::Sentences => format!(
                "loss {:.4}  prev/next acc {:.1}%  lr {:.2e}  {:.0} sent/s",
                stats.loss,
                100.0 * self.ema_acc,
                stats.lr,
                self.ema_rate
            ),
        }
    }
}

impl Observer for Progress {
    fn resumed(&mut self, dir: &Path, step: Option<u64>) {
        match step {
            Some(step) => eprintln!("resuming {} at step {step}", dir.display()),
            None => eprintln!("no checkpoint in {}: starting at step 0", dir.display()),
        }
    }

    fn started(&mut self, run: &RunStart<'_>) {
        self.unit = run.unit;
        self.ranks = run.ranks;
        if let Some(d) = run.description {
            eprintln!("{d}");
        }
        self.bar.set_length(run.total_steps);
        self.bar.set_position(run.start_step);
    }

    fn step(&mut self, stats: &StepStats, total_steps: u64, items_per_s: f64) {
        self.ema_rate = if self.ema_rate == 0.0 {
            items_per_s
        } else {
            0.9 * self.ema_rate + 0.1 * items_per_s
        };
        self.ema_acc = if self.ema_acc.is_nan() {
            stats.accuracy
        } else {
            0.95 * self.ema_acc + 0.05 * stats.accuracy
        };
        let done = stats.step + 1;
        self.bar.set_position(done);
        self.bar.set_message(self.figures(stats));
        let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY);
        if self.plain && (due || done == total_steps) {
            self.last_line = Some(Instant::now());
            eprintln!("step {done}/{total_steps}  {}", self.figures(stats));
        }
    }

    fn length_changed(&mut self, total_steps: u64) {
        self.bar.set_length(total_steps);
    }

    fn monitor(&mut self, kind: &MonitorKind, epoch: u64, _step: u64, value: f64) {
        self.say(format!(
            "epoch {epoch}: {} {:.2}%",
            kind.label,
            100.0 * value
        ));
    }

    fn finished(&mut self, s: &FitSummary) {
        self.bar.finish_and_clear();
        let Some(checkpoint) = &s.checkpoint else {
            return;
        };
        eprintln!(
            "{}: {} steps in {:.0} s ({:.0} {}/s{}){}; checkpoint {}",
            s.method,
            s.steps,
            s.seconds,
            s.items_per_s,
            s.unit.name(),
            group::over_processes(s.ranks),
            s.monitor_value
                .map(|a| format!(", {} {:.2}%", s.monitor.label, 100.0 * a))
                .unwrap_or_default(),
            checkpoint.display()
        );
    }

    fn stopped(&mut self, step: u64, checkpoint: Option<&Path>) {
        self.bar.finish_and_clear();
        for line in interrupt::report(step, checkpoint, self.ranks) {
            eprintln!("{line}");
        }
    }

    fn failed(&mut self) {
        self.bar.abandon();
    }
}
