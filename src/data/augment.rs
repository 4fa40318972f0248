//! SimCLR and RotNet augmentations: from stored images (bytes or f32 channel planes, any
//! size) to f32 views of the model's size (values in [0, 1]).
//!
//! The SimCLR pipeline (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
//! Visual Representations", appendix A) with torchvision's definitions of each step:
//!
//! 1. random resized crop (`RandomResizedCrop`: area fraction 0.08..1, aspect ratio 3/4..4/3
//!    log-uniform, 10 attempts then the central-crop fallback), bilinear resampling with
//!    half-pixel centers (`align_corners = false`, no antialiasing) to `out_size`;
//! 2. horizontal flip with p = 0.5 (folded into the column table of step 1);
//! 3. with p = 0.8, color jitter (`ColorJitter`): brightness, contrast, saturation (factors
//!    uniform in `[max(0, 1 - x), 1 + x]`) and hue (shift uniform in `[-x, x]`) in a random
//!    order, each clamped to [0, 1];
//! 4. grayscale with p = 0.2 (ITU-R 601-2 luma `0.299 R + 0.587 G + 0.114 B` in every channel);
//! 5. with p = 0.5, Gaussian blur (`GaussianBlur`: odd kernel of 10% of the side, sigma uniform
//!    in 0.1..2, reflect padding), separable; off by default below 64 pixels, as SimCLR does
//!    for CIFAR.
//!
//! On 1-channel images saturation, hue and grayscale are skipped; brightness and contrast
//! apply. RotNet (Gidaris et al. 2018) batches hold every image in its four rotations by
//! 0, 90, 180 and 270 degrees ([`rotnet_batch`]).
//!
//! Randomness: every view draws from its own [`SplitMix64`] stream keyed by
//! `(seed, epoch, dataset index, view)` ([`view_rng`]), so a view never depends on the thread
//! count or on which other images share its batch. The batch functions run in parallel over
//! views with rayon, each worker job reusing one [`AugmentScratch`] (no allocation per view).
//!
//! Speed: every step runs over contiguous channel planes, 8 lanes at a time (`wide::f32x8`,
//! or loops that auto-vectorize), with no `unsafe` and no per-ISA code, so the results are the
//! same on every machine. The resize is separable: along x, 8 outputs at a time from banded
//! weight vectors built once per crop (no per-pixel gather), then along y as blends of whole
//! rows; the flip is folded into the x weights. The hue shift is branch-free. The blur keeps
//! 32 outputs in registers over its taps. On the development machine the two-view pipeline on
//! 32x32 RGB images (`augment_simclr_32`) takes about 25 us of CPU per image.

use super::image::Sample;
use super::resize::eval_view;
pub use super::resize::{resized_crop, CropBox, ResizeScratch};
use super::ImageSet;
use crate::rng::{mix, SplitMix64};
use rayon::prelude::*;
use wide::f32x8;

/// Images smaller than this side (in pixels) get no Gaussian blur by default.
pub const BLUR_MIN_SIDE: usize = 64;

/// Key of the SimCLR view streams (first key of [`mix`], apart from other users of a seed).
const SIMCLR_STREAM: u64 = 0x5349_4d43_4c52; // "SIMCLR"
/// Key of the RotNet streams.
const ROTNET_STREAM: u64 = 0x524f_544e_4554; // "ROTNET"

/// ITU-R 601-2 luma weights of R, G and B.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// An augmentation error: a bad setting or buffers that do not fit the images.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// A setting of the configuration is out of its range.
    #[error("augmentation setting `{field}`: {problem}")]
    Config {
        /// The field of the configuration.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A buffer has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    BufferLen {
        /// Which buffer.
        what: &'static str,
        /// The length the shapes ask for.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A dataset index is not below the number of images.
    #[error("image index {index} out of range for a set of {n} images")]
    Index {
        /// The index.
        index: usize,
        /// Images in the set.
        n: usize,
    },
    /// The images have a number of channels the augmentations do not handle.
    #[error("{channels} channels: the SimCLR augmentations take 1 (grayscale) or 3 (RGB)")]
    Channels {
        /// Channels per image.
        channels: usize,
    },
    /// The images have no pixel.
    #[error("empty images ({height} x {width})")]
    Empty {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
}

/// The settings of the SimCLR augmentation pipeline; [`SimclrAugment::for_image`] gives
/// SimCLR's defaults. The jitter strengths are stored already multiplied by the color
/// strength `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimclrAugment {
    /// Side of the square output views, in pixels.
    pub out_size: usize,
    /// Range of the crop's area as a fraction of the image's (SimCLR: 0.08..1).
    pub crop_scale: (f32, f32),
    /// Range of the crop's aspect ratio width / height, sampled log-uniformly (3/4..4/3).
    pub crop_ratio: (f32, f32),
    /// Probability of a horizontal flip (0.5).
    pub flip_p: f32,
    /// Probability of applying the color jitter (0.8).
    pub jitter_p: f32,
    /// Brightness strength b: factor uniform in `[max(0, 1 - b), 1 + b]` (0.8 s).
    pub brightness: f32,
    /// Contrast strength (0.8 s), as brightness.
    pub contrast: f32,
    /// Saturation strength (0.8 s), as brightness.
    pub saturation: f32,
    /// Hue strength h in [0, 0.5]: shift uniform in `[-h, h]` turns (0.2 s).
    pub hue: f32,
    /// Probability of converting to grayscale (0.2).
    pub gray_p: f32,
    /// Whether the Gaussian blur is part of the pipeline (off below 64 pixels).
    pub blur: bool,
    /// Probability of the blur when `blur` is on (0.5).
    pub blur_p: f32,
    /// Range of the blur's sigma, in pixels (0.1..2).
    pub blur_sigma: (f32, f32),
    /// Side of the blur kernel: odd, 10% of `out_size` ([`blur_kernel_size`]).
    pub blur_kernel: usize,
}

