//! SGEMM throughput: `selfsup`'s blocked GEMM against `matrixmultiply::sgemm` on one table
//! of named shapes, reported as FLOP/s (`Throughput::Elements(2 m n k)`).
//!
//! Run: `cargo bench --bench gemm` (all shapes, a few minutes), or filter by name:
//! `cargo bench --bench gemm -- square_1024`, `cargo bench --bench gemm -- conv_`.
//!
//! Threads: `selfsup` runs on rayon's global pool, so it uses `RAYON_NUM_THREADS` threads
//! (default: every logical CPU). `matrixmultiply` has its own pool sized by
//! `MATMUL_NUM_THREADS` (default: physical cores, capped at 4). When `MATMUL_NUM_THREADS` is
//! unset, `main` sets it to rayon's thread count so both sides of each group use the same
//! number of threads. `RAYON_NUM_THREADS=1 cargo bench --bench gemm` gives single-thread
//! figures for both.
//!
//! All operands are dense row-major, allocated and filled once per shape; `beta = 0`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use selfsup::kernels::gemm::{gemm, GemmParams, MatMut, MatRef};

/// One benchmark shape: `C (m x n) = A (m x k) * B (k x n)`.
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
}

const fn shape(name: &'static str, m: usize, n: usize, k: usize) -> Shape {
    Shape { name, m, n, k }
}

/// The shape table. The `conv_*` rows are the ResNet-mini convolutions (see
/// docs/performance.md) at 32 images per batch, written as im2col GEMMs with
/// `M = C_out`, `K = C_in * 9`, `N = batch * H * W`; the gradients are timed with the same
/// row-major layout as the forward pass (only their shapes are taken from training).
const SHAPES: &[Shape] = &[
    shape("square_64", 64, 64, 64),
    shape("square_128", 128, 128, 128),
    shape("square_256", 256, 256, 256),
    shape("square_512", 512, 512, 512),
    shape("square_1024", 1024, 1024, 1024),
    shape("square_2048", 2048, 2048, 2048),
    // Stem: 3 -> 32 channels at 32x32.
    shape("conv_k27_fwd", 32, 32768, 27),
    // block1: 32 -> 32 at 32x32.
    shape("conv_c32_fwd", 32, 32768, 288),
    // block2: 64 -> 64 at 16x16.
    shape("conv_c64_fwd", 64, 8192, 576),
    // block3: 128 -> 128 at 8x8.
    shape("conv_c128_fwd", 128, 2048, 1152),
    // block1 weight gradient: dW (32 x 288) = dY (32 x N) * cols^T (N x 288).
    shape("conv_c32_wgrad", 32, 288, 32768),
    // block1 input gradient: dcols (288 x N) = W^T (288 x 32) * dY (32 x N).
    shape("conv_c32_igrad", 288, 32768, 32),
    shape("tall_skinny_n64", 8192, 64, 128),
    shape("tall_skinny_n128", 8192, 128, 128),
    shape("skinny_k8192", 64, 64, 8192),
    shape("small_48", 48, 48, 48),
];

/// Deterministic values in `[-0.5, 0.5)`.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64*
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn selfsup_gemm(sh: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm(
        &GemmParams::default(),
        MatRef::row_major(a, sh.m, sh.k).expect("A fits"),
        MatRef::row_major(b, sh.k, sh.n).expect("B fits"),
        MatMut::row_major(c, sh.m, sh.n).expect("C fits"),
    )
    .expect("shapes agree");
}

fn mm_sgemm(sh: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, n, k) = (sh.m, sh.n, sh.k);
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    let stride = |x: usize| isize::try_from(x).expect("stride fits isize");
    // SAFETY: A is m x k, B is k x n and C is m x n, dense row-major, and the assert above
    // shows each buffer holds them; C is exclusively borrowed and overlaps neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            stride(k),
            1,
            b.as_ptr(),
            stride(n),
            1,
            0.0,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

/// Fails loudly if the two implementations disagree, so a broken kernel cannot post a
/// good time. The bound is loose (relative to the largest output) but catches wrong layouts.
fn check_agree(sh: &Shape, a: &[f32], b: &[f32]) {
    let mut c1 = vec![f32::NAN; sh.m * sh.n];
    let mut c2 = vec![f32::NAN; sh.m * sh.n];
    selfsup_gemm(sh, a, b, &mut c1);
    mm_sgemm(sh, a, b, &mut c2);
    let scale = c2.iter().fold(0.0f32, |s, x| s.max(x.abs())).max(1.0);
    let worst = c1
        .iter()
        .zip(&c2)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0f32,
            |w, d| if d.is_nan() { f32::INFINITY } else { w.max(d) },
        );
    assert!(
        worst <= 1e-3 * scale,
        "{}: selfsup and matrixmultiply differ by {worst} (largest |C| {scale})",
        sh.name
    );
}

fn bench_shape(c: &mut Criterion, sh: &Shape) {
    let (m, n, k) = (sh.m, sh.n, sh.k);
    let flops = 2 * (m * n * k) as u64;
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let mut out = vec![0.0f32; m * n];

    let mut group = c.benchmark_group(sh.name);
    group.throughput(Throughput::Elements(flops));
    if flops >= 1_000_000_000 {
        // 0.01-0.5 s per call: flat sampling needs only `sample_size` iterations.
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
    } else {
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    }
    // Criterion does not expose its name filter, so this runs for every shape, filtered
    // or not: one call per side, about a second in all.
    check_agree(sh, &a, &b);
    group.bench_function("selfsup", |bch| {
        bch.iter(|| selfsup_gemm(sh, black_box(&a), black_box(&b), black_box(&mut out)));
    });
    group.bench_function("matrixmultiply", |bch| {
        bch.iter(|| mm_sgemm(sh, black_box(&a), black_box(&b), black_box(&mut out)));
    });
    group.finish();
}

/// The size of rayon's global pool, as rayon will choose it: `RAYON_NUM_THREADS` when set
/// to a positive number, else the available parallelism.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Gives matrixmultiply rayon's thread count unless the user chose one.
fn align_thread_counts() {
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        // First thing in `main`: no other thread exists yet, and matrixmultiply reads the
        // variable only once, lazily, on its first call.
        std::env::set_var("MATMUL_NUM_THREADS", rayon_threads().to_string());
    }
    eprintln!(
        "gemm bench: selfsup on {} rayon thread(s); matrixmultiply MATMUL_NUM_THREADS={} (capped at 4)",
        rayon::current_num_threads(),
        std::env::var("MATMUL_NUM_THREADS").unwrap_or_default()
    );
}

fn main() {
    align_thread_counts();
    let mut c = Criterion::default().configure_from_args();
    for sh in SHAPES {
        bench_shape(&mut c, sh);
    }
    c.final_summary();
}
