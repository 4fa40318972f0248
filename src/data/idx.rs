//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! An IDX file is a big-endian header, `0x00 0x00 TYPE NDIMS`, then `NDIMS` u32 dimensions,
//! then the data. Image files are `0x00000803` (u8, dimensions `n, rows, cols`); label files
//! are `0x00000801` (u8, dimension `n`). Gzip-compressed files are recognized by their first
//! two bytes (`1f 8b`), whatever their name.
//!
//! Nothing is allocated from the header's word alone: a raw file's length must equal the size
//! the header claims before its data is read, and a compressed stream is read through a limit
//! of the claimed size plus one byte (and at most [`MAX_DECOMPRESSED`] bytes), so a short
//! file, a long file or a gzip bomb is an error, not an allocation.

use super::{fmt_err, io_err, DataError, ImageSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Magic number of an IDX image file: u8 data, 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX label file: u8 data, 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The largest data section (bytes, after decompression) an IDX file may claim: 2 GiB.
pub const MAX_DECOMPRESSED: u64 = 2 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The images of an IDX image file, as stored: `n` images of `rows x cols` u8 pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `n * rows * cols` pixels, row-major, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The images as an unlabeled one-channel [`ImageSet`] (the bytes as stored).
    pub fn to_image_set(&self) -> ImageSet {
        ImageSet::uniform(self.pixels.clone(), self.n, 1, self.rows, self.cols)
    }
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown",
    }
}

/// Reads exactly `buf.len()` bytes; a short read is a format error ("truncated").
fn read_exact_or(
    r: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), DataError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            fmt_err(path, format!("truncated: the file ends inside the {what}"))
        } else if e.kind() == std::io::ErrorKind::InvalidInput
            || e.kind() == std::io::ErrorKind::InvalidData
        {
            fmt_err(path, format!("corrupt gzip stream: {e}"))
        } else {
            io_err(path, e)
        }
    })
}

/// The data part is not the size the header claims: `truncated` or `trailing bytes`,
/// naming the header's dimensions, its claim and what `what` holds (`shown`).
fn claim_err(
    path: &Path,
    dims: &[usize],
    size: u64,
    have: u64,
    what: &str,
    shown: String,
) -> DataError {
    let how = if have < size {
        "truncated"
    } else {
        "trailing bytes"
    };
    fmt_err(
        path,
        format!("{how}: header {dims:?} claims {size} bytes of data, the {what} holds {shown}"),
    )
}

