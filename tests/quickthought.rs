//! The Quick Thoughts objectives against the f64 references (full score matrices): random
//! shapes up to 300 x 300 x 64 over several row and column tiles, scales from 1e-3 to 1e3,
//! with and without an excluded self, neighbour targets with document boundaries and random
//! target sets; central differences of both losses; bit-identical results in rayon pools of
//! 1, 2 and 3 threads; extreme inputs (duplicate rows, zero rows, huge values); every error;
//! and no allocation once the workspace is warm.
//!
//! Most sweeps use "grid" inputs: multiples of 1/8 in [-1, 1] and power-of-two scales, whose
//! dot products (at most 64 terms of multiples of 1/64) are exact in f32. The scores are then
//! the same in the kernel and in the reference, so rankings (hits, ties) must agree exactly
//! and the tolerances only cover the exponentials and the sums. A second sweep uses arbitrary
//! floats with tolerances from the f32 error bound of the scores.
//!
//! `PROPTEST_CASES=500 cargo test --release --test quickthought` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::contrastive::quickthought::{
    qt_neighbor_targets, qt_pairwise_hits, qt_pairwise_logistic, QtBatch, QtInBatch, QtStats,
};
use selfsup::kernels::reference::losses as r;
use selfsup::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------- allocation counting

/// Counts the allocations of the calling thread (a `const` thread-local: reading it never
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

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Multiples of 1/8 in [-1, 1].
fn grid(len: usize, seed: u64) -> Vec<f32> {
    let mut g = Rng::new(seed);
    (0..len).map(|_| (g.below(17) as f32 - 8.0) / 8.0).collect()
}

/// Arbitrary floats in [-1, 1).
fn floats(len: usize, seed: u64) -> Vec<f32> {
    let mut g = Rng::new(seed);
    (0..len).map(|_| g.unit()).collect()
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

fn invalid_msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidArgument { msg, .. }) => msg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Elementwise `|got - want| <= tol_k`, reporting the first failure.
fn close(
    what: &str,
    got: &[f32],
    want: &[f64],
    tol: impl Fn(usize) -> f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(k);
        prop_assert!(
            (f64::from(g) - w).abs() <= t,
            "{}[{}] = {} vs {} (err {:e}, tol {:e})",
            what,
            k,
            g,
            w,
            (f64::from(g) - w).abs(),
            t
        );
    }
    Ok(())
}

/// An in-batch problem with owned data.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    m: usize,
    d: usize,
    scale: f32,
    self_offset: Option<usize>,
    targets: Vec<(u32, u32)>,
    tiles: (usize, usize),
    seed: u64,
}

impl Case {
    fn batch<'a>(&'a self, f: &'a [f32], g: &'a [f32]) -> QtBatch<'a> {
        QtBatch {
            f,
            n: self.n,
            g,
            m: self.m,
            d: self.d,
            scale: self.scale,
            self_offset: self.self_offset,
            targets: &self.targets,
        }
    }
}

/// Neighbour targets (with random document starts) or random pairs, never the self, never
/// empty, no duplicates.
fn make_targets(
    n: usize,
    m: usize,
    off: Option<usize>,
    neighbours: bool,
    seed: u64,
) -> Vec<(u32, u32)> {
    let mut g = Rng::new(seed);
    let mut t = Vec::new();
    if let (true, Some(o), true) = (neighbours, off, n >= 2) {
        let starts: Vec<usize> = (1..n).filter(|_| g.below(9) == 0).collect();
        qt_neighbor_targets(n, o, &starts, &mut t).unwrap();
    } else {
        let count = 1 + g.below(2 * n + 1);
        for _ in 0..count {
            let i = g.below(n);
            let c = g.below(m);
            if off.is_some_and(|o| c == i + o) || t.contains(&(i as u32, c as u32)) {
                continue;
            }
            t.push((i as u32, c as u32));
        }
    }
    if t.is_empty() {
        let i = g.below(n);
        let c = (0..m).find(|&c| off != Some(c.wrapping_sub(i))).unwrap();
        t.push((i as u32, c as u32));
    }
    t
}

