//! `selfsup pretrain`: SimCLR or RotNet on a dataset, with a progress bar, a run folder
//! (config.json, metrics.jsonl, checkpoints, loss.png) and a kNN monitor.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use selfsup::io::checkpoint;
use selfsup::data::augment::{RotnetAugment, SimclrAugment};
use selfsup::eval::knn::{knn_accuracy, KnnConfig};
use selfsup::nn::{QtObjective, ResNetConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LarsConfig, LrSchedule, OptimizerConfig, SgdConfig};
use selfsup::train::image::{Embedder, Method, PretrainConfig, Pretrainer, StepStats};
use selfsup::train::Metadata;

use super::data::{load_splits, Splits};
use super::group;

const EXAMPLES: &str = "\
Examples:
  selfsup pretrain --data builtin --minutes 3 --out runs/simclr
  selfsup pretrain --data fashion-mnist --minutes 10 --widths 16,32,128 --batch 32 \\
      --optimizer lars --lr 2 --tau 0.2 --crop-min 0.3 --out runs/fmnist
  selfsup pretrain --method rotnet --data fashion-mnist --epochs 20 --out runs/rot
  selfsup pretrain --data cifar10:~/cifar --steps 5000 --optimizer lars --lr 1.2 --out runs/c10
  selfsup pretrain --out runs/simclr --resume        continue from the newest checkpoint
  selfsup pretrain --method quickthought --minutes 2 --out runs/qt          built-in text corpus
  selfsup pretrain --method quickthought --data text:/usr/share/common-licenses --out runs/lic

The defaults (SGD, lr 0.06 x batch/256, tau 0.5, batch 256) are SimCLR's recipe for runs
of hundreds of epochs. For runs of minutes, the measured recipe of the second example
(small batches, LARS at lr 2, tau 0.2, crops of at least 30%) learns far faster: see the
README, \"The default run's recipe\".

The run folder holds config.json, metrics.jsonl (one JSON object per step and per kNN
evaluation), ckpt-<step>.safetensors (the newest two) and loss.png; a quickthought run
also vocab.json, and its monitor is the held-out previous/next-sentence accuracy.";

/// The self-supervised method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodArg {
    /// Two augmented views, NT-Xent (Chen et al. 2020)
    Simclr,
    /// Predict the rotation, 0/90/180/270 degrees (Gidaris et al. 2018)
    Rotnet,
    /// Sentences: tell a sentence's neighbours from other sentences (Logeswaran and Lee
    /// 2018); --data builtin or text:PATH
    Quickthought,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerArg {
    /// SGD with momentum 0.9
    Sgd,
    /// LARS (SimCLR's; BN and biases excluded from decay and adaptation)
    Lars,
    /// AdamW
    Adamw,
}

/// Options of `selfsup pretrain`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[command(after_long_help = EXAMPLES)]
pub struct PretrainArgs {
    /// The method
    #[arg(long, value_enum, default_value_t = MethodArg::Simclr)]
    pub method: MethodArg,

    /// The data: builtin, fashion-mnist, idx:DIR, cifar10:DIR, cifar100:DIR, folder:DIR;
    /// for quickthought: builtin (the generated topic corpus) or text:PATH (a UTF-8 file or
    /// a folder of them)
    #[arg(long, value_name = "SPEC", default_value = "builtin")]
    pub data: String,

    /// Train for N epochs
    #[arg(long, value_name = "N", conflicts_with_all = ["steps", "minutes"], value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,

    /// Train for N steps
    #[arg(long, value_name = "N", conflicts_with = "minutes", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,

    /// Train for a wall-clock budget of M minutes (the schedule is fitted to the measured speed)
    #[arg(long, value_name = "M", value_parser = positive_f64, allow_negative_numbers = true)]
    pub minutes: Option<f64>,

    /// Images per step (SimCLR: 2x as many views; RotNet: 4x as many rotated inputs);
    /// contiguous sentences per step for quickthought (at least 4)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = at_least_two)]
    pub batch: usize,

