//! GEMM against the f64 reference: random shapes that include the tile edges, every layout,
//! transposes, alpha/beta in {0, 1, other}, NaN-poisoned C when beta = 0, guard memory around
//! C, epilogues, pluggable packing, thread-count invariance and the error paths.
//!
//! `PROPTEST_CASES=2000 cargo test --release --test gemm` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::gemm::{
    gemm, gemm_packed, tile_shape, Epilogue, Fused, GemmParams, MatMut, MatRef, PackB, Transpose,
};
use selfsup::kernels::reference::{gemm_f64, gemm_tolerance};
use selfsup::kernels::{dispatch, isa, Isa};
use selfsup::Error;
use std::sync::atomic::{AtomicU32, Ordering};

const GUARD: f32 = 12345.5;

/// How an operand is stored.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with `pad` extra elements per row.
    Padded(usize),
    /// Both strides above one: element (i, j) at i*rs + j*cs with cs = 2 or 3.
    Strided(usize),
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::ColMajor),
        (1usize..9).prop_map(Layout::Padded),
        (2usize..4).prop_map(Layout::Strided),
    ]
}

/// Deterministic values in [-1, 1) with some exact zeros and a few larger magnitudes.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::values_with_outliers(len, seed, 64.0)
}

/// Stores a logical `rows x cols` matrix (value `v(i, j)`) in `layout`; returns the buffer
/// and the strides.
fn store(rows: usize, cols: usize, layout: Layout, v: &[f32]) -> (Vec<f32>, usize, usize) {
    let (rs, cs) = match layout {
        Layout::RowMajor => (cols, 1),
        Layout::ColMajor => (1, rows),
        Layout::Padded(p) => (cols + p, 1),
        Layout::Strided(c) => (cols * c + 1, c),
    };
    let len = if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    };
    let mut buf = vec![f32::NAN; len];
    for i in 0..rows {
        for j in 0..cols {
            buf[i * rs + j * cs] = v[i * cols + j];
        }
    }
    (buf, rs, cs)
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: f32,
    seed: u64,
}

/// Runs one case and compares every element with the f64 reference; checks the guard
/// elements around and between C's elements are untouched.
fn check(case: &Case) -> Result<(), TestCaseError> {
    let Case {
        m,
        n,
        k,
        la,
        lb,
        lc,
        ta,
        tb,
        alpha,
        beta,
        seed,
    } = case.clone();
    // Logical op(A) is m x k; stored A is k x m when transposed.
    let (ar, ac) = if ta { (k, m) } else { (m, k) };
    let (br, bc) = if tb { (n, k) } else { (k, n) };
    let av = fill(ar * ac, seed);
    let bv = fill(br * bc, seed ^ 0xABCD);
    let c0 = fill(m * n, seed ^ 0x1234);
    let (abuf, ars, acs) = store(ar, ac, la, &av);
    let (bbuf, brs, bcs) = store(br, bc, lb, &bv);
    let a = MatRef::new(&abuf, ar, ac, ars, acs).unwrap();
    let b = MatRef::new(&bbuf, br, bc, brs, bcs).unwrap();

    // C lives inside a larger buffer: a guard prefix and suffix, and guard gaps between
    // its elements when the layout has them.
    let (cstore, crs, ccs) = store(m, n, lc, &c0);
    let prefix = 37;
    let mut cbuf = vec![GUARD; prefix + cstore.len() + 41];
    let mut is_elem = vec![false; cbuf.len()];
    for i in 0..m {
        for j in 0..n {
            let at = prefix + i * crs + j * ccs;
            // beta = 0: C must not be read, so poison it.
            cbuf[at] = if beta == 0.0 { f32::NAN } else { c0[i * n + j] };
            is_elem[at] = true;
        }
    }
    let params = GemmParams::new()
        .alpha(alpha)
        .beta(beta)
        .trans_a(if ta { Transpose::Yes } else { Transpose::No })
        .trans_b(if tb { Transpose::Yes } else { Transpose::No });
    {
        let c = MatMut::new(&mut cbuf[prefix..], m, n, crs, ccs).unwrap();
        gemm(&params, a, b, c).unwrap();
    }
    let opa = if ta { a.t() } else { a };
    let opb = if tb { b.t() } else { b };
    let want = gemm_f64(alpha, opa, opb, beta, &c0);
    let tol = gemm_tolerance(alpha, opa, opb, beta, &c0);
    let mut worst = (0.0f64, 0usize, 0usize);
    for i in 0..m {
        for j in 0..n {
            let got = f64::from(cbuf[prefix + i * crs + j * ccs]);
            let err = (got - want[i * n + j]).abs();
            prop_assert!(
                got.is_finite() && err <= tol[i * n + j],
                "C[{i},{j}] = {got}, want {} (tol {:e}) in {case:?}",
                want[i * n + j],
                tol[i * n + j]
            );
            if err / tol[i * n + j] > worst.0 {
                worst = (err / tol[i * n + j], i, j);
            }
        }
    }
    for (at, (&x, &e)) in cbuf.iter().zip(&is_elem).enumerate() {
        if !e {
            prop_assert!(
                x.to_bits() == GUARD.to_bits(),
                "guard element {at} overwritten: {x}"
            );
        }
    }
    Ok(())
}

