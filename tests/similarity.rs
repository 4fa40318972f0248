//! The normalized similarity GEMM against the f64 reference: shapes with edges, both
//! scaling paths (ordinary norms, and huge or tiny norms that need the power-of-two
//! prescale), exact symmetry, thread-count invariance and errors.

mod common;

use proptest::prelude::*;
use selfsup::kernels::contrastive::ntxent::NORM_EPS;
use selfsup::kernels::contrastive::similarity::{cross_similarity, self_similarity};
use selfsup::kernels::reference::contrastive::cosine_similarity_f64;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Cosines of unit vectors have error about sqrt(d) * 2^-24 from the dot product plus a few
/// roundings of the scale; the bound is that with room, times `1/tau`.
fn assert_close(got: &[f32], want: &[f64], d: usize, tau: f32, what: &str) {
    let tol = (4.0 + d as f64).sqrt() * 4.0 * f64::from(f32::EPSILON) / f64::from(tau);
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * (1.0 + w.abs() * f64::from(tau)),
            "{what}: element {k}: {g} vs {w} (tol {tol})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(32)))]

    #[test]
    fn cross_matches_reference(
        ra in 0usize..=90,
        rb in 0usize..=90,
        d in 1usize..=64,
        tau in (-2.0f64..1.0).prop_map(|e| 10f64.powf(e) as f32),
        scale_exp in prop_oneof![Just(0i32), Just(-70), Just(70), Just(-20), Just(30)],
        seed in any::<u64>(),
    ) {
        let scale = 2f32.powi(scale_exp / 2) * 2f32.powi(scale_exp - scale_exp / 2);
        let a: Vec<f32> = values(ra * d, seed).into_iter().map(|x| x * scale).collect();
        let b = values(rb * d, seed ^ 1);
        let mut out = vec![f32::NAN; ra * rb];
        cross_similarity(&a, ra, &b, rb, d, tau, &mut out).unwrap();
        let want = cosine_similarity_f64(&to64(&a), ra, &to64(&b), rb, d, f64::from(tau), NORM_EPS);
        assert_close(&out, &want, d, tau, "cross");
    }
}

#[test]
fn self_similarity_matches_reference_and_is_symmetric() {
    // Sizes around the 256-row tile and the 32-row mirror strips.
    for &(n, d) in &[(1usize, 3usize), (31, 5), (255, 16), (257, 8), (600, 33)] {
        let z = values(n * d, n as u64);
        let mut out = vec![f32::NAN; n * n];
        self_similarity(&z, n, d, 0.5, &mut out).unwrap();
        let want = cosine_similarity_f64(&to64(&z), n, &to64(&z), n, d, 0.5, NORM_EPS);
        assert_close(&out, &want, d, 0.5, "self");
        for i in 0..n {
            for j in 0..n {
                assert_eq!(
                    out[i * n + j].to_bits(),
                    out[j * n + i].to_bits(),
                    "({i},{j})"
                );
            }
        }
        // The upper triangle is exactly what the cross product computes.
        let mut cross = vec![0.0; n * n];
        cross_similarity(&z, n, &z, n, d, 0.5, &mut cross).unwrap();
        for i in 0..n {
            for j in i..n {
                assert_eq!(out[i * n + j].to_bits(), cross[i * n + j].to_bits());
            }
        }
    }
}

#[test]
fn huge_tiny_and_zero_rows() {
    let (n, d) = (40usize, 7usize);
    let mut z = values(n * d, 3);
    z[..d].fill(0.0);
    for x in &mut z[d..2 * d] {
        *x *= 1e-30; // below eps: divided by eps, similarity near 0
    }
    for x in &mut z[2 * d..3 * d] {
        *x *= 1e37; // the squared norm overflows f32
    }
    z[3 * d] = f32::MAX;
    z[4 * d] = f32::MIN_POSITIVE / 8.0; // subnormal
    let mut out = vec![f32::NAN; n * n];
    self_similarity(&z, n, d, 0.07, &mut out).unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
    let want = cosine_similarity_f64(&to64(&z), n, &to64(&z), n, d, 0.07, NORM_EPS);
    assert_close(&out, &want, d, 0.07, "extreme");
    assert!(
        out[..n].iter().all(|&x| x == 0.0),
        "a zero row is orthogonal to all"
    );
    assert!(
        (out[2 * n + 2] - 1.0 / 0.07).abs() < 1e-4,
        "huge row with itself"
    );
}

#[test]
fn bit_identical_for_any_thread_count() {
    let (n, d) = (700usize, 20usize);
    let z = values(n * d, 9);
    let runs: Vec<Vec<u32>> = [1usize, 2, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| {
                    let mut out = vec![0.0; n * n];
                    self_similarity(&z, n, d, 0.1, &mut out).unwrap();
                    out.iter().map(|x| x.to_bits()).collect()
                })
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}

#[test]
fn invalid_input_is_an_error() {
    let z = values(12, 1);
    let mut out = vec![0.0; 16];
    for tau in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-45] {
        assert!(self_similarity(&z, 4, 3, tau, &mut out)
            .unwrap_err()
            .to_string()
            .contains("tau"));
    }
    assert!(self_similarity(&[], 4, 0, 1.0, &mut out)
        .unwrap_err()
        .to_string()
        .contains("d = 0"));
    assert!(self_similarity(&z[1..], 4, 3, 1.0, &mut out).is_err());
    assert!(self_similarity(&z, 4, 3, 1.0, &mut out[1..]).is_err());
    let mut bad = z.clone();
    bad[7] = f32::NAN;
    let e = self_similarity(&bad, 4, 3, 1.0, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 2"), "{e}");
    let e = cross_similarity(&z, 4, &bad, 4, 3, 1.0, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("B") && e.contains("row 2"), "{e}");
    assert!(cross_similarity(&z, 4, &z, 4, 3, 1.0, &mut out[..15]).is_err());
    assert!(cross_similarity(&z, usize::MAX, &z, 4, 3, 1.0, &mut out).is_err());
}
