//! Layer kernels (element-wise, BatchNorm2d, pooling, linear) against the f64 references:
//! random shapes that include 1 and odd sizes, finite-difference / adjoint checks of every
//! backward, bit-identical results in rayon pools of 1, 2 and 3 threads, error paths, and
//! the PyTorch details (running-variance update, max-pool ties and `-inf` padding, NaN).
//!
//! `PROPTEST_CASES=1000 cargo test --release --test layers` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::batchnorm::{
    batchnorm_add_backward, batchnorm_add_forward_train, batchnorm_backward, batchnorm_fold,
    batchnorm_forward_eval, batchnorm_forward_train, batchnorm_relu_backward,
    batchnorm_relu_forward_eval, batchnorm_relu_forward_train, BatchNorm2d, BnAffine, BnGrads,
    BnRunning, BnSaved,
};
use selfsup::kernels::elementwise::{
    add, add_assign, add_relu, add_relu_backward, axpy, dot, relu, relu_backward,
    relu_backward_inplace, relu_inplace, scale, set_flush_denormals, sum, sum_squares,
    with_flush_denormals, CHUNK,
};
use selfsup::kernels::linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward, Linear,
};
use selfsup::kernels::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward, global_avg_pool_forward,
    global_max_pool_backward, global_max_pool_forward, global_max_pool_relu_backward,
    global_max_pool_relu_forward, max_pool2d_backward, max_pool2d_forward, Pool2d,
};
use selfsup::kernels::reference::layers as r;
use selfsup::Error;

/// Deterministic values in [-1, 1) with some exact zeros and a few larger magnitudes.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::values_with_outliers(len, seed, 16.0)
}

/// Distinct values (a shuffled ramp), so max pooling has no ties and finite differences
/// never cross a kink.
fn distinct(len: usize, seed: u64) -> Vec<f32> {
    let keys = fill(len, seed);
    let mut idx: Vec<usize> = (0..len).collect();
    idx.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    let mut out = vec![0.0; len];
    for (rank, &i) in idx.iter().enumerate() {
        out[i] = rank as f32 * 0.125 - len as f32 * 0.0625;
    }
    out
}

/// Asserts `|got - want| <= atol + rtol * |want|` everywhere (NaN only where `want` is
/// NaN), reporting the first element that fails and the largest error seen before it.
#[track_caller]
fn close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}: element {i}: got {g}, want NaN");
            continue;
        }
        let err = (f64::from(g) - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(
            err <= tol,
            "{what}: element {i}: got {g}, want {w} (err {err:e}, tol {tol:e}; worst so far {worst:e})"
        );
        worst = worst.max(err);
    }
}

#[track_caller]
fn close64(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    let g: Vec<f32> = got.iter().map(|&v| v as f32).collect();
    close(what, &g, want, rtol, atol);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A dimension: 1, a small odd size, or anything small.
fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3usize), 1..=max]
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

// ---------------------------------------------------------------- element-wise

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn elementwise_matches_reference(
        len in prop_oneof![0usize..40, 40usize..3000, Just(CHUNK + 13)],
        seed in any::<u64>(),
        alpha in -3.0f32..3.0,
    ) {
        let a = fill(len, seed);
        let b = fill(len, seed ^ 0xabc);
        let mut y = vec![f32::NAN; len];

        relu(&a, &mut y).unwrap();
        close("relu", &y, &r::relu_f64(&a), 0.0, 0.0);
        let mut z = a.clone();
        relu_inplace(&mut z);
        prop_assert_eq!(bits(&z), bits(&y));

        relu_backward(&a, &b, &mut y).unwrap();
        close("relu_backward", &y, &r::relu_backward_f64(&a, &b), 0.0, 0.0);
        let mut z = b.clone();
        relu_backward_inplace(&a, &mut z).unwrap();
        prop_assert_eq!(bits(&z), bits(&y));

        // f32 addition is correctly rounded: exact against the f64 sum rounded once.
        add(&a, &b, &mut y).unwrap();
        let want: Vec<f64> = r::add_f64(&a, &b).iter().map(|&v| f64::from(v as f32)).collect();
        close("add", &y, &want, 0.0, 0.0);
        let mut z = b.clone();
        add_assign(&mut z, &a).unwrap();
        prop_assert_eq!(bits(&z), bits(&y));

        add_relu(&a, &b, &mut y).unwrap();
        let want: Vec<f64> = r::add_relu_f64(&a, &b).iter().map(|&v| f64::from(v as f32)).collect();
        close("add_relu", &y, &want, 0.0, 0.0);
        let mut dx = vec![f32::NAN; len];
        add_relu_backward(&y, &b, &mut dx).unwrap();
        close("add_relu_backward", &dx, &r::relu_backward_f64(&y, &b), 0.0, 0.0);

        let mut z = a.clone();
        scale(&mut z, alpha);
        let want: Vec<f64> = a.iter().map(|&v| f64::from(v * alpha)).collect();
        close("scale", &z, &want, 0.0, 0.0);

        let mut z = b.clone();
        axpy(alpha, &a, &mut z).unwrap();
        let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| f64::from(alpha) * f64::from(x) + f64::from(y)).collect();
        let mag: f64 = 1.0 + alpha.abs() as f64 * 8.0;
        close("axpy", &z, &want, 1e-6, 4.0 * f64::from(f32::EPSILON) * mag);
    }

    #[test]
    fn reductions_match_reference(
        len in prop_oneof![0usize..40, 40usize..5000, (2 * CHUNK)..(3 * CHUNK + 100)],
        seed in any::<u64>(),
    ) {
        let a = fill(len, seed);
        let b = fill(len, seed ^ 7);
        let abs: f64 = a.iter().map(|&v| f64::from(v).abs()).sum();
        let sq = r::dot_f64(&a, &a);
        let ab: f64 = a.iter().zip(&b).map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs()).sum();
        // Blocks of 256 summed in f32: error at most about 256 * eps of the magnitudes.
        let e = 300.0 * f64::from(f32::EPSILON);
        let s: f64 = a.iter().map(|&v| f64::from(v)).sum();
        prop_assert!((sum(&a) - s).abs() <= e * abs + 1e-30, "sum {} vs {}", sum(&a), s);
        prop_assert!((sum_squares(&a) - sq).abs() <= e * sq + 1e-30);
        let d = dot(&a, &b).unwrap();
        prop_assert!((d - r::dot_f64(&a, &b)).abs() <= e * ab + 1e-30);
    }
}