fn case_strategy(grid_scale: bool) -> impl Strategy<Value = Case> {
    let dims = (
        prop_oneof![Just(1usize), Just(2), 1usize..=300],
        prop_oneof![Just(1usize), Just(8), Just(9), Just(64), 1usize..=64],
        prop_oneof![Just(None), (0usize..=40).prop_map(Some)],
        0usize..=60,
    );
    let scale = if grid_scale {
        (-10i32..=10).prop_map(|e| 2f32.powi(e)).boxed()
    } else {
        (-3.0f32..=3.0).prop_map(|e| 10f32.powf(e)).boxed()
    };
    let tiles = prop_oneof![
        Just((64usize, 128usize)),
        (1usize..=70, 1usize..=140),
        (1usize..=8, 1usize..=8)
    ];
    (dims, scale, tiles, any::<bool>(), any::<u64>()).prop_map(
        |((n, d, off, extra), scale, tiles, neighbours, seed)| {
            let (n, off) = if neighbours && off.is_none() {
                (n, Some(0))
            } else {
                (n, off)
            };
            let m = match off {
                Some(o) => (n + o + extra).max(2),
                None => (1 + extra * 5).min(300),
            };
            // With a self, an anchor needs a second candidate: m >= 2 is guaranteed above.
            let targets = make_targets(n, m, off, neighbours, seed);
            Case {
                n,
                m,
                d,
                scale,
                self_offset: off,
                targets,
                tiles,
                seed,
            }
        },
    )
}

struct Got {
    stats: QtStats,
    df: Vec<f32>,
    dg: Vec<f32>,
}

fn run(case: &Case, f: &[f32], g: &[f32]) -> Got {
    let mut qt = QtInBatch::with_tiles(case.tiles.0, case.tiles.1).unwrap();
    let mut df = vec![f32::NAN; case.n * case.d];
    let mut dg = vec![f32::NAN; case.m * case.d];
    let stats = qt
        .forward_backward(&case.batch(f, g), &mut df, &mut dg)
        .unwrap();
    Got { stats, df, dg }
}

fn reference(case: &Case, f: &[f32], g: &[f32], tie_tol: f64) -> r::QtInBatchRef {
    r::qt_in_batch_f64(
        f,
        case.n,
        g,
        case.m,
        case.d,
        case.scale,
        case.self_offset,
        &case.targets,
        tie_tol,
    )
}

/// Relative error of the f32 softmax pieces: each lane sums at most `tc / 8` exponentials
/// per tile and the running sums are rescaled once per column tile; each exponential and its
/// argument add a few ulps; `(S - m) - ls` is rounded at up to ~100 in magnitude where the
/// probability is not negligible. The GEMMs that accumulate `dF`, `dG` add up to `m` (or
/// `n`) rounding errors of the magnitude sum.
fn softmax_rel(case: &Case) -> f64 {
    let tc = case.tiles.1.min(case.m) as f64;
    let sum_err = (tc / 8.0 + case.m.div_ceil(case.tiles.1) as f64 + 8.0) * EPS;
    sum_err + 100.0 * EPS
}

fn check_against_reference(
    case: &Case,
    f: &[f32],
    g: &[f32],
    score_err: f64,
) -> Result<(), TestCaseError> {
    let got = run(case, f, g);
    let want = reference(case, f, g, 2.0 * score_err);
    let rel = softmax_rel(case) + 4.0 * score_err;
    prop_assert_eq!(got.stats.targets, case.targets.len());
    let loss_tol = softmax_rel(case) + 2.0 * score_err + 1e-12 * want.loss.abs();
    prop_assert!(
        (got.stats.loss - want.loss).abs() <= loss_tol,
        "loss {} vs {} (tol {:e})",
        got.stats.loss,
        want.loss,
        loss_tol
    );
    let dh = (got.stats.hits as i64 - want.hits as i64).unsigned_abs() as usize;
    prop_assert!(
        dh <= want.ambiguous,
        "hits {} vs {} ({} ambiguous)",
        got.stats.hits,
        want.hits,
        want.ambiguous
    );
    let gemm_rel_f = (case.m + 8) as f64 * EPS;
    let gemm_rel_g = (case.n + 8) as f64 * EPS;
    close("dF", &got.df, &want.df, |k| {
        (rel + gemm_rel_f) * want.df_mag[k] + 1e-37
    })?;
    close("dG", &got.dg, &want.dg, |k| {
        (rel + gemm_rel_g) * want.dg_mag[k] + 1e-37
    })?;
    Ok(())
}