/// Parses the header from `r`; returns the dimensions and the data size they claim.
fn read_header(
    r: &mut impl Read,
    path: &Path,
    want_dims: usize,
) -> Result<(Vec<usize>, u64), DataError> {
    let mut magic = [0u8; 4];
    read_exact_or(r, &mut magic, path, "header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(fmt_err(
            path,
            format!(
                "not an IDX file: magic bytes {:02x} {:02x} {:02x} {:02x} (an IDX file starts with 00 00)",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != 0x08 {
        return Err(fmt_err(
            path,
            format!(
                "IDX data type 0x{:02x} ({}) is not supported: expected 0x08 (u8)",
                magic[2],
                type_name(magic[2])
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if ndims != want_dims {
        let kind = if want_dims == 3 {
            "an image file (magic 0x00000803)"
        } else {
            "a label file (magic 0x00000801)"
        };
        return Err(fmt_err(
            path,
            format!("IDX file has {ndims} dimensions, expected {want_dims}: not {kind}"),
        ));
    }
    let mut dims = Vec::with_capacity(ndims);
    let mut size: u64 = 1;
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        read_exact_or(r, &mut d, path, "header")?;
        let d = u32::from_be_bytes(d);
        if d == 0 {
            return Err(fmt_err(
                path,
                format!("header has a zero dimension ({dims:?} then 0)"),
            ));
        }
        // Three u32 factors fit in u128; u64 overflow means far more than MAX_DECOMPRESSED.
        size = size.saturating_mul(d as u64);
        dims.push(d as usize);
    }
    if size > MAX_DECOMPRESSED {
        return Err(fmt_err(
            path,
            format!(
                "header claims {dims:?} = {size} bytes of data, more than the limit of {MAX_DECOMPRESSED}"
            ),
        ));
    }
    Ok((dims, size))
}

/// Parses the whole stream `r` (header then data). `known_len` is the stream's total length
/// when it is known up front (raw files), checked before the data is allocated.
fn parse_stream(
    r: &mut impl Read,
    known_len: Option<u64>,
    path: &Path,
    want_dims: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let (dims, size) = read_header(r, path, want_dims)?;
    let header_len = 4 + 4 * want_dims as u64;
    let mut data;
    match known_len {
        Some(len) => {
            let have = len.saturating_sub(header_len);
            if have != size {
                return Err(claim_err(path, &dims, size, have, "file", have.to_string()));
            }
            // `size` now equals bytes that exist, and is <= MAX_DECOMPRESSED.
            data = vec![0u8; size as usize];
            read_exact_or(r, &mut data, path, "data")?;
        }
        None => {
            // Compressed: grow with what actually decompresses, never past size + 1 bytes.
            data = Vec::new();
            r.take(size + 1).read_to_end(&mut data).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::InvalidInput
                    || e.kind() == std::io::ErrorKind::InvalidData
                {
                    fmt_err(path, format!("corrupt gzip stream: {e}"))
                } else {
                    io_err(path, e)
                }
            })?;
            let have = data.len() as u64;
            if have != size {
                let shown = if have > size {
                    "more".to_string()
                } else {
                    have.to_string()
                };
                return Err(claim_err(
                    path,
                    &dims,
                    size,
                    have,
                    "decompressed file",
                    shown,
                ));
            }
            // The gzip stream must end here too (its checksum is verified at its end).
            let mut rest = [0u8; 1];
            match r.read(&mut rest) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(fmt_err(
                        path,
                        format!("trailing bytes: header {dims:?} claims {size} bytes of data, the decompressed file holds more"),
                    ))
                }
                Err(e) => return Err(fmt_err(path, format!("corrupt gzip stream: {e}"))),
            }
        }
    }
    Ok((dims, data))
}

/// Parses `bytes` (raw or gzip) as an IDX file with `want_dims` dimensions.
fn parse_bytes(
    bytes: &[u8],
    path: &Path,
    want_dims: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut gz = flate2::read::MultiGzDecoder::new(bytes);
        parse_stream(&mut gz, None, path, want_dims)
    } else {
        let mut r = bytes;
        parse_stream(&mut r, Some(bytes.len() as u64), path, want_dims)
    }
}

/// Opens `path` and parses it (raw or gzip) as an IDX file with `want_dims` dimensions.
fn read_file(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut r = BufReader::new(file);
    let mut first = [0u8; 2];
    let got = read_up_to(&mut r, &mut first).map_err(|e| io_err(path, e))?;
    let head = &first[..got];
    let mut chained = head.chain(r);
    if head == GZIP_MAGIC {
        let mut gz = flate2::read::MultiGzDecoder::new(chained);
        parse_stream(&mut gz, None, path, want_dims)
    } else {
        parse_stream(&mut chained, Some(len), path, want_dims)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn images_from(dims: Vec<usize>, pixels: Vec<u8>) -> IdxImages {
    IdxImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    }
}

/// Parses the bytes of an IDX image file (raw or gzip); `path` only names the file in errors.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = parse_bytes(bytes, path, 3)?;
    Ok(images_from(dims, pixels))
}

/// Parses the bytes of an IDX label file (raw or gzip); `path` only names the file in errors.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    parse_bytes(bytes, path, 1).map(|(_, labels)| labels)
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzip.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_file(path, 3)?;
    Ok(images_from(dims, pixels))
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzip.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    read_file(path, 1).map(|(_, labels)| labels)
}

/// Pairs parsed images with their labels: the counts must match and every label must be
/// `< classes`. `labels_path` names the label file in errors.
pub fn pair_idx(
    images: &IdxImages,
    labels: &[u8],
    classes: usize,
    labels_path: &Path,
) -> Result<ImageSet, DataError> {
    if labels.len() != images.n {
        return Err(fmt_err(
            labels_path,
            format!(
                "{} labels for {} images: the counts must match",
                labels.len(),
                images.n
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(fmt_err(
            labels_path,
            format!("label {i}: {l} out of range (classes {classes})"),
        ));
    }
    let mut set = images.to_image_set();
    set.labels = Some(labels.iter().map(|&l| l as u32).collect());
    set.classes = Some(classes);
    Ok(set)
}

/// Reads an IDX image file and its label file into one labeled [`ImageSet`] (one channel,
/// values in [0, 1]); labels must be `< classes` (10 for MNIST and Fashion-MNIST).
pub fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    pair_idx(&images, &labels, classes, labels_path)
}
