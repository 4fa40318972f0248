//! Fuzzes `parse_cifar_batch` (the CIFAR-10 / CIFAR-100 batch parser) with arbitrary bytes.
//!
//! The first input byte picks the layout (bit 0: CIFAR-10 with 10 classes or CIFAR-100 with
//! 100) and, rarely, a bad argument (`label_bytes` 0 or 3, `classes` 0 or 300) that must be
//! rejected; the rest is the file. Inputs need at least one 3073- or 3074-byte record to
//! parse, so run with `-max_len=16384`.
//!
//! Oracles:
//! 1. Nothing panics: every bad input is a `DataError` naming the file.
//! 2. What parses is consistent: `n` records of the file's length, 3 x 32 x 32 images with
//!    bytes equal to the file's, one label per image, each `< classes`,
//!    equal to the record's (fine) label byte.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use selfsup::data::cifar::parse_cifar_batch;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let (mut label_bytes, mut classes) = if mode & 1 == 0 { (1, 10) } else { (2, 100) };
    match mode >> 4 {
        0xf => label_bytes = 0,
        0xe => label_bytes = 3,
        0xd => classes = 0,
        0xc => classes = 300,
        _ => {}
    }
    let name = Path::new("fuzz_batch.bin");
    match parse_cifar_batch(bytes, name, label_bytes, classes) {
        Ok(s) => {
            assert!((1..=2).contains(&label_bytes) && (1..=256).contains(&classes));
            let rec = label_bytes + 3072;
            assert_eq!(s.n * rec, bytes.len());
            assert_eq!((s.channels, s.uniform_size()), (3, Some((32, 32))));
            assert_eq!(s.pixels().len(), s.n * 3072);
            let labels = s.labels.as_ref().expect("labeled");
            assert_eq!(labels.len(), s.n);
            for (i, r) in bytes.chunks_exact(rec).enumerate() {
                assert_eq!(labels[i], r[label_bytes - 1] as u32);
                assert!((labels[i] as usize) < classes);
                // Stored as the file's bytes.
                assert_eq!(s.image(i).pixels, &r[label_bytes..]);
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz_batch.bin"), "{e}"),
    }
});