    /// Peak learning rate [default: sgd 0.06 (quickthought 0.1), lars 0.3, adamw 0.001,
    /// each times batch/256]
    #[arg(long, value_name = "LR", value_parser = positive_f64, allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// Temperature: NT-Xent's tau [default 0.5]; quickthought (in-batch): the logits are
    /// f(s).g(c) / tau [default 50]
    #[arg(
        long,
        value_name = "TAU",
        value_parser = positive_f32,
        allow_negative_numbers = true
    )]
    pub tau: Option<f32>,

    /// The optimizer [default: sgd; adamw for quickthought]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,

    /// Weight decay [default: sgd 5e-4, lars 1e-6, adamw 0.05; quickthought: 0 for sgd
    /// and adamw]
    #[arg(long, value_name = "WD", allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,

    /// Share of the steps spent in the linear warmup
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.05,
        value_parser = warmup_fraction,
        allow_negative_numbers = true
    )]
    pub warmup: f64,

    /// Colour-jitter strength s (0.5 suits small images, 1.0 is SimCLR's ImageNet value)
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0.5,
        allow_negative_numbers = true
    )]
    pub strength: f32,

    /// Smallest crop area of the random resized crop
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.08,
        allow_negative_numbers = true
    )]
    pub crop_min: f32,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,

    /// Seed of the weights, the data order and the augmentations
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// The run folder
    #[arg(long, value_name = "RUN_DIR", default_value = "runs/pretrain")]
    pub out: PathBuf,

    /// Continue the run in RUN_DIR from its newest checkpoint
    #[arg(long)]
    pub resume: bool,

    /// Write a checkpoint every N steps (and at the end)
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub checkpoint_every: u64,

    /// Run the kNN monitor every N epochs (0: only at the end); quickthought: the held-out
    /// previous/next accuracy, at most every 15 s
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub knn_every: u64,

    /// Encoder widths per stage
    #[arg(long, value_name = "W,W,W", value_delimiter = ',', default_values_t = [32usize, 64, 128])]
    pub widths: Vec<usize>,

    /// No progress bar (one line per 50 steps on stderr instead)
    #[arg(long)]
    pub quiet: bool,

    /// Under `mpirun -n P` (a build with `--features mpi`): normalize every BatchNorm with
    /// the statistics of all P ranks' batches (global BN, as SimCLR trains) instead of
    /// each rank's own. --batch is the batch of each rank
    #[arg(long)]
    #[serde(default)]
    pub sync_bn: bool,

    /// Under `mpirun -n P`, SimCLR: take each image's negatives from its own process's batch
    /// only, instead of all P batches (nothing gathered: less traffic and NT-Xent work per
    /// step, fewer negatives)
    #[arg(long)]
    #[serde(default)]
    pub local_negatives: bool,

    /// Sentence encoder: cnn (embedding, 1-D convolution, ReLU, max over time) or bow (mean
    /// of the token embeddings, the baseline)
    #[arg(long, value_name = "KIND", default_value = "cnn", value_parser = super::text::parse_encoder, help_heading = "Quick Thoughts")]
    #[serde(default = "default_encoder")]
    pub encoder: SentenceEncoderKind,

    /// Objective: in-batch (two encoders f and g, a softmax over the batch's sentences, the
    /// paper's; representation [f(s); g(s)]) or pairwise (one encoder f,
    /// log(1 + exp(f(s).f(s-) - f(s).f(s+))), one random in-batch negative per neighbour;
    /// representation f(s))
    #[arg(long, value_name = "OBJ", default_value = "in-batch", value_parser = super::text::parse_objective, help_heading = "Quick Thoughts")]
    #[serde(default = "default_objective")]
    pub objective: QtObjective,

    /// Token embedding width
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = width_4096, help_heading = "Quick Thoughts")]
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,

    /// Convolution channels: each encoder's output width (cnn)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = width_8192, help_heading = "Quick Thoughts")]
    #[serde(default = "default_channels")]
    pub channels: usize,

    /// Convolution width in tokens, odd (cnn)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = odd_kernel, help_heading = "Quick Thoughts")]
    #[serde(default = "default_kernel")]
    pub kernel: usize,

    /// Tokens per sentence: longer sentences keep their first N (counted in config.json)
    /// [default: the 99th percentile of the training sentences' lengths, from 4 to 64]
    #[arg(long, value_name = "N", value_parser = width_1024, help_heading = "Quick Thoughts")]
    #[serde(default)]
    pub max_len: Option<usize>,

    /// Words seen fewer times in the training text become the unknown token
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        help_heading = "Quick Thoughts"
    )]
    #[serde(default = "default_min_count")]
    pub min_count: u64,

    /// The most words in the vocabulary (the most frequent kept)
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = vocab_size, help_heading = "Quick Thoughts")]
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
}

