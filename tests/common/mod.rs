//! Helpers shared by the integration tests.

/// The proptest case count: `PROPTEST_CASES` when set (heavier sweeps), else `default`.
#[allow(dead_code)] // not every test binary that shares this module runs proptests
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic values (xorshift from `seed`): mostly uniform in [-1, 1), one in 17 an
/// exact zero and one in 17 in [-outlier / 2, outlier / 2), so that kernels meet zeros and
/// larger magnitudes.
#[allow(dead_code)] // not every test binary that shares this module fills buffers
pub fn values_with_outliers(len: usize, seed: u64, outlier: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            match s % 17 {
                0 => 0.0,
                1 => (u - 0.5) * outlier,
                _ => u * 2.0 - 1.0,
            }
        })
        .collect()
}

/// GEMM sizes for the property tests: the edges of an `mr x nr` register tile (0, 1, 2,
/// one below, at and above each of `mr` and `nr`, `2 nr + 1`) and `extra`, sorted, without
/// repeats.
#[allow(dead_code)] // only the GEMM tests sweep sizes
pub fn tile_edge_sizes((mr, nr): (usize, usize), extra: &[usize]) -> Vec<usize> {
    let mut v = vec![0, 1, 2, mr - 1, mr, mr + 1, nr - 1, nr, nr + 1, 2 * nr + 1];
    v.extend_from_slice(extra);
    v.sort_unstable();
    v.dedup();
    v
}

/// Trains `t` from its current step to step `end` with its own loader; the step losses.
#[allow(dead_code)] // not every test binary that shares this module trains
pub fn train_to(t: &mut selfsup::train::image::Pretrainer, end: u64) -> Vec<f64> {
    let mut loader = t.loader(end, 2);
    let mut losses = Vec::new();
    while let Some(b) = loader.next_batch() {
        let b = b.expect("a batch");
        losses.push(t.train_on(&b).expect("a training step").loss);
        loader.recycle(b);
    }
    losses
}

/// A fresh directory under the system's temp dir (unique per process, tag and call),
/// removed on drop.
#[allow(dead_code)] // not every test binary that shares this module writes files
pub struct TempDir(pub std::path::PathBuf);

#[allow(dead_code)]
impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let k = COUNT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("selfsup_{}_{tag}_{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temp dir");
        Self(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `rel` below the directory (creating subfolders); its path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("create subfolders");
        std::fs::write(&p, bytes).expect("write a file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the `selfsup` binary of this build with `args` (no backtraces), its output.
#[cfg(feature = "cli")]
#[allow(dead_code)] // only the command-line tests run the binary
pub fn selfsup(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run selfsup")
}

/// The newest `*.safetensors` file of a run folder (names sort by step).
#[allow(dead_code)] // only the command-line tests read run folders
pub fn newest_checkpoint(dir: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    let mut c: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("read the run folder")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    c.sort();
    c.pop().expect("a checkpoint")
}

/// Asserts a failure with exit status 2 and one `error:` line on stderr containing `want`
/// (and no panic).
#[allow(dead_code)] // only the command-line tests check errors
pub fn fails_with(args: &[&str], want: &str) {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(lines[0].contains(want), "{args:?}: '{want}' not in: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}
