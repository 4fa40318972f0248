//! Sentence splitting: one document's text in, its sentences in order out.
//!
//! The splitter is rule-based and meant for ordinary English prose (novels, articles,
//! generated text). [`split_sentences`] applies these rules, in this order:
//!
//! 1. **Paragraphs.** A blank line (a line holding only whitespace) ends a paragraph, and
//!    a paragraph always ends a sentence, punctuated or not (headings, list items).
//! 2. **Whitespace.** Inside a paragraph, single newlines are spaces (line-wrapped text)
//!    and every run of whitespace collapses to one space.
//! 3. **Ends.** A sentence ends after a run of terminators (`.`, `!`, `?`, `…`, so `?!`
//!    and `...` are one end), optionally followed by closing quotes or brackets
//!    (`"`, `'`, `)`, `]`, `”`, `’`, `»`), when what follows is the end of the paragraph, or
//!    a space and then a character that can start a sentence: an uppercase letter, a
//!    digit, an opening quote or bracket, or a letter of a script without case. A
//!    lowercase continuation (`"Stop!" he said.`) does not end a sentence. The CJK
//!    full-width terminators `。！？` end a sentence whatever follows.
//! 4. **Not ends.** A single `.` with no closing quote after it does not end a sentence
//!    when the word before it is a common abbreviation ([`ABBREVIATIONS`], case-insensitive:
//!    `Mr.`, `Dr.`, `etc.`, `Inc.`, ...; `No.` only before a digit), a single capital
//!    initial (`J. R. Tolkien`; `I` excepted, which is taken for the pronoun) or a dotted
//!    acronym (`U.S.`, `e.g.`, `a.m.`). Decimals and dotted versions (`3.14`, `v1.2.3`)
//!    never end a sentence because no space follows their dots.
//! 5. **Cleanup.** Sentences are trimmed and empty ones dropped; a sentence longer than
//!    [`MAX_SENTENCE_CHARS`] characters is truncated to its first `MAX_SENTENCE_CHARS`
//!    characters (a char boundary; the rest of that sentence is dropped), so a file without
//!    punctuation cannot produce one unbounded "sentence".
//!
//! Known limits: an abbreviation or initial that really ends a sentence (`... in the U.S.
//! Then`, `... on Main St. The`, `... plan B. Then`) does not split, a sentence that starts
//! in lowercase after a period is joined to the previous one, and a line break inside a
//! paragraph never ends a sentence by itself (an unpunctuated list or verse written one
//! item per line without blank lines reads as one sentence). The splitter never panics and only deletes whitespace or truncates: the
//! non-whitespace characters of its output, in order, are a subsequence of its input's.

/// The longest sentence [`split_sentences`] returns, in characters (`char`s); longer ones
/// are truncated to this many characters.
pub const MAX_SENTENCE_CHARS: usize = 2000;

/// Words (lowercase, without their final period) after which a single `.` does not end a
/// sentence. `no` is only an abbreviation before a digit (`No. 5`); dotted acronyms
/// (`u.s`, `e.g`) and single capital initials are recognized by shape, not by this list.
pub const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "corp",
    "no", "nos", "fig", "figs", "vol", "pp", "cf", "approx", "dept", "est", "mt", "ft", "gen",
    "col", "lt", "sgt", "capt", "rev", "hon", "gov", "sen", "rep",
];

/// Splits one document's text into its sentences, in order (rules in the
/// [module documentation](self)). Never panics; every returned sentence is non-empty,
/// trimmed, has no whitespace other than single spaces and at most [`MAX_SENTENCE_CHARS`]
/// characters.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut para = String::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            split_paragraph(&para, &mut out);
            para.clear();
            continue;
        }
        for word in line.split_whitespace() {
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(word);
        }
    }
    split_paragraph(&para, &mut out);
    out
}

