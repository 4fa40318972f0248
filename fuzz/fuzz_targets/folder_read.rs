//! Fuzzes `decode_image`, the single-image decoder behind the image-folder readers (PNG and
//! JPEG through the `image` crate, within its decoder limits, converted to RGB and resized).
//!
//! The first two input bytes pick the output height and width (1..=64); the rest is the file.
//! Seed it with small PNG and JPEG files (see fuzz/README.md).
//!
//! Oracles:
//! 1. Nothing panics, aborts or allocates without bound (run with `-malloc_limit_mb`):
//!    undecodable input and headers claiming huge images are a `DataError` naming the file.
//! 2. What decodes has exactly `height * width * 3` bytes, and R = G = B when the file was
//!    grayscale.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use selfsup::data::folder::decode_image;

fuzz_target!(|data: &[u8]| {
    let [h, w, bytes @ ..] = data else {
        return;
    };
    // The storage side (shorter side at most), 1..=255 from the two bytes.
    let side = (usize::from(*h) ^ usize::from(*w)) % 255 + 1;
    let name = Path::new("fuzz_image.png");
    match decode_image(bytes, name, side) {
        Ok(d) => {
            assert!(d.height.min(d.width) <= side && d.height > 0 && d.width > 0);
            assert_eq!(d.rgb.len(), d.height * d.width * 3);
            if d.grayscale {
                assert!(d.rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz_image.png"), "{e}"),
    }
});
