//! `selfsup probe`: the linear probe on frozen features, with the raw-pixel and
//! random-init baselines in the same table; `--tsv`, the sentence probe, is in
//! [`text`] (tf-idf and random-init rows, k-fold and label draws).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use selfsup::data::resize::{eval_tensor, eval_views};
use selfsup::eval::probe::{linear_probe, subsample_labels, ProbeConfig};
use selfsup::nn::ResNetConfig;
use selfsup::train::embed::{model_config, Embedder};
use selfsup::train::text::is_text_checkpoint;

use selfsup::data::Splits;

use super::data::{load_splits, parse_image_size};
use super::threads::set_threads;

mod text;
use text::{probe_sentences, SentenceProbe};

const EXAMPLES: &str = "\
Examples:
  selfsup probe --checkpoint runs/simclr/ckpt-2000.safetensors --data builtin
  selfsup probe --checkpoint runs/fm/ckpt-9000.safetensors --data fashion-mnist --labels 1%,10%,100%
  selfsup probe --checkpoint runs/qt/ckpt-3000.safetensors --checkpoint runs/bow/ckpt-9000.safetensors --tsv builtin
  selfsup probe --checkpoint runs/qt/ckpt-3000.safetensors --tsv mr.tsv --labels 1%,10%,100% --draws 10
  selfsup probe --tsv mr.tsv --baselines tfidf     # the tf-idf row alone, no checkpoint

Each row is one representation: raw pixels, a randomly initialized encoder of the same
architecture (seed --seed), and the checkpoint's encoder (h, before the projection head).
Each column is the share of training labels the probe may use (class-balanced, seeded).
The probe: standardized features, L2-regularized multinomial logistic regression fitted
by L-BFGS, its penalty chosen on a held-out fifth of the labeled training images.

With --tsv (Quick Thoughts checkpoints), the rows are: tf-idf (logistic regression on
the sentences' tf-idf word counts: the tokens the encoders read, sublinear tf, smooth idf,
unit-L2 rows; the columns are the --tfidf-words most frequent tokens of the whole file,
whose sentences, without their labels, also give the idf; these rows are not
standardized), randomly initialized encoders of the first checkpoint's architecture, and
each checkpoint's sentence representation [f(s); g(s)]. At 100% of the labels a cell is
the mean and std of --folds class-stratified folds, each fold's probe fitted on the others
(penalty chosen on an inner split), as in SentEval; below 100%, of --draws label draws:
each draw a class-balanced, seeded subset of that share of every label trains and all the
other sentences test, the same draws for every row (a smaller share's subset is part of a
larger one's).";

/// Options of `selfsup probe`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ProbeArgs {
    /// A checkpoint written by `selfsup pretrain`, or its run folder (its newest
    /// checkpoint); repeat the flag to compare several in one table. With --tsv it may be
    /// left out: the tf-idf row alone
    #[arg(long, value_name = "CKPT", required_unless_present = "tsv")]
    pub checkpoint: Vec<PathBuf>,

    /// The side images are shown to the encoders at, in pixels [default: the size each
    /// checkpoint was trained at]; the raw-pixel row uses it too
    #[arg(long, value_name = "S", value_parser = parse_image_size, allow_negative_numbers = true)]
    pub image_size: Option<usize>,

    /// The labeled data (see `selfsup pretrain --help`); it needs a test split
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "builtin",
        conflicts_with = "tsv"
    )]
    pub data: String,

    /// Labeled sentences, one `label<TAB>sentence` per line, or `builtin` (the built-in
    /// corpus's held-out sentences and their topics), for Quick Thoughts checkpoints and
    /// the tf-idf baseline; k-fold logistic regression as in SentEval
    #[arg(long, value_name = "FILE")]
    pub tsv: Option<String>,

    /// Folds of the k-fold probe (--tsv, 100% of the labels)
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=100))]
    pub folds: u64,

    /// Label draws of each share below 100% (--tsv): each a class-balanced, seeded subset
    /// that trains, the other sentences testing; the cell is their mean ± std [default: 10]
    #[arg(long, value_name = "N", requires = "tsv", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub draws: Option<u64>,

    /// Columns of the tf-idf row (--tsv): the most frequent tokens of the file
    #[arg(long, value_name = "W", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub tfidf_words: u64,

    /// Shares of the training labels to probe with, comma-separated: percentages (1%,
    /// 100%), fractions (0.01, 1.0) or counts of labeled images (600); a bare 1 is refused
    /// as ambiguous
    #[arg(long, value_name = "P%", value_delimiter = ',', default_values_t = [String::from("1%"), String::from("100%")])]
    pub labels: Vec<String>,

    /// Baseline rows, comma-separated, or none: raw (the pixels) and random (a randomly
    /// initialized encoder of the first checkpoint's architecture) [default: raw,random];
    /// with --tsv, tfidf (logistic regression on tf-idf word counts; `raw` means it there
    /// too) and random (random-init sentence encoders) [default: tfidf,random]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub baselines: Vec<String>,

    /// The same as --baselines none
    #[arg(long, hide = true, conflicts_with = "baselines")]
    pub no_baselines: bool,

    /// Seed of the label subsets and the random-init encoder
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = super::values::at_least_one::<u64>)]
    pub threads: Option<u64>,
}

