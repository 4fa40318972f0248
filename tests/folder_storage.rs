//! Photo folders as stored sets: the stored size (shorter side down to the storage side,
//! aspect kept, never up), the conversion of every PNG mode to RGB bytes (grayscale,
//! RGBA, palette, 16-bit), the memory refusal before decoding, and the evaluation view
//! (the shorter side resized, the central square) against a naive f64 resampler.

use std::io::Write;
use std::path::Path;

use selfsup::data::folder::{read_folder, storage_side, stored_size, FolderOptions};
use selfsup::data::resize::{eval_box, eval_view, ResizeScratch};
use selfsup::data::{ImageSet, Sizes};

mod common;
use common::TempDir;

fn save(img: impl Into<image::DynamicImage>, p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    img.into().save(p).unwrap();
}

/// A palette (indexed) PNG, written chunk by chunk: `w x h` pixels of palette index
/// `(x + y) % 2` over the two colours `pal`.
fn write_palette_png(p: &Path, w: u32, h: u32, pal: [[u8; 3]; 2]) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 3, 0, 0, 0]); // 8 bits, palette, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"PLTE", &pal.concat());
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        raw.extend((0..w).map(|x| ((x + y) % 2) as u8));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, png).unwrap();
}

#[test]
fn stored_size_follows_the_shorter_side_and_never_grows() {
    // (h, w, side) -> expected, worked by hand.
    let cases = [
        ((100, 200, 50), (50, 100)),
        ((200, 100, 50), (100, 50)),
        ((30, 30, 37), (30, 30)),   // already small: kept
        ((37, 500, 37), (37, 500)), // shorter side equal: kept
        ((75, 100, 37), (37, 49)),  // 100 * 37 / 75 = 49.33
        ((3, 1000, 2), (2, 667)),   // 1000 * 2 / 3 = 666.7
        ((1000, 1, 1), (1000, 1)),
    ];
    for ((h, w, s), want) in cases {
        assert_eq!(stored_size(h, w, s), want, "{h}x{w} at {s}");
    }
    assert_eq!(storage_side(224), 256);
    assert_eq!(storage_side(96), 110);
    assert_eq!(storage_side(32), 37);
}

#[test]
fn every_png_mode_becomes_rgb_bytes_at_its_stored_size() {
    let d = TempDir::new("modes");
    let dir = d.0.join("photos");
    // a: RGB 60x40; b: gray 20x20; c: RGBA 30x90; d: palette 9x5; e: 16-bit RGB 12x12.
    save(
        image::RgbImage::from_pixel(60, 40, image::Rgb([200, 10, 30])),
        &dir.join("a.png"),
    );
    save(
        image::GrayImage::from_pixel(20, 20, image::Luma([77])),
        &dir.join("b.png"),
    );
    save(
        image::RgbaImage::from_pixel(30, 90, image::Rgba([5, 250, 128, 3])),
        &dir.join("c.png"),
    );
    write_palette_png(&dir.join("d.png"), 9, 5, [[255, 0, 0], [0, 0, 255]]);
    save(
        image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(12, 12, image::Rgb([65535, 0, 32896])),
        &dir.join("e.png"),
    );
    let f = read_folder(
        &dir,
        &FolderOptions {
            storage_side: 16,
            memory_limit: None,
        },
    )
    .unwrap();
    let s = &f.set;
    assert_eq!((s.n, s.channels), (5, 3), "one colour image: RGB");
    assert!(matches!(s.sizes(), Sizes::Varied(_)));
    let sizes: Vec<(usize, usize)> = (0..5)
        .map(|i| (s.image(i).height, s.image(i).width))
        .collect();
    assert_eq!(sizes, [(16, 24), (16, 16), (48, 16), (5, 9), (12, 12)]);
    // Solid colours stay exact through the area resize; planes R, G, B.
    let planes = |i: usize| {
        let im = s.image(i);
        let p = im.height * im.width;
        (0..3)
            .map(|c| im.pixels[c * p..(c + 1) * p].to_vec())
            .collect::<Vec<_>>()
    };
    for (i, rgb) in [(0, [200, 10, 30]), (1, [77, 77, 77]), (2, [5, 250, 128])] {
        for (c, want) in rgb.iter().enumerate() {
            assert!(
                planes(i)[c].iter().all(|v| v == want),
                "image {i} channel {c}"
            );
        }
    }
    // The palette expanded: pixel (y, x) is red when x + y is even, else blue.
    let p = planes(3);
    for y in 0..5 {
        for x in 0..9 {
            let red = (x + y) % 2 == 0;
            let got = [p[0][y * 9 + x], p[1][y * 9 + x], p[2][y * 9 + x]];
            assert_eq!(
                got,
                if red { [255, 0, 0] } else { [0, 0, 255] },
                "({y}, {x})"
            );
        }
    }
    // 16 bits scaled to 8: 65535 -> 255, 0 -> 0, 32896 -> 128.
    for (c, want) in [255u8, 0, 128].iter().enumerate() {
        assert!(planes(4)[c].iter().all(|v| v == want), "16-bit channel {c}");
    }
    assert_eq!(
        s.memory_bytes(),
        3 * (16 * 24 + 16 * 16 + 48 * 16 + 5 * 9 + 12 * 12)
            + 5 * std::mem::size_of::<selfsup::data::Extent>()
    );
}

