//! Fuzzes the IDX readers (`parse_idx_images`, `parse_idx_labels`, `read_idx_images`,
//! `read_idx_labels`) with arbitrary bytes, raw and gzip-compressed.
//!
//! The first input byte picks the mode (bit 0: images or labels; bit 1: gzip the rest before
//! parsing; bit 2: also write it to a file and read the file); the rest is the file.
//!
//! Oracles:
//! 1. Nothing panics, aborts or allocates without bound: every bad input is a `DataError`
//!    naming the file.
//! 2. What parses is consistent: `pixels.len() == n * rows * cols`, no dimension is zero.
//! 3. The byte parser and the file reader agree, and a gzip-compressed copy of raw (not
//!    already gzip) bytes parses to the same thing.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use selfsup::data::idx::{parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels};

fn file() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch::dir();
        dir.join(format!("selfsup-fuzz-idx-{}", std::process::id()))
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

fn named(e: &selfsup::data::DataError, p: &Path) -> bool {
    e.to_string().starts_with(&p.display().to_string())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 2 != 0 {
        gzip(rest)
    } else {
        rest.to_vec()
    };
    let name = Path::new("fuzz.idx");
    if mode & 1 == 0 {
        let r = parse_idx_images(&bytes, name);
        match &r {
            Ok(i) => {
                assert!(i.n > 0 && i.rows > 0 && i.cols > 0);
                assert_eq!(
                    Some(i.pixels.len()),
                    i.n.checked_mul(i.rows).and_then(|x| x.checked_mul(i.cols))
                );
                let set = i.to_image_set();
                assert_eq!(set.uniform_size(), Some((i.rows, i.cols)));
                assert_eq!(set.pixels().len(), set.n * set.channels * i.rows * i.cols);
            }
            Err(e) => assert!(named(e, name), "{e}"),
        }
        if mode & 2 == 0 && !bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() < 4096 {
            assert_eq!(
                parse_idx_images(&gzip(&bytes), name).ok(),
                r.as_ref().ok().cloned()
            );
        }
        if mode & 4 != 0 {
            std::fs::write(file(), &bytes).expect("write the input file");
            let f = read_idx_images(file());
            if let Err(e) = &f {
                assert!(named(e, file()), "{e}");
            }
            assert_eq!(f.ok(), r.ok());
        }
    } else {
        let r = parse_idx_labels(&bytes, name);
        match &r {
            Ok(l) => assert!(!l.is_empty()),
            Err(e) => assert!(named(e, name), "{e}"),
        }
        if mode & 2 == 0 && !bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() < 4096 {
            assert_eq!(
                parse_idx_labels(&gzip(&bytes), name).ok(),
                r.as_ref().ok().cloned()
            );
        }
        if mode & 4 != 0 {
            std::fs::write(file(), &bytes).expect("write the input file");
            let f = read_idx_labels(file());
            if let Err(e) = &f {
                assert!(named(e, file()), "{e}");
            }
            assert_eq!(f.ok(), r.ok());
        }
    }
});
