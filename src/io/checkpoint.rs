//! Checkpoints: named f32 tensors and string metadata in one [safetensors] file, written
//! atomically.
//!
//! # The file
//! A standard safetensors file, readable by other tools (Python's `safetensors` package,
//! the Rust `safetensors` crate):
//!
//! ```text
//! [8 bytes: N, the header length, u64 little-endian]
//! [N bytes: a JSON object, padded with spaces so that 8 + N is a multiple of 8]
//!     "__metadata__": {"format_version": "1", "model_config": "{...}", "step": "1200", ...}
//!     "<tensor name>": {"dtype": "F32", "shape": [64, 3, 3, 3], "data_offsets": [begin, end]}
//! [the data section: every tensor's elements, f32 little-endian, row-major, back to back]
//! ```
//!
//! `data_offsets` are byte offsets into the data section. Tensors are the model's
//! parameters, its BatchNorm running statistics and the optimizer's state arenas, each under
//! the name the caller gives. The metadata holds strings only: [`keys`] names the usual ones
//! (`model_config` is a JSON string of the caller's choosing, `step`, `epoch`, `optimizer`,
//! `seed`), and [`save`] adds `format_version` = [`FORMAT_VERSION`] itself.
//!
//! # Writing: atomic
//! [`save`] writes the whole file to a fresh temporary file in the target's directory,
//! `fsync`s it, renames it over the target and then `fsync`s the directory (on Unix). A run
//! killed at any moment leaves the previous complete file or the new complete file, never a
//! torn one (at worst a stray `.<name>.tmp.<pid>.<n>` file, which [`save_in`] sweeps away).
//! On any error the temporary file is removed and the target is untouched.
//!
//! A run directory keeps its checkpoints as `ckpt-<step, 8 digits or more>.safetensors`
//! ([`checkpoint_file_name`]); [`save_in`] saves the next one and prunes all but the newest
//! few, [`latest_in`] finds the one to resume from. Each file being complete by construction,
//! the newest one is always safe to load: no separate `latest` pointer is needed.
//!
//! # Reading: untrusted input
//! [`load`] treats the file as untrusted: a truncated file, a header length past the end of
//! the file, a header that is not the expected JSON, a repeated key, offsets out of range,
//! overlapping or leaving gaps, a size that does not match the shape, a dtype other than
//! `F32`, a `format_version` this build does not know, a missing file, a directory, an
//! unreadable file: each is a [`CheckpointError`] naming the file and the problem, never a
//! panic. Every size read from the header is checked against the file's length before
//! anything is allocated for it, and the header itself is capped at [`MAX_HEADER_LEN`]
//! bytes, so memory stays within a small multiple of the file's size.
//!
//! Each tensor's header entry is parsed by the [`safetensors` crate]'s own types
//! (`TensorInfo`, `Dtype`), and its `Metadata::new` validates the layout before any data is
//! read. This module adds what the crate leaves to its users: the file read with bounded
//! allocations (the crate wants the whole file in memory), repeated keys refused (the
//! crate keeps the last), errors that name the tensor and the numbers, F32 only, finite
//! values only, the format version.
//!
//! The writer is this module's own: the crate's `serialize` orders the data by dtype and
//! name, writes each entry's fields in another order and the metadata in hash order, so
//! its files would differ from the ones written so far and from one save to the next. The
//! bytes [`save`] writes are fixed: tensors' data in the order given, header keys sorted.
//!
//! **Non-finite values are errors**, on both sides: a training checkpoint never legitimately
//! holds NaN or infinity (they mean the run diverged), so [`save`] refuses to write one
//! (keeping the previous, good checkpoint in place) and [`load`] refuses to read one, each
//! naming the tensor and the first bad element.
//!
//! # Restoring a model
//! [`Checkpoint::check_layout`] compares the whole file against the model (every expected
//! tensor present with its shape, nothing else) before anything is copied; then
//! [`Checkpoint::copy_into`] or [`Checkpoint::take`] move each tensor into place. A
//! checkpoint of another architecture is an error such as
//! `checkpoint run/ckpt.safetensors: tensor 'block2.conv1.weight' has shape [64, 32, 3, 3],
//! the model expects [128, 64, 3, 3]`.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use selfsup::io::checkpoint::{self, keys, TensorView};
//!
//! # fn main() -> Result<(), checkpoint::CheckpointError> {
//! let weight = vec![0.5f32; 8 * 3 * 3 * 3];
//! let mut meta = BTreeMap::new();
//! meta.insert(keys::STEP.to_string(), "1200".to_string());
//! checkpoint::save(
//!     "run/ckpt.safetensors",
//!     &[TensorView::new("conv1.weight", &[8, 3, 3, 3], &weight)],
//!     &meta,
//! )?;
//!
//! let ckpt = checkpoint::load("run/ckpt.safetensors")?;
//! ckpt.check_layout([("conv1.weight", &[8usize, 3, 3, 3][..])])?;
//! let mut restored = vec![0.0f32; weight.len()];
//! ckpt.copy_into("conv1.weight", &[8, 3, 3, 3], &mut restored)?;
//! let step: u64 = ckpt.meta_parse(keys::STEP)?;
//! # let _ = step;
//! # Ok(())
//! # }
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors
//! [`safetensors` crate]: https://docs.rs/safetensors

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorInfo;
use safetensors::Dtype;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::Shape;

