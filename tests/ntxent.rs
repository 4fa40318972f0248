//! NT-Xent against the f64 full-matrix reference: loss, gradient, accuracy, both pairing
//! conventions, anchor subsets, thread-count invariance, extreme inputs and every error.

mod common;

use proptest::prelude::*;
use selfsup::kernels::contrastive::ntxent::{
    nt_xent, NtXent, NtXentConfig, NtXentOutput, Pairing, NORM_EPS,
};
use selfsup::kernels::reference::contrastive::nt_xent_f64;
use selfsup::Error;
use std::ops::Range;

/// Deterministic pseudo-random values (splitmix64), uniform in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = s;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 31;
            ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn partners(p: Pairing<'_>, m: usize) -> Vec<usize> {
    (0..m)
        .map(|i| match p {
            Pairing::Adjacent => i ^ 1,
            Pairing::Halves => (i + m / 2) % m,
            Pairing::Explicit(t) => t[i],
        })
        .collect()
}

struct Ref {
    loss: f64,
    grad: Vec<f64>,
    accuracy: f64,
}

fn reference(
    z: &[f32],
    m: usize,
    d: usize,
    tau: f32,
    p: Pairing<'_>,
    anchors: Range<usize>,
    mean_over: usize,
) -> Ref {
    let z64: Vec<f64> = z.iter().map(|&x| f64::from(x)).collect();
    let (loss, grad, accuracy) = nt_xent_f64(
        &z64,
        m,
        d,
        f64::from(tau),
        &partners(p, m),
        anchors,
        mean_over,
        NORM_EPS,
    );
    Ref {
        loss,
        grad,
        accuracy,
    }
}

fn run(z: &[f32], m: usize, d: usize, cfg: &NtXentConfig<'_>) -> (NtXentOutput, Vec<f32>) {
    let mut dz = vec![f32::NAN; m * d];
    let out = nt_xent(z, m, d, cfg, Some(&mut dz)).expect("valid input");
    (out, dz)
}

/// The loss is a difference of terms of size up to 1/tau, each computed from f32 dot
/// products of unit vectors (error about sqrt(d) * 2^-24 / tau), so the loss error scales
/// with 1/tau. The gradient error is measured against the largest gradient element, with the
/// same 1/tau conditioning.
fn check(z: &[f32], m: usize, d: usize, cfg: &NtXentConfig<'_>) {
    let anchors = cfg.anchors.clone().unwrap_or(0..m);
    let mean_over = cfg.mean_over.unwrap_or(anchors.len());
    let r = reference(z, m, d, cfg.tau, cfg.pairing, anchors, mean_over);
    let (out, dz) = run(z, m, d, cfg);
    let inv_tau = 1.0 / f64::from(cfg.tau);
    let cond = 1.0 + inv_tau;
    let loss_tol = 2e-6 * cond * (d as f64).sqrt() + 1e-6 * r.loss.abs();
    assert!(
        (f64::from(out.loss) - r.loss).abs() <= loss_tol,
        "loss {} vs reference {} (tol {loss_tol}), m={m} d={d} tau={}",
        out.loss,
        r.loss,
        cfg.tau
    );
    let gmax = r.grad.iter().fold(0.0f64, |a, &g| a.max(g.abs()));
    let gtol = 1e-5 * cond * (d as f64).sqrt() * gmax + 1e-30;
    for (k, (&g, &gr)) in dz.iter().zip(&r.grad).enumerate() {
        assert!(
            (f64::from(g) - gr).abs() <= gtol,
            "dz[{k}] (row {}) = {g} vs reference {gr} (tol {gtol}, max |g| {gmax}), m={m} d={d} tau={}",
            k / d,
            cfg.tau
        );
    }
    // Accuracy can only differ on near-ties.
    assert!(
        (f64::from(out.accuracy) - r.accuracy).abs() <= 2.0 / m as f64 + 1e-6,
        "accuracy {} vs {}",
        out.accuracy,
        r.accuracy
    );
}

