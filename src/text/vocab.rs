//! Tokens and the vocabulary: sentences to token ids.
//!
//! [`tokenize`] lowercases a sentence and cuts it into words and punctuation marks;
//! [`Vocab`] maps tokens to dense `u32` ids (0 is [`PAD_TOKEN`], 1 is [`UNK_TOKEN`], then
//! the kept words by descending count), is built from a corpus with [`Vocab::build`] and
//! saved and loaded as JSON with [`Vocab::to_json`] and [`Vocab::from_json`].
//! Optionally ([`Vocab::with_subwords`]) each token also brings its hashed character
//! n-grams, fastText's subword units (Bojanowski et al. 2017): ids past the words, one
//! per hash bucket, so that an unknown or rare word still has features of its own.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// The padding token, id [`PAD`]: fills a batch's short sentences; no text maps to it.
pub const PAD_TOKEN: &str = "<pad>";
/// The unknown-word token, id [`UNK`]: every token outside the vocabulary.
pub const UNK_TOKEN: &str = "<unk>";
/// The id of [`PAD_TOKEN`].
pub const PAD: u32 = 0;
/// The id of [`UNK_TOKEN`].
pub const UNK: u32 = 1;
/// The largest vocabulary [`Vocab::build`] makes or [`Vocab::from_json`] accepts, special
/// tokens included (2^24 ids: far beyond any word-level vocabulary, small enough that ids
/// fit any index type and an embedding table's size is checked before it is allocated).
pub const MAX_VOCAB_SIZE: usize = 1 << 24;
/// The longest word [`Vocab::from_json`] accepts, in bytes.
pub const MAX_WORD_BYTES: usize = 1024;

/// The `"format"` field of a vocabulary's JSON.
const FORMAT: &str = "selfsup-vocab";
/// The `"version"` field of a vocabulary's JSON.
const VERSION: u64 = 1;

/// Cuts a sentence into lowercase tokens, in order.
///
/// A word is a run of alphanumeric characters (any script; combining diacritical marks
/// continue a word), keeping inner apostrophes: `don't` and `o'clock` are one token each
/// (a typographic `’` inside a word becomes `'`). Every other non-whitespace character is a
/// token of its own (`"hi!"` is `hi`, `!`); whitespace separates tokens and is dropped.
/// Lowercasing is Unicode's (`char::to_lowercase`), so a token may be longer in bytes than
/// its source text.
pub fn tokenize(sentence: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for_each_token(sentence, |t| tokens.push(t.to_string()));
    tokens
}

/// Calls `f` on each token of `sentence` (the rules of [`tokenize`]) without collecting
/// them: the form behind [`tokenize`], [`Vocab::build`] and [`Vocab::encode`].
fn for_each_token(sentence: &str, mut f: impl FnMut(&str)) {
    let chars: Vec<char> = sentence.chars().collect();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let in_word = !word.is_empty();
        if c.is_alphanumeric() || (in_word && is_combining(c)) {
            word.extend(c.to_lowercase());
        } else if in_word
            && (c == '\'' || c == '’')
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric())
        {
            word.push('\'');
        } else {
            if in_word {
                f(&word);
                word.clear();
            }
            if !c.is_whitespace() {
                let lower: String = c.to_lowercase().collect();
                f(&lower);
            }
        }
        i += 1;
    }
    if !word.is_empty() {
        f(&word);
    }
}

/// Whether `c` is a combining diacritical mark (it continues the word before it, so
/// decomposed `é` stays one word).
fn is_combining(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// The most hash buckets of [`Subwords`].
pub const MAX_SUBWORD_BUCKETS: usize = 1 << 22;
/// The longest character n-gram of [`Subwords`].
pub const MAX_SUBWORD_N: usize = 16;

/// fastText's subword units: the character n-grams of `<token>` (the token between the
/// boundary marks `<` and `>`), of `min_n` to `max_n` characters, each hashed (32-bit
/// FNV-1a of its UTF-8 bytes, as fastText) into one of `buckets` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subwords {
    pub buckets: usize,
    pub min_n: usize,
    pub max_n: usize,
}

