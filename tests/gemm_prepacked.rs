//! The GEMM over pre-packed operands against the f64 reference: shapes on the tile edges and
//! across the depth blocks, row- and column-major sources, alpha/beta in {0, 1, other},
//! NaN-poisoned C when beta = 0, guard elements between C's rows, operands packed once and
//! reused, and the error paths.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::gemm::{
    gemm_prepacked, pack_a, pack_b, packed_a_len, packed_b_len, tile_shape, MatMut, MatRef,
    PackedA, PackedB, PanelBuf,
};
use selfsup::kernels::reference::{gemm_f64, gemm_tolerance};
use selfsup::Error;

const GUARD: f32 = 12345.5;

/// Deterministic values in [-1, 1) with some exact zeros and a few larger magnitudes.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::values_with_outliers(len, seed, 64.0)
}

/// A `rows x cols` view of `v` (row-major values) stored row- or column-major.
fn stored(v: &[f32], rows: usize, cols: usize, col_major: bool) -> Vec<f32> {
    if !col_major {
        return v.to_vec();
    }
    let mut out = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    out
}

fn view(buf: &[f32], rows: usize, cols: usize, col_major: bool) -> MatRef<'_> {
    if col_major {
        MatRef::col_major(buf, rows, cols).unwrap()
    } else {
        MatRef::row_major(buf, rows, cols).unwrap()
    }
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_cm: bool,
    b_cm: bool,
    pad: usize,
    alpha: f32,
    beta: f32,
    seed: u64,
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let Case {
        m,
        n,
        k,
        a_cm,
        b_cm,
        pad,
        alpha,
        beta,
        seed,
    } = case.clone();
    let av = fill(m * k, seed);
    let bv = fill(k * n, seed ^ 0xABCD);
    let c0 = fill(m * n, seed ^ 0x1234);
    let (abuf, bbuf) = (stored(&av, m, k, a_cm), stored(&bv, k, n, b_cm));
    let (a, b) = (view(&abuf, m, k, a_cm), view(&bbuf, k, n, b_cm));

    let mut pa = vec![f32::NAN; packed_a_len(m, k)];
    let mut pb = PanelBuf::new();
    pb.reserve(packed_b_len(k, n));
    let pa = pack_a(a, &mut pa).unwrap();
    let pb = pack_b(b, pb.get_mut(packed_b_len(k, n))).unwrap();

    // C is row-major with `pad` guard elements after each row; poisoned when beta = 0.
    let ld = n + pad;
    let mut cbuf = vec![GUARD; m * ld];
    for i in 0..m {
        for j in 0..n {
            cbuf[i * ld + j] = if beta == 0.0 { f32::NAN } else { c0[i * n + j] };
        }
    }
    let c = MatMut::new(&mut cbuf, m, n, ld, 1).unwrap();
    gemm_prepacked(alpha, pa, pb, beta, c).unwrap();

    let rm_a = MatRef::row_major(&av, m, k).unwrap();
    let rm_b = MatRef::row_major(&bv, k, n).unwrap();
    let want = gemm_f64(alpha, rm_a, rm_b, beta, &c0);
    let tol = gemm_tolerance(alpha, rm_a, rm_b, beta, &c0);
    for i in 0..m {
        for j in 0..n {
            let got = f64::from(cbuf[i * ld + j]);
            let err = (got - want[i * n + j]).abs();
            prop_assert!(
                got.is_finite() && err <= tol[i * n + j],
                "C[{i},{j}] = {got}, want {} (tol {:e}) in {case:?}",
                want[i * n + j],
                tol[i * n + j]
            );
        }
        for j in n..ld {
            prop_assert!(
                cbuf[i * ld + j].to_bits() == GUARD.to_bits(),
                "guard overwritten"
            );
        }
    }
    Ok(())
}

/// Sizes on the tile edges of the kernel in use, primes, and depths that cross the depth
/// blocks (above 240 the depth is cut in two).
fn edge_sizes() -> Vec<usize> {
    common::tile_edge_sizes(tile_shape(), &[7, 63, 64, 65, 241, 257])
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![prop::sample::select(edge_sizes()), 0usize..300]
}

