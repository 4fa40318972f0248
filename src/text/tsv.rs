//! Labeled sentences from a tab-separated file, one `label<TAB>sentence` per line: the
//! input of the sentence probe (`selfsup probe --tsv`).
//!
//! The format, as [`parse_labeled_tsv`] reads it:
//!
//! - UTF-8 text of at most [`MAX_FILE_BYTES`](super::read::MAX_FILE_BYTES) bytes; a leading
//!   byte-order mark is dropped.
//! - Lines end with `\n` or `\r\n` (the last one may have no end); a line holding only
//!   whitespace is skipped.
//! - The label is the text before a line's first tab, the sentence all of the text after it
//!   (later tabs included); both are trimmed and neither may be empty.
//! - Each label's id is its index among the file's distinct labels sorted (byte order), so
//!   the ids do not depend on the order of the lines.
//!
//! A malformed line is a [`DataError::Line`] naming the file and the line (for bytes that
//! are not UTF-8, the line of the first bad byte).

use std::collections::HashMap;
use std::path::Path;

use super::read::{check_size, not_utf8, read_bytes};
use crate::data::{fmt_err, DataError};

/// The labeled sentences of a file, in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledSentences {
    /// The sentences (trimmed, non-empty).
    pub sentences: Vec<String>,
    /// Each sentence's label id, an index into [`names`](Self::names).
    pub labels: Vec<u32>,
    /// The distinct labels (trimmed, non-empty), sorted.
    pub names: Vec<String>,
}

/// Reads the labeled sentence file `file` ([module documentation](self) for the format).
///
/// # Errors
/// [`DataError::Io`] when it cannot be read; otherwise as [`parse_labeled_tsv`].
pub fn read_labeled_tsv(file: &Path) -> Result<LabeledSentences, DataError> {
    parse_labeled_tsv(&read_bytes(file)?, file)
}

