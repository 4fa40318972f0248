//! Softmax cross-entropy and the row-wise (log-)softmax against the f64 references: random
//! shapes up to 300 x 1000 with scales from 1e-3 to 1e3 (logits whose naive exponential
//! overflows), central differences of the loss, bit-identical results in rayon pools of 1, 2
//! and 3 threads, extreme values (1e30, `f32::MAX`, ties, constant rows), every error, and no
//! allocation once warm.
//!
//! `PROPTEST_CASES=1000 cargo test --release --test softmax` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::reference::losses as r;
use selfsup::kernels::softmax::{
    log_softmax_rows, rows_per_chunk, softmax_cross_entropy, softmax_rows, XentStats,
};
use selfsup::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------- allocation counting

/// Counts the allocations of the calling thread (a `const` thread-local, so reading it never
/// allocates), so that tests running in parallel do not disturb each other.
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------- helpers

const EPS: f64 = f32::EPSILON as f64;

/// Deterministic values in [-1, 1) with some exact zeros and a few larger magnitudes.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::values_with_outliers(len, seed, 16.0)
}

fn labels_for(n: usize, c: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % c as u64) as u32
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn xent(logits: &[f32], n: usize, c: usize, labels: &[u32]) -> (XentStats, Vec<f32>) {
    let mut d = vec![f32::NAN; n * c];
    let st = softmax_cross_entropy(logits, n, c, labels, Some(&mut d)).unwrap();
    (st, d)
}

fn invalid_msg(e: Error) -> String {
    match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Logits `n x c`: `fill` values times `scale`, plus `shift`.
fn logits(n: usize, c: usize, seed: u64, scale: f32, shift: f32) -> Vec<f32> {
    fill(n * c, seed)
        .into_iter()
        .map(|v| v * scale + shift)
        .collect()
}

/// Compares the kernel with the reference. Error model: each of the 8 lanes sums `c / 8`
/// exponentials (relative error about `(c/8 + 2) eps` of the sum, so that much absolute error
/// in `ln sum`); each exponential is within 1 ulp of `e^(x - m)` where `x - m` is rounded
/// (relative error `|x - m| eps / 2`).
fn check_xent(x: &[f32], n: usize, c: usize, labels: &[u32]) -> Result<(), TestCaseError> {
    let (st, d) = xent(x, n, c, labels);
    let (loss, grad, correct) = r::softmax_xent_f64(x, n, c, labels);
    let sum_err = (c as f64 / 8.0 + 8.0) * EPS;
    prop_assert!(
        (st.loss - loss).abs() <= sum_err * (1.0 + loss.abs() * 1e-3) + 1e-12 * loss.abs(),
        "loss {} vs {}",
        st.loss,
        loss
    );
    prop_assert_eq!(st.correct, correct);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for j in 0..c {
            let (g, w) = (f64::from(d[i * c + j]), grad[i * c + j]);
            let p = w + if j == labels[i] as usize {
                1.0 / n as f64
            } else {
                0.0
            };
            let rel = sum_err + 2.0 * EPS + f64::from(m - row[j]) * EPS;
            let tol = p.abs() * rel + 2.0 * EPS / n as f64 + 1e-38;
            prop_assert!(
                (g - w).abs() <= tol,
                "dlogits[{}, {}] = {} vs {} (tol {:e})",
                i,
                j,
                g,
                w,
                tol
            );
        }
    }
    // Without the gradient: the same statistics, bit for bit.
    let st2 = softmax_cross_entropy(x, n, c, labels, None).unwrap();
    prop_assert_eq!(st2.loss.to_bits(), st.loss.to_bits());
    prop_assert_eq!(st2.correct, st.correct);
    Ok(())
}

fn scale_strategy() -> impl Strategy<Value = f32> {
    // 1e-3 ..= 1e3, log-uniform; 1e3 gives logits of +-1000 (e^1000 overflows f32 and f64).
    (-3.0f32..=3.0).prop_map(|e| 10f32.powf(e))
}

fn classes() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(7),
        Just(8),
        Just(9),
        Just(1000),
        1usize..=1000
    ]
}

fn rows() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 1usize..=300]
}

