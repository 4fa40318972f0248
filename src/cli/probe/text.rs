//! `selfsup probe --tsv`: the sentence probe. Logistic regression on the representations of
//! labeled sentences (tf-idf word counts, random-init encoders, Quick Thoughts checkpoints):
//! k-fold cross-validation with every label as in SentEval, and seeded class-balanced label
//! draws for smaller shares, each cell the mean and spread.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use selfsup::eval::probe::{kfold_probe, linear_probe, select_rows, subsample_labels, ProbeConfig};
use selfsup::rng::mix;
use selfsup::text::{read_labeled_tsv, TfIdf};
use selfsup::train::text::{SentenceEmbedder, TextModel};

use super::checkpoint_label;

/// What the sentence probe measures, besides the checkpoints.
#[derive(Clone, Debug)]
pub struct SentenceProbe {
    /// Label shares in (0, 1], in column order.
    pub shares: Vec<f64>,
    /// Folds of the k-fold probe (share 1).
    pub folds: usize,
    /// Label draws of each share below 1.
    pub draws: usize,
    /// Seed of the folds, the draws and the random-init encoders.
    pub seed: u64,
    /// The tf-idf row.
    pub tfidf: bool,
    /// At most this many tf-idf columns (the most frequent tokens of the file).
    pub tfidf_words: usize,
    /// The random-init row (needs a checkpoint: its architecture).
    pub random: bool,
}

/// The labeled sentence file `path` ([`read_labeled_tsv`]): the sentences, their label ids
/// and the label names (sorted).
///
/// # Errors
/// One line naming the file and, for a malformed line, its number; fewer than two labels.
fn read_tsv(path: &Path) -> Result<(Vec<String>, Vec<u32>, Vec<String>)> {
    let r = read_labeled_tsv(path)?;
    if r.names.len() < 2 {
        bail!(
            "{}: {} labeled sentences of {} label(s); a probe needs at least two labels",
            path.display(),
            r.sentences.len(),
            r.names.len()
        );
    }
    Ok((r.sentences, r.labels, r.names))
}

/// The seed of label draw `r` (the same for every share and every representation, so the
/// rows of a table see the same labeled sentences, and a smaller share's subset is part of
/// a larger one's).
fn draw_seed(seed: u64, r: usize) -> u64 {
    mix(seed, &[0xd7a3, r as u64])
}

/// The test accuracies of a probe on `x` at one label share: one per fold of a k-fold
/// probe (share 1), or one per label draw (a class-balanced labeled subset of that share
/// trains, every other sentence tests).
fn share_accuracies(
    x: &[f32],
    dim: usize,
    labels: &[u32],
    classes: usize,
    share: f64,
    opts: &SentenceProbe,
    cfg: &ProbeConfig,
) -> Result<Vec<f64>> {
    if share >= 1.0 {
        let folds = opts.folds.min(labels.len());
        let r = kfold_probe(x, labels.len(), dim, labels, classes, folds, opts.seed, cfg)?;
        return Ok(r.fold_accuracy);
    }
    let mut accs = Vec::with_capacity(opts.draws);
    for r in 0..opts.draws {
        let train = subsample_labels(labels, classes, share, draw_seed(opts.seed, r))?;
        let mut is_train = vec![false; labels.len()];
        train.iter().for_each(|&i| is_train[i] = true);
        let test: Vec<usize> = (0..labels.len()).filter(|&i| !is_train[i]).collect();
        if test.is_empty() {
            bail!(
                "{}% of the labels leaves no sentence to test on",
                100.0 * share
            );
        }
        let pick = |idx: &[usize]| -> Result<(Vec<f32>, Vec<u32>)> {
            Ok((
                select_rows(x, dim, idx)?,
                idx.iter().map(|&i| labels[i]).collect(),
            ))
        };
        let (xtr, ytr) = pick(&train)?;
        let (xte, yte) = pick(&test)?;
        accs.push(linear_probe(&xtr, &ytr, &xte, &yte, dim, classes, cfg)?.accuracy);
    }
    Ok(accs)
}

/// The mean and the standard deviation (population form) of `v`.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// One row of the table: the representation, its width and (mean, std) per share.
type Row = (String, usize, Vec<(f64, f64)>);

