//! Quick Thoughts training (Logeswaran and Lee, ICLR 2018): sentence encoders f and g
//! learned from the order of sentences in unlabeled documents.
//!
//! - [`TokenizedCorpus`]: documents of sentences as fixed-length token rows (truncated to
//!   `max_len` tokens, padded with [`PAD`]), built once.
//! - [`QtTrainer`]: batches of `batch` contiguous sentences of a stream that concatenates
//!   the documents in an order drawn per epoch from the seed; the targets of a sentence
//!   are its previous and next sentence in its document (never across a document
//!   boundary). Two objectives: the paper's in-batch classification with two encoders f
//!   and g ([`QtObjective::InBatch`]) and the lecture notes' pairwise logistic form with
//!   one encoder f ([`QtObjective::Pairwise`]), one random in-batch negative per target
//!   pair. Batches are made in place from the
//!   step's index, so a step allocates nothing and a resumed run sees the same batches.
//! - [`SentenceEmbedder`]: the frozen encoders; a sentence's representation is
//!   `[f(s); g(s)]`, as in the paper (`f(s)` for the single-encoder pairwise objective).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dist::{self, Collectives, SingleProcess};
use crate::error::{Error, Result};
use crate::graph::{Graph, Mode};
use crate::kernels::contrastive::quickthought::qt_neighbor_targets;
use crate::nn::{
    quick_thoughts, quick_thoughts_in_batch_eval, quick_thoughts_in_batch_eval_memory,
    quick_thoughts_memory, QtObjective, QuickThoughtsModel, SentenceEncoderConfig,
};
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig};
use crate::rng::{mix, shuffle, SplitMix64};
pub use crate::text::TokenizedCorpus;
use crate::text::{Vocab, PAD};
use crate::train::core::{at_step, non_finite, Core};
use crate::train::embed::copy_by_name;
pub use crate::train::embed_text::{
    is_text_checkpoint, SentenceEmbedder, TextModel, CONFIG_KEY, METHOD_NAME, OBJECTIVE_KEY,
    VOCAB_KEY,
};
use crate::train::group::{run_step, Group};
use crate::train::memory::MemoryPlan;
use crate::train::method::{Method, MonitorKind, StepStats, Unit};
use crate::train::state::Metadata;

/// The in-batch temperature when none is given: logits `f(s) . g(c) / 50`. Measured on
/// the built-in corpus (docs/results.md, "Quick Thoughts against the bag of words"): the
/// paper's plain inner products (temperature 1) probe 80.5% at 0.5% of the labels after
/// 3,000 steps of the CNN, temperature 50 86.2%; the bag of words gains as much in the
/// same time.
pub const QT_TEMPERATURE: f32 = 50.0;

/// The run folder's copy of the vocabulary.
pub const VOCAB_FILE: &str = "vocab.json";

/// The fewest seconds between two runs of the held-out monitor during training.
const MONITOR_SECONDS: f64 = 15.0;

/// The fewest sentences per batch: with 4, every batch has a target pair and every
/// anchor a negative that is neither itself nor a neighbour.
pub const MIN_BATCH: usize = 4;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "quick thoughts",
        msg,
    }
}

/// The configuration of a Quick Thoughts run.
#[derive(Clone, Debug)]
pub struct QtConfig {
    /// Each of the two encoders f and g.
    pub encoder: SentenceEncoderConfig,
    /// Contiguous sentences per step (at least [`MIN_BATCH`]).
    pub batch: usize,
    pub objective: QtObjective,
    /// The in-batch objective's temperature: its logits are `f(s) . g(c) / temperature`
    /// (the paper: 1). Positive and finite; the pairwise objective does not use it.
    pub temperature: f32,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    /// Seed of the weights, the document order and the negatives.
    pub seed: u64,
}

/// One step's batch, as [`QtTrainer::batch`] shows it.
#[derive(Clone, Copy, Debug)]
pub struct QtBatchView<'a> {
    /// Corpus sentence indices, in batch order (contiguous runs of documents).
    pub sentences: &'a [usize],
    /// `(anchor, candidate)` rows of the batch: each sentence's previous and next.
    pub targets: &'a [(u32, u32)],
    /// `(anchor, positive, negative)` rows (pairwise objective; empty otherwise).
    pub triplets: &'a [(u32, u32, u32)],
}