#[test]
fn a_grayscale_folder_of_one_size_is_one_uniform_channel() {
    let d = TempDir::new("gray");
    let dir = d.0.join("g");
    for (k, v) in [10u8, 20, 30].iter().enumerate() {
        save(
            image::GrayImage::from_pixel(50, 40, image::Luma([*v])),
            &dir.join(format!("{k}.png")),
        );
    }
    let f = read_folder(&dir, &FolderOptions::for_image_size(8)).unwrap();
    // Storage side 10 (8 * 8 / 7 rounded up): 40x50 -> 10x13 (50 * 10 / 40 = 12.5, rounded
    // half away from zero).
    assert_eq!(f.set.uniform_size(), Some((10, 13)));
    assert_eq!(f.set.channels, 1);
    assert_eq!(f.set.pixels().len(), 3 * 10 * 13);
    for (i, v) in [10u8, 20, 30].iter().enumerate() {
        assert!(f.set.image(i).pixels.iter().all(|p| p == v));
    }
}

#[test]
fn a_folder_too_large_for_the_limit_is_refused_before_decoding() {
    let d = TempDir::new("memory");
    let dir = d.0.join("big");
    for k in 0..4 {
        save(
            image::RgbImage::from_pixel(200, 100, image::Rgb([1, 2, 3])),
            &dir.join(format!("{k}.png")),
        );
    }
    // Stored at 50x100: 4 images x 3 x 5,000 bytes = 60,000 bytes.
    let opts = |limit| FolderOptions {
        storage_side: 50,
        memory_limit: Some(limit),
    };
    assert!(read_folder(&dir, &opts(60_000)).is_ok());
    let e = read_folder(&dir, &opts(59_999)).unwrap_err().to_string();
    for want in ["big", "4 images", "60 kB", "--image-size"] {
        assert!(e.contains(want), "'{want}' not in: {e}");
    }
    // A file that is not an image is named before anything is decoded.
    std::fs::write(dir.join("z.png"), b"not a png").unwrap();
    let e = read_folder(&dir, &opts(1 << 30)).unwrap_err().to_string();
    assert!(e.contains("z.png"), "{e}");
}

/// The evaluation view in f64: the central square of the shorter side (torchvision's
/// center-crop offsets), bilinear with half-pixel centres, edge-clamped.
fn naive_eval(img: &[f64], c: usize, h: usize, w: usize, size: usize) -> Vec<f64> {
    let side = h.min(w);
    let top = ((h - side) as f64 / 2.0).round_ties_even() as usize;
    let left = ((w - side) as f64 / 2.0).round_ties_even() as usize;
    let tap = |d: usize| {
        let src = ((d as f64 + 0.5) * side as f64 / size as f64 - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(side - 1);
        let i1 = (i0 + 1).min(side - 1);
        (i0, i1, src - i0 as f64)
    };
    let mut out = Vec::with_capacity(c * size * size);
    for ch in 0..c {
        for y in 0..size {
            let (y0, y1, ly) = tap(y);
            for x in 0..size {
                let (x0, x1, lx) = tap(x);
                let at = |yy: usize, xx: usize| img[ch * h * w + (top + yy) * w + left + xx];
                let top_row = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bottom = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                out.push(top_row * (1.0 - ly) + bottom * ly);
            }
        }
    }
    out
}

#[test]
fn the_evaluation_view_matches_a_naive_resampler() {
    let mut state = 0x1234_5678_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let mut scratch = ResizeScratch::default();
    for &(c, h, w, size) in &[
        (3, 37, 37, 32),
        (3, 37, 50, 32),
        (1, 50, 37, 32),
        (3, 7, 9, 24), // smaller than the view: upsampled
        (3, 1, 1, 8),
        (1, 110, 147, 96),
        (3, 33, 34, 33),
        (3, 16, 16, 16), // the same size: an exact copy
    ] {
        let bytes: Vec<u8> = (0..c * h * w).map(|_| next()).collect();
        let set = ImageSet::uniform(bytes.clone(), 1, c, h, w);
        let mut got = vec![0.0f32; c * size * size];
        eval_view(set.image(0), size, &mut got, &mut scratch);
        let values: Vec<f64> = bytes.iter().map(|&b| f64::from(b) / 255.0).collect();
        let want = naive_eval(&values, c, h, w, size);
        for (k, (g, w_)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w_).abs() < 2e-6,
                "{c}x{h}x{w} -> {size}: value {k}: {g} vs {w_}"
            );
        }
        if (h, w) == (size, size) {
            let exact: Vec<f32> = bytes.iter().map(|&b| b as f32 / 255.0).collect();
            assert_eq!(got, exact, "an image of the view's size is copied exactly");
        }
    }
    // The box: centred on the longer side, rounding half to even as torchvision.
    assert_eq!(eval_box(10, 13).left, 2); // (13 - 10) / 2 = 1.5 -> 2
    assert_eq!(eval_box(10, 15).left, 2); // 2.5 -> 2
    assert_eq!(eval_box(17, 10).top, 4); // 3.5 -> 4
}

#[test]
fn the_train_and_test_splits_share_the_memory_limit() {
    let d = TempDir::new("memory_splits");
    let root = d.0.join("shared");
    // Each split: 2 images stored at 50x100 (storage side 50 = 8/7 of 43, rounded up),
    // 2 x 3 x 5,000 = 30,000 bytes.
    for split in ["train", "test"] {
        for k in 0..2 {
            save(
                image::RgbImage::from_pixel(200, 100, image::Rgb([9, 8, 7])),
                &root.join(split).join(format!("{k}.png")),
            );
        }
    }
    assert_eq!(storage_side(43), 50);
    let spec: selfsup::data::spec::DataSpec = format!("folder:{}", root.display()).parse().unwrap();
    let opts = |limit| selfsup::data::spec::LoadOptions {
        image_size: 43,
        memory_limit: Some(limit),
    };
    assert!(spec.load(&opts(60_000)).is_ok());
    // Either split alone fits 59,999 bytes; both together do not.
    let e = spec.load(&opts(59_999)).unwrap_err().to_string();
    assert!(e.contains("test") && e.contains("--image-size"), "{e}");
}