/// NT-Xent's temperature without `--tau` (SimCLR's).
pub(super) const SIMCLR_TAU: f32 = 0.5;

fn default_encoder() -> SentenceEncoderKind {
    SentenceEncoderKind::Cnn
}
fn default_objective() -> QtObjective {
    QtObjective::InBatch
}
fn default_embed_dim() -> usize {
    64
}
fn default_channels() -> usize {
    256
}
fn default_kernel() -> usize {
    3
}
fn default_min_count() -> u64 {
    2
}
fn default_vocab_size() -> usize {
    20_000
}

fn odd_kernel(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v % 2 == 1 && v <= 63 => Ok(v),
        _ => Err(format!("expected an odd width from 1 to 63, got '{s}'")),
    }
}

fn width(s: &str, max: usize) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a whole number from 1 to {max}, got '{s}'"
        )),
    }
}

fn width_1024(s: &str) -> std::result::Result<usize, String> {
    width(s, 1024)
}

fn width_4096(s: &str) -> std::result::Result<usize, String> {
    width(s, 4096)
}

fn width_8192(s: &str) -> std::result::Result<usize, String> {
    width(s, 8192)
}

fn vocab_size(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (3..=1_000_000).contains(&v) => Ok(v),
        _ => Err(format!("expected a size from 3 to 1000000, got '{s}'")),
    }
}

impl PretrainArgs {
    /// The optimizer, its default resolved by the method.
    pub fn optimizer(&self) -> OptimizerArg {
        self.optimizer.unwrap_or(match self.method {
            MethodArg::Quickthought => OptimizerArg::Adamw,
            _ => OptimizerArg::Sgd,
        })
    }
}

fn at_least_two(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 2 => Ok(v),
        _ => Err(format!("expected at least 2 images per step, got '{s}'")),
    }
}

fn positive_f32(s: &str) -> std::result::Result<f32, String> {
    positive_f64(s).map(|v| v as f32)
}

fn warmup_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a fraction in [0, 1), got '{s}'")),
    }
}

fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive number, got '{s}'")),
    }
}

/// What `config.json` records: the arguments and what they resolved to.
#[derive(Debug, Serialize, Deserialize)]
struct RunConfig {
    args: PretrainArgs,
    model: ResNetConfig,
    total_steps: u64,
    lr: f64,
    weight_decay: f32,
    warmup_steps: u64,
    train_images: usize,
    version: String,
}

/// The outcome, for the caller (the default run prints a table from it).
#[derive(Debug)]
pub struct PretrainOutcome {
    /// The newest checkpoint (`None` on the ranks other than 0 of a data-parallel run).
    pub checkpoint: Option<PathBuf>,
    /// The model's configuration.
    pub model: ResNetConfig,
    /// Steps, seconds and the mean images/s of the run.
    pub steps: u64,
    /// Training seconds (data preparation and the kNN monitor excluded).
    pub seconds: f64,
    /// Images per training second.
    pub images_per_s: f64,
    /// The last kNN accuracy, when the data has a labeled test split.
    pub knn: Option<f64>,
}

/// Sets the kernels' thread count (the global rayon pool; once per process).
pub fn set_threads(threads: Option<u64>) {
    if let Some(t) = threads {
        // An already-built pool (a second command in one process, tests) keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t as usize)
            .build_global();
    }
}

