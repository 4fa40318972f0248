//! Image folders (PNG/JPEG through the `image` crate), labeled or unlabeled.
//!
//! - **Labeled**: one subfolder per class; the classes are the subfolders' names sorted
//!   (byte order), label `i` is the `i`-th name. Each class takes every image below its
//!   subfolder (recursively). A class folder without an image is an error.
//! - **Unlabeled**: every image below the folder, recursively.
//! - [`read_folder`] decides: labeled when the folder holds no image directly but at least
//!   one subfolder, unlabeled otherwise.
//!
//! Files are taken by extension (`.png`, `.jpg`, `.jpeg`, any case); other files are skipped
//! silently, and so are hidden entries (names starting with `.`). The content decides the
//! decoder, so a JPEG named `.png` decodes. Paths are sorted, so the order (and the labels) is
//! the same on every machine; images decode in parallel, results kept in that order.
//! Recursion stops at a depth of [`MAX_DEPTH`] (symlink loops).
//!
//! Every image is converted to RGB (an alpha channel is dropped, 16-bit samples are scaled to
//! 8 bits) and resized to the caller's `height x width` with a bilinear (triangle) filter, so
//! images of mixed sizes come out one size. When **every** image of the folder is grayscale
//! the set has one channel, else three.
//!
//! Decompression bombs: decoding goes through `image::ImageReader` with [`Limits`] of
//! [`MAX_SIDE`] pixels a side and [`MAX_ALLOC`] bytes, so a small file that claims a huge
//! image is an error, not an allocation.

use super::{fmt_err, io_err, DataError, ImageSet};
use image::{imageops::FilterType, ImageReader, Limits};
use rayon::prelude::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Largest accepted image width or height, in pixels (decoder limit).
pub const MAX_SIDE: u32 = 16384;
/// Largest allocation the decoder may make for one image, in bytes (decoder limit).
pub const MAX_ALLOC: u64 = 512 << 20;
/// Largest accepted image file, in bytes.
pub const MAX_FILE: u64 = 256 << 20;
/// Deepest subfolder level searched for images.
pub const MAX_DEPTH: usize = 32;
/// File extensions taken as images (compared without regard to case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// An image folder read into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    /// The images, `height x width`, 1 channel if every image was grayscale else 3; labeled
    /// (`classes = class_names.len()`) for a labeled folder.
    pub set: ImageSet,
    /// The class names (subfolder names, sorted), label order; `None` when unlabeled.
    pub class_names: Option<Vec<String>>,
    /// The image files, in the set's order.
    pub files: Vec<PathBuf>,
}

/// One decoded image, resized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// `height * width * 3` bytes, RGB interleaved, row-major.
    pub rgb: Vec<u8>,
    /// Whether the file itself was grayscale (then R = G = B).
    pub grayscale: bool,
}

fn check_size(path: &Path, height: usize, width: usize) -> Result<(), DataError> {
    if height == 0 || width == 0 || height > MAX_SIDE as usize || width > MAX_SIDE as usize {
        return Err(fmt_err(
            path,
            format!("output size {height}x{width} must be 1..={MAX_SIDE} a side"),
        ));
    }
    Ok(())
}

