//! Fuzzes the text corpus reader (`parse_text`, `parse_corpus`, `read_text`,
//! `read_corpus_report`) with arbitrary bytes, as one file and as a folder of files.
//!
//! The first input byte picks the mode (bit 0: also write the rest to a file and read the
//! file; bit 1: also cut the rest at each 0xff byte into at most 8 files of a folder and read
//! the folder); the rest is the file.
//!
//! Oracles:
//! 1. Nothing panics, aborts or allocates without bound: every bad input is a `DataError`
//!    naming the file (the folder, for a folder without documents).
//! 2. The text is the bytes exactly when they are UTF-8 (a leading byte-order mark
//!    dropped), and a non-UTF-8 error gives the offset of the first bad byte.
//! 3. What parses keeps the reader's promises: one document named after the file, of at
//!    least `MIN_DOCUMENT_SENTENCES` sentences, each non-empty, trimmed, single-spaced and
//!    at most `MAX_SENTENCE_CHARS` characters, their non-whitespace characters in order a
//!    subsequence of the text's; a one-file corpus with no document is an error.
//! 4. The bytes and the file give the same result; a folder's report is its files' results
//!    (kept, empty, short, not UTF-8) counted in name order.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use selfsup::data::DataError;
use selfsup::text::read::MIN_DOCUMENT_SENTENCES;
use selfsup::text::{
    parse_corpus, parse_text, read_corpus_report, read_text, split_sentences, CorpusReport,
    MAX_SENTENCE_CHARS,
};

/// This process's scratch folder (in /dev/shm when there is one).
fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch::dir();
        let p = dir.join(format!("selfsup-fuzz-text-{}", std::process::id()));
        std::fs::create_dir_all(p.join("folder")).expect("make the scratch folder");
        p
    })
}

/// The problem of a format error, or a panic naming anything else.
fn problem(e: &DataError) -> &str {
    match e {
        DataError::Format { problem, .. } => problem,
        other => panic!("not a format error: {other}"),
    }
}

fn named(e: &DataError, p: &Path) -> bool {
    e.to_string().starts_with(&format!("{}: ", p.display()))
}

/// The text the reader must give for `bytes`: UTF-8 without a leading byte-order mark.
fn expected_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    Some(s.strip_prefix('\u{feff}').unwrap_or(s))
}

/// Checks one document's sentences against the promises of the reader and the splitter.
fn check_sentences(sentences: &[String], text: &str) {
    assert!(sentences.len() >= MIN_DOCUMENT_SENTENCES);
    for s in sentences {
        assert!(!s.is_empty());
        assert_eq!(s.trim(), s);
        assert!(s.chars().count() <= MAX_SENTENCE_CHARS);
        assert!(!s.contains("  "), "{s:?}");
        assert!(s.chars().all(|c| c == ' ' || !c.is_whitespace()), "{s:?}");
    }
    let mut rest = text.chars().filter(|c| !c.is_whitespace());
    for c in sentences
        .iter()
        .flat_map(|s| s.chars())
        .filter(|c| *c != ' ')
    {
        assert!(rest.any(|t| t == c), "{c:?} is not in the text in order");
    }
}

