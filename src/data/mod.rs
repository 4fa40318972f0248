//! Datasets: the common in-memory image set and the typed error of the readers.
//!
//! Every reader returns an [`ImageSet`]: `n` images stored as one `Vec<f32>` in NCHW order
//! (`n x channels x height x width`), values scaled to [0, 1], and optional labels.

use std::path::PathBuf;

/// An in-memory set of images of one size, NCHW, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// `n * channels * height * width` values, image after image, channel-planar.
    pub images: Vec<f32>,
    /// One label per image, each `< classes`, or `None` for unlabeled data.
    pub labels: Option<Vec<u32>>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes, when labeled.
    pub classes: Option<usize>,
}

impl ImageSet {
    /// Values per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The `i`-th image (`channels * height * width` values). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// The label of the `i`-th image, if the set is labeled.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }
}

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
pub mod loader;
pub mod spec;
pub mod splits;

pub use splits::{LabeledSplits, Splits};
