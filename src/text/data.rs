//! The text method's data: training documents and held-out documents (of a user's corpus,
//! one document in [`HOLD_OUT_EVERY`]; of the built-in corpus, documents generated from
//! another seed), and the built-in corpus's held-out sentences labeled with their topic.

use super::corpus::{builtin_corpus, CorpusConfig, TOPICS};
use super::read::CorpusReport;

/// Documents held out of a user's corpus for the monitor: one in this many.
pub const HOLD_OUT_EVERY: usize = 20;
/// The built-in corpus's held-out documents (another seed than the training corpus's).
const BUILTIN_EVAL_DOCUMENTS: usize = 400;

/// A text corpus: training and held-out documents of sentences.
#[derive(Clone, Debug, Default)]
pub struct TextData {
    /// Training documents.
    pub train: Vec<Vec<String>>,
    /// Held-out documents (the monitor's).
    pub held_out: Vec<Vec<String>>,
}

impl TextData {
    /// The built-in corpus, and its held-out documents.
    pub fn builtin() -> Self {
        let train = builtin_corpus(&CorpusConfig::default())
            .into_iter()
            .map(|d| d.sentences)
            .collect();
        let (held_out, _) = builtin_held_out();
        Self { train, held_out }
    }

    /// A read corpus, one document in [`HOLD_OUT_EVERY`] held out (none when it has fewer
    /// documents than that).
    pub fn from_report(report: CorpusReport) -> Self {
        let mut data = Self::default();
        let many = report.documents.len() >= HOLD_OUT_EVERY;
        for (i, d) in report.documents.into_iter().enumerate() {
            if many && i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 {
                data.held_out.push(d.sentences);
            } else {
                data.train.push(d.sentences);
            }
        }
        data
    }
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

/// The built-in corpus's held-out sentences, each labeled with its document's topic, and
/// the topic names: a labeled sentence set for the probe.
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