/// The bytes as one file named `fuzz.txt`: the bytes and the file must agree.
fn one_file(bytes: &[u8], through_file: bool) {
    let name = Path::new("fuzz.txt");
    let text = parse_text(bytes.to_vec(), name);
    match (&text, std::str::from_utf8(bytes)) {
        (Ok(t), Ok(_)) => assert_eq!(Some(t.as_str()), expected_text(bytes)),
        (Err(e), Err(u)) => {
            assert!(named(e, name), "{e}");
            let at = u.valid_up_to();
            let want = format!("invalid byte 0x{:02x} at byte offset {at}", bytes[at]);
            assert!(problem(e).ends_with(&want), "{e}");
        }
        (t, u) => panic!("parse_text {t:?} but from_utf8 {u:?}"),
    }
    let corpus = parse_corpus(bytes.to_vec(), name);
    match &corpus {
        Ok(r) => {
            let t = text.as_ref().expect("a corpus is text");
            assert_eq!((r.files, r.documents.len()), (1, 1));
            assert_eq!(
                (r.skipped_empty, r.skipped_short, r.skipped_binary),
                (0, 0, 0)
            );
            assert_eq!(r.first_binary, None);
            assert_eq!(r.documents[0].name, "fuzz.txt");
            check_sentences(&r.documents[0].sentences, t);
        }
        Err(e) => {
            assert!(named(e, name), "{e}");
            if let Ok(t) = &text {
                assert!(problem(e).starts_with("no documents"), "{e}");
                assert!(split_sentences(t).len() < MIN_DOCUMENT_SENTENCES);
            }
        }
    }
    if through_file {
        let file = scratch().join("fuzz.txt");
        std::fs::write(&file, bytes).expect("write the input file");
        let read = read_text(&file);
        match (&read, &text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert!(named(a, &file), "{a}");
                assert_eq!(problem(a), problem(b));
            }
            (a, b) => panic!("read_text {a:?} but parse_text {b:?}"),
        }
        let report = read_corpus_report(&file);
        match (&report, &corpus) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert!(named(a, &file), "{a}");
                assert_eq!(problem(a), problem(b));
            }
            (a, b) => panic!("read_corpus_report {a:?} but parse_corpus {b:?}"),
        }
    }
}

/// The bytes cut at each 0xff into at most 8 files `f0.txt`.. of a folder: the folder's
/// report must count each file as the oracle classifies it, in name order.
fn folder(bytes: &[u8]) {
    let dir = scratch().join("folder");
    for entry in std::fs::read_dir(&dir).expect("list the scratch folder") {
        std::fs::remove_file(entry.expect("a scratch entry").path()).expect("clear a file");
    }
    let mut want = CorpusReport {
        documents: Vec::new(),
        files: 0,
        skipped_empty: 0,
        skipped_short: 0,
        skipped_binary: 0,
        first_binary: None,
    };
    let mut texts = Vec::new();
    for (i, part) in bytes.split(|&b| b == 0xff).take(8).enumerate() {
        let name = format!("f{i}.txt");
        std::fs::write(dir.join(&name), part).expect("write a folder file");
        want.files += 1;
        match expected_text(part) {
            None => {
                want.skipped_binary += 1;
                if want.first_binary.is_none() {
                    want.first_binary = Some(name);
                }
            }
            Some(t) => {
                let sentences = split_sentences(t);
                if sentences.is_empty() {
                    want.skipped_empty += 1;
                } else if sentences.len() < MIN_DOCUMENT_SENTENCES {
                    want.skipped_short += 1;
                } else {
                    texts.push(t);
                    want.documents
                        .push(selfsup::text::Document { name, sentences });
                }
            }
        }
    }
    match read_corpus_report(&dir) {
        Ok(mut r) => {
            assert!(!want.documents.is_empty());
            for (d, t) in r.documents.iter().zip(&texts) {
                check_sentences(&d.sentences, t);
            }
            // The first non-UTF-8 file is named, with its path and the reason.
            let first = r.first_binary.take();
            match (&first, &want.first_binary) {
                (Some(msg), Some(name)) => {
                    let path = dir.join(name);
                    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
                    assert!(msg.contains("not UTF-8"), "{msg}");
                }
                (None, None) => {}
                (a, b) => panic!("first_binary {a:?}, expected {b:?}"),
            }
            want.first_binary = None;
            assert_eq!(r, want);
        }
        Err(e) => {
            assert!(named(&e, &dir), "{e}");
            assert!(want.documents.is_empty(), "{e}");
            assert!(problem(&e).starts_with("no documents"), "{e}");
            let counts = format!(
                "{} file(s) read, {} without text, {} with fewer than {} sentences, {} not UTF-8 text",
                want.files,
                want.skipped_empty,
                want.skipped_short,
                MIN_DOCUMENT_SENTENCES,
                want.skipped_binary
            );
            assert!(problem(&e).ends_with(&counts), "{e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    one_file(bytes, mode & 1 != 0);
    if mode & 2 != 0 {
        folder(bytes);
    }
});
