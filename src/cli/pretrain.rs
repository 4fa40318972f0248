//! `selfsup pretrain`: SimCLR or RotNet on images, or Quick Thoughts on text. The command
//! line becomes a method (the model built for the data, the optimizer's defaults resolved)
//! and a [`FitConfig`]; the library's [`fit`] runs it, reporting to the progress bar.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use selfsup::data::augment::{RotnetAugment, SimclrAugment};
use selfsup::data::Splits;
use selfsup::dist::Collectives;
use selfsup::nn::{QtObjective, ResNetConfig, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LarsConfig, OptimizerConfig, SgdConfig};
use selfsup::text::{default_max_len, TokenizedCorpus, Vocab};
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::run_dir::SIMCLR_TAU;
use selfsup::train::text::{QtConfig, QtTrainer, TextRecord, QT_TEMPERATURE, VOCAB_FILE};
use selfsup::train::{fit, FitConfig, FitSummary, Method, RunArgs, RunDir, RunLength, RunSettings};

use super::data::{load_splits, load_text, parse_image_size};
use super::group;
use super::progress::Progress;
use super::threads::set_threads;

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

    /// The data: builtin (32 x 32), builtin:S (the same images at S x S pixels, S from 8 to
    /// 512), fashion-mnist, idx:DIR, cifar10:DIR, cifar100:DIR, folder:DIR; for
    /// quickthought: builtin (the generated topic corpus) or text:PATH (a UTF-8 file or a
    /// folder of them)
    #[arg(long, value_name = "SPEC", default_value = "builtin")]
    pub data: String,

    /// Side of the square images the model takes, in pixels, 8 to 512 [default: the data's
    /// own size; 96 for a folder]. Above 64 the encoder's stem has stride 2; from 64 up the
    /// SimCLR views are blurred (kernel 10% of the side). A folder's images are stored with
    /// their shorter side at 8/7 of it, views cropped from them
    #[arg(long, value_name = "S", value_parser = parse_image_size, allow_negative_numbers = true)]
    #[serde(default)]
    pub image_size: Option<usize>,

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

    /// No progress bar (a line every 5 seconds on stderr instead)
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
    #[arg(long, value_name = "KIND", default_value = "cnn", value_parser = parse_encoder, help_heading = "Quick Thoughts")]
    #[serde(default = "default_encoder")]
    pub encoder: SentenceEncoderKind,

    /// Objective: in-batch (two encoders f and g, a softmax over the batch's sentences, the
    /// paper's; representation [f(s); g(s)]) or pairwise (one encoder f,
    /// log(1 + exp(f(s).f(s-) - f(s).f(s+))), one random in-batch negative per neighbour;
    /// representation f(s))
    #[arg(long, value_name = "OBJ", default_value = "in-batch", value_parser = parse_objective, help_heading = "Quick Thoughts")]
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

/// The sentence encoder's kind, for clap.
fn parse_encoder(s: &str) -> std::result::Result<SentenceEncoderKind, String> {
    match s {
        "cnn" => Ok(SentenceEncoderKind::Cnn),
        "bow" => Ok(SentenceEncoderKind::Bow),
        _ => Err(format!("expected cnn or bow, got '{s}'")),
    }
}

/// The objective, for clap.
fn parse_objective(s: &str) -> std::result::Result<QtObjective, String> {
    match s {
        "in-batch" => Ok(QtObjective::InBatch),
        "pairwise" => Ok(QtObjective::Pairwise),
        _ => Err(format!("expected in-batch or pairwise, got '{s}'")),
    }
}

impl RunArgs for PretrainArgs {
    fn settings(&self) -> RunSettings {
        let optimizer = self.optimizer.map(|o| {
            let name = o.to_possible_value().map(|v| v.get_name().to_string());
            name.unwrap_or_default()
        });
        RunSettings {
            method: self.method.name().into(),
            data: self.data.clone(),
            batch: self.batch,
            seed: self.seed,
            optimizer,
            tau: self.tau,
            widths: self.widths.clone(),
            encoder: self.encoder,
            objective: self.objective,
            max_len: self.max_len,
            image_size: self.image_size,
        }
    }
}

impl MethodArg {
    /// The method's name, as runs and checkpoints record it.
    pub fn name(self) -> &'static str {
        match self {
            MethodArg::Simclr => "simclr",
            MethodArg::Rotnet => "rotnet",
            MethodArg::Quickthought => "quickthought",
        }
    }
}

