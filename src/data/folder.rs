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
//! Every image is converted to RGB (grayscale is spread to three channels, an alpha channel is
//! dropped, palettes are expanded, 16-bit samples are scaled to 8 bits) and kept as bytes at
//! its **stored size**: the shorter side resized to the caller's `storage_side` (a little
//! above the training size: [`storage_side`]) with a triangle (area-averaging) filter, the
//! aspect ratio kept; an image whose shorter side is already at most `storage_side` keeps its
//! own size (it is resampled when a view is made, never stored larger). When **every**
//! image of the folder is grayscale the set has one channel, else three. The set is
//! [`super::Sizes::Uniform`] when every stored image has the same size, else
//! [`super::Sizes::Varied`].
//!
//! Memory: before any image is decoded, the headers give every image's size, so the bytes
//! the set will hold are known; [`FolderOptions::memory_limit`] refuses a set that would not
//! fit, naming the figure, instead of running out of memory halfway. Decoding writes each
//! image straight into its place in the set (no second copy).
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

/// How a folder is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// The shorter side every image is stored at, at most (see [`storage_side`]).
    pub storage_side: usize,
    /// The most bytes the set may take in memory; `None`: no limit.
    pub memory_limit: Option<u64>,
}

impl FolderOptions {
    /// Images stored for training at `image_size` ([`storage_side`]), no memory limit.
    pub fn for_image_size(image_size: usize) -> Self {
        Self {
            storage_side: storage_side(image_size),
            memory_limit: None,
        }
    }
}

/// The shorter side images are stored at for training at `image_size`: 8/7 of it, rounded
/// up (torchvision's 256 for 224), so a random resized crop and the evaluation view have a
/// little more than the model's input to take from.
pub fn storage_side(image_size: usize) -> usize {
    (image_size * 8).div_ceil(7)
}

/// An image folder read into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    /// The images at their stored size, 1 channel if every image was grayscale else 3;
    /// labeled (`classes = class_names.len()`) for a labeled folder.
    pub set: ImageSet,
    /// The class names (subfolder names, sorted), label order; `None` when unlabeled.
    pub class_names: Option<Vec<String>>,
    /// The image files, in the set's order.
    pub files: Vec<PathBuf>,
}

/// One decoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// `height * width * 3` bytes, RGB interleaved, row-major.
    pub rgb: Vec<u8>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Whether the file itself was grayscale (then R = G = B).
    pub grayscale: bool,
}

/// The size an `height x width` image is stored at: the shorter side brought down to
/// `side` (kept when already at most `side`), the longer scaled alike (rounded, at least 1).
pub fn stored_size(height: usize, width: usize, side: usize) -> (usize, usize) {
    let short = height.min(width);
    if short <= side {
        return (height, width);
    }
    let scale = |x: usize| ((x as f64 * side as f64 / short as f64).round() as usize).max(1);
    if height <= width {
        (side, scale(width))
    } else {
        (scale(height), side)
    }
}

fn reader<'a>(bytes: &'a [u8], path: &Path) -> Result<ImageReader<Cursor<&'a [u8]>>, DataError> {
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
    Ok(reader)
}