/// Parses `bytes`, the content of the labeled sentence file `file` (which is only named in
/// errors; [module documentation](self) for the format).
///
/// # Errors
/// - [`DataError::Line`] naming `file` and the line: bytes that are not UTF-8 (with the bad
///   byte and its offset in the file), a line without a tab, an empty label or sentence;
/// - [`DataError::Format`] naming `file` when it is larger than
///   [`MAX_FILE_BYTES`](super::read::MAX_FILE_BYTES) or holds no labeled sentence (empty,
///   or only blank lines).
pub fn parse_labeled_tsv(bytes: &[u8], file: &Path) -> Result<LabeledSentences, DataError> {
    check_size(bytes.len() as u64, file)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        DataError::Line {
            path: file.to_path_buf(),
            line: bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1,
            problem: not_utf8(bytes[at], at),
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |problem: String| DataError::Line {
            path: file.to_path_buf(),
            line: i + 1,
            problem,
        };
        let Some((label, sentence)) = line.split_once('\t') else {
            return Err(bad(
                "expected `label<TAB>sentence`, found no tab".to_string()
            ));
        };
        let label = label.trim();
        if label.is_empty() {
            return Err(bad("the label is empty".to_string()));
        }
        let sentence = sentence.trim();
        if sentence.is_empty() {
            return Err(bad(format!(
                "the sentence after the label '{label}' is empty"
            )));
        }
        pairs.push((label, sentence));
    }
    if pairs.is_empty() {
        return Err(fmt_err(
            file,
            "no labeled sentences: the file is empty or all its lines are blank; expected `label<TAB>sentence` lines",
        ));
    }
    let mut names: Vec<&str> = pairs.iter().map(|&(l, _)| l).collect();
    names.sort_unstable();
    names.dedup();
    let ids: HashMap<&str, u32> = names.iter().zip(0u32..).map(|(&l, i)| (l, i)).collect();
    Ok(LabeledSentences {
        labels: pairs.iter().map(|(l, _)| ids[l]).collect(),
        sentences: pairs.iter().map(|&(_, s)| s.to_string()).collect(),
        names: names.into_iter().map(str::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::read::MAX_FILE_BYTES;
    use std::path::PathBuf;

    fn parse(bytes: &[u8]) -> Result<LabeledSentences, DataError> {
        parse_labeled_tsv(bytes, Path::new("dir/x.tsv"))
    }

    /// The (line, problem) of a line error, or a panic naming what came instead.
    fn line_error(r: Result<LabeledSentences, DataError>) -> (usize, String) {
        match r {
            Err(DataError::Line {
                path,
                line,
                problem,
            }) => {
                assert_eq!(path, Path::new("dir/x.tsv"));
                (line, problem)
            }
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    /// A fresh file of this test process holding `bytes`.
    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("selfsup-tsv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_good_file_gives_sentences_labels_and_sorted_names() {
        let r =
            parse(b"road\tThe van stopped.\nfood\t  Soup is hot. \n\n  \t \nroad\ta\tb\n").unwrap();
        assert_eq!(r.sentences, ["The van stopped.", "Soup is hot.", "a\tb"]);
        assert_eq!(r.names, ["food", "road"]);
        assert_eq!(r.labels, [1, 0, 1]);
    }

    #[test]
    fn crlf_a_byte_order_mark_and_no_final_newline_are_read() {
        let r = parse(b"\xef\xbb\xbfb\tone\r\na\ttwo\r\n\r\nb\tthree").unwrap();
        assert_eq!(r.sentences, ["one", "two", "three"]);
        assert_eq!(r.names, ["a", "b"]);
        assert_eq!(r.labels, [1, 0, 1]);
        // One label is a valid file (the probe, not the reader, needs two).
        let one = parse(b"x\ty\n").unwrap();
        assert_eq!((one.labels, one.names), (vec![0], vec!["x".to_string()]));
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        assert_eq!(
            line_error(parse(b"a\tb\n\nc\td\nno tab here\n")),
            (4, "expected `label<TAB>sentence`, found no tab".to_string())
        );
        assert_eq!(
            line_error(parse(b"a\tb\r\n \tc\r\n")),
            (2, "the label is empty".to_string())
        );
        assert_eq!(
            line_error(parse(b"a\tb\nroad\t  \n")),
            (
                2,
                "the sentence after the label 'road' is empty".to_string()
            )
        );
        let e = parse(b"a\tb\nno tab\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "dir/x.tsv:2: expected `label<TAB>sentence`, found no tab"
        );
    }

    #[test]
    fn invalid_utf8_names_the_line_the_byte_and_its_offset() {
        // 0xe9 is Latin-1 'é', at byte 13 on line 3.
        assert_eq!(
            line_error(parse(b"a\tb\nc\td\na\tcaf\xe9\n")),
            (
                3,
                "not UTF-8 text: invalid byte 0xe9 at byte offset 13".to_string()
            )
        );
        // A truncated sequence at the very end, on line 1.
        assert_eq!(
            line_error(parse(b"a\tb\xc3")),
            (
                1,
                "not UTF-8 text: invalid byte 0xc3 at byte offset 3".to_string()
            )
        );
    }

    #[test]
    fn an_empty_or_blank_file_is_an_error_naming_it() {
        for bytes in [&b""[..], b"\n\n", b" \r\n\t\n", b"\xef\xbb\xbf"] {
            match parse(bytes) {
                Err(DataError::Format { path, problem }) => {
                    assert_eq!(path, Path::new("dir/x.tsv"));
                    assert!(problem.starts_with("no labeled sentences"), "{problem}");
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_file_reader_gives_what_the_bytes_give_and_names_the_file() {
        let bytes = b"food\tsoup\nroad\tvan\n";
        let p = temp_file("good.tsv", bytes);
        assert_eq!(read_labeled_tsv(&p).unwrap(), parse(bytes).unwrap());
        let bad = temp_file("bad.tsv", b"food\tsoup\n\tvan\n");
        assert_eq!(
            read_labeled_tsv(&bad).unwrap_err().to_string(),
            format!("{}:2: the label is empty", bad.display())
        );
        let missing = p.with_file_name("missing.tsv");
        match read_labeled_tsv(&missing) {
            Err(DataError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        // A sparse file over the limit is refused before it is read.
        let big = p.with_file_name("big.tsv");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        match read_labeled_tsv(&big) {
            Err(DataError::Format { path, problem }) => {
                assert_eq!(path, big);
                assert!(problem.contains("larger than the limit"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
