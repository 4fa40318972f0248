//! The memory probes of `selfsup bench`: the heap high-water mark of one operation, measured
//! with the counting global allocator ([`super::peak_alloc`]).
//!
//! `ntxent_n16384_d128` runs one NT-Xent forward + backward over 32768 x 128 rows from a fresh
//! [`NtXent`] workspace and reports the most heap bytes live at once during the call beyond
//! those live before it: the input `z` and the output `dz` are allocated before and reported
//! apart. The call runs on a fresh thread pool, so the per-thread scratch (score tiles, GEMM
//! packing buffers) starts empty and is counted, whatever ran earlier in the process. A dense
//! formulation would hold 32768 x 32768 f32 matrices (4 GiB each).

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use selfsup::kernels::contrastive::ntxent::{NtXent, NtXentConfig};

use super::inputs::filled;
use super::ntxent::{check_orthogonal, NTXENT_D, NTXENT_TAU};

/// Images of the canonical NT-Xent memory probe (twice as many rows).
pub const NTXENT_MEMORY_N: usize = 16384;

/// One memory probe: an NT-Xent forward + backward over `2n x d` rows.
#[derive(Clone, Debug)]
pub struct MemoryProbe {
    pub name: &'static str,
    /// One line for humans: what is measured.
    pub about: String,
    pub n: usize,
    pub d: usize,
    pub tau: f32,
}

/// Every memory probe, in the order they run.
pub fn probes() -> Vec<MemoryProbe> {
    let (n, d) = (NTXENT_MEMORY_N, NTXENT_D);
    vec![MemoryProbe {
        name: "ntxent_n16384_d128",
        about: format!(
            "memory probe: peak heap of one NT-Xent forward + backward, {} rows x {d}, tau {} \
             (one run, not repeated)",
            2 * n,
            NTXENT_TAU
        ),
        n,
        d,
        tau: NTXENT_TAU,
    }]
}

/// What one probe measured.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryMeasurement {
    /// `ntxent_n{n}_d{d}`, from the size actually run.
    pub name: String,
    pub rows: usize,
    pub d: usize,
    /// The most heap bytes live at once during the call, beyond those live before it.
    pub peak_heap_bytes: usize,
    /// Heap bytes still live right after the call (the workspace and the per-thread
    /// scratch), beyond those live before it.
    pub retained_bytes: usize,
    /// `z`, allocated before the call.
    pub input_bytes: usize,
    /// `dz`, allocated before the call.
    pub output_bytes: usize,
    /// Wall time of the one call (cold: first touch of the workspace included).
    pub seconds: f64,
    pub loss: f32,
}

impl MemoryProbe {
    /// Runs the probe once on a fresh pool of `threads` threads, with `n` images instead of
    /// `self.n` when given (the tests use a small size).
    pub fn run(&self, threads: usize, n: Option<usize>) -> Result<MemoryMeasurement> {
        let n = n.unwrap_or(self.n);
        let (m, d) = (2 * n, self.d);
        let name = format!("ntxent_n{n}_d{d}");
        // A fresh pool: its threads have not grown any per-thread scratch yet.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("selfsup-memory-{i}"))
            .build()
            .with_context(|| format!("{name}: cannot start a pool of {threads} threads"))?;
        // Every worker is up (its start-up allocations done) before the count starts.
        pool.broadcast(|_| ());

        let z = filled(m * d, 0x5eed_0301);
        let mut dz = vec![0.0f32; m * d];
        let cfg = NtXentConfig::new(self.tau);
        let alloc = &crate::ALLOCATOR;
        let (result, seconds, peak, retained) = pool.install(|| {
            let mut ws = NtXent::new();
            let before = alloc.reset_peak();
            let start = Instant::now();
            let result = ws.forward_backward(&z, m, d, &cfg, &mut dz);
            let seconds = start.elapsed().as_secs_f64();
            let peak = alloc.peak().saturating_sub(before);
            let retained = alloc.live().saturating_sub(before);
            drop(ws);
            (result, seconds, peak, retained)
        });
        let out = result.with_context(|| format!("running memory probe '{name}'"))?;
        ensure!(
            out.loss.is_finite(),
            "memory probe '{name}': loss is not finite: {}",
            out.loss
        );
        check_orthogonal(&z, &dz, d).with_context(|| format!("memory probe '{name}'"))?;
        Ok(MemoryMeasurement {
            name,
            rows: m,
            d,
            peak_heap_bytes: peak,
            retained_bytes: retained,
            input_bytes: std::mem::size_of_val(z.as_slice()),
            output_bytes: std::mem::size_of_val(dz.as_slice()),
            seconds,
            loss: out.loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_probe_counts_the_workspace() {
        let _guard = super::super::peak_alloc::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let probe = &probes()[0];
        let r = probe.run(2, Some(512)).unwrap();
        assert_eq!(
            (r.name.as_str(), r.rows, r.d),
            ("ntxent_n512_d128", 1024, 128)
        );
        assert_eq!(r.input_bytes, 1024 * 128 * 4);
        assert_eq!(r.output_bytes, r.input_bytes);
        // The workspace holds at least the normalized rows (as many bytes as z) and keeps
        // them after the call. Other tests may allocate concurrently, so only bounds hold.
        assert!(r.retained_bytes >= r.input_bytes, "{r:?}");
        assert!(r.peak_heap_bytes >= r.retained_bytes, "{r:?}");
        assert!(r.seconds > 0.0 && r.loss.is_finite(), "{r:?}");
    }
}
