//! Reading a text corpus from disk: a UTF-8 file or a folder of them, split into sentences.

use super::split::split_sentences;
use crate::data::{fmt_err, io_err, DataError};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest file [`read_corpus`] reads, in bytes (256 MiB); a larger file is an error
/// naming it, raised before its content is read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The fewest sentences a file needs to be kept as a document: Quick Thoughts learns from
/// pairs of adjacent sentences, so a one-sentence file has nothing to teach.
pub const MIN_DOCUMENT_SENTENCES: usize = 2;

/// The start of the message of a file that is not UTF-8 text.
const NOT_UTF8: &str = "not UTF-8 text";

/// One document of a corpus read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The file's path relative to the folder given to [`read_corpus`], with `/`
    /// separators (the file's name when a single file was given). Non-UTF-8 path
    /// components are shown lossily.
    pub name: String,
    /// The file's sentences, in order ([`split_sentences`]).
    pub sentences: Vec<String>,
}

/// A corpus read from disk with the count of what was skipped: the result of
/// [`read_corpus_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusReport {
    /// The kept documents, in path order.
    pub documents: Vec<Document>,
    /// Files read (kept or skipped).
    pub files: usize,
    /// Files skipped because they hold no text (empty or whitespace only).
    pub skipped_empty: usize,
    /// Files skipped because they hold text but fewer than [`MIN_DOCUMENT_SENTENCES`]
    /// sentences.
    pub skipped_short: usize,
    /// Files of a folder skipped because they are not UTF-8 text (compressed files,
    /// binaries, other encodings); the first one is named in
    /// [`first_binary`](Self::first_binary). A single file given as `path` is an error
    /// instead.
    pub skipped_binary: usize,
    /// The first file counted in [`skipped_binary`](Self::skipped_binary), with the reason.
    pub first_binary: Option<String>,
}

/// Reads the corpus at `path`: the documents of [`read_corpus_report`], without the counts.
///
/// # Errors
/// As [`read_corpus_report`].
pub fn read_corpus(path: &Path) -> Result<Vec<Document>, DataError> {
    read_corpus_report(path).map(|r| r.documents)
}