/// A Quick Thoughts run in memory.
pub struct QtTrainer {
    cfg: QtConfig,
    model: QuickThoughtsModel,
    core: Core,
    corpus: Arc<TokenizedCorpus>,
    /// The held-out documents of the monitor.
    held_out: Option<TokenizedCorpus>,
    /// The vocabulary's JSON (checkpoint metadata and the run folder's `vocab.json`).
    vocab_json: Option<String>,
    /// The documents that train (two sentences or more).
    docs: Vec<usize>,
    steps_per_epoch: u64,
    /// The epoch whose stream is in `stream` / `stream_start`.
    stream_epoch: Option<u64>,
    /// Sentence indices of the epoch's stream and whether each begins a document.
    stream: Vec<usize>,
    stream_start: Vec<bool>,
    // Per-step scratch, reused.
    ids: Vec<u32>,
    starts: Vec<usize>,
    targets: Vec<(u32, u32)>,
    triplets: Vec<(u32, u32, u32)>,
    /// Data-parallel: the targets of the whole step's window, before this rank's are kept.
    window_targets: Vec<(u32, u32)>,
}

impl std::fmt::Debug for QtTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QtTrainer")
            .field("objective", &self.cfg.objective)
            .field("step", &self.core.step())
            .finish_non_exhaustive()
    }
}

impl QtTrainer {
    /// Builds the encoders, the loss and the optimizer for `corpus`.
    ///
    /// # Errors
    /// An invalid configuration, a batch below [`MIN_BATCH`], a corpus whose `max_len`
    /// differs from the encoder's or with fewer trainable sentences (in documents of two
    /// or more) than one batch.
    pub fn new(cfg: QtConfig, corpus: Arc<TokenizedCorpus>) -> Result<Self> {
        Self::in_group(cfg, corpus, Box::new(SingleProcess))
    }

    /// One rank of a data-parallel run over the group `comm` (see [`crate::dist`]): each
    /// step's stream of `size() * cfg.batch` contiguous sentences is cut into one run of
    /// `cfg.batch` per rank, in rank order; each rank's targets are its own sentences'
    /// neighbours in the whole window (a neighbour held by the previous or next rank
    /// included: the in-batch objective scores every rank's candidates, so a step is the
    /// one-process batch's; the pairwise objective, whose negatives stay in the rank's
    /// batch, leaves those pairs out), the loss is the mean over the whole group's target
    /// pairs, and the gradients are summed over the ranks before each update.
    ///
    /// # Errors
    /// As [`QtTrainer::new`] (the corpus must hold one global batch); ranks whose
    /// configuration or corpus differ from rank 0's (an error on every rank).
    pub fn in_group(
        cfg: QtConfig,
        corpus: Arc<TokenizedCorpus>,
        comm: Box<dyn Collectives>,
    ) -> Result<Self> {
        let group = Group::join(comm, "configuration or corpus", || {
            let tokens = corpus.tokens();
            format!(
                "{cfg:?} corpus {} {} {:016x}",
                corpus.sentences(),
                corpus.documents(),
                dist::content_hash([bytemuck::cast_slice::<u32, u8>(
                    &tokens[..tokens.len().min(4096)]
                )])
            )
        })?;
        cfg.encoder.validate()?;
        if cfg.batch < MIN_BATCH {
            return Err(invalid(format!(
                "a batch needs at least {MIN_BATCH} sentences, got {}",
                cfg.batch
            )));
        }
        if corpus.max_len() != cfg.encoder.max_len {
            return Err(invalid(format!(
                "the corpus has {} tokens per sentence, the encoder takes {}",
                corpus.max_len(),
                cfg.encoder.max_len
            )));
        }
        if let Some(&t) = corpus
            .tokens()
            .iter()
            .find(|&&t| t as usize >= cfg.encoder.vocab)
        {
            return Err(invalid(format!(
                "token id {t} is outside the encoder's vocabulary of {}",
                cfg.encoder.vocab
            )));
        }
        let docs: Vec<usize> = (0..corpus.documents())
            .filter(|&d| corpus.document(d).len() >= 2)
            .collect();
        let trainable = corpus.trainable_sentences();
        let ranks = group.comm.size();
        let global = cfg.batch.saturating_mul(ranks);
        if trainable < global {
            return Err(invalid(format!(
                "the corpus has {trainable} sentences in documents of two or more sentences \
                 ({} documents, {} sentences in all); one batch takes {global}",
                corpus.documents(),
                corpus.sentences(),
            )));
        }
        // `quick_thoughts` refuses a temperature that is not positive and finite.
        let model = quick_thoughts(
            &cfg.encoder,
            cfg.batch,
            cfg.objective,
            cfg.temperature,
            mix(cfg.seed, &[0]),
        )?;
        let opt = Optimizer::new(cfg.optimizer, model.graph.params().len())?;
        let core = Core::new(METHOD_NAME, "quick thoughts", group, opt, cfg.schedule);
        let steps_per_epoch = (trainable / global) as u64;
        Ok(Self {
            ids: vec![PAD; cfg.batch * cfg.encoder.max_len],
            starts: Vec::with_capacity(cfg.batch),
            targets: Vec::with_capacity(2 * cfg.batch),
            window_targets: Vec::with_capacity(2 * global),
            triplets: Vec::with_capacity(2 * cfg.batch),
            stream: Vec::with_capacity(trainable),
            stream_start: Vec::with_capacity(trainable),
            stream_epoch: None,
            cfg,
            model,
            core,
            corpus,
            held_out: None,
            vocab_json: None,
            docs,
            steps_per_epoch,
        })
    }

