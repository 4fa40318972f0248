//! CIFAR-10 / CIFAR-100 binary batches.
//!
//! CIFAR-10 records: 1 label byte + 3072 pixel bytes (3 x 32 x 32, channel-planar).
//! CIFAR-100 records: coarse label byte, fine label byte, 3072 pixel bytes; the fine label is used.

use super::{DataError, ImageSet};
use std::path::Path;

const PIXELS: usize = 3 * 32 * 32;

/// Reads one CIFAR batch file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100, fine label
/// last); `classes` bounds the labels.
pub fn read_cifar_batch(
    path: &Path,
    label_bytes: usize,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let fmt = |problem: String| DataError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(fmt("empty file".into()));
    }
    if bytes.len() % rec != 0 {
        return Err(fmt(format!(
            "length {} is not a multiple of the record size {rec}",
            bytes.len()
        )));
    }
    let n = bytes.len() / rec;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[label_bytes - 1] as usize;
        if label >= classes {
            return Err(fmt(format!(
                "record {i}: label {label} out of range (classes {classes})"
            )));
        }
        labels.push(label as u32);
        images.extend(r[label_bytes..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok(ImageSet {
        images,
        labels: Some(labels),
        n,
        channels: 3,
        height: 32,
        width: 32,
        classes: Some(classes),
    })
}