fn tau_strategy() -> impl Strategy<Value = f32> {
    // Log-uniform over [0.01, 10].
    (-2.0f64..1.0).prop_map(|e| 10f64.powf(e) as f32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(48)))]

    #[test]
    fn matches_reference(
        n in 1usize..=150,
        d in 1usize..=64,
        tau in tau_strategy(),
        halves in any::<bool>(),
        scale in prop_oneof![Just(1.0f32), Just(1e-3), Just(1e4)],
        seed in any::<u64>(),
    ) {
        let m = 2 * n;
        let z: Vec<f32> = values(m * d, seed).into_iter().map(|x| x * scale).collect();
        let pairing = if halves { Pairing::Halves } else { Pairing::Adjacent };
        check(&z, m, d, &NtXentConfig::new(tau).pairing(pairing));
    }

    #[test]
    fn anchor_subsets_match_reference(
        n in 2usize..=100,
        d in 1usize..=32,
        tau in tau_strategy(),
        cut in any::<prop::sample::Index>(),
        len in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let m = 2 * n;
        let z = values(m * d, seed);
        let a0 = cut.index(m);
        let a1 = a0 + 1 + len.index(m - a0);
        let cfg = NtXentConfig::new(tau).anchors(a0..a1).mean_over(m);
        check(&z, m, d, &cfg);
    }
}

/// Views that are near-duplicates: the loss is dominated by the positive, the hard case for
/// the cancellation in `W = P - 1`.
#[test]
fn aligned_views_match_reference() {
    for &(n, d, tau) in &[(64usize, 16usize, 0.05f32), (300, 32, 0.01), (150, 64, 0.5)] {
        let m = 2 * n;
        let base = values(n * d, 7);
        let noise = values(m * d, 8);
        let z: Vec<f32> = (0..m * d)
            .map(|k| base[(k / d / 2) * d + k % d] + 0.01 * noise[k])
            .collect();
        check(&z, m, d, &NtXentConfig::new(tau));
    }
}

/// Every tile size and many tiles (the tile height depends on the row count).
#[test]
fn large_row_counts_match_reference() {
    for &(m, d) in &[(1026usize, 8usize), (4100, 4)] {
        let z = values(m * d, m as u64);
        check(&z, m, d, &NtXentConfig::new(0.2).pairing(Pairing::Halves));
    }
}

/// Finite differences of the f64 reference loss check the hand-derived reference gradient;
/// the kernel is checked against that gradient everywhere else.
#[test]
fn reference_gradient_matches_finite_differences() {
    for (m, d, tau, anchors) in [
        (6usize, 3usize, 0.5f64, 0..6),
        (8, 5, 0.07, 0..8),
        (10, 4, 2.0, 3..7),
    ] {
        let z: Vec<f64> = values(m * d, 3).into_iter().map(f64::from).collect();
        let p: Vec<usize> = (0..m).map(|i| i ^ 1).collect();
        let loss = |z: &[f64]| nt_xent_f64(z, m, d, tau, &p, anchors.clone(), m, NORM_EPS).0;
        let (_, grad, _) = nt_xent_f64(&z, m, d, tau, &p, anchors.clone(), m, NORM_EPS);
        for k in 0..m * d {
            let h = 1e-6;
            let mut zp = z.clone();
            zp[k] += h;
            let mut zm = z.clone();
            zm[k] -= h;
            let fd = (loss(&zp) - loss(&zm)) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "k={k}: finite difference {fd} vs analytic {}",
                grad[k]
            );
        }
    }
}

/// The kernel's gradient against central differences of the kernel's own loss (in f32, so
/// with a step large enough to beat rounding and a matching tolerance).
#[test]
fn kernel_gradient_matches_its_own_finite_differences() {
    let (m, d, tau) = (12usize, 6usize, 0.5f32);
    let z = values(m * d, 11);
    let cfg = NtXentConfig::new(tau);
    let (_, dz) = run(&z, m, d, &cfg);
    let loss = |z: &[f32]| f64::from(nt_xent(z, m, d, &cfg, None).unwrap().loss);
    for k in 0..m * d {
        let h = 1e-2f32;
        let mut zp = z.clone();
        zp[k] += h;
        let mut zm = z.clone();
        zm[k] -= h;
        let fd = (loss(&zp) - loss(&zm)) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(dz[k])).abs() <= 2e-3 * (1.0 + fd.abs()),
            "k={k}: finite difference {fd} vs kernel {}",
            dz[k]
        );
    }
}

