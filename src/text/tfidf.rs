//! Tf-idf word-count features (Salton and Buckley 1988; the defaults of scikit-learn's
//! `TfidfVectorizer` with `sublinear_tf`): the baseline that needs no pretraining.
//!
//! A [`TfIdf`] is fitted on a list of sentences: its columns are the `max_features` most
//! frequent tokens of [`Vocab::build`] (the tokens of [`tokenize`](super::tokenize), the
//! same the sentence encoders read; ties broken by the token's bytes), each with the smooth
//! inverse document frequency `idf(t) = ln((1 + n) / (1 + df(t))) + 1` over the `n`
//! sentences. A sentence's row is `(1 + ln tf(t)) * idf(t)` for each column token `t` it
//! holds `tf(t) >= 1` times, 0 elsewhere, scaled to unit L2 norm (a sentence with no column
//! token is a row of zeros). Tokens outside the columns are ignored. Everything is
//! deterministic in the sentences and `max_features`.

use crate::error::{Error, Result};

use super::vocab::{Vocab, PAD, UNK};

/// A fitted tf-idf vectorizer: the column tokens and their inverse document frequencies.
#[derive(Clone, Debug)]
pub struct TfIdf {
    vocab: Vocab,
    /// `idf[c]` of column `c` (the vocabulary's id `c + 2`).
    idf: Vec<f32>,
}

impl TfIdf {
    /// Fits the columns (the `max_features` most frequent tokens of `sentences`) and their
    /// inverse document frequencies on `sentences`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max_features` is 0 or above the vocabulary's limit,
    /// or when `sentences` holds no token at all.
    pub fn fit<S: AsRef<str>>(sentences: &[S], max_features: usize) -> Result<Self> {
        if max_features == 0 {
            return Err(invalid("max_features must be at least 1".into()));
        }
        let size = max_features
            .checked_add(2)
            .ok_or_else(|| invalid(format!("max_features {max_features} is too large")))?;
        let vocab = Vocab::build(sentences.iter().map(AsRef::as_ref), 1, size)?;
        if vocab.len() <= 2 {
            return Err(invalid(format!(
                "{} sentences hold no word to count",
                sentences.len()
            )));
        }
        let mut df = vec![0u64; vocab.len() - 2];
        let mut seen = vec![usize::MAX; df.len()];
        for (i, s) in sentences.iter().enumerate() {
            for id in vocab.encode(s.as_ref(), usize::MAX) {
                if let Some(c) = column(id) {
                    if seen[c] != i {
                        seen[c] = i;
                        df[c] += 1;
                    }
                }
            }
        }
        let n = sentences.len() as f64;
        let idf = df
            .iter()
            .map(|&d| (((1.0 + n) / (1.0 + d as f64)).ln() + 1.0) as f32)
            .collect();
        Ok(Self { vocab, idf })
    }

    /// The number of columns (at most the `max_features` of [`TfIdf::fit`]).
    pub fn dim(&self) -> usize {
        self.idf.len()
    }

    /// The token of column `c`.
    pub fn token(&self, c: usize) -> Option<&str> {
        self.vocab.word(c as u32 + 2)
    }

    /// The inverse document frequency of each column.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// The rows of `sentences`, `sentences.len() x dim()` row-major (see the module
    /// documentation).
    pub fn transform<S: AsRef<str>>(&self, sentences: &[S]) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0.0f32; sentences.len() * d];
        let mut counts: Vec<(usize, u32)> = Vec::new();
        for (s, row) in sentences.iter().zip(out.chunks_exact_mut(d)) {
            counts.clear();
            let mut cols: Vec<usize> = self
                .vocab
                .encode(s.as_ref(), usize::MAX)
                .into_iter()
                .filter_map(column)
                .collect();
            cols.sort_unstable();
            for c in cols {
                match counts.last_mut() {
                    Some((last, k)) if *last == c => *k += 1,
                    _ => counts.push((c, 1)),
                }
            }
            let mut norm = 0.0f64;
            for &(c, k) in &counts {
                let v = (1.0 + f64::from(k).ln()) * f64::from(self.idf[c]);
                row[c] = v as f32;
                norm += v * v;
            }
            if norm > 0.0 {
                let inv = (1.0 / norm.sqrt()) as f32;
                for &(c, _) in &counts {
                    row[c] *= inv;
                }
            }
        }
        out
    }
}

/// The column of vocabulary id `id`, or `None` for the special tokens.
fn column(id: u32) -> Option<usize> {
    match id {
        PAD | UNK => None,
        _ => Some(id as usize - 2),
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: "tf-idf", msg }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_formula_by_hand() {
        // "a" is in 2 of 3 sentences, "b" in 1, "c" in 1; "a" is most frequent (3 times).
        let s = ["a a b", "a", "c !"];
        let t = TfIdf::fit(&s, 10).unwrap();
        let col = |w: &str| (0..t.dim()).find(|&c| t.token(c) == Some(w)).unwrap();
        assert_eq!(t.token(0), Some("a"));
        let idf = |df: f64| ((4.0 / (1.0 + df)).ln() + 1.0) as f32;
        assert!((t.idf()[col("a")] - idf(2.0)).abs() < 1e-6);
        assert!((t.idf()[col("c")] - idf(1.0)).abs() < 1e-6);
        let x = t.transform(&s);
        let d = t.dim();
        let (va, vb) = ((1.0 + 2f32.ln()) * idf(2.0), idf(1.0));
        let n = (va * va + vb * vb).sqrt();
        assert!((x[col("a")] - va / n).abs() < 1e-6);
        assert!((x[col("b")] - vb / n).abs() < 1e-6);
        assert_eq!(x[col("c")], 0.0);
        assert!((x[d + col("a")] - 1.0).abs() < 1e-6);
        // An unknown word is ignored; a sentence of unknown words is a zero row.
        let y = t.transform(&["zebra a", "zebra"]);
        assert!((y[col("a")] - 1.0).abs() < 1e-6);
        assert!(y[d..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_cap_keeps_the_most_frequent_tokens() {
        let t = TfIdf::fit(&["x y y z z z"], 2).unwrap();
        assert_eq!(t.dim(), 2);
        assert_eq!((t.token(0), t.token(1)), (Some("z"), Some("y")));
        assert!(TfIdf::fit(&["x"], 0).is_err());
        assert!(TfIdf::fit(&["", "  "], 5).is_err());
    }
}