/// Decodes one PNG or JPEG file's bytes (within the decoder limits), converts it to RGB and
/// stores it with its shorter side at most `storage_side` ([`stored_size`], triangle
/// filter). `path` only names the file in errors.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    storage_side: usize,
) -> Result<DecodedImage, DataError> {
    check_side(path, storage_side)?;
    let img = reader(bytes, path)?
        .decode()
        .map_err(|e| fmt_err(path, format!("undecodable image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fmt_err(path, "undecodable image: zero width or height"));
    }
    let grayscale = !img.color().has_color();
    let rgb = img.to_rgb8();
    drop(img);
    let (h, w) = stored_size(rgb.height() as usize, rgb.width() as usize, storage_side);
    let rgb = if rgb.width() as usize == w && rgb.height() as usize == h {
        rgb
    } else {
        image::imageops::resize(&rgb, w as u32, h as u32, FilterType::Triangle)
    };
    Ok(DecodedImage {
        rgb: rgb.into_raw(),
        height: h,
        width: w,
        grayscale,
    })
}

/// The `height x width` a file's header declares (nothing is decoded).
fn header_size(path: &Path) -> Result<(usize, usize), DataError> {
    let len = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    if len > MAX_FILE {
        return Err(fmt_err(
            path,
            format!("file of {len} bytes is larger than the limit of {MAX_FILE}"),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut head = Vec::new();
    // Headers sit at the start; 64 KiB covers PNG and JPEG (EXIF included) in practice, and
    // a file whose header lies further is read whole.
    use std::io::Read;
    file.take(64 << 10)
        .read_to_end(&mut head)
        .map_err(|e| io_err(path, e))?;
    let dims = reader(&head, path)?.into_dimensions().or_else(|_| {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        reader(&bytes, path)?
            .into_dimensions()
            .map_err(|e| fmt_err(path, format!("undecodable image: {e}")))
    })?;
    if dims.0 == 0 || dims.1 == 0 {
        return Err(fmt_err(path, "undecodable image: zero width or height"));
    }
    Ok((dims.1 as usize, dims.0 as usize))
}

fn check_side(path: &Path, side: usize) -> Result<(), DataError> {
    if side == 0 || side > MAX_SIDE as usize {
        return Err(fmt_err(
            path,
            format!("storage side {side} must be 1..={MAX_SIDE} pixels"),
        ));
    }
    Ok(())
}

/// `bytes` in a readable unit.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", (b / 1e3).ceil())
    }
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

/// Reads every file's header, checks the memory the set will take, then decodes the files
/// in parallel straight into the set (the first error in file order wins).
fn read_images(dir: &Path, files: &[PathBuf], opts: &FolderOptions) -> Result<ImageSet, DataError> {
    check_side(dir, opts.storage_side)?;
    let sizes: Vec<(usize, usize)> = files
        .par_iter()
        .map(|p| header_size(p).map(|(h, w)| stored_size(h, w, opts.storage_side)))
        .collect::<Result<_, _>>()?;
    let total: u64 = sizes.iter().map(|&(h, w)| 3 * (h * w) as u64).sum();
    if let Some(limit) = opts.memory_limit {
        if total > limit {
            let largest = sizes.iter().map(|&(h, w)| h.min(w)).max().unwrap_or(0);
            return Err(fmt_err(
                dir,
                format!(
                    "{} images stored at up to {largest} pixels on the shorter side need {} of memory, more than the {} available for them; a smaller --image-size stores them smaller",
                    files.len(),
                    human_bytes(total),
                    human_bytes(limit)
                ),
            ));
        }
    }
    let total = usize::try_from(total).map_err(|_| fmt_err(dir, "too many images for memory"))?;
    let mut pixels = vec![0u8; total];
    let mut slots = Vec::with_capacity(files.len());
    let mut rest = &mut pixels[..];
    for &(h, w) in &sizes {
        let (slot, tail) = rest.split_at_mut(3 * h * w);
        slots.push(slot);
        rest = tail;
    }
    let gray: Vec<Result<bool, DataError>> = files
        .par_iter()
        .zip(slots.into_par_iter())
        .zip(sizes.par_iter())
        .map(|((p, slot), &(h, w))| {
            let bytes = std::fs::read(p).map_err(|e| io_err(p, e))?;
            let d = decode_image(&bytes, p, opts.storage_side)?;
            if (d.height, d.width) != (h, w) {
                return Err(fmt_err(
                    p,
                    format!(
                        "the header says {h}x{w} after resizing, the decoded image is {}x{}",
                        d.height, d.width
                    ),
                ));
            }
            let plane = h * w;
            for (c, dst) in slot.chunks_exact_mut(plane).enumerate() {
                for (o, px) in dst.iter_mut().zip(d.rgb[c..].iter().step_by(3)) {
                    *o = *px;
                }
            }
            Ok(d.grayscale)
        })
        .collect();
    let gray = gray.into_iter().collect::<Result<Vec<bool>, _>>()?;
    let channels = if gray.iter().all(|&g| g) { 1 } else { 3 };
    if channels == 1 {
        // Keep the first plane of each image, moved down in place.
        let (mut from, mut to) = (0, 0);
        for &(h, w) in &sizes {
            pixels.copy_within(from..from + h * w, to);
            from += 3 * h * w;
            to += h * w;
        }
        pixels.truncate(to);
        pixels.shrink_to_fit();
    }
    let n = files.len();
    Ok(match sizes.first() {
        Some(&(h, w)) if sizes.iter().all(|&s| s == (h, w)) => {
            ImageSet::uniform(pixels, n, channels, h, w)
        }
        _ => ImageSet::packed(pixels, channels, &sizes),
    })
}

/// Reads an unlabeled folder: every PNG/JPEG below `dir` (recursively), sorted by path,
/// stored as `opts` says. No image at all is an error.
pub fn read_unlabeled_folder(dir: &Path, opts: &FolderOptions) -> Result<Folder, DataError> {
    check_side(dir, opts.storage_side)?;
    let mut files = Vec::new();
    collect_images(dir, 0, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(fmt_err(
            dir,
            format!("empty folder: no image ({}) in it", EXTENSIONS.join(", ")),
        ));
    }
    let set = read_images(dir, &files, opts)?;
    Ok(Folder {
        set,
        class_names: None,
        files,
    })
}

/// Reads a labeled folder: one subfolder per class (names sorted = label order), every
/// PNG/JPEG below each class folder, stored as `opts` says. No subfolder, or a class folder
/// without an image, is an error.
pub fn read_labeled_folder(dir: &Path, opts: &FolderOptions) -> Result<Folder, DataError> {
    check_side(dir, opts.storage_side)?;
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
    let set = read_images(dir, &files, opts)?.with_labels(labels, class_names.len());
    Ok(Folder {
        set,
        class_names: Some(class_names),
        files,
    })
}

/// Reads `dir` as labeled when it holds no image directly but at least one subfolder (see
/// [`read_labeled_folder`]), else as unlabeled ([`read_unlabeled_folder`]).
pub fn read_folder(dir: &Path, opts: &FolderOptions) -> Result<Folder, DataError> {
    if is_labeled_layout(dir)? {
        read_labeled_folder(dir, opts)
    } else {
        read_unlabeled_folder(dir, opts)
    }
}

/// Whether `dir` has the labeled layout: no image directly in it, at least one subfolder.
pub fn is_labeled_layout(dir: &Path) -> Result<bool, DataError> {
    let (files, dirs) = entries(dir)?;
    Ok(files.is_empty() && !dirs.is_empty())
}
