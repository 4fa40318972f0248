//! The SimCLR augmentation pipeline (`src/data/augment.rs`) on batches of images, in images
//! per second (one image = its two views), and the RotNet batch (one image = its four
//! rotations).
//!
//! - `augment_simclr_32`: 256 RGB images 32x32 -> 2 views each, SimCLR's CIFAR settings
//!   (crop, flip, color jitter at strength 0.5, grayscale, no blur): the operation of
//!   `selfsup bench --only augment_simclr_32`.
//! - `augment_simclr_96_blur`: 64 RGB images 96x96 -> 2 views each at strength 1.0 with the
//!   Gaussian blur (kernel 9), the STL-10 setting.
//! - `rotnet_32`: 256 RGB images 32x32 -> 4 rotations each, flip p = 0.5.
//!
//! Run: `cargo bench --bench augment`. Threads: rayon's global pool
//! (`RAYON_NUM_THREADS=1 cargo bench --bench augment` for one thread).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use selfsup::data::augment::{rotnet_batch, simclr_views, RotnetAugment, SimclrAugment};
use selfsup::data::ImageSet;

/// A set of `n` RGB images `side x side` with bytes uniform in 0..=255, deterministic.
fn image_set(n: usize, side: usize) -> ImageSet {
    let mut s = 0x2545_f491u32;
    let pixels = (0..n * 3 * side * side)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect();
    ImageSet::uniform(pixels, n, 3, side, side)
}

fn bench(c: &mut Criterion) {
    // (name, images per batch, side, color strength)
    for (name, images, side, strength) in [
        ("augment_simclr_32", 256, 32, 0.5),
        ("augment_simclr_96_blur", 64, 96, 1.0),
    ] {
        let set = image_set(4 * images, side);
        let cfg = SimclrAugment::for_image(side, 3, strength);
        let indices: Vec<usize> = (0..images).map(|k| (k * 7) % set.n).collect();
        let mut out = vec![0.0f32; 2 * images * cfg.view_len(3)];
        let mut group = c.benchmark_group(name);
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(images as u64));
        let mut epoch = 0u64;
        group.bench_function("two_views", |b| {
            b.iter(|| {
                epoch += 1;
                simclr_views(&set, black_box(&indices), &cfg, 7, epoch, &mut out).unwrap()
            })
        });
        group.finish();
    }

    let (images, side) = (256, 32);
    let set = image_set(4 * images, side);
    let indices: Vec<usize> = (0..images).collect();
    let mut out = vec![0.0f32; 4 * images * 3 * side * side];
    let mut labels = vec![0u32; 4 * images];
    let cfg = RotnetAugment::default();
    let mut group = c.benchmark_group("rotnet_32");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(images as u64));
    let mut epoch = 0u64;
    group.bench_function("four_rotations", |b| {
        b.iter(|| {
            epoch += 1;
            rotnet_batch(
                &set,
                black_box(&indices),
                &cfg,
                side,
                7,
                epoch,
                &mut out,
                &mut labels,
            )
            .unwrap()
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
