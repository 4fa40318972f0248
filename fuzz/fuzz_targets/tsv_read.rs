//! Fuzzes the labeled sentence reader (`parse_labeled_tsv`, `read_labeled_tsv`: one
//! `label<TAB>sentence` per line) with arbitrary bytes.
//!
//! The first input byte picks the mode (bit 0: also write the rest to a file and read the
//! file); the rest is the file.
//!
//! Oracles:
//! 1. Nothing panics, aborts or allocates without bound: every bad input is a `DataError`
//!    naming the file, and the line for a malformed line.
//! 2. The result is the one a plain reading of the format gives (computed here line by
//!    line): the first bad line's number and problem (the first non-UTF-8 byte's line and
//!    offset), or the non-blank lines' trimmed sentences in order with their labels as in
//!    the file; as many labels as sentences, the names sorted, distinct and all used.
//! 3. The bytes and the file give the same result.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use selfsup::data::DataError;
use selfsup::text::{parse_labeled_tsv, read_labeled_tsv, LabeledSentences};

fn file() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch::dir();
        dir.join(format!("selfsup-fuzz-tsv-{}.tsv", std::process::id()))
    })
}

/// What a reading must give: the first bad line (number, problem) or the (label, sentence)
/// pairs of the non-blank lines.
enum Want {
    Line(usize, String),
    Empty,
    Pairs(Vec<(String, String)>),
}

/// The format read plainly, line by line.
fn want(bytes: &[u8]) -> Want {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => {
            let at = e.valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            let problem = format!(
                "not UTF-8 text: invalid byte 0x{:02x} at byte offset {at}",
                bytes[at]
            );
            return Want::Line(line, problem);
        }
    };
    let mut pairs = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(tab) = line.find('\t') else {
            return Want::Line(
                i + 1,
                "expected `label<TAB>sentence`, found no tab".to_string(),
            );
        };
        let (label, sentence) = (line[..tab].trim(), line[tab + 1..].trim());
        if label.is_empty() {
            return Want::Line(i + 1, "the label is empty".to_string());
        }
        if sentence.is_empty() {
            return Want::Line(
                i + 1,
                format!("the sentence after the label '{label}' is empty"),
            );
        }
        pairs.push((label.to_string(), sentence.to_string()));
    }
    if pairs.is_empty() {
        Want::Empty
    } else {
        Want::Pairs(pairs)
    }
}

/// Checks one reading of the bytes against the plain reading; `path` is the name given.
fn check(r: &Result<LabeledSentences, DataError>, want: &Want, path: &Path) {
    match (r, want) {
        (Ok(s), Want::Pairs(pairs)) => {
            assert_eq!(s.sentences.len(), pairs.len());
            assert_eq!(s.labels.len(), pairs.len());
            assert!(s.names.windows(2).all(|w| w[0] < w[1]), "{:?}", s.names);
            let mut used = vec![false; s.names.len()];
            for (k, (label, sentence)) in pairs.iter().enumerate() {
                let id = s.labels[k] as usize;
                assert_eq!(&s.names[id], label);
                assert_eq!(&s.sentences[k], sentence);
                used[id] = true;
            }
            assert!(used.iter().all(|&u| u), "an unused name: {:?}", s.names);
        }
        (
            Err(DataError::Line {
                path: p,
                line,
                problem,
            }),
            Want::Line(l, want),
        ) => {
            assert_eq!(p, path);
            assert_eq!((line, problem), (l, want));
            let msg = r.as_ref().unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("{}:{l}: ", path.display())),
                "{msg}"
            );
        }
        (Err(DataError::Format { path: p, problem }), Want::Empty) => {
            assert_eq!(p, path);
            assert!(problem.starts_with("no labeled sentences"), "{problem}");
        }
        (r, _) => panic!("unexpected result {r:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let want = want(bytes);
    let name = Path::new("fuzz.tsv");
    let r = parse_labeled_tsv(bytes, name);
    check(&r, &want, name);
    if mode & 1 != 0 {
        std::fs::write(file(), bytes).expect("write the input file");
        let f = read_labeled_tsv(file());
        check(&f, &want, file());
        if let (Ok(a), Ok(b)) = (&f, &r) {
            assert_eq!(a, b);
        }
    }
});
