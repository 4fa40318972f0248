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
use selfsup::optim::OptimizerConfig;
use selfsup::text::{
    default_max_len, Subwords, TokenizedCorpus, Vocab, MAX_SUBWORD_BUCKETS, MAX_SUBWORD_N,
};
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::text::{QtConfig, QtTrainer, TextRecord, QT_TEMPERATURE, VOCAB_FILE};
use selfsup::train::{
    fit, FitConfig, FitSummary, Method, OptimizerKind, Recipe, RunArgs, RunDir, RunLength,
    RunSettings,
};

use super::data::{load_splits, load_text, parse_image_size};
use super::group;
use super::interrupt;
use super::memory;
use super::progress::Progress;
use super::threads::set_threads;

const EXAMPLES: &str = "\
Examples:
  selfsup pretrain --data builtin --minutes 3 --out runs/simclr
  selfsup pretrain --data fashion-mnist --minutes 10 --out runs/fmnist
  selfsup pretrain --data folder:photos --image-size 128 --minutes 30 --out runs/photos
  selfsup pretrain --method rotnet --data fashion-mnist --epochs 20 --out runs/rot
  selfsup pretrain --data cifar10:~/cifar --recipe paper --epochs 200 --out runs/c10
  selfsup pretrain --out runs/simclr --resume        continue from the newest checkpoint
  selfsup pretrain --method quickthought --minutes 2 --out runs/qt          built-in text corpus
  selfsup pretrain --method quickthought --data text:/usr/share/common-licenses --out runs/lic

Defaults: --recipe quick, measured to learn fastest in a budget of minutes:
SimCLR batch 32, LARS at lr 2, weight decay 1e-6, tau 0.2, crops of at least 30% of the
image, colour strength 0.5; RotNet batch 32, SGD at lr 0.2 x batch/32, weight decay 5e-4;
encoder widths 8,16,32 on the built-in data and 8,16,32,256 elsewhere. In a short run the
number of steps matters most, so small batches and a narrow encoder win. --recipe paper
takes the papers' settings for runs of hundreds of epochs: SimCLR batch 256, LARS at
0.3 x batch/256, tau 0.5, crops down to 8%, colour strength 1.0 from 64 pixels up; RotNet
batch 128, SGD at 0.1 x batch/128; widths 32,64,128. Any flag given overrides its recipe
value; config.json records every value the run used. How the recipe was chosen: the
README, \"The default recipe\".

Memory: the activations and their gradients, most of a run's memory, grow linearly with
the batch and with the pixels of an image (--image-size 64 takes 4x the memory of 32 at
the same batch; SimCLR holds 2 views per image, RotNet 4 rotations); the parameters, their
gradients and the optimizer's state grow with the square of --widths. Before allocating,
pretrain estimates the run's memory from the graph's plan and refuses a run that does not
fit in the memory available; --dry-run prints the estimate part by part.

The run folder holds config.json, metrics.jsonl (one JSON object per step and per kNN
evaluation) and metrics.csv (the same as a table), ckpt-<step>.safetensors (the newest
two) and loss.png; a quickthought run also vocab.json, and its monitor is the held-out
previous/next-sentence accuracy.

Ctrl-C or SIGTERM stops training after the current step and saves a checkpoint there,
prints where it is and the command that resumes it (this command line with --resume), and
exits with 130 (SIGINT) or 143 (SIGTERM); the resumed run ends on the same bits as an
uninterrupted one. A second Ctrl-C exits at once (the previous checkpoint stays whole).";

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

/// The set of defaults (`selfsup pretrain --help` lists both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipeArg {
    /// Measured for runs of minutes: small batches, LARS at lr 2, narrow encoder
    Quick,
    /// The SimCLR and RotNet papers' settings for runs of hundreds of epochs
    Paper,
}

impl RecipeArg {
    fn recipe(self) -> Recipe {
        match self {
            RecipeArg::Quick => Recipe::Quick,
            RecipeArg::Paper => Recipe::Paper,
        }
    }
}

impl OptimizerArg {
    fn kind(self) -> OptimizerKind {
        match self {
            OptimizerArg::Sgd => OptimizerKind::Sgd,
            OptimizerArg::Lars => OptimizerKind::Lars,
            OptimizerArg::Adamw => OptimizerKind::Adamw,
        }
    }