/// Reads the corpus at `path` and counts the files it skipped.
///
/// `path` is either one UTF-8 text file (one document) or a folder, whose regular files
/// are read recursively, each one document, in sorted path order so the result is
/// deterministic. In a folder, entries whose name starts with `.` (`.git`, `.DS_Store`)
/// are ignored, and symbolic links are followed to files but not to folders (no cycles).
/// A leading UTF-8 byte-order mark is dropped. Each file is split with
/// [`split_sentences`]; files with no text or fewer than [`MIN_DOCUMENT_SENTENCES`]
/// sentences are skipped and counted. In a folder, files that are not UTF-8 text
/// (`changelog.gz`, images, Latin-1 text) are skipped and counted too, the first one
/// named in the report: real folders such as `/usr/share/doc` mix them with text.
///
/// # Errors
/// - [`DataError::Io`] naming the path or file when it cannot be read (a nonexistent
///   `path` included);
/// - [`DataError::Format`] naming the file when it is larger than [`MAX_FILE_BYTES`], or
///   when `path` is a single file that is not UTF-8 (with the byte offset of the first
///   bad byte);
/// - [`DataError::Format`] naming `path` when no file yields a document.
pub fn read_corpus_report(path: &Path) -> Result<CorpusReport, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    let files: Vec<(PathBuf, String)> = if meta.is_dir() {
        let mut found = Vec::new();
        collect_files(path, &mut found)?;
        found.sort();
        found
            .into_iter()
            .map(|f| {
                let name = relative_name(path, &f);
                (f, name)
            })
            .collect()
    } else {
        return parse_corpus(read_bytes(path)?, path);
    };
    let mut report = CorpusReport::new(files.len());
    for (file, name) in files {
        let text = match read_text(&file) {
            Ok(t) => t,
            Err(ref e @ DataError::Format { ref problem, .. }) if problem.starts_with(NOT_UTF8) => {
                report.skipped_binary += 1;
                if report.first_binary.is_none() {
                    report.first_binary = Some(e.to_string());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        report.add(name, &text);
    }
    report.finish(path)
}

/// The corpus of one file whose content is `bytes`: what [`read_corpus_report`] returns
/// for a `file` holding these bytes, without reading it (one document named after `file`'s
/// last component, or an error).
///
/// # Errors
/// [`DataError::Format`] naming `file` when `bytes` are longer than [`MAX_FILE_BYTES`] or
/// not UTF-8 (with the byte offset of the first bad byte), or yield no document (no text,
/// or fewer than [`MIN_DOCUMENT_SENTENCES`] sentences).
pub fn parse_corpus(bytes: Vec<u8>, file: &Path) -> Result<CorpusReport, DataError> {
    let text = parse_text(bytes, file)?;
    let name = file
        .file_name()
        .map_or_else(|| file.to_string_lossy(), |n| n.to_string_lossy())
        .into_owned();
    let mut report = CorpusReport::new(1);
    report.add(name, &text);
    report.finish(file)
}

impl CorpusReport {
    /// An empty report of `files` files.
    fn new(files: usize) -> Self {
        CorpusReport {
            documents: Vec::new(),
            files,
            skipped_empty: 0,
            skipped_short: 0,
            skipped_binary: 0,
            first_binary: None,
        }
    }

    /// Splits one file's text into sentences and keeps it as the document `name`, or
    /// counts it as skipped.
    fn add(&mut self, name: String, text: &str) {
        let sentences = split_sentences(text);
        if sentences.is_empty() {
            self.skipped_empty += 1;
        } else if sentences.len() < MIN_DOCUMENT_SENTENCES {
            self.skipped_short += 1;
        } else {
            self.documents.push(Document { name, sentences });
        }
    }

    /// The report, or an error naming `path` when it kept no document.
    fn finish(self, path: &Path) -> Result<Self, DataError> {
        if !self.documents.is_empty() {
            return Ok(self);
        }
        Err(fmt_err(
            path,
            format!(
                "no documents: {} file(s) read, {} without text, {} with fewer than {} sentences, {} not UTF-8 text",
                self.files, self.skipped_empty, self.skipped_short, MIN_DOCUMENT_SENTENCES,
                self.skipped_binary
            ),
        ))
    }
}

/// Appends the regular files under `dir` (recursively; hidden entries and links to
/// folders ignored) to `out`.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let ty = entry.file_type().map_err(|e| io_err(&p, e))?;
        if ty.is_dir() {
            collect_files(&p, out)?;
        } else if ty.is_file() {
            out.push(p);
        } else if ty.is_symlink() {
            // Followed to a regular file only; a dangling link or a link to a folder is
            // ignored.
            if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// `file`'s path relative to `root`, with `/` separators.
fn relative_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The content of `file` as UTF-8 text (a leading byte-order mark dropped), after
/// checking its size against [`MAX_FILE_BYTES`]: how every text file of the crate is read
/// (corpora, labeled sentences, sentence lists). [`parse_text`] is the same without the
/// file.
///
/// # Errors
/// [`DataError::Io`] when it cannot be read; [`DataError::Format`] naming the file when it
/// is larger than [`MAX_FILE_BYTES`] or not UTF-8 (with the byte offset of the first bad
/// byte).
pub fn read_text(file: &Path) -> Result<String, DataError> {
    parse_text(read_bytes(file)?, file)
}

/// `bytes` as UTF-8 text (a leading byte-order mark dropped), the errors naming `file`:
/// what [`read_text`] returns for a file holding these bytes.
///
/// # Errors
/// [`DataError::Format`] naming `file` when `bytes` are longer than [`MAX_FILE_BYTES`] or
/// not UTF-8 (with the byte offset of the first bad byte).
pub fn parse_text(bytes: Vec<u8>, file: &Path) -> Result<String, DataError> {
    check_size(bytes.len() as u64, file)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        fmt_err(file, not_utf8(e.as_bytes()[at], at))
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The problem of a file that is not UTF-8: its first bad byte and that byte's offset.
pub(crate) fn not_utf8(byte: u8, at: usize) -> String {
    format!("{NOT_UTF8}: invalid byte 0x{byte:02x} at byte offset {at}")
}

/// An error naming `file` when `size` bytes are more than [`MAX_FILE_BYTES`].
pub(crate) fn check_size(size: u64, file: &Path) -> Result<(), DataError> {
    if size > MAX_FILE_BYTES {
        return Err(fmt_err(
            file,
            format!("file of {size} bytes is larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The bytes of `file`, its size checked against [`MAX_FILE_BYTES`] before they are read.
///
/// # Errors
/// [`DataError::Io`] when it cannot be read; [`DataError::Format`] naming the file when it
/// is larger than [`MAX_FILE_BYTES`].
pub(crate) fn read_bytes(file: &Path) -> Result<Vec<u8>, DataError> {
    let f = std::fs::File::open(file).map_err(|e| io_err(file, e))?;
    let size = f.metadata().map_err(|e| io_err(file, e))?.len();
    check_size(size, file)?;
    // Read at most one byte past the limit, in case the file grew since its size was read.
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(file, e))?;
    check_size(bytes.len() as u64, file)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_text_drops_a_byte_order_mark_and_names_the_first_bad_byte() {
        let f = Path::new("d/a.txt");
        assert_eq!(parse_text(b"\xef\xbb\xbfOne.".to_vec(), f).unwrap(), "One.");
        assert_eq!(parse_text(Vec::new(), f).unwrap(), "");
        let e = parse_text(b"ok \xff".to_vec(), f).unwrap_err().to_string();
        assert_eq!(
            e,
            "d/a.txt: not UTF-8 text: invalid byte 0xff at byte offset 3"
        );
    }

    #[test]
    fn parse_corpus_is_the_one_file_report_named_after_the_file() {
        let f = Path::new("d/story.txt");
        let r = parse_corpus(b"One here. Two there.".to_vec(), f).unwrap();
        assert_eq!((r.files, r.skipped_empty, r.skipped_short), (1, 0, 0));
        assert_eq!(r.documents.len(), 1);
        assert_eq!(r.documents[0].name, "story.txt");
        assert_eq!(r.documents[0].sentences, ["One here.", "Two there."]);
        for short in [&b""[..], b"  \n", b"Only one."] {
            let e = parse_corpus(short.to_vec(), f).unwrap_err().to_string();
            assert!(
                e.starts_with("d/story.txt: no documents: 1 file(s) read"),
                "{e}"
            );
        }
        // Through a file: the same report.
        let dir = std::env::temp_dir().join(format!("selfsup-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("story.txt");
        std::fs::write(&file, b"One here. Two there.").unwrap();
        assert_eq!(read_corpus_report(&file).unwrap(), r);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