/// Sizes that sit on the tile edges of the kernel in use, plus primes.
fn edge_sizes() -> Vec<usize> {
    common::tile_edge_sizes(tile_shape(), &[7, 13, 31, 63, 65, 127, 257])
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![prop::sample::select(edge_sizes()), 0usize..300]
}

fn scalar() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0f32), -2.5f32..2.5f32]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (layout(), layout(), layout()),
        (any::<bool>(), any::<bool>()),
        (scalar(), scalar()),
        any::<u64>(),
    )
        .prop_map(
            |((m, n, k), (la, lb, lc), (ta, tb), (alpha, beta), seed)| Case {
                m,
                n,
                k,
                la,
                lb,
                lc,
                ta,
                tb,
                alpha,
                beta,
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_f64_reference(c in case()) {
        check(&c)?;
    }
}

#[test]
fn fixed_edge_sweep() {
    let sizes = edge_sizes();
    let mut seed = 1;
    for &m in &sizes {
        for &n in &sizes {
            for (k, alpha, beta) in [
                (0, 1.0, 0.0),
                (1, 1.0, 1.0),
                (5, -0.5, 0.0),
                (27, 1.0, 0.75),
                (33, 0.0, 2.0),
            ] {
                if m * n * k > 300_000 {
                    continue;
                }
                seed += 1;
                let c = Case {
                    m,
                    n,
                    k,
                    la: Layout::RowMajor,
                    lb: Layout::RowMajor,
                    lc: Layout::Padded(3),
                    ta: seed % 3 == 0,
                    tb: seed % 5 == 0,
                    alpha,
                    beta,
                    seed,
                };
                check(&c).unwrap();
            }
        }
    }
}

#[test]
fn deep_and_wide_cross_every_block_boundary() {
    // k spans several KC blocks (beta handling between them), n spans several NC blocks.
    for (m, n, k) in [
        (13, 4500, 20),
        (150, 40, 700),
        (7, 9000, 3),
        (290, 170, 513),
    ] {
        for beta in [0.0, 1.0, 0.3] {
            let c = Case {
                m,
                n,
                k,
                la: Layout::ColMajor,
                lb: Layout::RowMajor,
                lc: Layout::RowMajor,
                ta: false,
                tb: false,
                alpha: 1.25,
                beta,
                seed: (m * n * k) as u64,
            };
            check(&c).unwrap();
        }
    }
}

#[test]
fn tall_row_major_a_matches_reference() {
    // Many rows per thread (each thread packs its own B) and a row-major A, packed one cache
    // line of its rows at a time: a row stride of 1024 floats (rows aligned to a line) and
    // one of 520 (rows starting mid-line), with a last partial panel and a depth tail.
    for (m, n, k) in [(1030, 70, 1024), (1100, 300, 520)] {
        for beta in [0.0, 0.5] {
            let c = Case {
                m,
                n,
                k,
                la: Layout::RowMajor,
                lb: Layout::RowMajor,
                lc: Layout::RowMajor,
                ta: false,
                tb: false,
                alpha: 0.75,
                beta,
                seed: (m + n + k) as u64,
            };
            check(&c).unwrap();
        }
    }
}

fn run_in_pool(threads: usize, m: usize, n: usize, k: usize, beta: f32) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let a = fill(m * k, 11);
    let b = fill(k * n, 12);
    let mut c = fill(m * n, 13);
    pool.install(|| {
        gemm(
            &GemmParams::new().alpha(0.7).beta(beta),
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            MatMut::row_major(&mut c, m, n).unwrap(),
        )
        .unwrap();
    });
    c.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn bit_identical_for_1_2_3_threads() {
    for (m, n, k) in [
        (300, 500, 600),
        (256, 256, 256),
        (100, 200, 400),
        (32, 5000, 300),
        (1000, 37, 520),
        (5, 4200, 27),
        (145, 33, 1),
        (1100, 300, 520),
        (1024, 64, 1024),
    ] {
        for beta in [0.0, 0.5] {
            let one = run_in_pool(1, m, n, k, beta);
            for threads in [2, 3] {
                let other = run_in_pool(threads, m, n, k, beta);
                assert!(
                    one == other,
                    "{m}x{n}x{k} beta {beta}: {threads} threads differ from 1"
                );
            }
        }
    }
}

#[test]
fn concurrent_gemms_from_many_threads_agree() {
    use rayon::prelude::*;
    let (m, n, k) = (70, 90, 300);
    let serial = run_in_pool(1, m, n, k, 0.0);
    let results: Vec<Vec<u32>> = (0..8)
        .into_par_iter()
        .map(|_| run_in_pool(2, m, n, k, 0.0))
        .collect();
    for r in results {
        assert!(r == serial);
    }
}

#[test]
fn fused_epilogue_matches_reference() {
    let (m, n, k) = (37, 53, 29);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let rs = fill(m, 3);
    let cs = fill(n, 4);
    let rb = fill(m, 5);
    let cb = fill(n, 6);
    for relu in [false, true] {
        for lc in [Layout::RowMajor, Layout::ColMajor] {
            let epi = Fused {
                row_scale: Some(&rs),
                col_scale: Some(&cs),
                row_bias: Some(&rb),
                col_bias: Some(&cb),
                relu,
            };
            let (mut cbuf, crs, ccs) = store(m, n, lc, &vec![f32::NAN; m * n]);
            gemm(
                &GemmParams::new().epilogue(&epi),
                MatRef::row_major(&a, m, k).unwrap(),
                MatRef::row_major(&b, k, n).unwrap(),
                MatMut::new(&mut cbuf, m, n, crs, ccs).unwrap(),
            )
            .unwrap();
            let ar = MatRef::row_major(&a, m, k).unwrap();
            let br = MatRef::row_major(&b, k, n).unwrap();
            let want = gemm_f64(1.0, ar, br, 0.0, &[]);
            let tol = gemm_tolerance(1.0, ar, br, 0.0, &[]);
            for i in 0..m {
                for j in 0..n {
                    let s = f64::from(rs[i]) * f64::from(cs[j]);
                    let mut w = want[i * n + j] * s + f64::from(rb[i]) + f64::from(cb[j]);
                    if relu {
                        w = w.max(0.0);
                    }
                    let got = f64::from(cbuf[i * crs + j * ccs]);
                    let t = tol[i * n + j] * s.abs() * 2.0
                        + 4.0 * f64::from(f32::EPSILON) * w.abs()
                        + 1e-6;
                    assert!((got - w).abs() <= t, "({i},{j}) got {got} want {w}");
                }
            }
        }
    }
}

/// Counts how often the epilogue touches each element.
struct Counter {
    n: usize,
    hits: Vec<AtomicU32>,
}

impl Epilogue for Counter {
    fn apply(&self, i: usize, j0: usize, row: &mut [f32]) {
        for (j, x) in row.iter_mut().enumerate() {
            self.hits[i * self.n + j0 + j].fetch_add(1, Ordering::Relaxed);
            *x += 1.0;
        }
    }
}

#[test]
fn epilogue_runs_exactly_once_per_element() {
    for (m, n, k, alpha) in [
        (41, 67, 600, 1.0),
        (8, 5000, 10, 1.0),
        (9, 9, 0, 1.0),
        (9, 9, 5, 0.0),
    ] {
        let counter = Counter {
            n,
            hits: (0..m * n).map(|_| AtomicU32::new(0)).collect(),
        };
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut c = vec![f32::NAN; m * n * 2];
        gemm(
            &GemmParams::new().alpha(alpha).epilogue(&counter),
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            MatMut::new(&mut c, m, n, 1, 2 * m).unwrap(),
        )
        .unwrap();
        for h in &counter.hits {
            assert_eq!(h.load(Ordering::Relaxed), 1);
        }
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i + j * 2 * m], alpha * k as f32 + 1.0);
            }
        }
    }
}

