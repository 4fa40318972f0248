//! The SimCLR and RotNet augmentations and the evaluation view against slow f64 references
//! of torchvision's definitions, byte sources against their f32 copies, and the properties of
//! the batches (shape, range, determinism).

use selfsup::data::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, augment_view,
    blur_kernel_size, gaussian_blur, hflip, resized_crop, rotate90, rotnet_batch, sample_crop,
    simclr_views, to_grayscale, view_rng, AugmentError, AugmentScratch, CropBox, ResizeScratch,
    RotnetAugment, SimclrAugment,
};
use selfsup::data::resize::{eval_box, eval_tensor, eval_view, eval_views};
use selfsup::data::ImageSet;
use selfsup::rng::SplitMix64;

/// `len` values uniform in [0, 1], with exact 0s and 1s sprinkled in.
fn pixels(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| match rng.below(20) {
            0 => 0.0,
            1 => 1.0,
            _ => rng.next_f32(),
        })
        .collect()
}

/// `len` bytes uniform in 0..=255, with 0s and 255s sprinkled in.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| match rng.below(20) {
            0 => 0,
            1 => 255,
            _ => rng.below(256) as u8,
        })
        .collect()
}

/// The values of bytes: `v / 255`, computed here.
fn byte_values(b: &[u8]) -> Vec<f32> {
    b.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// `n` random images of `c x h x w` bytes.
fn image_set(n: usize, c: usize, h: usize, w: usize, seed: u64) -> ImageSet {
    ImageSet::uniform(bytes(n * c * h * w, seed), n, c, h, w)
}

/// Random images of `c` channels and the given `(height, width)` sizes, stored back to back.
fn varied_set(c: usize, sizes: &[(usize, usize)], seed: u64) -> ImageSet {
    let len: usize = sizes.iter().map(|&(h, w)| c * h * w).sum();
    ImageSet::packed(bytes(len, seed), c, sizes)
}

fn assert_unit_range(v: &[f32], what: &str) {
    for (i, &x) in v.iter().enumerate() {
        assert!(
            x.is_finite() && (0.0..=1.0).contains(&x),
            "{what}: value {x} at {i} is not in [0, 1]"
        );
    }
}

/// Largest |a - b| over the two slices.
fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn simclr_views_have_the_shape_and_stay_in_range() {
    // Square and non-square sources, outputs smaller, equal and larger, with and without blur.
    for (h, w, out_size, blur) in [
        (32, 32, 32, false),
        (32, 32, 32, true),
        (20, 37, 24, true),
        (28, 28, 40, false),
        (9, 5, 3, false),
    ] {
        let set = image_set(6, 3, h, w, 11);
        let mut cfg = SimclrAugment::for_image(out_size, 3, 1.0);
        cfg.blur = blur;
        cfg.blur_p = 1.0;
        let indices = [0, 3, 5, 3];
        let mut out = vec![f32::NAN; 2 * indices.len() * 3 * out_size * out_size];
        simclr_views(&set, &indices, &cfg, 1, 0, &mut out).unwrap();
        assert_unit_range(&out, &format!("{h}x{w} -> {out_size}, blur {blur}"));
    }
}

#[test]
fn simclr_views_crop_each_image_at_its_own_size() {
    let sizes = [(20, 37), (32, 32), (9, 5), (40, 24)];
    let set = varied_set(3, &sizes, 23);
    let cfg = SimclrAugment::for_image(16, 3, 1.0);
    let indices = [3, 0, 2, 1, 0];
    let len = cfg.view_len(3);
    let mut out = vec![f32::NAN; 2 * indices.len() * len];
    simclr_views(&set, &indices, &cfg, 4, 2, &mut out).unwrap();
    assert_unit_range(&out, "varied sizes");
    let mut scratch = AugmentScratch::new();
    for (k, &i) in indices.iter().enumerate() {
        // The image's bytes, found here from the sizes (stored back to back).
        let (h, w) = sizes[i];
        let offset: usize = sizes[..i].iter().map(|&(h, w)| 3 * h * w).sum();
        let src = &set.pixels()[offset..offset + 3 * h * w];
        for v in 0..2 {
            let mut want = vec![f32::NAN; len];
            let mut rng = view_rng(4, 2, i, v);
            augment_view(src, 3, h, w, &cfg, &mut rng, &mut want, &mut scratch).unwrap();
            let row = 2 * k + v;
            assert_eq!(
                &out[row * len..(row + 1) * len],
                &want[..],
                "image {i} ({h}x{w}), view {v}"
            );
        }
    }
}

#[test]
fn an_all_off_pipeline_is_the_identity() {
    // Full-area square crops, no flip, jitter, gray or blur: the views are the images.
    let set = image_set(3, 3, 16, 16, 2);
    let mut cfg = SimclrAugment::for_image(16, 3, 1.0);
    cfg.crop_scale = (1.0, 1.0);
    cfg.crop_ratio = (1.0, 1.0);
    cfg.flip_p = 0.0;
    cfg.jitter_p = 0.0;
    cfg.gray_p = 0.0;
    let len = 3 * 16 * 16;
    let mut out = vec![0.0; 2 * 3 * len];
    simclr_views(&set, &[0, 1, 2], &cfg, 5, 1, &mut out).unwrap();
    for (row, view) in out.chunks_exact(len).enumerate() {
        assert_eq!(view, byte_values(set.image(row / 2).pixels), "view {row}");
    }
}

#[test]
fn crop_sampler_stays_within_the_area_and_aspect_bounds() {
    let (scale, ratio) = ((0.08f32, 1.0f32), (0.75f32, 4.0f32 / 3.0));
    let mut rng = SplitMix64::new(3);
    for (h, w) in [(32, 32), (224, 224), (20, 50), (1, 1), (3, 100), (64, 7)] {
        let (mut min_frac, mut max_frac) = (f64::MAX, 0.0f64);
        for _ in 0..4000 {
            let b = sample_crop(h, w, scale, ratio, &mut rng);
            assert!(b.height >= 1 && b.width >= 1, "{b:?}");
            assert!(
                b.top + b.height <= h && b.left + b.width <= w,
                "{b:?} in {h}x{w}"
            );
            // The sides are rounded from real ones: bound with half a pixel of slack.
            let (bw, bh, area) = (b.width as f64, b.height as f64, (h * w) as f64);
            let in_bounds = (bw + 0.5) * (bh + 0.5) >= 0.08 * area - 1e-9
                && (bw - 0.5) * (bh - 0.5) <= area
                && (bw + 0.5) / (bh - 0.5).max(1e-9) >= 0.75 - 1e-9
                && (bw - 0.5) / (bh + 0.5) <= 4.0 / 3.0 + 1e-9;
            // Else it must be torchvision's central-crop fallback.
            let in_ratio = w as f64 / h as f64;
            let fallback = if in_ratio < 0.75 {
                let fh = ((w as f64 / 0.75).round_ties_even() as usize).clamp(1, h);
                CropBox {
                    top: (h - fh) / 2,
                    left: 0,
                    height: fh,
                    width: w,
                }
            } else if in_ratio > 4.0 / 3.0 {
                let fw = ((h as f64 * 4.0 / 3.0).round_ties_even() as usize).clamp(1, w);
                CropBox {
                    top: 0,
                    left: (w - fw) / 2,
                    height: h,
                    width: fw,
                }
            } else {
                CropBox::full(h, w)
            };
            assert!(
                in_bounds || b == fallback,
                "{b:?} of {h}x{w} is neither in bounds nor the fallback {fallback:?}"
            );
            let frac = bw * bh / area;
            min_frac = min_frac.min(frac);
            max_frac = max_frac.max(frac);
        }
        if h * w >= 1000 && (0.75..=4.0 / 3.0).contains(&(w as f64 / h as f64)) {
            // The draws cover the range.
            assert!(
                min_frac < 0.1 && max_frac > 0.9,
                "{h}x{w}: {min_frac}..{max_frac}"
            );
        }
    }
    // On a large image the rounding slack vanishes: the bounds hold almost exactly.
    for _ in 0..4000 {
        let b = sample_crop(1000, 1000, scale, ratio, &mut rng);
        let frac = (b.width * b.height) as f64 / 1e6;
        let aspect = b.width as f64 / b.height as f64;
        assert!((0.079..=1.0).contains(&frac), "{b:?}");
        assert!((0.74..=1.35).contains(&aspect), "{b:?}");
    }
}

#[test]
fn full_crop_at_the_input_size_is_an_exact_copy() {
    let mut scratch = ResizeScratch::default();
    for (c, s) in [(3, 19), (1, 1), (3, 32), (1, 7)] {
        let src = pixels(c * s * s, 4);
        let mut dst = vec![f32::NAN; src.len()];
        resized_crop(
            &src,
            c,
            s,
            s,
            CropBox::full(s, s),
            false,
            s,
            &mut dst,
            &mut scratch,
        );
        assert_eq!(dst, src, "{c}x{s}x{s}");
        // From bytes: their values, exactly.
        let src = bytes(c * s * s, 4);
        let mut dst = vec![f32::NAN; src.len()];
        resized_crop(
            &src,
            c,
            s,
            s,
            CropBox::full(s, s),
            false,
            s,
            &mut dst,
            &mut scratch,
        );
        assert_eq!(dst, byte_values(&src), "bytes {c}x{s}x{s}");
    }
}

/// PyTorch's bilinear resize (align_corners = false) of the crop, in f64.
fn reference_resized_crop(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    b: CropBox,
    o: usize,
) -> Vec<f64> {
    let taps = |len: usize, d: usize| {
        let s = ((d as f64 + 0.5) * len as f64 / o as f64 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, s - i0 as f64)
    };
    let mut out = Vec::with_capacity(c * o * o);
    for ch in 0..c {
        for y in 0..o {
            let (y0, y1, ly) = taps(b.height, y);
            for x in 0..o {
                let (x0, x1, lx) = taps(b.width, x);
                let p = |yy: usize, xx: usize| {
                    f64::from(src[ch * h * w + (b.top + yy) * w + b.left + xx])
                };
                out.push(
                    (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1))
                        + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1)),
                );
            }
        }
    }
    out
}