use super::atomic::AtomicWriteError;

/// The value [`save`] writes under [`keys::FORMAT_VERSION`]; [`load`] rejects any other
/// (a file without the key, e.g. written by another tool, is accepted).
pub const FORMAT_VERSION: &str = "1";

/// The largest JSON header [`load`] accepts, in bytes (16 MiB). A checkpoint of thousands of
/// tensors has a header of a few hundred KiB; the cap bounds what a hostile file can make the
/// parser allocate.
pub const MAX_HEADER_LEN: u64 = 16 << 20;

/// The largest number of dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// The well-known metadata keys. Any other key is allowed too, and kept as it is.
pub mod keys {
    /// The checkpoint format's version, written by [`save`](super::save) itself.
    pub const FORMAT_VERSION: &str = "format_version";
    /// The model's configuration, a JSON string of the caller's choosing.
    pub const MODEL_CONFIG: &str = "model_config";
    /// The optimizer step the state was saved after.
    pub const STEP: &str = "step";
    /// The epoch the state was saved in.
    pub const EPOCH: &str = "epoch";
    /// The optimizer's name and hyper-parameters.
    pub const OPTIMIZER: &str = "optimizer";
    /// The run's seed.
    pub const SEED: &str = "seed";
}

/// The header key under which safetensors keeps the string metadata.
const METADATA_KEY: &str = "__metadata__";

/// Bytes per element: only F32 is written or read.
const F32_BYTES: usize = 4;