/// The odd Gaussian blur kernel side SimCLR uses for images of side `size`: `2 r + 1` with
/// `r = (size / 10) / 2` (23 for 224, 7 for 64, 3 for 32).
pub fn blur_kernel_size(size: usize) -> usize {
    (size / 10) / 2 * 2 + 1
}

impl SimclrAugment {
    /// SimCLR's defaults for square outputs of side `size` from images of `channels`
    /// channels, at color strength `strength` (1.0 in SimCLR on ImageNet, 0.5 for small
    /// images: see [`SimclrAugment::recommended_strength`]). The blur is on from
    /// [`BLUR_MIN_SIDE`] pixels up. For 1-channel images the saturation, hue and grayscale
    /// settings are zero (those steps are skipped on such images anyway).
    pub fn for_image(size: usize, channels: usize, strength: f32) -> Self {
        let color = if channels == 1 { 0.0 } else { 1.0 };
        Self {
            out_size: size,
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.8 * strength,
            contrast: 0.8 * strength,
            saturation: 0.8 * strength * color,
            hue: 0.2 * strength * color,
            gray_p: 0.2 * color,
            blur: size >= BLUR_MIN_SIDE,
            blur_p: 0.5,
            blur_sigma: (0.1, 2.0),
            blur_kernel: blur_kernel_size(size),
        }
    }

    /// The color strength recommended for images of side `size`: 0.5 below
    /// [`BLUR_MIN_SIDE`] pixels (SimCLR's CIFAR setting), 1.0 from there up.
    pub fn recommended_strength(size: usize) -> f32 {
        if size < BLUR_MIN_SIDE {
            0.5
        } else {
            1.0
        }
    }

    /// Checks every setting: probabilities in [0, 1], ranges ordered, positive and finite,
    /// jitter strengths non-negative (hue at most 0.5), a non-zero output size and an odd
    /// blur kernel whose radius fits the output (reflect padding).
    ///
    /// # Errors
    /// [`AugmentError::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let bad =
            |field: &'static str, problem: String| Err(AugmentError::Config { field, problem });
        if self.out_size == 0 {
            return bad("out_size", "must be at least 1".into());
        }
        for (field, p) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("gray_p", self.gray_p),
            ("blur_p", self.blur_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("probability {p} is not in [0, 1]"));
            }
        }
        let (lo, hi) = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad(
                "crop_scale",
                format!("({lo}, {hi}) is not a range with 0 < min <= max <= 1"),
            );
        }
        let (lo, hi) = self.crop_ratio;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return bad(
                "crop_ratio",
                format!("({lo}, {hi}) is not a finite range with 0 < min <= max"),
            );
        }
        for (field, x) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(x >= 0.0 && x.is_finite()) {
                return bad(field, format!("strength {x} is not finite and >= 0"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad("hue", format!("strength {} is not in [0, 0.5]", self.hue));
        }
        if self.blur {
            let (lo, hi) = self.blur_sigma;
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return bad(
                    "blur_sigma",
                    format!("({lo}, {hi}) is not a finite range with 0 < min <= max"),
                );
            }
            let k = self.blur_kernel;
            if k.is_multiple_of(2) || k / 2 >= self.out_size {
                return bad(
                    "blur_kernel",
                    format!(
                        "{k} must be odd with a radius below the output side {}",
                        self.out_size
                    ),
                );
            }
        }
        Ok(())
    }

    /// Values per output view: `channels * out_size * out_size`.
    pub fn view_len(&self, channels: usize) -> usize {
        channels * self.out_size * self.out_size
    }
}