/// Runs `selfsup pretrain`.
pub fn run(args: &PretrainArgs) -> Result<()> {
    set_threads(args.threads);
    if args.method == MethodArg::Quickthought {
        return super::text::pretrain_text(args);
    }
    let splits = Arc::new(load_splits(&args.data)?);
    pretrain(args, splits).map(|_| ())
}

/// Pretrains on already loaded data (the default run reuses the data for the probes).
pub fn pretrain(args: &PretrainArgs, splits: Arc<Splits>) -> Result<PretrainOutcome> {
    // The training images carry no labels (the loader keeps them apart).
    let train = Arc::clone(&splits.train);
    let model = ResNetConfig {
        in_channels: train.channels,
        image_size: train.height,
        widths: args.widths.clone(),
        blocks: vec![1; args.widths.len()],
        ..ResNetConfig::default()
    };
    if train.height != train.width {
        bail!(
            "{}: images are {}x{}; the encoder takes square images",
            args.data,
            train.height,
            train.width
        );
    }
    // Under mpirun, every rank runs this with its part of each batch; rank 0 alone writes
    // the run folder, the log and the checkpoints, and prints.
    let comm = group::process_group()?;
    check_same_job(&*comm, args)?;
    let ranks = comm.size();
    let global_batch = args.batch.saturating_mul(ranks);
    if global_batch > train.n {
        bail!(
            "--batch {} {}is larger than the training set ({} images)",
            args.batch,
            if ranks > 1 {
                format!("x {ranks} processes ")
            } else {
                String::new()
            },
            train.n
        );
    }
    // The default learning rates scale with the batch of a step (of all ranks together).
    let scale = global_batch as f64 / 256.0;
    let (lr, wd) = match args.optimizer() {
        OptimizerArg::Sgd => (
            args.lr.unwrap_or(0.06 * scale),
            args.weight_decay.unwrap_or(5e-4),
        ),
        OptimizerArg::Lars => (
            args.lr.unwrap_or(0.3 * scale),
            args.weight_decay.unwrap_or(1e-6),
        ),
        OptimizerArg::Adamw => (
            args.lr.unwrap_or(1e-3 * scale),
            args.weight_decay.unwrap_or(0.05),
        ),
    };
    let optimizer = match args.optimizer() {
        OptimizerArg::Sgd => OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: wd,
            ..SgdConfig::default()
        }),
        OptimizerArg::Lars => OptimizerConfig::Lars(LarsConfig {
            weight_decay: wd,
            ..LarsConfig::default()
        }),
        OptimizerArg::Adamw => OptimizerConfig::AdamW(AdamWConfig {
            weight_decay: wd,
            ..AdamWConfig::default()
        }),
    };
    let spe = (train.n / global_batch) as u64;
    // The run's length; for --minutes a provisional one, fitted after the first steps.
    let mut total = match (args.epochs, args.steps, args.minutes) {
        (Some(e), _, _) => e * spe,
        (_, Some(s), _) => s,
        (_, _, Some(_)) => 1_000_000,
        _ => 10 * spe,
    };
    let warmup_steps =
        |total: u64| ((total as f64 * args.warmup) as u64).min(total.saturating_sub(1));
    let schedule = |total: u64| LrSchedule::new(lr as f32, warmup_steps(total), total);
    let mut augment = SimclrAugment::for_image(train.height, train.channels, args.strength);
    augment.crop_scale.0 = args.crop_min;
    let method = match args.method {
        MethodArg::Simclr => Method::SimClr,
        MethodArg::Rotnet => Method::RotNet,
        MethodArg::Quickthought => {
            bail!("quickthought trains on text: see `selfsup pretrain --help`")
        }
    };
    let cfg = PretrainConfig {
        method,
        model: model.clone(),
        batch: args.batch,
        tau: args.tau.unwrap_or(SIMCLR_TAU),
        optimizer,
        schedule: schedule(total)?,
        augment,
        rotnet: RotnetAugment::default(),
        seed: args.seed,
        sync_bn: args.sync_bn,
        local_negatives: args.local_negatives,
    };
    let mut trainer = Pretrainer::in_group(cfg.clone(), Arc::clone(&train), comm)?;
    let root = trainer.rank() == 0;
    if root {
        fs::create_dir_all(&args.out)
            .with_context(|| format!("creating the run folder {}", args.out.display()))?;
    }
    let config_path = args.out.join("config.json");
    if args.resume {
        if root {
            let old: RunConfig = resumed_config(&config_path, args, |c: &RunConfig| &c.args)?;
            total = old.total_steps;
        }
        total = trainer.root_value(total)?;
        trainer.set_schedule(schedule(total)?);
    }
    start_or_resume(&args.out, args.resume, root, || {
        trainer.resume_from(&args.out)
    })?;
    let write_config = |total: u64| -> Result<()> {
        let rc = RunConfig {
            args: args.clone(),
            model: model.clone(),
            total_steps: total,
            lr,
            weight_decay: wd,
            warmup_steps: warmup_steps(total),
            train_images: train.n,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if root {
            let text = serde_json::to_vec_pretty(&rc)?;
            checkpoint::write_atomically(&config_path, |w| w.write_all(&text))?;
        }
        Ok(())
    };
    write_config(total)?;

    let mut log = RunLog::open_on(root, &args.out)?;
    let bar = progress_bar(args.quiet || !root);
    let mut meta = Metadata::new();
    meta.insert("config".into(), serde_json::to_string(&model)?);
    meta.insert("data".into(), args.data.clone());

    let mut knn_last = None;
    let start_step = trainer.step();
    // One fit: the default run's recipe was measured with it (a second fit, tried on
    // 2026-12-02, gave a lower SimCLR probe in its one default run: 56.5/80.1% against
    // 63.5/86.2% with one fit the same hour, within what two runs can tell apart).
    let mut fit = BudgetFit::new(args.minutes, args.resume, start_step, 1);
    let mut train_seconds = 0.0;
    let images_per_step = (args.batch * ranks) as f64;
    let mut loader = trainer.loader(total, 3);
    let mut last_ckpt = None;
    let mut ema_rate = 0.0f64;
    bar.set_length(total);
    bar.set_position(start_step);
    while trainer.step() < total {
        let batch = match loader.next_batch() {
            Some(b) => b.context("preparing a batch")?,
            None => break,
        };
        let ts = Instant::now();
        let stats = match trainer.train_step(&batch) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return Err(training_stopped(e, last_ckpt.as_ref()));
            }
        };
        loader.recycle(batch);
        let dt = ts.elapsed().as_secs_f64();
        train_seconds += dt;
        let rate = images_per_step / dt;
        ema_rate = if ema_rate == 0.0 {
            rate
        } else {
            0.9 * ema_rate + 0.1 * rate
        };
        if let Some(t) = fit.refit(trainer.step()) {
            // Each rank timed itself: all take rank 0's length.
            total = trainer.root_value(t)?;
            trainer.set_schedule(schedule(total)?);
            write_config(total)?;
            drop(loader);
            loader = trainer.loader(total, 3);
            bar.set_length(total);
        }
        log.step(&stats, "images_per_s", rate)?;
        bar.set_position(trainer.step());
        bar.set_message(format!(
            "loss {:.4}  lr {:.4}  {:.0} img/s",
            stats.loss, stats.lr, ema_rate
        ));
        if args.quiet && root && trainer.step() % 50 == 0 {
            eprintln!(
                "step {}/{total}  loss {:.4}  lr {:.4}  {:.0} img/s",
                trainer.step(),
                stats.loss,
                stats.lr,
                ema_rate
            );
        }
        let step = trainer.step();
        let end_of_epoch = step % spe == 0;
        if args.checkpoint_every > 0 && step % args.checkpoint_every == 0 && step < total {
            last_ckpt = trainer.save_in(&args.out, &meta, 2)?;
        }
        let epoch = step / spe;
        if end_of_epoch
            && root
            && args.knn_every > 0
            && epoch.is_multiple_of(args.knn_every)
            && step < total
        {
            if let Some(acc) = knn_monitor(&trainer, &model, &splits)? {
                say(
                    &bar,
                    args.quiet,
                    format!("epoch {epoch}: kNN accuracy {:.2}%", 100.0 * acc),
                );
                writeln!(
                    log.file(),
                    "{{\"epoch\":{epoch},\"step\":{step},\"knn_accuracy\":{acc}}}"
                )?;
                knn_last = Some(acc);
            }
        }
    }
    drop(loader);
    let checkpoint = trainer.save_in(&args.out, &meta, 2)?;
    bar.finish_and_clear();
    let steps = trainer.step() - start_step;
    let images_per_s = steps as f64 * images_per_step / train_seconds.max(1e-9);
    let Some(checkpoint) = checkpoint else {
        // Rank r > 0: rank 0 reports and holds the run.
        return Ok(PretrainOutcome {
            checkpoint: None,
            model,
            steps,
            seconds: train_seconds,
            images_per_s,
            knn: None,
        });
    };
    if let Some(acc) = knn_monitor(&trainer, &model, &splits)? {
        writeln!(
            log.file(),
            "{{\"epoch\":{},\"step\":{},\"knn_accuracy\":{acc}}}",
            trainer.step() / spe,
            trainer.step()
        )?;
        knn_last = Some(acc);
    }
    log.finish()?;
    eprintln!(
        "{}: {} steps in {:.0} s ({:.0} images/s{}){}; checkpoint {}",
        method.name(),
        steps,
        train_seconds,
        images_per_s,
        group::over_processes(ranks),
        knn_last
            .map(|a| format!(", kNN accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default(),
        checkpoint.display()
    );
    Ok(PretrainOutcome {
        checkpoint: Some(checkpoint),
        model,
        steps,
        seconds: train_seconds,
        images_per_s,
        knn: knn_last,
    })
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        "null".into()
    }
}

