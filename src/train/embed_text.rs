//! The frozen sentence encoders of Quick Thoughts: a sentence's representation is
//! `[f(s); g(s)]` (`f(s)` alone for the single-encoder objective), computed in fixed-size
//! batches from a trainer's graph or a checkpoint; and a Quick Thoughts checkpoint opened
//! for use (its encoders, vocabulary and data spec, from the checkpoint's metadata alone).

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, Mode};
use crate::io::checkpoint::{self, CheckpointError};
use crate::nn::{QtObjective, SentenceEncoder, SentenceEncoderConfig};
use crate::rng::mix;
use crate::text::{Vocab, PAD};
use crate::train::embed::copy_by_name;
use crate::train::group::METHOD_KEY;

/// The text method's name in checkpoints and run folders.
pub const METHOD_NAME: &str = "quickthought";
/// Checkpoint metadata key of the encoder configuration (JSON).
pub const CONFIG_KEY: &str = "config";
/// Checkpoint metadata key of the objective (JSON: `"in-batch"` or `"pairwise"`).
pub const OBJECTIVE_KEY: &str = "objective";
/// Checkpoint metadata key of the vocabulary (JSON).
pub const VOCAB_KEY: &str = "vocab";

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "quick thoughts",
        msg,
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
        // It only embeds: no training plan.
        b.eval_only();
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

    /// The encoders of a trainer's graph `src` (its current weights, copied by name).
    ///
    /// # Errors
    /// As [`SentenceEmbedder::new`]; a graph without these encoders.
    pub fn from_graph(
        cfg: &SentenceEncoderConfig,
        objective: QtObjective,
        batch: usize,
        src: &Graph,
    ) -> Result<Self> {
        let mut e = Self::new(cfg, objective, batch, 0)?;
        copy_by_name(src, &mut e.graph)?;
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

/// A Quick Thoughts checkpoint opened for use: its encoders, vocabulary and data spec.
#[derive(Debug)]
pub struct TextModel {
    /// The frozen encoders.
    pub embedder: SentenceEmbedder,
    /// The vocabulary the encoders were trained with.
    pub vocab: Vocab,
    /// The data the run trained on, as the run named it.
    pub data: Option<String>,
}

/// Whether `path` is a checkpoint of the text method (read from its header's metadata; the
/// tensors are read and checked when the checkpoint is opened).
///
/// # Errors
/// An unreadable or corrupt file.
pub fn is_text_checkpoint(path: &Path) -> std::result::Result<bool, CheckpointError> {
    let meta = checkpoint::load_metadata(path)?;
    Ok(meta.get(METHOD_KEY).map(String::as_str) == Some(METHOD_NAME))
}

impl TextModel {
    /// Opens a checkpoint of a Quick Thoughts run, embedding `batch` sentences at a time.
    ///
    /// # Errors
    /// [`Error::Run`] naming the file: unreadable, corrupt, of another method, its metadata
    /// missing or malformed, its tensors of another architecture.
    pub fn open(path: &Path, batch: usize) -> Result<Self> {
        let at = |msg: String| Error::Run(format!("{}: {msg}", path.display()));
        let ck = checkpoint::load(path).map_err(Error::from)?;
        let meta = ck.metadata();
        if meta.get(METHOD_KEY).map(String::as_str) != Some(METHOD_NAME) {
            return Err(at(format!(
                "not a Quick Thoughts checkpoint (method '{}')",
                meta.get(METHOD_KEY).map_or("unknown", String::as_str)
            )));
        }
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| at(format!("no '{key}' in the checkpoint's metadata")))
        };
        let cfg: SentenceEncoderConfig = serde_json::from_str(get(CONFIG_KEY)?)
            .map_err(|e| at(format!("the encoder configuration is malformed: {e}")))?;
        let vocab =
            Vocab::from_json(get(VOCAB_KEY)?).map_err(|e| at(format!("the vocabulary: {e}")))?;
        if vocab.len() != cfg.vocab {
            return Err(at(format!(
                "the vocabulary has {} words, the encoder {}",
                vocab.len(),
                cfg.vocab
            )));
        }
        let objective: QtObjective = serde_json::from_str(get(OBJECTIVE_KEY)?)
            .map_err(|e| at(format!("the objective is malformed: {e}")))?;
        let data = meta.get("data").cloned();
        let embedder =
            SentenceEmbedder::from_loaded(&cfg, objective, batch, &ck).map_err(Error::from)?;
        Ok(Self {
            embedder,
            vocab,
            data,
        })
    }
}