/// Everything that can go wrong reading or writing a checkpoint. Each variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The operating system refused: a missing file or directory, no permission, a full disk.
    #[error("checkpoint {}: cannot {action}: {error}", .path.display())]
    Io {
        path: PathBuf,
        /// What was being done, e.g. `open the file for reading`.
        action: String,
        error: io::Error,
    },
    /// The path names a directory or another kind of non-regular file.
    #[error("checkpoint {}: not a regular file ({kind})", .path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The bytes are not a valid safetensors file: truncated, a bad header, bad offsets.
    #[error("checkpoint {}: corrupt safetensors file: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A tensor stored in another dtype than F32.
    #[error("checkpoint {}: tensor '{name}' has dtype {dtype}; only F32 is supported", .path.display())]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A NaN or infinite element, on load or on save.
    #[error("checkpoint {}: tensor '{name}' holds {value} at flat index {index}; a checkpoint holds finite values only", .path.display())]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    /// A `format_version` this build does not read.
    #[error("checkpoint {}: format_version '{found}' is not supported (this build reads '{FORMAT_VERSION}')", .path.display())]
    UnsupportedVersion { path: PathBuf, found: String },
    /// A tensor whose shape differs from the one the model expects.
    #[error("checkpoint {}: tensor '{name}' has shape {found}, the model expects {expected}", .path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        found: Shape,
        expected: Shape,
    },
    /// A tensor the model expects that the file does not hold.
    #[error("checkpoint {}: no tensor '{name}' (the model expects one of shape {expected})", .path.display())]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Shape,
    },
    /// Tensors in the file that the model does not have (sorted by name).
    #[error("checkpoint {}: {} tensor(s) the model does not have: {}", .path.display(), .names.len(), NameList(.names))]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },
    /// A metadata key the caller needs that the file does not hold.
    #[error("checkpoint {}: no metadata '{key}'", .path.display())]
    MissingMetadata { path: PathBuf, key: String },
    /// A metadata value the caller could not parse.
    #[error("checkpoint {}: metadata '{key}' = {value:?} is invalid: {reason}", .path.display())]
    InvalidMetadata {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    /// The caller's arguments do not fit together (a data length that does not match the
    /// shape, a duplicate tensor name, a destination of the wrong size).
    #[error("checkpoint {}: {reason}", .path.display())]
    InvalidArgument { path: PathBuf, reason: String },
}

impl CheckpointError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotAFile { path, .. }
            | Self::Corrupt { path, .. }
            | Self::UnsupportedDtype { path, .. }
            | Self::NonFinite { path, .. }
            | Self::UnsupportedVersion { path, .. }
            | Self::ShapeMismatch { path, .. }
            | Self::MissingTensor { path, .. }
            | Self::UnexpectedTensors { path, .. }
            | Self::MissingMetadata { path, .. }
            | Self::InvalidMetadata { path, .. }
            | Self::InvalidArgument { path, .. } => path,
        }
    }
}

/// Formats at most ten names, quoted, then how many more there are.
struct NameList<'a>(&'a [String]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        for (i, name) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "'{name}'")?;
        }
        if self.0.len() > SHOWN {
            write!(f, " and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

fn io_err(path: &Path, action: impl Into<String>, error: io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.to_path_buf(),
        action: action.into(),
        error,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::InvalidArgument {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One tensor to save: its name, its shape and its elements (row-major, `product(shape)` of
/// them; a shape `[]` is a scalar with one element).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view of `data` as a tensor `name` of shape `shape` (checked by [`save`]).
    pub fn new(name: &'a str, shape: &'a [usize], data: &'a [f32]) -> Self {
        Self { name, shape, data }
    }
}

/// One tensor read from a checkpoint: `data.len()` is the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The number of elements of `shape`, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The index and value of the first non-finite element.
fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    data.iter()
        .position(|x| !x.is_finite())
        .map(|i| (i, data[i]))
}

// ---------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------

/// Writes `tensors` and `metadata` to `path` as a safetensors file, atomically (see the
/// module docs): on success the file is complete and durable, on error the previous file at
/// `path` (if any) is untouched and no temporary file is left behind.
///
/// `metadata` may hold any keys; `format_version` is added as [`FORMAT_VERSION`] (a caller's
/// value for it must equal that). Tensors are written in the order given.
///
/// Errors, all before anything is written: a data length that does not match its shape, a
/// shape of more than [`MAX_RANK`] dimensions, a duplicate name or the reserved name
/// `__metadata__` ([`CheckpointError::InvalidArgument`]), a NaN or infinite element
/// ([`CheckpointError::NonFinite`]); then the operating system's errors
/// ([`CheckpointError::Io`]), e.g. for a missing directory.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[TensorView<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let header = encode_header(path, tensors, metadata)?;
    write_atomically(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for t in tensors {
            write_f32_le(w, t.data)?;
        }
        Ok(())
    })
}

/// Checks the tensors and builds the padded JSON header.
fn encode_header(
    path: &Path,
    tensors: &[TensorView<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    use serde_json::{Map, Value};

    let mut meta = metadata.clone();
    match meta.get(keys::FORMAT_VERSION) {
        Some(v) if v != FORMAT_VERSION => {
            return Err(invalid(
                path,
                format!(
                    "metadata format_version = {v:?}: save writes version {FORMAT_VERSION:?} only"
                ),
            ))
        }
        _ => {
            meta.insert(keys::FORMAT_VERSION.into(), FORMAT_VERSION.into());
        }
    }

    let mut header = Map::new();
    header.insert(
        METADATA_KEY.into(),
        Value::Object(
            meta.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    let mut offset = 0usize;
    for t in tensors {
        if t.name == METADATA_KEY {
            return Err(invalid(
                path,
                format!("the tensor name '{METADATA_KEY}' is reserved for the metadata"),
            ));
        }
        if t.shape.len() > MAX_RANK {
            return Err(invalid(
                path,
                format!(
                    "tensor '{}' has shape {} of {} dimensions, at most {MAX_RANK} are supported",
                    t.name,
                    Shape(t.shape.to_vec()),
                    t.shape.len()
                ),
            ));
        }
        match numel(t.shape) {
            Some(n) if n == t.data.len() => {}
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "tensor '{}' has shape {} but {} elements",
                        t.name,
                        Shape(t.shape.to_vec()),
                        t.data.len()
                    ),
                ))
            }
        }
        if let Some((index, value)) = first_non_finite(t.data) {
            return Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                name: t.name.to_string(),
                index,
                value,
            });
        }
        let end = t
            .data
            .len()
            .checked_mul(F32_BYTES)
            .and_then(|b| offset.checked_add(b))
            .ok_or_else(|| invalid(path, "the tensors' total size overflows"))?;
        let info = serde_json::json!({
            "dtype": "F32",
            "shape": t.shape,
            "data_offsets": [offset, end],
        });
        if header.insert(t.name.to_string(), info).is_some() {
            return Err(invalid(path, format!("tensor '{}' is given twice", t.name)));
        }
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| invalid(path, format!("cannot encode the header: {e}")))?;
    // Pad with spaces so that the data section starts 8-byte aligned, as safetensors does.
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    Ok(bytes)
}