/// Checks that every rank of a data-parallel job was started with the same arguments, but
/// for those that cannot change the result (`--threads`: the kernels give the same bits
/// for any thread count; `--quiet`), so machines of different sizes can share a job.
pub(super) fn check_same_job(
    comm: &dyn selfsup::dist::Collectives,
    args: &PretrainArgs,
) -> Result<()> {
    let mut a = args.clone();
    a.threads = None;
    a.quiet = false;
    selfsup::dist::check_same_config(comm, "command line", &format!("{a:?}"))?;
    Ok(())
}

/// `--resume`: the run folder's `config.json` (a `C`), after checking that the run it
/// records (`args_of`) was started with the settings this command gives.
pub(super) fn resumed_config<C: serde::de::DeserializeOwned>(
    config_path: &Path,
    args: &PretrainArgs,
    args_of: impl Fn(&C) -> &PretrainArgs,
) -> Result<C> {
    let old: C = serde_json::from_slice(
        &fs::read(config_path)
            .with_context(|| format!("--resume: reading {}", config_path.display()))?,
    )
    .with_context(|| format!("--resume: parsing {}", config_path.display()))?;
    same_run(args_of(&old), args)
        .with_context(|| format!("--resume: {} is another run", config_path.display()))?;
    Ok(old)
}

