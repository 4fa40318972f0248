//! L-BFGS (Nocedal 1980; Liu and Nocedal 1989): a full-batch, limited-memory quasi-Newton
//! minimizer of a smooth function given as a closure `objective(x, grad) -> value`.
//!
//! - The search direction is `-H g` by the two-loop recursion over the last
//!   [`LbfgsConfig::history`] pairs `(s, y)`, the initial matrix scaled by
//!   `gamma = s'y / y'y` of the newest pair; a pair enters the history only when
//!   `s'y > 1e-12 y'y`. A direction that is not a descent direction restarts from steepest
//!   descent, with an empty history.
//! - The line search satisfies the strong Wolfe conditions (`c1 = 1e-4`, `c2 = 0.9`):
//!   bracketing (the step grows by 2.5), then zoom with safeguarded cubic interpolation
//!   (Nocedal and Wright, algorithms 3.5 and 3.6), at most 40 evaluations; failing that it
//!   takes the best point with sufficient decrease. The first step after a start or a restart
//!   is `min(1, 1 / |d|_inf)`, later ones 1. A line search that finds no decrease clears the
//!   history and retries from steepest descent, or stops when the history was already empty.
//! - It stops when the largest gradient component is at most [`LbfgsConfig::tol`], when the
//!   objective stops decreasing (relative change below 1e-12), or after
//!   [`LbfgsConfig::max_iter`] iterations.
//!
//! The state is `f64`; the minimizer knows nothing of the objective beyond its values and
//! gradients, and is deterministic when the objective is.

use crate::error::{Error, Result};

const OP: &str = "lbfgs";

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

/// Settings of [`minimize`].
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsConfig {
    /// At most this many iterations (accepted steps).
    pub max_iter: usize,
    /// Converged when the largest absolute gradient component is at most `tol`.
    pub tol: f64,
    /// The number of `(s, y)` pairs kept.
    pub history: usize,
}

impl LbfgsConfig {
    fn check(&self) -> Result<()> {
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(invalid(format!(
                "tol must be finite and >= 0, got {}",
                self.tol
            )));
        }
        if self.history == 0 {
            return Err(invalid("history must be at least 1".into()));
        }
        Ok(())
    }
}

