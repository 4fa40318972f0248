//! Text input for the sentence-level method (Quick Thoughts, Logeswaran and Lee 2018):
//! documents in, sentences and token ids out.
//!
//! Quick Thoughts learns sentence representations by asking an encoder to pick a
//! sentence's neighbours in its document out of the other sentences of a batch, so its
//! input is a list of documents, each an ordered list of sentences. This module makes that
//! input, in four pieces, and two more beside them:
//!
//! - [`split`]: [`split_sentences`] cuts one document's raw text into sentences (rule-based:
//!   terminators, abbreviations, decimals, quotes, paragraphs; never panics).
//! - [`read`]: [`read_corpus`] reads a UTF-8 file or a folder of them into
//!   [`Document`]s, with typed [`DataError`](crate::data::DataError)s naming the file at
//!   fault (not UTF-8, too large, no usable text).
//! - [`corpus`]: [`builtin_corpus`] generates a topic-labeled corpus in code from a seed (the
//!   default data: no download), whose adjacent sentences share a topic and follow a
//!   script, so the task has signal and the topic labels allow a linear probe.
//! - [`vocab`]: [`tokenize`] cuts a sentence into lowercase word and punctuation tokens and
//!   [`Vocab`] maps them to ids (built from a corpus with a minimum count and a size cap,
//!   saved and loaded as validated JSON).
//! - [`tsv`]: [`read_labeled_tsv`] reads labeled sentences (`label<TAB>sentence` lines),
//!   the input of the sentence probe, with errors naming the file and the line.
//! - [`tfidf`]: [`TfIdf`] turns sentences into tf-idf word-count rows of the same tokens,
//!   the baseline of the sentence probe that needs no pretraining.
//!
//! ```
//! use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
//!
//! let docs = builtin_corpus(&CorpusConfig { documents: 16, seed: 7 });
//! let vocab = Vocab::build(docs.iter().flat_map(|d| &d.sentences), 1, 10_000)?;
//! let ids = vocab.encode(&docs[0].sentences[0], 32);
//! assert!(!ids.is_empty() && ids.len() <= 32);
//! # Ok::<(), selfsup::Error>(())
//! ```

pub mod corpus;
pub mod data;
pub mod read;
pub mod split;
pub mod tfidf;
pub mod tokens;
pub mod tsv;
pub mod vocab;

pub use corpus::{
    builtin_corpus, builtin_document, topic_of, CorpusConfig, LabeledDocument, TOPICS,
};
pub use data::{builtin_held_out, builtin_topic_sentences, TextData};
pub use read::{
    parse_corpus, parse_text, read_corpus, read_corpus_report, read_text, CorpusReport, Document,
};
pub use split::{split_sentences, MAX_SENTENCE_CHARS};
pub use tfidf::TfIdf;
pub use tokens::{default_max_len, TokenizedCorpus};
pub use tsv::{parse_labeled_tsv, read_labeled_tsv, LabeledSentences};
pub use vocab::{
    tokenize, Subwords, Vocab, MAX_SUBWORD_BUCKETS, MAX_SUBWORD_N, PAD, PAD_TOKEN, UNK, UNK_TOKEN,
};