/// The settings of RotNet batches: rotations always, an optional horizontal flip before.
#[derive(Clone, Debug, PartialEq)]
pub struct RotnetAugment {
    /// Probability of flipping an image horizontally before its four rotations (the same
    /// flip for all four). Default 0.5; 0 gives the plain RotNet of the paper.
    pub flip_p: f32,
}

impl Default for RotnetAugment {
    fn default() -> Self {
        Self { flip_p: 0.5 }
    }
}

impl RotnetAugment {
    /// Checks that `flip_p` is a probability.
    ///
    /// # Errors
    /// [`AugmentError::Config`].
    pub fn validate(&self) -> Result<(), AugmentError> {
        if !(0.0..=1.0).contains(&self.flip_p) {
            return Err(AugmentError::Config {
                field: "flip_p",
                problem: format!("probability {} is not in [0, 1]", self.flip_p),
            });
        }
        Ok(())
    }
}

/// Samples a crop of an `height x width` image as torchvision's
/// `RandomResizedCrop.get_params`: up to 10 attempts of an area fraction uniform in `scale`
/// and a log-uniform aspect ratio (width / height) in `ratio`, sides rounded half to even,
/// kept when they fit, at a uniform position; else the central crop with the ratio clamped
/// into `ratio`. Always returns a box of at least 1 x 1 inside the image.
///
/// # Panics
/// If `height` or `width` is zero.
#[track_caller]
pub fn sample_crop(
    height: usize,
    width: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut SplitMix64,
) -> CropBox {
    assert!(height > 0 && width > 0, "sample_crop of an empty image");
    let area = (height * width) as f64;
    let (s0, s1) = (f64::from(scale.0), f64::from(scale.1));
    let (r0, r1) = (f64::from(ratio.0), f64::from(ratio.1));
    let (l0, l1) = (r0.ln(), r1.ln());
    for _ in 0..10 {
        let target = area * (s0 + (s1 - s0) * rng.next_f64());
        let aspect = (l0 + (l1 - l0) * rng.next_f64()).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w >= 1.0 && h >= 1.0 && w <= width as f64 && h <= height as f64 {
            let (w, h) = (w as usize, h as usize);
            let top = rng.below(height - h + 1);
            let left = rng.below(width - w + 1);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    // The central-crop fallback.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < r0 {
        (
            width,
            ((width as f64 / r0).round_ties_even() as usize).clamp(1, height),
        )
    } else if in_ratio > r1 {
        (
            ((height as f64 * r1).round_ties_even() as usize).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// The random stream of view `view` of dataset image `index` in epoch `epoch` of the run
/// seeded `seed`: what [`simclr_views`] draws view `view` of that image from. A preview that
/// draws from it with [`augment_view`] shows exactly the view the trainer sees.
pub fn view_rng(seed: u64, epoch: u64, index: usize, view: usize) -> SplitMix64 {
    SplitMix64::new(mix(
        seed,
        &[SIMCLR_STREAM, epoch, index as u64, view as u64],
    ))
}

/// Reusable per-worker buffers of the augmentations; grown on first use, then no
/// allocation. One per thread (the batch functions make one per rayon worker job).
#[derive(Clone, Debug, Default)]
pub struct AugmentScratch {
    /// The crop's resampling buffers.
    pub resize: ResizeScratch,
    plane: Vec<f32>,
    line: Vec<f32>,
    kernel: Vec<f32>,
}

impl AugmentScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Mirrors each row of the `c x h x w` image `img` in place (`hflip`).
///
/// # Panics
/// If `img.len() != c * h * w`.
#[track_caller]
pub fn hflip(img: &mut [f32], c: usize, h: usize, w: usize) {
    assert_eq!(img.len(), c * h * w, "hflip: image length");
    if w == 0 {
        return;
    }
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// `clamp(f * x + (1 - f) * y, 0, 1)`, torchvision's `_blend` on float images.
#[inline(always)]
fn blend(f: f32, x: f32, y: f32) -> f32 {
    clamp01(f * x + (1.0 - f) * y)
}

/// Clamps to [0, 1] with plain compares (vectorizes to min/max).
#[inline(always)]
fn clamp01(x: f32) -> f32 {
    let x = if x > 0.0 { x } else { 0.0 };
    if x < 1.0 {
        x
    } else {
        1.0
    }
}

/// The luma of one pixel, `0.299 r + 0.587 g + 0.114 b`.
#[inline(always)]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
}

/// The three planes of an RGB image.
#[track_caller]
fn rgb_planes(img: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let p = img.len() / 3;
    let (r, gb) = img.split_at_mut(p);
    let (g, b) = gb.split_at_mut(p);
    (r, g, b)
}

#[track_caller]
fn check_planes(img: &[f32], c: usize, what: &str) {
    assert!(
        c > 0 && img.len().is_multiple_of(c),
        "{what}: {} values do not split into {c} channels",
        img.len()
    );
}

/// torchvision's `adjust_brightness`: `clamp(f * x, 0, 1)` on every value of `img`
/// (`c` channel planes).
///
/// # Panics
/// If `img.len()` is not a multiple of `c`, or `c == 0`.
#[track_caller]
pub fn adjust_brightness(img: &mut [f32], c: usize, factor: f32) {
    check_planes(img, c, "adjust_brightness");
    for x in img.iter_mut() {
        *x = blend(factor, *x, 0.0);
    }
}

/// The mean luma of an RGB image (or the mean of a 1-channel one), summed in 8 fixed lanes.
fn mean_luma(img: &[f32], c: usize) -> f32 {
    let p = img.len() / c;
    if p == 0 {
        return 0.0;
    }
    let mut acc = [0.0f32; 8];
    let mut tail = 0.0f32;
    if c == 3 {
        let (r, gb) = img.split_at(p);
        let (g, b) = gb.split_at(p);
        let (rc, gc, bc) = (r.chunks_exact(8), g.chunks_exact(8), b.chunks_exact(8));
        let (rt, gt, bt) = (rc.remainder(), gc.remainder(), bc.remainder());
        for ((r, g), b) in rc.zip(gc).zip(bc) {
            for l in 0..8 {
                acc[l] += luma(r[l], g[l], b[l]);
            }
        }
        for ((&r, &g), &b) in rt.iter().zip(gt).zip(bt) {
            tail += luma(r, g, b);
        }
    } else {
        let chunks = img.chunks_exact(8);
        tail = chunks.remainder().iter().sum();
        for x in chunks {
            for l in 0..8 {
                acc[l] += x[l];
            }
        }
    }
    let sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    (sum + tail) / p as f32
}

/// torchvision's `adjust_contrast`: `clamp(f * x + (1 - f) * m, 0, 1)` where `m` is the
/// mean luma of the image (the mean value for 1 channel).
///
/// # Panics
/// If `c` is not 1 or 3, or `img.len()` is not a multiple of `c`.
#[track_caller]
pub fn adjust_contrast(img: &mut [f32], c: usize, factor: f32) {
    assert!(c == 1 || c == 3, "adjust_contrast: {c} channels");
    check_planes(img, c, "adjust_contrast");
    let m = mean_luma(img, c);
    for x in img.iter_mut() {
        *x = blend(factor, *x, m);
    }
}

/// torchvision's `adjust_saturation`: `clamp(f * x + (1 - f) * luma, 0, 1)` per pixel; no
/// change on 1-channel images.
///
/// # Panics
/// If `c` is not 1 or 3, or `img.len()` is not a multiple of `c`.
#[track_caller]
pub fn adjust_saturation(img: &mut [f32], c: usize, factor: f32) {
    assert!(c == 1 || c == 3, "adjust_saturation: {c} channels");
    check_planes(img, c, "adjust_saturation");
    if c == 1 {
        return;
    }
    let (r, g, b) = rgb_planes(img);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let y = luma(*r, *g, *b);
        *r = blend(factor, *r, y);
        *g = blend(factor, *g, y);
        *b = blend(factor, *b, y);
    }
}

/// `min(k mod 6, 4 - k mod 6)` clamped to [0, 1] for `k` in [0, 12): how far a channel
/// sits below the value in the HSV -> RGB map.
#[inline(always)]
fn hue_ramp(k: f32x8) -> f32x8 {
    let six = f32x8::splat(6.0);
    let k = k.simd_ge(six).select(k - six, k);
    let m = (f32x8::splat(4.0) - k).fast_min(k);
    m.fast_max(f32x8::ZERO).fast_min(f32x8::ONE)
}

/// The hue shift of 8 pixels (see [`adjust_hue`]); `shift6` is the shift in sixths of a turn.
#[inline(always)]
fn hue8(r: f32x8, g: f32x8, b: f32x8, shift6: f32x8) -> (f32x8, f32x8, f32x8) {
    let v = r.fast_max(g).fast_max(b);
    let mn = r.fast_min(g).fast_min(b);
    let d = v - mn;
    let inv = f32x8::ONE / d.fast_max(f32x8::splat(f32::MIN_POSITIVE));
    let rc = (v - r) * inv;
    let gc = (v - g) * inv;
    let bc = (v - b) * inv;
    // The hue in sixths, in [-1, 5), as torchvision's `_rgb2hsv` before its `fmod`.
    let h = v.simd_eq(r).select(
        bc - gc,
        v.simd_eq(g)
            .select(f32x8::splat(2.0) + rc - bc, f32x8::splat(4.0) + gc - rc),
    );
    let six = f32x8::splat(6.0);
    let h = h + shift6;
    let h = h.simd_lt(f32x8::ZERO).select(h + six, h);
    let h = h.simd_ge(six).select(h - six, h);
    (
        v - d * hue_ramp(f32x8::splat(5.0) + h),
        v - d * hue_ramp(f32x8::splat(3.0) + h),
        v - d * hue_ramp(f32x8::ONE + h),
    )
}

/// torchvision's `adjust_hue`: the hue (in HSV) of every pixel shifted by `shift` turns
/// (`shift` in [-0.5, 0.5]) modulo 1; value and saturation kept. Computed branch-free, 8
/// pixels at a time: with `v = max`, `d = max - min` and the hue `H` in sixths, channel `n`
/// (5 for R, 3 for G, 1 for B) is `v - d * clamp(min(k, 4 - k), 0, 1)` with
/// `k = (n + H) mod 6`, the same map as torchvision's six-case `_hsv2rgb`. No change on
/// 1-channel images.
///
/// # Panics
/// If `c` is not 1 or 3, or `img.len()` is not a multiple of `c`.
#[track_caller]
pub fn adjust_hue(img: &mut [f32], c: usize, shift: f32) {
    assert!(c == 1 || c == 3, "adjust_hue: {c} channels");
    check_planes(img, c, "adjust_hue");
    if c == 1 {
        return;
    }
    let shift6 = f32x8::splat(shift * 6.0);
    let (r, g, b) = rgb_planes(img);
    let mut rs = r.chunks_exact_mut(8);
    let mut gs = g.chunks_exact_mut(8);
    let mut bs = b.chunks_exact_mut(8);
    for ((r, g), b) in (&mut rs).zip(&mut gs).zip(&mut bs) {
        let load = |s: &[f32]| f32x8::from(<[f32; 8]>::try_from(s).expect("8 lanes"));
        let (nr, ng, nb) = hue8(load(r), load(g), load(b), shift6);
        r.copy_from_slice(&nr.to_array());
        g.copy_from_slice(&ng.to_array());
        b.copy_from_slice(&nb.to_array());
    }
    let (r, g, b) = (
        rs.into_remainder(),
        gs.into_remainder(),
        bs.into_remainder(),
    );
    if !r.is_empty() {
        // The tail through the same lanes, padded with zeros.
        let n = r.len();
        let pad = |s: &[f32]| {
            let mut a = [0.0f32; 8];
            a[..n].copy_from_slice(s);
            f32x8::from(a)
        };
        let (nr, ng, nb) = hue8(pad(r), pad(g), pad(b), shift6);
        r.copy_from_slice(&nr.to_array()[..n]);
        g.copy_from_slice(&ng.to_array()[..n]);
        b.copy_from_slice(&nb.to_array()[..n]);
    }
}

/// torchvision's `rgb_to_grayscale` keeping the channel count: every channel of each pixel
/// set to its luma. No change on 1-channel images.
///
/// # Panics
/// If `c` is not 1 or 3, or `img.len()` is not a multiple of `c`.
#[track_caller]
pub fn to_grayscale(img: &mut [f32], c: usize) {
    assert!(c == 1 || c == 3, "to_grayscale: {c} channels");
    check_planes(img, c, "to_grayscale");
    if c == 1 {
        return;
    }
    let (r, g, b) = rgb_planes(img);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let y = luma(*r, *g, *b);
        *r = y;
        *g = y;
        *b = y;
    }
}

/// Reflects index `i` (in `-r ..n + r`, `r < n`) into `0..n` without repeating the edge, as
/// PyTorch's `reflect` padding.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let j = if i < 0 { -i } else { i };
    (if j >= n { 2 * (n - 1) - j } else { j }) as usize
}

/// Loads 8 lanes from `s[at..at + 8]`.
#[inline(always)]
fn load8(s: &[f32], at: usize) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(&s[at..at + 8]).expect("8 lanes"))
}

