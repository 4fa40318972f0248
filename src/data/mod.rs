//! Datasets: the readers, the common in-memory image set and the typed error of the
//! readers.
//!
//! Every reader returns an [`ImageSet`]: `n` images as 8-bit channel planes (byte `v` is
//! the value `v / 255`), of one size or each of its own, and optional labels.

use std::path::PathBuf;

/// A reader error; every variant names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's content is malformed.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// One line of a text file is malformed.
    #[error("{path}:{line}: {problem}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// A [`DataError::Format`] for `path`: the one constructor the readers use.
pub(crate) fn fmt_err(path: &std::path::Path, problem: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// A [`DataError::Io`] for `path`.
pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub mod augment;
pub mod builtin;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod resize;
pub mod spec;
pub mod splits;

pub use image::{Extent, ImageRef, ImageSet, Sizes};
pub use splits::{LabeledSplits, Splits};