/// Writes `data` as f32 little-endian.
fn write_f32_le(w: &mut dyn Write, data: &[f32]) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        w.write_all(bytemuck::cast_slice(data))
    } else {
        let mut buf = Vec::with_capacity(16 << 10);
        for chunk in data.chunks(4 << 10) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    }
}

/// A checkpoint error where the crate's [`crate::Error`] is wanted (a training run's file):
/// the same message, as [`crate::Error::Run`].
impl From<CheckpointError> for crate::Error {
    fn from(e: CheckpointError) -> Self {
        crate::Error::Run(e.to_string())
    }
}

/// Writes a file atomically ([`super::atomic::write_atomically`]), its errors as
/// [`CheckpointError`]s naming the file. [`save`] uses it; it serves any other file of a run
/// (a config, a log of results) that must never be seen half-written.
pub fn write_atomically(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    super::atomic::write_atomically(path, write).map_err(|e| match e {
        AtomicWriteError::NoFileName { path } => invalid(&path, "the path has no file name"),
        AtomicWriteError::Io {
            path,
            action,
            error,
        } => io_err(&path, action, error),
    })
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// A checkpoint read by [`load`]: its metadata and its tensors by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    path: PathBuf,
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, Tensor>,
}

/// Opens `path` and reads and parses its safetensors header (the length checked against the
/// file and [`MAX_HEADER_LEN`] before anything is allocated for it, the format version
/// checked); returns the file positioned after the header, the file's length, the header's
/// length and the parsed header.
fn read_header(path: &Path) -> Result<(File, u64, u64, RawHeader)> {
    let mut file = File::open(path).map_err(|e| io_err(path, "open the file for reading", e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_err(path, "read the file's metadata", e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(CheckpointError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let file_len = meta.len();

    if file_len < 8 {
        return Err(corrupt(
            path,
            format!("the file is {file_len} bytes, shorter than the 8-byte header length"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    read_exact(&mut file, &mut len_bytes, path, "the header length")?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > file_len - 8 {
        return Err(corrupt(
            path,
            format!(
                "the header length {header_len} exceeds the {} bytes after it",
                file_len - 8
            ),
        ));
    }
    if header_len > MAX_HEADER_LEN {
        return Err(corrupt(
            path,
            format!("the header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes"),
        ));
    }
    // Both bounds hold, so these fit in usize.
    let mut header = vec![0u8; header_len as usize];
    read_exact(&mut file, &mut header, path, "the header")?;
    let raw = parse_header(path, &header)?;
    if let Some(v) = raw
        .metadata
        .as_ref()
        .and_then(|m| m.get(keys::FORMAT_VERSION))
    {
        if v != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: v.clone(),
            });
        }
    }
    Ok((file, file_len, header_len, raw))
}

/// The metadata of a checkpoint, from its header alone (the tensors are not read or
/// checked: [`load`] does that). For deciding what a file is before loading it.
///
/// # Errors
/// As [`load`] for the file and its header.
pub fn load_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    let (_, _, _, raw) = read_header(path.as_ref())?;
    Ok(raw.metadata.unwrap_or_default())
}

/// Reads and checks a checkpoint written by [`save`] (or any safetensors file of finite F32
/// tensors of at most [`MAX_RANK`] dimensions). See the module docs for what is checked;
/// every failure is a [`CheckpointError`] naming `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let (mut file, file_len, header_len, raw) = read_header(path)?;
    let data_len = file_len - 8 - header_len;
    let metadata = raw.metadata.unwrap_or_default();

    // Check every entry against the data section before allocating anything for it: the
    // checks `safetensors::tensor::Metadata::new` makes (sizes from shape and dtype without
    // overflow, offsets back to back), made here so that the error names the tensor and the
    // numbers.
    let mut entries = raw.tensors;
    for (name, info) in &entries {
        if info.dtype != Dtype::F32 {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: info.dtype.to_string(),
            });
        }
        let (begin, end) = info.data_offsets;
        if begin > end || end as u64 > data_len {
            return Err(corrupt(
                path,
                format!(
                    "tensor '{name}' has data_offsets [{begin}, {end}], outside the data section of {data_len} bytes"
                ),
            ));
        }
        let bytes = numel(&info.shape).and_then(|n| n.checked_mul(F32_BYTES));
        if bytes != Some(end - begin) {
            return Err(corrupt(
                path,
                format!(
                    "tensor '{name}' of shape {} needs {} bytes, its data_offsets [{begin}, {end}] span {}",
                    Shape(info.shape.clone()),
                    bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
                    end - begin
                ),
            ));
        }
    }
    // The tensors must tile the data section exactly: no overlap, no gap, nothing after.
    entries.sort_by(|(a, ia), (b, ib)| (ia.data_offsets, a).cmp(&(ib.data_offsets, b)));
    let mut cursor = 0usize;
    let mut previous: Option<&str> = None;
    for (name, info) in &entries {
        let (begin, end) = info.data_offsets;
        if begin != cursor {
            let what = if begin < cursor {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            let prev = previous.map_or_else(
                || "the start of the data".to_string(),
                |p| format!("tensor '{p}'"),
            );
            return Err(corrupt(
                path,
                format!(
                    "tensor '{name}' at data_offsets [{begin}, {end}] {what} {prev}, which ends at {cursor}"
                ),
            ));
        }
        cursor = end;
        previous = Some(name);
    }
    if cursor as u64 != data_len {
        return Err(corrupt(
            path,
            format!("the tensors cover {cursor} bytes of the {data_len}-byte data section"),
        ));
    }

    // Read the data section in file order; every size was bounded by the file's length.
    let mut tensors = BTreeMap::new();
    for (name, info) in entries {
        let (begin, end) = info.data_offsets;
        let mut data = vec![0f32; (end - begin) / F32_BYTES];
        read_exact(
            &mut file,
            bytemuck::cast_slice_mut(&mut data),
            path,
            &format!("tensor '{name}'"),
        )?;
        if cfg!(target_endian = "big") {
            for x in &mut data {
                *x = f32::from_bits(u32::from_le(x.to_bits()));
            }
        }
        if let Some((index, value)) = first_non_finite(&data) {
            return Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                name,
                index,
                value,
            });
        }
        tensors.insert(
            name,
            Tensor {
                shape: info.shape,
                data,
            },
        );
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        metadata,
        tensors,
    })
}

