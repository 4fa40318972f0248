//! Bilinear resampling of a crop of an image to a square (torchvision's `resized_crop`
//! without antialiasing: half-pixel centers, `align_corners = false`), separable and 8 lanes
//! wide; and the evaluation view built on it: the shorter side resized to the model's size,
//! then the central square (torchvision's `Resize(S)` + `CenterCrop(S)`), which is an exact
//! copy for an image already `S x S`.
//!
//! The source is f32 values or bytes ([`Sample`]): a stored 8-bit image is cropped and
//! resampled straight into the f32 view, never converted whole.

use super::image::{ImageRef, Sample};
use super::ImageSet;
use rayon::prelude::*;
use wide::f32x8;

/// A crop rectangle in pixels: rows `top..top + height`, columns `left..left + width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows in the crop (at least 1).
    pub height: usize,
    /// Columns in the crop (at least 1).
    pub width: usize,
}

impl CropBox {
    /// The whole `height x width` image.
    pub fn full(height: usize, width: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height,
            width,
        }
    }
}

/// One bilinear tap: `out = a[i0] * w0 + a[i1] * w1`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tap {
    i0: u32,
    i1: u32,
    w0: f32,
    w1: f32,
}

/// Fills `taps` with the bilinear taps (align_corners = false) from `len` source samples
/// to `out` samples, as PyTorch's `upsample_bilinear2d`: source coordinate
/// `(d + 0.5) * len / out - 0.5`, clamped at 0, right neighbour clamped at the edge.
/// Reversed when `flip`.
fn bilinear_taps(taps: &mut Vec<Tap>, len: usize, out: usize, flip: bool) {
    taps.clear();
    let scale = len as f64 / out as f64;
    taps.extend((0..out).map(|d| {
        let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        let l1 = (src - i0 as f64) as f32;
        Tap {
            i0: i0 as u32,
            i1: i1 as u32,
            w0: 1.0 - l1,
            w1: l1,
        }
    }));
    if flip {
        taps.reverse();
    }
}

/// Turns the column taps into bands of 8 outputs: for each block, the source columns it
/// reads and, per source column, an 8-lane vector of its weights in the block's outputs
/// (zero where an output does not read it; zero lanes past the last output). A block's
/// outputs are then a sum of broadcast source values times weight vectors, 8 lanes wide.
fn column_bands(taps: &[Tap], bands: &mut Vec<(u32, u32)>, weights: &mut Vec<f32x8>) {
    bands.clear();
    weights.clear();
    for block in taps.chunks(8) {
        let lo = block.iter().map(|t| t.i0.min(t.i1)).min().unwrap_or(0);
        let hi = block.iter().map(|t| t.i0.max(t.i1)).max().unwrap_or(0);
        let first = weights.len();
        weights.resize(first + (hi - lo + 1) as usize, f32x8::ZERO);
        let band = &mut weights[first..];
        for (lane, t) in block.iter().enumerate() {
            for (i, wt) in [(t.i0, t.w0), (t.i1, t.w1)] {
                let v = &mut band[(i - lo) as usize];
                let mut a = v.to_array();
                a[lane] += wt;
                *v = f32x8::from(a);
            }
        }
        bands.push((lo, hi - lo + 1));
    }
}