    fn of(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Sgd => OptimizerArg::Sgd,
            OptimizerKind::Lars => OptimizerArg::Lars,
            OptimizerKind::Adamw => OptimizerArg::Adamw,
        }
    }
}

/// Options of `selfsup pretrain`. The image methods' unset options are filled from the
/// recipe ([`PretrainArgs::resolved`]) before training; `config.json` records the filled
/// values (unset options that do not apply to the method are left out, never null).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[command(after_long_help = EXAMPLES)]
pub struct PretrainArgs {
    /// The method
    #[arg(long, value_enum, default_value_t = MethodArg::Simclr)]
    pub method: MethodArg,

    /// The defaults of the image methods' other options [default: quick]
    #[arg(long, value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeArg>,

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,

    /// Train for N epochs
    #[arg(long, value_name = "N", conflicts_with_all = ["steps", "minutes"], value_parser = super::values::at_least_one::<u64>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,

    /// Train for N steps
    #[arg(long, value_name = "N", conflicts_with = "minutes", value_parser = super::values::at_least_one::<u64>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,

    /// Train for a wall-clock budget of M minutes (the schedule is fitted to the measured speed)
    #[arg(long, value_name = "M", value_parser = positive_f64, allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<f64>,

    /// Images per step (SimCLR: 2x as many views; RotNet: 4x as many rotated inputs; the
    /// memory of the activations grows linearly with it) [default: the recipe's, 32; paper
    /// 256, RotNet 128]; contiguous sentences per step for quickthought (at least 4)
    /// [default: 256]
    #[arg(long, value_name = "N", value_parser = at_least_two)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,

    /// Peak learning rate [default: the recipe's for its optimizer (quick: LARS 2, RotNet
    /// SGD 0.2 x batch/32; paper: LARS 0.3 x batch/256, RotNet SGD 0.1 x batch/128); for
    /// another optimizer sgd 0.06 (quickthought 0.1), lars 0.3, adamw 0.001, each times
    /// batch/256]
    #[arg(long, value_name = "LR", value_parser = positive_f64, allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,

    /// Temperature: NT-Xent's tau [default: quick 0.2, paper 0.5]; quickthought (in-batch): the logits are
    /// f(s).g(c) / tau [default 50]
    #[arg(
        long,
        value_name = "TAU",
        value_parser = positive_f32,
        allow_negative_numbers = true
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau: Option<f32>,

    /// The optimizer [default: the recipe's, lars for SimCLR and sgd for RotNet; adamw for
    /// quickthought]
    #[arg(long, value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerArg>,

    /// Weight decay [default: lars 1e-6, sgd 5e-4, adamw 0.05; quickthought: 0 for sgd
    /// and adamw]
    #[arg(long, value_name = "WD", value_parser = super::values::non_negative, allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// SimCLR's colour-jitter strength s, 0 to 2.5 [default: quick 0.5; paper 0.5 below 64
    /// pixels, 1.0 (SimCLR's ImageNet value) from 64 up]
    #[arg(long, value_name = "S", value_parser = parse_strength, allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f32>,