/// `read_exact`, with a file that ends early reported as truncated.
fn read_exact(file: &mut File, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    file.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(path, format!("the file ends inside {what} (truncated)"))
        } else {
            io_err(path, format!("read {what}"), e)
        }
    })
}

/// The header as parsed, before any check against the data section: the metadata, and each
/// tensor's entry as the `safetensors` crate reads it, in the header's order.
struct RawHeader {
    metadata: Option<BTreeMap<String, String>>,
    tensors: Vec<(String, TensorInfo)>,
}

/// Parses the JSON header: its top level as a list of keys with their values still raw (so
/// that a repeated key is seen, where a map would keep the last one), then each value with
/// the `safetensors` crate's own types ([`TensorInfo`], [`Dtype`]) or as the string
/// metadata. No intermediate `serde_json::Value` (whose per-element overhead would let a
/// small hostile header take much memory), and values that nobody reads are skipped
/// without recursion.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<RawHeader> {
    let bad = |what: String| corrupt(path, format!("bad header: {what}"));
    let Entries(entries) = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut seen = BTreeSet::new();
    for (key, _) in &entries {
        if !seen.insert(key.as_str()) {
            return Err(bad(if key == METADATA_KEY {
                format!("{METADATA_KEY} appears twice")
            } else {
                format!("tensor '{key}' appears twice")
            }));
        }
    }
    drop(seen);

    let mut header = RawHeader {
        metadata: None,
        tensors: Vec::with_capacity(entries.len()),
    };
    for (key, value) in entries {
        if key == METADATA_KEY {
            header.metadata = serde_json::from_str(value.get())
                .map_err(|e| bad(format!("{METADATA_KEY}: {}", json_message(&e))))?;
            continue;
        }
        let info: TensorInfo = match serde_json::from_str(value.get()) {
            Ok(info) => info,
            Err(e) => return Err(entry_error(path, key, value, &e)),
        };
        if info.shape.len() > MAX_RANK {
            return Err(bad(format!(
                "tensor '{key}' has a shape of more than {MAX_RANK} dimensions ({})",
                info.shape.len()
            )));
        }
        header.tensors.push((key, info));
    }
    Ok(header)
}