    /// The memory a run of `cfg` on `corpus` takes at its peak in this process, from the
    /// plan of its graph, before anything large is allocated ([`QtTrainer::new`] allocates
    /// it): the activations and their gradients (they grow with the batch and the sentence
    /// length), the parameters (the vocabulary times the embedding width, and the
    /// convolution), their gradients and the optimizer's state, the epoch's stream of
    /// sentences, with `held_out` (what [`QtTrainer::with_monitor`] takes) the monitor's
    /// evaluation graph, and the corpora, already loaded. Check it with
    /// [`MemoryPlan::check`].
    ///
    /// # Errors
    /// An invalid configuration (as [`QtTrainer::new`]).
    pub fn memory_plan(
        cfg: &QtConfig,
        corpus: &TokenizedCorpus,
        held_out: Option<&TokenizedCorpus>,
    ) -> Result<MemoryPlan> {
        cfg.encoder.validate()?;
        let threads = rayon::current_num_threads();
        let (b, e) = (cfg.batch, &cfg.encoder);
        let graph = quick_thoughts_memory(e, b, cfg.objective, threads)?;
        let mut plan = MemoryPlan::default();
        plan.add_graph(
            "",
            &graph,
            &format!(
                "grows with the batch and the sentence length: {b} sentences of {} tokens",
                e.max_len
            ),
            true,
        );
        plan.add_optimizer(&cfg.optimizer, graph.param_count);
        // Each trainable sentence's index and whether it starts a document, the step's
        // token rows and targets.
        let trainable = corpus.trainable_sentences() as u64;
        let step = (b as u64)
            .saturating_mul(e.max_len as u64)
            .saturating_add(6 * b as u64)
            .saturating_mul(4);
        plan.add(
            "sentence stream",
            format!("{trainable} sentences in epoch order"),
            trainable.saturating_mul(9).saturating_add(step),
        );
        if let Some(h) = held_out.filter(|h| h.sentences() >= b) {
            let eval = quick_thoughts_in_batch_eval_memory(e, b, cfg.objective, threads)?;
            plan.add(
                "held-out monitor",
                format!("an evaluation graph of {b} sentences"),
                eval.activations
                    .saturating_add(eval.params)
                    .saturating_add(eval.buffers)
                    .saturating_add(4 * h.sentences() as u64),
            );
        }
        let stored = |c: &TokenizedCorpus| {
            (c.tokens().len() as u64)
                .saturating_mul(4)
                .saturating_add(8 * (c.documents() as u64 + 1))
        };
        let mut corpora = stored(corpus);
        if let Some(h) = held_out {
            corpora = corpora.saturating_add(stored(h));
        }
        plan.add_loaded(
            "corpus",
            format!("{} sentences", corpus.sentences()),
            corpora,
        );
        Ok(plan)
    }

