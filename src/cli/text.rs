//! The text method on the command line: `selfsup pretrain --method quickthought` (the run
//! folder, progress bar and monitor of the image methods), and what `embed`, `probe` and
//! `neighbors` need to read its checkpoints.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use selfsup::io::checkpoint;
use selfsup::nn::{QtObjective, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LarsConfig, LrSchedule, OptimizerConfig, SgdConfig};
use selfsup::train::image::METHOD_KEY;
use selfsup::train::text::{QtConfig, QtTrainer, SentenceEmbedder, TokenizedCorpus, METHOD_NAME};
use selfsup::text::{builtin_corpus, read_corpus_report, read_text, CorpusConfig, Vocab, TOPICS};
use selfsup::train::Metadata;

use super::group;
use super::pretrain::{
    check_same_job, progress_bar, resumed_config, say, start_or_resume, training_stopped,
    BudgetFit, OptimizerArg, PretrainArgs, RunLog,
};

/// The fewest seconds between two runs of the held-out monitor.
const MONITOR_SECONDS: f64 = 15.0;
/// Documents held out of a `text:PATH` corpus for the monitor: one in this many.
const HOLD_OUT_EVERY: usize = 20;
/// The built-in corpus's held-out documents (another seed than the training corpus's).
const BUILTIN_EVAL_DOCUMENTS: usize = 400;

/// A text corpus: training and held-out documents of sentences.
#[derive(Debug)]
pub struct TextData {
    /// Training documents.
    pub train: Vec<Vec<String>>,
    /// Held-out documents (the monitor's).
    pub held_out: Vec<Vec<String>>,
}

/// The built-in corpus's held-out documents and their topics (a seed the training corpus
/// does not use).
pub fn builtin_held_out() -> (Vec<Vec<String>>, Vec<u32>) {
    let docs = builtin_corpus(&CorpusConfig {
        documents: BUILTIN_EVAL_DOCUMENTS,
        seed: CorpusConfig::default().seed ^ 0xe7a1,
    });
    let topics = docs.iter().map(|d| d.topic).collect();
    (docs.into_iter().map(|d| d.sentences).collect(), topics)
}

/// Loads `builtin` (the generated corpus) or `text:PATH` (a UTF-8 file or a folder).
pub fn load_text(spec: &str) -> Result<TextData> {
    if spec == "builtin" {
        let train = builtin_corpus(&CorpusConfig::default())
            .into_iter()
            .map(|d| d.sentences)
            .collect();
        let (held_out, _) = builtin_held_out();
        return Ok(TextData { train, held_out });
    }
    let Some(path) = spec.strip_prefix("text:") else {
        bail!("--data {spec}: the text method reads `builtin` or `text:PATH` (a UTF-8 file or a folder of them)");
    };
    let report = read_corpus_report(Path::new(path))?;
    let sentences: usize = report.documents.iter().map(|d| d.sentences.len()).sum();
    eprintln!(
        "{path}: {} documents, {sentences} sentences ({} files read; skipped: {} empty, {} with one sentence, {} not UTF-8 text)",
        report.documents.len(),
        report.files,
        report.skipped_empty,
        report.skipped_short,
        report.skipped_binary,
    );
    let mut train = Vec::new();
    let mut held_out = Vec::new();
    let many = report.documents.len() >= HOLD_OUT_EVERY;
    for (i, d) in report.documents.into_iter().enumerate() {
        if many && i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 {
            held_out.push(d.sentences);
        } else {
            train.push(d.sentences);
        }
    }
    Ok(TextData { train, held_out })
}

/// What `config.json` of a Quick Thoughts run records.
#[derive(Debug, Serialize, Deserialize)]
struct TextRunConfig {
    args: PretrainArgs,
    encoder: SentenceEncoderConfig,
    objective: QtObjective,
    /// The in-batch logits' temperature (absent in runs of versions before it: 1).
    #[serde(default)]
    temperature: Option<f32>,
    total_steps: u64,
    lr: f64,
    weight_decay: f32,
    warmup_steps: u64,
    train_documents: usize,
    train_sentences: usize,
    truncated_sentences: usize,
    version: String,
}