/// A share of the training labels as `--labels` gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LabelShare {
    /// A fraction in (0, 1] of each class's labels.
    Fraction(f64),
    /// About this many labels in all, class-balanced.
    Count(usize),
}

impl LabelShare {
    /// The fraction of a training set of `n` labels.
    pub fn fraction(self, n: usize) -> f64 {
        match self {
            LabelShare::Fraction(f) => f,
            LabelShare::Count(c) => (c as f64 / n.max(1) as f64).min(1.0),
        }
    }

    /// The column title.
    pub fn title(self) -> String {
        match self {
            LabelShare::Fraction(f) => format!("{}% labels", f * 100.0),
            LabelShare::Count(c) => format!("{c} labels"),
        }
    }
}

/// Parses one `--labels` entry: `1%` (a percentage), `0.01` (a fraction, written with a
/// point) or `600` (a count of labels). A bare `1` is refused as ambiguous.
pub fn parse_share(s: &str) -> Result<LabelShare> {
    let t = s.trim();
    let bad =
        || anyhow::anyhow!("--labels: '{s}' is not a share: write 1%, 0.01 or a count such as 600");
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(v > 0.0 && v <= 100.0) {
            bail!("--labels: '{s}' is not a percentage in (0%, 100%]");
        }
        return Ok(LabelShare::Fraction(v / 100.0));
    }
    if t.contains(['.', 'e', 'E']) {
        let v: f64 = t.parse().map_err(|_| bad())?;
        if !(v > 0.0 && v <= 1.0) {
            bail!("--labels: '{s}' is not a fraction in (0, 1]");
        }
        return Ok(LabelShare::Fraction(v));
    }
    match t.parse::<usize>() {
        Ok(1) => bail!(
            "--labels: '1' is ambiguous: write 100% (or 1.0) for every label, or a count of at least 2"
        ),
        Ok(c) if c >= 2 => Ok(LabelShare::Count(c)),
        _ => Err(bad()),
    }
}

/// Parses `1%`, `10%`, `100%` (or `0.01`) into a fraction in (0, 1] (the sentence probe's
/// shares; a count is taken as a fraction of no set there, so it is refused).
pub fn parse_fraction(s: &str) -> Result<f64> {
    match parse_share(s)? {
        LabelShare::Fraction(f) => Ok(f),
        LabelShare::Count(_) => bail!("--labels: '{s}': give a share (1%, 0.01) with --tsv"),
    }
}

/// One row of the table: a representation's name and its accuracy per label share.
#[derive(Debug, Clone)]
pub struct ProbeRow {
    /// What the features are.
    pub name: String,
    /// Top-1 test accuracy per label share, in the order of the shares.
    pub accuracy: Vec<f64>,
}

/// Which training images each label share uses, and the rows the features are needed for
/// (their union: only those are embedded).
#[derive(Debug, Clone)]
pub struct ProbePlan {
    /// The shares, in column order.
    pub shares: Vec<LabelShare>,
    /// Per share, the labeled training images (class-balanced, seeded).
    pub subsets: Vec<Vec<usize>>,
    /// Every training image some share uses, sorted.
    pub needed: Vec<usize>,
    /// For each training image, its row among `needed` (`usize::MAX` when not needed).
    row_of: Vec<usize>,
}