#[test]
fn resized_crop_matches_bilinear_reference_and_flip_mirrors_it() {
    let (c, h, w) = (3, 23, 31);
    let src = pixels(c * h * w, 5);
    let mut scratch = ResizeScratch::default();
    let mut rng = SplitMix64::new(6);
    for o in [1, 8, 16, 32, 45] {
        for _ in 0..20 {
            let b = sample_crop(h, w, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            let mut dst = vec![f32::NAN; c * o * o];
            resized_crop(&src, c, h, w, b, false, o, &mut dst, &mut scratch);
            let want = reference_resized_crop(&src, c, h, w, b, o);
            let err = max_diff(&dst, &want);
            assert!(err < 1e-6, "crop {b:?} to {o}: max error {err}");
            let mut flipped = vec![f32::NAN; c * o * o];
            resized_crop(&src, c, h, w, b, true, o, &mut flipped, &mut scratch);
            hflip(&mut dst, c, o, o);
            assert_eq!(flipped, dst, "flip of crop {b:?} to {o}");
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn byte_sources_give_the_views_of_their_f32_copies_bit_for_bit() {
    // resized_crop: random crops, both flips, outputs smaller and larger, square or not.
    let mut scratch = ResizeScratch::default();
    let mut rng = SplitMix64::new(20);
    for (c, h, w) in [(3, 23, 31), (1, 17, 9), (3, 40, 40)] {
        let src = bytes(c * h * w, 21);
        let copy = byte_values(&src);
        for o in [1, 7, 16, 32, 45] {
            for k in 0..10 {
                let b = sample_crop(h, w, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
                let flip = k % 2 == 1;
                let mut from_bytes = vec![f32::NAN; c * o * o];
                let mut from_f32 = vec![f32::NAN; c * o * o];
                resized_crop(&src, c, h, w, b, flip, o, &mut from_bytes, &mut scratch);
                resized_crop(&copy, c, h, w, b, flip, o, &mut from_f32, &mut scratch);
                assert_eq!(
                    bits(&from_bytes),
                    bits(&from_f32),
                    "{c}x{h}x{w}, crop {b:?} to {o}, flip {flip}"
                );
                if !flip {
                    let want = reference_resized_crop(&copy, c, h, w, b, o);
                    let err = max_diff(&from_bytes, &want);
                    assert!(err < 1e-6, "bytes, crop {b:?} to {o}: max error {err}");
                }
            }
        }
    }
    // augment_view: the whole pipeline (jitter, gray, blur) on the same draws.
    let mut scratch = AugmentScratch::new();
    for (c, h, w, out_size, blur) in [
        (3, 32, 32, 32, false),
        (3, 50, 70, 64, true),
        (1, 28, 20, 24, false),
        (3, 9, 5, 16, false),
    ] {
        let src = bytes(c * h * w, 22);
        let copy = byte_values(&src);
        let mut cfg = SimclrAugment::for_image(out_size, c, 1.0);
        cfg.blur = blur;
        let len = cfg.view_len(c);
        for v in 0..12 {
            let (mut a, mut b) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            let mut rng = view_rng(3, 1, v, 0);
            augment_view(&src, c, h, w, &cfg, &mut rng, &mut a, &mut scratch).unwrap();
            let mut rng = view_rng(3, 1, v, 0);
            augment_view(&copy, c, h, w, &cfg, &mut rng, &mut b, &mut scratch).unwrap();
            assert_eq!(bits(&a), bits(&b), "{c}x{h}x{w} -> {out_size}, view {v}");
            assert_unit_range(&a, "bytes");
        }
    }
}

#[test]
fn eval_box_is_the_central_square_rounded_as_torchvision() {
    // torchvision's center_crop: top = round((h - side) / 2) with Python's round (ties to
    // even), left alike.
    for ((h, w), (top, left, side)) in [
        ((6, 6), (0, 0, 6)),
        ((4, 6), (0, 1, 4)),
        ((5, 2), (2, 0, 2)),        // 1.5 -> 2
        ((7, 2), (2, 0, 2)),        // 2.5 -> 2
        ((2, 11), (0, 4, 2)),       // 4.5 -> 4
        ((3, 10), (0, 4, 3)),       // 3.5 -> 4
        ((1, 4), (0, 2, 1)),        // 1.5 -> 2
        ((375, 500), (0, 62, 375)), // 62.5 -> 62
        ((500, 333), (84, 0, 333)), // 83.5 -> 84
    ] {
        assert_eq!(
            eval_box(h, w),
            CropBox {
                top,
                left,
                height: side,
                width: side
            },
            "{h}x{w}"
        );
    }
}

#[test]
fn eval_view_resizes_the_central_square_and_copies_an_image_of_the_size() {
    let size = 8;
    for c in [1, 3] {
        let sizes = [(8, 8), (5, 9), (16, 10), (3, 3), (8, 8), (8, 20)];
        let set = varied_set(c, &sizes, 25);
        let len = c * size * size;
        let mut scratch = ResizeScratch::default();
        let mut views = Vec::new();
        for (i, &(h, w)) in sizes.iter().enumerate() {
            let img = set.image(i);
            let src = byte_values(img.pixels);
            let mut v = vec![f32::NAN; len];
            eval_view(img, size, &mut v, &mut scratch);
            if (h, w) == (size, size) {
                assert_eq!(v, src, "image {i}: {h}x{w} is copied");
            }
            let want = reference_resized_crop(&src, c, h, w, eval_box(h, w), size);
            let err = max_diff(&v, &want);
            assert!(err < 1e-6, "image {i} ({h}x{w}): max error {err}");
            views.push(v);
        }
        // The batch forms: rows in the order of the indices, every image in order.
        let idx = [4, 1, 1, 0, 5];
        let mut out = vec![f32::NAN; idx.len() * len];
        eval_views(&set, &idx, size, &mut out);
        for (k, &i) in idx.iter().enumerate() {
            assert_eq!(&out[k * len..(k + 1) * len], &views[i][..], "row {k}");
        }
        assert_eq!(eval_tensor(&set, size), views.concat());
    }
}

#[test]
fn flip_twice_is_the_identity() {
    for (c, h, w) in [(3, 5, 7), (1, 4, 4), (3, 1, 1), (1, 3, 2)] {
        let src = pixels(c * h * w, 7);
        let mut img = src.clone();
        hflip(&mut img, c, h, w);
        if w > 1 {
            assert_ne!(img, src);
            assert_eq!(img[w - 1], src[0]);
        }
        hflip(&mut img, c, h, w);
        assert_eq!(img, src);
    }
}

/// `numpy.rot90(m, k)` of each channel, one pixel at a time.
fn reference_rot90(src: &[f32], c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let mut cur = src.to_vec();
    let (mut ch, mut cw) = (h, w);
    for _ in 0..k % 4 {
        // One counterclockwise quarter turn: out (cw x ch), out[i][j] = in[j][cw - 1 - i].
        let mut next = vec![0.0; cur.len()];
        for p in 0..c {
            for i in 0..cw {
                for j in 0..ch {
                    next[p * ch * cw + i * ch + j] = cur[p * ch * cw + j * cw + (cw - 1 - i)];
                }
            }
        }
        cur = next;
        (ch, cw) = (cw, ch);
    }
    cur
}

#[test]
fn rotations_match_numpy_rot90_and_four_are_the_identity() {
    // A 2x2 case written out: numpy.rot90([[1, 2], [3, 4]]) == [[2, 4], [1, 3]].
    let mut d = [0.0; 4];
    rotate90(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, 1, &mut d);
    assert_eq!(d, [2.0, 4.0, 1.0, 3.0]);
    // Square and non-square: the sides swap on odd turns.
    for (c, h, w) in [(3, 8, 8), (2, 3, 5), (1, 1, 4), (3, 7, 2)] {
        let src = pixels(c * h * w, 8);
        for k in 0..6 {
            let mut dst = vec![f32::NAN; src.len()];
            rotate90(&src, c, h, w, k, &mut dst);
            assert_eq!(
                dst,
                reference_rot90(&src, c, h, w, k),
                "{c}x{h}x{w}, k = {k}"
            );
        }
        // Four single turns.
        let (mut cur, mut ch, mut cw) = (src.clone(), h, w);
        for _ in 0..4 {
            let mut next = vec![0.0; src.len()];
            rotate90(&cur, c, ch, cw, 1, &mut next);
            cur = next;
            (ch, cw) = (cw, ch);
        }
        assert_eq!(cur, src, "{c}x{h}x{w}");
    }
}

#[test]
fn rotnet_batch_holds_the_four_rotations_with_their_labels() {
    let (c, s) = (3, 6);
    let set = image_set(5, c, s, s, 9);
    let len = c * s * s;
    let indices = [4, 0, 2];
    for flip_p in [0.0, 1.0] {
        let cfg = RotnetAugment { flip_p };
        let mut out = vec![f32::NAN; 4 * indices.len() * len];
        let mut labels = vec![9u32; 4 * indices.len()];
        rotnet_batch(&set, &indices, &cfg, s, 1, 0, &mut out, &mut labels).unwrap();
        assert_eq!(labels, [0, 1, 2, 3].repeat(indices.len()));
        for (k, &i) in indices.iter().enumerate() {
            // An image of the batch's size is taken as it is.
            let mut base = byte_values(set.image(i).pixels);
            if flip_p == 1.0 {
                hflip(&mut base, c, s, s);
            }
            for r in 0..4 {
                let row = &out[(4 * k + r) * len..(4 * k + r + 1) * len];
                assert_eq!(
                    row,
                    reference_rot90(&base, c, s, s, r),
                    "image {i} turn {r}"
                );
            }
        }
    }
    let cfg = RotnetAugment::default();
    // Wrong label length, wrong batch length (the size decides it), a bad index, size 0.
    let mut out = vec![0.0; 4 * len];
    let mut labels = vec![0; 3];
    let err = rotnet_batch(&set, &[1], &cfg, s, 1, 0, &mut out, &mut labels);
    assert!(
        matches!(err, Err(AugmentError::BufferLen { .. })),
        "{err:?}"
    );
    let mut labels = vec![0; 4];
    let err = rotnet_batch(&set, &[1], &cfg, s - 1, 1, 0, &mut out, &mut labels);
    assert!(
        matches!(err, Err(AugmentError::BufferLen { .. })),
        "{err:?}"
    );
    assert_eq!(
        rotnet_batch(&set, &[5], &cfg, s, 1, 0, &mut out, &mut labels),
        Err(AugmentError::Index { index: 5, n: 5 })
    );
    assert!(matches!(
        rotnet_batch(&set, &[1], &cfg, 0, 1, 0, &mut [], &mut labels),
        Err(AugmentError::Empty { .. })
    ));
}

#[test]
fn rotnet_batch_on_non_square_images_rotates_their_eval_view() {
    let size = 6;
    // Images of one non-square size, and of several sizes (one of them size x size).
    let tall = image_set(2, 1, 9, 4, 1);
    let varied = varied_set(3, &[(4, 6), (9, 5), (6, 6), (12, 20)], 24);
    for (set, what) in [(&tall, "9 x 4"), (&varied, "varied")] {
        let c = set.channels;
        let len = c * size * size;
        let indices: Vec<usize> = (0..set.n).rev().collect();
        for flip_p in [0.0, 1.0] {
            let cfg = RotnetAugment { flip_p };
            let mut out = vec![f32::NAN; 4 * indices.len() * len];
            let mut labels = vec![9u32; 4 * indices.len()];
            rotnet_batch(set, &indices, &cfg, size, 7, 1, &mut out, &mut labels).unwrap();
            assert_eq!(labels, [0, 1, 2, 3].repeat(indices.len()));
            let mut scratch = ResizeScratch::default();
            for (k, &i) in indices.iter().enumerate() {
                let mut view = vec![f32::NAN; len];
                eval_view(set.image(i), size, &mut view, &mut scratch);
                if flip_p == 1.0 {
                    hflip(&mut view, c, size, size);
                }
                for r in 0..4 {
                    let row = &out[(4 * k + r) * len..(4 * k + r + 1) * len];
                    assert_eq!(
                        row,
                        reference_rot90(&view, c, size, size, r),
                        "{what}: image {i} turn {r}, flip p {flip_p}"
                    );
                }
            }
        }
    }
    // The first rows against the f64 reference of the central squares (boxes by hand).
    let cfg = RotnetAugment { flip_p: 0.0 };
    let len = 3 * size * size;
    let mut out = vec![f32::NAN; 4 * 4 * len];
    let mut labels = vec![0; 16];
    rotnet_batch(
        &varied,
        &[0, 1, 2, 3],
        &cfg,
        size,
        7,
        1,
        &mut out,
        &mut labels,
    )
    .unwrap();
    for (k, (top, left, side)) in [(0, 1, 4), (2, 0, 5), (0, 0, 6), (0, 4, 12)]
        .into_iter()
        .enumerate()
    {
        let img = varied.image(k);
        let b = CropBox {
            top,
            left,
            height: side,
            width: side,
        };
        let src = byte_values(img.pixels);
        let want = reference_resized_crop(&src, 3, img.height, img.width, b, size);
        let row = &out[4 * k * len..(4 * k + 1) * len];
        let err = max_diff(row, &want);
        assert!(err < 1e-6, "image {k}: max error {err}");
    }
    assert_eq!(
        &out[8 * len..9 * len],
        &byte_values(varied.image(2).pixels)[..]
    );
}

#[test]
fn grayscale_sets_every_channel_to_the_luma() {
    let p = 37;
    let src = pixels(3 * p, 10);
    let mut img = src.clone();
    to_grayscale(&mut img, 3);
    for i in 0..p {
        let want = 0.299 * f64::from(src[i])
            + 0.587 * f64::from(src[p + i])
            + 0.114 * f64::from(src[2 * p + i]);
        assert_eq!(img[i], img[p + i]);
        assert_eq!(img[i], img[2 * p + i]);
        assert!((f64::from(img[i]) - want).abs() < 1e-6);
    }
    // One channel: unchanged.
    let mut one = src[..p].to_vec();
    to_grayscale(&mut one, 1);
    assert_eq!(one, &src[..p]);
}

/// Pixels for the color references: random ones plus grays, primaries, ties and extremes.
fn color_pixels(p: usize, seed: u64) -> Vec<f32> {
    let special: [[f32; 3]; 10] = [
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.5, 0.5, 0.5],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.7, 0.7, 0.2],
        [0.2, 0.7, 0.7],
        [0.7, 0.2, 0.7],
        [0.3, 0.9, 0.9],
    ];
    let mut img = pixels(3 * p, seed);
    for (i, s) in special.iter().enumerate().take(p) {
        for ch in 0..3 {
            img[ch * p + i] = s[ch];
        }
    }
    img
}

fn luma64(r: f64, g: f64, b: f64) -> f64 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn clamp64(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

#[test]
fn brightness_contrast_saturation_match_torchvision_formulas() {
    let p = 61;
    let src = color_pixels(p, 11);
    let s64: Vec<f64> = src.iter().map(|&x| f64::from(x)).collect();
    for f in [0.0f32, 0.2, 0.6, 1.0, 1.4, 1.8] {
        let f64v = f64::from(f);
        // Brightness.
        let mut img = src.clone();
        adjust_brightness(&mut img, 3, f);
        let want: Vec<f64> = s64.iter().map(|&x| clamp64(f64v * x)).collect();
        assert!(max_diff(&img, &want) < 1e-6, "brightness {f}");
        // Contrast: blend with the mean luma.
        let mean = (0..p)
            .map(|i| luma64(s64[i], s64[p + i], s64[2 * p + i]))
            .sum::<f64>()
            / p as f64;
        let mut img = src.clone();
        adjust_contrast(&mut img, 3, f);
        let want: Vec<f64> = s64
            .iter()
            .map(|&x| clamp64(f64v * x + (1.0 - f64v) * mean))
            .collect();
        assert!(max_diff(&img, &want) < 1e-5, "contrast {f}");
        // Contrast of one channel: blend with its mean.
        let one = &src[..p];
        let mean1 = s64[..p].iter().sum::<f64>() / p as f64;
        let mut img = one.to_vec();
        adjust_contrast(&mut img, 1, f);
        let want: Vec<f64> = s64[..p]
            .iter()
            .map(|&x| clamp64(f64v * x + (1.0 - f64v) * mean1))
            .collect();
        assert!(max_diff(&img, &want) < 1e-5, "contrast {f}, 1 channel");
        // Saturation: blend with each pixel's luma; nothing on one channel.
        let mut img = src.clone();
        adjust_saturation(&mut img, 3, f);
        let mut want = vec![0.0; 3 * p];
        for i in 0..p {
            let y = luma64(s64[i], s64[p + i], s64[2 * p + i]);
            for ch in 0..3 {
                want[ch * p + i] = clamp64(f64v * s64[ch * p + i] + (1.0 - f64v) * y);
            }
        }
        assert!(max_diff(&img, &want) < 1e-6, "saturation {f}");
        let mut img = one.to_vec();
        adjust_saturation(&mut img, 1, f);
        assert_eq!(img, one);
    }
}

/// torchvision's `_rgb2hsv`, `(h + shift) % 1` and `_hsv2rgb`, in f64, for one pixel.
fn reference_hue(r: f64, g: f64, b: f64, shift: f64) -> [f64; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let hr = if maxc == r { bc - gc } else { 0.0 };
    let hg = if maxc == g && maxc != r {
        2.0 + rc - bc
    } else {
        0.0
    };
    let hb = if maxc != g && maxc != r {
        4.0 + gc - rc
    } else {
        0.0
    };
    let h = ((hr + hg + hb) / 6.0 + 1.0) % 1.0;
    let h = (h + shift).rem_euclid(1.0);
    let v = maxc;
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = clamp64(v * (1.0 - s));
    let q = clamp64(v * (1.0 - s * f));
    let t = clamp64(v * (1.0 - s * (1.0 - f)));
    match (i as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[test]
fn hue_matches_torchvision_through_hsv_in_f64() {
    let p = 203; // not a multiple of 8: the tail runs too
    let src = color_pixels(p, 12);
    for shift in [-0.5f32, -0.37, -0.1, 0.0, 0.05, 0.2, 0.4999, 0.5] {
        let mut img = src.clone();
        adjust_hue(&mut img, 3, shift);
        let mut want = vec![0.0; 3 * p];
        for i in 0..p {
            let px = reference_hue(
                f64::from(src[i]),
                f64::from(src[p + i]),
                f64::from(src[2 * p + i]),
                f64::from(shift),
            );
            for ch in 0..3 {
                want[ch * p + i] = px[ch];
            }
        }
        let err = max_diff(&img, &want);
        assert!(err < 2e-6, "hue shift {shift}: max error {err}");
        assert_unit_range(&img, "hue");
    }
    let mut one = src[..p].to_vec();
    adjust_hue(&mut one, 1, 0.3);
    assert_eq!(one, &src[..p]);
}

/// torchvision's `gaussian_blur`: the 2-D kernel (outer product of the 1-D one) over the
/// reflect-padded image, in f64.
fn reference_blur(src: &[f32], c: usize, h: usize, w: usize, k: usize, sigma: f64) -> Vec<f64> {
    let r = (k / 2) as isize;
    let raw: Vec<f64> = (0..k as isize)
        .map(|j| (-0.5 * ((j - r) as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    let k1: Vec<f64> = raw.iter().map(|x| x / total).collect();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let mut out = vec![0.0; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for dy in -r..=r {
                    for dx in -r..=r {
                        let sy = reflect(y as isize + dy, h);
                        let sx = reflect(x as isize + dx, w);
                        acc += k1[(dy + r) as usize]
                            * k1[(dx + r) as usize]
                            * f64::from(src[ch * h * w + sy * w + sx]);
                    }
                }
                out[ch * h * w + y * w + x] = acc;
            }
        }
    }
    out
}

#[test]
fn blur_matches_a_2d_convolution_with_reflect_padding() {
    let mut scratch = AugmentScratch::new();
    for (c, h, w, k, sigma) in [
        (3, 16, 16, 3, 0.1f32),
        (3, 11, 16, 5, 1.3),
        (1, 9, 9, 9, 2.0),
        (3, 3, 3, 5, 0.7),
        (1, 2, 7, 3, 1.0),
        (3, 32, 32, 1, 1.0),
    ] {
        let src = pixels(c * h * w, 13);
        let mut img = src.clone();
        gaussian_blur(&mut img, c, h, w, k, sigma, &mut scratch);
        let want = reference_blur(&src, c, h, w, k, f64::from(sigma));
        let err = max_diff(&img, &want);
        assert!(
            err < 1e-6,
            "{c}x{h}x{w}, kernel {k}, sigma {sigma}: max error {err}"
        );
    }
    assert_eq!(blur_kernel_size(32), 3);
    assert_eq!(blur_kernel_size(64), 7);
    assert_eq!(blur_kernel_size(96), 9);
    assert_eq!(blur_kernel_size(224), 23);
    assert_eq!(blur_kernel_size(5), 1);
}

#[test]
fn batches_do_not_depend_on_threads_or_on_the_rest_of_the_batch() {
    let set = image_set(40, 3, 32, 32, 14);
    let mut cfg = SimclrAugment::for_image(32, 3, 0.5);
    cfg.blur = true;
    let indices: Vec<usize> = (0..40).rev().collect();
    let len = cfg.view_len(3);
    let run = |threads: usize, idx: &[usize]| {
        let mut out = vec![0.0; 2 * idx.len() * len];
        pool(threads).install(|| simclr_views(&set, idx, &cfg, 99, 3, &mut out).unwrap());
        out
    };
    let one = run(1, &indices);
    let two = run(2, &indices);
    assert!(one == two, "1 and 2 threads differ");
    // Image 17 alone gives the same two views as inside the batch (rows 2k, 2k + 1).
    let k = indices.iter().position(|&i| i == 17).unwrap();
    let alone = run(2, &[17]);
    assert_eq!(alone, &one[2 * k * len..(2 * k + 2) * len]);
    // And augment_view on view_rng reproduces them.
    let mut scratch = AugmentScratch::new();
    for v in 0..2 {
        let mut dst = vec![0.0; len];
        let mut rng = view_rng(99, 3, 17, v);
        augment_view(
            set.image(17).pixels,
            3,
            32,
            32,
            &cfg,
            &mut rng,
            &mut dst,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(dst, &alone[v * len..(v + 1) * len], "view {v}");
    }
    // RotNet likewise.
    let rot = |threads: usize, idx: &[usize]| {
        let mut out = vec![0.0; 4 * idx.len() * len];
        let mut labels = vec![0; 4 * idx.len()];
        let cfg = RotnetAugment::default();
        pool(threads)
            .install(|| rotnet_batch(&set, idx, &cfg, 32, 5, 2, &mut out, &mut labels).unwrap());
        out
    };
    let one = rot(1, &indices);
    assert!(one == rot(2, &indices), "RotNet: 1 and 2 threads differ");
    let l4 = 4 * len;
    assert_eq!(rot(1, &[17]), &one[k * l4..(k + 1) * l4]);
}

#[test]
fn epochs_seeds_and_the_two_views_differ() {
    let set = image_set(8, 3, 32, 32, 15);
    let cfg = SimclrAugment::for_image(32, 3, 0.5);
    let indices: Vec<usize> = (0..8).collect();
    let len = cfg.view_len(3);
    let run = |seed: u64, epoch: u64| {
        let mut out = vec![0.0; 2 * 8 * len];
        simclr_views(&set, &indices, &cfg, seed, epoch, &mut out).unwrap();
        out
    };
    let a = run(1, 0);
    assert_eq!(a, run(1, 0));
    let b = run(1, 1);
    let c = run(2, 0);
    for k in 0..16 {
        let row = |v: &[f32]| v[k * len..(k + 1) * len].to_vec();
        assert_ne!(row(&a), row(&b), "epoch changes view {k}");
        assert_ne!(row(&a), row(&c), "seed changes view {k}");
    }
    for k in 0..8 {
        assert_ne!(
            a[2 * k * len..(2 * k + 1) * len],
            a[(2 * k + 1) * len..(2 * k + 2) * len],
            "the two views of image {k}"
        );
    }
}

#[test]
fn always_gray_views_have_equal_channels() {
    let set = image_set(4, 3, 12, 12, 16);
    let mut cfg = SimclrAugment::for_image(10, 3, 1.0);
    cfg.gray_p = 1.0;
    let mut out = vec![0.0; 2 * 4 * cfg.view_len(3)];
    simclr_views(&set, &[0, 1, 2, 3], &cfg, 1, 0, &mut out).unwrap();
    for view in out.chunks_exact(cfg.view_len(3)) {
        let p = 100;
        assert_eq!(view[..p], view[p..2 * p]);
        assert_eq!(view[..p], view[2 * p..]);
    }
}

#[test]
fn one_channel_images_get_brightness_and_contrast_only() {
    let set = image_set(5, 1, 28, 28, 17);
    let cfg = SimclrAugment::for_image(28, 1, 0.5);
    assert_eq!((cfg.saturation, cfg.hue, cfg.gray_p), (0.0, 0.0, 0.0));
    assert!(cfg.brightness > 0.0 && cfg.contrast > 0.0);
    let mut out = vec![f32::NAN; 2 * 5 * cfg.view_len(1)];
    simclr_views(&set, &[0, 1, 2, 3, 4], &cfg, 1, 0, &mut out).unwrap();
    assert_unit_range(&out, "1 channel");
    // Color settings left on for gray data are skipped, not an error.
    let rgb_cfg = SimclrAugment::for_image(28, 3, 1.0);
    let mut out2 = vec![f32::NAN; out.len()];
    simclr_views(&set, &[0, 1, 2, 3, 4], &rgb_cfg, 1, 0, &mut out2).unwrap();
    assert_unit_range(&out2, "1 channel, RGB settings");
}

#[test]
fn defaults_follow_simclr() {
    let small = SimclrAugment::for_image(32, 3, 0.5);
    small.validate().unwrap();
    assert_eq!(small.crop_scale, (0.08, 1.0));
    assert_eq!(small.crop_ratio, (0.75, 4.0 / 3.0));
    assert_eq!(
        (small.flip_p, small.jitter_p, small.gray_p),
        (0.5, 0.8, 0.2)
    );
    assert_eq!(
        (
            small.brightness,
            small.contrast,
            small.saturation,
            small.hue
        ),
        (0.4, 0.4, 0.4, 0.1)
    );
    assert!(!small.blur);
    assert_eq!(SimclrAugment::recommended_strength(32), 0.5);
    let large = SimclrAugment::for_image(224, 3, 1.0);
    large.validate().unwrap();
    assert!(large.blur);
    assert_eq!(
        (large.blur_p, large.blur_sigma, large.blur_kernel),
        (0.5, (0.1, 2.0), 23)
    );
    assert_eq!(SimclrAugment::recommended_strength(224), 1.0);
    assert!(SimclrAugment::for_image(64, 3, 1.0).blur);
    assert!(!SimclrAugment::for_image(63, 3, 1.0).blur);
}

#[test]
fn bad_settings_and_buffers_are_typed_errors() {
    let base = SimclrAugment::for_image(32, 3, 1.0);
    let field_of = |cfg: &SimclrAugment| match cfg.validate() {
        Err(AugmentError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    type Edit = Box<dyn Fn(&mut SimclrAugment)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("out_size", Box::new(|c| c.out_size = 0)),
        ("flip_p", Box::new(|c| c.flip_p = 1.5)),
        ("jitter_p", Box::new(|c| c.jitter_p = -0.1)),
        ("gray_p", Box::new(|c| c.gray_p = f32::NAN)),
        ("blur_p", Box::new(|c| c.blur_p = 2.0)),
        ("crop_scale", Box::new(|c| c.crop_scale = (0.9, 0.1))),
        ("crop_scale", Box::new(|c| c.crop_scale = (0.0, 1.0))),
        ("crop_scale", Box::new(|c| c.crop_scale = (0.5, 1.5))),
        ("crop_ratio", Box::new(|c| c.crop_ratio = (2.0, 1.0))),
        ("crop_ratio", Box::new(|c| c.crop_ratio = (-1.0, 1.0))),
        ("brightness", Box::new(|c| c.brightness = -0.1)),
        ("contrast", Box::new(|c| c.contrast = f32::INFINITY)),
        ("saturation", Box::new(|c| c.saturation = f32::NAN)),
        ("hue", Box::new(|c| c.hue = 0.6)),
        (
            "blur_sigma",
            Box::new(|c| {
                c.blur = true;
                c.blur_sigma = (2.0, 0.1)
            }),
        ),
        (
            "blur_kernel",
            Box::new(|c| {
                c.blur = true;
                c.blur_kernel = 4
            }),
        ),
        (
            "blur_kernel",
            Box::new(|c| {
                c.blur = true;
                c.out_size = 3;
                c.blur_kernel = 7
            }),
        ),
    ];
    for (want, edit) in cases {
        let mut cfg = base.clone();
        edit(&mut cfg);
        assert_eq!(field_of(&cfg), want, "{cfg:?}");
    }
    // A wrong blur setting does not matter while the blur is off.
    let mut off = base.clone();
    off.blur = false;
    off.blur_kernel = 4;
    off.validate().unwrap();
    assert!(RotnetAugment { flip_p: 1.1 }.validate().is_err());

    // Buffers, indices, channels.
    let set = image_set(3, 3, 8, 8, 18);
    let cfg = SimclrAugment::for_image(8, 3, 0.5);
    let len = cfg.view_len(3);
    let mut out = vec![0.0; 2 * len];
    assert_eq!(
        simclr_views(&set, &[3], &cfg, 0, 0, &mut out),
        Err(AugmentError::Index { index: 3, n: 3 })
    );
    assert!(matches!(
        simclr_views(&set, &[0, 1], &cfg, 0, 0, &mut out),
        Err(AugmentError::BufferLen { .. })
    ));
    let two = image_set(1, 2, 8, 8, 19);
    assert_eq!(
        simclr_views(&two, &[0], &cfg, 0, 0, &mut out),
        Err(AugmentError::Channels { channels: 2 })
    );
    let mut bad = cfg.clone();
    bad.flip_p = 7.0;
    assert!(matches!(
        simclr_views(&set, &[0], &bad, 0, 0, &mut out),
        Err(AugmentError::Config {
            field: "flip_p",
            ..
        })
    ));
    let mut scratch = AugmentScratch::new();
    let mut rng = SplitMix64::new(0);
    let mut short = vec![0.0; len - 1];
    assert!(matches!(
        augment_view(
            set.image(0).pixels,
            3,
            8,
            8,
            &cfg,
            &mut rng,
            &mut short,
            &mut scratch
        ),
        Err(AugmentError::BufferLen { .. })
    ));
    assert!(matches!(
        augment_view::<u8>(&[], 3, 0, 8, &cfg, &mut rng, &mut out[..len], &mut scratch),
        Err(AugmentError::Empty { .. })
    ));
    // An empty batch is fine.
    simclr_views(&set, &[], &cfg, 0, 0, &mut []).unwrap();
    // Errors print one line naming the problem.
    let msg = AugmentError::Config {
        field: "hue",
        problem: "strength 0.6 is not in [0, 0.5]".into(),
    }
    .to_string();
    assert!(msg.contains("hue") && !msg.contains('\n'), "{msg}");
}