// ---------------------------------------------------------------- in-batch vs reference

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn in_batch_matches_reference_on_exact_scores(case in case_strategy(true)) {
        let f = grid(case.n * case.d, case.seed);
        let g = grid(case.m * case.d, case.seed ^ 0xfeed);
        let got = run(&case, &f, &g);
        let want = reference(&case, &f, &g, 0.0);
        // Exact scores: the rankings agree exactly, ties included.
        prop_assert_eq!(got.stats.hits, want.hits);
        check_against_reference(&case, &f, &g, 0.0)?;
    }

    #[test]
    fn in_batch_matches_reference_on_arbitrary_floats(case in case_strategy(false)) {
        let f = floats(case.n * case.d, case.seed);
        let g = floats(case.m * case.d, case.seed ^ 0xbeef);
        // |S_ij - exact| <= (d + 2) eps |scale| sum_p |f_ip g_jp| <= (d + 2) eps |scale| d.
        let score_err = (case.d + 2) as f64 * EPS * f64::from(case.scale) * case.d as f64;
        check_against_reference(&case, &f, &g, score_err)?;
    }

    #[test]
    fn pairwise_matches_reference(
        n_a in prop_oneof![Just(1usize), 1usize..=300],
        n_b in prop_oneof![Just(1usize), 1usize..=300],
        d in prop_oneof![Just(1usize), Just(8), Just(9), 1usize..=64],
        t in prop_oneof![Just(1usize), 1usize..=700],
        big in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // Grid values times 2^10 give margins far past where e^t overflows f32.
        let mul = if big { 1024.0 } else { 1.0 };
        let a: Vec<f32> = grid(n_a * d, seed).iter().map(|v| v * mul).collect();
        let b = grid(n_b * d, seed ^ 1);
        let mut rng = Rng::new(seed ^ 2);
        let trip: Vec<(u32, u32, u32)> = (0..t)
            .map(|_| (rng.below(n_a) as u32, rng.below(n_b) as u32, rng.below(n_b) as u32))
            .collect();
        let mut da = vec![f32::NAN; n_a * d];
        let mut db = vec![f32::NAN; n_b * d];
        let loss = qt_pairwise_logistic(&a, n_a, &b, n_b, d, &trip, &mut da, &mut db).unwrap();
        let (wl, wa, wb) = r::qt_pairwise_f64(&a, n_a, &b, n_b, d, &trip);
        // Exact margins: the loss differs only by the f64 sum order.
        prop_assert!((loss - wl).abs() <= 1e-12 * (1.0 + wl.abs()), "loss {} vs {}", loss, wl);
        // Each gradient row sums its terms in f32 (one rounding each, and the weight rounded
        // to f32): error <= (terms + 2) eps of the sum of |terms|, each term <= |x| / T.
        let (mut mag_a, mut mag_b) = (vec![0.0f64; n_a * d], vec![0.0f64; n_b * d]);
        let (mut cnt_a, mut cnt_b) = (vec![0usize; n_a], vec![0usize; n_b]);
        for &(i, p, q) in &trip {
            let (i, p, q) = (i as usize, p as usize, q as usize);
            cnt_a[i] += 1;
            cnt_b[p] += 1;
            cnt_b[q] += 1;
            for k in 0..d {
                mag_a[i * d + k] += f64::from((b[q * d + k] - b[p * d + k]).abs()) / t as f64;
                mag_b[p * d + k] += f64::from(a[i * d + k].abs()) / t as f64;
                mag_b[q * d + k] += f64::from(a[i * d + k].abs()) / t as f64;
            }
        }
        close("dA", &da, &wa, |k| (cnt_a[k / d] + 2) as f64 * EPS * mag_a[k] + 1e-37)?;
        close("dB", &db, &wb, |k| (cnt_b[k / d] + 2) as f64 * EPS * mag_b[k] + 1e-37)?;
    }
}

// ---------------------------------------------------------------- gradient checks

