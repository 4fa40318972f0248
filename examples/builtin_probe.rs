//! Measurements of the built-in dataset: generation time, a grid of examples per class
//! (`/tmp/builtin_grid.png`), and raw-pixel baselines (nearest class mean, linear probe).
use selfsup::data::builtin::{builtin_splits, generate, BuiltinConfig, CLASSES, CLASS_NAMES};
use selfsup::data::resize::eval_tensor;
use selfsup::data::ImageSet;
use selfsup::eval::logistic::LogisticRegression;
use selfsup::eval::probe::{linear_probe, select_rows, subsample_labels, ProbeConfig};
use selfsup::eval::standardize::Standardizer;
use selfsup::rng::SplitMix64;
use std::time::Instant;

fn grid(set: &ImageSet, per_class: usize, path: &str) {
    let labels = set.labels.as_ref().unwrap();
    let (h, w) = set.uniform_size().expect("built-in images are of one size");
    let pad = 2;
    let scale = 3;
    let gw = per_class * (w + pad) * scale;
    let gh = CLASSES * (h + pad) * scale;
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([40, 40, 40]));
    for c in 0..CLASSES {
        let idx: Vec<usize> = (0..set.n)
            .filter(|&i| labels[i] as usize == c)
            .take(per_class)
            .collect();
        for (k, &i) in idx.iter().enumerate() {
            let im = set.image(i).pixels;
            for y in 0..h * scale {
                for x in 0..w * scale {
                    let (sy, sx) = (y / scale, x / scale);
                    let px = |ch: usize| im[ch * h * w + sy * w + sx];
                    img.put_pixel(
                        (k * (w + pad) * scale + x) as u32,
                        (c * (h + pad) * scale + y) as u32,
                        image::Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    img.save(path).unwrap();
}

/// The side of the (square) built-in images.
fn side(set: &ImageSet) -> usize {
    set.uniform_size()
        .expect("built-in images are of one size")
        .0
}

/// Nearest-class-mean accuracy on raw pixels (values in [0, 1]).
#[allow(clippy::needless_range_loop)]
fn ncm(train: &ImageSet, test: &ImageSet) -> f64 {
    let d = train.channels * side(train) * side(train);
    let tl = train.labels.as_ref().unwrap();
    let mut means = vec![0.0f64; CLASSES * d];
    let mut counts = [0usize; CLASSES];
    for i in 0..train.n {
        let c = tl[i] as usize;
        counts[c] += 1;
        for (m, v) in means[c * d..(c + 1) * d]
            .iter_mut()
            .zip(train.image(i).to_f32())
        {
            *m += v as f64;
        }
    }
    for c in 0..CLASSES {
        for m in &mut means[c * d..(c + 1) * d] {
            *m /= counts[c] as f64;
        }
    }
    let el = test.labels.as_ref().unwrap();
    let mut correct = 0;
    for i in 0..test.n {
        let x = test.image(i).to_f32();
        let best = (0..CLASSES)
            .map(|c| {
                let dist: f64 = means[c * d..(c + 1) * d]
                    .iter()
                    .zip(&x)
                    .map(|(m, &v)| (m - v as f64).powi(2))
                    .sum();
                (dist, c)
            })
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
            .unwrap()
            .1;
        correct += (best == el[i] as usize) as usize;
    }
    correct as f64 / test.n as f64
}

fn main() {
    let _ = generate(100, 1);
    let mut times = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        let s = generate(20_000, 7);
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&s);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "generate(20000): median {:.3} s (min {:.3})",
        times[1], times[0]
    );
    let cfg = BuiltinConfig::default();
    let (train, test) = builtin_splits(&cfg);
    grid(&train, 10, "/tmp/builtin_grid.png");
    println!("grid written; classes: {:?}", CLASS_NAMES);
    println!(
        "nearest class mean (raw pixels): {:.1}%",
        100.0 * ncm(&train, &test)
    );
    if std::env::var_os("NOPROBE").is_none() {
        probe(&train, &test);
    }
    if std::env::var_os("BIG").is_some() {
        big();
    }
}

fn probe(train: &ImageSet, test: &ImageSet) {
    // The images' values, as the probe sees them (the evaluation view of an image of the
    // view's size is the image).
    let size = side(train);
    let d = train.channels * size * size;
    let (train_x, test_x) = (eval_tensor(train, size), eval_tensor(test, size));
    let tl = train.labels.as_ref().unwrap();
    let el = test.labels.as_ref().unwrap();
    let cfg = ProbeConfig::default();
    for frac in [1.0, 0.1, 0.01] {
        let idx = subsample_labels(tl, CLASSES, frac, 1).unwrap();
        let x = select_rows(&train_x, d, &idx).unwrap();
        let y: Vec<u32> = idx.iter().map(|&i| tl[i]).collect();
        let r = linear_probe(&x, &y, &test_x, el, d, CLASSES, &cfg).unwrap();
        println!(
            "raw-pixel linear probe, {:>5.1}% labels ({} examples): test {:.1}%, train {:.1}%, lambda {:e}, {} iterations, converged {}, |g|inf {:.1e}, {:.1} s; scores {:?}",
            frac * 100.0,
            y.len(),
            100.0 * r.accuracy,
            100.0 * r.train_accuracy,
            r.lambda,
            r.iterations,
            r.converged,
            r.grad_norm,
            r.seconds,
            r.lambda_scores
        );
    }
}

/// The probe on 60000 x 784 synthetic "pixels" with labels from a noisy linear teacher.
fn big() {
    let (n, d, c) = (60_000usize, 784usize, 10usize);
    let mut rng = SplitMix64::new(42);
    let x: Vec<f32> = (0..n * d).map(|_| rng.next_f32()).collect();
    let teacher: Vec<f32> = (0..c * d).map(|_| rng.next_f32() - 0.5).collect();
    let y: Vec<u32> = x
        .chunks_exact(d)
        .map(|row| {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for k in 0..c {
                let z: f32 = row
                    .iter()
                    .zip(&teacher[k * d..(k + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    + 1.5 * (rng.next_f32() - 0.5);
                if z > best.0 {
                    best = (z, k as u32);
                }
            }
            best.1
        })
        .collect();
    let st = Standardizer::fit(&x, n, d).unwrap();
    let xs = st.transform(&x, n).unwrap();
    let cfg = ProbeConfig::default();
    for lambda in [1e-2, 1e-4] {
        let t = Instant::now();
        let m = LogisticRegression::fit(
            &xs,
            n,
            d,
            &y,
            c,
            &ProbeConfig {
                lambda,
                ..cfg.clone()
            },
        )
        .unwrap();
        println!(
            "60000x784 single fit lambda {lambda:e}: {:.1} s, {} iterations, {} evaluations, converged {}, |g|inf {:.1e}, train acc {:.1}%",
            t.elapsed().as_secs_f64(),
            m.info.iterations,
            m.info.evaluations,
            m.info.converged,
            m.info.grad_norm,
            100.0 * m.accuracy(&xs, n, &y).unwrap()
        );
    }
    let t = Instant::now();
    let r = linear_probe(
        &x[..50_000 * d],
        &y[..50_000],
        &x[50_000 * d..],
        &y[50_000..],
        d,
        c,
        &cfg,
    )
    .unwrap();
    println!(
        "50000+10000 x 784 linear_probe (grid of 6 + refit): {:.1} s, test {:.1}%, lambda {:e}, {} iterations, scores {:?}",
        t.elapsed().as_secs_f64(),
        100.0 * r.accuracy,
        r.lambda,
        r.iterations,
        r.lambda_scores
    );
}
