//! The linear probe: objective and gradient against finite differences and an f64 reference,
//! the fit reaching the optimum, separable data, label subsets, errors.
use selfsup::eval::logistic::{objective, objective_f64, LogisticRegression};
use selfsup::eval::probe::{
    kfold_assignments, kfold_probe, linear_probe, select_lambda, subsample_labels, KFoldReport,
    ProbeConfig,
};
use selfsup::eval::standardize::Standardizer;
use selfsup::rng::SplitMix64;
use selfsup::Error;

/// `n x dim` features around class centers (`spread` the noise), labels `i % classes`.
fn blobs(n: usize, dim: usize, classes: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = SplitMix64::new(seed);
    let centers: Vec<f32> = (0..classes * dim)
        .map(|_| 2.0 * r.next_f32() - 1.0)
        .collect();
    let mut x = Vec::with_capacity(n * dim);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        y.push(c as u32);
        for k in 0..dim {
            x.push(centers[c * dim + k] + spread * (2.0 * r.next_f32() - 1.0));
        }
    }
    (x, y)
}

fn random_theta(len: usize, seed: u64) -> Vec<f64> {
    let mut r = SplitMix64::new(seed);
    (0..len).map(|_| r.next_f64() - 0.5).collect()
}

#[test]
fn gradient_matches_finite_differences() {
    let (n, d, c) = (30, 5, 3);
    let (x, y) = blobs(n, d, c, 0.8, 1);
    let lambda = 0.05;
    let theta = random_theta(c * d + c, 2);
    let mut g = vec![0.0; theta.len()];
    let f0 = objective_f64(&x, n, d, &y, c, lambda, &theta, &mut g).unwrap();
    assert!(f0.is_finite());
    let mut scratch = vec![0.0; theta.len()];
    for k in 0..theta.len() {
        let h = 1e-6;
        let mut tp = theta.clone();
        tp[k] += h;
        let fp = objective_f64(&x, n, d, &y, c, lambda, &tp, &mut scratch).unwrap();
        tp[k] -= 2.0 * h;
        let fm = objective_f64(&x, n, d, &y, c, lambda, &tp, &mut scratch).unwrap();
        let fd = (fp - fm) / (2.0 * h);
        assert!(
            (fd - g[k]).abs() < 1e-7,
            "component {k}: fd {fd} vs {}",
            g[k]
        );
    }
}