/// How a minimization ended.
#[derive(Clone, Debug, PartialEq)]
pub struct FitInfo {
    /// L-BFGS iterations (accepted steps).
    pub iterations: usize,
    /// Objective and gradient evaluations, line searches included.
    pub evaluations: usize,
    /// The objective at the solution.
    pub loss: f64,
    /// The largest absolute gradient component at the solution.
    pub grad_norm: f64,
    /// True when `grad_norm <= tol`.
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// A point of the line search: step, objective, directional derivative, and the point's
/// parameters and gradient.
struct Point {
    alpha: f64,
    f: f64,
    dg: f64,
    theta: Vec<f64>,
    grad: Vec<f64>,
}

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LS: usize = 40;

/// Evaluates the objective at `theta0 + alpha * d`.
fn eval_at<F>(eval: &mut F, theta0: &[f64], d: &[f64], alpha: f64) -> Result<Point>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
{
    let theta: Vec<f64> = theta0.iter().zip(d).map(|(t, v)| t + alpha * v).collect();
    let mut grad = vec![0.0; theta.len()];
    let f = eval(&theta, &mut grad)?;
    let dg = if f.is_finite() {
        dot(&grad, d)
    } else {
        f64::NAN
    };
    Ok(Point {
        alpha,
        f,
        dg,
        theta,
        grad,
    })
}

/// The minimizer of the cubic through `(a, fa, da)` and `(b, fb, db)`, kept inside the middle
/// 80% of the interval; bisection when the cubic has no usable minimum.
fn cubic_step(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> f64 {
    let (lo, hi) = (a.min(b), a.max(b));
    let width = hi - lo;
    let mid = 0.5 * (a + b);
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    if !disc.is_finite() || disc < 0.0 || !fb.is_finite() || !db.is_finite() {
        return mid;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let denom = db - da + 2.0 * d2;
    if denom == 0.0 || !denom.is_finite() {
        return mid;
    }
    let t = b - (b - a) * (db + d2 - d1) / denom;
    if !t.is_finite() {
        return mid;
    }
    t.clamp(lo + 0.1 * width, hi - 0.1 * width)
}

/// A step along `d` from `theta0` (objective `f0`, slope `dg0 < 0`) satisfying the strong
/// Wolfe conditions, or failing that the best point with sufficient decrease; `None` when
/// no step decreases the objective.
fn line_search<F>(
    eval: &mut F,
    theta0: &[f64],
    f0: f64,
    dg0: f64,
    d: &[f64],
    alpha0: f64,
) -> Result<Option<Point>>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
{
    let armijo = |p: &Point| p.f.is_finite() && p.f <= f0 + C1 * p.alpha * dg0;
    let wolfe = |p: &Point| p.dg.abs() <= -C2 * dg0;
    let mut prev = Point {
        alpha: 0.0,
        f: f0,
        dg: dg0,
        theta: Vec::new(),
        grad: Vec::new(),
    };
    let mut alpha = alpha0;
    let mut evals = 0;
    // Bracketing.
    let (mut lo, mut hi) = loop {
        let p = eval_at(eval, theta0, d, alpha)?;
        evals += 1;
        if !armijo(&p) || (prev.alpha > 0.0 && p.f >= prev.f) {
            break (prev, p);
        }
        if wolfe(&p) {
            return Ok(Some(p));
        }
        if p.dg >= 0.0 {
            break (p, prev);
        }
        if evals >= MAX_LS {
            return Ok(Some(p));
        }
        alpha = p.alpha * 2.5;
        prev = p;
    };
    // Zoom: `lo` satisfies sufficient decrease (or is the start), the minimizer lies
    // between `lo` and `hi`.
    while evals < MAX_LS {
        let a = if hi.f.is_finite() {
            cubic_step(lo.alpha, lo.f, lo.dg, hi.alpha, hi.f, hi.dg)
        } else {
            // An overflow at `hi`: shrink towards `lo`.
            lo.alpha + 0.1 * (hi.alpha - lo.alpha)
        };
        if (a - lo.alpha).abs() <= 1e-16 * a.abs().max(1e-300) {
            break;
        }
        let p = eval_at(eval, theta0, d, a)?;
        evals += 1;
        if !armijo(&p) || p.f >= lo.f {
            hi = p;
        } else {
            if wolfe(&p) {
                return Ok(Some(p));
            }
            if p.dg * (hi.alpha - lo.alpha) >= 0.0 {
                hi = lo;
            }
            lo = p;
        }
        if (hi.alpha - lo.alpha).abs() <= 1e-14 * lo.alpha.max(hi.alpha) {
            break;
        }
    }
    Ok(if lo.alpha > 0.0 && lo.f < f0 {
        Some(lo)
    } else {
        None
    })
}

/// Minimizes `objective` from the starting point `theta` (overwritten with the solution) by
/// L-BFGS with the strong-Wolfe line search of this module; `objective(x, grad)` returns
/// the value at `x` and writes the gradient into `grad` (as long as `x`), and may return
/// `Ok(f64::INFINITY)` where it overflows (a line search then steps back). Deterministic
/// when `objective` is.
///
/// # Errors
/// [`Error::InvalidArgument`] when `cfg.history` is 0, `cfg.tol` is negative or not finite,
/// or the objective is not finite at the starting point; any error of `objective`.
pub fn minimize<F>(mut objective: F, theta: &mut Vec<f64>, cfg: &LbfgsConfig) -> Result<FitInfo>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
{
    cfg.check()?;
    let mut evaluations = 0;
    let mut eval = |x: &[f64], grad: &mut [f64]| {
        evaluations += 1;
        objective(x, grad)
    };
    let np = theta.len();
    let mut grad = vec![0.0; np];
    let mut f = eval(theta, &mut grad)?;
    if !f.is_finite() {
        return Err(invalid(
            "the objective is not finite at the starting point".into(),
        ));
    }
    let m = cfg.history;
    let mut s_hist: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut y_hist: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut rho: Vec<f64> = Vec::with_capacity(m);
    let mut alpha_buf = vec![0.0; m];
    let mut d = vec![0.0; np];
    let mut iterations = 0;
    let mut gnorm = inf_norm(&grad);
    while gnorm > cfg.tol && iterations < cfg.max_iter {
        // d = -H g by the two-loop recursion.
        for (di, gi) in d.iter_mut().zip(&grad) {
            *di = -gi;
        }
        let k = s_hist.len();
        for j in (0..k).rev() {
            let a = rho[j] * dot(&s_hist[j], &d);
            alpha_buf[j] = a;
            for (di, yi) in d.iter_mut().zip(&y_hist[j]) {
                *di -= a * yi;
            }
        }
        if k > 0 {
            let gamma = dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1]);
            d.iter_mut().for_each(|v| *v *= gamma);
        }
        for j in 0..k {
            let b = rho[j] * dot(&y_hist[j], &d);
            for (di, si) in d.iter_mut().zip(&s_hist[j]) {
                *di += (alpha_buf[j] - b) * si;
            }
        }
        let mut dg0 = dot(&grad, &d);
        if !(dg0 < 0.0 && dg0.is_finite()) {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            for (di, gi) in d.iter_mut().zip(&grad) {
                *di = -gi;
            }
            dg0 = dot(&grad, &d);
        }
        let alpha0 = if s_hist.is_empty() {
            (1.0 / inf_norm(&d)).min(1.0)
        } else {
            1.0
        };
        let step = match line_search(&mut eval, theta, f, dg0, &d, alpha0)? {
            Some(p) => p,
            None if !s_hist.is_empty() => {
                s_hist.clear();
                y_hist.clear();
                rho.clear();
                continue;
            }
            None => break,
        };
        iterations += 1;
        let s: Vec<f64> = step
            .theta
            .iter()
            .zip(theta.iter())
            .map(|(a, b)| a - b)
            .collect();
        let y: Vec<f64> = step.grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let yy = dot(&y, &y);
        let f_old = f;
        *theta = step.theta;
        grad = step.grad;
        f = step.f;
        gnorm = inf_norm(&grad);
        if sy > 1e-12 * yy && yy > 0.0 {
            if s_hist.len() == m {
                s_hist.remove(0);
                y_hist.remove(0);
                rho.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho.push(1.0 / sy);
        }
        if (f_old - f) <= 1e-12 * f_old.abs().max(f.abs()).max(1.0) {
            break;
        }
    }
    Ok(FitInfo {
        iterations,
        evaluations,
        loss: f,
        grad_norm: gnorm,
        converged: gnorm <= cfg.tol,
    })
}