    /// The stream position of this rank's first sentence of step `step`.
    fn first_of(&self, step: u64) -> usize {
        let (b, ranks) = (self.cfg.batch, self.core.ranks());
        (step % self.steps_per_epoch) as usize * b * ranks + self.core.rank() * b
    }

    /// The held-out monitor on `held_out` (documents not trained on; see
    /// [`Method::monitor`]); a corpus smaller than one batch gives none.
    pub fn with_monitor(mut self, held_out: TokenizedCorpus) -> Self {
        self.held_out = Some(held_out);
        self
    }

    /// The vocabulary the corpus was tokenized with, recorded in every checkpoint and in
    /// the run folder's `vocab.json` (what embedding new sentences needs).
    pub fn with_vocab(mut self, vocab: &Vocab) -> Self {
        self.vocab_json = Some(vocab.to_json());
        self
    }

    /// The configuration (its schedule is the one the run started with).
    pub fn config(&self) -> &QtConfig {
        &self.cfg
    }

    /// The corpus it trains on.
    pub fn corpus(&self) -> &TokenizedCorpus {
        &self.corpus
    }

    /// Lays out epoch `epoch`'s stream: the trainable documents in an order drawn from the
    /// seed and the epoch, concatenated. Reuses the buffers (no allocation).
    fn prepare_epoch(&mut self, epoch: u64) {
        if self.stream_epoch == Some(epoch) {
            return;
        }
        // From the sorted list each time, so the order depends on the epoch only.
        self.docs.sort_unstable();
        shuffle(&mut self.docs, mix(self.cfg.seed, &[1, epoch]));
        self.stream.clear();
        self.stream_start.clear();
        for &d in &self.docs {
            let r = self.corpus.document(d);
            let first = r.start;
            for i in r {
                self.stream.push(i);
                self.stream_start.push(i == first);
            }
        }
        self.stream_epoch = Some(epoch);
    }

    /// Fills the token rows, the targets and (pairwise) the triplets of step `step`.
    fn prepare_batch(&mut self, step: u64) -> Result<()> {
        let epoch = step / self.steps_per_epoch;
        self.prepare_epoch(epoch);
        let b = self.cfg.batch;
        let l = self.cfg.encoder.max_len;
        let p0 = self.first_of(step);
        for k in 0..b {
            let i = self.stream[p0 + k];
            self.ids[k * l..(k + 1) * l].copy_from_slice(self.corpus.sentence(i));
        }
        // The targets over the whole step's window of `ranks * b` sentences (one process:
        // this batch), kept for this rank's anchors: anchors numbered in this batch,
        // candidates in the window (the order in which the ranks' rows are gathered), so a
        // neighbour held by the next or previous rank is a target too.
        let (ranks, rank) = (self.core.ranks(), self.core.rank());
        let w0 = p0 - rank * b;
        self.starts.clear();
        for k in 1..ranks * b {
            if self.stream_start[w0 + k] {
                self.starts.push(k);
            }
        }
        if ranks == 1 {
            qt_neighbor_targets(b, 0, &self.starts, &mut self.targets)?;
        } else {
            qt_neighbor_targets(ranks * b, 0, &self.starts, &mut self.window_targets)?;
            let mine = (rank * b) as u32..((rank + 1) * b) as u32;
            self.targets.clear();
            for &(i, j) in &self.window_targets {
                if mine.contains(&i) {
                    self.targets.push((i - mine.start, j));
                }
            }
        }
        if self.cfg.objective == QtObjective::Pairwise {
            // One negative per target pair: a sentence of the batch that is neither the
            // anchor nor one of its neighbours (drawn from the seed and the step).
            let mut rng = SplitMix64::new(match self.core.ranks() {
                1 => mix(self.cfg.seed, &[2, step]),
                _ => mix(self.cfg.seed, &[2, step, self.core.rank() as u64]),
            });
            self.triplets.clear();
            // The pairwise loss scores this rank's rows only: a neighbour held by another
            // rank is left out, the others renumbered into the batch.
            let off = (rank * b) as u32;
            for (t, &(i, j)) in self.targets.iter().enumerate() {
                if !(off..off + b as u32).contains(&j) {
                    continue;
                }
                // The anchor's targets are adjacent in `targets` (anchors ascending).
                let is_target = |c: u32| {
                    self.targets[t.saturating_sub(1)..(t + 2).min(self.targets.len())]
                        .iter()
                        .any(|&(a, p)| a == i && p == c + off)
                };
                let neg = loop {
                    let c = rng.below(b) as u32;
                    if c != i && !is_target(c) {
                        break c;
                    }
                };
                self.triplets.push((i, j - off, neg));
            }
        }
        Ok(())
    }

