//! A dataset as self-supervised training sees it: the training images without their labels
//! (what pretraining reads), the labels kept apart for the monitors and probes, and the
//! labeled test split.

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
        }
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