/// The error for a tensor entry that does not parse as a [`TensorInfo`]: a `dtype` string
/// the crate does not know is [`CheckpointError::UnsupportedDtype`], a `dtype` that is no
/// string says so, anything else is the parser's message; all under the tensor's name.
fn entry_error(
    path: &Path,
    name: String,
    value: &RawValue,
    e: &serde_json::Error,
) -> CheckpointError {
    #[derive(Deserialize)]
    struct DtypeOnly<'a> {
        #[serde(borrow)]
        dtype: &'a RawValue,
    }
    let mut message = json_message(e);
    if let Ok(DtypeOnly { dtype }) = serde_json::from_str(value.get()) {
        match serde_json::from_str::<String>(dtype.get()) {
            Ok(dtype) => {
                if serde_json::from_value::<Dtype>(serde_json::Value::String(dtype.clone()))
                    .is_err()
                {
                    return CheckpointError::UnsupportedDtype {
                        path: path.to_path_buf(),
                        name,
                        dtype,
                    };
                }
            }
            Err(e) => message = format!("dtype: {}", json_message(&e)),
        }
    }
    corrupt(path, format!("bad header: tensor '{name}': {message}"))
}

/// A JSON error's message without its position (which counts within one value of the
/// header, not within the header).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&position) {
        Some(message) => message.to_string(),
        None => full,
    }
}