/// With `--resume`, continues from the run folder's newest checkpoint (`resume_from`), if
/// there is one; without it, refuses a folder that already holds checkpoints.
pub(super) fn start_or_resume(
    out: &Path,
    resume: bool,
    root: bool,
    resume_from: impl FnOnce() -> std::result::Result<Option<u64>, checkpoint::CheckpointError>,
) -> Result<()> {
    if !root {
        // A rank other than 0 of a data-parallel run: rank 0 checks the folder and reports;
        // resuming is collective (rank 0 reads, every rank receives).
        if resume {
            resume_from()?;
        }
        return Ok(());
    }
    if resume {
        match resume_from()? {
            Some(step) => eprintln!("resuming {} at step {step}", out.display()),
            None => eprintln!("no checkpoint in {}: starting at step 0", out.display()),
        }
    } else if checkpoint::latest_in(out)?.is_some() {
        bail!(
            "{} already holds checkpoints: pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// The settings a resumed run must share with the run it continues.
fn same_run(old: &PretrainArgs, new: &PretrainArgs) -> Result<()> {
    let pairs = [
        (
            "--method",
            format!("{:?}", old.method),
            format!("{:?}", new.method),
        ),
        ("--data", old.data.clone(), new.data.clone()),
        ("--batch", old.batch.to_string(), new.batch.to_string()),
        ("--seed", old.seed.to_string(), new.seed.to_string()),
        (
            "--optimizer",
            format!("{:?}", old.optimizer()),
            format!("{:?}", new.optimizer()),
        ),
        (
            "--encoder",
            format!("{:?}", old.encoder),
            format!("{:?}", new.encoder),
        ),
        (
            "--objective",
            format!("{:?}", old.objective),
            format!("{:?}", new.objective),
        ),
        (
            "--max-len",
            format!("{:?}", old.max_len),
            format!("{:?}", new.max_len),
        ),
        (
            "--widths",
            format!("{:?}", old.widths),
            format!("{:?}", new.widths),
        ),
    ];
    // NT-Xent's; a text run checks its temperature itself (its config records the value it
    // trained with, which runs of earlier versions did not).
    let tau = |a: &PretrainArgs| a.tau.unwrap_or(SIMCLR_TAU).to_string();
    let tau_pair = ("--tau", tau(old), tau(new));
    let pairs = pairs
        .into_iter()
        .chain((new.method != MethodArg::Quickthought).then_some(tau_pair));
    for (flag, a, b) in pairs {
        if a != b {
            bail!("it was started with {flag} {a}, this command says {b}");
        }
    }
    Ok(())
}

/// The kNN accuracy of the current encoder: the labeled training images (at most 10,000)
/// vote for the test images (at most 2,000). `None` without labels or a test split.
fn knn_monitor(trainer: &Pretrainer, model: &ResNetConfig, splits: &Splits) -> Result<Option<f64>> {
    let (Some(test), Some(train_labels), Some(classes)) = (
        splits.test.as_ref(),
        splits.train_labels.as_ref(),
        splits.classes,
    ) else {
        return Ok(None);
    };
    let Some(test_labels) = test.labels.as_ref() else {
        return Ok(None);
    };
    let mut emb = Embedder::from_graph(model, 256, trainer.graph())?;
    let bank_idx: Vec<usize> = spread_indices(splits.train.n, 10_000);
    let query_idx: Vec<usize> = spread_indices(test.n, 2_000);
    let d = emb.dim();
    let mut bank = vec![0.0; bank_idx.len() * d];
    emb.embed(&splits.train, &bank_idx, &mut bank)?;
    let mut query = vec![0.0; query_idx.len() * d];
    emb.embed(test, &query_idx, &mut query)?;
    let bl: Vec<u32> = bank_idx.iter().map(|&i| train_labels[i]).collect();
    let ql: Vec<u32> = query_idx.iter().map(|&i| test_labels[i]).collect();
    Ok(Some(knn_accuracy(
        &bank,
        &bl,
        &query,
        &ql,
        d,
        classes,
        &KnnConfig::default(),
    )?))
}

/// At most `max` indices of `0..n`, evenly spread (all of them when `n <= max`).
fn spread_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|k| k * n / max).collect()
    }
}