/// Stores the first `dst.len()` (at most 8) lanes of `v` into `dst`.
#[inline(always)]
fn store_lanes(dst: &mut [f32], v: f32x8) {
    let a = v.to_array();
    match <&mut [f32; 8]>::try_from(&mut *dst) {
        Ok(full) => *full = a,
        Err(_) => {
            for (d, x) in dst.iter_mut().zip(a) {
                *d = x;
            }
        }
    }
}

/// torchvision's `gaussian_blur` of the `c x h x w` image `img` in place: the kernel
/// `exp(-x^2 / (2 sigma^2))` at `x = -r..=r` (`kernel_size = 2 r + 1`), normalized, applied
/// along rows then columns (separable) with reflect padding. Each pass keeps 32 outputs in
/// registers over the taps: rows are reflect-padded into a scratch line first, columns read
/// reflected row indices.
///
/// # Panics
/// If `img.len() != c * h * w`, `kernel_size` is even, or its radius is not below `h` and `w`.
#[track_caller]
pub fn gaussian_blur(
    img: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    kernel_size: usize,
    sigma: f32,
    scratch: &mut AugmentScratch,
) {
    assert_eq!(img.len(), c * h * w, "gaussian_blur: image length");
    assert!(
        kernel_size % 2 == 1 && kernel_size / 2 < h.min(w),
        "gaussian_blur: kernel {kernel_size} on a {h} x {w} image"
    );
    let r = kernel_size / 2;
    if r == 0 || img.is_empty() {
        return;
    }
    let AugmentScratch {
        plane,
        kernel,
        line,
        ..
    } = scratch;
    // The kernel in f64, as torchvision's (linspace, exp, normalize), then rounded.
    let sigma = f64::from(sigma);
    let tap = |j: usize| {
        let x = (j as f64 - r as f64) / sigma;
        (-0.5 * x * x).exp()
    };
    let total: f64 = (0..kernel_size).map(tap).sum();
    kernel.clear();
    kernel.extend((0..kernel_size).map(|j| (tap(j) / total) as f32));
    // Spare values after the padded line and the plane, for the loads of a last partial
    // group of outputs (their extra lanes are computed and dropped).
    line.resize(w + 2 * r + BLUR_GROUP, 0.0);
    plane.resize(h * w + BLUR_GROUP, 0.0);
    for chan in img.chunks_exact_mut(h * w) {
        // Rows: chan -> plane, through the reflect-padded line.
        for (src, dst) in chan.chunks_exact(w).zip(plane.chunks_exact_mut(w)) {
            line[r..r + w].copy_from_slice(src);
            for i in 0..r {
                line[r - 1 - i] = src[i + 1];
                line[r + w + i] = src[w - 2 - i];
            }
            for (x0, group) in (0..w).step_by(BLUR_GROUP).zip(dst.chunks_mut(BLUR_GROUP)) {
                let acc = blur_group(kernel, |j, q| load8(line, x0 + 8 * q + j));
                for (block, v) in group.chunks_mut(8).zip(acc) {
                    store_lanes(block, v);
                }
            }
        }
        // Columns: plane -> chan, rows at reflected indices.
        for (y, dst) in chan.chunks_exact_mut(w).enumerate() {
            for (x0, group) in (0..w).step_by(BLUR_GROUP).zip(dst.chunks_mut(BLUR_GROUP)) {
                let acc = blur_group(kernel, |j, q| {
                    let sy = reflect(y as isize + j as isize - r as isize, h);
                    load8(plane, sy * w + x0 + 8 * q)
                });
                for (block, v) in group.chunks_mut(8).zip(acc) {
                    store_lanes(block, v);
                }
            }
        }
    }
}