#[test]
fn both_pairings_are_consistent_with_explicit_tables() {
    let (n, d) = (37usize, 9usize);
    let m = 2 * n;
    let z = values(m * d, 5);
    for p in [Pairing::Adjacent, Pairing::Halves] {
        let table = partners(p, m);
        let (a, da) = run(&z, m, d, &NtXentConfig::new(0.3).pairing(p));
        let (b, db) = run(
            &z,
            m,
            d,
            &NtXentConfig::new(0.3).pairing(Pairing::Explicit(&table)),
        );
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(da, db);
    }
    // Reordering the rows from one convention to the other gives the same loss.
    let halves: Vec<f32> = (0..m)
        .flat_map(|i| {
            let src = if i < n { 2 * i } else { 2 * (i - n) + 1 };
            z[src * d..(src + 1) * d].to_vec()
        })
        .collect();
    let (a, _) = run(&z, m, d, &NtXentConfig::new(0.3));
    let (b, _) = run(
        &halves,
        m,
        d,
        &NtXentConfig::new(0.3).pairing(Pairing::Halves),
    );
    assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss.abs());
}

/// Splitting the anchors over "processes" and summing the gradients gives the full result.
#[test]
fn anchor_split_sums_to_the_full_loss_and_gradient() {
    let (m, d) = (1200usize, 16usize);
    let z = values(m * d, 21);
    let (full, dfull) = run(&z, m, d, &NtXentConfig::new(0.1));
    let mut loss = 0.0f64;
    let mut grad = vec![0.0f64; m * d];
    for part in [0..400, 400..800, 800..1200] {
        let (o, g) = run(&z, m, d, &NtXentConfig::new(0.1).anchors(part).mean_over(m));
        loss += f64::from(o.loss);
        for (a, b) in grad.iter_mut().zip(&g) {
            *a += f64::from(*b);
        }
    }
    assert!((loss - f64::from(full.loss)).abs() <= 1e-5 * loss.abs());
    let gmax = dfull.iter().fold(0.0f32, |a, g| a.max(g.abs()));
    for (a, b) in grad.iter().zip(&dfull) {
        assert!((a - f64::from(*b)).abs() <= 1e-4 * f64::from(gmax));
    }
}

#[test]
fn bit_identical_for_any_thread_count() {
    for &(m, d) in &[(130usize, 7usize), (700, 33), (2050, 16)] {
        let z = values(m * d, m as u64 + 1);
        let cfg = NtXentConfig::new(0.1);
        let results: Vec<(u32, Vec<u32>)> = [1usize, 2, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (o, dz) = run(&z, m, d, &cfg);
                    (o.loss.to_bits(), dz.iter().map(|x| x.to_bits()).collect())
                })
            })
            .collect();
        assert_eq!(results[0], results[1], "1 vs 2 threads, m={m}");
        assert_eq!(results[0], results[2], "1 vs 3 threads, m={m}");
    }
}

#[test]
fn workspace_reuse_gives_the_same_bits() {
    let mut ws = NtXent::new();
    let (m, d) = (300usize, 12usize);
    let z = values(m * d, 2);
    let small = values(10 * 3, 4);
    let mut a = vec![0.0; m * d];
    let mut b = vec![0.0; m * d];
    let mut c = vec![0.0; 30];
    let cfg = NtXentConfig::new(0.2);
    let la = ws.forward_backward(&z, m, d, &cfg, &mut a).unwrap();
    ws.forward_backward(&small, 10, 3, &cfg, &mut c).unwrap();
    let lb = ws.forward_backward(&z, m, d, &cfg, &mut b).unwrap();
    assert_eq!(la, lb);
    assert_eq!(a, b);
    assert_eq!(ws.forward(&z, m, d, &cfg).unwrap(), la);
}

fn all_finite(out: &NtXentOutput, dz: &[f32]) -> bool {
    out.loss.is_finite() && dz.iter().all(|g| g.is_finite())
}

#[test]
fn identical_rows_give_log_of_the_candidate_count() {
    for &tau in &[0.01f32, 0.5, 10.0] {
        let (m, d) = (64usize, 8usize);
        let z: Vec<f32> = (0..m * d).map(|k| (k % d) as f32 + 1.0).collect();
        let (out, dz) = run(&z, m, d, &NtXentConfig::new(tau));
        assert!(all_finite(&out, &dz));
        assert!(
            (out.loss - ((m - 1) as f32).ln()).abs() < 1e-4,
            "tau {tau}: {}",
            out.loss
        );
        // Every direction is symmetric: the gradient vanishes up to rounding.
        assert!(dz.iter().all(|g| g.abs() < 1e-4 / tau), "tau {tau}");
    }
}

