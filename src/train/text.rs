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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::checkpoint::{self, CheckpointError};
use crate::dist::{self, Collectives, SingleProcess};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, Mode};
use crate::kernels::contrastive::quickthought::qt_neighbor_targets;
use crate::nn::{
    quick_thoughts, quick_thoughts_in_batch_eval, QtObjective, QuickThoughtsModel, SentenceEncoder,
    SentenceEncoderConfig,
};
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig};
use crate::train::image::{copy_by_name, Group, StepStats};
use crate::rng::{mix, shuffle, SplitMix64};
use crate::text::{Vocab, PAD};
use crate::train::Metadata;

/// The method's name in checkpoints and run folders.
pub const METHOD_NAME: &str = "quickthought";

/// The fewest sentences per batch: with 4, every batch has a target pair and every
/// anchor a negative that is neither itself nor a neighbour.
pub const MIN_BATCH: usize = 4;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "quick thoughts",
        msg,
    }
}

/// Documents of sentences as token rows of `max_len` ids (row-major, [`PAD`]-padded).
#[derive(Clone, Debug)]
pub struct TokenizedCorpus {
    max_len: usize,
    tokens: Vec<u32>,
    /// The first sentence of each document, then the number of sentences.
    bounds: Vec<usize>,
    truncated: usize,
}

impl TokenizedCorpus {
    /// Tokenizes `documents` (each an ordered list of sentences) with `vocab`: sentences
    /// longer than `max_len` tokens keep their first `max_len` (counted in
    /// [`truncated`](Self::truncated)).
    ///
    /// # Errors
    /// `max_len == 0`.
    pub fn new<D, S>(documents: D, vocab: &Vocab, max_len: usize) -> Result<Self>
    where
        D: IntoIterator,
        D::Item: AsRef<[S]>,
        S: AsRef<str>,
    {
        if max_len == 0 {
            return Err(invalid("max_len must be positive".into()));
        }
        let mut tokens = Vec::new();
        let mut bounds = vec![0];
        let mut truncated = 0;
        let mut n = 0;
        for doc in documents {
            let doc = doc.as_ref();
            if doc.is_empty() {
                continue;
            }
            for s in doc {
                let ids = vocab.encode(s.as_ref(), max_len + 1);
                if ids.len() > max_len {
                    truncated += 1;
                }
                let keep = ids.len().min(max_len);
                tokens.extend_from_slice(&ids[..keep]);
                tokens.resize(tokens.len() + max_len - keep, PAD);
                n += 1;
            }
            bounds.push(n);
        }
        Ok(Self {
            max_len,
            tokens,
            bounds,
            truncated,
        })
    }

    /// Tokens per sentence.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The number of sentences.
    pub fn sentences(&self) -> usize {
        *self.bounds.last().unwrap_or(&0)
    }

    /// The number of (non-empty) documents.
    pub fn documents(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Sentences of document `d`: `start..end` indices.
    pub fn document(&self, d: usize) -> std::ops::Range<usize> {
        self.bounds[d]..self.bounds[d + 1]
    }

    /// Sentences that were longer than `max_len` tokens and were cut.
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    /// Sentence `i`'s `max_len` token ids.
    pub fn sentence(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.max_len..(i + 1) * self.max_len]
    }