impl ProbePlan {
    /// The plan of `shares` on `splits` (labeled, with a labeled test split).
    ///
    /// # Errors
    /// Data without labels or a test split.
    pub fn new(splits: &Splits, shares: &[LabelShare], seed: u64) -> Result<Self> {
        let (Some(train_labels), Some(classes)) = (splits.train_labels.as_ref(), splits.classes)
        else {
            bail!("the probe needs labeled data with a test split");
        };
        anyhow::ensure!(
            splits.test.as_ref().is_some_and(|t| t.labels.is_some()),
            "the probe needs labeled data with a test split"
        );
        let n = train_labels.len();
        let subsets = shares
            .iter()
            .map(|s| {
                Ok(subsample_labels(
                    train_labels,
                    classes,
                    s.fraction(n),
                    seed,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut needed: Vec<usize> = subsets.iter().flatten().copied().collect();
        needed.sort_unstable();
        needed.dedup();
        let mut row_of = vec![usize::MAX; n];
        for (r, &i) in needed.iter().enumerate() {
            row_of[i] = r;
        }
        Ok(Self {
            shares: shares.to_vec(),
            subsets,
            needed,
            row_of,
        })
    }
}

/// Features of one representation: its name, the rows of the plan's needed training
/// images, the test images, and the width.
pub type Features = (String, Vec<f32>, Vec<f32>, usize);

/// The probe table of `features` on the plan's shares.
pub fn probe_table(
    splits: &Splits,
    plan: &ProbePlan,
    features: &[Features],
) -> Result<Vec<ProbeRow>> {
    let (Some(train_labels), Some(test), Some(classes)) = (
        splits.train_labels.as_ref(),
        splits.test.as_ref(),
        splits.classes,
    ) else {
        bail!("the probe needs labeled data with a test split");
    };
    let test_labels = test
        .labels
        .as_ref()
        .context("the test split has no labels")?;
    let mut rows = Vec::new();
    for (name, tr, te, d) in features {
        let mut acc = Vec::new();
        for (share, idx) in plan.shares.iter().zip(&plan.subsets) {
            let x: Vec<f32> = idx
                .iter()
                .flat_map(|&i| {
                    let r = plan.row_of[i];
                    tr[r * d..(r + 1) * d].iter().copied()
                })
                .collect();
            let y: Vec<u32> = idx.iter().map(|&i| train_labels[i]).collect();
            let t0 = Instant::now();
            eprintln!(
                "  fitting {name} on {} ({} labeled images, {d} features)...",
                share.title(),
                idx.len()
            );
            let report = linear_probe(
                &x,
                &y,
                te,
                test_labels,
                *d,
                classes,
                &ProbeConfig::default(),
            )?;
            eprintln!(
                "  {name}, {}: {:.2}% in {:.1} s",
                share.title(),
                report.accuracy * 100.0,
                t0.elapsed().as_secs_f64()
            );
            acc.push(report.accuracy);
        }
        rows.push(ProbeRow {
            name: name.clone(),
            accuracy: acc,
        });
    }
    Ok(rows)
}

/// The raw pixels as features: each needed image's evaluation view at `size x size` (for
/// data of that size, the pixels themselves).
pub fn raw_features(splits: &Splits, plan: &ProbePlan, size: usize) -> Result<Features> {
    let test = splits
        .test
        .as_ref()
        .context("the probe needs a test split")?;
    let d = splits.train.channels * size * size;
    let mut tr = vec![0.0; plan.needed.len() * d];
    eval_views(&splits.train, &plan.needed, size, &mut tr);
    Ok(("raw pixels".into(), tr, eval_tensor(test, size), d))
}

/// The features of an encoder on the needed training images and the test split.
pub fn encoder_features(
    name: &str,
    emb: &mut Embedder,
    splits: &Splits,
    plan: &ProbePlan,
) -> Result<Features> {
    let test = splits
        .test
        .as_ref()
        .context("the probe needs a test split")?;
    let t0 = Instant::now();
    eprintln!(
        "  embedding {} training and {} test images with {name}...",
        plan.needed.len(),
        test.n
    );
    let d = emb.dim();
    let mut tr = vec![0.0; plan.needed.len() * d];
    emb.embed(&splits.train, &plan.needed, &mut tr)?;
    let te = emb.embed_all(test)?;
    eprintln!("  embedded in {:.1} s", t0.elapsed().as_secs_f64());
    Ok((name.into(), tr, te, d))
}

/// Prints the table.
pub fn print_table(title: &str, shares: &[LabelShare], rows: &[ProbeRow]) {
    println!("{title}");
    let mut head = format!("{:<24}", "representation");
    for s in shares {
        head.push_str(&format!(" {:>10}", s.title()));
    }
    println!("{head}");
    for r in rows {
        let mut line = format!("{:<24}", r.name);
        for a in &r.accuracy {
            line.push_str(&format!(" {:>9.2}%", a * 100.0));
        }
        println!("{line}");
    }
}

/// A checkpoint's name in a table: its run folder and file (`qt/ckpt-300.safetensors`).
pub fn checkpoint_label(path: &std::path::Path) -> String {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    match path.parent().and_then(|p| p.file_name()) {
        Some(dir) => format!("{}/{file}", dir.to_string_lossy()),
        None => file,
    }
}

/// Runs `selfsup probe`.
pub fn run(args: &ProbeArgs) -> Result<()> {
    set_threads(args.threads);
    let b = baselines(args, args.tsv.is_some())?;
    let checkpoints: Vec<PathBuf> = args
        .checkpoint
        .iter()
        .map(|c| resolve_checkpoint(c))
        .collect::<Result<_>>()?;
    if let Some(tsv) = &args.tsv {
        let shares: Vec<f64> = args
            .labels
            .iter()
            .map(|s| parse_fraction(s))
            .collect::<Result<_>>()?;
        let opts = SentenceProbe {
            shares,
            folds: args.folds as usize,
            draws: args.draws.unwrap_or(10) as usize,
            seed: args.seed,
            tfidf: b.tfidf,
            tfidf_words: args.tfidf_words as usize,
            // The default asks for the random row only where a checkpoint gives its shape.
            random: b.random && (!checkpoints.is_empty() || !args.baselines.is_empty()),
        };
        return probe_sentences(&checkpoints, tsv, &opts);
    }
    if is_text_checkpoint(&checkpoints[0])? {
        bail!(
            "{} is a Quick Thoughts checkpoint: probe it on labeled sentences with --tsv FILE (or --tsv builtin)",
            checkpoints[0].display()
        );
    }
    let shares: Vec<LabelShare> = args
        .labels
        .iter()
        .map(|s| parse_share(s))
        .collect::<Result<_>>()?;
    let baselines = b;
    let first: ResNetConfig = model_config(&checkpoints[0])?;
    let (splits, size) = load_splits(
        &args.data,
        Some(args.image_size.unwrap_or(first.image_size)),
    )?;
    let plan = ProbePlan::new(&splits, &shares, args.seed)?;
    eprintln!(
        "probe on {}: {} of {} training images labeled for the shares asked ({}), {} test images",
        args.data,
        plan.needed.len(),
        splits.train.n,
        shares
            .iter()
            .map(|s| s.title())
            .collect::<Vec<_>>()
            .join(", "),
        splits.test.as_ref().map_or(0, |t| t.n)
    );
    // Every encoder runs at the size given, else at the size it was trained at.
    let at_size = |m: ResNetConfig| ResNetConfig {
        image_size: args.image_size.unwrap_or(m.image_size),
        ..m
    };
    let mut features = Vec::new();
    if baselines.raw {
        eprintln!("  raw pixels at {size}x{size}...");
        features.push(raw_features(&splits, &plan, size)?);
    }
    if baselines.random {
        let mut random = Embedder::new(&at_size(first.clone()), 256, args.seed)?;
        features.push(encoder_features(
            "random init",
            &mut random,
            &splits,
            &plan,
        )?);
    }
    for path in &checkpoints {
        let model = at_size(model_config(path)?);
        let mut trained = Embedder::from_checkpoint(&model, 256, path)?;
        features.push(encoder_features(
            &checkpoint_label(path),
            &mut trained,
            &splits,
            &plan,
        )?);
    }
    let rows = probe_table(&splits, &plan, &features)?;
    print_table(
        &format!("linear probe on {} (test accuracy)", args.data),
        &shares,
        &rows,
    );
    Ok(())
}

/// Which baseline rows the probe adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baselines {
    /// The raw pixels.
    pub raw: bool,
    /// A randomly initialized encoder of the first checkpoint's architecture.
    pub random: bool,
    /// Tf-idf word counts (the sentence probe).
    pub tfidf: bool,
}

/// `--baselines` (and the older `--no-baselines`) of the image probe or, with `text`, of
/// the sentence probe (where `raw` means the words themselves: tf-idf).
fn baselines(args: &ProbeArgs, text: bool) -> Result<Baselines> {
    if args.no_baselines {
        return Ok(Baselines::default());
    }
    if args.baselines.is_empty() {
        return Ok(Baselines {
            raw: !text,
            random: true,
            tfidf: text,
        });
    }
    let mut b = Baselines::default();
    for v in &args.baselines {
        match v.trim() {
            "raw" if !text => b.raw = true,
            "raw" | "tfidf" if text => b.tfidf = true,
            "random" => b.random = true,
            "tfidf" => bail!("--baselines: tfidf is a row of the sentence probe (--tsv)"),
            "none" if args.baselines.len() == 1 => {}
            other if text => bail!(
                "--baselines: '{other}' is not one of tfidf, random (comma-separated) or none"
            ),
            other => {
                bail!("--baselines: '{other}' is not one of raw, random (comma-separated) or none")
            }
        }
    }
    Ok(b)
}

/// A checkpoint file, or a run folder meaning its newest checkpoint.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    match selfsup::train::RunDir::new(path).latest_checkpoint()? {
        Some((_, ckpt)) => Ok(ckpt),
        None => bail!(
            "{}: a run folder without a checkpoint (ckpt-*.safetensors)",
            path.display()
        ),
    }
}