/// Outputs per group of the blur: four independent 8-lane sums over the taps.
const BLUR_GROUP: usize = 32;

/// `sum_j kernel[j] * load(j, q)` for the four 8-lane blocks `q` of a group of outputs.
#[inline(always)]
fn blur_group(kernel: &[f32], load: impl Fn(usize, usize) -> f32x8) -> [f32x8; 4] {
    let mut acc = [f32x8::ZERO; 4];
    for (j, &kj) in kernel.iter().enumerate() {
        let k = f32x8::splat(kj);
        for (q, a) in acc.iter_mut().enumerate() {
            *a += k * load(j, q);
        }
    }
    acc
}

/// Rotates the `c x h x w` image `src` by `k` quarter turns counterclockwise (`k` taken mod
/// 4; as `torch.rot90(x, k, dims = (-2, -1))` and `numpy.rot90`) into `dst`, whose shape is
/// `c x w x h` for odd `k` and `c x h x w` for even `k`: non-square images are handled, the
/// output's sides swap. Pixel `(i, j)` of the output is, for `k = 1`, input `(j, w - 1 - i)`;
/// for `k = 2`, `(h - 1 - i, w - 1 - j)`; for `k = 3`, `(h - 1 - j, i)`.
///
/// # Panics
/// If `src.len() != c * h * w` or `dst.len() != src.len()`.
#[track_caller]
pub fn rotate90(src: &[f32], c: usize, h: usize, w: usize, k: usize, dst: &mut [f32]) {
    assert_eq!(src.len(), c * h * w, "rotate90: source length");
    assert_eq!(dst.len(), src.len(), "rotate90: output length");
    if src.is_empty() {
        return;
    }
    for (s, d) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(h * w)) {
        match k % 4 {
            0 => d.copy_from_slice(s),
            1 => {
                for (i, row) in d.chunks_exact_mut(h).enumerate() {
                    let col = w - 1 - i;
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = s[j * w + col];
                    }
                }
            }
            2 => {
                for (o, &x) in d.iter_mut().zip(s.iter().rev()) {
                    *o = x;
                }
            }
            _ => {
                for (i, row) in d.chunks_exact_mut(h).enumerate() {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = s[(h - 1 - j) * w + i];
                    }
                }
            }
        }
    }
}