    /// SimCLR's smallest crop, as a fraction of the image's area, above 0 and at most 1
    /// [default: quick 0.3; paper 0.08]
    #[arg(long, value_name = "FRACTION", value_parser = parse_crop_min, allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_min: Option<f32>,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = super::values::at_least_one::<u64>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// Write a checkpoint every N steps, and at the end (0: only at the end)
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = super::values::whole, allow_negative_numbers = true)]
    pub checkpoint_every: u64,

    /// Run the kNN monitor every N epochs (0: only at the end); quickthought: the held-out
    /// previous/next accuracy, at most every 15 s
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = super::values::whole, allow_negative_numbers = true)]
    pub knn_every: u64,

    /// Encoder widths per stage, one residual block each [default: quick 8,16,32 on the
    /// built-in data, 8,16,32,256 elsewhere; paper 32,64,128]
    #[arg(long, value_name = "W,W,W", value_delimiter = ',', value_parser = width_8192)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<usize>>,

    /// No progress bar (a line every 5 seconds on stderr instead)
    #[arg(long)]
    pub quiet: bool,

    /// Resolve every setting, print the run's description and its memory estimate part by
    /// part, and exit without training or writing the run folder
    #[arg(long)]
    #[serde(skip)]
    pub dry_run: bool,

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
    /// [default: the 99th percentile of the training sentences' lengths, from 4 to 64; with
    /// --subwords, of their id counts, up to 1024]
    #[arg(long, value_name = "N", value_parser = width_1024, help_heading = "Quick Thoughts")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,

    /// Words seen fewer times in the training text become the unknown token
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        value_parser = super::values::whole,
        help_heading = "Quick Thoughts"
    )]
    #[serde(default = "default_min_count")]
    pub min_count: u64,

    /// The most words in the vocabulary (the most frequent kept)
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = vocab_size, help_heading = "Quick Thoughts")]
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,

    /// Subword units: each token also brings its character n-grams (of <token>, the word
    /// between boundary marks), hashed into N buckets with embeddings of their own, as
    /// fastText; the bag of words then averages the words' and the n-grams' vectors, so an
    /// unknown word is not a blank. 0: words only. --max-len then counts ids (a token and
    /// its n-grams), and the vocabulary (vocab.json, the checkpoint) records the setting
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = buckets, help_heading = "Quick Thoughts")]
    #[serde(default)]
    pub subwords: usize,

    /// The n-gram lengths of --subwords, in characters (boundary marks included)
    #[arg(long, value_name = "MIN-MAX", default_value = "3-6", value_parser = ngram_range, help_heading = "Quick Thoughts")]
    #[serde(default = "default_ngrams")]
    pub subword_ngrams: (usize, usize),
}

fn default_ngrams() -> (usize, usize) {
    (3, 6)
}

fn buckets(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v <= MAX_SUBWORD_BUCKETS => Ok(v),
        _ => Err(format!(
            "expected a number of buckets from 0 to {MAX_SUBWORD_BUCKETS}, got '{s}'"
        )),
    }
}

fn ngram_range(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected MIN-MAX with 1 <= MIN <= MAX <= {MAX_SUBWORD_N}, got '{s}'");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
        (Ok(a), Ok(b)) if 1 <= a && a <= b && b <= MAX_SUBWORD_N => Ok((a, b)),
        _ => Err(bad()),
    }
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
    /// The optimizer, its default resolved by the method (the quick recipe's for images).
    pub fn optimizer(&self) -> OptimizerArg {
        self.optimizer.unwrap_or(match self.method {
            MethodArg::Quickthought => OptimizerArg::Adamw,
            MethodArg::Simclr => OptimizerArg::Lars,
            MethodArg::Rotnet => OptimizerArg::Sgd,
        })
    }

    /// The images per step (per process), the recipe's when unset.
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(match self.method {
            MethodArg::Quickthought => 256,
            _ => 32,
        })
    }

    /// These options with every unset option of an image method filled from the recipe:
    /// the run trains on `image_size`-pixel images of the built-in set (`builtin`) or other
    /// data, its batch shared by `ranks` processes.
    pub fn resolved_image(&self, image_size: usize, builtin: bool, ranks: usize) -> Self {
        let method = match self.method {
            MethodArg::Rotnet => ImageMethod::RotNet,
            _ => ImageMethod::SimClr,
        };
        let recipe = self.recipe.unwrap_or(RecipeArg::Quick);
        let d = recipe.recipe().image(method, image_size, builtin);
        let batch = self.batch.unwrap_or(d.batch);
        let optimizer = self.optimizer.map_or(d.optimizer, OptimizerArg::kind);
        let (lr, wd) = recipe
            .recipe()
            .lr_and_decay(method, optimizer, batch.saturating_mul(ranks));
        let simclr = method == ImageMethod::SimClr;
        PretrainArgs {
            recipe: Some(recipe),
            image_size: Some(image_size),
            batch: Some(batch),
            optimizer: Some(OptimizerArg::of(optimizer)),
            lr: Some(self.lr.unwrap_or(lr)),
            weight_decay: Some(self.weight_decay.unwrap_or(wd)),
            tau: self.tau.or(simclr.then_some(d.tau)),
            crop_min: self.crop_min.or(simclr.then_some(d.crop_min)),
            strength: self.strength.or(simclr.then_some(d.strength)),
            widths: Some(self.widths.clone().unwrap_or(d.widths)),
            threads: Some(rayon::current_num_threads() as u64),
            ..self.clone()
        }
    }
}

fn at_least_two(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 2 => Ok(v),
        _ => Err(format!("expected at least 2 images per step, got '{s}'")),
    }
}