impl Subwords {
    /// Checks the sizes: 1 to [`MAX_SUBWORD_BUCKETS`] buckets, `1 <= min_n <= max_n <=`
    /// [`MAX_SUBWORD_N`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.buckets == 0 || self.buckets > MAX_SUBWORD_BUCKETS {
            return Err(invalid(
                "Subwords",
                format!(
                    "{} buckets: expected 1 to {MAX_SUBWORD_BUCKETS}",
                    self.buckets
                ),
            ));
        }
        if self.min_n == 0 || self.min_n > self.max_n || self.max_n > MAX_SUBWORD_N {
            return Err(invalid(
                "Subwords",
                format!(
                    "n-grams of {} to {} characters: expected 1 <= min <= max <= {MAX_SUBWORD_N}",
                    self.min_n, self.max_n
                ),
            ));
        }
        Ok(())
    }

    /// Calls `f` with the bucket (below `buckets`) of each character n-gram of `<token>`,
    /// shortest n-grams first, each length left to right.
    pub fn for_each_bucket(&self, token: &str, mut f: impl FnMut(u32)) {
        let mut marked = String::with_capacity(token.len() + 2);
        marked.push('<');
        marked.push_str(token);
        marked.push('>');
        // Byte offsets of every character, and the end.
        let mut at: Vec<usize> = marked.char_indices().map(|(i, _)| i).collect();
        at.push(marked.len());
        let chars = at.len() - 1;
        for n in self.min_n..=self.max_n.min(chars) {
            for i in 0..=chars - n {
                let gram = &marked.as_bytes()[at[i]..at[i + n]];
                f((fnv1a(gram) as usize % self.buckets) as u32);
            }
        }
    }
}

/// The 32-bit FNV-1a hash of `bytes` (fastText's n-gram hash, which casts each byte to a
/// signed char before the xor; the same for ASCII, kept for its other bytes too).
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// A word-level vocabulary: tokens to dense ids and back.
///
/// Id 0 is [`PAD_TOKEN`], id 1 is [`UNK_TOKEN`], then the words; with [`Subwords`], the
/// hash buckets of the character n-grams follow the words. Every vocabulary holds both
/// special tokens, so [`len`](Vocab::len) is at least 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    /// Id to token: `words[0] == PAD_TOKEN`, `words[1] == UNK_TOKEN`.
    words: Vec<String>,
    /// Token to id, for every entry of `words`.
    index: HashMap<String, u32>,
    /// The character n-grams each token brings, if any.
    subwords: Option<Subwords>,
}

