//! Documents of sentences as fixed-length token rows: each sentence tokenized with a
//! [`Vocab`], truncated to `max_len` tokens and padded with [`PAD`], the documents'
//! boundaries kept; and the default `max_len`, the 99th percentile of the sentences' lengths.

use crate::error::{Error, Result};

use super::vocab::{Vocab, PAD};

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "quick thoughts",
        msg,
    }
}

/// The default `max_len` of `docs`: the 99th percentile of the sentences' token counts,
/// from 4 to 64 (a static graph pays for every position, so the padding of a generous
/// bound costs as much as tokens); with [`Subwords`](super::Subwords), of their id counts
/// (each token's id and its n-grams'), from 4 to [`MAX_SUBWORD_LEN`].
pub fn default_max_len(docs: &[Vec<String>], vocab: &Vocab) -> usize {
    let cap = if vocab.subwords().is_some() {
        MAX_SUBWORD_LEN
    } else {
        64
    };
    let mut lens: Vec<usize> = docs
        .iter()
        .flatten()
        .map(|s| vocab.encode(s, cap + 1).len())
        .collect();
    if lens.is_empty() {
        return 4;
    }
    let k = (lens.len() - 1) * 99 / 100;
    let (_, p99, _) = lens.select_nth_unstable(k);
    (*p99).clamp(4, cap)
}

/// The largest default `max_len` with subword units (ids per sentence).
pub const MAX_SUBWORD_LEN: usize = 1024;

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