/// Central differences of the kernel's own in-batch loss. Inputs lie on a 1/8 grid and the
/// step is h = 1/64, so the perturbed inputs and their scores stay exact in f32; one loss
/// evaluation is then within ~1e-6 of its exact value (f32 exponentials and sums), giving at
/// most 2e-6 / (2h) = 6.4e-5 of noise in the quotient, and the truncation error
/// h^2 / 6 |L'''| is below 1e-5 at scale 1/2. Tolerance 2e-4.
#[test]
fn in_batch_gradient_matches_central_differences() {
    let (n, m, d) = (5, 7, 3);
    let f = grid(n * d, 11);
    let g = grid(m * d, 12);
    let mut targets = Vec::new();
    qt_neighbor_targets(n, 1, &[3], &mut targets).unwrap();
    targets.push((0, 6));
    let case = Case {
        n,
        m,
        d,
        scale: 0.5,
        self_offset: Some(1),
        targets,
        tiles: (2, 3),
        seed: 0,
    };
    let got = run(&case, &f, &g);
    let loss = |f: &[f32], g: &[f32]| {
        QtInBatch::with_tiles(2, 3)
            .unwrap()
            .forward(&case.batch(f, g))
            .unwrap()
            .loss
    };
    let h = 1.0f32 / 64.0;
    for (which, x, grad) in [("dF", &f, &got.df), ("dG", &g, &got.dg)] {
        for k in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[k] += h;
            xm[k] -= h;
            let (lp, lm) = if which == "dF" {
                (loss(&xp, &g), loss(&xm, &g))
            } else {
                (loss(&f, &xp), loss(&f, &xm))
            };
            let fd = (lp - lm) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(grad[k])).abs() <= 2e-4,
                "{which}[{k}] = {} vs central difference {fd}",
                grad[k]
            );
        }
    }
}

/// Central differences of the pairwise loss, with A and B the same matrix (the gradient is
/// dA + dB, as documented). Same grid argument as above; the loss is computed in f64 from
/// exact margins, so the noise is ~1e-12 / h and the tolerance is the truncation error.
#[test]
fn pairwise_gradient_matches_central_differences() {
    let (n, d) = (6, 4);
    let x = grid(n * d, 21);
    let trip = [
        (0u32, 1u32, 2u32),
        (1, 0, 5),
        (3, 4, 4),
        (5, 2, 0),
        (2, 2, 3),
    ];
    let (mut da, mut db) = (vec![0.0; n * d], vec![0.0; n * d]);
    qt_pairwise_logistic(&x, n, &x, n, d, &trip, &mut da, &mut db).unwrap();
    let h = 1.0f32 / 64.0;
    let loss = |x: &[f32]| {
        let (mut a, mut b) = (vec![0.0; n * d], vec![0.0; n * d]);
        qt_pairwise_logistic(x, n, x, n, d, &trip, &mut a, &mut b).unwrap()
    };
    for k in 0..n * d {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[k] += h;
        xm[k] -= h;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * f64::from(h));
        let g = f64::from(da[k] + db[k]);
        assert!(
            (fd - g).abs() <= 1e-4,
            "d[{k}] = {g} vs central difference {fd}"
        );
    }
}

// ---------------------------------------------------------------- determinism

#[test]
fn bit_identical_for_any_thread_count() {
    let (n, d) = (300, 32);
    let m = 300;
    let f = floats(n * d, 1);
    let g = floats(m * d, 2);
    let mut targets = Vec::new();
    qt_neighbor_targets(n, 0, &[17, 100, 101], &mut targets).unwrap();
    let case = Case {
        n,
        m,
        d,
        scale: 3.0,
        self_offset: Some(0),
        targets,
        tiles: (32, 48),
        seed: 0,
    };
    let mut rng = Rng::new(5);
    let trip: Vec<(u32, u32, u32)> = (0..900)
        .map(|_| {
            (
                rng.below(n) as u32,
                rng.below(m) as u32,
                rng.below(m) as u32,
            )
        })
        .collect();
    let go = || {
        let got = run(&case, &f, &g);
        let (mut da, mut db) = (vec![0.0; n * d], vec![0.0; m * d]);
        let pl = qt_pairwise_logistic(&f, n, &g, m, d, &trip, &mut da, &mut db).unwrap();
        (
            got.stats.loss.to_bits(),
            got.stats.hits,
            bits(&got.df),
            bits(&got.dg),
            pl.to_bits(),
            bits(&da),
            bits(&db),
        )
    };
    let one = in_pool(1, go);
    for threads in [2, 3] {
        assert!(in_pool(threads, go) == one, "{threads} threads differ");
    }
    // The default tiles, too (several row tiles of 64, three column tiles of 128).
    let case = Case {
        tiles: (64, 128),
        ..case
    };
    let go = || {
        let got = run(&case, &f, &g);
        (got.stats.loss.to_bits(), bits(&got.df), bits(&got.dg))
    };
    let one = in_pool(1, go);
    assert!(in_pool(3, go) == one);
}