/// The outcome of an image run, for the default run's table.
#[derive(Debug)]
pub struct PretrainOutcome {
    /// The run's summary.
    pub summary: FitSummary,
    /// The model's configuration.
    pub model: ResNetConfig,
}

/// Runs `selfsup pretrain`.
pub fn run(args: &PretrainArgs) -> Result<()> {
    set_threads(args.threads);
    if args.method == MethodArg::Quickthought {
        return pretrain_text(args);
    }
    let (splits, size) = load_splits(&args.data, args.image_size)?;
    pretrain(args, Arc::new(splits), size).map(|_| ())
}

/// The run's folder, length, schedule and cadence from the command line.
fn fit_config(args: &PretrainArgs, lr: f64, weight_decay: f32) -> FitConfig<PretrainArgs> {
    let length = match (args.epochs, args.steps, args.minutes) {
        (Some(e), _, _) => Some(RunLength::Epochs(e)),
        (_, Some(s), _) => Some(RunLength::Steps(s)),
        (_, _, Some(m)) => Some(RunLength::Minutes(m)),
        _ => None,
    };
    FitConfig {
        length,
        weight_decay,
        warmup: args.warmup,
        checkpoint_every: args.checkpoint_every,
        monitor_every: args.knn_every,
        resume: args.resume,
        ..FitConfig::new(&args.out, args.clone(), lr)
    }
}

/// Trains `method` for the run `cfg`, with the progress bar (or lines) on rank 0.
fn fit_run<M: Method>(method: &mut M, cfg: &FitConfig<PretrainArgs>) -> Result<FitSummary> {
    let mut progress = Progress::new(cfg.args.quiet);
    Ok(fit(method, cfg, &mut progress)?)
}