pub(super) fn parse_crop_min(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "expected a fraction of the image's area above 0 and at most 1, got '{s}'"
        )),
    }
}

pub(super) fn parse_strength(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=2.5).contains(&v) => Ok(v),
        _ => Err(format!("expected a strength from 0 to 2.5, got '{s}'")),
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
            batch: self.batch(),
            seed: self.seed,
            optimizer,
            tau: self.tau,
            widths: self.widths.clone().unwrap_or_default(),
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
    interrupt::save_on_signal();
    if args.method == MethodArg::Quickthought {
        return pretrain_text(args);
    }
    let (splits, size) = load_splits(&args.data, args.image_size)?;
    image_run(args, Arc::new(splits), size).map(|_| ())
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

/// Trains `method` for the run `cfg`, with the progress bar (or lines) on rank 0; a run a
/// signal stopped is an [`interrupt::Interrupted`] error (after its checkpoint).
fn fit_run<M: Method>(method: &mut M, cfg: &FitConfig<PretrainArgs>) -> Result<FitSummary> {
    let mut progress = Progress::new(cfg.args.quiet);
    let mut cfg = cfg.clone();
    cfg.stop = interrupt::stop_signal()?;
    let summary = fit(method, &cfg, &mut progress)?;
    interrupt::check(&summary)?;
    Ok(summary)
}

/// The optimizer, its learning rate and weight decay: the flags (an image run's filled from
/// its recipe by [`PretrainArgs::resolved_image`]), else Quick Thoughts' defaults (SGD 0.1,
/// LARS 0.3, AdamW 0.001, each times the batch of a step of all `ranks` / 256; no decay
/// but LARS's 1e-6).
fn optimizer(args: &PretrainArgs, ranks: usize) -> (OptimizerConfig, f64, f32) {
    let scale = (args.batch() * ranks) as f64 / 256.0;
    let kind = args.optimizer().kind();
    let (lr, wd) = match kind {
        OptimizerKind::Sgd => (0.1, 0.0),
        OptimizerKind::Lars => (0.3, 1e-6),
        OptimizerKind::Adamw => (1e-3, 0.0),
    };
    let (lr, wd) = (
        args.lr.unwrap_or(lr * scale),
        args.weight_decay.unwrap_or(wd),
    );
    (kind.config(wd), lr, wd)
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
    match image_run(args, splits, image_size)? {
        Some(outcome) => Ok(outcome),
        None => bail!("--dry-run: nothing was trained"),
    }
}

/// [`pretrain`], or with `--dry-run` (`None`) the run's description and memory only.
fn image_run(
    args: &PretrainArgs,
    splits: Arc<Splits>,
    image_size: usize,
) -> Result<Option<PretrainOutcome>> {
    let comm = joined_group(args)?;
    let ranks = comm.size();
    let builtin = args.data == "builtin" || args.data.starts_with("builtin:");
    let args = &args.resolved_image(image_size, builtin, ranks);
    // The training images carry no labels (the loader keeps them apart).
    let train = Arc::clone(&splits.train);
    let model = ResNetConfig {
        in_channels: train.channels,
        image_size,
        widths: args.widths.clone().unwrap_or_default(),
        blocks: vec![1; args.widths.as_ref().map_or(0, Vec::len)],
        ..ResNetConfig::default()
    };
    let batch = args.batch();
    let global_batch = batch.saturating_mul(ranks);
    if global_batch > train.n {
        bail!(
            "--batch {batch} {}is larger than the training set ({} images)",
            if ranks > 1 {
                format!("x {ranks} processes ")
            } else {
                String::new()
            },
            train.n
        );
    }
    let (optimizer, lr, wd) = optimizer(args, ranks);
    let strength = args.strength.unwrap_or(0.5);
    let mut augment = SimclrAugment::for_image(image_size, train.channels, strength);
    if let Some(c) = args.crop_min {
        augment.crop_scale.0 = c;
    }
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
        batch,
        tau: args.tau.unwrap_or(0.2),
        optimizer,
        schedule: fit_cfg.schedule(fit_cfg.total_steps(spe))?,
        augment,
        rotnet: RotnetAugment::default(),
        seed: args.seed,
        sync_bn: args.sync_bn,
        local_negatives: args.local_negatives,
    };
    let plan = Pretrainer::memory_plan(&cfg, &train, Some(&splits))?;
    let w: Vec<String> = model.widths.iter().map(usize::to_string).collect();
    let knobs = memory::Knobs {
        at: format!(
            "--batch {batch}, --widths {}, --image-size {image_size}",
            w.join(",")
        ),
        lower: "--batch, --widths or --image-size",
    };
    if args.dry_run {
        if comm.rank() == 0 {
            let description = Pretrainer::description(&cfg, &train, spe);
            memory::dry_run(&description, &settings_line(&fit_cfg, spe), &plan, &knobs);
        }
        return Ok(None);
    }
    memory::check(&plan, &knobs)?;
    let mut trainer = Pretrainer::in_group(cfg, train, comm)?.with_monitor(splits);
    let summary = fit_run(&mut trainer, &fit_cfg)?;
    Ok(Some(PretrainOutcome { summary, model }))
}

