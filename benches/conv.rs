//! conv2d throughput on the layers of ResNet-mini (docs/performance.md): forward, input
//! gradient and weight gradient, each reported as FLOP/s (`2 * N * Cout * Ho * Wo * Cin * Kh
//! * Kw` per pass).
//!
//! Run: `cargo bench --bench conv` (every layer), or filter: `cargo bench --bench conv -- block3`.
//! Threads: rayon's global pool (`RAYON_NUM_THREADS=1 cargo bench --bench conv` for one).
//! The batch is 128 images here to keep the run short; `selfsup bench` times the canonical
//! batch of 512 for the three 3x3 workloads.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d,
};

const BATCH: usize = 128;

/// (name, C_in, H = W, C_out, kernel, stride, padding)
const LAYERS: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("stem_3x3_c3_c32_32x32", 3, 32, 32, 3, 1, 1),
    ("block1_3x3_c32_32x32", 32, 32, 32, 3, 1, 1),
    ("block2_3x3s2_c32_c64_32x32", 32, 32, 64, 3, 2, 1),
    ("block2_3x3_c64_16x16", 64, 16, 64, 3, 1, 1),
    ("block2_1x1s2_c32_c64_32x32", 32, 32, 64, 1, 2, 0),
    ("block3_3x3s2_c64_c128_16x16", 64, 16, 128, 3, 2, 1),
    ("block3_3x3_c128_8x8", 128, 8, 128, 3, 1, 1),
    ("block3_1x1s2_c64_c128_16x16", 64, 16, 128, 1, 2, 0),
];

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
    for &(name, cin, hw, cout, k, s, p) in LAYERS {
        let g = Conv2d::new(BATCH, cin, hw, hw, cout, k, s, p);
        let x = fill(g.x_len(), 1);
        let w = fill(g.w_len(), 2);
        let dy = fill(g.y_len(), 3);
        let mut y = vec![0.0f32; g.y_len()];
        let mut dx = vec![0.0f32; g.x_len()];
        let mut dw = vec![0.0f32; g.w_len()];
        let flops = 2 * BATCH * cout * g.out_h() * g.out_w() * cin * k * k;
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(flops as u64));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3));
        group.bench_function("forward", |b| {
            b.iter(|| {
                conv2d_forward(&g, black_box(&x), black_box(&w), None, false, &mut y).unwrap()
            })
        });
        group.bench_function("input_grad", |b| {
            b.iter(|| conv2d_backward_input(&g, black_box(&dy), black_box(&w), &mut dx).unwrap())
        });
        group.bench_function("weight_grad", |b| {
            b.iter(|| {
                conv2d_backward_weight(&g, black_box(&x), black_box(&dy), &mut dw, false).unwrap()
            })
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