#[test]
fn fast_objective_matches_f64_reference() {
    // More rows than one block of the fused evaluation.
    let (n, d, c) = (700, 17, 4);
    let (x, y) = blobs(n, d, c, 1.0, 3);
    let theta = random_theta(c * d + c, 4);
    let (mut g1, mut g2) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
    let f1 = objective(&x, n, d, &y, c, 0.01, &theta, &mut g1).unwrap();
    let f2 = objective_f64(&x, n, d, &y, c, 0.01, &theta, &mut g2).unwrap();
    assert!((f1 - f2).abs() < 1e-5 * f2.abs().max(1.0), "{f1} vs {f2}");
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn fit_reaches_the_optimum() {
    let (n, d, c) = (400, 8, 3);
    let (x, y) = blobs(n, d, c, 1.5, 5);
    let cfg = ProbeConfig {
        lambda: 1e-2,
        tol: 1e-6,
        ..ProbeConfig::default()
    };
    let m = LogisticRegression::fit(&x, n, d, &y, c, &cfg).unwrap();
    assert!(m.info.converged, "{:?}", m.info);
    // The exact f64 gradient at the solution is (close to) zero ...
    let theta: Vec<f64> = m
        .weights
        .iter()
        .chain(&m.bias)
        .map(|&v| f64::from(v))
        .collect();
    let mut g = vec![0.0; theta.len()];
    let f = objective_f64(&x, n, d, &y, c, cfg.lambda, &theta, &mut g).unwrap();
    let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(gmax < 1e-5, "gradient at the solution {gmax}");
    // ... and a long plain gradient descent in f64 from zero ends at the same objective.
    let mut t = vec![0.0; theta.len()];
    let mut gd = vec![0.0; theta.len()];
    let mut fgd = 0.0;
    for _ in 0..20_000 {
        fgd = objective_f64(&x, n, d, &y, c, cfg.lambda, &t, &mut gd).unwrap();
        for (ti, gi) in t.iter_mut().zip(&gd) {
            *ti -= 0.5 * gi;
        }
    }
    assert!(
        (f - fgd).abs() < 1e-6,
        "L-BFGS {f} vs gradient descent {fgd}"
    );
}

/// Two classes in one dimension, unregularized: at x = +1 three of four examples are class 1,
/// at x = -1 three of four are class 0. The optimum puts P(class 1 | x = 1) = 3/4, so the
/// logit difference is ln 3 at x = 1 and -ln 3 at x = -1: weight difference ln 3, bias
/// difference 0, and the loss is the entropy of (3/4, 1/4).
#[test]
fn two_class_closed_form() {
    // At x = +1: 3 of 4 examples class 1; at x = -1: 3 of 4 class 0.
    let x = [1.0f32, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0];
    let y = [1u32, 1, 1, 0, 0, 0, 0, 1];
    let cfg = ProbeConfig {
        lambda: 0.0,
        tol: 1e-8,
        ..ProbeConfig::default()
    };
    let m = LogisticRegression::fit(&x, 8, 1, &y, 2, &cfg).unwrap();
    // P(class 1 | x = 1) = sigmoid(dw + db) must equal 3/4, so dw = ln 3, db = 0.
    let dw = f64::from(m.weights[1] - m.weights[0]);
    let db = f64::from(m.bias[1] - m.bias[0]);
    assert!((dw - 3f64.ln()).abs() < 1e-5, "dw {dw}");
    assert!(db.abs() < 1e-5, "db {db}");
    assert!((m.info.loss - (-(0.75f64.ln() * 0.75 + 0.25f64.ln() * 0.25))).abs() < 1e-6);
}

#[test]
fn separable_data_is_classified_perfectly() {
    let (n, d, c) = (600, 20, 5);
    let (x, y) = blobs(n, d, c, 0.2, 7);
    let (xt, yt) = blobs(200, d, c, 0.2, 7);
    let r = linear_probe(&x, &y, &xt, &yt, d, c, &ProbeConfig::default()).unwrap();
    assert!(r.accuracy > 0.99, "{r:?}");
    assert!(r.train_accuracy > 0.99);
    assert!(!r.lambda_scores.is_empty());
}

#[test]
fn fit_is_thread_count_independent() {
    let (n, d, c) = (900, 12, 4);
    let (x, y) = blobs(n, d, c, 1.2, 8);
    let fit = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| LogisticRegression::fit(&x, n, d, &y, c, &ProbeConfig::default()).unwrap())
    };
    let (a, b) = (fit(1), fit(2));
    let bits = |m: &LogisticRegression| -> Vec<u32> {
        m.weights
            .iter()
            .chain(&m.bias)
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.info, b.info);
}

#[test]
fn standardizer_handles_constant_features() {
    let x = [1.0f32, 5.0, 3.0, 5.0, 5.0, 5.0];
    let s = Standardizer::fit(&x, 3, 2).unwrap();
    assert_eq!(s.std[1], 1.0);
    assert!((s.mean[0] - 3.0).abs() < 1e-6);
    let t = s.transform(&x, 3).unwrap();
    assert_eq!((t[1], t[3], t[5]), (0.0, 0.0, 0.0));
    let m: f32 = (t[0] + t[2] + t[4]) / 3.0;
    let v: f32 = (t[0] * t[0] + t[2] * t[2] + t[4] * t[4]) / 3.0;
    assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5);
}