// ---------------------------------------------------------------- against the reference

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn xent_matches_reference(
        n in rows(),
        c in classes(),
        seed in any::<u64>(),
        scale in scale_strategy(),
        shift in prop_oneof![Just(0.0f32), -1e4f32..1e4],
    ) {
        let x = logits(n, c, seed, scale, shift);
        let labels = labels_for(n, c, seed ^ 0x55);
        check_xent(&x, n, c, &labels)?;
    }

    #[test]
    fn rows_match_reference(
        n in rows(),
        c in classes(),
        seed in any::<u64>(),
        scale in scale_strategy(),
    ) {
        let x = logits(n, c, seed, scale, 0.0);
        let want = r::log_softmax_f64(&x, n, c);
        let mut y = vec![f32::NAN; n * c];
        log_softmax_rows(&x, n, c, &mut y).unwrap();
        let sum_err = (c as f64 / 8.0 + 8.0) * EPS;
        for (k, (&g, &w)) in y.iter().zip(&want).enumerate() {
            // (x - m) rounded, then ln(sum) (error sum_err) subtracted and rounded.
            let tol = sum_err + 2.0 * EPS * w.abs();
            prop_assert!((f64::from(g) - w).abs() <= tol, "log_softmax[{}] {} vs {}", k, g, w);
        }
        softmax_rows(&x, n, c, &mut y).unwrap();
        for (k, (&g, &w)) in y.iter().zip(&want).enumerate() {
            let i = k / c;
            let m = x[i * c..(i + 1) * c].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let p = w.exp();
            let tol = p * (sum_err + 3.0 * EPS + f64::from(m - x[k]) * EPS) + 1e-38;
            prop_assert!((f64::from(g) - p).abs() <= tol, "softmax[{}] {} vs {}", k, g, p);
        }
    }
}

// ---------------------------------------------------------------- gradient check

/// Central differences of the kernel's own loss. Logits lie on a grid of 1/64 and the step is
/// h = 1/64, so `x +- h` is exact and the step is exactly 2h. The loss of one evaluation is
/// within about `1e-6` of its exact value (f32 exponentials and sum, `f64` elsewhere), so the
/// difference quotient carries at most `2e-6 / (2h) = 6.4e-5` of noise; the truncation error
/// `h^2 / 6 * |L'''|` is below `1e-5` (`|L'''| <= 1/n` for a softmax). Tolerance 2e-4.
#[test]
fn xent_gradient_matches_central_differences() {
    let (n, c) = (3, 11);
    let x: Vec<f32> = fill(n * c, 42)
        .iter()
        .map(|&v| (v * 3.0 * 64.0).round() / 64.0)
        .collect();
    let labels = [4u32, 0, 10];
    let (_, d) = xent(&x, n, c, &labels);
    let h = 1.0f32 / 64.0;
    for k in 0..n * c {
        let mut xp = x.clone();
        xp[k] += h;
        let mut xm = x.clone();
        xm[k] -= h;
        let lp = softmax_cross_entropy(&xp, n, c, &labels, None)
            .unwrap()
            .loss;
        let lm = softmax_cross_entropy(&xm, n, c, &labels, None)
            .unwrap()
            .loss;
        let fd = (lp - lm) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(d[k])).abs() <= 2e-4,
            "dlogits[{k}] = {} vs central difference {fd}",
            d[k]
        );
    }
}

// ---------------------------------------------------------------- determinism

#[test]
fn bit_identical_for_any_thread_count() {
    for (n, c) in [(700, 100), (97, 1000), (3000, 3), (1, 5000)] {
        assert!(
            n > rows_per_chunk(c) || n == 1,
            "several chunks for {n} x {c}"
        );
        let x = logits(n, c, n as u64 * 31 + c as u64, 7.0, 0.0);
        let labels = labels_for(n, c, 9);
        let run = || {
            let (st, d) = xent(&x, n, c, &labels);
            let mut y = vec![0.0f32; n * c];
            log_softmax_rows(&x, n, c, &mut y).unwrap();
            (st.loss.to_bits(), st.correct, bits(&d), bits(&y))
        };
        let one = in_pool(1, run);
        for threads in [2, 3] {
            assert!(
                in_pool(threads, run) == one,
                "{n} x {c}: {threads} threads differ"
            );
        }
    }
}

// ---------------------------------------------------------------- extreme inputs

#[test]
fn huge_logits_stay_finite() {
    let c = 13;
    let mut x = Vec::new();
    // 1e30 everywhere but one smaller; +-f32::MAX in one row (x - m overflows to -inf: e = 0);
    // naive-overflowing +-1000.
    x.extend((0..c).map(|j| if j == 3 { 9e29f32 } else { 1e30 }));
    x.extend((0..c).map(|j| if j % 2 == 0 { f32::MAX } else { -f32::MAX }));
    x.extend((0..c).map(|j| (j as f32 - 6.0) * 170.0));
    x.extend((0..c).map(|j| -1e30 * (j as f32 + 1.0)));
    let n = 4;
    let labels = [3u32, 1, 12, 0];
    let (st, d) = xent(&x, n, c, &labels);
    assert!(st.loss.is_finite() && d.iter().all(|v| v.is_finite()));
    let (loss, grad, correct) = r::softmax_xent_f64(&x, n, c, &labels);
    assert!(
        (st.loss - loss).abs() <= 1e-6 * loss.abs(),
        "{} vs {loss}",
        st.loss
    );
    assert_eq!(st.correct, correct);
    // Row 1 (label at -MAX): loss 2 MAX + ln(7), gradient -1/n at the label.
    assert_eq!(d[c + 1], -0.25);
    for (k, (g, w)) in d.iter().zip(&grad).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-6, "[{k}] {g} vs {w}");
    }
}