fn scalar() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0f32), -2.5f32..2.5f32]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn prepacked_gemm_matches_f64_reference(
        (m, n, k) in (dim(), dim(), dim()),
        a_cm in any::<bool>(),
        b_cm in any::<bool>(),
        pad in 0usize..5,
        alpha in scalar(),
        beta in scalar(),
        seed in any::<u64>(),
    ) {
        check(&Case { m, n, k, a_cm, b_cm, pad, alpha, beta, seed })?;
    }
}

#[test]
fn fixed_edge_sweep() {
    for &m in &edge_sizes() {
        for &n in &[1usize, 31, 32, 33, 128] {
            for &k in &[0usize, 1, 13, 128, 256] {
                for beta in [0.0f32, 1.0] {
                    check(&Case {
                        m,
                        n,
                        k,
                        a_cm: m % 2 == 0,
                        b_cm: k % 2 == 1,
                        pad: 3,
                        alpha: 0.5,
                        beta,
                        seed: (m * 1000 + n * 10 + k) as u64,
                    })
                    .unwrap();
                }
            }
        }
    }
}

/// One packing serves many products, and `from_packed` views see the same panels.
#[test]
fn packed_operands_are_reusable() {
    let (m, n, k) = (37usize, 70usize, 50usize);
    let av = fill(m * k, 1);
    let bv = fill(k * n, 2);
    let a = MatRef::row_major(&av, m, k).unwrap();
    let b = MatRef::row_major(&bv, k, n).unwrap();
    let mut pa = vec![0.0; packed_a_len(m, k)];
    let mut pb = PanelBuf::new();
    pb.reserve(packed_b_len(k, n));
    pack_a(a, &mut pa).unwrap();
    pack_b(b, pb.get_mut(packed_b_len(k, n))).unwrap();
    let run = |c: &mut Vec<f32>, beta: f32| {
        let va = PackedA::from_packed(&pa, m, k).unwrap();
        let vb = PackedB::from_packed(pb.get(packed_b_len(k, n)), k, n).unwrap();
        gemm_prepacked(1.0, va, vb, beta, MatMut::row_major(c, m, n).unwrap()).unwrap();
    };
    let mut c1 = vec![f32::NAN; m * n];
    run(&mut c1, 0.0);
    let mut c2 = c1.clone();
    run(&mut c2, 1.0); // C + A B = 2 A B, exactly
    for (x, y) in c1.iter().zip(&c2) {
        assert_eq!((2.0 * x).to_bits(), y.to_bits());
    }
    let want = gemm_f64(1.0, a, b, 0.0, &[]);
    let tol = gemm_tolerance(1.0, a, b, 0.0, &[]);
    for (i, (&g, (&w, &t))) in c1.iter().zip(want.iter().zip(&tol)).enumerate() {
        assert!((f64::from(g) - w).abs() <= t, "C[{i}] = {g}, want {w}");
    }
}

#[test]
fn bad_shapes_and_buffers_are_errors() {
    let v = vec![1.0f32; 64];
    let a = MatRef::row_major(&v, 4, 4).unwrap();
    let mut pa = vec![0.0; packed_a_len(4, 4)];
    let mut pb = PanelBuf::new();
    pb.reserve(packed_b_len(4, 4) + 16);
    assert!(matches!(
        pack_a(a, &mut pa[1..]),
        Err(Error::ShapeMismatch { .. })
    ));
    // A B panel that does not start at a 64-byte boundary.
    let err = PackedB::from_packed(&pb.get(packed_b_len(4, 4) + 1)[1..], 4, 4).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let pa = pack_a(a, &mut pa).unwrap();
    let pb = pack_b(a, pb.get_mut(packed_b_len(4, 4))).unwrap();
    let mut w = vec![0.0f32; 64];
    let err =
        gemm_prepacked(1.0, pa, pb, 0.0, MatMut::row_major(&mut w, 4, 5).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(PackedA::from_packed(&[0.0; 3], 4, 4).is_err());
}
