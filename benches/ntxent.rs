//! NT-Xent (SimCLR's loss) on 2N rows of dimension 128, tau 0.1, adjacent pairing: the
//! streamed forward + backward (docs/performance.md's `ntxent_n*_d128` operation) and the
//! forward alone, at N = 256 and N = 1024.
//!
//! Throughput is the GEMM flops of the streamed algorithm (`src/kernels/contrastive/ntxent.rs`):
//! `m^2 d` for the forward (one GEMM over half of the tile pairs, `m = 2N`) and `4 m^2 d` for
//! forward + backward, so the figure reads against the GEMM's own rate. (The dense
//! formulation PyTorch runs costs `6 m^2 d`.)
//!
//! Run: `cargo bench --bench ntxent`, or filter: `cargo bench --bench ntxent -- n1024`.
//! Threads: rayon's global pool (`RAYON_NUM_THREADS=2 cargo bench --bench ntxent` to match
//! the canonical figures). `selfsup bench --only ntxent_*` times the same operations with the
//! project's repetition rules, and N = 4096 too.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use selfsup::kernels::contrastive::ntxent::{NtXent, NtXentConfig};

const D: usize = 128;
const TAU: f32 = 0.1;

/// (name, N images; the rows are 2N)
const SIZES: &[(&str, usize)] = &[("ntxent_n256_d128", 256), ("ntxent_n1024_d128", 1024)];

/// `len` values uniform in [-1, 1), deterministic.
fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = NtXentConfig::new(TAU);
    for &(name, n) in SIZES {
        let m = 2 * n;
        let z = fill(m * D, 1);
        let mut dz = vec![0.0f32; m * D];
        // One workspace per size, grown by the first call and reused (no allocation after).
        let mut ws = NtXent::new();
        let gemm_flops = (m * m * D) as u64;
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(4 * gemm_flops));
        group.bench_function("forward_backward", |b| {
            b.iter(|| {
                ws.forward_backward(black_box(&z), m, D, &cfg, &mut dz)
                    .unwrap()
            })
        });
        group.throughput(Throughput::Elements(gemm_flops));
        group.bench_function("forward", |b| {
            b.iter(|| ws.forward(black_box(&z), m, D, &cfg).unwrap())
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
