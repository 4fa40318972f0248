//! The skinny products of the linear probe (`Z = X W^T + b`, `G += P^T X`) against f64
//! references over random shapes that cover every tile and tail (rows 0 to 40, columns 0 to
//! 90, classes 1 to 13), the accumulation into a non-zero `G`, and the length errors.
//!
//! `PROPTEST_CASES=2000 cargo test --release --test skinny` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::skinny::{ptx_add, xwt};
use selfsup::Error;

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-2.0f32..2.0, len)
}

/// `(n, d, c, x, w, bias)`.
fn problem() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>, Vec<f32>)> {
    (0usize..=40, 0usize..=90, 1usize..=13).prop_flat_map(|(n, d, c)| {
        (
            Just(n),
            Just(d),
            Just(c),
            values(n * d),
            values(c * d),
            values(c),
        )
    })
}

/// `|got - want| <= 1e-5 * (1 + scale)` with `scale` the sum of the absolute products.
fn close(got: f32, want: f64, scale: f64) -> bool {
    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + scale)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn xwt_matches_f64((n, d, c, x, w, bias) in problem()) {
        let mut z = vec![f32::NAN; n * c];
        xwt(&x, n, d, &w, c, &bias, &mut z).unwrap();
        for r in 0..n {
            for j in 0..c {
                let mut want = f64::from(bias[j]);
                let mut scale = f64::from(bias[j].abs());
                for k in 0..d {
                    let t = f64::from(x[r * d + k]) * f64::from(w[j * d + k]);
                    want += t;
                    scale += t.abs();
                }
                prop_assert!(close(z[r * c + j], want, scale),
                    "z[{r}][{j}] = {} want {want} (n {n} d {d} c {c})", z[r * c + j]);
            }
        }
    }

    #[test]
    fn ptx_add_matches_f64((n, d, c, x, p, g0) in problem().prop_flat_map(|(n, d, c, x, _, _)| {
        (Just(n), Just(d), Just(c), Just(x), values(n * c), values(c * d))
    })) {
        let mut g = g0.clone();
        ptx_add(&p, n, c, &x, d, &mut g).unwrap();
        for j in 0..c {
            for k in 0..d {
                let mut want = f64::from(g0[j * d + k]);
                let mut scale = want.abs();
                for r in 0..n {
                    let t = f64::from(p[r * c + j]) * f64::from(x[r * d + k]);
                    want += t;
                    scale += t.abs();
                }
                prop_assert!(close(g[j * d + k], want, scale),
                    "g[{j}][{k}] = {} want {want} (n {n} d {d} c {c})", g[j * d + k]);
            }
        }
    }
}

/// Splitting the rows changes nothing in `xwt` (each row is computed alone), and the same
/// call twice gives the same bits.
#[test]
fn xwt_is_per_row_and_repeatable() {
    let (n, d, c) = (7, 37, 10);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
        .collect();
    let w: Vec<f32> = (0..c * d)
        .map(|i| ((i * 104_729) % 97) as f32 / 40.0 - 1.2)
        .collect();
    let b: Vec<f32> = (0..c).map(|j| j as f32 * 0.1).collect();
    let mut all = vec![0.0; n * c];
    xwt(&x, n, d, &w, c, &b, &mut all).unwrap();
    let mut again = vec![0.0; n * c];
    xwt(&x, n, d, &w, c, &b, &mut again).unwrap();
    assert_eq!(all, again);
    for r in 0..n {
        let mut one = vec![0.0; c];
        xwt(&x[r * d..(r + 1) * d], 1, d, &w, c, &b, &mut one).unwrap();
        assert_eq!(one, all[r * c..(r + 1) * c], "row {r}");
    }
}

#[test]
fn lengths_that_disagree_are_errors() {
    let x = vec![0.0f32; 6];
    let w = vec![0.0f32; 6];
    let b = vec![0.0f32; 2];
    let mut z = vec![0.0f32; 4];
    let bad = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(bad(xwt(&x, 2, 4, &w, 2, &b, &mut z)));
    assert!(bad(xwt(&x, 2, 3, &w[..5], 2, &b, &mut z)));
    assert!(bad(xwt(&x, 2, 3, &w, 2, &b[..1], &mut z)));
    assert!(bad(xwt(&x, 2, 3, &w, 2, &b, &mut z[..3])));
    assert!(bad(xwt(&x, usize::MAX, 2, &w, 2, &b, &mut z)));
    xwt(&x, 2, 3, &w, 2, &b, &mut z).unwrap();
    let mut g = vec![0.0f32; 6];
    assert!(bad(ptx_add(&z[..3], 2, 2, &x, 3, &mut g)));
    assert!(bad(ptx_add(&z, 2, 2, &x[..5], 3, &mut g)));
    assert!(bad(ptx_add(&z, 2, 2, &x, 3, &mut g[..5])));
    ptx_add(&z, 2, 2, &x, 3, &mut g).unwrap();
}