/// The header's top level: each key with its value unparsed (a slice of the header), in
/// order, repeated keys included.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl Checkpoint {
    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata, `format_version` included.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The metadata value under `key`, or [`CheckpointError::MissingMetadata`].
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::MissingMetadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// The metadata value under `key` parsed as a `T` (e.g. `u64` for `step`), or
    /// [`CheckpointError::MissingMetadata`] / [`CheckpointError::InvalidMetadata`].
    pub fn meta_parse<T>(&self, key: &str) -> Result<T>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        let value = self.meta(key)?;
        value
            .parse()
            .map_err(|e: T::Err| CheckpointError::InvalidMetadata {
                path: self.path.clone(),
                key: key.to_string(),
                value: value.to_string(),
                reason: e.to_string(),
            })
    }

    /// All tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// The tensor `name`, if the file holds it.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Views of all tensors, sorted by name: what [`save`] takes, to write the checkpoint
    /// again.
    pub fn views(&self) -> Vec<TensorView<'_>> {
        self.tensors
            .iter()
            .map(|(name, t)| TensorView::new(name, &t.shape, &t.data))
            .collect()
    }

    /// The tensor `name` with the shape `expected`, or the error naming both.
    fn get_checked(&self, name: &str, expected: &[usize]) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.into(),
            })?;
        if t.shape != expected {
            return Err(CheckpointError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                found: Shape(t.shape.clone()),
                expected: expected.into(),
            });
        }
        Ok(t)
    }

    /// Removes the tensor `name` and returns its elements, if it has the shape
    /// `expected_shape`; otherwise [`CheckpointError::MissingTensor`] or
    /// [`CheckpointError::ShapeMismatch`], and the checkpoint is unchanged.
    pub fn take(&mut self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        self.get_checked(name, expected_shape)?;
        Ok(self
            .tensors
            .remove(name)
            .map(|t| t.data)
            .unwrap_or_default())
    }

    /// Copies the tensor `name` into `dst`, if it has the shape `shape`; otherwise
    /// [`CheckpointError::MissingTensor`] or [`CheckpointError::ShapeMismatch`]. A `dst`
    /// whose length is not the product of `shape` is a
    /// [`CheckpointError::InvalidArgument`]. On error `dst` is untouched.
    pub fn copy_into(&self, name: &str, shape: &[usize], dst: &mut [f32]) -> Result<()> {
        let t = self.get_checked(name, shape)?;
        if dst.len() != t.data.len() {
            return Err(invalid(
                &self.path,
                format!(
                    "tensor '{name}' of shape {} has {} elements, the destination {}",
                    Shape(shape.to_vec()),
                    t.data.len(),
                    dst.len()
                ),
            ));
        }
        dst.copy_from_slice(&t.data);
        Ok(())
    }

    /// `Ok` when the file holds no tensor outside `names`, else
    /// [`CheckpointError::UnexpectedTensors`] listing the others.
    pub fn check_only<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> Result<()> {
        let known: BTreeSet<String> = names.into_iter().map(|s| s.as_ref().to_string()).collect();
        let extra: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .cloned()
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::UnexpectedTensors {
                path: self.path.clone(),
                names: extra,
            })
        }
    }

    /// Checks the whole file against a model before anything is copied: every `(name,
    /// shape)` in `expected` is present with that shape (the first one that is not is the
    /// error, in `expected`'s order), and the file holds nothing else
    /// ([`Checkpoint::check_only`]).
    pub fn check_layout<'a>(
        &self,
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<()> {
        let mut names = Vec::new();
        for (name, shape) in expected {
            self.get_checked(name, shape)?;
            names.push(name);
        }
        self.check_only(names)
    }

    /// The metadata and the tensors, by value.
    pub fn into_parts(self) -> (BTreeMap<String, String>, BTreeMap<String, Tensor>) {
        (self.metadata, self.tensors)
    }
}

// ---------------------------------------------------------------------------------------
// Run directories
// ---------------------------------------------------------------------------------------

const CKPT_PREFIX: &str = "ckpt-";
const CKPT_SUFFIX: &str = ".safetensors";