#[test]
fn the_probe_standardizes_unless_told_not_to() {
    // Features on very different scales, so standardizing changes the fit.
    let (n, d, c) = (60, 4, 3);
    let (mut x, y) = blobs(n, d, c, 0.9, 11);
    for row in x.chunks_exact_mut(d) {
        row[0] = 50.0 * row[0] + 7.0;
        row[3] *= 0.01;
    }
    let fixed = |standardize| ProbeConfig {
        lambda: 1e-2,
        lambda_grid: vec![],
        standardize,
        ..ProbeConfig::default()
    };
    let raw = LogisticRegression::fit(&x, n, d, &y, c, &fixed(false)).unwrap();
    let st = Standardizer::fit(&x, n, d).unwrap();
    let sx = st.transform(&x, n).unwrap();
    let scaled = LogisticRegression::fit(&sx, n, d, &y, c, &fixed(true)).unwrap();
    let off = linear_probe(&x, &y, &x, &y, d, c, &fixed(false)).unwrap();
    let on = linear_probe(&x, &y, &x, &y, d, c, &fixed(true)).unwrap();
    assert_eq!(off.loss, raw.info.loss);
    assert_eq!(on.loss, scaled.info.loss);
    assert!(
        (off.loss - on.loss).abs() > 1e-3,
        "{} vs {}",
        off.loss,
        on.loss
    );
}

#[test]
fn select_lambda_walks_the_grid_from_the_largest() {
    // Labels independent of the features: the call succeeds, starts at the largest lambda and
    // picks a grid value.
    let (n, d, c) = (300, 30, 3);
    let mut r = SplitMix64::new(9);
    let x: Vec<f32> = (0..n * d).map(|_| r.next_f32()).collect();
    let y: Vec<u32> = (0..n).map(|_| r.below(c) as u32).collect();
    let cfg = ProbeConfig::default();
    let ch = select_lambda(&x, n, d, &y, c, &cfg).unwrap();
    assert!(cfg.lambda_grid.contains(&ch.lambda));
    assert!(!ch.scores.is_empty() && ch.scores[0].0 == 1.0);
}

#[test]
fn subsample_is_balanced_and_deterministic() {
    let labels: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
    for (frac, per) in [(0.01, 1), (0.1, 10), (1.0, 100)] {
        let a = subsample_labels(&labels, 10, frac, 3).unwrap();
        assert_eq!(a.len(), per * 10);
        let mut counts = [0; 10];
        for &i in &a {
            counts[labels[i] as usize] += 1;
        }
        assert_eq!(counts, [per; 10]);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, subsample_labels(&labels, 10, frac, 3).unwrap());
    }
    assert_ne!(
        subsample_labels(&labels, 10, 0.1, 3).unwrap(),
        subsample_labels(&labels, 10, 0.1, 4).unwrap()
    );
    // At least one per class, even for a tiny fraction.
    assert_eq!(subsample_labels(&labels, 10, 1e-6, 0).unwrap().len(), 10);
}

#[test]
fn errors_not_panics() {
    let cfg = ProbeConfig::default();
    let x = [0.0f32; 6];
    let bad = |r: Result<LogisticRegression, Error>| assert!(r.is_err());
    bad(LogisticRegression::fit(&[], 0, 2, &[], 2, &cfg));
    bad(LogisticRegression::fit(&x, 3, 2, &[0, 1, 2], 2, &cfg)); // label out of range
    bad(LogisticRegression::fit(&x, 3, 3, &[0, 1, 0], 2, &cfg)); // dim mismatch
    bad(LogisticRegression::fit(&x, 3, 2, &[0, 1], 2, &cfg)); // label count
    bad(LogisticRegression::fit(&x, 3, 2, &[0, 1, 0], 0, &cfg)); // no classes
    let nan = [0.0, f32::NAN, 1.0, 1.0, 0.0, 0.0];
    bad(LogisticRegression::fit(&nan, 3, 2, &[0, 1, 0], 2, &cfg));
    let neg = ProbeConfig {
        lambda: -1.0,
        ..cfg.clone()
    };
    bad(LogisticRegression::fit(&x, 3, 2, &[0, 1, 0], 2, &neg));
    assert!(Standardizer::fit(&nan, 3, 2).is_err());
    assert!(subsample_labels(&[0, 1], 2, 0.0, 0).is_err());
    assert!(subsample_labels(&[0, 5], 2, 0.5, 0).is_err());
    assert!(linear_probe(&x, &[0, 1, 0], &x[..4], &[0, 1], 3, 2, &cfg).is_err());
    let m = LogisticRegression::fit(&x, 3, 2, &[0, 1, 0], 2, &cfg).unwrap();
    assert!(m.predict(&x, 2).is_err());
    assert!(m.accuracy(&x, 3, &[0, 1]).is_err());
}