impl Vocab {
    /// Builds the vocabulary of `sentences` (each cut by [`tokenize`]).
    ///
    /// Keeps the tokens seen at least `min_count` times (0 and 1 both keep every token),
    /// sorted by descending count with ties broken by the token's byte order, so the
    /// result is deterministic; then keeps the first `max_size - 2` of them, so that the
    /// vocabulary, special tokens included, has at most `max_size` entries.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `max_size < 2` (no room for the special tokens) or
    /// `max_size > MAX_VOCAB_SIZE`.
    pub fn build<I, S>(sentences: I, min_count: u64, max_size: usize) -> Result<Vocab>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const OP: &str = "Vocab::build";
        if max_size < 2 {
            return Err(invalid(
                OP,
                format!("max_size {max_size} leaves no room for the 2 special tokens"),
            ));
        }
        if max_size > MAX_VOCAB_SIZE {
            return Err(invalid(
                OP,
                format!("max_size {max_size} is above the limit {MAX_VOCAB_SIZE}"),
            ));
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        for s in sentences {
            for_each_token(s.as_ref(), |t| match counts.get_mut(t) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(t.to_string(), 1);
                }
            });
        }
        let mut kept: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|&(_, n)| n >= min_count.max(1))
            .collect();
        kept.sort_unstable_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
        });
        kept.truncate(max_size - 2);
        let mut words = Vec::with_capacity(kept.len() + 2);
        words.push(PAD_TOKEN.to_string());
        words.push(UNK_TOKEN.to_string());
        words.extend(kept.into_iter().map(|(w, _)| w));
        Ok(Self::from_words_unchecked(words))
    }

    /// The vocabulary of `words`, whose validity the caller has checked.
    fn from_words_unchecked(words: Vec<String>) -> Vocab {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Vocab {
            words,
            index,
            subwords: None,
        }
    }

    /// This vocabulary with `subwords`: [`encode`](Vocab::encode) then gives each token's
    /// id followed by the ids of its character n-grams, `word_count() + bucket`, and
    /// [`len`](Vocab::len) counts the buckets too.
    ///
    /// # Errors
    /// Invalid sizes ([`Subwords::validate`]), or more ids in all than [`MAX_VOCAB_SIZE`].
    pub fn with_subwords(mut self, subwords: Subwords) -> Result<Vocab> {
        subwords.validate()?;
        if self.words.len() + subwords.buckets > MAX_VOCAB_SIZE {
            return Err(invalid(
                "Vocab::with_subwords",
                format!(
                    "{} words and {} buckets, above the limit {MAX_VOCAB_SIZE} ids",
                    self.words.len(),
                    subwords.buckets
                ),
            ));
        }
        self.subwords = Some(subwords);
        Ok(self)
    }

    /// The subword units, if any.
    pub fn subwords(&self) -> Option<Subwords> {
        self.subwords
    }

    /// The number of words, special tokens included (the ids below the subword buckets).
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// The id of `token`, or [`UNK`] when it is not in the vocabulary. `token` is looked
    /// up as given: pass tokens from [`tokenize`] (lowercase), not raw words.
    pub fn id(&self, token: &str) -> u32 {
        self.index.get(token).copied().unwrap_or(UNK)
    }

    /// The token of `id`, or `None` when `id >= word_count()` (a subword bucket or outside).
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// All tokens, in id order (the special tokens first).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The number of ids, special tokens and subword buckets included (at least 2): the
    /// rows of an embedding table for [`encode`](Vocab::encode)'s ids.
    pub fn len(&self) -> usize {
        self.words.len() + self.subwords.map_or(0, |s| s.buckets)
    }

    /// Always `false`: a vocabulary holds at least its two special tokens.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The ids of `sentence`'s tokens ([`tokenize`]), unknown ones as [`UNK`], truncated
    /// to the first `max_len` ids (ids past `max_len` are dropped, not an error).
    /// No padding is added: the result may be shorter than `max_len`. With
    /// [`Subwords`], each token's id is followed by its n-grams' ids
    /// ([`Subwords::for_each_bucket`] order), and the cut may fall inside a token's
    /// n-grams.
    pub fn encode(&self, sentence: &str, max_len: usize) -> Vec<u32> {
        let mut ids = Vec::new();
        if max_len == 0 {
            return ids;
        }
        let base = self.words.len() as u32;
        for_each_token(sentence, |t| {
            if ids.len() < max_len {
                ids.push(self.id(t));
                if let Some(sw) = &self.subwords {
                    sw.for_each_bucket(t, |b| {
                        if ids.len() < max_len {
                            ids.push(base + b);
                        }
                    });
                }
            }
        });
        ids
    }

    /// The tokens of `ids`, joined by single spaces; ids outside the vocabulary show as
    /// [`UNK_TOKEN`], [`PAD`] and subword ids are skipped. For inspection: tokenization
    /// is lossy.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let subword = |id: u32| (id as usize) >= self.words.len() && (id as usize) < self.len();
        for &id in ids.iter().filter(|&&id| id != PAD && !subword(id)) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.word(id).unwrap_or(UNK_TOKEN));
        }
        out
    }

    /// The vocabulary as JSON: `{"format":"selfsup-vocab","version":1,"words":[...]}`, the
    /// tokens in id order (special tokens included), plus
    /// `"subwords":{"buckets":B,"min_n":N,"max_n":M}` with subword units, which
    /// [`Vocab::from_json`] reads back to an equal vocabulary.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "format": FORMAT,
            "version": VERSION,
            "words": self.words,
        });
        if let Some(sw) = &self.subwords {
            v["subwords"] = serde_json::json!(sw);
        }
        v.to_string()
    }

    /// Reads a vocabulary written by [`Vocab::to_json`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the problem if the text is not JSON, is not an
    /// object with `"format": "selfsup-vocab"`, `"version": 1` and a `"words"` array of
    /// strings, or if the words are not a valid vocabulary: [`PAD_TOKEN`] and
    /// [`UNK_TOKEN`] at ids 0 and 1, no duplicates, no empty words, no word containing
    /// whitespace or longer than [`MAX_WORD_BYTES`] bytes, at most [`MAX_VOCAB_SIZE`]
    /// entries.
    pub fn from_json(json: &str) -> Result<Vocab> {
        const OP: &str = "Vocab::from_json";
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| invalid(OP, format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid(OP, "not a JSON object".to_string()))?;
        match obj.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(invalid(OP, format!("format is {other:?}, not {FORMAT:?}"))),
            None => return Err(invalid(OP, "missing string field \"format\"".to_string())),
        }
        match obj.get("version").and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(v) => {
                return Err(invalid(
                    OP,
                    format!("unsupported version {v} (this build reads {VERSION})"),
                ))
            }
            None => return Err(invalid(OP, "missing integer field \"version\"".to_string())),
        }
        let list = obj
            .get("words")
            .and_then(|w| w.as_array())
            .ok_or_else(|| invalid(OP, "missing array field \"words\"".to_string()))?;
        if list.len() < 2 {
            return Err(invalid(
                OP,
                format!("{} words: the 2 special tokens are missing", list.len()),
            ));
        }
        if list.len() > MAX_VOCAB_SIZE {
            return Err(invalid(
                OP,
                format!("{} words, above the limit {MAX_VOCAB_SIZE}", list.len()),
            ));
        }
        let mut words = Vec::with_capacity(list.len());
        for (i, w) in list.iter().enumerate() {
            let w = w
                .as_str()
                .ok_or_else(|| invalid(OP, format!("word {i} is not a string")))?;
            if w.is_empty() {
                return Err(invalid(OP, format!("word {i} is empty")));
            }
            if w.len() > MAX_WORD_BYTES {
                return Err(invalid(
                    OP,
                    format!(
                        "word {i} has {} bytes, above the limit {MAX_WORD_BYTES}",
                        w.len()
                    ),
                ));
            }
            if w.chars().any(char::is_whitespace) {
                return Err(invalid(OP, format!("word {i} ({w:?}) contains whitespace")));
            }
            words.push(w.to_string());
        }
        if words[0] != PAD_TOKEN || words[1] != UNK_TOKEN {
            return Err(invalid(
                OP,
                format!(
                    "ids 0 and 1 are {:?} and {:?}, not {PAD_TOKEN:?} and {UNK_TOKEN:?}",
                    words[0], words[1]
                ),
            ));
        }
        let mut vocab = Self::from_words_unchecked(words);
        if let Some(sw) = obj.get("subwords") {
            let sw: Subwords = serde_json::from_value(sw.clone())
                .map_err(|e| invalid(OP, format!("field \"subwords\": {e}")))?;
            vocab = vocab.with_subwords(sw)?;
        }
        if vocab.index.len() != vocab.words.len() {
            let mut seen = std::collections::HashSet::new();
            let dup = vocab.words.iter().find(|w| !seen.insert(w.as_str()));
            return Err(invalid(
                OP,
                format!("duplicate word {:?}", dup.map_or("", |w| w.as_str())),
            ));
        }
        Ok(vocab)
    }
}

/// An [`Error::InvalidArgument`] of `op`.
fn invalid(op: &'static str, msg: String) -> Error {
    Error::InvalidArgument { op, msg }
}