    /// What step `step` trains on (for inspection and tests; training makes the same
    /// batch itself): the corpus indices of its sentences, in batch order, its target
    /// pairs (rows of the batch) and, for the pairwise objective, its triplets.
    ///
    /// # Errors
    /// None in practice (the targets' builder checks its input).
    pub fn batch(&mut self, step: u64) -> Result<QtBatchView<'_>> {
        self.prepare_batch(step)?;
        let p0 = self.first_of(step);
        Ok(QtBatchView {
            sentences: &self.stream[p0..p0 + self.cfg.batch],
            targets: &self.targets,
            triplets: if self.cfg.objective == QtObjective::Pairwise {
                &self.triplets
            } else {
                &[]
            },
        })
    }

    fn train_here(&mut self) -> Result<StepStats> {
        let step = self.core.step();
        self.prepare_batch(step)?;
        let m = &mut self.model;
        let g = &mut m.graph;
        g.set_tokens(m.f.tokens, &self.ids)?;
        g.set_tokens(m.g.tokens, &self.ids)?;
        match self.cfg.objective {
            QtObjective::InBatch => g.set_targets(m.loss, &self.targets)?,
            QtObjective::Pairwise => g.set_triplets(m.loss, &self.triplets)?,
        }
        let at_step = |e: Error| at_step("quick thoughts", step, e);
        g.forward_with(Mode::Train, self.core.comm())
            .map_err(at_step)?;
        let loss = g.loss_f64(m.loss);
        if !loss.is_finite() {
            return Err(non_finite("quick thoughts", loss, step));
        }
        let accuracy = g.accuracy(m.loss).map_or(f64::NAN, f64::from);
        g.backward_with(self.core.comm()).map_err(at_step)?;
        let lr = self.core.update(g)?;
        Ok(StepStats {
            step,
            epoch: step / self.steps_per_epoch,
            loss,
            accuracy,
            lr,
        })
    }

    /// The in-batch previous/next accuracy of the current encoders on `corpus` (e.g.
    /// held-out documents), over its batches of contiguous sentences in document order.
    /// The in-batch classification's measure for either objective: a target counts when
    /// it ranks within the anchor's top `K` (its number of targets) of `f(s) . g(c)`.
    ///
    /// # Errors
    /// A corpus of another `max_len` or vocabulary, or fewer sentences than one batch.
    pub fn neighbour_accuracy(&self, corpus: &TokenizedCorpus) -> Result<f64> {
        let b = self.cfg.batch;
        let mut eval = quick_thoughts_in_batch_eval(&self.cfg.encoder, b, self.cfg.objective)?;
        copy_by_name(&self.model.graph, &mut eval.graph)?;
        if corpus.max_len() != self.cfg.encoder.max_len || corpus.sentences() < b {
            return Err(invalid(format!(
                "the evaluation corpus has {} sentences of {} tokens; the model takes batches of {b} of {}",
                corpus.sentences(),
                corpus.max_len(),
                self.cfg.encoder.max_len
            )));
        }
        let starts_all: Vec<usize> = (0..corpus.documents())
            .map(|d| corpus.document(d).start)
            .collect();
        let (mut hits, mut total) = (0.0, 0.0);
        let mut targets = Vec::new();
        for b0 in (0..=corpus.sentences() - b).step_by(b) {
            let local: Vec<usize> = starts_all
                .iter()
                .filter(|&&s| s > b0 && s < b0 + b)
                .map(|&s| s - b0)
                .collect();
            qt_neighbor_targets(b, 0, &local, &mut targets)?;
            if targets.is_empty() {
                continue;
            }
            let ids = &corpus.tokens()[b0 * corpus.max_len()..(b0 + b) * corpus.max_len()];
            eval.graph.set_tokens(eval.f.tokens, ids)?;
            eval.graph.set_tokens(eval.g.tokens, ids)?;
            eval.graph.set_targets(eval.loss, &targets)?;
            eval.graph.forward(Mode::Eval)?;
            let acc = f64::from(eval.graph.accuracy(eval.loss).unwrap_or(0.0));
            hits += acc * targets.len() as f64;
            total += targets.len() as f64;
        }
        Ok(if total > 0.0 { hits / total } else { f64::NAN })
    }
}