/// Labels `0..classes` drawn at random (unbalanced counts), for the fold tests.
fn random_labels(n: usize, classes: usize, seed: u64) -> Vec<u32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| r.below(classes) as u32).collect()
}

#[test]
fn kfold_assignments_partition_and_stratify() {
    for (n, classes, folds) in [(103, 3, 5), (50, 4, 10), (10, 2, 10), (7, 5, 3)] {
        let labels = random_labels(n, classes, n as u64);
        let fold = kfold_assignments(&labels, classes, folds, 11).unwrap();
        assert_eq!(fold.len(), n);
        // Each example lies in exactly one fold: the test sets are disjoint and their union
        // is every example; no fold is empty and their sizes differ by at most one.
        let sets: Vec<Vec<usize>> = (0..folds)
            .map(|k| (0..n).filter(|&i| fold[i] == k).collect())
            .collect();
        assert_eq!(sets.iter().map(Vec::len).sum::<usize>(), n);
        let mut all: Vec<usize> = sets.concat();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        let sizes: Vec<usize> = sets.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*lo >= 1 && hi - lo <= 1, "{n} {folds}: sizes {sizes:?}");
        // Stratified: every class is spread as evenly as it can be.
        for c in 0..classes as u32 {
            let per: Vec<usize> = sets
                .iter()
                .map(|s| s.iter().filter(|&&i| labels[i] == c).count())
                .collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "class {c}: {per:?}");
        }
        // Deterministic in the seed, and the seed matters.
        assert_eq!(
            fold,
            kfold_assignments(&labels, classes, folds, 11).unwrap()
        );
        if n > 20 {
            assert_ne!(
                fold,
                kfold_assignments(&labels, classes, folds, 12).unwrap()
            );
        }
    }
}

#[test]
fn kfold_separable_blobs_are_classified_perfectly() {
    let (n, d, c, folds) = (300, 8, 3, 5);
    let (x, y) = blobs(n, d, c, 0.2, 21);
    let r = kfold_probe(&x, n, d, &y, c, folds, 1, &ProbeConfig::default()).unwrap();
    assert_eq!((r.folds, r.n, r.classes), (folds, n, c));
    assert_eq!((r.fold_accuracy.len(), r.lambdas.len()), (folds, folds));
    assert!(r.accuracy > 0.98, "{r:?}");
    assert!(r.fold_accuracy.iter().all(|&a| a > 0.95), "{r:?}");
    let grid = ProbeConfig::default().lambda_grid;
    assert!(r.lambdas.iter().all(|l| grid.contains(l)), "{r:?}");
}

/// Labels independent of the features: the cross-validated accuracy must be near chance,
/// although the same model scored on the data it was fitted on looks far better (so the
/// bound does catch a test fold leaking into its training part).
#[test]
fn kfold_noise_labels_score_chance() {
    let (n, d, c, folds) = (400, 120, 2, 5);
    let mut r = SplitMix64::new(31);
    let x: Vec<f32> = (0..n * d).map(|_| 2.0 * r.next_f32() - 1.0).collect();
    let y = random_labels(n, c, 32);
    let rep = kfold_probe(&x, n, d, &y, c, folds, 3, &ProbeConfig::default()).unwrap();
    // One standard deviation of an accuracy over 400 coin flips is 0.025.
    assert!((rep.accuracy - 0.5).abs() < 0.08, "{rep:?}");
    // Each fold's accuracy is a count of its own test set: the test set is fold k.
    let fold = kfold_assignments(&y, c, folds, 3).unwrap();
    for (k, a) in rep.fold_accuracy.iter().enumerate() {
        let size = fold.iter().filter(|&&f| f == k).count() as f64;
        assert!(
            ((a * size) - (a * size).round()).abs() < 1e-9,
            "fold {k}: {a}"
        );
    }
    let mean = rep.fold_accuracy.iter().sum::<f64>() / folds as f64;
    assert_eq!(rep.accuracy, mean);
    // Without held-out data the same kind of fit looks good on noise.
    let leaky = LogisticRegression::fit(&x, n, d, &y, c, &ProbeConfig::default()).unwrap();
    let train_acc = leaky.accuracy(&x, n, &y).unwrap();
    assert!(train_acc > 0.62, "train accuracy on noise {train_acc}");
}

