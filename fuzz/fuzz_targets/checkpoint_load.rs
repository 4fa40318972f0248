//! Fuzzes `checkpoint::load` with arbitrary file contents: the input bytes are written to a
//! file and loaded.
//!
//! Oracles:
//! 1. Nothing panics, aborts or allocates without bound (libFuzzer's `-rss_limit_mb` and
//!    `-malloc_limit_mb` catch the latter): every bad file comes back as a
//!    `CheckpointError` naming the file.
//! 2. What loads is consistent: every tensor's length is the product of its shape, and every
//!    element is finite.
//! 3. What loads saves back, and the saved file loads to the same tensors (bit for bit) and
//!    the same metadata (plus `format_version` where the input had none).
//!
//! The files go to `/dev/shm` where it exists (tmpfs: `save`'s fsyncs cost nothing), else
//! to the system's temp dir, one pair per fuzzing process.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use selfsup::io::checkpoint::{self, keys, FORMAT_VERSION};

fn paths() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let dir = scratch::dir();
        let pid = std::process::id();
        (
            dir.join(format!("selfsup-fuzz-ckpt-{pid}.safetensors")),
            dir.join(format!("selfsup-fuzz-ckpt-{pid}-again.safetensors")),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (input, again) = paths();
    std::fs::write(input, data).expect("write the input file");
    let ckpt = match checkpoint::load(input) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.path(), input.as_path(), "{e}");
            let _ = e.to_string();
            return;
        }
    };
    for (name, t) in ckpt.tensors() {
        let n = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(n, Some(t.data.len()), "tensor '{name}'");
        assert!(t.data.iter().all(|x| x.is_finite()), "tensor '{name}'");
    }

    checkpoint::save(again, &ckpt.views(), ckpt.metadata()).expect("save what loaded");
    let back = checkpoint::load(again).expect("load what was saved");
    let mut want_meta = ckpt.metadata().clone();
    want_meta
        .entry(keys::FORMAT_VERSION.to_string())
        .or_insert_with(|| FORMAT_VERSION.to_string());
    assert_eq!(back.metadata(), &want_meta);
    assert_eq!(back.tensors().len(), ckpt.tensors().len());
    for (name, t) in ckpt.tensors() {
        let b = back.tensor(name).expect("tensor saved back");
        assert_eq!(b.shape, t.shape, "tensor '{name}'");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&b.data), bits(&t.data), "tensor '{name}'");
    }
});
