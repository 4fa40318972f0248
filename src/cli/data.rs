//! Loading a data spec for the commands: the training images without their labels (what
//! pretraining sees), the labels kept apart for the monitors and probes, and the test split;
//! or the text method's training and held-out documents.

use std::path::Path;

use anyhow::{Context, Result};

use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::spec::{DataSpec, LoadOptions};
use selfsup::data::Splits;
use selfsup::text::{read_corpus_report, TextData};

/// Parses and loads `spec` (`builtin`, `builtin:S`, `fashion-mnist`, `idx:DIR`, ...).
pub fn load_splits(spec: &str) -> Result<Splits> {
    let parsed: DataSpec = spec.parse()?;
    let (train, test) = match parsed {
        DataSpec::Builtin { side } => {
            let (train, test) = builtin_splits(&BuiltinConfig {
                side,
                ..BuiltinConfig::default()
            });
            (train, Some(test))
        }
        other => {
            let s = other
                .load(&LoadOptions::default())
                .with_context(|| format!("loading --data {spec}"))?;
            (s.train, s.test)
        }
    };
    anyhow::ensure!(train.n > 0, "--data {spec}: the training split is empty");
    Ok(Splits::new(train, test))
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