/// A run folder's `metrics.jsonl` (appended to, so a resumed run continues it) and its
/// `loss.png`: the one place the image and text runs write them.
pub(super) struct RunLog {
    dir: PathBuf,
    path: PathBuf,
    /// `metrics.jsonl`, or a sink on the ranks other than 0 of a data-parallel run.
    file: Box<dyn Write + Send>,
    curve: Vec<(f64, f64)>,
}

impl RunLog {
    /// [`RunLog::open`] on rank 0 of a run; on the other ranks a log that writes nothing.
    pub(super) fn open_on(root: bool, dir: &Path) -> Result<Self> {
        if root {
            return Self::open(dir);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            path: PathBuf::new(),
            file: Box::new(std::io::sink()),
            curve: Vec::new(),
        })
    }

    /// Opens `dir/metrics.jsonl` for appending.
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file: Box::new(BufWriter::new(file)),
            curve: Vec::new(),
        })
    }

    /// The file, for monitor lines.
    pub(super) fn file(&mut self) -> &mut dyn Write {
        &mut self.file
    }

    /// One step's line: step, epoch, loss, accuracy, lr and the speed under `rate_key`.
    pub(super) fn step(&mut self, stats: &StepStats, rate_key: &str, rate: f64) -> Result<()> {
        writeln!(
            self.file,
            "{{\"step\":{},\"epoch\":{},\"loss\":{},\"accuracy\":{},\"lr\":{},\"{rate_key}\":{:.1}}}",
            stats.step,
            stats.epoch,
            stats.loss,
            json_f64(stats.accuracy),
            stats.lr,
            rate
        )?;
        self.curve.push((stats.step as f64, stats.loss));
        Ok(())
    }

    /// Flushes the file and draws `loss.png` from the whole run's curve (read back from
    /// the file, so a resumed run's earlier steps are in it).
    pub(super) fn finish(mut self) -> Result<()> {
        self.file.flush()?;
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let png = self.dir.join("loss.png");
        let curve = read_loss_curve(&self.path).unwrap_or(self.curve);
        selfsup::io::plot::line_chart(&png, &[&curve], 800, 400)
            .with_context(|| format!("writing {}", png.display()))?;
        Ok(())
    }
}