/// The file name of the checkpoint after `step` in a run directory:
/// `ckpt-00001200.safetensors` (at least 8 digits, so that names sort like steps up to 10^8).
pub fn checkpoint_file_name(step: u64) -> String {
    format!("{CKPT_PREFIX}{step:08}{CKPT_SUFFIX}")
}

/// The step of a name of the form [`checkpoint_file_name`] gives (`ckpt-<digits>.safetensors`,
/// any number of digits), `None` for any other name.
pub fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CKPT_PREFIX)?.strip_suffix(CKPT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The checkpoints in a run directory, `(step, path)` sorted by step (oldest first). Other
/// files, temporary files included, are ignored.
pub fn list_in(dir: impl AsRef<Path>) -> Result<Vec<(u64, PathBuf)>> {
    let dir = dir.as_ref();
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, "list the run directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list the run directory", e))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(parse_checkpoint_file_name) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest checkpoint of a run directory, the one to resume from, `None` if it has none.
/// Every checkpoint being written atomically, the newest is complete even after a crash.
pub fn latest_in(dir: impl AsRef<Path>) -> Result<Option<(u64, PathBuf)>> {
    Ok(list_in(dir)?.pop())
}

/// Saves the checkpoint after `step` into the run directory `dir` (which must exist) as
/// [`checkpoint_file_name`]`(step)`, with [`save`], then keeps it and the `keep_last - 1`
/// newest others, removing older checkpoints and the temporary files that killed runs left
/// behind. Returns the new file's path. `keep_last` must be at least 1 (`usize::MAX` keeps
/// everything).
///
/// One process writes a run directory at a time, with increasing steps: a temporary file
/// from a concurrent writer would be swept away.
pub fn save_in(
    dir: impl AsRef<Path>,
    step: u64,
    tensors: &[TensorView<'_>],
    metadata: &BTreeMap<String, String>,
    keep_last: usize,
) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let path = dir.join(checkpoint_file_name(step));
    if keep_last == 0 {
        return Err(invalid(&path, "keep_last must be at least 1"));
    }
    save(&path, tensors, metadata)?;

    let mut others: Vec<(u64, PathBuf)> = list_in(dir)?
        .into_iter()
        .filter(|(_, p)| *p != path)
        .collect();
    let keep_others = keep_last - 1;
    if others.len() > keep_others {
        let stale = others.len() - keep_others;
        for (_, old) in others.drain(..stale) {
            remove_if_present(&old, "remove the old checkpoint")?;
        }
    }
    // Temporary files of saves that were killed before their rename.
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, "list the run directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list the run directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_temp = name
            .strip_prefix('.')
            .and_then(|n| n.split_once(".tmp."))
            .is_some_and(|(target, _)| parse_checkpoint_file_name(target).is_some());
        if is_temp {
            remove_if_present(&entry.path(), "remove the stale temporary file")?;
        }
    }
    Ok(path)
}

fn remove_if_present(path: &Path, action: &str) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, action, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(checkpoint_file_name(1200), "ckpt-00001200.safetensors");
        assert_eq!(
            parse_checkpoint_file_name(&checkpoint_file_name(1200)),
            Some(1200)
        );
        assert_eq!(
            parse_checkpoint_file_name(&checkpoint_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "ckpt-.safetensors",
            "ckpt-12a.safetensors",
            "ckpt-+12.safetensors",
            "ckpt-12.safetensors.tmp",
            ".ckpt-12.safetensors.tmp.1.2",
            "ckpt-99999999999999999999999.safetensors",
        ] {
            assert_eq!(parse_checkpoint_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_is_padded_to_eight_bytes() {
        for name in [
            "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh",
        ] {
            let h = encode_header(
                Path::new("x"),
                &[TensorView::new(name, &[1], &[1.0])],
                &BTreeMap::new(),
            )
            .unwrap();
            assert_eq!(h.len() % 8, 0);
            assert_eq!(h[0], b'{');
        }
    }
}