#[test]
fn kfold_is_deterministic_for_any_thread_count() {
    let (n, d, c, folds) = (240, 8, 3, 4);
    let (x, y) = blobs(n, d, c, 1.5, 41);
    let cfg = ProbeConfig::default();
    let run = |t: usize, seed: u64| -> KFoldReport {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| kfold_probe(&x, n, d, &y, c, folds, seed, &cfg).unwrap())
    };
    let bits = |r: &KFoldReport| -> Vec<u64> {
        r.fold_accuracy
            .iter()
            .chain(&r.lambdas)
            .chain([&r.accuracy])
            .map(|v| v.to_bits())
            .collect()
    };
    let a = run(1, 5);
    assert!(a.accuracy > 0.5 && a.accuracy < 1.0, "{a:?}");
    assert_eq!(bits(&a), bits(&run(2, 5)));
    assert_eq!(bits(&a), bits(&run(1, 5)));
    assert_ne!(a.fold_accuracy, run(2, 6).fold_accuracy);
}

#[test]
fn kfold_errors_not_panics() {
    let cfg = ProbeConfig::default();
    let (n, d) = (6, 2);
    let x: Vec<f32> = (0..n * d).map(|i| i as f32).collect();
    let y = [0u32, 1, 0, 1, 0, 1];
    let invalid = |r: Result<KFoldReport, Error>| {
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}")
    };
    let shape = |r: Result<KFoldReport, Error>| {
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}")
    };
    assert!(kfold_probe(&x, n, d, &y, 2, 3, 0, &cfg).is_ok());
    invalid(kfold_probe(&x, n, d, &y, 2, 0, 0, &cfg)); // no folds
    invalid(kfold_probe(&x, n, d, &y, 2, 1, 0, &cfg)); // one fold
    invalid(kfold_probe(&x, n, d, &y, 2, 7, 0, &cfg)); // more folds than examples
    invalid(kfold_probe(&x, n, d, &[0, 1, 0, 2, 0, 1], 2, 3, 0, &cfg)); // label >= classes
    invalid(kfold_probe(&x, n, d, &[1; 6], 2, 3, 0, &cfg)); // one class present
    invalid(kfold_probe(&x, n, d, &y, 0, 3, 0, &cfg)); // no classes
    invalid(kfold_probe(&[], 0, d, &[], 2, 2, 0, &cfg)); // no examples
    shape(kfold_probe(&x, n, d, &y[..5], 2, 3, 0, &cfg)); // label count
    shape(kfold_probe(&x[..11], n, d, &y, 2, 3, 0, &cfg)); // feature count
    shape(kfold_probe(&x, n, 3, &y, 2, 3, 0, &cfg)); // dim disagrees
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut xb = x.clone();
        xb[7] = bad;
        invalid(kfold_probe(&xb, n, d, &y, 2, 3, 0, &cfg));
    }
    let neg = ProbeConfig {
        lambda: -1.0,
        ..cfg.clone()
    };
    invalid(kfold_probe(&x, n, d, &y, 2, 3, 0, &neg));
    // The assignments alone.
    assert!(kfold_assignments(&y, 2, 1, 0).is_err());
    assert!(kfold_assignments(&y, 2, 7, 0).is_err());
    assert!(kfold_assignments(&[0, 3], 2, 2, 0).is_err());
    assert!(kfold_assignments(&[], 2, 2, 0).is_err());
    // Edge cases that must not panic: a training part with one example of one class, and a
    // class whose only example sits in the test fold.
    assert!(kfold_probe(&x[..4], 2, d, &[0, 1], 2, 2, 0, &cfg).is_ok());
    assert!(kfold_probe(&x, n, d, &[0, 0, 0, 1, 1, 2], 3, 3, 0, &cfg).is_ok());
}