/// The error that stops a run at a failed step, naming the checkpoint that is kept.
pub(super) fn training_stopped(e: selfsup::Error, last: Option<&PathBuf>) -> anyhow::Error {
    let kept = last
        .map(|p| format!("; the last checkpoint {} is kept", p.display()))
        .unwrap_or_default();
    anyhow::anyhow!("{e}{kept}")
}

fn read_loss_curve(path: &Path) -> Option<Vec<(f64, f64)>> {
    let text = fs::read_to_string(path).ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if let (Some(s), Some(l)) = (v.get("step"), v.get("loss")) {
            out.push((s.as_f64()?, l.as_f64().unwrap_or(f64::NAN)));
        }
    }
    Some(out)
}

/// `--minutes`: the run's length fitted to a wall-clock budget from the measured speed,
/// after the first few steps and, with `max_fits` 2, once more when a tenth of the budget
/// has passed (the first steps' speed is a rough guess: caches and the epoch's layout start
/// cold). A resumed run keeps the length it recorded.
pub(super) struct BudgetFit {
    budget: Option<f64>,
    start_step: u64,
    t0: Instant,
    fits: u8,
    max_fits: u8,
}

impl BudgetFit {
    pub(super) fn new(minutes: Option<f64>, resumed: bool, start_step: u64, max_fits: u8) -> Self {
        Self {
            budget: minutes.filter(|_| !resumed).map(|m| m * 60.0),
            start_step,
            t0: Instant::now(),
            fits: 0,
            max_fits,
        }
    }

    /// The run's new length in steps, when `step` is the moment to (re)fit it.
    pub(super) fn refit(&mut self, step: u64) -> Option<u64> {
        let budget = self.budget?;
        let elapsed = self.t0.elapsed().as_secs_f64();
        let due = match self.fits {
            _ if self.fits >= self.max_fits => false,
            0 => step >= self.start_step + 4,
            _ => elapsed >= 0.1 * budget,
        };
        if !due {
            return None;
        }
        self.fits += 1;
        let per_step = elapsed / (step - self.start_step) as f64;
        Some(((budget / per_step) as u64).max(step + 1))
    }
}

/// A line above the progress bar, or on stderr when there is no bar (a hidden bar drops
/// its lines).
pub(super) fn say(bar: &ProgressBar, quiet: bool, line: String) {
    if quiet {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(super) fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if quiet {
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
    bar
}

#[cfg(test)]
mod budget_tests {
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
}