/// The random choices of one SimCLR view, drawn in a fixed order from its stream.
struct ViewDraws {
    crop: CropBox,
    flip: bool,
    jitter: bool,
    order: [usize; 4],
    factors: [f32; 4],
    gray: bool,
    blur: bool,
    sigma: f32,
}

/// Uniform in `[lo, hi)`.
#[inline]
fn uniform(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f32()
}

impl ViewDraws {
    /// Every draw is made whatever the settings (so turning one step off leaves the others'
    /// draws unchanged, the crop's variable number of attempts aside).
    fn draw(h: usize, w: usize, cfg: &SimclrAugment, rng: &mut SplitMix64) -> Self {
        let crop = sample_crop(h, w, cfg.crop_scale, cfg.crop_ratio, rng);
        let flip = rng.next_f32() < cfg.flip_p;
        let jitter = rng.next_f32() < cfg.jitter_p;
        let mut order = [0, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let range = |x: f32| ((1.0 - x).max(0.0), 1.0 + x);
        let (b0, b1) = range(cfg.brightness);
        let (c0, c1) = range(cfg.contrast);
        let (s0, s1) = range(cfg.saturation);
        let factors = [
            uniform(rng, b0, b1),
            uniform(rng, c0, c1),
            uniform(rng, s0, s1),
            uniform(rng, -cfg.hue, cfg.hue),
        ];
        let gray = rng.next_f32() < cfg.gray_p;
        let blur = rng.next_f32() < cfg.blur_p && cfg.blur;
        let sigma = uniform(rng, cfg.blur_sigma.0, cfg.blur_sigma.1);
        Self {
            crop,
            flip,
            jitter,
            order,
            factors,
            gray,
            blur,
            sigma,
        }
    }
}

/// The pipeline on validated inputs.
#[allow(clippy::too_many_arguments)]
fn augment_view_unchecked<S: Sample>(
    src: &[S],
    c: usize,
    h: usize,
    w: usize,
    cfg: &SimclrAugment,
    rng: &mut SplitMix64,
    dst: &mut [f32],
    scratch: &mut AugmentScratch,
) {
    let d = ViewDraws::draw(h, w, cfg, rng);
    let o = cfg.out_size;
    resized_crop(src, c, h, w, d.crop, d.flip, o, dst, &mut scratch.resize);
    if d.jitter {
        for &op in &d.order {
            let f = d.factors[op];
            match op {
                0 if cfg.brightness > 0.0 => adjust_brightness(dst, c, f),
                1 if cfg.contrast > 0.0 => adjust_contrast(dst, c, f),
                2 if cfg.saturation > 0.0 => adjust_saturation(dst, c, f),
                3 if cfg.hue > 0.0 => adjust_hue(dst, c, f),
                _ => {}
            }
        }
    }
    if d.gray {
        to_grayscale(dst, c);
    }
    if d.blur {
        gaussian_blur(dst, c, o, o, cfg.blur_kernel, d.sigma, scratch);
    }
    for x in dst.iter_mut() {
        *x = clamp01(*x);
    }
}

fn check_image(c: usize, h: usize, w: usize) -> Result<(), AugmentError> {
    if c != 1 && c != 3 {
        return Err(AugmentError::Channels { channels: c });
    }
    if h == 0 || w == 0 {
        return Err(AugmentError::Empty {
            height: h,
            width: w,
        });
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), AugmentError> {
    if expected != got {
        return Err(AugmentError::BufferLen {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

fn check_indices(set: &ImageSet, indices: &[usize]) -> Result<(), AugmentError> {
    match indices.iter().find(|&&i| i >= set.n) {
        Some(&index) => Err(AugmentError::Index { index, n: set.n }),
        None => Ok(()),
    }
}

/// One SimCLR view of the `c x h x w` image `src` (values in [0, 1]) into `dst`
/// (`c x out_size x out_size`), drawing from `rng`: crop, flip, jitter, grayscale, blur as
/// set by `cfg`. With `rng = view_rng(seed, epoch, index, view)` this is exactly the view
/// [`simclr_views`] makes. Outputs are in [0, 1].
///
/// # Errors
/// A bad `cfg`, channels other than 1 or 3, an empty image, or buffer lengths that do not
/// match the shapes.
#[allow(clippy::too_many_arguments)]
pub fn augment_view<S: Sample>(
    src: &[S],
    c: usize,
    h: usize,
    w: usize,
    cfg: &SimclrAugment,
    rng: &mut SplitMix64,
    dst: &mut [f32],
    scratch: &mut AugmentScratch,
) -> Result<(), AugmentError> {
    cfg.validate()?;
    check_image(c, h, w)?;
    check_len("source image", c * h * w, src.len())?;
    check_len("output view", cfg.view_len(c), dst.len())?;
    augment_view_unchecked(src, c, h, w, cfg, rng, dst, scratch);
    Ok(())
}

/// The two SimCLR views of each image `set.image(indices[k])` into `out`, NCHW at
/// `cfg.out_size`: rows `2k` and `2k + 1` are the two views of image `k` of the batch (the
/// pairing of the NT-Xent loss), `out.len() == 2 * indices.len() * channels * out_size^2`.
/// Each view's crop is taken from the stored image at its own size, as SimCLR crops from
/// the original. View `v` of dataset image `i` draws from `view_rng(seed, epoch, i, v)`
/// only, so the batch is the same for any thread count and each view is independent of the
/// rest of the batch. Runs on the current rayon pool, in parallel over views.
///
/// # Errors
/// A bad `cfg`, an index `>= set.n`, channels other than 1 or 3, or a wrong `out` length.
pub fn simclr_views(
    set: &ImageSet,
    indices: &[usize],
    cfg: &SimclrAugment,
    seed: u64,
    epoch: u64,
    out: &mut [f32],
) -> Result<(), AugmentError> {
    cfg.validate()?;
    let c = set.channels;
    if c != 1 && c != 3 {
        return Err(AugmentError::Channels { channels: c });
    }
    check_indices(set, indices)?;
    let view_len = cfg.view_len(c);
    check_len("SimCLR batch", 2 * indices.len() * view_len, out.len())?;
    out.par_chunks_mut(view_len)
        .enumerate()
        .with_min_len(4)
        .for_each_init(AugmentScratch::new, |scratch, (row, dst)| {
            let index = indices[row / 2];
            let img = set.image(index);
            let mut rng = view_rng(seed, epoch, index, row % 2);
            let (h, w) = (img.height, img.width);
            augment_view_unchecked(img.pixels, c, h, w, cfg, &mut rng, dst, scratch);
        });
    Ok(())
}

/// The RotNet batch of the images `set.image(indices[k])` into `out` (NCHW at `size x
/// size`) and `labels`: rows `4k..4k + 4` are image `k`'s evaluation view
/// ([`super::resize::eval_view`]: an exact copy when it is `size x size` already) rotated by
/// 0, 90, 180 and 270 degrees counterclockwise ([`rotate90`]) with labels 0, 1, 2, 3;
/// `out.len() == 4 * indices.len() * channels * size^2` and `labels.len() == 4 *
/// indices.len()`. With probability `cfg.flip_p` an image is first mirrored (the same for
/// its four rotations), drawn from a stream keyed by `(seed, epoch, dataset index)` only.
/// Runs on the current rayon pool, in parallel over images.
///
/// # Errors
/// A bad `cfg`, `size == 0`, an index `>= set.n`, or wrong buffer lengths.
#[allow(clippy::too_many_arguments)]
pub fn rotnet_batch(
    set: &ImageSet,
    indices: &[usize],
    cfg: &RotnetAugment,
    size: usize,
    seed: u64,
    epoch: u64,
    out: &mut [f32],
    labels: &mut [u32],
) -> Result<(), AugmentError> {
    cfg.validate()?;
    let c = set.channels;
    if c == 0 {
        return Err(AugmentError::Channels { channels: c });
    }
    if size == 0 {
        return Err(AugmentError::Empty {
            height: size,
            width: size,
        });
    }
    let len = c * size * size;
    check_indices(set, indices)?;
    check_len("RotNet batch", 4 * indices.len() * len, out.len())?;
    check_len("RotNet labels", 4 * indices.len(), labels.len())?;
    for (i, l) in labels.iter_mut().enumerate() {
        *l = (i % 4) as u32;
    }
    out.par_chunks_mut(4 * len)
        .zip(indices.par_iter())
        .for_each_init(ResizeScratch::default, |scratch, (dst, &index)| {
            let mut rng = SplitMix64::new(mix(seed, &[ROTNET_STREAM, epoch, index as u64]));
            let (first, rest) = dst.split_at_mut(len);
            eval_view(set.image(index), size, first, scratch);
            if rng.next_f32() < cfg.flip_p {
                hflip(first, c, size, size);
            }
            for (k, d) in rest.chunks_exact_mut(len).enumerate() {
                rotate90(first, c, size, size, k + 1, d);
            }
        });
    Ok(())
}