/// Decodes one PNG or JPEG file's bytes (within the decoder limits), converts it to RGB and
/// resizes it to `height x width` (triangle filter). `path` only names the file in errors.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    height: usize,
    width: usize,
) -> Result<DecodedImage, DataError> {
    check_size(path, height, width)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| io_err(path, e))?;
    if reader.format().is_none() {
        return Err(fmt_err(path, "undecodable image: not a PNG or JPEG file"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| fmt_err(path, format!("undecodable image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fmt_err(path, "undecodable image: zero width or height"));
    }
    let grayscale = !img.color().has_color();
    let rgb = img.to_rgb8();
    drop(img);
    let (w, h) = (width as u32, height as u32);
    let rgb = if rgb.width() == w && rgb.height() == h {
        rgb
    } else {
        image::imageops::resize(&rgb, w, h, FilterType::Triangle)
    };
    Ok(DecodedImage {
        rgb: rgb.into_raw(),
        grayscale,
    })
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The sorted non-hidden entries of `dir`, split into (image files, subfolders).
fn entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| io_err(dir, e))?.path();
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if p.is_file() && is_image_name(&p) {
            files.push(p);
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Every image file below `dir` (recursively, up to [`MAX_DEPTH`]), sorted by path.
fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(fmt_err(
            dir,
            format!("folders nested deeper than {MAX_DEPTH} levels (a symlink loop?)"),
        ));
    }
    let (files, dirs) = entries(dir)?;
    out.extend(files);
    for d in dirs {
        collect_images(&d, depth + 1, out)?;
    }
    Ok(())
}

/// Reads and decodes `files` in parallel; the first error in file order wins.
fn decode_all(
    files: &[PathBuf],
    height: usize,
    width: usize,
) -> Result<Vec<DecodedImage>, DataError> {
    let results: Vec<Result<DecodedImage, DataError>> = files
        .par_iter()
        .map(|p| {
            let len = std::fs::metadata(p).map_err(|e| io_err(p, e))?.len();
            if len > MAX_FILE {
                return Err(fmt_err(
                    p,
                    format!("file of {len} bytes is larger than the limit of {MAX_FILE}"),
                ));
            }
            let bytes = std::fs::read(p).map_err(|e| io_err(p, e))?;
            decode_image(&bytes, p, height, width)
        })
        .collect();
    results.into_iter().collect()
}

/// Builds the NCHW set from decoded images: one channel when all are grayscale.
fn assemble(
    dir: &Path,
    decoded: Vec<DecodedImage>,
    height: usize,
    width: usize,
) -> Result<ImageSet, DataError> {
    let n = decoded.len();
    let gray = decoded.iter().all(|d| d.grayscale);
    let channels = if gray { 1 } else { 3 };
    let plane = height * width;
    let total = n
        .checked_mul(channels)
        .and_then(|x| x.checked_mul(plane))
        .ok_or_else(|| fmt_err(dir, "too many images for memory"))?;
    let mut images = Vec::with_capacity(total);
    for d in &decoded {
        for c in 0..channels {
            images.extend(
                d.rgb[c..]
                    .iter()
                    .step_by(3)
                    .take(plane)
                    .map(|&b| b as f32 / 255.0),
            );
        }
    }
    Ok(ImageSet {
        images,
        labels: None,
        n,
        channels,
        height,
        width,
        classes: None,
    })
}

/// Reads an unlabeled folder: every PNG/JPEG below `dir` (recursively), sorted by path,
/// resized to `height x width`. No image at all is an error.
pub fn read_unlabeled_folder(dir: &Path, height: usize, width: usize) -> Result<Folder, DataError> {
    check_size(dir, height, width)?;
    let mut files = Vec::new();
    collect_images(dir, 0, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(fmt_err(
            dir,
            format!("empty folder: no image ({}) in it", EXTENSIONS.join(", ")),
        ));
    }
    let decoded = decode_all(&files, height, width)?;
    let set = assemble(dir, decoded, height, width)?;
    Ok(Folder {
        set,
        class_names: None,
        files,
    })
}

/// Reads a labeled folder: one subfolder per class (names sorted = label order), every
/// PNG/JPEG below each class folder, resized to `height x width`. No subfolder, or a class
/// folder without an image, is an error.
pub fn read_labeled_folder(dir: &Path, height: usize, width: usize) -> Result<Folder, DataError> {
    check_size(dir, height, width)?;
    let (_, class_dirs) = entries(dir)?;
    if class_dirs.is_empty() {
        return Err(fmt_err(
            dir,
            "empty folder: a labeled folder needs one subfolder per class",
        ));
    }
    let mut class_names = Vec::with_capacity(class_dirs.len());
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, d) in class_dirs.iter().enumerate() {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut class_files = Vec::new();
        collect_images(d, 1, &mut class_files)?;
        class_files.sort();
        if class_files.is_empty() {
            return Err(fmt_err(
                d,
                format!(
                    "class folder '{name}' holds no image ({})",
                    EXTENSIONS.join(", ")
                ),
            ));
        }
        labels.extend(std::iter::repeat_n(label as u32, class_files.len()));
        files.extend(class_files);
        class_names.push(name);
    }
    let decoded = decode_all(&files, height, width)?;
    let mut set = assemble(dir, decoded, height, width)?;
    set.labels = Some(labels);
    set.classes = Some(class_names.len());
    Ok(Folder {
        set,
        class_names: Some(class_names),
        files,
    })
}

/// Reads `dir` as labeled when it holds no image directly but at least one subfolder (see
/// [`read_labeled_folder`]), else as unlabeled ([`read_unlabeled_folder`]).
pub fn read_folder(dir: &Path, height: usize, width: usize) -> Result<Folder, DataError> {
    if is_labeled_layout(dir)? {
        read_labeled_folder(dir, height, width)
    } else {
        read_unlabeled_folder(dir, height, width)
    }
}

/// Whether `dir` has the labeled layout: no image directly in it, at least one subfolder.
pub fn is_labeled_layout(dir: &Path) -> Result<bool, DataError> {
    let (files, dirs) = entries(dir)?;
    Ok(files.is_empty() && !dirs.is_empty())
}