    /// Every sentence's tokens, `sentences x max_len`.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Sentences in documents of at least two sentences (the ones with neighbours).
    pub fn trainable_sentences(&self) -> usize {
        (0..self.documents())
            .map(|d| self.document(d).len())
            .filter(|&l| l >= 2)
            .sum()
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
    opt: Optimizer,
    corpus: Arc<TokenizedCorpus>,
    step: u64,
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
    group: Group,
}

impl std::fmt::Debug for QtTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QtTrainer")
            .field("objective", &self.cfg.objective)
            .field("step", &self.step)
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
            opt,
            corpus,
            step: 0,
            docs,
            steps_per_epoch,
            group,
        })
    }

    /// The stream position of this rank's first sentence of step `step`.
    fn first_of(&self, step: u64) -> usize {
        let (b, ranks) = (self.cfg.batch, self.group.comm.size());
        (step % self.steps_per_epoch) as usize * b * ranks + self.group.comm.rank() * b
    }

    /// This process's rank in its data-parallel group (0 in a single process).
    pub fn rank(&self) -> usize {
        self.group.comm.rank()
    }

    /// The number of ranks (1 in a single process).
    pub fn ranks(&self) -> usize {
        self.group.comm.size()
    }

    /// Rank 0's `value`, on every rank (see [`crate::train::image::Pretrainer::root_value`]).
    ///
    /// # Errors
    /// A failed collective.
    pub fn root_value(&self, value: u64) -> Result<u64> {
        self.group.root_value(value)
    }

    /// The configuration.
    pub fn config(&self) -> &QtConfig {
        &self.cfg
    }

    /// Replaces the learning-rate schedule.
    pub fn set_schedule(&mut self, schedule: LrSchedule) {
        self.cfg.schedule = schedule;
    }

    /// The training graph (f, g and the loss).
    pub fn graph(&self) -> &Graph {
        &self.model.graph
    }

    /// Steps taken so far (the next step's index).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
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
        let (ranks, rank) = (self.group.comm.size(), self.group.comm.rank());
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
            let mut rng = SplitMix64::new(match self.group.comm.size() {
                1 => mix(self.cfg.seed, &[2, step]),
                _ => mix(self.cfg.seed, &[2, step, self.group.comm.rank() as u64]),
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

    /// One step: the batch of `self.step()`, forward, backward, the optimizer's update.
    /// Allocates nothing (once the epoch's stream is laid out).
    ///
    /// # Errors
    /// A non-finite loss (the weights are left as they were before the update).
    pub fn train_step(&mut self) -> Result<StepStats> {
        let on_pool = self.group.steps_on_pool();
        crate::train::image::run_step(on_pool, || self.train_step_here())
    }

    fn train_step_here(&mut self) -> Result<StepStats> {
        self.prepare_batch(self.step)?;
        let m = &mut self.model;
        let g = &mut m.graph;
        g.set_tokens(m.f.tokens, &self.ids)?;
        g.set_tokens(m.g.tokens, &self.ids)?;
        match self.cfg.objective {
            QtObjective::InBatch => g.set_targets(m.loss, &self.targets)?,
            QtObjective::Pairwise => g.set_triplets(m.loss, &self.triplets)?,
        }
        let step = self.step;
        let at_step = |e: Error| {
            invalid(format!(
                "at step {step}: {e}; training stopped (the last checkpoint is kept)"
            ))
        };
        let comm = &*self.group.comm;
        g.forward_with(Mode::Train, comm).map_err(at_step)?;
        let loss = g.loss_f64(m.loss);
        if !loss.is_finite() {
            return Err(invalid(format!(
                "the loss is {loss} at step {step}; training stopped (the last checkpoint is kept)"
            )));
        }
        let accuracy = g.accuracy(m.loss).map_or(f64::NAN, f64::from);
        g.backward_with(comm).map_err(at_step)?;
        self.group.sum_grads(g).map_err(at_step)?;
        let lr = self.cfg.schedule.lr(step);
        let (p, gr, groups) = g.params_and_grads();
        self.opt.step(p, gr, groups, lr).map_err(at_step)?;
        self.step += 1;
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

    /// Writes `ckpt-<step>.safetensors` into `dir` (both encoders, the optimizer state,
    /// `metadata` plus the step and the method), keeping the newest `keep_last`.
    ///
    /// # Errors
    /// As [`train::save_in`](crate::train::save_in).
    pub fn save_in(
        &self,
        dir: impl AsRef<Path>,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError> {
        self.group.save(
            dir.as_ref(),
            self.step,
            METHOD_NAME,
            &self.model.graph,
            &self.opt,
            metadata,
            keep_last,
        )
    }

    /// Continues from the newest checkpoint in `dir`, if there is one; returns its step.
    ///
    /// # Errors
    /// As [`train::load`](crate::train::load): another architecture or optimizer, another
    /// method, a corrupt file.
    pub fn resume_from(
        &mut self,
        dir: impl AsRef<Path>,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let resumed = self.group.resume(
            dir.as_ref(),
            METHOD_NAME,
            &mut self.model.graph,
            &mut self.opt,
        )?;
        if let Some(step) = resumed {
            self.step = step;
        }
        Ok(resumed)
    }
}

/// The frozen sentence encoders: a sentence's representation is `[f(s); g(s)]`
/// (`2 x feature_dim` values; `f(s)` alone for a single-encoder objective), computed
/// `batch` sentences at a time.
pub struct SentenceEmbedder {
    graph: Graph,
    f: SentenceEncoder,
    g: Option<SentenceEncoder>,
    cfg: SentenceEncoderConfig,
    objective: QtObjective,
    batch: usize,
    ids: Vec<u32>,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("cfg", &self.cfg)
            .field("objective", &self.objective)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl SentenceEmbedder {
    /// Randomly initialized encoders of `objective` (the random-init baseline).
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(
        cfg: &SentenceEncoderConfig,
        objective: QtObjective,
        batch: usize,
        seed: u64,
    ) -> Result<Self> {
        let batch = batch.max(1);
        let mut b = GraphBuilder::new();
        let f = crate::nn::sentence_encoder(&mut b, "f", cfg, batch)?;
        let g = if objective.encoders() == 2 {
            Some(crate::nn::sentence_encoder(&mut b, "g", cfg, batch)?)
        } else {
            None
        };
        let graph = b.build(mix(seed, &[0]))?;
        Ok(Self {
            graph,
            f,
            g,
            cfg: cfg.clone(),
            objective,
            batch,
            ids: vec![PAD; batch * cfg.max_len],
        })
    }

    /// The encoders of a trainer's current weights.
    ///
    /// # Errors
    /// As [`SentenceEmbedder::new`].
    pub fn from_trainer(trainer: &QtTrainer, batch: usize) -> Result<Self> {
        let mut e = Self::new(&trainer.cfg.encoder, trainer.cfg.objective, batch, 0)?;
        copy_by_name(&trainer.model.graph, &mut e.graph)?;
        Ok(e)
    }

    /// The encoders stored in a checkpoint of `cfg` and `objective` (the optimizer state
    /// is ignored; every encoder tensor must be there with its shape).
    ///
    /// # Errors
    /// A checkpoint that is unreadable, corrupt or of another architecture.
    pub fn from_checkpoint(
        cfg: &SentenceEncoderConfig,
        objective: QtObjective,
        batch: usize,
        path: impl AsRef<Path>,
    ) -> std::result::Result<Self, CheckpointError> {
        Self::from_loaded(cfg, objective, batch, &checkpoint::load(path)?)
    }

    /// As [`from_checkpoint`](Self::from_checkpoint), from a checkpoint already read (to
    /// read its metadata first, for example).
    ///
    /// # Errors
    /// A checkpoint of another architecture.
    pub fn from_loaded(
        cfg: &SentenceEncoderConfig,
        objective: QtObjective,
        batch: usize,
        ck: &checkpoint::Checkpoint,
    ) -> std::result::Result<Self, CheckpointError> {
        let mut e = Self::new(cfg, objective, batch, 0).map_err(|err| {
            CheckpointError::InvalidArgument {
                path: ck.path().to_path_buf(),
                reason: err.to_string(),
            }
        })?;
        let params: Vec<_> = e.graph.param_info().to_vec();
        for p in &params {
            ck.copy_into(
                &p.name,
                &p.shape,
                &mut e.graph.params_mut()[p.range.clone()],
            )?;
        }
        Ok(e)
    }

    /// The encoder configuration.
    pub fn config(&self) -> &SentenceEncoderConfig {
        &self.cfg
    }

    /// The objective the encoders were made for.
    pub fn objective(&self) -> QtObjective {
        self.objective
    }

    /// The width of a representation: `[f(s); g(s)]`, or `f(s)`.
    pub fn dim(&self) -> usize {
        self.objective.encoders() * self.cfg.feature_dim()
    }

    /// The representations of `n` sentences given as token rows (`n x max_len`, each
    /// [`PAD`]-padded) into `out` (`n x dim`).
    ///
    /// # Errors
    /// Wrong lengths, or a token id outside the vocabulary.
    pub fn embed_tokens(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        let l = self.cfg.max_len;
        let d = self.cfg.feature_dim();
        let dim = self.dim();
        if !tokens.len().is_multiple_of(l) || out.len() != tokens.len() / l * dim {
            return Err(invalid(format!(
                "{} token ids and {} outputs for sentences of {l} tokens and representations of {dim}",
                tokens.len(),
                out.len(),
            )));
        }
        for (chunk, o) in tokens
            .chunks(self.batch * l)
            .zip(out.chunks_mut(self.batch * dim))
        {
            let rows = chunk.len() / l;
            self.ids[..chunk.len()].copy_from_slice(chunk);
            // A short last batch: the unused rows are padding and their outputs dropped.
            self.ids[chunk.len()..].fill(PAD);
            self.graph.set_tokens(self.f.tokens, &self.ids)?;
            self.graph.forward_to(self.f.h, Mode::Eval)?;
            if let Some(g) = self.g {
                self.graph.set_tokens(g.tokens, &self.ids)?;
                self.graph.forward_to(g.h, Mode::Eval)?;
            }
            let fv = self.graph.value(self.f.h);
            for r in 0..rows {
                o[r * dim..r * dim + d].copy_from_slice(&fv[r * d..(r + 1) * d]);
            }
            if let Some(g) = self.g {
                let gv = self.graph.value(g.h);
                for r in 0..rows {
                    o[r * dim + d..(r + 1) * dim].copy_from_slice(&gv[r * d..(r + 1) * d]);
                }
            }
        }
        Ok(())
    }

    /// The representations of `sentences` (tokenized with `vocab`, truncated to
    /// `max_len` tokens), `sentences.len() x dim`.
    ///
    /// # Errors
    /// A vocabulary larger than the encoder's.
    pub fn embed_sentences<S: AsRef<str>>(
        &mut self,
        vocab: &Vocab,
        sentences: &[S],
    ) -> Result<Vec<f32>> {
        if vocab.len() > self.cfg.vocab {
            return Err(invalid(format!(
                "the vocabulary has {} words, the encoder {}",
                vocab.len(),
                self.cfg.vocab
            )));
        }
        let l = self.cfg.max_len;
        let mut tokens = vec![PAD; sentences.len() * l];
        for (s, row) in sentences.iter().zip(tokens.chunks_mut(l)) {
            let ids = vocab.encode(s.as_ref(), l);
            row[..ids.len()].copy_from_slice(&ids);
        }
        let mut out = vec![0.0; sentences.len() * self.dim()];
        self.embed_tokens(&tokens, &mut out)?;
        Ok(out)
    }
}
