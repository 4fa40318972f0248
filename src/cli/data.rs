//! Loading a data spec for the commands: the training images without their labels (what
//! pretraining sees), the labels kept apart for the monitors and probes, and the test split;
//! or the text method's training and held-out documents.

use std::path::Path;

use anyhow::{Context, Result};

use selfsup::data::builtin::{builtin_splits, BuiltinConfig, CLASS_NAMES};
use selfsup::data::spec::{DataSpec, LoadOptions};
use selfsup::data::Splits;
use selfsup::text::{read_corpus_report, TextData};
use selfsup::train::available_memory;

/// The training size of a folder's images when `--image-size` is not given (a folder has no
/// size of its own): speed against accuracy and detail, docs/folders.md.
pub const FOLDER_IMAGE_SIZE: usize = 96;

/// The share of the memory available when loading that a folder's images may take (the rest
/// is the model's, the batches' and the system's).
const FOLDER_MEMORY_SHARE: f64 = 0.7;

/// Parses and loads `spec` (`builtin`, `builtin:S`, `fashion-mnist`, `idx:DIR`, ...) for
/// inputs of `image_size` (the `--image-size` flag); returns the splits and the image size
/// resolved: the flag, else the data's own size (the shorter side of its images) for data
/// of one size, else [`FOLDER_IMAGE_SIZE`] for a folder.
pub fn load_splits(spec: &str, image_size: Option<usize>) -> Result<(Splits, usize)> {
    let parsed: DataSpec = spec.parse().map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let folder = matches!(parsed, DataSpec::Folder(_));
    let (train, test, sources) = match parsed {
        DataSpec::Builtin { side } => {
            let (train, test) = builtin_splits(&BuiltinConfig {
                side,
                ..BuiltinConfig::default()
            });
            let names = CLASS_NAMES.iter().map(|n| n.to_string()).collect();
            (train, Some(test), (Some(names), None, None))
        }
        other => {
            let opts = LoadOptions {
                image_size: image_size.unwrap_or(FOLDER_IMAGE_SIZE),
                memory_limit: available_memory().map(|b| (b as f64 * FOLDER_MEMORY_SHARE) as u64),
            };
            let s = other
                .load(&opts)
                .with_context(|| format!("loading --data {spec}"))?;
            (
                s.train,
                s.test,
                (s.class_names, s.train_files, s.test_files),
            )
        }
    };
    anyhow::ensure!(train.n > 0, "--data {spec}: the training split is empty");
    // A folder has no size of its own (even when its stored images happen to share one).
    let own = train
        .uniform_size()
        .filter(|_| !folder)
        .map(|(h, w)| h.min(w));
    let size = image_size.or(own).unwrap_or(FOLDER_IMAGE_SIZE);
    let (names, train_files, test_files) = sources;
    let splits = Splits::new(train, test).with_sources(names, train_files, test_files);
    Ok((splits, size))
}

/// The smallest and largest `--image-size`.
pub const IMAGE_SIZES: (usize, usize) = (8, 512);

/// `--image-size`, for clap: a side from 8 to 512 pixels.
pub fn parse_image_size(s: &str) -> std::result::Result<usize, String> {
    let (lo, hi) = IMAGE_SIZES;
    match s.parse::<usize>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a side from {lo} to {hi} pixels, got '{s}'"
        )),
    }
}

/// Loads the text method's `builtin` (the generated corpus) or `text:PATH` (a UTF-8 file or
/// a folder of them; what was read and skipped is said on stderr).
pub fn load_text(spec: &str) -> Result<TextData> {
    if spec == "builtin" {
        return Ok(TextData::builtin());
    }
    let Some(path) = spec.strip_prefix("text:") else {
        anyhow::bail!("--data {spec}: the text method reads `builtin` or `text:PATH` (a UTF-8 file or a folder of them)");
    };
    let report = read_corpus_report(Path::new(path))?;
    let sentences: usize = report.documents.iter().map(|d| d.sentences.len()).sum();
    eprintln!(
        "{path}: {} documents, {sentences} sentences ({} files read; skipped: {} empty, {} with one sentence, {} not UTF-8 text)",
        report.documents.len(),
        report.files,
        report.skipped_empty,
        report.skipped_short,
        report.skipped_binary,
    );
    Ok(TextData::from_report(report))
}
