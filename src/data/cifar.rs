//! CIFAR-10 / CIFAR-100 binary batches.
//!
//! CIFAR-10 records: 1 label byte + 3072 pixel bytes (3 x 32 x 32, channel-planar).
//! CIFAR-100 records: coarse label byte (< 20), fine label byte (< 100), 3072 pixel bytes;
//! the fine label is used.
//!
//! A directory of CIFAR-10 holds `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//! `test_batch.bin` (test), directly or in the archive's `cifar-10-batches-bin/` subfolder;
//! a directory of CIFAR-100 holds `train.bin` and `test.bin`, directly or in
//! `cifar-100-binary/`.

use super::{fmt_err, DataError, ImageSet};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The train files of a CIFAR-10 directory, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file of a CIFAR-10 directory.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// The train file of a CIFAR-100 directory.
pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
/// The test file of a CIFAR-100 directory.
pub const CIFAR100_TEST_FILE: &str = "test.bin";

/// Parses the bytes of one CIFAR batch file; `path` only names the file in errors.
/// `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100: coarse label, which must be < 20, then the
/// fine label, which is used); `classes` (1..=256) bounds the labels.
pub fn parse_cifar_batch(
    bytes: &[u8],
    path: &Path,
    label_bytes: usize,
    classes: usize,
) -> Result<ImageSet, DataError> {
    if !(1..=2).contains(&label_bytes) {
        return Err(fmt_err(
            path,
            format!("label_bytes must be 1 (CIFAR-10) or 2 (CIFAR-100), not {label_bytes}"),
        ));
    }
    if !(1..=256).contains(&classes) {
        return Err(fmt_err(
            path,
            format!("classes must be in 1..=256 for one-byte labels, not {classes}"),
        ));
    }
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(fmt_err(path, "empty file"));
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(fmt_err(
            path,
            format!(
                "length {} is not a multiple of the record size {rec} (truncated or not a {} batch)",
                bytes.len(),
                if label_bytes == 1 { "CIFAR-10" } else { "CIFAR-100" }
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        if label_bytes == 2 && r[0] >= 20 {
            return Err(fmt_err(
                path,
                format!(
                    "record {i}: coarse label {} out of range (20 superclasses)",
                    r[0]
                ),
            ));
        }
        let label = r[label_bytes - 1] as usize;
        if label >= classes {
            return Err(fmt_err(
                path,
                format!("record {i}: label {label} out of range (classes {classes})"),
            ));
        }
        labels.push(label as u32);
    }
    let mut pixels = Vec::with_capacity(n * PIXELS);
    for r in bytes.chunks_exact(rec) {
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(ImageSet::uniform(pixels, n, 3, 32, 32).with_labels(labels, classes))
}

/// Reads one CIFAR batch file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100, fine label
/// last); `classes` bounds the labels.
pub fn read_cifar_batch(
    path: &Path,
    label_bytes: usize,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_cifar_batch(&bytes, path, label_bytes, classes)
}

/// Concatenates labeled sets of one image size (CIFAR batches) into one set.
fn concat(sets: Vec<ImageSet>) -> ImageSet {
    if sets.is_empty() {
        return ImageSet::uniform(Vec::new(), 0, 3, 32, 32);
    }
    ImageSet::concat(sets)
}

/// `dir/sub` when it is a directory (the archive's own folder), else `dir`.
fn resolve(dir: &Path, sub: &str) -> PathBuf {
    let inner = dir.join(sub);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Checks that every file exists before anything is read, naming the first missing one.
fn require(dir: &Path, names: &[&str], what: &str) -> Result<Vec<PathBuf>, DataError> {
    if !dir.is_dir() {
        return Err(fmt_err(
            dir,
            format!("not a directory ({what} expected here)"),
        ));
    }
    let mut paths = Vec::with_capacity(names.len());
    for name in names {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(fmt_err(
                &p,
                format!("missing: a {what} directory holds {}", names.join(", ")),
            ));
        }
        paths.push(p);
    }
    Ok(paths)
}

/// Reads batch files in parallel; the first error in file order wins.
fn read_all(
    paths: &[PathBuf],
    label_bytes: usize,
    classes: usize,
) -> Result<Vec<ImageSet>, DataError> {
    let results: Vec<Result<ImageSet, DataError>> = paths
        .par_iter()
        .map(|p| read_cifar_batch(p, label_bytes, classes))
        .collect();
    results.into_iter().collect()
}

/// Reads a CIFAR-10 directory (`data_batch_1..5.bin`, `test_batch.bin`, directly in `dir` or
/// in `dir/cifar-10-batches-bin/`): returns `(train, test)`, 50,000 and 10,000 images for the
/// real data set, labels `< 10`. A missing file is an error naming it.
pub fn read_cifar10_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let dir = resolve(dir, "cifar-10-batches-bin");
    let mut names: Vec<&str> = CIFAR10_TRAIN_FILES.to_vec();
    names.push(CIFAR10_TEST_FILE);
    let paths = require(&dir, &names, "CIFAR-10")?;
    let mut sets = read_all(&paths, 1, 10)?;
    let test = sets.pop().unwrap_or_else(|| concat(Vec::new()));
    Ok((concat(sets), test))
}

/// Reads a CIFAR-100 directory (`train.bin`, `test.bin`, directly in `dir` or in
/// `dir/cifar-100-binary/`): returns `(train, test)` with the fine labels (`< 100`).
pub fn read_cifar100_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let dir = resolve(dir, "cifar-100-binary");
    let paths = require(
        &dir,
        &[CIFAR100_TRAIN_FILE, CIFAR100_TEST_FILE],
        "CIFAR-100",
    )?;
    let mut sets = read_all(&paths, 2, 100)?;
    let test = sets.pop().unwrap_or_else(|| concat(Vec::new()));
    let train = sets.pop().unwrap_or_else(|| concat(Vec::new()));
    Ok((train, test))
}

/// The fine class names of a CIFAR-100 directory, from its `fine_label_names.txt` (one name
/// a line, as the archive ships it), when that file exists and holds 100 names; else `None`.
pub fn cifar100_class_names(dir: &Path) -> Option<Vec<String>> {
    let dir = resolve(dir, "cifar-100-binary");
    let p = dir.join("fine_label_names.txt");
    let meta = std::fs::metadata(&p).ok()?;
    if meta.len() > 1 << 20 {
        return None;
    }
    let text = std::fs::read_to_string(&p).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == 100).then_some(names)
}