/// The optimizer, learning rate, weight decay, length and folder of a run, for `--dry-run`.
fn settings_line(cfg: &FitConfig<PretrainArgs>, steps_per_epoch: u64) -> String {
    let a = &cfg.args;
    let length = match cfg.length {
        Some(RunLength::Minutes(m)) => format!("as many steps as fit in {m} minutes"),
        _ => format!("{} steps", cfg.total_steps(steps_per_epoch)),
    };
    format!(
        "{} optimizer, lr {}, weight decay {}; {length}; run folder {}",
        a.optimizer().kind().name(),
        cfg.lr,
        cfg.weight_decay,
        cfg.out.display()
    )
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
    if let Some(r) = args.recipe {
        bail!(
            "--recipe {} sets the image methods' defaults; quickthought has its own \
             (AdamW at 0.001 x batch/256, batch 256): leave --recipe out",
            r.recipe().name()
        );
    }
    let comm = joined_group(args)?;
    let ranks = comm.size();
    if comm.rank() == 0 && !args.dry_run {
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
        let words = Vocab::build(data.train.iter().flatten(), args.min_count, args.vocab_size)?;
        if args.subwords > 0 {
            words.with_subwords(Subwords {
                buckets: args.subwords,
                min_n: args.subword_ngrams.0,
                max_n: args.subword_ngrams.1,
            })?
        } else {
            words
        }
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
    // config.json records every value the run uses (the sentence length in the encoder's
    // record).
    let args = &PretrainArgs {
        batch: Some(args.batch()),
        optimizer: Some(args.optimizer()),
        lr: Some(lr),
        weight_decay: Some(wd),
        tau: Some(temperature),
        threads: Some(rayon::current_num_threads() as u64),
        ..args.clone()
    };
    let fit_cfg = fit_config(args, lr, wd);
    let cfg = QtConfig {
        encoder,
        batch: args.batch(),
        objective: args.objective,
        temperature,
        optimizer,
        schedule: fit_cfg.schedule(1)?,
        seed: args.seed,
    };
    let plan = QtTrainer::memory_plan(&cfg, &corpus, Some(&held_out))?;
    let knobs = memory::Knobs {
        at: format!(
            "--batch {}, --embed-dim {}, --channels {}, --max-len {max_len}, {} words",
            cfg.batch,
            args.embed_dim,
            args.channels,
            vocab.len()
        ),
        lower: "--batch, --channels, --embed-dim, --max-len or --vocab-size",
    };
    if args.dry_run {
        if comm.rank() == 0 {
            let steps = (corpus.trainable_sentences() / (cfg.batch * ranks)).max(1) as u64;
            let description = format!(
                "quick thoughts ({:?} encoder, {:?} objective): {} training documents, {} \
                 sentences ({} cut to {max_len} tokens), vocabulary {} words, batch {}",
                args.encoder,
                args.objective,
                corpus.documents(),
                corpus.sentences(),
                corpus.truncated(),
                vocab.len(),
                cfg.batch
            );
            memory::dry_run(&description, &settings_line(&fit_cfg, steps), &plan, &knobs);
        }
        return Ok(());
    }
    memory::check(&plan, &knobs)?;
    let mut trainer = QtTrainer::in_group(cfg, corpus, comm)
        .with_context(|| format!("--data {}", args.data))?
        .with_monitor(held_out)
        .with_vocab(&vocab);
    fit_run(&mut trainer, &fit_cfg)?;
    Ok(())
}