#[test]
fn zero_tiny_and_huge_rows_stay_finite_and_match_reference() {
    let (m, d) = (40usize, 6usize);
    let mut z = values(m * d, 9);
    z[..d].fill(0.0); // a zero row
    z[3 * d..4 * d].fill(0.0); // another one, paired with row 2
    for x in &mut z[5 * d..6 * d] {
        *x *= 1e-30; // below eps: clamped
    }
    for x in &mut z[7 * d..8 * d] {
        *x *= 1e36; // |z|^2 overflows f32
    }
    z[9 * d] = f32::MAX;
    z[9 * d + 1] = -f32::MAX;
    for &tau in &[0.01f32, 0.07, 1.0, 10.0] {
        let cfg = NtXentConfig::new(tau);
        let (out, dz) = run(&z, m, d, &cfg);
        assert!(all_finite(&out, &dz), "tau {tau}");
        check(&z, m, d, &cfg);
    }
}

#[test]
fn small_temperatures_do_not_overflow() {
    // e^(1/tau) overflows f32 for tau < 0.0113; the streamed log-sum-exp never forms it.
    let (m, d) = (256usize, 32usize);
    let z = values(m * d, 13);
    for &tau in &[0.011f32, 0.01, 1e-3, 1e-6] {
        let (out, dz) = run(&z, m, d, &NtXentConfig::new(tau));
        assert!(all_finite(&out, &dz), "tau {tau}");
    }
    check(&z, m, d, &NtXentConfig::new(0.01));
}

fn err(z: &[f32], m: usize, d: usize, cfg: &NtXentConfig<'_>) -> String {
    let mut dz = vec![0.0; z.len()];
    match nt_xent(z, m, d, cfg, Some(&mut dz)) {
        Err(e) => e.to_string(),
        Ok(o) => panic!("expected an error, got {o:?}"),
    }
}

#[test]
fn invalid_input_is_an_error() {
    let (m, d) = (8usize, 4usize);
    let z = values(m * d, 1);
    for tau in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-45] {
        assert!(
            err(&z, m, d, &NtXentConfig::new(tau)).contains("tau"),
            "tau {tau}"
        );
    }
    assert!(err(&z[..4], 1, 4, &NtXentConfig::new(0.1)).contains("at least 2"));
    assert!(err(&[], 8, 0, &NtXentConfig::new(0.1)).contains("d = 0"));
    let mut bad = z.clone();
    bad[3 * d + 2] = f32::NAN;
    assert!(err(&bad, m, d, &NtXentConfig::new(0.1)).contains("row 3"));
    bad[3 * d + 2] = 1.0;
    bad[6 * d] = f32::NEG_INFINITY;
    assert!(err(&bad, m, d, &NtXentConfig::new(0.1)).contains("row 6"));
    let z7 = values(7 * d, 1);
    assert!(err(&z7, 7, d, &NtXentConfig::new(0.1)).contains("even"));
    let not_pairing = [1usize, 0, 3, 2, 5, 4, 7, 7];
    assert!(err(
        &z,
        m,
        d,
        &NtXentConfig::new(0.1).pairing(Pairing::Explicit(&not_pairing))
    )
    .contains("row 6"));
    let one_way = [1usize, 2, 0, 4, 5, 3, 7, 6];
    assert!(err(
        &z,
        m,
        d,
        &NtXentConfig::new(0.1).pairing(Pairing::Explicit(&one_way))
    )
    .contains("pairing"));
    assert!(err(&z, m, d, &NtXentConfig::new(0.1).anchors(3..3)).contains("anchor"));
    assert!(err(&z, m, d, &NtXentConfig::new(0.1).anchors(0..9)).contains("anchor"));
    assert!(err(&z, m, d, &NtXentConfig::new(0.1).mean_over(0)).contains("mean_over"));
    // Wrong lengths.
    assert!(matches!(
        nt_xent(&z[1..], m, d, &NtXentConfig::new(0.1), None),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut short = vec![0.0; m * d - 1];
    assert!(matches!(
        nt_xent(&z, m, d, &NtXentConfig::new(0.1), Some(&mut short)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        nt_xent(&z, m, usize::MAX, &NtXentConfig::new(0.1), None),
        Err(Error::InvalidArgument { .. })
    ));
}
