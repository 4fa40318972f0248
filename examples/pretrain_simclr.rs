//! SimCLR on the built-in dataset from a program: the library's `fit` owns the run (schedule,
//! checkpoints, resume, the kNN monitor, metrics.jsonl); the observer prints progress.
//! Run it twice: the second run resumes the first (`cargo run --release --example
//! pretrain_simclr`).

use std::path::Path;
use std::sync::Arc;

use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::Splits;
use selfsup::train::image::{ImageMethod, Pretrainer};
use selfsup::train::{fit, FitConfig, FitSummary, Observer, Recipe, RunDir, RunLength, StepStats};

/// A line every 25 steps.
struct Lines;

impl Observer for Lines {
    fn step(&mut self, s: &StepStats, total: u64, images_per_s: f64) {
        if (s.step + 1).is_multiple_of(25) {
            eprintln!(
                "step {}/{total}  loss {:.4}  {images_per_s:.0} images/s",
                s.step + 1,
                s.loss
            );
        }
    }
}

/// Trains `steps` steps of SimCLR into `out`, resuming the run there if there is one.
pub fn run(out: &Path, steps: u64) -> selfsup::Result<FitSummary> {
    let (train, test) = builtin_splits(&BuiltinConfig::default());
    let splits = Arc::new(Splits::new(train, Some(test)));
    // `selfsup pretrain`'s defaults: the quick recipe (batch 32, LARS at lr 2, widths 8/16/32).
    let (cfg, lr) = Recipe::Quick.pretrain_config(ImageMethod::SimClr, 3, 32, true);
    let mut trainer = Pretrainer::new(cfg.clone(), Arc::clone(&splits.train))?.with_monitor(splits);
    let mut run = FitConfig::new(out, cfg.settings("builtin"), lr);
    run.length = Some(RunLength::Steps(steps));
    run.checkpoint_every = steps.div_ceil(2);
    run.resume = RunDir::new(out).config_path().exists();
    fit(&mut trainer, &run, &mut Lines)
}

#[allow(dead_code)]
fn main() -> selfsup::Result<()> {
    let s = run(Path::new("runs/pretrain_simclr"), 200)?;
    println!(
        "{} steps, kNN accuracy {:?}, checkpoint {:?}",
        s.steps, s.monitor_value, s.checkpoint
    );
    Ok(())
}
