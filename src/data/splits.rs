//! A dataset as self-supervised training sees it: the training images without their labels
//! (what pretraining reads), the labels kept apart for the monitors and probes, and the
//! labeled test split.

use std::path::PathBuf;
use std::sync::Arc;

use super::ImageSet;

/// A loaded dataset, with the training labels held apart from the training images.
#[derive(Debug)]
pub struct Splits {
    /// The training images, unlabeled.
    pub train: Arc<ImageSet>,
    /// The training labels, when the format has them (never given to pretraining).
    pub train_labels: Option<Vec<u32>>,
    /// The labeled test split, when the dataset has one.
    pub test: Option<ImageSet>,
    /// Classes of the labels.
    pub classes: Option<usize>,
    /// The class names in label order, when known.
    pub class_names: Option<Vec<String>>,
    /// The file of each training image (folders), in the set's order.
    pub train_files: Option<Vec<PathBuf>>,
    /// The file of each test image (folders).
    pub test_files: Option<Vec<PathBuf>>,
}

impl Splits {
    /// The splits of a training set and an optional test set: the training labels and
    /// class count are taken out of the training images.
    pub fn new(mut train: ImageSet, test: Option<ImageSet>) -> Self {
        let classes = train.classes.or(test.as_ref().and_then(|t| t.classes));
        let train_labels = train.labels.take();
        train.classes = None;
        Self {
            train: Arc::new(train),
            train_labels,
            test,
            classes,
            class_names: None,
            train_files: None,
            test_files: None,
        }
    }

    /// The splits with what is known of their provenance: the class names and the image
    /// files (for the tables and the row ids of `embed`).
    pub fn with_sources(
        mut self,
        class_names: Option<Vec<String>>,
        train_files: Option<Vec<PathBuf>>,
        test_files: Option<Vec<PathBuf>>,
    ) -> Self {
        self.class_names = class_names;
        self.train_files = train_files;
        self.test_files = test_files;
        self
    }

    /// The labeled training images and the labeled test split, when the dataset has both
    /// (what the kNN monitor and the probes measure on).
    pub fn labeled(&self) -> Option<LabeledSplits<'_>> {
        let test = self.test.as_ref()?;
        Some(LabeledSplits {
            train: &self.train,
            train_labels: self.train_labels.as_deref()?,
            test,
            test_labels: test.labels.as_deref()?,
            classes: self.classes?,
        })
    }
}

/// The labeled parts of [`Splits`].
#[derive(Clone, Copy, Debug)]
pub struct LabeledSplits<'a> {
    /// The training images.
    pub train: &'a ImageSet,
    /// Their labels.
    pub train_labels: &'a [u32],
    /// The test images.
    pub test: &'a ImageSet,
    /// Their labels.
    pub test_labels: &'a [u32],
    /// Classes of the labels.
    pub classes: usize,
}