/// What `config.json` records of a Quick Thoughts run besides its settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextRecord {
    /// Each encoder.
    pub encoder: SentenceEncoderConfig,
    /// The objective.
    pub objective: QtObjective,
    /// The in-batch logits' temperature (absent in runs of versions before it: 1).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Training documents.
    #[serde(default)]
    pub train_documents: usize,
    /// Training sentences.
    #[serde(default)]
    pub train_sentences: usize,
    /// Sentences cut to `max_len` tokens.
    #[serde(default)]
    pub truncated_sentences: usize,
}

impl Method for QtTrainer {
    type Embedder = SentenceEmbedder;
    type Record = TextRecord;

    fn core(&self) -> &Core {
        &self.core
    }

    fn parts_mut(&mut self) -> (&mut Core, &mut Graph) {
        (&mut self.core, &mut self.model.graph)
    }

    fn graph(&self) -> &Graph {
        &self.model.graph
    }

    fn unit(&self) -> Unit {
        Unit::Sentences
    }

    fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// One step: the batch of `step()`, forward, backward, the optimizer's update.
    /// Allocates nothing (once the epoch's stream is laid out).
    fn train_step(&mut self) -> Result<StepStats> {
        let on_pool = self.core.steps_on_pool();
        run_step(on_pool, || self.train_here())
    }

    /// The held-out previous/next accuracy ([`QtTrainer::neighbour_accuracy`]).
    fn monitor(&self) -> Result<Option<f64>> {
        match &self.held_out {
            Some(h) if h.sentences() >= self.cfg.batch => Ok(Some(self.neighbour_accuracy(h)?)),
            _ => Ok(None),
        }
    }

    fn monitor_kind(&self) -> MonitorKind {
        MonitorKind {
            key: "held_out_neighbour_accuracy",
            label: "held-out previous/next accuracy",
            min_seconds: MONITOR_SECONDS,
        }
    }

    /// Two: the first steps of a bag of words are far from its pace.
    fn budget_fits(&self) -> u8 {
        2
    }

    fn describe(&self) -> Option<String> {
        let c = &self.corpus;
        Some(format!(
            "quick thoughts ({:?} encoder, {:?} objective): {} training documents, {} \
             sentences ({} cut to {} tokens), vocabulary {} words, {} steps per epoch",
            self.cfg.encoder.kind,
            self.cfg.objective,
            c.documents(),
            c.sentences(),
            c.truncated(),
            c.max_len(),
            self.cfg.encoder.vocab,
            self.steps_per_epoch
        ))
    }

    fn checkpoint_metadata(&self) -> Metadata {
        let mut meta = Metadata::new();
        let encoder = serde_json::to_string(&self.cfg.encoder).unwrap_or_default();
        let objective = serde_json::to_string(&self.cfg.objective).unwrap_or_default();
        meta.insert(CONFIG_KEY.into(), encoder);
        meta.insert(OBJECTIVE_KEY.into(), objective);
        if let Some(v) = &self.vocab_json {
            meta.insert(VOCAB_KEY.into(), v.clone());
        }
        meta
    }

    fn record(&self) -> TextRecord {
        TextRecord {
            encoder: self.cfg.encoder.clone(),
            objective: self.cfg.objective,
            temperature: Some(self.cfg.temperature),
            train_documents: self.corpus.documents(),
            train_sentences: self.corpus.sentences(),
            truncated_sentences: self.corpus.truncated(),
        }
    }

    fn run_files(&self) -> Vec<(&'static str, String)> {
        self.vocab_json
            .iter()
            .map(|v| (VOCAB_FILE, v.clone()))
            .collect()
    }

    fn embedder(&self, batch: usize) -> Result<SentenceEmbedder> {
        let cfg = &self.cfg;
        SentenceEmbedder::from_graph(&cfg.encoder, cfg.objective, batch, &self.model.graph)
    }
}
