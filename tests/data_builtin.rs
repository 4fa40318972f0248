//! The built-in dataset: shape, range, balance, determinism, thread-count independence, and
//! that raw-pixel class means do not classify it.
use selfsup::data::builtin::{
    builtin_splits, generate, label_of, BuiltinConfig, CLASSES, CLASS_NAMES, IMAGE_LEN, SIDE,
};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn shape_range_and_labels() {
    let s = generate(250, 3);
    assert_eq!((s.n, s.channels, s.height, s.width), (250, 3, SIDE, SIDE));
    assert_eq!(s.classes, Some(CLASSES));
    assert_eq!(s.images.len(), 250 * IMAGE_LEN);
    assert!(s
        .images
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    let labels = s.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 250);
    let mut counts = [0usize; CLASSES];
    for &y in labels {
        counts[y as usize] += 1;
    }
    assert_eq!(counts, [25; CLASSES]);
    assert_eq!(CLASS_NAMES.len(), CLASSES);
    // Images are not blank: every image has some spread of values.
    for i in 0..s.n {
        let im = s.image(i);
        let (lo, hi) = im
            .iter()
            .fold((1.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 0.2, "image {i} is nearly flat");
    }
}

#[test]
fn balanced_within_one_for_any_n() {
    for n in [1, 7, 13, 99] {
        let s = generate(n, 11);
        let mut counts = [0usize; CLASSES];
        for &y in s.labels.as_ref().unwrap() {
            counts[y as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "n = {n}: {counts:?}");
    }
    assert!((0..1000).all(|i| (label_of(5, i) as usize) < CLASSES));
}

#[test]
fn deterministic_and_seed_dependent() {
    let a = generate(60, 42);
    let b = generate(60, 42);
    assert_eq!(bits(&a.images), bits(&b.images));
    assert_eq!(a.labels, b.labels);
    let c = generate(60, 43);
    assert_ne!(bits(&a.images), bits(&c.images));
    // Image i depends on (seed, i) only: a shorter run is a prefix.
    let p = generate(25, 42);
    assert_eq!(bits(&p.images), bits(&a.images[..25 * IMAGE_LEN]));
}

#[test]
fn thread_count_independent() {
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| generate(97, 9))
    };
    let (a, b, c) = (run(1), run(2), run(3));
    assert_eq!(bits(&a.images), bits(&b.images));
    assert_eq!(bits(&a.images), bits(&c.images));
    assert_eq!(a.labels, b.labels);
}

#[test]
fn splits_differ_and_have_the_configured_sizes() {
    let cfg = BuiltinConfig {
        n_train: 40,
        n_test: 20,
        seed: 1,
    };
    let (tr, te) = builtin_splits(&cfg);
    assert_eq!((tr.n, te.n), (40, 20));
    for i in 0..te.n {
        for j in 0..tr.n {
            assert_ne!(bits(te.image(i)), bits(tr.image(j)));
        }
    }
    let d = BuiltinConfig::default();
    assert_eq!((d.n_train, d.n_test), (20_000, 2_000));
}

/// Nearest class mean on raw pixels stays near chance (the classes differ in structure, not
/// in where the color is), while the same classifier on a position- and color-invariant
/// structural feature of the same images does much better.
#[test]
fn class_means_do_not_classify_but_structure_does() {
    let train = generate(2000, 100);
    let test = generate(500, 200);
    let acc = |feat: &dyn Fn(&[f32]) -> Vec<f64>| -> f64 {
        let f_tr: Vec<Vec<f64>> = (0..train.n).map(|i| feat(train.image(i))).collect();
        let dim = f_tr[0].len();
        let mut means = vec![vec![0.0; dim]; CLASSES];
        let mut counts = [0.0; CLASSES];
        for (i, f) in f_tr.iter().enumerate() {
            let y = train.label(i).unwrap() as usize;
            counts[y] += 1.0;
            for (m, v) in means[y].iter_mut().zip(f) {
                *m += v;
            }
        }
        for (m, c) in means.iter_mut().zip(counts) {
            m.iter_mut().for_each(|v| *v /= c);
        }
        let mut correct = 0;
        for i in 0..test.n {
            let f = feat(test.image(i));
            let best = (0..CLASSES)
                .min_by(|&a, &b| {
                    let da: f64 = means[a].iter().zip(&f).map(|(m, v)| (m - v).powi(2)).sum();
                    let db: f64 = means[b].iter().zip(&f).map(|(m, v)| (m - v).powi(2)).sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            correct += usize::from(best == test.label(i).unwrap() as usize);
        }
        correct as f64 / test.n as f64
    };
    let raw = acc(&|im: &[f32]| im.iter().map(|&v| f64::from(v)).collect());
    // Structure: the histogram of gradient orientations of the luminance, weighted by
    // gradient magnitude and normalized (invariant to position, polarity up to a flip, and
    // color scale), plus the fraction of strong-edge pixels.
    let hog = acc(&|im: &[f32]| {
        let p = SIDE * SIDE;
        let l: Vec<f64> = (0..p)
            .map(|k| {
                0.3 * f64::from(im[k])
                    + 0.59 * f64::from(im[p + k])
                    + 0.11 * f64::from(im[2 * p + k])
            })
            .collect();
        let mut h = [0.0; 9];
        let mut strong = 0.0;
        let mut total = 0.0;
        for y in 1..SIDE - 1 {
            for x in 1..SIDE - 1 {
                let gx = l[y * SIDE + x + 1] - l[y * SIDE + x - 1];
                let gy = l[(y + 1) * SIDE + x] - l[(y - 1) * SIDE + x];
                let m = (gx * gx + gy * gy).sqrt();
                let a = gy.atan2(gx).rem_euclid(std::f64::consts::PI);
                h[((a / std::f64::consts::PI * 9.0) as usize).min(8)] += m;
                total += m;
                if m > 0.15 {
                    strong += 1.0;
                }
            }
        }
        let mut f: Vec<f64> = h.iter().map(|v| v / total.max(1e-9)).collect();
        f.push(strong / 900.0);
        f
    });
    assert!(raw < 0.2, "raw-pixel nearest class mean {raw}");
    assert!(hog > raw + 0.1, "structural feature {hog} vs raw {raw}");
}