#[test]
fn workspace_reuse_gives_the_same_bits() {
    assert_eq!(QtInBatch::default().tiles(), (64, 128));
    assert_eq!(QtInBatch::with_tiles(7, 9).unwrap().tiles(), (7, 9));
    let mut qt = QtInBatch::with_tiles(7, 9).unwrap();
    let mut results = Vec::new();
    for (n, m, d) in [(50, 60, 8), (20, 25, 5), (50, 60, 8)] {
        let f = floats(n * d, n as u64);
        let g = floats(m * d, m as u64);
        let mut t = Vec::new();
        qt_neighbor_targets(n, 3, &[], &mut t).unwrap();
        let b = QtBatch {
            f: &f,
            n,
            g: &g,
            m,
            d,
            scale: 2.0,
            self_offset: Some(3),
            targets: &t,
        };
        let (mut df, mut dg) = (vec![0.0; n * d], vec![0.0; m * d]);
        let st = qt.forward_backward(&b, &mut df, &mut dg).unwrap();
        let mut fresh = QtInBatch::with_tiles(7, 9).unwrap();
        let (mut df2, mut dg2) = (vec![0.0; n * d], vec![0.0; m * d]);
        let st2 = fresh.forward_backward(&b, &mut df2, &mut dg2).unwrap();
        assert_eq!(st, st2);
        assert_eq!((bits(&df), bits(&dg)), (bits(&df2), bits(&dg2)));
        // A separate backward after the forward gives the same gradients.
        qt.forward(&b).unwrap();
        qt.backward(&b, &mut df2, &mut dg2).unwrap();
        assert_eq!((bits(&df), bits(&dg)), (bits(&df2), bits(&dg2)));
        results.push((st.loss.to_bits(), bits(&df)));
    }
    assert_eq!(results[0], results[2]);
}

// ---------------------------------------------------------------- extreme inputs

#[test]
fn duplicate_and_zero_rows_tie_everywhere() {
    let (n, m, d) = (9, 12, 5);
    let row = grid(d, 3);
    let f: Vec<f32> = (0..n).flat_map(|_| row.clone()).collect();
    let g: Vec<f32> = (0..m).flat_map(|_| row.clone()).collect();
    let zeros_f = vec![0.0f32; n * d];
    let mut targets = Vec::new();
    qt_neighbor_targets(n, 2, &[4], &mut targets).unwrap();
    for (f, g) in [(&f, &g), (&zeros_f, &g), (&f, &vec![0.0; m * d])] {
        let case = Case {
            n,
            m,
            d,
            scale: 4.0,
            self_offset: Some(2),
            targets: targets.clone(),
            tiles: (4, 5),
            seed: 0,
        };
        let got = run(&case, f, g);
        // All scores equal: a uniform softmax over the m - 1 non-self candidates, and every
        // target ties for rank 1.
        assert!((got.stats.loss - ((m - 1) as f64).ln()).abs() < 1e-6);
        assert_eq!(got.stats.hits, targets.len());
        let want = reference(&case, f, g, 0.0);
        assert_eq!(want.hits, targets.len());
        for (x, w) in got
            .df
            .iter()
            .zip(&want.df)
            .chain(got.dg.iter().zip(&want.dg))
        {
            assert!((f64::from(*x) - w).abs() < 1e-6, "{x} vs {w}");
        }
    }
}

