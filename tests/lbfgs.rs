//! The generic L-BFGS minimizer on its own: a convex quadratic with a known minimum, the
//! Rosenbrock function from the standard start, counters and errors.

use selfsup::eval::lbfgs::{minimize, LbfgsConfig};
use selfsup::{Error, Result};

fn cfg(tol: f64) -> LbfgsConfig {
    LbfgsConfig {
        max_iter: 1000,
        tol,
        history: 10,
    }
}

/// `f(x) = 1/2 sum_i a_i (x_i - c_i)^2 + sum_{i} b (x_i - c_i)(x_{i+1} - c_{i+1})`: a
/// positive definite quadratic (diagonal dominant) with its minimum 0 at `c`.
fn quadratic<'a>(
    a: &'a [f64],
    b: f64,
    c: &'a [f64],
) -> impl FnMut(&[f64], &mut [f64]) -> Result<f64> + 'a {
    move |x: &[f64], g: &mut [f64]| {
        let n = x.len();
        let e: Vec<f64> = x.iter().zip(c).map(|(x, c)| x - c).collect();
        let mut f = 0.0;
        for i in 0..n {
            f += 0.5 * a[i] * e[i] * e[i];
            g[i] = a[i] * e[i];
        }
        for i in 0..n - 1 {
            f += b * e[i] * e[i + 1];
            g[i] += b * e[i + 1];
            g[i + 1] += b * e[i];
        }
        Ok(f)
    }
}

#[test]
fn quadratic_reaches_its_minimum() {
    let n = 20;
    let a: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let c: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin() * 3.0).collect();
    let mut x = vec![0.0; n];
    let info = minimize(quadratic(&a, 0.4, &c), &mut x, &cfg(1e-5)).unwrap();
    assert!(info.converged, "{info:?}");
    assert!(info.grad_norm <= 1e-5);
    // The Hessian's smallest eigenvalue is at least 1 - 2 * 0.4 = 0.2, so
    // |x - c|_inf <= |g|_2 / 0.2 <= sqrt(20) * 1e-5 / 0.2 < 2.5e-4.
    for (xi, ci) in x.iter().zip(&c) {
        assert!((xi - ci).abs() < 2.5e-4, "{xi} vs {ci}");
    }
    assert!(info.loss < 1e-8, "{info:?}");
    assert!(info.iterations < 100, "{info:?}");
    assert!(info.evaluations > info.iterations);
}

#[test]
fn a_stalled_objective_stops_the_run() {
    // With `tol = 0` the gradient test never passes: the run ends when the objective's
    // relative decrease falls below 1e-12 (absolute below 1e-12 near a minimum of 0).
    let n = 20;
    let a: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let c: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).cos()).collect();
    let mut x = vec![0.0; n];
    let info = minimize(quadratic(&a, 0.4, &c), &mut x, &cfg(0.0)).unwrap();
    assert!(info.iterations < 1000 && !info.converged, "{info:?}");
    assert!(info.loss < 1e-11, "{info:?}");
    // f >= 0.1 |x - c|^2, so |x - c|_inf <= sqrt(1e-10) = 1e-5.
    for (xi, ci) in x.iter().zip(&c) {
        assert!((xi - ci).abs() < 1e-5, "{xi} vs {ci}");
    }
}

fn rosenbrock(x: &[f64], g: &mut [f64]) -> Result<f64> {
    let (a, b) = (x[0], x[1]);
    g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
    g[1] = 200.0 * (b - a * a);
    Ok((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2))
}

#[test]
fn rosenbrock_from_the_standard_start() {
    let mut x = vec![-1.2, 1.0];
    let info = minimize(rosenbrock, &mut x, &cfg(1e-8)).unwrap();
    assert!(info.loss < 1e-12, "{info:?}");
    assert!(
        (x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5,
        "{x:?} {info:?}"
    );
    assert!(info.iterations < 200, "{info:?}");
}

#[test]
fn deterministic() {
    let run = || {
        let mut x = vec![-1.2, 1.0];
        let info = minimize(rosenbrock, &mut x, &cfg(1e-8)).unwrap();
        (x, info)
    };
    let (x1, i1) = run();
    let (x2, i2) = run();
    assert_eq!(
        x1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(i1, i2);
}

#[test]
fn a_start_at_the_minimum_takes_no_step() {
    let mut x = vec![1.0, 1.0];
    let info = minimize(rosenbrock, &mut x, &cfg(1e-8)).unwrap();
    assert_eq!((info.iterations, info.evaluations), (0, 1));
    assert!(info.converged);
    assert_eq!(x, [1.0, 1.0]);
}

#[test]
fn max_iter_bounds_the_iterations() {
    let mut x = vec![-1.2, 1.0];
    let c = LbfgsConfig {
        max_iter: 3,
        ..cfg(1e-8)
    };
    let info = minimize(rosenbrock, &mut x, &c).unwrap();
    assert_eq!(info.iterations, 3);
    assert!(!info.converged);
}

#[test]
fn errors() {
    let mut x = vec![0.0, 0.0];
    for c in [
        LbfgsConfig {
            history: 0,
            ..cfg(1e-8)
        },
        LbfgsConfig {
            tol: -1.0,
            ..cfg(1e-8)
        },
        LbfgsConfig {
            tol: f64::NAN,
            ..cfg(1e-8)
        },
    ] {
        let e = minimize(rosenbrock, &mut x, &c).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    }
    let infinite = |_: &[f64], _: &mut [f64]| -> Result<f64> { Ok(f64::INFINITY) };
    let e = minimize(infinite, &mut x, &cfg(1e-8)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    // The objective's own error comes back as it is.
    let failing = |_: &[f64], _: &mut [f64]| -> Result<f64> {
        Err(Error::InvalidArgument {
            op: "test",
            msg: "no".into(),
        })
    };
    let e = minimize(failing, &mut x, &cfg(1e-8)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "test", .. }),
        "{e:?}"
    );
}