/// Appends the sentences of one whitespace-normalized paragraph (single spaces, no
/// leading or trailing space) to `out`.
fn split_paragraph(p: &str, out: &mut Vec<String>) {
    let bytes = p.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < p.len() {
        // `i` is always on a char boundary: it only advances by whole chars.
        let c = match p[i..].chars().next() {
            Some(c) => c,
            None => break,
        };
        if matches!(c, '。' | '！' | '？') {
            let mut end = i + c.len_utf8();
            end += closers_len(&p[end..]);
            push_sentence(&p[start..end], out);
            start = end;
            i = end;
            continue;
        }
        if !is_terminator(c) {
            i += c.len_utf8();
            continue;
        }
        // The run of terminators, then of closing quotes and brackets.
        let run_start = i;
        let mut run_end = i;
        for t in p[i..].chars() {
            if !is_terminator(t) {
                break;
            }
            run_end += t.len_utf8();
        }
        let closers = closers_len(&p[run_end..]);
        let end = run_end + closers;
        let boundary = if end == p.len() {
            true
        } else if bytes[end] == b' ' {
            let next = p[end + 1..].chars().next();
            next.is_some_and(starts_sentence)
                && !(closers == 0
                    && &p[run_start..run_end] == "."
                    && is_abbreviation(&p[start..run_start], next))
        } else {
            false
        };
        if boundary {
            push_sentence(&p[start..end], out);
            start = end;
        }
        i = end;
    }
    push_sentence(&p[start..], out);
}

/// Pushes one sentence (trimmed, truncated to [`MAX_SENTENCE_CHARS`]) unless it is empty.
fn push_sentence(s: &str, out: &mut Vec<String>) {
    let s = s.trim();
    let s = match s.char_indices().nth(MAX_SENTENCE_CHARS) {
        Some((cut, _)) => s[..cut].trim_end(),
        None => s,
    };
    if !s.is_empty() {
        out.push(s.to_string());
    }
}

/// Characters that end a sentence in a run (`.`, `!`, `?`, `…`).
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// Closing quotes and brackets that may follow a sentence's terminators.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»')
}

/// Bytes of the run of closing quotes and brackets at the start of `s`.
fn closers_len(s: &str) -> usize {
    s.chars()
        .take_while(|&c| is_closer(c))
        .map(char::len_utf8)
        .sum()
}

/// Whether `c` can be the first character of a sentence: an uppercase (or titlecase)
/// letter, a letter of a script without case, a digit, or an opening quote or bracket.
fn starts_sentence(c: char) -> bool {
    (c.is_alphabetic() && !c.is_lowercase())
        || c.is_numeric()
        || matches!(c, '"' | '\'' | '(' | '[' | '“' | '‘' | '«' | '¿' | '¡')
}

/// Whether the last word of `before` (the text of the sentence so far, up to a single
/// `.`) is an abbreviation, an initial or a dotted acronym, so that the `.` does not end
/// the sentence. `next` is the character after the space that follows the `.`.
fn is_abbreviation(before: &str, next: Option<char>) -> bool {
    let word = before.rsplit(' ').next().unwrap_or("");
    let word = word.trim_start_matches(['"', '\'', '(', '[', '“', '‘', '«']);
    if word.is_empty() {
        return false;
    }
    let mut chars = word.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        // A single capital initial: "J. R. Tolkien"; not the pronoun "I" ("So did I.").
        return c.is_uppercase() && c != 'I';
    }
    // A dotted acronym: single letters separated by dots ("U.S", "e.g", "a.m").
    if word.contains('.') && word.split('.').all(single_letter) {
        return true;
    }
    let lower = word.to_lowercase();
    if lower == "no" || lower == "nos" {
        return next.is_some_and(|c| c.is_ascii_digit());
    }
    ABBREVIATIONS.contains(&lower.as_str())
}

/// Whether `s` is exactly one alphabetic character.
fn single_letter(s: &str) -> bool {
    let mut chars = s.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic())
}