#[test]
fn ties_and_constant_rows() {
    // A constant row: loss ln c, gradient (1/c - onehot) / n; correct only for label 0 (the
    // first maximum).
    let (n, c) = (2, 10);
    let x = vec![2.5f32; n * c];
    let (st, d) = xent(&x, n, c, &[0, 4]);
    assert!((st.loss - (c as f64).ln()).abs() < 1e-6);
    assert_eq!(st.correct, 1);
    assert!((d[0] - (0.1 - 1.0) / 2.0).abs() < 1e-7);
    assert!((d[1] - 0.05).abs() < 1e-8);
    // Two tied maxima: the first one counts as the prediction.
    let x = [0.0f32, 3.0, 1.0, 3.0];
    assert_eq!(xent(&x, 1, 4, &[1]).0.correct, 1);
    assert_eq!(xent(&x, 1, 4, &[3]).0.correct, 0);
    // Duplicate rows give the same loss terms and gradients.
    let row = fill(37, 3);
    let x: Vec<f32> = row.iter().chain(&row).copied().collect();
    let (_, d) = xent(&x, 2, 37, &[5, 5]);
    assert_eq!(bits(&d[..37]), bits(&d[37..]));
    // One class: the loss is 0 and the gradient 0.
    let (st, d) = xent(&[123.0, -4.0], 2, 1, &[0, 0]);
    assert_eq!((st.loss, st.correct), (0.0, 2));
    assert_eq!(d, vec![0.0, 0.0]);
}

// ---------------------------------------------------------------- errors

#[test]
fn errors() {
    let x = fill(12, 1);
    let mut d = vec![0.0f32; 12];
    let e = softmax_cross_entropy(&x, 3, 4, &[0, 1, 4], Some(&mut d)).unwrap_err();
    assert!(invalid_msg(e).contains("row 2"));
    let e = softmax_cross_entropy(&x, 3, 0, &[0, 1, 2], None).unwrap_err();
    assert!(invalid_msg(e).contains("c = 0"));
    let e = softmax_cross_entropy(&[], 0, 4, &[], None).unwrap_err();
    assert!(invalid_msg(e).contains("n = 0"));
    assert!(matches!(
        softmax_cross_entropy(&x, 4, 4, &[0; 4], None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        softmax_cross_entropy(&x, 3, 4, &[0; 2], None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        softmax_cross_entropy(&x, 3, 4, &[0; 3], Some(&mut d[..11])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        softmax_cross_entropy(&x, usize::MAX, 2, &[0; 3], None),
        Err(Error::InvalidArgument { .. })
    ));
    // Non-finite logits, named by their (first) row, also deep in a many-chunk batch.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (n, c) = (500, 100);
        let mut x = fill(n * c, 2);
        x[437 * c + 17] = bad;
        x[480 * c] = bad;
        let mut d = vec![0.0; n * c];
        let e = softmax_cross_entropy(&x, n, c, &vec![0; n], Some(&mut d)).unwrap_err();
        assert!(invalid_msg(e).contains("row 437"), "{bad}");
        let mut y = vec![0.0; n * c];
        let e = softmax_rows(&x, n, c, &mut y).unwrap_err();
        assert!(invalid_msg(e).contains("row 437"));
        let e = log_softmax_rows(&x, n, c, &mut y).unwrap_err();
        assert!(invalid_msg(e).contains("row 437"));
    }
    let mut y = vec![0.0; 11];
    assert!(matches!(
        softmax_rows(&x, 3, 4, &mut y),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        log_softmax_rows(&x, 3, 0, &mut y),
        Err(Error::InvalidArgument { .. })
    ));
    // An empty batch is fine for the row helpers.
    softmax_rows(&[], 0, 4, &mut []).unwrap();
}

// ---------------------------------------------------------------- allocation

#[test]
fn no_allocation_once_warm() {
    in_pool(1, || {
        let (n, c) = (256, 300);
        let x = logits(n, c, 5, 3.0, 0.0);
        let labels = labels_for(n, c, 5);
        let mut d = vec![0.0f32; n * c];
        let mut y = vec![0.0f32; n * c];
        let mut step = || {
            softmax_cross_entropy(&x, n, c, &labels, Some(&mut d)).unwrap();
            softmax_rows(&x, n, c, &mut y).unwrap();
        };
        step();
        let before = ALLOCS.with(Cell::get);
        step();
        let count = ALLOCS.with(Cell::get) - before;
        assert_eq!(count, 0, "{count} allocations in a warm step");
    });
}
