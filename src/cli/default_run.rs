//! `selfsup` with no arguments (what `cargo run --release` runs): SimCLR and RotNet
//! pretrained on the built-in dataset for a few minutes, then the linear-probe table (raw
//! pixels, random init, SimCLR, RotNet; 1% and 100% labels).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser};

use selfsup::train::embed::Embedder;

use super::data::load_splits;
use super::group;
use super::pretrain::{pretrain, PretrainArgs};
use super::probe::{
    encoder_features, print_table, probe_table, raw_features, LabelShare, ProbePlan,
};
use super::threads::set_threads;

/// Options of the default run (`selfsup demo`; `selfsup` alone runs it with its defaults).
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Minutes of SimCLR pretraining
    #[arg(long, value_name = "M", default_value_t = 2.5)]
    pub simclr_minutes: f64,

    /// Minutes of RotNet pretraining
    #[arg(long, value_name = "M", default_value_t = 0.75)]
    pub rotnet_minutes: f64,

    /// Where the two runs go (each replaced if it exists)
    #[arg(long, value_name = "DIR", default_value = "runs/default")]
    pub out: PathBuf,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = super::values::at_least_one::<u64>)]
    pub threads: Option<u64>,

    /// The seed
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

fn pretrain_args(method: &str, minutes: f64, out: PathBuf, demo: &DemoArgs) -> PretrainArgs {
    let minutes = minutes.to_string();
    let seed = demo.seed.to_string();
    let out_s = out.to_string_lossy().into_owned();
    let argv = [
        "selfsup",
        "pretrain",
        "--method",
        method,
        "--data",
        "builtin",
        "--minutes",
        &minutes,
        "--out",
        &out_s,
        "--seed",
        &seed,
        "--knn-every",
        "0",
        "--checkpoint-every",
        "0",
    ];
    // Nothing else: the default run trains with `pretrain`'s defaults, the quick recipe.
    match super::Cli::parse_from(argv).command {
        Some(super::Command::Pretrain(a)) => a,
        _ => unreachable!("the argument list parses to `pretrain`"),
    }
}

/// Runs the default job.
pub fn run(demo: &DemoArgs) -> Result<()> {
    group::single_process("the default run")?;
    set_threads(demo.threads);
    let t0 = Instant::now();
    eprintln!(
        "selfsup default run: SimCLR ({} min) and RotNet ({} min) on the built-in dataset, \
         then the linear probe. `selfsup --help` lists the commands.",
        demo.simclr_minutes, demo.rotnet_minutes
    );
    let (splits, size) = load_splits("builtin", None)?;
    let splits = Arc::new(splits);
    eprintln!(
        "built-in dataset: {} training and {} test images, 3x32x32, 10 shape classes ({:.1} s)",
        splits.train.n,
        splits.test.as_ref().map_or(0, |t| t.n),
        t0.elapsed().as_secs_f64()
    );
    let shares = [LabelShare::Fraction(0.01), LabelShare::Fraction(1.0)];
    let plan = ProbePlan::new(&splits, &shares, demo.seed)?;
    let mut features = vec![raw_features(&splits, &plan, size)?];
    let mut outcomes = Vec::new();
    for (method, minutes) in [
        ("simclr", demo.simclr_minutes),
        ("rotnet", demo.rotnet_minutes),
    ] {
        let dir = demo.out.join(method);
        // A fresh run each time: the default run is a demonstration, not a resumable job.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let args = pretrain_args(method, minutes, dir, demo);
        outcomes.push((method, pretrain(&args, Arc::clone(&splits), size)?));
    }
    let model = &outcomes[0].1.model;
    let mut random = Embedder::new(model, 256, demo.seed)?;
    features.push(encoder_features(
        "random init",
        &mut random,
        &splits,
        &plan,
    )?);
    for (method, o) in &outcomes {
        let ckpt = o
            .summary
            .checkpoint
            .as_ref()
            .context("the run wrote no checkpoint")?;
        let mut e = Embedder::from_checkpoint(&o.model, 256, ckpt)?;
        let name = match *method {
            "simclr" => "SimCLR",
            _ => "RotNet",
        };
        features.push(encoder_features(name, &mut e, &splits, &plan)?);
    }
    let rows = probe_table(&splits, &plan, &features)?;
    println!();
    print_table(
        "linear probe on the built-in dataset (test accuracy, 2,000 images, chance 10%)",
        &shares,
        &rows,
    );
    for (method, o) in &outcomes {
        println!(
            "{method}: {} steps in {:.0} s ({:.0} images/s){}",
            o.summary.steps,
            o.summary.seconds,
            o.summary.items_per_s,
            o.summary
                .monitor_value
                .map(|a| format!(", kNN {:.2}%", 100.0 * a))
                .unwrap_or_default()
        );
    }
    println!(
        "total {:.0} s; runs in {}",
        t0.elapsed().as_secs_f64(),
        demo.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::pretrain::{MethodArg, OptimizerArg, RecipeArg};

    /// The default run pretrains with `pretrain`'s own defaults (the quick recipe), so
    /// what it shows is what a user's first `pretrain` gets; both methods on one encoder.
    #[test]
    fn the_default_run_uses_the_quick_recipe() {
        let demo = crate::cli::default_demo_args();
        let s = pretrain_args("simclr", 2.5, "x".into(), &demo).resolved_image(32, true, 1);
        assert_eq!(s.method, MethodArg::Simclr);
        assert_eq!(s.recipe, Some(RecipeArg::Quick));
        assert_eq!(s.widths, Some(vec![8, 16, 32]));
        assert_eq!(s.batch, Some(32));
        assert_eq!(s.optimizer, Some(OptimizerArg::Lars));
        assert_eq!(s.lr, Some(2.0));
        assert_eq!(s.tau, Some(0.2));
        assert_eq!(s.crop_min, Some(0.3));
        assert_eq!(s.minutes, Some(2.5));
        let r = pretrain_args("rotnet", 0.75, "y".into(), &demo).resolved_image(32, true, 1);
        assert_eq!(r.method, MethodArg::Rotnet);
        assert_eq!(r.widths, s.widths);
        assert_eq!(r.batch, Some(32));
        assert_eq!(r.optimizer, Some(OptimizerArg::Sgd));
        assert_eq!(r.lr, Some(0.2));
        assert_eq!(r.tau, None);
    }
}