/// The in-batch temperature without `--tau`: logits `f(s) . g(c) / 50`. Measured on the
/// built-in corpus (README, "Quick Thoughts against the bag of words"): the paper's plain
/// inner products (temperature 1) probe 80.5% at 0.5% of the labels after 3,000 steps of
/// the CNN, temperature 50 86.2%; the bag of words gains as much in the same time.
pub const QT_TEMPERATURE: f32 = 50.0;

/// Metadata key of the encoder configuration (JSON).
pub const CONFIG_KEY: &str = "config";
/// Metadata key of the objective (JSON: `"in-batch"` or `"pairwise"`).
pub const OBJECTIVE_KEY: &str = "objective";
/// Metadata key of the vocabulary (JSON).
pub const VOCAB_KEY: &str = "vocab";

/// The optimizer and its learning rate and weight decay for a text run: AdamW at
/// 1e-3 x batch/256 unless the flags say otherwise (the batch of a step of all `ranks`).
fn text_optimizer(args: &PretrainArgs, ranks: usize) -> (OptimizerConfig, f64, f32) {
    let scale = (args.batch * ranks) as f64 / 256.0;
    match args.optimizer.unwrap_or(OptimizerArg::Adamw) {
        OptimizerArg::Sgd => {
            let wd = args.weight_decay.unwrap_or(0.0);
            let cfg = OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                weight_decay: wd,
                ..SgdConfig::default()
            });
            (cfg, args.lr.unwrap_or(0.1 * scale), wd)
        }
        OptimizerArg::Lars => {
            let wd = args.weight_decay.unwrap_or(1e-6);
            let cfg = OptimizerConfig::Lars(LarsConfig {
                weight_decay: wd,
                ..LarsConfig::default()
            });
            (cfg, args.lr.unwrap_or(0.3 * scale), wd)
        }
        OptimizerArg::Adamw => {
            let wd = args.weight_decay.unwrap_or(0.0);
            let cfg = OptimizerConfig::AdamW(AdamWConfig {
                weight_decay: wd,
                ..AdamWConfig::default()
            });
            (cfg, args.lr.unwrap_or(1e-3 * scale), wd)
        }
    }
}

/// The default `--max-len`: the 99th percentile of the sentences' token counts, from 4
/// to 64 (a static graph pays for every position, so the padding of a generous bound
/// costs as much as tokens).
fn auto_max_len(docs: &[Vec<String>], vocab: &Vocab) -> usize {
    let mut lens: Vec<usize> = docs
        .iter()
        .flatten()
        .map(|s| vocab.encode(s, 65).len())
        .collect();
    if lens.is_empty() {
        return 4;
    }
    let k = (lens.len() - 1) * 99 / 100;
    let (_, p99, _) = lens.select_nth_unstable(k);
    (*p99).clamp(4, 64)
}