/// B generated on the fly, as convolution's implicit im2col will do.
struct Procedural {
    k: usize,
    n: usize,
}

impl Procedural {
    fn at(p: usize, j: usize) -> f32 {
        ((p * 31 + j * 17) % 23) as f32 / 11.0 - 1.0
    }
}

impl PackB for Procedural {
    fn depth(&self) -> usize {
        self.k
    }
    fn cols(&self) -> usize {
        self.n
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            for p in 0..kc {
                for j in 0..nr {
                    let col = q * nr + j;
                    panel[p * nr + j] = if col < w {
                        Self::at(p0 + p, j0 + col)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[test]
fn pluggable_b_packing_equals_materialized_b() {
    let (m, n, k) = (45, 333, 290);
    let a = fill(m * k, 9);
    let bm: Vec<f32> = (0..k * n).map(|x| Procedural::at(x / n, x % n)).collect();
    let mut c1 = vec![0.0f32; m * n];
    let mut c2 = vec![0.0f32; m * n];
    let ar = MatRef::row_major(&a, m, k).unwrap();
    gemm_packed(
        &GemmParams::new(),
        &ar,
        &Procedural { k, n },
        MatMut::row_major(&mut c1, m, n).unwrap(),
    )
    .unwrap();
    gemm(
        &GemmParams::new(),
        ar,
        MatRef::row_major(&bm, k, n).unwrap(),
        MatMut::row_major(&mut c2, m, n).unwrap(),
    )
    .unwrap();
    assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn bad_shapes_and_views_are_errors() {
    let v = vec![0.0f32; 64];
    let mut w = vec![0.0f32; 64];
    let a = MatRef::row_major(&v, 4, 4).unwrap();
    let b = MatRef::row_major(&v, 3, 4).unwrap();
    let err = gemm(
        &GemmParams::new(),
        a,
        b,
        MatMut::row_major(&mut w, 4, 4).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = gemm(
        &GemmParams::new(),
        a,
        a,
        MatMut::row_major(&mut w, 4, 5).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(matches!(
        MatRef::row_major(&v, 9, 9),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        MatRef::new(&v, 2, 2, usize::MAX / 2, 3),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        MatMut::new(&mut w, 4, 4, 2, 1),
        Err(Error::SelfOverlap { .. })
    ));
    let short = [1.0f32; 3];
    let epi = Fused {
        col_bias: Some(&short),
        ..Fused::default()
    };
    let err = gemm(
        &GemmParams::new().epilogue(&epi),
        a,
        a,
        MatMut::row_major(&mut w, 4, 4).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("col_bias"), "{err}");
    let err = gemm_packed(
        &GemmParams::new().trans_a(Transpose::Yes),
        &a,
        &a,
        MatMut::row_major(&mut w, 4, 4).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
}

/// CI runs the suite with the machine's best kernels (`SELFSUP_EXPECT_ISA=avx512` or
/// `avx2`), with `SELFSUP_FORCE_PORTABLE=1 SELFSUP_EXPECT_ISA=portable`, and on an AVX-512
/// machine the kernel tests with `SELFSUP_FORCE_AVX2=1 SELFSUP_EXPECT_ISA=avx2`; this fails
/// when the run did not get the kernel it asked for.
#[test]
fn the_kernel_asked_for_is_the_one_that_ran() {
    if dispatch::portable_forced() {
        assert_eq!(isa(), Isa::Portable);
    }
    match std::env::var("SELFSUP_EXPECT_ISA").as_deref() {
        Ok("avx512") => assert_eq!(isa(), Isa::Avx512, "AVX-512 was asked for but not detected"),
        Ok("avx2") => assert_eq!(
            isa(),
            Isa::Avx2Fma,
            "AVX2+FMA was asked for but not detected"
        ),
        Ok("portable") => assert_eq!(isa(), Isa::Portable),
        Ok(other) => panic!("SELFSUP_EXPECT_ISA={other}: expected avx512, avx2 or portable"),
        Err(_) => {}
    }
    let (mr, nr) = tile_shape();
    match isa() {
        Isa::Avx512 => assert_eq!((mr, nr), (12, 32)),
        Isa::Avx2Fma => assert_eq!((mr, nr), (6, 16)),
        Isa::Portable => assert_eq!((mr, nr), (6, 8)),
    }
}