#[test]
fn huge_scores_stay_finite_and_overflow_is_an_error() {
    let (n, m, d) = (6, 6, 4);
    // Scores up to 4e30 (finite), differences of ~1e30: naive exponentials overflow.
    let f: Vec<f32> = grid(n * d, 8).iter().map(|v| v * 1e15).collect();
    let g: Vec<f32> = grid(m * d, 9).iter().map(|v| v * 1e15).collect();
    let mut targets = Vec::new();
    qt_neighbor_targets(n, 0, &[], &mut targets).unwrap();
    let case = Case {
        n,
        m,
        d,
        scale: 1.0,
        self_offset: Some(0),
        targets,
        tiles: (4, 4),
        seed: 0,
    };
    let got = run(&case, &f, &g);
    let want = reference(&case, &f, &g, 0.0);
    assert!(got.stats.loss.is_finite());
    assert!((got.stats.loss - want.loss).abs() <= 1e-6 * want.loss.abs());
    assert_eq!(got.stats.hits, want.hits);
    let pairs = got.df.iter().zip(want.df.iter().zip(&want.df_mag));
    let pairs = pairs.chain(got.dg.iter().zip(want.dg.iter().zip(&want.dg_mag)));
    for (x, (w, mag)) in pairs {
        assert!(
            x.is_finite() && (f64::from(*x) - w).abs() <= 1e-6 * mag,
            "{x} vs {w} (magnitude {mag})"
        );
    }
    // Scores past f32::MAX are an error naming the anchor row.
    let mut f2 = f.clone();
    for v in &mut f2[3 * d..4 * d] {
        *v = 1e25;
    }
    let b = case.batch(&f2, &g);
    let msg = invalid_msg(QtInBatch::new().forward(&b));
    assert!(msg.contains("anchor row 3"), "{msg}");
    // The pairwise loss with margins of 1e30: softplus is t or 0, no NaN.
    let trip = [(0u32, 1u32, 2u32), (1, 2, 3), (3, 4, 5), (4, 0, 0)];
    let (mut da, mut db) = (vec![0.0; n * d], vec![0.0; m * d]);
    let l = qt_pairwise_logistic(&f, n, &g, m, d, &trip, &mut da, &mut db).unwrap();
    let (wl, _, _) = r::qt_pairwise_f64(&f, n, &g, m, d, &trip);
    assert!(l.is_finite() && (l - wl).abs() <= 1e-6 * wl.abs());
    assert!(da.iter().chain(&db).all(|v| v.is_finite()));
    let msg = invalid_msg(qt_pairwise_logistic(
        &f2, n, &g, m, d, &trip, &mut da, &mut db,
    ));
    assert!(msg.contains("triplet 2"), "{msg}");
}

// ---------------------------------------------------------------- targets helper

#[test]
fn neighbour_targets() {
    let mut t = vec![(9, 9)];
    qt_neighbor_targets(5, 0, &[], &mut t).unwrap();
    assert_eq!(
        t,
        [
            (0, 1),
            (1, 0),
            (1, 2),
            (2, 1),
            (2, 3),
            (3, 2),
            (3, 4),
            (4, 3)
        ]
    );
    // Documents [0, 1], [2], [3, 4] at candidate offset 10.
    qt_neighbor_targets(5, 10, &[0, 2, 3], &mut t).unwrap();
    assert_eq!(t, [(0, 11), (1, 10), (3, 14), (4, 13)]);
    qt_neighbor_targets(1, 0, &[], &mut t).unwrap();
    assert!(t.is_empty());
    qt_neighbor_targets(0, 0, &[], &mut t).unwrap();
    assert!(t.is_empty());
    assert!(invalid_msg(qt_neighbor_targets(5, 0, &[3, 2], &mut t)).contains("increasing"));
    assert!(invalid_msg(qt_neighbor_targets(5, 0, &[2, 2], &mut t)).contains("increasing"));
    assert!(invalid_msg(qt_neighbor_targets(5, 0, &[5], &mut t)).contains("below"));
    assert!(invalid_msg(qt_neighbor_targets(5, u32::MAX as usize, &[], &mut t)).contains("u32"));
}

// ---------------------------------------------------------------- errors