/// Crops `crop` out of the `c x h x w` image `src`, resamples it bilinearly (half-pixel
/// centers, as torchvision's `resized_crop` without antialiasing) to `c x out_size x
/// out_size` into `dst`, mirrored left-right when `flip`. Separable: the crop's rows that
/// the output needs are resampled along x into a scratch plane, 8 outputs at a time from
/// banded weight vectors built once per crop, then each output row blends two of those rows.
/// The full crop at the input size is an exact copy.
///
/// # Panics
/// If `src.len() != c * h * w`, `dst.len() != c * out_size * out_size`, `out_size == 0` or
/// the crop is empty or leaves the image.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn resized_crop<S: Sample>(
    src: &[S],
    c: usize,
    h: usize,
    w: usize,
    crop: CropBox,
    flip: bool,
    out_size: usize,
    dst: &mut [f32],
    scratch: &mut ResizeScratch,
) {
    assert_eq!(src.len(), c * h * w, "resized_crop: source length");
    assert_eq!(
        dst.len(),
        c * out_size * out_size,
        "resized_crop: output length"
    );
    assert!(
        out_size > 0
            && crop.height > 0
            && crop.width > 0
            && crop.top + crop.height <= h
            && crop.left + crop.width <= w,
        "resized_crop: crop {crop:?} of a {h} x {w} image to {out_size}"
    );
    let o = out_size;
    let ResizeScratch {
        rows,
        cols,
        bands,
        band_weights,
        plane,
    } = scratch;
    bilinear_taps(rows, crop.height, o, false);
    bilinear_taps(cols, crop.width, o, flip);
    column_bands(cols, bands, band_weights);
    // The crop rows the output reads (the taps are monotone in y).
    let first = rows[0].i0 as usize;
    let last = rows[o - 1].i1 as usize;
    // Rows go through the x pass in pairs (two independent sums share each weight load); an
    // odd last row is paired with itself into a spare row.
    let n_rows = last - first + 1;
    plane.resize(n_rows.next_multiple_of(2) * o, 0.0);
    for (chan, out) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(o * o)) {
        // Along x: crop rows first..=last -> plane.
        for (pair, lines) in plane.chunks_exact_mut(2 * o).enumerate() {
            let y0 = crop.top + first + 2 * pair;
            let y1 = (y0 + 1).min(crop.top + last);
            let row0 = &chan[y0 * w + crop.left..][..crop.width];
            let row1 = &chan[y1 * w + crop.left..][..crop.width];
            let (line0, line1) = lines.split_at_mut(o);
            // Band k: the sum over its source columns of the column's value times its
            // weight vector.
            let mut weights = &band_weights[..];
            let mut band = |&(lo, n): &(u32, u32)| {
                let (lo, n) = (lo as usize, n as usize);
                let (wb, rest) = weights.split_at(n);
                weights = rest;
                let (mut acc0, mut acc1) = (f32x8::ZERO, f32x8::ZERO);
                for ((&x0, &x1), &wv) in row0[lo..lo + n].iter().zip(&row1[lo..lo + n]).zip(wb) {
                    acc0 += f32x8::splat(x0.value()) * wv;
                    acc1 += f32x8::splat(x1.value()) * wv;
                }
                (acc0.to_array(), acc1.to_array())
            };
            let full = o / 8;
            let (body0, tail0) = line0.split_at_mut(full * 8);
            let (body1, tail1) = line1.split_at_mut(full * 8);
            for ((bd, b0), b1) in bands
                .iter()
                .zip(body0.chunks_exact_mut(8))
                .zip(body1.chunks_exact_mut(8))
            {
                let (v0, v1) = band(bd);
                for ((d0, d1), (v0, v1)) in b0.iter_mut().zip(b1).zip(v0.into_iter().zip(v1)) {
                    *d0 = v0;
                    *d1 = v1;
                }
            }
            if let Some(bd) = bands.get(full) {
                let (v0, v1) = band(bd);
                for ((d0, d1), (v0, v1)) in tail0.iter_mut().zip(tail1).zip(v0.into_iter().zip(v1))
                {
                    *d0 = v0;
                    *d1 = v1;
                }
            }
        }
        // Along y: each output row blends two plane rows.
        for (t, out_row) in rows.iter().zip(out.chunks_exact_mut(o)) {
            let i0 = (t.i0 as usize - first) * o;
            let a = &plane[i0..i0 + o];
            let i1 = (t.i1 as usize - first) * o;
            let b = &plane[i1..i1 + o];
            let (w0, w1) = (t.w0, t.w1);
            // With w1 = 0 (w0 = 1) this is an exact copy of `a`.
            for ((d, &a), &b) in out_row.iter_mut().zip(a).zip(b) {
                *d = a * w0 + b * w1;
            }
        }
    }
}

/// Reusable buffers of [`resized_crop`]; grown on first use, then no allocation. One per
/// thread.
#[derive(Clone, Debug, Default)]
pub struct ResizeScratch {
    rows: Vec<Tap>,
    cols: Vec<Tap>,
    /// The column taps as bands: per block of 8 outputs, its first source column and
    /// number of source columns.
    bands: Vec<(u32, u32)>,
    /// Per band and source column, the weights of that column in the block's 8 outputs.
    band_weights: Vec<f32x8>,
    plane: Vec<f32>,
}

/// The part of an `height x width` image the evaluation view shows: the central square of
/// the shorter side (what is left of `Resize(S)` + `CenterCrop(S)` once the resize is
/// folded into the resampling), rounded as torchvision's `center_crop`.
pub fn eval_box(height: usize, width: usize) -> CropBox {
    let side = height.min(width);
    let top = ((height - side) as f64 / 2.0).round_ties_even() as usize;
    let left = ((width - side) as f64 / 2.0).round_ties_even() as usize;
    CropBox {
        top,
        left,
        height: side,
        width: side,
    }
}

/// The evaluation view of `img` at `size x size` into `dst` (`channels * size * size`
/// values in [0, 1]): the central square of the shorter side resampled to `size`; an image
/// of `size x size` is copied exactly. What the probe, `embed`, the kNN monitor and RotNet
/// feed the encoder.
///
/// # Panics
/// If `dst` has another length, `size == 0` or the image is empty.
#[track_caller]
pub fn eval_view(img: ImageRef<'_>, size: usize, dst: &mut [f32], scratch: &mut ResizeScratch) {
    let (c, h, w) = (img.channels, img.height, img.width);
    resized_crop(
        img.pixels,
        c,
        h,
        w,
        eval_box(h, w),
        false,
        size,
        dst,
        scratch,
    );
}

/// The evaluation views ([`eval_view`]) of `set.image(indices[k])` into row `k` of `out`
/// (`indices.len() x channels x size x size`), in parallel over images on the current rayon
/// pool.
///
/// # Panics
/// If `out` has another length, `size == 0` or an index is out of range.
#[track_caller]
pub fn eval_views(set: &ImageSet, indices: &[usize], size: usize, out: &mut [f32]) {
    let len = set.channels * size * size;
    assert_eq!(out.len(), indices.len() * len, "eval_views: output length");
    if len == 0 {
        return;
    }
    out.par_chunks_mut(len)
        .zip(indices.par_iter())
        .with_min_len(8)
        .for_each_init(ResizeScratch::default, |scratch, (dst, &i)| {
            eval_view(set.image(i), size, dst, scratch);
        });
}

/// Every image's evaluation view, `n x channels x size x size`.
pub fn eval_tensor(set: &ImageSet, size: usize) -> Vec<f32> {
    let idx: Vec<usize> = (0..set.n).collect();
    let mut out = vec![0.0; set.n * set.channels * size * size];
    eval_views(set, &idx, size, &mut out);
    out
}