/// Runs `selfsup pretrain --method quickthought`.
pub fn pretrain_text(args: &PretrainArgs) -> Result<()> {
    let data = load_text(&args.data)?;
    let out = &args.out;
    // Under mpirun every rank reads the corpus and builds the same vocabulary; rank 0 alone
    // writes the run folder and prints. A resumed data-parallel run needs the folder
    // (config.json, vocab.json) on every rank's machine.
    let comm = group::process_group()?;
    check_same_job(&*comm, args)?;
    let (root, ranks) = (comm.rank() == 0, comm.size());
    if root {
        fs::create_dir_all(out)
            .with_context(|| format!("creating the run folder {}", out.display()))?;
    }
    let config_path = out.join("config.json");
    let vocab_path = out.join("vocab.json");
    let old: Option<TextRunConfig> = if args.resume {
        Some(resumed_config(&config_path, args, |c: &TextRunConfig| {
            &c.args
        })?)
    } else {
        None
    };
    // A resumed run keeps its vocabulary (the ids the weights were trained on).
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
        (None, None) => auto_max_len(&data.train, &vocab),
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
    let (optimizer, lr, wd) = text_optimizer(args, ranks);
    let make_schedule = |total: u64| {
        let warmup = ((total as f64 * args.warmup) as u64).min(total.saturating_sub(1));
        LrSchedule::new(lr as f32, warmup, total)
    };
    // The in-batch temperature: the flag, else a resumed run's own, else the default.
    let trained_with = old.as_ref().map(|o| o.temperature.unwrap_or(1.0));
    if let (Some(t), Some(was)) = (args.tau, trained_with) {
        if t != was {
            bail!(
                "--resume: {} is another run: it was started with --tau {was}, this command says {t}",
                config_path.display()
            );
        }
    }
    let temperature = args.tau.or(trained_with).unwrap_or(QT_TEMPERATURE);
    let cfg = QtConfig {
        encoder: encoder.clone(),
        batch: args.batch,
        objective: args.objective,
        temperature,
        optimizer,
        schedule: make_schedule(1)?,
        seed: args.seed,
    };
    let mut trainer = QtTrainer::in_group(cfg, Arc::clone(&corpus), comm)
        .with_context(|| format!("--data {}", args.data))?;
    let spe = trainer.steps_per_epoch();
    let mut total = match (args.epochs, args.steps, args.minutes) {
        (Some(e), _, _) => e * spe,
        (_, Some(s), _) => s,
        (_, _, Some(_)) => 1_000_000,
        _ => 10 * spe,
    };
    if let Some(old) = &old {
        total = old.total_steps;
    }
    trainer.set_schedule(make_schedule(total)?);
    start_or_resume(out, args.resume, root, || trainer.resume_from(out))?;
    let vocab_json = vocab.to_json();
    if root {
        checkpoint::write_atomically(&vocab_path, |w| w.write_all(vocab_json.as_bytes()))?;
    }
    let write_config = |total: u64| -> Result<()> {
        let rc = TextRunConfig {
            args: args.clone(),
            encoder: encoder.clone(),
            objective: args.objective,
            temperature: Some(temperature),
            total_steps: total,
            lr,
            weight_decay: wd,
            warmup_steps: ((total as f64 * args.warmup) as u64).min(total.saturating_sub(1)),
            train_documents: corpus.documents(),
            train_sentences: corpus.sentences(),
            truncated_sentences: corpus.truncated(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if root {
            let text = serde_json::to_vec_pretty(&rc)?;
            checkpoint::write_atomically(&config_path, |w| w.write_all(&text))?;
        }
        Ok(())
    };
    write_config(total)?;
    if root {
        eprintln!(
            "quick thoughts ({:?} encoder, {:?} objective): {} training documents, {} \
             sentences ({} cut to {} tokens), vocabulary {} words, {} steps per epoch",
            args.encoder,
            args.objective,
            corpus.documents(),
            corpus.sentences(),
            corpus.truncated(),
            max_len,
            vocab.len(),
            spe
        );
    }

    let mut log = RunLog::open_on(root, out)?;
    let mut meta = Metadata::new();
    meta.insert(CONFIG_KEY.into(), serde_json::to_string(&encoder)?);
    meta.insert(VOCAB_KEY.into(), vocab_json.clone());
    meta.insert("data".into(), args.data.clone());
    meta.insert(
        OBJECTIVE_KEY.into(),
        serde_json::to_string(&args.objective)?,
    );

    let monitor = |trainer: &QtTrainer| -> Result<Option<f64>> {
        if held_out.sentences() < args.batch {
            return Ok(None);
        }
        Ok(Some(trainer.neighbour_accuracy(&held_out)?))
    };
    let bar = progress_bar(args.quiet || !root);
    let start_step = trainer.step();
    // The second fit is due by the clock, which differs between ranks: a data-parallel
    // run fits once, at a step every rank reaches together.
    let fits = if ranks > 1 { 1 } else { 2 };
    let mut fit = BudgetFit::new(args.minutes, args.resume, start_step, fits);
    let mut train_seconds = 0.0;
    let mut last_monitor = Instant::now();
    let mut ema_rate = 0.0f64;
    let mut ema_acc = f64::NAN;
    let mut last_ckpt: Option<PathBuf> = None;
    let mut monitor_last = None;
    bar.set_length(total);
    bar.set_position(start_step);
    while trainer.step() < total {
        let ts = Instant::now();
        let stats = match trainer.train_step() {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return Err(training_stopped(e, last_ckpt.as_ref()));
            }
        };
        let dt = ts.elapsed().as_secs_f64();
        train_seconds += dt;
        let rate = (args.batch * ranks) as f64 / dt;
        ema_rate = if ema_rate == 0.0 {
            rate
        } else {
            0.9 * ema_rate + 0.1 * rate
        };
        ema_acc = if ema_acc.is_nan() {
            stats.accuracy
        } else {
            0.95 * ema_acc + 0.05 * stats.accuracy
        };
        if let Some(t) = fit.refit(trainer.step()) {
            // Each rank timed itself: all take rank 0's length.
            total = trainer.root_value(t)?;
            trainer.set_schedule(make_schedule(total)?);
            write_config(total)?;
            bar.set_length(total);
        }
        log.step(&stats, "sentences_per_s", rate)?;
        bar.set_position(trainer.step());
        bar.set_message(format!(
            "loss {:.4}  prev/next acc {:.1}%  lr {:.2e}  {:.0} sent/s",
            stats.loss,
            100.0 * ema_acc,
            stats.lr,
            ema_rate
        ));
        let step = trainer.step();
        if args.quiet && root && step % 50 == 0 {
            eprintln!(
                "step {step}/{total}  loss {:.4}  prev/next acc {:.1}%  lr {:.2e}  {:.0} sent/s",
                stats.loss,
                100.0 * ema_acc,
                stats.lr,
                ema_rate
            );
        }
        if args.checkpoint_every > 0 && step % args.checkpoint_every == 0 && step < total {
            last_ckpt = trainer.save_in(out, &meta, 2)?;
        }
        let epoch = step / spe;
        // Every --knn-every epochs, but at most every MONITOR_SECONDS: a bag of words runs
        // hundreds of epochs a minute.
        if step % spe == 0
            && root
            && args.knn_every > 0
            && epoch.is_multiple_of(args.knn_every)
            && step < total
            && last_monitor.elapsed().as_secs_f64() >= MONITOR_SECONDS
        {
            last_monitor = Instant::now();
            if let Some(acc) = monitor(&trainer)? {
                say(
                    &bar,
                    args.quiet,
                    format!(
                        "epoch {epoch}: held-out previous/next accuracy {:.2}%",
                        100.0 * acc
                    ),
                );
                writeln!(
                    log.file(),
                    "{{\"epoch\":{epoch},\"step\":{step},\"held_out_neighbour_accuracy\":{acc}}}"
                )?;
                monitor_last = Some(acc);
            }
        }
    }
    let checkpoint = trainer.save_in(out, &meta, 2)?;
    bar.finish_and_clear();
    let Some(checkpoint) = checkpoint else {
        return Ok(()); // a rank other than 0: rank 0 reports
    };
    if let Some(acc) = monitor(&trainer)? {
        writeln!(
            log.file(),
            "{{\"epoch\":{},\"step\":{},\"held_out_neighbour_accuracy\":{acc}}}",
            trainer.step() / spe,
            trainer.step()
        )?;
        monitor_last = Some(acc);
    }
    log.finish()?;
    let steps = trainer.step() - start_step;
    let sentences_per_s = steps as f64 * (args.batch * ranks) as f64 / train_seconds.max(1e-9);
    eprintln!(
        "{METHOD_NAME}: {steps} steps in {train_seconds:.0} s ({sentences_per_s:.0} sentences/s{}){}; checkpoint {}",
        group::over_processes(ranks),
        monitor_last
            .map(|a| format!(", held-out previous/next accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default(),
        checkpoint.display()
    );
    Ok(())
}

/// A Quick Thoughts checkpoint opened for use: its encoders, vocabulary and data spec.
pub struct TextModel {
    pub embedder: SentenceEmbedder,
    pub vocab: Vocab,
    pub data: Option<String>,
}

/// Whether `path` is a checkpoint of the text method (read from its header's metadata; the
/// tensors are read and checked when the checkpoint is opened).
pub fn is_text_checkpoint(path: &Path) -> Result<bool> {
    let meta = checkpoint::load_metadata(path)?;
    Ok(meta.get(METHOD_KEY).map(String::as_str) == Some(METHOD_NAME))
}

/// Opens a checkpoint of `selfsup pretrain --method quickthought`.
pub fn open_text_model(path: &Path, batch: usize) -> Result<TextModel> {
    let ck = checkpoint::load(path)?;
    let meta = ck.metadata();
    if meta.get(METHOD_KEY).map(String::as_str) != Some(METHOD_NAME) {
        bail!(
            "{}: not a Quick Thoughts checkpoint (method '{}')",
            path.display(),
            meta.get(METHOD_KEY).map_or("unknown", String::as_str)
        );
    }
    let get = |key: &str| {
        meta.get(key).with_context(|| {
            format!(
                "{}: no '{key}' in the checkpoint's metadata",
                path.display()
            )
        })
    };
    let cfg: SentenceEncoderConfig = serde_json::from_str(get(CONFIG_KEY)?)
        .with_context(|| format!("{}: the encoder configuration is malformed", path.display()))?;
    let vocab = Vocab::from_json(get(VOCAB_KEY)?)
        .with_context(|| format!("{}: the vocabulary", path.display()))?;
    if vocab.len() != cfg.vocab {
        bail!(
            "{}: the vocabulary has {} words, the encoder {}",
            path.display(),
            vocab.len(),
            cfg.vocab
        );
    }
    let objective: QtObjective = serde_json::from_str(get(OBJECTIVE_KEY)?)
        .with_context(|| format!("{}: the objective is malformed", path.display()))?;
    let data = meta.get("data").cloned();
    let embedder = SentenceEmbedder::from_loaded(&cfg, objective, batch, &ck)?;
    Ok(TextModel {
        embedder,
        vocab,
        data,
    })
}

/// The built-in corpus's held-out sentences, each labeled with its document's topic:
/// the data of `selfsup probe --tsv builtin`.
pub fn builtin_topic_sentences() -> (Vec<String>, Vec<u32>, Vec<String>) {
    let (docs, topics) = builtin_held_out();
    let mut sentences = Vec::new();
    let mut labels = Vec::new();
    for (d, t) in docs.into_iter().zip(topics) {
        for s in d {
            sentences.push(s);
            labels.push(t);
        }
    }
    (
        sentences,
        labels,
        TOPICS.iter().map(|t| t.to_string()).collect(),
    )
}

/// The sentence encoder's kind, for clap.
pub fn parse_encoder(s: &str) -> std::result::Result<SentenceEncoderKind, String> {
    match s {
        "cnn" => Ok(SentenceEncoderKind::Cnn),
        "bow" => Ok(SentenceEncoderKind::Bow),
        _ => Err(format!("expected cnn or bow, got '{s}'")),
    }
}

/// The objective, for clap.
pub fn parse_objective(s: &str) -> std::result::Result<QtObjective, String> {
    match s {
        "in-batch" => Ok(QtObjective::InBatch),
        "pairwise" => Ok(QtObjective::Pairwise),
        _ => Err(format!("expected in-batch or pairwise, got '{s}'")),
    }
}

/// A labeled sentence file: `label<TAB>sentence` per line (blank lines skipped). Returns
/// the sentences, their label ids and the label names (sorted).
pub fn read_tsv(path: &Path) -> Result<(Vec<String>, Vec<u32>, Vec<String>)> {
    let text = read_text(path)?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((label, sentence)) = line.split_once('\t') else {
            bail!(
                "{}:{}: expected `label<TAB>sentence`, found no tab",
                path.display(),
                i + 1
            );
        };
        let label = label.trim();
        if label.is_empty() {
            bail!("{}:{}: the label is empty", path.display(), i + 1);
        }
        pairs.push((label.to_string(), sentence.trim().to_string()));
    }
    let mut names: Vec<String> = pairs.iter().map(|(l, _)| l.clone()).collect();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        bail!(
            "{}: {} labeled sentences of {} label(s); a probe needs at least two labels",
            path.display(),
            pairs.len(),
            names.len()
        );
    }
    let labels = pairs
        .iter()
        .map(|(l, _)| names.binary_search(l).expect("a collected label") as u32)
        .collect();
    let sentences = pairs.into_iter().map(|(_, s)| s).collect();
    Ok((sentences, labels, names))
}

/// The test accuracy of a probe on `x` at one label share: the mean and standard
/// deviation over `folds` k-fold folds (share 1) or over `folds` draws of a
/// class-balanced labeled subset of that share, tested on all the other sentences.
fn sentence_probe(
    x: &[f32],
    dim: usize,
    labels: &[u32],
    classes: usize,
    share: f64,
    folds: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let cfg = selfsup::eval::probe::ProbeConfig::default();
    let accs = if share >= 1.0 {
        selfsup::eval::probe::kfold_probe(x, labels.len(), dim, labels, classes, folds, seed, &cfg)?
            .fold_accuracy
    } else {
        let mut accs = Vec::new();
        for r in 0..folds as u64 {
            let train = selfsup::eval::probe::subsample_labels(labels, classes, share, seed ^ r)?;
            let mut is_train = vec![false; labels.len()];
            train.iter().for_each(|&i| is_train[i] = true);
            let test: Vec<usize> = (0..labels.len()).filter(|&i| !is_train[i]).collect();
            if test.is_empty() {
                bail!("a share of {share} leaves no sentence to test on");
            }
            let pick = |idx: &[usize]| -> Result<(Vec<f32>, Vec<u32>)> {
                Ok((
                    selfsup::eval::probe::select_rows(x, dim, idx)?,
                    idx.iter().map(|&i| labels[i]).collect(),
                ))
            };
            let (xtr, ytr) = pick(&train)?;
            let (xte, yte) = pick(&test)?;
            let report = selfsup::eval::probe::linear_probe(&xtr, &ytr, &xte, &yte, dim, classes, &cfg)?;
            accs.push(report.accuracy);
        }
        accs
    };
    let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
    let var = accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / accs.len().max(1) as f64;
    Ok((mean, var.sqrt()))
}

/// `selfsup probe --tsv`: logistic regression on the sentence representations of each
/// checkpoint (and of random encoders of the first one's architecture), at each label
/// share (100%: k-fold cross-validation as in SentEval; below: class-balanced labeled
/// subsets, the rest for testing, `folds` draws).
pub fn probe_sentences(
    checkpoints: &[PathBuf],
    tsv: &str,
    shares: &[f64],
    folds: usize,
    seed: u64,
    baselines: bool,
) -> Result<()> {
    let (sentences, labels, names) = if tsv == "builtin" {
        builtin_topic_sentences()
    } else {
        read_tsv(Path::new(tsv))?
    };
    let classes = names.len();
    // (name, features, (mean, std) per share)
    type Row = (String, usize, Vec<(f64, f64)>);
    let mut rows: Vec<Row> = Vec::new();
    let mut probe = |name: String, x: Vec<f32>, dim: usize| -> Result<()> {
        let mut cells = Vec::new();
        for &share in shares {
            let t0 = Instant::now();
            let (mean, std) = sentence_probe(&x, dim, &labels, classes, share, folds, seed)
                .with_context(|| format!("probing {name}"))?;
            eprintln!(
                "  probe {name}, {}% labels: {:.2}% in {:.1} s",
                100.0 * share,
                100.0 * mean,
                t0.elapsed().as_secs_f64()
            );
            cells.push((mean, std));
        }
        rows.push((name, dim, cells));
        Ok(())
    };
    for (k, path) in checkpoints.iter().enumerate() {
        let mut model = open_text_model(path, 256)?;
        if k == 0 && baselines {
            let e = &model.embedder;
            let mut random = SentenceEmbedder::new(e.config(), e.objective(), 256, seed)?;
            let x = random.embed_sentences(&model.vocab, &sentences)?;
            probe("random init".into(), x, random.dim())?;
        }
        let x = model.embedder.embed_sentences(&model.vocab, &sentences)?;
        let kind = format!("{:?}", model.embedder.config().kind).to_lowercase();
        probe(
            format!("{} ({kind})", super::probe::checkpoint_label(path)),
            x,
            model.embedder.dim(),
        )?;
    }
    println!(
        "linear probe on {tsv}: {} sentences, {classes} labels; test accuracy, mean and std over {folds} folds (100%) or {folds} labeled subsets",
        sentences.len()
    );
    let mut head = format!("{:<40} {:>8}", "representation", "features");
    for s in shares {
        head.push_str(&format!(" {:>17}", format!("{}% labels", 100.0 * s)));
    }
    println!("{head}");
    for (name, dim, cells) in &rows {
        let mut line = format!("{name:<40} {dim:>8}");
        for (mean, std) in cells {
            line.push_str(&format!(" {:>9.2}% ± {:>4.2}", 100.0 * mean, 100.0 * std));
        }
        println!("{line}");
    }
    Ok(())
}

/// Lines per chunk of `embed --sentences` (the features of one chunk are held at once).
const EMBED_CHUNK: usize = 4096;

/// The lines of a sentence file (`selfsup embed --sentences`): one sentence per line, a
/// blank line an empty sentence (so rows match lines).
pub fn read_sentence_lines(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

/// `selfsup embed --sentences`: `[f(s); g(s)]` of each line of `input` into `out` (.npy,
/// `lines x 2*features`), written atomically.
pub fn embed_sentences_file(
    checkpoint: &Path,
    input: &Path,
    out: &Path,
    batch: usize,
) -> Result<()> {
    let mut model = open_text_model(checkpoint, batch)?;
    let sentences = read_sentence_lines(input)?;
    if sentences.is_empty() {
        bail!("{}: no lines to embed", input.display());
    }
    let d = model.embedder.dim();
    super::embed::write_npy_streamed(out, &sentences, d, EMBED_CHUNK, |chunk, rows| {
        *rows = model.embedder.embed_sentences(&model.vocab, chunk)?;
        Ok(())
    })?;
    eprintln!(
        "{}: {} x {d} sentence representations of {}",
        out.display(),
        sentences.len(),
        input.display()
    );
    Ok(())
}

/// Scales each `d`-wide row of `x` to unit length (zero rows stay zero).
fn normalize_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if n > 0.0 {
            let s = (1.0 / n) as f32;
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// `selfsup neighbors`: the `k` sentences of the corpus nearest (by cosine of `[f; g]`) to
/// each query.
pub fn neighbors(
    checkpoint: &Path,
    data: Option<&str>,
    queries: &[String],
    k: usize,
) -> Result<()> {
    let mut model = open_text_model(checkpoint, 256)?;
    let spec = match (data, model.data.as_deref()) {
        (Some(d), _) => d.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => bail!(
            "{}: the checkpoint does not say its data; pass --data",
            checkpoint.display()
        ),
    };
    let text = load_text(&spec)?;
    let mut corpus: Vec<String> = text
        .train
        .into_iter()
        .chain(text.held_out)
        .flatten()
        .collect();
    corpus.sort();
    corpus.dedup();
    let d = model.embedder.dim();
    let t0 = Instant::now();
    let mut bank = model.embedder.embed_sentences(&model.vocab, &corpus)?;
    normalize_rows(&mut bank, d);
    let mut q = model.embedder.embed_sentences(&model.vocab, queries)?;
    normalize_rows(&mut q, d);
    eprintln!(
        "{} distinct sentences of {spec} embedded in {:.1} s",
        corpus.len(),
        t0.elapsed().as_secs_f64()
    );
    for (query, qv) in queries.iter().zip(q.chunks(d)) {
        let mut scored: Vec<(f32, usize)> = bank
            .chunks(d)
            .enumerate()
            .map(|(i, b)| (b.iter().zip(qv).map(|(x, y)| x * y).sum::<f32>(), i))
            .collect();
        let k = k.min(scored.len());
        // Highest cosine first; ties by corpus order (deterministic).
        scored.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        });
        scored.truncate(k);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        println!("{query}");
        for (rank, (cos, i)) in scored.iter().enumerate() {
            println!("  {:>2}. {cos:.3}  {}", rank + 1, corpus[*i]);
        }
    }
    Ok(())
}
