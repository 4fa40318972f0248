//! Throughput of the vectorized `exp`, `ln`, `log1p` and `softplus` slice APIs on 64K floats
//! (256 KiB, in L2), in place, against the scalar `std` loop over the same data.
//!
//! Run: `cargo bench --bench vmath`, and `SELFSUP_FORCE_PORTABLE=1 cargo bench --bench vmath`
//! for the portable backend; the benchmark id names the instruction set that ran
//! (`exp/vmath_avx2`, `exp/vmath_portable`). Filter: `cargo bench --bench vmath -- softplus`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use selfsup::kernels::vmath::{exp_inplace, ln_inplace, log1p_inplace, softplus_inplace};

const N: usize = 64 * 1024;

/// `N` values uniform in `[lo, hi)` (xorshift32), or `2^u` for `u` uniform there with `exp2`.
fn fill(lo: f32, hi: f32, exp2: bool, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let u = lo + (hi - lo) * ((s >> 8) as f32 / (1u32 << 24) as f32);
            if exp2 {
                u.exp2()
            } else {
                u
            }
        })
        .collect()
}

/// One function: the vectorized slice API and the scalar `std` loop, on the same inputs.
/// Generic so that the scalar reference inlines into its loop.
fn bench_one(
    c: &mut Criterion,
    name: &str,
    vector: impl Fn(&mut [f32]),
    scalar: impl Fn(f32) -> f32,
    x: &[f32],
) {
    let isa = selfsup::kernels::isa().name();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(N as u64));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function(format!("vmath_{isa}"), |b| {
        b.iter_batched_ref(
            || x.to_vec(),
            |v| vector(black_box(v)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("scalar_std", |b| {
        b.iter_batched_ref(
            || x.to_vec(),
            |v| {
                for e in black_box(v).iter_mut() {
                    *e = scalar(*e);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    bench_one(
        c,
        "exp",
        exp_inplace,
        f32::exp,
        &fill(-80.0, 80.0, false, 1),
    );
    // Positive inputs over 2^-100 .. 2^100.
    bench_one(c, "ln", ln_inplace, f32::ln, &fill(-100.0, 100.0, true, 2));
    bench_one(
        c,
        "log1p",
        log1p_inplace,
        f32::ln_1p,
        &fill(-0.9, 10.0, false, 3),
    );
    bench_one(
        c,
        "softplus",
        softplus_inplace,
        |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
        &fill(-20.0, 20.0, false, 4),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