/// `selfsup probe --tsv`: logistic regression on the tf-idf rows of the sentences, on the
/// representations of random-init encoders of the first checkpoint's architecture and on
/// each checkpoint's, at each label share; prints the table.
pub fn probe_sentences(checkpoints: &[PathBuf], tsv: &str, opts: &SentenceProbe) -> Result<()> {
    let (sentences, labels, names) = if tsv == "builtin" {
        selfsup::text::builtin_topic_sentences()
    } else {
        read_tsv(Path::new(tsv))?
    };
    let classes = names.len();
    if checkpoints.is_empty() && opts.random {
        bail!("--baselines random needs a --checkpoint: the random encoder takes its architecture");
    }
    if checkpoints.is_empty() && !opts.tfidf {
        bail!("--tsv: nothing to probe: give a --checkpoint, or --baselines tfidf for the tf-idf row alone");
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut probe = |name: String, x: Vec<f32>, dim: usize, cfg: &ProbeConfig| -> Result<()> {
        let mut cells = Vec::new();
        for &share in &opts.shares {
            let t0 = Instant::now();
            let accs = share_accuracies(&x, dim, &labels, classes, share, opts, cfg)
                .with_context(|| format!("probing {name}"))?;
            let (mean, std) = mean_std(&accs);
            eprintln!(
                "  probe {name}, {}% labels: {:.2}% ± {:.2} in {:.1} s",
                100.0 * share,
                100.0 * mean,
                100.0 * std,
                t0.elapsed().as_secs_f64()
            );
            cells.push((mean, std));
        }
        rows.push((name, dim, cells));
        Ok(())
    };
    let encoder_cfg = ProbeConfig::default();
    if opts.tfidf {
        let t0 = Instant::now();
        let tfidf = TfIdf::fit(&sentences, opts.tfidf_words).context("--tsv: the tf-idf row")?;
        let x = tfidf.transform(&sentences);
        eprintln!(
            "  tf-idf: {} columns (the most frequent tokens of the {} sentences) in {:.1} s",
            tfidf.dim(),
            sentences.len(),
            t0.elapsed().as_secs_f64()
        );
        // Unit-norm sparse rows are on a common scale already: standardizing them would
        // make the rarest words the loudest.
        let cfg = ProbeConfig {
            standardize: false,
            ..ProbeConfig::default()
        };
        probe("tf-idf".into(), x, tfidf.dim(), &cfg)?;
    }
    for (k, path) in checkpoints.iter().enumerate() {
        let mut model = TextModel::open(path, 256)?;
        if k == 0 && opts.random {
            let e = &model.embedder;
            let mut random = SentenceEmbedder::new(e.config(), e.objective(), 256, opts.seed)?;
            let x = random.embed_sentences(&model.vocab, &sentences)?;
            let kind = format!("{:?}", e.config().kind).to_lowercase();
            probe(
                format!("random init ({kind})"),
                x,
                random.dim(),
                &encoder_cfg,
            )?;
        }
        let x = model.embedder.embed_sentences(&model.vocab, &sentences)?;
        let kind = format!("{:?}", model.embedder.config().kind).to_lowercase();
        probe(
            format!("{} ({kind})", checkpoint_label(path)),
            x,
            model.embedder.dim(),
            &encoder_cfg,
        )?;
    }
    print_sentence_table(tsv, &labels, classes, opts, &rows)
}

/// Prints the table of `probe --tsv`: a title with the protocol, the labeled sentences per
/// draw, then one row per representation, each cell `mean% ± std`.
fn print_sentence_table(
    tsv: &str,
    labels: &[u32],
    classes: usize,
    opts: &SentenceProbe,
    rows: &[Row],
) -> Result<()> {
    let mut per_class = vec![0usize; classes];
    labels.iter().for_each(|&y| per_class[y as usize] += 1);
    let largest = *per_class.iter().max().unwrap_or(&0) as f64 / labels.len().max(1) as f64;
    println!(
        "linear probe on {tsv}: {} sentences, {classes} labels (the largest class is {:.2}%); \
         test accuracy, mean ± std over {} folds (100% labels) or {} label draws (a \
         class-balanced subset of the share trains, every other sentence tests)",
        labels.len(),
        100.0 * largest,
        opts.folds,
        opts.draws
    );
    let few: Vec<String> = opts
        .shares
        .iter()
        .filter(|&&s| s < 1.0)
        .map(|&s| {
            let n = subsample_labels(labels, classes, s, opts.seed)?.len();
            Ok(format!("{}%: {n}", 100.0 * s))
        })
        .collect::<Result<_>>()?;
    if !few.is_empty() {
        println!("labeled sentences per draw: {}", few.join(", "));
    }
    let w = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(40);
    let mut head = format!("{:<w$} {:>8}", "representation", "features");
    for s in &opts.shares {
        head.push_str(&format!(" {:>17}", format!("{}% labels", 100.0 * s)));
    }
    println!("{head}");
    for (name, dim, cells) in rows {
        let mut line = format!("{name:<w$} {dim:>8}");
        for (mean, std) in cells {
            line.push_str(&format!(" {:>9.2}% ± {:>4.2}", 100.0 * mean, 100.0 * std));
        }
        println!("{line}");
    }
    Ok(())
}