#[test]
fn in_batch_errors() {
    let (n, m, d) = (4, 6, 3);
    let f = grid(n * d, 1);
    let g = grid(m * d, 2);
    let targets = [(0u32, 1u32), (3, 4)];
    let ok = QtBatch {
        f: &f,
        n,
        g: &g,
        m,
        d,
        scale: 1.0,
        self_offset: Some(2),
        targets: &targets,
    };
    let mut qt = QtInBatch::new();
    qt.forward(&ok).unwrap();
    let fwd = |b: QtBatch<'_>| QtInBatch::new().forward(&b);
    let has = |b: QtBatch<'_>, s: &str| {
        let msg = invalid_msg(fwd(b));
        assert!(msg.contains(s), "{msg:?} lacks {s:?}");
    };
    has(
        QtBatch {
            targets: &[(4, 0)],
            ..ok
        },
        "out of range",
    );
    has(
        QtBatch {
            targets: &[(0, 6)],
            ..ok
        },
        "out of range",
    );
    has(QtBatch { targets: &[], ..ok }, "no target");
    has(
        QtBatch {
            targets: &[(1, 3)],
            ..ok
        },
        "own sentence",
    );
    has(
        QtBatch {
            targets: &[(1, 0), (2, 1), (1, 0)],
            ..ok
        },
        "more than once",
    );
    has(
        QtBatch {
            self_offset: Some(3),
            ..ok
        },
        "self_offset",
    );
    has(
        QtBatch {
            scale: f32::NAN,
            ..ok
        },
        "scale",
    );
    has(
        QtBatch {
            scale: f32::INFINITY,
            ..ok
        },
        "scale",
    );
    has(
        QtBatch {
            f: &[],
            g: &[],
            d: 0,
            ..ok
        },
        "d = 0",
    );
    let mut bad = f.clone();
    bad[2 * d + 1] = f32::NAN;
    has(QtBatch { f: &bad, ..ok }, "F row 2");
    let mut bad = g.clone();
    bad[5 * d] = f32::NEG_INFINITY;
    has(QtBatch { g: &bad, ..ok }, "G row 5");
    assert!(matches!(
        fwd(QtBatch { f: &f[1..], ..ok }),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fwd(QtBatch { m: 5, ..ok }),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(QtInBatch::with_tiles(0, 4).is_err());
    assert!(QtInBatch::with_tiles(4, 0).is_err());

    // Backward: only after a forward of the same batch, with gradients of the right length.
    let (mut df, mut dg) = (vec![0.0; n * d], vec![0.0; m * d]);
    let msg = invalid_msg(QtInBatch::new().backward(&ok, &mut df, &mut dg));
    assert!(msg.contains("no successful forward"));
    let mut qt = QtInBatch::new();
    qt.forward(&ok).unwrap();
    let other = [(0u32, 1u32), (3, 0)];
    let msg = invalid_msg(qt.backward(
        &QtBatch {
            targets: &other,
            ..ok
        },
        &mut df,
        &mut dg,
    ));
    assert!(msg.contains("not in the forward"));
    assert!(
        invalid_msg(qt.backward(&QtBatch { scale: 2.0, ..ok }, &mut df, &mut dg))
            .contains("differs")
    );
    assert!(matches!(
        qt.backward(&ok, &mut df[1..], &mut dg),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        qt.backward(&ok, &mut df, &mut dg[..3]),
        Err(Error::ShapeMismatch { .. })
    ));
    qt.backward(&ok, &mut df, &mut dg).unwrap();
    // A failed forward forgets the previous one.
    assert!(qt.forward(&QtBatch { targets: &[], ..ok }).is_err());
    assert!(qt.backward(&ok, &mut df, &mut dg).is_err());
    assert!(matches!(
        QtInBatch::new().forward_backward(&ok, &mut df[1..], &mut dg),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn pairwise_errors() {
    let (n, d) = (3, 2);
    let a = grid(n * d, 1);
    let (mut da, mut db) = (vec![0.0; n * d], vec![0.0; n * d]);
    let t = [(0u32, 1u32, 2u32)];
    assert!(
        invalid_msg(qt_pairwise_logistic(&a, n, &a, n, d, &[], &mut da, &mut db))
            .contains("no triplets")
    );
    for bad in [(3u32, 0u32, 0u32), (0, 3, 0), (0, 0, 3)] {
        assert!(invalid_msg(qt_pairwise_logistic(
            &a,
            n,
            &a,
            n,
            d,
            &[bad],
            &mut da,
            &mut db
        ))
        .contains("out of range"));
    }
    assert!(invalid_msg(qt_pairwise_logistic(
        &[],
        n,
        &[],
        n,
        0,
        &t,
        &mut [],
        &mut []
    ))
    .contains("d = 0"));
    let mut bad = a.clone();
    bad[5] = f32::NAN;
    assert!(invalid_msg(qt_pairwise_logistic(
        &bad, n, &a, n, d, &t, &mut da, &mut db
    ))
    .contains("A row 2"));
    assert!(invalid_msg(qt_pairwise_logistic(
        &a, n, &bad, n, d, &t, &mut da, &mut db
    ))
    .contains("B row 2"));
    for (al, dal, dbl) in [(5, 6, 6), (6, 5, 6), (6, 6, 7)] {
        let (mut da, mut db) = (vec![0.0; dal], vec![0.0; dbl]);
        assert!(matches!(
            qt_pairwise_logistic(&a[..al], n, &a, n, d, &t, &mut da, &mut db),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    // pos == neg: ln 2 and no gradient.
    let l = qt_pairwise_logistic(&a, n, &a, n, d, &[(0, 1, 1)], &mut da, &mut db).unwrap();
    assert!((l - std::f64::consts::LN_2).abs() < 1e-15);
    assert!(da.iter().chain(&db).all(|&v| v == 0.0));
}

// ---------------------------------------------------------------- allocation

#[test]
fn no_allocation_once_warm() {
    in_pool(1, || {
        let (n, m, d) = (200, 200, 32);
        let f = floats(n * d, 3);
        let g = floats(m * d, 4);
        let mut targets = Vec::new();
        qt_neighbor_targets(n, 0, &[50], &mut targets).unwrap();
        let b = QtBatch {
            f: &f,
            n,
            g: &g,
            m,
            d,
            scale: 2.0,
            self_offset: Some(0),
            targets: &targets,
        };
        let mut qt = QtInBatch::with_tiles(48, 64).unwrap();
        let (mut df, mut dg) = (vec![0.0; n * d], vec![0.0; m * d]);
        let (mut da, mut db) = (vec![0.0; n * d], vec![0.0; m * d]);
        let trip: Vec<(u32, u32, u32)> = (0..n as u32)
            .map(|i| (i, (i + 1) % 200, (i * 7) % 200))
            .collect();
        let mut t2 = Vec::new();
        let mut step = || {
            qt.forward_backward(&b, &mut df, &mut dg).unwrap();
            qt_pairwise_logistic(&f, n, &g, m, d, &trip, &mut da, &mut db).unwrap();
            qt_neighbor_targets(n, 0, &[50], &mut t2).unwrap();
        };
        step();
        let before = ALLOCS.with(Cell::get);
        step();
        let count = ALLOCS.with(Cell::get) - before;
        assert_eq!(count, 0, "{count} allocations in a warm step");
    });
}

/// The pairwise accuracy count against an f64 loop, on grid values (many exact ties, which
/// count as misses) and arbitrary floats, over more triplets than one parallel chunk, with
/// 1 and 2 threads.
#[test]
fn pairwise_hits_count_the_triplets_whose_positive_scores_higher() {
    for (n, d, seed, grid_values) in [(9, 3, 1, true), (40, 17, 2, false), (300, 8, 3, true)] {
        let (a, b) = if grid_values {
            (grid(n * d, seed), grid(n * d, seed + 100))
        } else {
            (floats(n * d, seed), floats(n * d, seed + 100))
        };
        let mut g = Rng::new(seed + 7);
        let triplets: Vec<(u32, u32, u32)> = (0..3 * n)
            .map(|_| (g.below(n) as u32, g.below(n) as u32, g.below(n) as u32))
            .collect();
        let want = triplets
            .iter()
            .filter(|&&(i, p, q)| {
                let (i, p, q) = (i as usize, p as usize, q as usize);
                let margin: f64 = (0..d)
                    .map(|k| {
                        f64::from(a[i * d + k])
                            * (f64::from(b[q * d + k]) - f64::from(b[p * d + k]))
                    })
                    .sum();
                margin < 0.0
            })
            .count();
        assert!(
            want > 0 && want < triplets.len(),
            "a case with hits and misses"
        );
        for threads in [1, 2] {
            let got = in_pool(threads, || qt_pairwise_hits(&a, &b, d, &triplets));
            assert_eq!(got, want, "n {n} d {d} threads {threads}");
        }
    }
}
