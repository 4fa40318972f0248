//! Loading a data spec for the commands: the training images without their labels (what
//! pretraining sees), the labels kept apart for the monitors and probes, and the test split.

use std::sync::Arc;

use anyhow::{Context, Result};

use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::spec::{DataSpec, LoadOptions};
use selfsup::data::ImageSet;

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

/// Parses and loads `spec` (`builtin`, `fashion-mnist`, `idx:DIR`, ...).
pub fn load_splits(spec: &str) -> Result<Splits> {
    let parsed: DataSpec = spec.parse()?;
    let (mut train, test) = match parsed {
        DataSpec::Builtin => {
            let (train, test) = builtin_splits(&BuiltinConfig::default());
            (train, Some(test))
        }
        other => {
            let s = other
                .load(&LoadOptions::default())
                .with_context(|| format!("loading --data {spec}"))?;
            (s.train, s.test)
        }
    };
    let classes = train.classes.or(test.as_ref().and_then(|t| t.classes));
    let train_labels = train.labels.take();
    train.classes = None;
    anyhow::ensure!(train.n > 0, "--data {spec}: the training split is empty");
    Ok(Splits {
        train: Arc::new(train),
        train_labels,
        test,
        classes,
    })
}