/// The optimizer, its learning rate and weight decay: the flags, else the method's
/// defaults (each learning rate times the batch of a step of all `ranks` / 256).
fn optimizer(args: &PretrainArgs, ranks: usize) -> (OptimizerConfig, f64, f32) {
    let scale = (args.batch * ranks) as f64 / 256.0;
    let text = args.method == MethodArg::Quickthought;
    let (lr, wd) = match (args.optimizer(), text) {
        (OptimizerArg::Sgd, false) => (0.06, 5e-4),
        (OptimizerArg::Sgd, true) => (0.1, 0.0),
        (OptimizerArg::Lars, _) => (0.3, 1e-6),
        (OptimizerArg::Adamw, false) => (1e-3, 0.05),
        (OptimizerArg::Adamw, true) => (1e-3, 0.0),
    };
    let (lr, wd) = (
        args.lr.unwrap_or(lr * scale),
        args.weight_decay.unwrap_or(wd),
    );
    let cfg = match args.optimizer() {
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
    (cfg, lr, wd)
}

/// The process group, after checking that every rank of a data-parallel job was started
/// with the same arguments, but for those that cannot change the result (`--threads`: the
/// kernels give the same bits for any thread count; `--quiet`), so machines of different
/// sizes can share a job. Under mpirun every rank trains its part of each batch; rank 0
/// alone writes the run folder and prints.
fn joined_group(args: &PretrainArgs) -> Result<Box<dyn Collectives>> {
    let comm = group::process_group()?;
    let mut a = args.clone();
    a.threads = None;
    a.quiet = false;
    selfsup::dist::check_same_config(&*comm, "command line", &format!("{a:?}"))?;
    Ok(comm)
}

/// Pretrains an image method on already loaded data (the default run reuses the data for
/// the probes), at inputs of `image_size x image_size` (resolved by [`load_splits`] and
/// recorded in the run).
pub fn pretrain(
    args: &PretrainArgs,
    splits: Arc<Splits>,
    image_size: usize,
) -> Result<PretrainOutcome> {
    let args = &PretrainArgs {
        image_size: Some(image_size),
        ..args.clone()
    };
    // The training images carry no labels (the loader keeps them apart).
    let train = Arc::clone(&splits.train);
    let model = ResNetConfig {
        in_channels: train.channels,
        image_size,
        widths: args.widths.clone(),
        blocks: vec![1; args.widths.len()],
        ..ResNetConfig::default()
    };
    let comm = joined_group(args)?;
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
    let (optimizer, lr, wd) = optimizer(args, ranks);
    let mut augment = SimclrAugment::for_image(image_size, train.channels, args.strength);
    augment.crop_scale.0 = args.crop_min;
    let method = match args.method {
        MethodArg::Simclr => ImageMethod::SimClr,
        MethodArg::Rotnet => ImageMethod::RotNet,
        MethodArg::Quickthought => {
            bail!("quickthought trains on text: see `selfsup pretrain --help`")
        }
    };
    let fit_cfg = fit_config(args, lr, wd);
    let spe = (train.n / global_batch) as u64;
    let cfg = PretrainConfig {
        method,
        model: model.clone(),
        batch: args.batch,
        tau: args.tau.unwrap_or(SIMCLR_TAU),
        optimizer,
        schedule: fit_cfg.schedule(fit_cfg.total_steps(spe))?,
        augment,
        rotnet: RotnetAugment::default(),
        seed: args.seed,
        sync_bn: args.sync_bn,
        local_negatives: args.local_negatives,
    };
    let mut trainer = Pretrainer::in_group(cfg, train, comm)?.with_monitor(splits);
    let summary = fit_run(&mut trainer, &fit_cfg)?;
    Ok(PretrainOutcome { summary, model })
}

/// What a resumed text run takes from its recorded run.
#[derive(Deserialize)]
struct RecordedText {
    #[serde(flatten)]
    record: TextRecord,
}

/// Runs `selfsup pretrain --method quickthought`.
fn pretrain_text(args: &PretrainArgs) -> Result<()> {
    let data = load_text(&args.data)?;
    let dir = RunDir::new(&args.out);
    // Under mpirun every rank reads the corpus and builds the same vocabulary; rank 0 alone
    // writes the run folder and prints. A resumed data-parallel run needs the folder
    // (config.json, vocab.json) on every rank's machine.
    let comm = joined_group(args)?;
    let ranks = comm.size();
    if comm.rank() == 0 {
        dir.create()?;
    }
    let old: Option<TextRecord> = if args.resume {
        dir.check_resume(&args.settings())?;
        Some(dir.read_config::<RecordedText>()?.record)
    } else {
        None
    };
    // A resumed run keeps its vocabulary (the ids the weights were trained on).
    let vocab_path = dir.path().join(VOCAB_FILE);
    let vocab = if args.resume && vocab_path.exists() {
        let text = fs::read_to_string(&vocab_path)
            .with_context(|| format!("--resume: reading {}", vocab_path.display()))?;
        Vocab::from_json(&text).with_context(|| format!("--resume: {}", vocab_path.display()))?
    } else {
        Vocab::build(data.train.iter().flatten(), args.min_count, args.vocab_size)?
    };
    // A resumed run keeps its sentence length too (the corpus may have changed since).
    let max_len = match (args.max_len, &old) {
        (Some(l), _) => l,
        (None, Some(old)) => old.encoder.max_len,
        (None, None) => default_max_len(&data.train, &vocab),
    };
    let corpus = Arc::new(TokenizedCorpus::new(&data.train, &vocab, max_len)?);
    let held_out = TokenizedCorpus::new(&data.held_out, &vocab, max_len)?;
    let encoder = SentenceEncoderConfig {
        kind: args.encoder,
        vocab: vocab.len(),
        embed_dim: args.embed_dim,
        channels: args.channels,
        kernel: args.kernel,
        max_len,
    };
    let (optimizer, lr, wd) = optimizer(args, ranks);
    let fit_cfg = fit_config(args, lr, wd);
    // The in-batch temperature: the flag, else a resumed run's own (runs of versions
    // before it trained with 1), else the default.
    let trained_with = old.as_ref().map(|o| o.temperature.unwrap_or(1.0));
    if let (Some(t), Some(was)) = (args.tau, trained_with) {
        if t != was {
            bail!(
                "--resume: {} is another run: it was started with --tau {was}, this command says {t}",
                dir.config_path().display()
            );
        }
    }
    let temperature = args.tau.or(trained_with).unwrap_or(QT_TEMPERATURE);
    let cfg = QtConfig {
        encoder,
        batch: args.batch,
        objective: args.objective,
        temperature,
        optimizer,
        schedule: fit_cfg.schedule(1)?,
        seed: args.seed,
    };
    let mut trainer = QtTrainer::in_group(cfg, corpus, comm)
        .with_context(|| format!("--data {}", args.data))?
        .with_monitor(held_out)
        .with_vocab(&vocab);
    fit_run(&mut trainer, &fit_cfg)?;
    Ok(())
}