#[test]
fn relu_propagates_nan_and_masks_it_in_backward() {
    let x = [
        f32::NAN,
        -1.0,
        0.0,
        2.0,
        -0.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        0.5,
        -3.0,
    ];
    let mut y = [0.0f32; 9];
    relu(&x, &mut y).unwrap();
    assert!(y[0].is_nan());
    assert_eq!(
        &y[1..],
        &[0.0, 0.0, 2.0, -0.0, 0.0, f32::INFINITY, 0.5, 0.0]
    );
    let mut z = x;
    relu_inplace(&mut z);
    assert_eq!(bits(&z), bits(&y));
    let mut dx = [9.0f32; 9];
    relu_backward(&x, &[1.0; 9], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    let mut a = [0.0f32; 9];
    add_relu(&x, &[1.0; 9], &mut a).unwrap();
    assert!(a[0].is_nan());
    assert_eq!(a[2], 1.0);
    assert_eq!(a[1], 0.0);
}

#[test]
fn relu_backward_matches_finite_differences() {
    // d/dx sum(g * relu(x)), central differences in f64 away from the kink.
    let x: Vec<f32> = fill(37, 3)
        .iter()
        .map(|&v| if v.abs() < 0.05 { 0.3 } else { v })
        .collect();
    let g = fill(37, 4);
    let h = 1e-3;
    let num: Vec<f64> = x
        .iter()
        .zip(&g)
        .map(|(&v, &g)| {
            let relu = |t: f64| t.max(0.0);
            f64::from(g) * (relu(f64::from(v) + h) - relu(f64::from(v) - h)) / (2.0 * h)
        })
        .collect();
    let mut dx = vec![0.0; 37];
    relu_backward(&x, &g, &mut dx).unwrap();
    close("relu fd", &dx, &num, 1e-6, 1e-9);
}

#[test]
fn elementwise_length_errors() {
    let mut y = [0.0f32; 3];
    assert!(matches!(
        relu(&[1.0; 4], &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        add(&[1.0; 3], &[1.0; 2], &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        add_assign(&mut y, &[1.0; 2]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        add_relu(&[1.0; 3], &[1.0; 3], &mut [0.0; 4]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        relu_backward(&[1.0; 3], &[1.0; 4], &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        relu_backward_inplace(&[1.0; 2], &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        axpy(1.0, &[1.0; 2], &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dot(&[1.0; 2], &[1.0; 3]),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn flush_denormals_flushes_and_restores() {
    let halve_tiny = || std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5f32);
    assert!(halve_tiny() > 0.0, "IEEE mode by default");
    // One thread by hand.
    assert!(!set_flush_denormals(true));
    assert_eq!(halve_tiny(), 0.0);
    assert!(set_flush_denormals(false));
    assert!(halve_tiny() > 0.0);
    // A whole pool (its own, so that tests running beside this one are not affected).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (inside, pooled) = pool.install(|| {
        with_flush_denormals(|| {
            let mut v = vec![f32::MIN_POSITIVE; 3 * CHUNK];
            scale(&mut v, 0.5);
            (
                v.iter().all(|&x| x == 0.0),
                rayon::broadcast(|_| halve_tiny()),
            )
        })
    });
    assert!(inside, "scale flushed subnormal results");
    assert!(pooled.iter().all(|&v| v == 0.0), "every worker flushed");
    assert!(
        pool.broadcast(|_| halve_tiny()).iter().all(|&v| v > 0.0),
        "pool restored"
    );
    assert!(halve_tiny() > 0.0, "caller untouched");
}

// ---------------------------------------------------------------- batch norm

#[derive(Clone, Debug)]
struct BnCase {
    bn: BatchNorm2d,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
    dy: Vec<f32>,
}

fn bn_case(n: usize, c: usize, h: usize, w: usize, seed: u64, offset: f32) -> BnCase {
    let bn = BatchNorm2d {
        eps: 1e-5,
        momentum: 0.1,
        ..BatchNorm2d::new(n, c, h, w)
    };
    let len = bn.len();
    BnCase {
        bn,
        x: fill(len, seed).iter().map(|&v| v * 2.0 + offset).collect(),
        gamma: fill(c, seed ^ 1).iter().map(|&v| v + 1.0).collect(),
        beta: fill(c, seed ^ 2),
        rm: fill(c, seed ^ 3),
        rv: fill(c, seed ^ 4).iter().map(|&v| v.abs() + 0.5).collect(),
        dy: fill(len, seed ^ 5),
    }
}

fn bn_strategy() -> impl Strategy<Value = BnCase> {
    (
        dim(4),
        dim(5),
        dim(7),
        dim(6),
        any::<u64>(),
        prop_oneof![Just(0.0f32), -5.0f32..5.0, Just(300.0f32)],
    )
        .prop_filter("more than one value per channel", |(n, _, h, w, _, _)| {
            n * h * w > 1
        })
        .prop_map(|(n, c, h, w, seed, off)| bn_case(n, c, h, w, seed, off))
}

/// Runs the training forward (with or without ReLU); returns `(y, saved, rm, rv)`.
fn bn_train(k: &BnCase, relu: bool) -> (Vec<f32>, BnSaved, Vec<f32>, Vec<f32>) {
    let mut y = vec![f32::NAN; k.bn.len()];
    let mut saved = BnSaved::new(k.bn.c);
    let (mut rm, mut rv) = (k.rm.clone(), k.rv.clone());
    let p = BnAffine {
        gamma: &k.gamma,
        beta: &k.beta,
    };
    let run = BnRunning {
        mean: &mut rm,
        var: &mut rv,
    };
    if relu {
        batchnorm_relu_forward_train(&k.bn, p, &k.x, run, &mut saved, &mut y).unwrap();
    } else {
        batchnorm_forward_train(&k.bn, p, &k.x, run, &mut saved, &mut y).unwrap();
    }
    (y, saved, rm, rv)
}

fn bn_backward(
    k: &BnCase,
    saved: &BnSaved,
    relu_y: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = k.bn.c;
    let (mut dx, mut dg, mut db) = (
        vec![f32::NAN; k.bn.len()],
        vec![f32::NAN; c],
        vec![f32::NAN; c],
    );
    let g = BnGrads {
        dx: &mut dx,
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    match relu_y {
        Some(_) => {
            let p = BnAffine {
                gamma: &k.gamma,
                beta: &k.beta,
            };
            batchnorm_relu_backward(&k.bn, p, saved, &k.x, &k.dy, g).unwrap()
        }
        None => batchnorm_backward(&k.bn, &k.gamma, saved, &k.x, &k.dy, g).unwrap(),
    }
    (dx, dg, db)
}

fn dims(bn: &BatchNorm2d) -> (usize, usize, usize) {
    (bn.n, bn.c, bn.h * bn.w)
}

/// Absolute tolerances `(dx, dgamma)` of a BatchNorm backward against the f64 reference,
/// for an output gradient no larger than `k.dy` element by element.
fn bn_backward_tolerances(k: &BnCase, saved: &BnSaved) -> (f64, f64) {
    let m = k.bn.per_channel() as f64;
    let gmax = k
        .gamma
        .iter()
        .fold(1.0f64, |a, &g| a.max(f64::from(g).abs()));
    let invmax = saved
        .inv_std
        .iter()
        .fold(1.0f64, |a, &v| a.max(f64::from(v)));
    // The saved f32 mean is off by up to half an ulp of |x|; dgamma = sum(dy (x - mean))
    // * inv_std inherits that times sum |dy| (PyTorch saves an f32 mean too).
    let xmax = k.x.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
    let dysum: f64 = k.dy.iter().map(|&v| f64::from(v).abs()).sum();
    let dg_tol = 1e-5 * m + f64::from(f32::EPSILON) * xmax * invmax * dysum;
    // ... and shifts every xhat by e = delta * inv_std, which moves dx by at most
    // gamma * inv_std * e * (|sum dy xhat| + max|xhat| |sum dy|) / M, |xhat| <= sqrt(M).
    let e = f64::from(f32::EPSILON) * xmax * invmax;
    let dx_tol = 1e-5 * gmax * invmax * 8.0 + gmax * invmax * e * 2.0 * m.sqrt() * dysum / m;
    (dx_tol, dg_tol)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn batchnorm_train_forward_matches_reference(k in bn_strategy()) {
        let (want, mean, var) = r::batchnorm_train_f64(dims(&k.bn), &k.x, &k.gamma, &k.beta, k.bn.eps);
        let (y, saved, rm, rv) = bn_train(&k, false);
        // The saved mean is an f32: its rounding (half an ulp of the largest |x|) moves
        // every output by up to that times gamma * inv_std.
        let xmax = k.x.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        let gi = (0..k.bn.c).fold(0.0f64, |a, c| a.max(f64::from(k.gamma[c]).abs() * f64::from(saved.inv_std[c])));
        let atol = 2e-5 + 2.0 * f64::from(f32::EPSILON) * xmax * gi;
        close("bn y", &y, &want, 1e-4, atol);
        // The mean sums deviations from the channel's first value in f32 lanes: each
        // deviation rounds by up to eps * 2 max|x|, so the mean may too (a few times over).
        close("bn mean", &saved.mean, &mean, 1e-6, 1e-6 + 8.0 * f64::from(f32::EPSILON) * 2.0 * xmax);
        let inv: Vec<f64> = var.iter().map(|&v| 1.0 / (v + 1e-5f64).sqrt()).collect();
        close("bn inv_std", &saved.inv_std, &inv, 1e-5, 0.0);
        // PyTorch: running = (1 - m) running + m batch, the variance unbiased.
        let mm = k.bn.per_channel() as f64;
        let want_rm: Vec<f64> = (0..k.bn.c).map(|c| 0.9 * f64::from(k.rm[c]) + 0.1 * mean[c]).collect();
        let want_rv: Vec<f64> = (0..k.bn.c).map(|c| 0.9 * f64::from(k.rv[c]) + 0.1 * var[c] * mm / (mm - 1.0)).collect();
        close("bn running_mean", &rm, &want_rm, 1e-6, 1e-6);
        close("bn running_var", &rv, &want_rv, 1e-5, 1e-6);

        let (yr, saved_r, rm_r, rv_r) = bn_train(&k, true);
        let want_relu: Vec<f64> = want.iter().map(|&v| v.max(0.0)).collect();
        close("bn+relu y", &yr, &want_relu, 1e-4, atol);
        prop_assert_eq!(&saved_r, &saved);
        prop_assert_eq!((bits(&rm_r), bits(&rv_r)), (bits(&rm), bits(&rv)));
    }

    #[test]
    fn batchnorm_eval_forward_matches_reference(k in bn_strategy()) {
        let p = BnAffine { gamma: &k.gamma, beta: &k.beta };
        let want = r::batchnorm_eval_f64(dims(&k.bn), &k.x, &k.gamma, &k.beta, &k.rm, &k.rv, k.bn.eps);
        let mut y = vec![f32::NAN; k.bn.len()];
        batchnorm_forward_eval(&k.bn, p, &k.rm, &k.rv, &k.x, &mut y).unwrap();
        close("bn eval", &y, &want, 1e-5, 1e-5);
        batchnorm_relu_forward_eval(&k.bn, p, &k.rm, &k.rv, &k.x, &mut y).unwrap();
        let want_relu: Vec<f64> = want.iter().map(|&v| v.max(0.0)).collect();
        close("bn eval relu", &y, &want_relu, 1e-5, 1e-5);
        // The fold gives the same per-channel affine map.
        let c = k.bn.c;
        let (mut s, mut b) = (vec![0.0; c], vec![0.0; c]);
        batchnorm_fold(p, &k.rm, &k.rv, k.bn.eps, &mut s, &mut b).unwrap();
        let hw = k.bn.h * k.bn.w;
        let folded: Vec<f32> = k.x.iter().enumerate().map(|(i, &v)| { let ch = (i / hw) % c; v * s[ch] + b[ch] }).collect();
        close("bn fold", &folded, &want, 1e-5, 1e-5);
    }

    #[test]
    fn batchnorm_backward_matches_reference(k in bn_strategy()) {
        let (_, saved, _, _) = bn_train(&k, false);
        let (dx, dg, db) = bn_backward(&k, &saved, None);
        let (wdx, wdg, wdb) = r::batchnorm_backward_f64(dims(&k.bn), &k.x, &k.gamma, &k.dy, k.bn.eps);
        let (dx_tol, dg_tol) = bn_backward_tolerances(&k, &saved);
        let m = k.bn.per_channel() as f64;
        close("bn dx", &dx, &wdx, 1e-3, dx_tol);
        close("bn dgamma", &dg, &wdg, 1e-4, dg_tol);
        close("bn dbeta", &db, &wdb, 1e-5, 1e-6 * m);

        // The fused BN+ReLU backward is the plain backward of the masked gradient.
        let (y, saved_r, _, _) = bn_train(&k, true);
        let (rdx, rdg, rdb) = bn_backward(&k, &saved_r, Some(&y));
        let masked: Vec<f32> = k.dy.iter().zip(&y).map(|(&d, &y)| if y > 0.0 { d } else { 0.0 }).collect();
        let (wdx, wdg, wdb) = r::batchnorm_backward_f64(dims(&k.bn), &k.x, &k.gamma, &masked, k.bn.eps);
        close("bn+relu dx", &rdx, &wdx, 1e-3, dx_tol);
        close("bn+relu dgamma", &rdg, &wdg, 1e-4, dg_tol);
        close("bn+relu dbeta", &rdb, &wdb, 1e-5, 1e-6 * m);
    }

    /// BatchNorm fused with the residual join after it: the bits of the training forward
    /// followed by `add` (`add_relu`), and of `add_relu_backward` (a copy) followed by the
    /// backward, for any pool size; and the f64 references.
    #[test]
    fn batchnorm_add_matches_the_unfused_kernels_and_reference(
        k in bn_strategy(),
        relu in any::<bool>(),
        threads in 1usize..4,
    ) {
        let (len, c) = (k.bn.len(), k.bn.c);
        let addend: Vec<f32> = k.dy.iter().rev().map(|&v| v * 3.0).collect();
        let p = BnAffine { gamma: &k.gamma, beta: &k.beta };
        // Unfused.
        let (y, saved, rm, rv) = bn_train(&k, false);
        let mut want = vec![f32::NAN; len];
        if relu { add_relu(&y, &addend, &mut want).unwrap() } else { add(&y, &addend, &mut want).unwrap() }
        let mut g = k.dy.clone();
        if relu { add_relu_backward(&want, &k.dy, &mut g).unwrap() }
        let (dx, dg, db) = bn_backward(&BnCase { dy: g.clone(), ..k.clone() }, &saved, None);
        // Fused, in a pool of `threads`.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (out, fsaved, frm, frv, dadd, fdx, fdg, fdb) = pool.install(|| {
            let (mut out, mut fsaved) = (vec![f32::NAN; len], BnSaved::new(c));
            let (mut frm, mut frv) = (k.rm.clone(), k.rv.clone());
            let run = BnRunning { mean: &mut frm, var: &mut frv };
            batchnorm_add_forward_train(&k.bn, p, &k.x, &addend, run, &mut fsaved, relu, &mut out).unwrap();
            let mut dadd = vec![f32::NAN; len];
            let (mut fdx, mut fdg, mut fdb) = (vec![f32::NAN; len], vec![f32::NAN; c], vec![f32::NAN; c]);
            let grads = BnGrads { dx: &mut fdx, dgamma: &mut fdg, dbeta: &mut fdb };
            let ymask = relu.then_some(&out[..]);
            batchnorm_add_backward(&k.bn, &k.gamma, &fsaved, &k.x, ymask, &k.dy, &mut dadd, grads).unwrap();
            (out, fsaved, frm, frv, dadd, fdx, fdg, fdb)
        });
        prop_assert_eq!(bits(&out), bits(&want));
        prop_assert_eq!(&fsaved, &saved);
        prop_assert_eq!((bits(&frm), bits(&frv)), (bits(&rm), bits(&rv)));
        prop_assert_eq!(bits(&dadd), bits(&g));
        prop_assert_eq!((bits(&fdx), bits(&fdg), bits(&fdb)), (bits(&dx), bits(&dg), bits(&db)));
        // The references: act(bn(x) + addend), and the BatchNorm backward of the masked
        // gradient.
        let (wy, _, _) = r::batchnorm_train_f64(dims(&k.bn), &k.x, &k.gamma, &k.beta, k.bn.eps);
        let wout: Vec<f64> = wy.iter().zip(&addend).map(|(&v, &a)| {
            let s = v + f64::from(a);
            if relu { s.max(0.0) } else { s }
        }).collect();
        let xmax = k.x.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        let amax = addend.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        let gi = (0..c).fold(0.0f64, |a, ch| a.max(f64::from(k.gamma[ch]).abs() * f64::from(saved.inv_std[ch])));
        let atol = 2e-5 + 2.0 * f64::from(f32::EPSILON) * (xmax * gi + amax);
        close("bn+add y", &out, &wout, 1e-4, atol);
        let (wdx, wdg, wdb) = r::batchnorm_backward_f64(dims(&k.bn), &k.x, &k.gamma, &g, k.bn.eps);
        let (dx_tol, dg_tol) = bn_backward_tolerances(&k, &saved);
        let m = k.bn.per_channel() as f64;
        close("bn+add dx", &fdx, &wdx, 1e-3, dx_tol);
        close("bn+add dgamma", &fdg, &wdg, 1e-4, dg_tol);
        close("bn+add dbeta", &fdb, &wdb, 1e-5, 1e-6 * m);
    }
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    for (n, c, h, w, seed) in [
        (2, 3, 2, 3, 1u64),
        (1, 2, 1, 5, 2),
        (3, 1, 1, 1, 3),
        (2, 2, 3, 3, 4),
    ] {
        let k = bn_case(n, c, h, w, seed, 0.5);
        let d = dims(&k.bn);
        let xs: Vec<f64> = k.x.iter().map(|&v| f64::from(v)).collect();
        let loss = |x: &[f64], gamma: &[f32], beta: &[f32]| -> f64 {
            let (y, _, _) = r::batchnorm_train_f64_exact(d, x, gamma, beta, k.bn.eps);
            y.iter().zip(&k.dy).map(|(&y, &g)| y * f64::from(g)).sum()
        };
        let hstep = 1e-5;
        let num_dx: Vec<f64> = (0..xs.len())
            .map(|i| {
                let (mut p, mut m) = (xs.clone(), xs.clone());
                p[i] += hstep;
                m[i] -= hstep;
                (loss(&p, &k.gamma, &k.beta) - loss(&m, &k.gamma, &k.beta)) / (2.0 * hstep)
            })
            .collect();
        // gamma and beta enter linearly: a unit step is exact.
        let num_dg: Vec<f64> = (0..c)
            .map(|i| {
                let mut g1 = k.gamma.clone();
                g1[i] += 1.0;
                loss(&xs, &g1, &k.beta) - loss(&xs, &k.gamma, &k.beta)
            })
            .collect();
        let num_db: Vec<f64> = (0..c)
            .map(|i| {
                let mut b1 = k.beta.clone();
                b1[i] += 1.0;
                loss(&xs, &k.gamma, &b1) - loss(&xs, &k.gamma, &k.beta)
            })
            .collect();
        let (rdx, rdg, rdb) = r::batchnorm_backward_f64(d, &k.x, &k.gamma, &k.dy, k.bn.eps);
        close64("ref dx vs fd", &rdx, &num_dx, 1e-4, 1e-5);
        close64("ref dgamma vs fd", &rdg, &num_dg, 1e-5, 1e-6);
        close64("ref dbeta vs fd", &rdb, &num_db, 1e-5, 1e-6);
        let (_, saved, _, _) = bn_train(&k, false);
        let (dx, dg, db) = bn_backward(&k, &saved, None);
        close("kernel dx vs fd", &dx, &num_dx, 1e-3, 1e-4);
        close("kernel dgamma vs fd", &dg, &num_dg, 1e-4, 1e-5);
        close("kernel dbeta vs fd", &db, &num_db, 1e-4, 1e-5);
    }
}

#[test]
fn batchnorm_running_stats_follow_pytorch() {
    // One channel, values 1..=4: mean 2.5, biased var 1.25, unbiased 5/3.
    let bn = BatchNorm2d {
        momentum: 0.25,
        ..BatchNorm2d::new(2, 1, 1, 2)
    };
    let x = [1.0, 2.0, 3.0, 4.0];
    let (mut rm, mut rv) = ([1.0f32], [2.0f32]);
    let mut saved = BnSaved::new(1);
    let mut y = [0.0f32; 4];
    batchnorm_forward_train(
        &bn,
        BnAffine {
            gamma: &[1.0],
            beta: &[0.0],
        },
        &x,
        BnRunning {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut saved,
        &mut y,
    )
    .unwrap();
    assert_eq!(rm[0], 0.75 * 1.0 + 0.25 * 2.5);
    assert!(
        (rv[0] - (0.75 * 2.0 + 0.25 * 5.0 / 3.0)).abs() < 1e-6,
        "{}",
        rv[0]
    );
    assert_eq!(saved.mean[0], 2.5);
    let inv = 1.0 / (1.25f64 + 1e-5).sqrt();
    assert!((f64::from(saved.inv_std[0]) - inv).abs() < 1e-6);
    assert!((f64::from(y[0]) + 1.5 * inv).abs() < 1e-6);
}

#[test]
fn batchnorm_statistics_survive_a_large_offset() {
    // Mean 1e4, spread 1e-2: a one-pass E[x^2] - E[x]^2 in f32 would lose every digit.
    let bn = BatchNorm2d::new(4, 2, 5, 5);
    let x: Vec<f32> = fill(bn.len(), 9)
        .iter()
        .map(|&v| 1.0e4 + v * 1e-2)
        .collect();
    let k = BnCase {
        bn,
        x,
        ..bn_case(4, 2, 5, 5, 9, 0.0)
    };
    let (_, _, var) = r::batchnorm_train_f64(dims(&k.bn), &k.x, &k.gamma, &k.beta, 0.0);
    let (_, saved, _, rv) = bn_train(&k, false);
    for c in 0..2 {
        let want = 1.0 / (var[c] + 1e-5).sqrt();
        assert!(
            (f64::from(saved.inv_std[c]) - want).abs() < 1e-4 * want,
            "{c}: {} vs {want}",
            saved.inv_std[c]
        );
        assert!(rv[c].is_finite());
    }
}

#[test]
fn batchnorm_errors() {
    let bn = BatchNorm2d::new(1, 2, 1, 1);
    let (g, b) = ([1.0f32; 2], [0.0f32; 2]);
    let p = BnAffine {
        gamma: &g,
        beta: &b,
    };
    let (mut rm, mut rv) = ([0.0f32; 2], [1.0f32; 2]);
    let mut saved = BnSaved::new(2);
    let mut y = [0.0f32; 2];
    // One value per channel in training: PyTorch refuses, so do we.
    let e = batchnorm_forward_train(
        &bn,
        p,
        &[1.0, 2.0],
        BnRunning {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut saved,
        &mut y,
    );
    assert!(matches!(e, Err(Error::InvalidArgument { .. })), "{e:?}");
    // Eval is fine with one value.
    batchnorm_forward_eval(&bn, p, &rm, &rv, &[1.0, 2.0], &mut y).unwrap();
    let bn = BatchNorm2d::new(2, 2, 1, 1);
    let e = batchnorm_forward_train(
        &bn,
        p,
        &[1.0; 3],
        BnRunning {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut saved,
        &mut [0.0; 4],
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    let p3 = BnAffine {
        gamma: &[1.0; 3],
        beta: &b,
    };
    let e = batchnorm_forward_train(
        &bn,
        p3,
        &[1.0; 4],
        BnRunning {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut saved,
        &mut [0.0; 4],
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    let mut small = BnSaved::new(1);
    let e = batchnorm_forward_train(
        &bn,
        p,
        &[1.0; 4],
        BnRunning {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut small,
        &mut [0.0; 4],
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    let bad_eps = BatchNorm2d { eps: 0.0, ..bn };
    let e = batchnorm_forward_eval(&bad_eps, p, &rm, &rv, &[1.0; 4], &mut [0.0; 4]);
    assert!(matches!(e, Err(Error::InvalidArgument { .. })), "{e:?}");
    let e = batchnorm_fold(p, &rm, &rv[..1], 1e-5, &mut [0.0; 2], &mut [0.0; 2]);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    let (mut dx, mut dg, mut db) = ([0.0f32; 4], [0.0f32; 2], [0.0f32; 1]);
    let e = batchnorm_backward(
        &bn,
        &g,
        &saved,
        &[1.0; 4],
        &[1.0; 4],
        BnGrads {
            dx: &mut dx,
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
}

// ---------------------------------------------------------------- pooling

#[derive(Clone, Debug)]
struct PoolCase {
    p: Pool2d,
    seed: u64,
}

fn pool_strategy() -> impl Strategy<Value = PoolCase> {
    (
        dim(3),
        dim(4),
        1usize..10,
        1usize..10,
        1usize..5,
        1usize..4,
        0usize..3,
        any::<u64>(),
    )
        .prop_filter_map(
            "valid pooling",
            |(n, c, h, w, kernel, stride, pad, seed)| {
                let p = Pool2d {
                    n,
                    c,
                    h,
                    w,
                    kernel,
                    stride,
                    padding: pad,
                };
                p.check("test").ok().map(|_| PoolCase { p, seed })
            },
        )
}

fn geom(p: &Pool2d) -> ((usize, usize, usize), (usize, usize, usize)) {
    ((p.n * p.c, p.h, p.w), (p.kernel, p.stride, p.padding))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn max_pool_matches_reference(k in pool_strategy()) {
        let p = k.p;
        // Random values with ties (fill has exact zeros) and distinct values.
        for x in [fill(p.in_len(), k.seed), distinct(p.in_len(), k.seed)] {
            let (g, q) = geom(&p);
            let (want, want_arg) = r::max_pool_f64(g, q, &x);
            let mut y = vec![f32::NAN; p.out_len()];
            let mut arg = vec![u32::MAX; p.out_len()];
            max_pool2d_forward(&p, &x, &mut y, &mut arg).unwrap();
            close("max pool", &y, &want, 0.0, 0.0);
            prop_assert_eq!(&arg, &want_arg);
            let dy = fill(p.out_len(), k.seed ^ 9);
            let mut dx = vec![f32::NAN; p.in_len()];
            max_pool2d_backward(&p, &dy, &arg, &mut dx).unwrap();
            let hw = p.h * p.w;
            let ohw = p.out_h() * p.out_w();
            let mut want_dx = vec![0.0f64; p.in_len()];
            for (o, (&d, &a)) in dy.iter().zip(&want_arg).enumerate() {
                want_dx[(o / ohw) * hw + a as usize] += f64::from(d);
            }
            close("max pool backward", &dx, &want_dx, 1e-6, 1e-6);
        }
    }

    #[test]
    fn avg_pool_matches_reference(k in pool_strategy()) {
        let p = k.p;
        let (g, q) = geom(&p);
        let x = fill(p.in_len(), k.seed);
        let mut y = vec![f32::NAN; p.out_len()];
        avg_pool2d_forward(&p, &x, &mut y).unwrap();
        close("avg pool", &y, &r::avg_pool_f64(g, q, &x), 1e-5, 1e-6);
        let dy = fill(p.out_len(), k.seed ^ 3);
        let mut dx = vec![f32::NAN; p.in_len()];
        avg_pool2d_backward(&p, &dy, &mut dx).unwrap();
        // The pooling is linear: its exact gradient is the adjoint of the reference.
        let want = r::linear_adjoint_f64(p.in_len(), |v| r::avg_pool_f64_exact(g, q, v), &dy);
        close("avg pool backward", &dx, &want, 1e-5, 1e-6);
    }

    #[test]
    fn global_avg_pool_matches_reference(planes in dim(9), hw in dim(70), seed in any::<u64>()) {
        let x = fill(planes * hw, seed);
        let mut y = vec![f32::NAN; planes];
        global_avg_pool_forward(planes, hw, &x, &mut y).unwrap();
        close("gap", &y, &r::global_avg_pool_f64(planes, hw, &x), 1e-6, 1e-6);
        let dy = fill(planes, seed ^ 1);
        let mut dx = vec![f32::NAN; planes * hw];
        global_avg_pool_backward(planes, hw, &dy, &mut dx).unwrap();
        let want = r::linear_adjoint_f64(planes * hw, |v| {
            (0..planes).map(|p| v[p * hw..(p + 1) * hw].iter().sum::<f64>() / hw as f64).collect()
        }, &dy);
        close("gap backward", &dx, &want, 1e-6, 1e-7);
    }
}

/// ReLU folded into global max pooling against its definition: `max(0, max x)` per plane,
/// the gradient at the first maximum only where that maximum is positive (planes of
/// negative values give 0 and no gradient; ties go to the first maximum; NaN propagates).
#[test]
fn global_max_pool_relu_matches_relu_then_max() {
    for (planes, hw, seed) in [(1, 1, 1u64), (3, 7, 2), (9, 70, 3), (16, 9, 4), (40, 16, 5)] {
        // A grid of 0.25 (ties), shifted so that some planes are all negative.
        let x: Vec<f32> = fill(planes * hw, seed)
            .iter()
            .enumerate()
            .map(|(i, v)| (v * 8.0).round() / 4.0 - if (i / hw) % 3 == 0 { 9.0 } else { 0.0 })
            .collect();
        let mut y = vec![f32::NAN; planes];
        global_max_pool_relu_forward(planes, hw, &x, &mut y).unwrap();
        let dy = fill(planes, seed ^ 9);
        let mut dx = vec![f32::NAN; planes * hw];
        global_max_pool_relu_backward(planes, hw, &x, &dy, &mut dx).unwrap();
        let mut negative_planes = 0;
        for p in 0..planes {
            let xp = &x[p * hw..(p + 1) * hw];
            let m = xp.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            negative_planes += usize::from(m <= 0.0);
            assert_eq!(y[p], m.max(0.0), "plane {p}");
            let first = xp.iter().position(|&v| v == m).unwrap();
            for (i, &d) in dx[p * hw..(p + 1) * hw].iter().enumerate() {
                let want = if i == first && m > 0.0 { dy[p] } else { 0.0 };
                assert_eq!(d, want, "plane {p} index {i} (hw {hw})");
            }
        }
        assert!(
            planes < 3 || negative_planes > 0,
            "no all-negative plane tested"
        );
    }
    let x = [-1.0, f32::NAN, -3.0, -2.0, -0.5, -4.0];
    let mut y = [1.0f32; 2];
    global_max_pool_relu_forward(2, 3, &x, &mut y).unwrap();
    assert!(y[0].is_nan());
    assert_eq!(y[1], 0.0);
    let mut dx = [9.0f32; 6];
    global_max_pool_relu_backward(2, 3, &x, &[1.0, 2.0], &mut dx).unwrap();
    assert_eq!(dx, [0.0; 6]);
    assert!(global_max_pool_relu_forward(2, 0, &[], &mut y).is_err());
    assert!(global_max_pool_relu_backward(2, 3, &x, &[1.0], &mut dx).is_err());
}

/// Global max pooling against a direct maximum, with ties (values on a coarse grid) going
/// to the first maximum, and a NaN propagating to its plane's output and gradient slot.
#[test]
fn global_max_pool_matches_reference() {
    for (planes, hw, seed) in [(1, 1, 1u64), (3, 7, 2), (9, 70, 3), (16, 9, 4), (5, 33, 5)] {
        // Values on a grid of 0.25 so that ties are common.
        let x: Vec<f32> = fill(planes * hw, seed)
            .iter()
            .map(|v| (v * 8.0).round() / 4.0)
            .collect();
        let mut y = vec![f32::NAN; planes];
        global_max_pool_forward(planes, hw, &x, &mut y).unwrap();
        let dy = fill(planes, seed ^ 9);
        let mut dx = vec![f32::NAN; planes * hw];
        global_max_pool_backward(planes, hw, &x, &dy, &mut dx).unwrap();
        for p in 0..planes {
            let xp = &x[p * hw..(p + 1) * hw];
            let m = xp.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            assert_eq!(y[p], m, "plane {p}");
            let first = xp.iter().position(|&v| v == m).unwrap();
            for (i, &d) in dx[p * hw..(p + 1) * hw].iter().enumerate() {
                let want = if i == first { dy[p] } else { 0.0 };
                assert_eq!(d, want, "plane {p} index {i} (hw {hw})");
            }
        }
    }
    let x = [1.0, f32::NAN, 3.0, 2.0, 0.5, 4.0];
    let mut y = [0.0f32; 2];
    global_max_pool_forward(2, 3, &x, &mut y).unwrap();
    assert!(y[0].is_nan());
    assert_eq!(y[1], 4.0);
    let mut dx = [9.0f32; 6];
    global_max_pool_backward(2, 3, &x, &[1.0, 2.0], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
    assert!(global_max_pool_forward(2, 0, &[], &mut y).is_err());
    assert!(global_max_pool_forward(2, 3, &x[..5], &mut y).is_err());
    assert!(global_max_pool_backward(2, 3, &x, &[1.0, 2.0], &mut dx[..5]).is_err());
    assert!(global_max_pool_backward(2, 3, &x, &[1.0], &mut dx).is_err());
}

#[test]
fn max_pool_backward_matches_finite_differences() {
    let p = Pool2d {
        n: 2,
        c: 2,
        h: 5,
        w: 4,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let x = distinct(p.in_len(), 11);
    let g = fill(p.out_len(), 12);
    let (gm, q) = geom(&p);
    let loss = |x: &[f32]| -> f64 {
        let (y, _) = r::max_pool_f64(gm, q, x);
        y.iter().zip(&g).map(|(&y, &g)| y * f64::from(g)).sum()
    };
    // Values are 0.125 apart, so a step of 1/64 never changes an argmax (and is exact).
    let h = 1.0 / 64.0;
    let num: Vec<f64> = (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            (loss(&a) - loss(&b)) / (2.0 * f64::from(h))
        })
        .collect();
    let mut y = vec![0.0; p.out_len()];
    let mut arg = vec![0u32; p.out_len()];
    max_pool2d_forward(&p, &x, &mut y, &mut arg).unwrap();
    let mut dx = vec![0.0; p.in_len()];
    max_pool2d_backward(&p, &g, &arg, &mut dx).unwrap();
    close("max pool fd", &dx, &num, 1e-6, 1e-6);
}

#[test]
fn max_pool_ties_padding_and_nan() {
    // All values negative: -inf padding must never win (a zero pad would).
    let p = Pool2d {
        n: 1,
        c: 1,
        h: 3,
        w: 3,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let x = [-5.0, -4.0, -3.0, -2.0, -9.0, -7.0, -8.0, -6.0, -1.0];
    let mut y = [0.0f32; 9];
    let mut arg = [0u32; 9];
    max_pool2d_forward(&p, &x, &mut y, &mut arg).unwrap();
    assert_eq!(y, [-2.0, -2.0, -3.0, -2.0, -1.0, -1.0, -2.0, -1.0, -1.0]);
    assert_eq!(arg[0], 3);
    // Ties: a constant plane picks the first element of each (clamped) window.
    let x = [1.0f32; 9];
    max_pool2d_forward(&p, &x, &mut y, &mut arg).unwrap();
    assert_eq!(arg, [0, 0, 1, 0, 0, 1, 3, 3, 4]);
    // Backward with overlapping windows accumulates.
    let mut dx = [0.0f32; 9];
    max_pool2d_backward(&p, &[1.0; 9], &arg, &mut dx).unwrap();
    assert_eq!(dx, [4.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // -inf input with padding: the window max is -inf at a real element.
    let x = [f32::NEG_INFINITY; 4];
    let p2 = Pool2d {
        n: 1,
        c: 1,
        h: 2,
        w: 2,
        kernel: 2,
        stride: 2,
        padding: 1,
    };
    let (mut y2, mut a2) = ([0.0f32; 4], [9u32; 4]);
    max_pool2d_forward(&p2, &x, &mut y2, &mut a2).unwrap();
    assert!(y2.iter().all(|&v| v == f32::NEG_INFINITY));
    assert_eq!(a2, [0, 1, 2, 3]);
    // NaN wins, as in PyTorch.
    let x = [1.0, f32::NAN, 3.0, 2.0];
    let p3 = Pool2d {
        n: 1,
        c: 1,
        h: 2,
        w: 2,
        kernel: 2,
        stride: 1,
        padding: 0,
    };
    let (mut y3, mut a3) = ([0.0f32; 1], [0u32; 1]);
    max_pool2d_forward(&p3, &x, &mut y3, &mut a3).unwrap();
    assert!(y3[0].is_nan());
    assert_eq!(a3[0], 1);
}

#[test]
fn pool_errors() {
    let ok = Pool2d {
        n: 1,
        c: 2,
        h: 4,
        w: 4,
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    let (mut y, mut a) = (vec![0.0f32; 8], vec![0u32; 8]);
    let x = vec![0.0f32; 32];
    for bad in [
        Pool2d { kernel: 0, ..ok },
        Pool2d { stride: 0, ..ok },
        Pool2d { padding: 2, ..ok },
        Pool2d {
            kernel: 5,
            padding: 0,
            ..ok
        },
    ] {
        let e = max_pool2d_forward(&bad, &x, &mut y, &mut a);
        assert!(
            matches!(e, Err(Error::InvalidArgument { .. })),
            "{bad:?}: {e:?}"
        );
        let e = avg_pool2d_forward(&bad, &x, &mut y);
        assert!(
            matches!(e, Err(Error::InvalidArgument { .. })),
            "{bad:?}: {e:?}"
        );
    }
    assert!(matches!(
        max_pool2d_forward(&ok, &x[..31], &mut y, &mut a),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        max_pool2d_forward(&ok, &x, &mut y, &mut a[..7]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        avg_pool2d_backward(&ok, &y[..7], &mut [0.0; 32]),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut dx = vec![0.0f32; 32];
    a[3] = 16;
    assert!(matches!(
        max_pool2d_backward(&ok, &y, &a, &mut dx),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        global_avg_pool_forward(2, 0, &[], &mut [0.0; 2]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        global_avg_pool_forward(2, 3, &[0.0; 5], &mut [0.0; 2]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        global_avg_pool_backward(2, 3, &[0.0; 3], &mut [0.0; 6]),
        Err(Error::ShapeMismatch { .. })
    ));
}

// ---------------------------------------------------------------- linear

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn linear_matches_reference(
        n in dim(20), i in dim(40), o in prop_oneof![dim(20), Just(65usize), Just(130usize)],
        bias in any::<bool>(), relu in any::<bool>(), seed in any::<u64>(),
    ) {
        let l = Linear { n, in_features: i, out_features: o };
        let x = fill(n * i, seed);
        let w = fill(o * i, seed ^ 1);
        let b = fill(o, seed ^ 2);
        let dy = fill(n * o, seed ^ 3);
        let bref = bias.then_some(&b[..]);
        let mut y = vec![f32::NAN; n * o];
        linear_forward(&l, &x, &w, bref, relu, &mut y).unwrap();
        // Inputs are at most 8 in magnitude.
        let tol = (i as f64 + 3.0) * f64::from(f32::EPSILON) * 64.0 * (i as f64);
        close("linear y", &y, &r::linear_f64((n, i, o), &x, &w, bref, relu), 1e-5, tol + 1e-6);

        let (wdx, wdw, wdb) = r::linear_backward_f64((n, i, o), &x, &w, &dy);
        let mut dx = vec![f32::NAN; n * i];
        linear_backward_input(&l, &dy, &w, &mut dx, 0.0).unwrap();
        let tk = |k: usize| (k as f64 + 3.0) * f64::from(f32::EPSILON) * 64.0 * (k as f64) + 1e-6;
        close("linear dx", &dx, &wdx, 1e-5, tk(o));
        let mut dw = vec![f32::NAN; o * i];
        linear_backward_weight(&l, &dy, &x, &mut dw, 0.0).unwrap();
        close("linear dw", &dw, &wdw, 1e-5, tk(n));
        let mut db = vec![f32::NAN; o];
        linear_backward_bias(&l, &dy, &mut db, 0.0).unwrap();
        close("linear db", &db, &wdb, 1e-6, 1e-6);

        // beta = 1 accumulates onto what is there.
        let prev = fill(o * i, seed ^ 4);
        let mut acc = prev.clone();
        linear_backward_weight(&l, &dy, &x, &mut acc, 1.0).unwrap();
        let want: Vec<f64> = wdw.iter().zip(&prev).map(|(&a, &p)| a + f64::from(p)).collect();
        close("linear dw accumulate", &acc, &want, 1e-5, tk(n) + 1e-5);
        let prevb = fill(o, seed ^ 5);
        let mut accb = prevb.clone();
        linear_backward_bias(&l, &dy, &mut accb, 1.0).unwrap();
        let want: Vec<f64> = wdb.iter().zip(&prevb).map(|(&a, &p)| a + f64::from(p)).collect();
        close("linear db accumulate", &accb, &want, 1e-6, 1e-5);
        let prevx = fill(n * i, seed ^ 6);
        let mut accx = prevx.clone();
        linear_backward_input(&l, &dy, &w, &mut accx, 1.0).unwrap();
        let want: Vec<f64> = wdx.iter().zip(&prevx).map(|(&a, &p)| a + f64::from(p)).collect();
        close("linear dx accumulate", &accx, &want, 1e-5, tk(o) + 1e-5);
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (n, i, o) = (3, 5, 4);
    let x: Vec<f64> = fill(n * i, 1).iter().map(|&v| f64::from(v)).collect();
    let w: Vec<f64> = fill(o * i, 2).iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = fill(o, 3).iter().map(|&v| f64::from(v)).collect();
    let g = fill(n * o, 4);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let mut s = 0.0;
        for r in 0..n {
            for c in 0..o {
                let y: f64 = b[c] + (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum::<f64>();
                s += y * f64::from(g[r * o + c]);
            }
        }
        s
    };
    let fd = |v: &[f64], which: usize| -> Vec<f64> {
        let h = 1e-4;
        (0..v.len())
            .map(|k| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[k] += h;
                m[k] -= h;
                let ev = |t: &[f64]| match which {
                    0 => loss(t, &w, &b),
                    1 => loss(&x, t, &b),
                    _ => loss(&x, &w, t),
                };
                (ev(&p) - ev(&m)) / (2.0 * h)
            })
            .collect()
    };
    let l = Linear {
        n,
        in_features: i,
        out_features: o,
    };
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let (mut dx, mut dw, mut db) = (vec![0.0; n * i], vec![0.0; o * i], vec![0.0; o]);
    linear_backward_input(&l, &g, &w32, &mut dx, 0.0).unwrap();
    linear_backward_weight(&l, &g, &x32, &mut dw, 0.0).unwrap();
    linear_backward_bias(&l, &g, &mut db, 0.0).unwrap();
    close("linear fd dx", &dx, &fd(&x, 0), 1e-5, 1e-5);
    close("linear fd dw", &dw, &fd(&w, 1), 1e-5, 1e-5);
    close("linear fd db", &db, &fd(&b, 2), 1e-5, 1e-5);
}

#[test]
fn linear_errors() {
    let l = Linear {
        n: 2,
        in_features: 3,
        out_features: 4,
    };
    let (x, w, b) = (vec![0.0f32; 6], vec![0.0f32; 12], vec![0.0f32; 4]);
    let mut y = vec![0.0f32; 8];
    let e = linear_forward(&l, &x[..5], &w, None, false, &mut y);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_forward",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_forward(&l, &x, &w[..11], None, false, &mut y);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_forward",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_forward(&l, &x, &w, Some(&b[..3]), false, &mut y);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_forward",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_forward(&l, &x, &w, Some(&b), false, &mut y[..7]);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_forward",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_backward_input(&l, &y, &w, &mut [0.0; 5], 0.0);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_backward_input",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_backward_weight(&l, &y, &x, &mut [0.0; 13], 0.0);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_backward_weight",
                ..
            })
        ),
        "{e:?}"
    );
    let e = linear_backward_bias(&l, &y[..6], &mut [0.0; 4], 0.0);
    assert!(
        matches!(
            e,
            Err(Error::ShapeMismatch {
                op: "linear_backward_bias",
                ..
            })
        ),
        "{e:?}"
    );
}

// ---------------------------------------------------------------- thread-count invariance

/// Every op once, on sizes that split into several chunks / planes / tiles; all outputs.
fn run_all() -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let len = 6 * CHUNK + 1234; // 7 chunks: an odd count, split unevenly
    let a = fill(len, 1);
    let b = fill(len, 2);
    let mut y = vec![0.0f32; len];
    relu(&a, &mut y).unwrap();
    out.push(bits(&y));
    add_relu(&a, &b, &mut y).unwrap();
    out.push(bits(&y));
    let mut z = b.clone();
    axpy(0.37, &a, &mut z).unwrap();
    out.push(bits(&z));
    // Block magnitudes spread over 2^-30 .. 2^30, so that f64 additions round and a different
    // combination order would show in the bits.
    let wide: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| v * 2f32.powi((i / 256 * 7919 % 61) as i32 - 30))
        .collect();
    let f64_bits = |v: f64| [(v.to_bits() >> 32) as u32, v.to_bits() as u32];
    out.push(
        [
            sum(&wide),
            sum_squares(&wide),
            dot(&wide, &b).unwrap(),
            sum(&a),
        ]
        .into_iter()
        .flat_map(f64_bits)
        .collect(),
    );

    // BatchNorm: many channels, planes larger and smaller than a chunk group.
    for (n, c, h, w) in [(4, 16, 9, 7), (2, 3, 130, 130)] {
        let k = bn_case(n, c, h, w, 5, 0.3);
        let (y, saved, rm, rv) = bn_train(&k, true);
        let (dx, dg, db) = bn_backward(&k, &saved, Some(&y));
        out.extend([
            bits(&y),
            bits(&saved.mean),
            bits(&saved.inv_std),
            bits(&rm),
            bits(&rv),
        ]);
        out.extend([bits(&dx), bits(&dg), bits(&db)]);
    }

    let p = Pool2d {
        n: 4,
        c: 16,
        h: 17,
        w: 15,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let x = fill(p.in_len(), 3);
    let (mut yp, mut arg) = (vec![0.0; p.out_len()], vec![0u32; p.out_len()]);
    max_pool2d_forward(&p, &x, &mut yp, &mut arg).unwrap();
    let dy = fill(p.out_len(), 4);
    let mut dx = vec![0.0; p.in_len()];
    max_pool2d_backward(&p, &dy, &arg, &mut dx).unwrap();
    out.extend([bits(&yp), arg.clone(), bits(&dx)]);
    avg_pool2d_forward(&p, &x, &mut yp).unwrap();
    avg_pool2d_backward(&p, &dy, &mut dx).unwrap();
    out.extend([bits(&yp), bits(&dx)]);
    let mut g = vec![0.0; p.n * p.c];
    global_avg_pool_forward(p.n * p.c, p.h * p.w, &x, &mut g).unwrap();
    global_avg_pool_backward(p.n * p.c, p.h * p.w, &g, &mut dx).unwrap();
    out.extend([bits(&g), bits(&dx)]);

    let l = Linear {
        n: 70,
        in_features: 300,
        out_features: 150,
    };
    let xl = fill(70 * 300, 6);
    let wl = fill(150 * 300, 7);
    let bl = fill(150, 8);
    let dyl = fill(70 * 150, 9);
    let mut yl = vec![0.0; 70 * 150];
    linear_forward(&l, &xl, &wl, Some(&bl), true, &mut yl).unwrap();
    let mut dxl = vec![0.0; 70 * 300];
    let mut dwl = vec![0.0; 150 * 300];
    let mut dbl = vec![0.0; 150];
    linear_backward_input(&l, &dyl, &wl, &mut dxl, 0.0).unwrap();
    linear_backward_weight(&l, &dyl, &xl, &mut dwl, 0.0).unwrap();
    linear_backward_bias(&l, &dyl, &mut dbl, 0.0).unwrap();
    out.extend([bits(&yl), bits(&dxl), bits(&dwl), bits(&dbl)]);
    out
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let one = in_pool(1, run_all);
    for t in [2, 3] {
        let other = in_pool(t, run_all);
        assert_eq!(one.len(), other.len());
        for (i, (a, b)) in one.iter().zip(&other).enumerate() {
            assert!(a == b, "output {i} differs between 1 and {t} threads");
        }
    }
}
