//! The linear probe: standardized features and L2-regularized multinomial logistic regression
//! fitted to convergence with full-batch L-BFGS.
//!
//! - [`Standardizer`] learns each feature's mean and standard deviation on the train features
//!   (accumulated in `f64`; a constant feature keeps a standard deviation of 1) and applies
//!   them to train and test features alike.
//! - [`LogisticRegression::fit`] minimizes
//!   `F(W, b) = (1/n) sum_i CE(softmax(W x_i + b), y_i) + lambda/2 ||W||^2`
//!   (the bias is not regularized) with L-BFGS (two-loop recursion, a history of
//!   [`ProbeConfig::history`] pairs) and a line search satisfying the strong Wolfe conditions
//!   (bracketing, then zoom with safeguarded cubic interpolation; Nocedal and Wright,
//!   algorithms 3.5 and 3.6). It stops when the largest gradient component is at most
//!   [`ProbeConfig::tol`], when the objective stops decreasing (relative change below
//!   1e-12), or after [`ProbeConfig::max_iter`] iterations. Parameters and the L-BFGS state are
//!   `f64`; the two products that cost, `X W^T` and `(P - Y)^T X`, run on the crate's `f32`
//!   GEMM, and the loss and its gradient on the logits on
//!   [`crate::kernels::softmax::softmax_cross_entropy`]. Both are bit-identical for any
//!   thread count, and so is the fit.
//! - [`select_lambda`] picks `lambda` from a grid by accuracy on a stratified, seeded
//!   held-out part of the train set (warm-starting each fit from the previous, larger
//!   `lambda`); [`linear_probe`] standardizes, selects, refits on the whole train set and
//!   reports the test accuracy; [`subsample_labels`] draws a class-balanced fraction of the
//!   labeled examples (the 1% / 10% / 100% protocol).
//! - [`kfold_probe`] is SentEval's k-fold setting: stratified, seeded folds
//!   ([`kfold_assignments`]), each the test set of a [`linear_probe`] trained on the others;
//!   it reports the mean test accuracy.
//!
//! **Measured (2026-12-02, this 2-core machine, 2 threads).** One evaluation of the
//! objective on 16,000 x 3,072 features with 10 classes takes 70 to 78 ms (79 to 93 ms with
//! the general GEMM for both products, measured back to back: the skinny kernels save the
//! packing and its buffers, about 10%; the evaluation is bound by reading the features
//! twice). The whole [`linear_probe`] on raw pixels takes about 40 s on the built-in data
//! (20,000 x 3,072) and 85 s on Fashion-MNIST (60,000 x 784), whose ill-conditioned pixels
//! need many L-BFGS iterations; on 32- to 128-dimensional encoder features it takes 1 to
//! 13 s.
//!
//! Every failure (empty input, lengths that disagree, a label out of range, a NaN or
//! infinite feature, a bad setting) is an [`Error`], never a panic.

use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, Fused, GemmParams, MatMut, MatRef, Transpose};
use crate::kernels::skinny;
use crate::kernels::softmax::softmax_cross_entropy;
use crate::rng::{mix, shuffle};
use rayon::prelude::*;
use std::time::Instant;

const OP: &str = "probe";

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

fn mismatch(what: &'static str, got: usize, want: usize) -> Error {
    Error::ShapeMismatch {
        op: what,
        lhs: [got].into(),
        rhs: [want].into(),
    }
}

/// Checks that `x` holds `n x dim` finite values.
fn check_features(what: &'static str, x: &[f32], n: usize, dim: usize) -> Result<()> {
    if n == 0 {
        return Err(invalid(format!("{what}: no examples (n = 0)")));
    }
    if dim == 0 {
        return Err(invalid(format!("{what}: no features (dim = 0)")));
    }
    let want = n
        .checked_mul(dim)
        .ok_or_else(|| invalid(format!("{what}: n * dim overflows")))?;
    if x.len() != want {
        return Err(mismatch(what, x.len(), want));
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "{what}: feature {} of example {} is NaN or infinite",
            k % dim,
            k / dim
        )));
    }
    Ok(())
}

/// Checks that there are `n` labels, each `< classes`.
fn check_labels(what: &'static str, labels: &[u32], n: usize, classes: usize) -> Result<()> {
    if classes == 0 {
        return Err(invalid(format!("{what}: no classes (classes = 0)")));
    }
    if labels.len() != n {
        return Err(mismatch(what, labels.len(), n));
    }
    if let Some(i) = labels.iter().position(|&y| y as usize >= classes) {
        return Err(invalid(format!(
            "{what}: label {} of example {i} is out of range for {classes} classes",
            labels[i]
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Standardization.

/// Per-feature standardization `(x - mean) / std`, fitted on the train features.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// The mean of each feature.
    pub mean: Vec<f32>,
    /// The (population) standard deviation of each feature; 1 for a constant feature.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Means and standard deviations of the `n x dim` row-major features `x`, accumulated in
    /// `f64` (two passes). A feature whose standard deviation is below `1e-6 * (1 + |mean|)`
    /// counts as constant and keeps a standard deviation of 1, so it standardizes to 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `n` or `dim` is 0 or a value is NaN or infinite;
    /// [`Error::ShapeMismatch`] when `x.len() != n * dim`.
    pub fn fit(x: &[f32], n: usize, dim: usize) -> Result<Self> {
        check_features("Standardizer::fit", x, n, dim)?;
        let mut sum = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut sq = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n as f64).sqrt();
                if sd < 1e-6 * (1.0 + m.abs()) {
                    1.0
                } else {
                    sd as f32
                }
            })
            .collect();
        Ok(Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// The number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Standardizes the `n x dim` features `x` in place.
    ///
    /// # Errors
    /// As [`Standardizer::fit`], with `dim` the standardizer's.
    pub fn transform_in_place(&self, x: &mut [f32], n: usize) -> Result<()> {
        check_features("Standardizer::transform", x, n, self.dim())?;
        for row in x.chunks_exact_mut(self.dim()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }

    /// A standardized copy of the `n x dim` features `x`.
    ///
    /// # Errors
    /// As [`Standardizer::transform_in_place`].
    pub fn transform(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut out = x.to_vec();
        self.transform_in_place(&mut out, n)?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Configuration and results.

/// Settings of the fit and of the choice of `lambda`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    /// The L2 strength `lambda` of `lambda/2 ||W||^2` when no grid is searched (default 1e-4).
    pub lambda: f64,
    /// At most this many L-BFGS iterations (default 1000).
    pub max_iter: usize,
    /// Converged when the largest absolute gradient component is at most `tol`
    /// (default 1e-4, as scikit-learn's `LogisticRegression`).
    pub tol: f64,
    /// L-BFGS history: the number of `(s, y)` pairs kept (default 10).
    pub history: usize,
    /// The grid [`linear_probe`] searches; empty means "use `lambda`" (default
    /// 1e-6, 1e-5, ..., 1e-1, 1).
    pub lambda_grid: Vec<f64>,
    /// The fraction of the train set held out to score each `lambda` (default 0.2).
    pub val_fraction: f64,
    /// The seed of the held-out split (default 0).
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            lambda: 1e-4,
            max_iter: 1000,
            tol: 1e-4,
            history: 10,
            lambda_grid: vec![1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            val_fraction: 0.2,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    fn check(&self) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(invalid(format!(
                "lambda must be finite and >= 0, got {}",
                self.lambda
            )));
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(invalid(format!(
                "tol must be finite and >= 0, got {}",
                self.tol
            )));
        }
        if self.history == 0 {
            return Err(invalid("history must be at least 1".into()));
        }
        if let Some(l) = self
            .lambda_grid
            .iter()
            .find(|l| !(l.is_finite() && **l >= 0.0))
        {
            return Err(invalid(format!(
                "lambda grid values must be finite and >= 0, got {l}"
            )));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(invalid(format!(
                "val_fraction must lie in (0, 1), got {}",
                self.val_fraction
            )));
        }
        Ok(())
    }
}

/// How a fit ended.
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

/// A fitted multinomial logistic regression: `logits = W x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    /// `classes x dim`, row-major.
    pub weights: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
    /// Features per example.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// How the fit ended.
    pub info: FitInfo,
}

// ---------------------------------------------------------------------------------------
// The objective.

/// Rows per block of the evaluation (the unit of parallel work, one gradient part each). A
/// constant, as is the sub-block size, so the blocks (and the order of the sums over them)
/// never depend on the thread count.
const BLOCK_ROWS: usize = 1024;
/// Floats per sub-block of rows inside a block (256 KiB).
const SUB_BLOCK_FLOATS: usize = 1 << 16;

/// The data of one fit.
struct Problem<'a> {
    x: &'a [f32],
    n: usize,
    dim: usize,
    labels: &'a [u32],
    classes: usize,
    lambda: f64,
    w32: Vec<f32>,
    b32: Vec<f32>,
    evaluations: usize,
}

/// What one block contributes: its summed loss, `(P - Y)^T X_b` (`classes x dim`) and the
/// column sums of `P - Y`.
struct BlockPart {
    loss: f64,
    gw: Vec<f32>,
    gb: Vec<f64>,
}

impl<'a> Problem<'a> {
    fn new(
        x: &'a [f32],
        n: usize,
        dim: usize,
        labels: &'a [u32],
        classes: usize,
        lambda: f64,
    ) -> Self {
        Self {
            x,
            n,
            dim,
            labels,
            classes,
            lambda,
            w32: vec![0.0; classes * dim],
            b32: vec![0.0; classes],
            evaluations: 0,
        }
    }

    fn params(&self) -> usize {
        self.classes * self.dim + self.classes
    }

    /// Loss and gradient parts of the rows `xb` (labels `yb`), with the current `w32`, `b32`.
    /// `None` when a logit overflows. The rows go through in sub-blocks of about 256 KiB, so
    /// that [`skinny::ptx_add`] finds in cache the rows [`skinny::xwt`] just read.
    fn block(&self, xb: &[f32], yb: &[u32]) -> Result<Option<BlockPart>> {
        let (c, d) = (self.classes, self.dim);
        let sub = (SUB_BLOCK_FLOATS / d).clamp(8, BLOCK_ROWS);
        let mut z = vec![0.0f32; sub * c];
        let mut loss = 0.0f64;
        let mut gb = vec![0.0f64; c];
        let mut gw = vec![0.0f32; c * d];
        let inv_n = 1.0 / self.n as f64;
        for (xs, ys) in xb.chunks(sub * d).zip(yb.chunks(sub)) {
            let rows = ys.len();
            let z = &mut z[..rows * c];
            // logits = X_s W^T + b  (rows x c)
            skinny::xwt(xs, rows, d, &self.w32, c, &self.b32, z)?;
            for (row, &y) in z.chunks_exact_mut(c).zip(ys) {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                if !m.is_finite() || row.iter().any(|v| !v.is_finite()) {
                    return Ok(None);
                }
                let m = f64::from(m);
                let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
                let lse = m + sum.ln();
                loss += lse - f64::from(row[y as usize]);
                for (k, v) in row.iter_mut().enumerate() {
                    let p = (f64::from(*v) - lse).exp() - if k == y as usize { 1.0 } else { 0.0 };
                    gb[k] += p;
                    *v = (p * inv_n) as f32;
                }
            }
            // (P - Y)^T X_s / n  (c x d), added to the block's part.
            skinny::ptx_add(z, rows, c, xs, d, &mut gw)?;
        }
        Ok(Some(BlockPart { loss, gw, gb }))
    }

    /// The objective at `theta`, its gradient into `grad`. `Ok(inf)` when the logits
    /// overflow (a line search then steps back). Blocks of rows run in parallel; their parts
    /// are summed in block order, so the result does not depend on the thread count.
    fn eval(&mut self, theta: &[f64], grad: &mut [f64]) -> Result<f64> {
        self.evaluations += 1;
        let (c, d) = (self.classes, self.dim);
        let nw = c * d;
        for (w, t) in self.w32.iter_mut().zip(&theta[..nw]) {
            *w = *t as f32;
        }
        for (b, t) in self.b32.iter_mut().zip(&theta[nw..]) {
            *b = *t as f32;
        }
        let this = &*self;
        let parts: Vec<Result<Option<BlockPart>>> = this
            .x
            .par_chunks(BLOCK_ROWS * d)
            .zip(this.labels.par_chunks(BLOCK_ROWS))
            .map(|(xb, yb)| this.block(xb, yb))
            .collect();
        let mut loss = 0.0f64;
        let mut gb = vec![0.0f64; c];
        grad[..nw].fill(0.0);
        for part in parts {
            let Some(part) = part? else {
                return Ok(f64::INFINITY);
            };
            loss += part.loss;
            for (g, &v) in grad[..nw].iter_mut().zip(&part.gw) {
                *g += f64::from(v);
            }
            for (g, v) in gb.iter_mut().zip(&part.gb) {
                *g += v;
            }
        }
        let mut reg = 0.0f64;
        for (g, t) in grad[..nw].iter_mut().zip(&theta[..nw]) {
            *g += self.lambda * t;
            reg += t * t;
        }
        let inv_n = 1.0 / self.n as f64;
        for (g, v) in grad[nw..].iter_mut().zip(&gb) {
            *g = v * inv_n;
        }
        Ok(loss * inv_n + 0.5 * self.lambda * reg)
    }
}

fn check_problem(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    theta_len: Option<usize>,
) -> Result<()> {
    check_features("probe features", x, n, dim)?;
    check_labels("probe labels", labels, n, classes)?;
    if let Some(len) = theta_len {
        let want = classes * dim + classes;
        if len != want {
            return Err(mismatch("probe parameters", len, want));
        }
    }
    Ok(())
}

/// The objective `F(theta) = mean cross-entropy + lambda/2 ||W||^2` of the fit, with
/// `theta = [W (classes x dim, row-major), b (classes)]`, and its gradient into `grad`,
/// computed as the fit computes it (`f32` GEMMs, `f64` sums).
///
/// # Errors
/// As [`LogisticRegression::fit`]; [`Error::ShapeMismatch`] when `theta` or `grad` is not
/// `classes * dim + classes` long.
#[allow(clippy::too_many_arguments)]
pub fn objective(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    lambda: f64,
    theta: &[f64],
    grad: &mut [f64],
) -> Result<f64> {
    check_problem(x, n, dim, labels, classes, Some(theta.len()))?;
    if grad.len() != theta.len() {
        return Err(mismatch("probe gradient", grad.len(), theta.len()));
    }
    Problem::new(x, n, dim, labels, classes, lambda).eval(theta, grad)
}

/// The same objective and gradient as [`objective`], computed in `f64` throughout with plain
/// loops: the slow, obviously-correct reference for tests.
///
/// # Errors
/// As [`objective`].
#[allow(clippy::too_many_arguments)]
pub fn objective_f64(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    lambda: f64,
    theta: &[f64],
    grad: &mut [f64],
) -> Result<f64> {
    check_problem(x, n, dim, labels, classes, Some(theta.len()))?;
    if grad.len() != theta.len() {
        return Err(mismatch("probe gradient", grad.len(), theta.len()));
    }
    let (c, d) = (classes, dim);
    let nw = c * d;
    grad.fill(0.0);
    let mut loss = 0.0;
    let mut z = vec![0.0f64; c];
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (k, zk) in z.iter_mut().enumerate() {
            *zk = theta[nw + k]
                + row
                    .iter()
                    .zip(&theta[k * d..(k + 1) * d])
                    .map(|(&v, w)| f64::from(v) * w)
                    .sum::<f64>();
        }
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let lse = m + s.ln();
        let y = labels[i] as usize;
        loss += lse - z[y];
        for k in 0..c {
            let p = (z[k] - lse).exp() - if k == y { 1.0 } else { 0.0 };
            for (g, &v) in grad[k * d..(k + 1) * d].iter_mut().zip(row) {
                *g += p * f64::from(v);
            }
            grad[nw + k] += p;
        }
    }
    let inv = 1.0 / n as f64;
    let mut reg = 0.0;
    for (g, t) in grad[..nw].iter_mut().zip(&theta[..nw]) {
        *g = *g * inv + lambda * t;
        reg += t * t;
    }
    for g in &mut grad[nw..] {
        *g *= inv;
    }
    Ok(loss * inv + 0.5 * lambda * reg)
}

// ---------------------------------------------------------------------------------------
// L-BFGS with a strong-Wolfe line search.

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
fn probe_at(prob: &mut Problem<'_>, theta0: &[f64], d: &[f64], alpha: f64) -> Result<Point> {
    let theta: Vec<f64> = theta0.iter().zip(d).map(|(t, v)| t + alpha * v).collect();
    let mut grad = vec![0.0; theta.len()];
    let f = prob.eval(&theta, &mut grad)?;
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
fn line_search(
    prob: &mut Problem<'_>,
    theta0: &[f64],
    f0: f64,
    dg0: f64,
    d: &[f64],
    alpha0: f64,
) -> Result<Option<Point>> {
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
        let p = probe_at(prob, theta0, d, alpha)?;
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
        let p = probe_at(prob, theta0, d, a)?;
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

fn lbfgs(prob: &mut Problem<'_>, theta: &mut Vec<f64>, cfg: &ProbeConfig) -> Result<FitInfo> {
    let np = prob.params();
    let mut grad = vec![0.0; np];
    let mut f = prob.eval(theta, &mut grad)?;
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
        let step = match line_search(prob, theta, f, dg0, &d, alpha0)? {
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
        evaluations: prob.evaluations,
        loss: f,
        grad_norm: gnorm,
        converged: gnorm <= cfg.tol,
    })
}

impl LogisticRegression {
    /// Fits `W` and `b` on the `n x dim` row-major features `x` with `labels < classes` by
    /// minimizing the mean cross-entropy plus `cfg.lambda / 2 * ||W||^2` with L-BFGS from
    /// zero (see the module documentation). Deterministic for any thread count.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `n`, `dim` or `classes` is 0, a label is `>= classes`,
    /// a feature is NaN or infinite, or a setting of `cfg` is out of range;
    /// [`Error::ShapeMismatch`] when `x.len() != n * dim` or `labels.len() != n`.
    pub fn fit(
        x: &[f32],
        n: usize,
        dim: usize,
        labels: &[u32],
        classes: usize,
        cfg: &ProbeConfig,
    ) -> Result<Self> {
        Self::fit_from(x, n, dim, labels, classes, cfg, None)
    }

    /// As [`LogisticRegression::fit`], starting from the parameters of `init` (a warm start,
    /// for a path of `lambda` values) instead of zero.
    ///
    /// # Errors
    /// As [`LogisticRegression::fit`]; [`Error::ShapeMismatch`] when `init` has another
    /// `dim` or number of classes.
    pub fn fit_warm(
        x: &[f32],
        n: usize,
        dim: usize,
        labels: &[u32],
        classes: usize,
        cfg: &ProbeConfig,
        init: &LogisticRegression,
    ) -> Result<Self> {
        Self::fit_from(x, n, dim, labels, classes, cfg, Some(init))
    }

    fn fit_from(
        x: &[f32],
        n: usize,
        dim: usize,
        labels: &[u32],
        classes: usize,
        cfg: &ProbeConfig,
        init: Option<&LogisticRegression>,
    ) -> Result<Self> {
        cfg.check()?;
        check_problem(x, n, dim, labels, classes, None)?;
        let mut theta = vec![0.0f64; classes * dim + classes];
        if let Some(m) = init {
            if m.dim != dim || m.classes != classes {
                return Err(Error::ShapeMismatch {
                    op: "probe warm start",
                    lhs: [m.classes, m.dim].into(),
                    rhs: [classes, dim].into(),
                });
            }
            for (t, &w) in theta.iter_mut().zip(m.weights.iter().chain(&m.bias)) {
                *t = f64::from(w);
            }
        }
        let mut prob = Problem::new(x, n, dim, labels, classes, cfg.lambda);
        // L-BFGS evaluates the objective with rayon many times: on the pool, one hand-over.
        let info = crate::kernels::on_pool(|| lbfgs(&mut prob, &mut theta, cfg))?;
        let nw = classes * dim;
        Ok(Self {
            weights: theta[..nw].iter().map(|&t| t as f32).collect(),
            bias: theta[nw..].iter().map(|&t| t as f32).collect(),
            dim,
            classes,
            info,
        })
    }

    /// The `n x classes` logits `W x + b` of the `n x dim` features `x`.
    ///
    /// # Errors
    /// As [`Standardizer::fit`], with this model's `dim`.
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        check_features("probe features", x, n, self.dim)?;
        let mut out = vec![0.0f32; n * self.classes];
        let epi = Fused {
            col_bias: Some(&self.bias),
            ..Fused::default()
        };
        gemm(
            &GemmParams::new().trans_b(Transpose::Yes).epilogue(&epi),
            MatRef::row_major(x, n, self.dim)?,
            MatRef::row_major(&self.weights, self.classes, self.dim)?,
            MatMut::row_major(&mut out, n, self.classes)?,
        )?;
        Ok(out)
    }

    /// The predicted class of each of the `n` examples (the first maximum of its logits).
    ///
    /// # Errors
    /// As [`LogisticRegression::logits`].
    pub fn predict(&self, x: &[f32], n: usize) -> Result<Vec<u32>> {
        let z = self.logits(x, n)?;
        Ok(z.chunks_exact(self.classes)
            .map(|row| {
                let mut best = 0;
                for (k, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = k;
                    }
                }
                best as u32
            })
            .collect())
    }

    /// The fraction of the `n` examples whose predicted class equals the label.
    ///
    /// # Errors
    /// As [`LogisticRegression::logits`]; [`Error::ShapeMismatch`] when `labels.len() != n`.
    pub fn accuracy(&self, x: &[f32], n: usize, labels: &[u32]) -> Result<f64> {
        if labels.len() != n {
            return Err(mismatch("probe labels", labels.len(), n));
        }
        let pred = self.predict(x, n)?;
        let correct = pred.iter().zip(labels).filter(|(p, y)| p == y).count();
        Ok(correct as f64 / n as f64)
    }
}

// ---------------------------------------------------------------------------------------
// Selection of lambda, the probe, label subsets.

/// The rows `idx` of the row-major matrix `x` with `dim` columns, in that order.
///
/// # Errors
/// [`Error::InvalidArgument`] when `dim` is 0, `x.len()` is not a multiple of `dim`, or an
/// index is out of range.
pub fn select_rows(x: &[f32], dim: usize, idx: &[usize]) -> Result<Vec<f32>> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(invalid(format!(
            "select_rows: {} values do not form rows of {dim}",
            x.len()
        )));
    }
    let n = x.len() / dim;
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        if i >= n {
            return Err(invalid(format!(
                "select_rows: row {i} is out of range for {n} rows"
            )));
        }
        out.extend_from_slice(&x[i * dim..(i + 1) * dim]);
    }
    Ok(out)
}

/// A stratified split of `0..labels.len()`: `(fit, held_out)`, about `fraction` of each
/// class held out (none of a class with a single example), sorted.
fn stratified_split(
    labels: &[u32],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut fit = Vec::new();
    let mut held = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        shuffle(&mut idx, mix(seed, &[0x5e1ec7, c as u64]));
        let k = if idx.len() >= 2 {
            ((fraction * idx.len() as f64).round() as usize).clamp(1, idx.len() - 1)
        } else {
            0
        };
        held.extend_from_slice(&idx[..k]);
        fit.extend_from_slice(&idx[k..]);
    }
    fit.sort_unstable();
    held.sort_unstable();
    (fit, held)
}

/// The outcome of [`select_lambda`].
#[derive(Clone, Debug, PartialEq)]
pub struct LambdaChoice {
    /// The chosen `lambda`.
    pub lambda: f64,
    /// `(lambda, held-out accuracy)` for each grid value tried, largest first (the search
    /// may stop before the smallest); empty when nothing was held out.
    pub scores: Vec<(f64, f64)>,
    /// The fit of the chosen `lambda` on the non-held-out part (a warm start for the refit).
    pub model: Option<LogisticRegression>,
}

/// Chooses `lambda` from `cfg.lambda_grid` by accuracy on a held-out, class-stratified
/// `cfg.val_fraction` of the `n x dim` train features `x` (split seeded by `cfg.seed`);
/// ties go to the lower held-out cross-entropy. Fits run from the largest `lambda` down, each
/// warm-started from the previous one, and the search stops early once two values in a row
/// scored below the best so far. With an empty grid, or too few examples to hold any
/// out, the answer is `cfg.lambda`.
///
/// # Errors
/// As [`LogisticRegression::fit`].
pub fn select_lambda(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<LambdaChoice> {
    cfg.check()?;
    check_problem(x, n, dim, labels, classes, None)?;
    let unchanged = LambdaChoice {
        lambda: cfg.lambda,
        scores: Vec::new(),
        model: None,
    };
    if cfg.lambda_grid.is_empty() {
        return Ok(unchanged);
    }
    let (fit_idx, val_idx) = stratified_split(labels, classes, cfg.val_fraction, cfg.seed);
    if val_idx.is_empty() || fit_idx.is_empty() {
        return Ok(unchanged);
    }
    let fx = select_rows(x, dim, &fit_idx)?;
    let fy: Vec<u32> = fit_idx.iter().map(|&i| labels[i]).collect();
    let vx = select_rows(x, dim, &val_idx)?;
    let vy: Vec<u32> = val_idx.iter().map(|&i| labels[i]).collect();
    let mut grid = cfg.lambda_grid.clone();
    grid.sort_by(|a, b| b.total_cmp(a));
    grid.dedup();
    let mut scores = Vec::with_capacity(grid.len());
    let mut best: Option<(f64, f64, f64, LogisticRegression)> = None;
    let mut prev: Option<LogisticRegression> = None;
    let mut worse = 0;
    for &lambda in &grid {
        let c = ProbeConfig {
            lambda,
            ..cfg.clone()
        };
        let model =
            LogisticRegression::fit_from(&fx, fy.len(), dim, &fy, classes, &c, prev.as_ref())?;
        let z = model.logits(&vx, vy.len())?;
        let stats = softmax_cross_entropy(&z, vy.len(), classes, &vy, None)?;
        let acc = stats.correct as f64 / vy.len() as f64;
        scores.push((lambda, acc));
        let better = match &best {
            None => true,
            Some((a, l, _, _)) => acc > *a || (acc == *a && stats.loss < *l),
        };
        if better {
            best = Some((acc, stats.loss, lambda, model.clone()));
            worse = 0;
        } else {
            worse += 1;
        }
        prev = Some(model);
        // Smaller lambdas fit slower; stop once two in a row scored below the best.
        if worse >= 2 {
            break;
        }
    }
    let (_, _, lambda, model) = best.ok_or_else(|| invalid("empty lambda grid".into()))?;
    Ok(LambdaChoice {
        lambda,
        scores,
        model: Some(model),
    })
}

/// What [`linear_probe`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// Top-1 accuracy on the test features, in [0, 1].
    pub accuracy: f64,
    /// Top-1 accuracy on the train features the final model was fitted on.
    pub train_accuracy: f64,
    /// The `lambda` of the final model.
    pub lambda: f64,
    /// `(lambda, held-out accuracy)` of the search (empty without one).
    pub lambda_scores: Vec<(f64, f64)>,
    /// L-BFGS iterations of the final fit.
    pub iterations: usize,
    /// Whether the final fit reached the gradient tolerance.
    pub converged: bool,
    /// The largest absolute gradient component at the final solution.
    pub grad_norm: f64,
    /// The objective at the final solution.
    pub loss: f64,
    /// Train examples.
    pub n_train: usize,
    /// Test examples.
    pub n_test: usize,
    /// Wall-clock seconds of the whole probe (standardization, search, refit, test).
    pub seconds: f64,
}

/// The linear probe: standardizes with statistics of the train features, selects `lambda`
/// on a held-out part of the train set ([`select_lambda`]; `cfg.lambda` with an empty grid),
/// refits on the whole train set and measures top-1 accuracy on the test set. The numbers of
/// examples come from the label slices; features are row-major with `dim` columns.
///
/// # Errors
/// As [`LogisticRegression::fit`], for the train and the test data.
pub fn linear_probe(
    train_x: &[f32],
    train_labels: &[u32],
    test_x: &[f32],
    test_labels: &[u32],
    dim: usize,
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<ProbeReport> {
    let start = Instant::now();
    cfg.check()?;
    let (n_train, n_test) = (train_labels.len(), test_labels.len());
    check_problem(train_x, n_train, dim, train_labels, classes, None)?;
    check_features("probe test features", test_x, n_test, dim)?;
    check_labels("probe test labels", test_labels, n_test, classes)?;
    let st = Standardizer::fit(train_x, n_train, dim)?;
    let tx = st.transform(train_x, n_train)?;
    let ex = st.transform(test_x, n_test)?;
    let choice = select_lambda(&tx, n_train, dim, train_labels, classes, cfg)?;
    let final_cfg = ProbeConfig {
        lambda: choice.lambda,
        ..cfg.clone()
    };
    let model = LogisticRegression::fit_from(
        &tx,
        n_train,
        dim,
        train_labels,
        classes,
        &final_cfg,
        choice.model.as_ref(),
    )?;
    let accuracy = model.accuracy(&ex, n_test, test_labels)?;
    let train_accuracy = model.accuracy(&tx, n_train, train_labels)?;
    Ok(ProbeReport {
        accuracy,
        train_accuracy,
        lambda: choice.lambda,
        lambda_scores: choice.scores,
        iterations: model.info.iterations,
        converged: model.info.converged,
        grad_norm: model.info.grad_norm,
        loss: model.info.loss,
        n_train,
        n_test,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A class-balanced subset of the labeled examples: from each class, `round(fraction *
/// count)` of its examples (at least one, at most all), drawn by a seeded shuffle; the
/// indices come back sorted. `fraction = 1` returns every index. Deterministic in
/// `(labels, classes, fraction, seed)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when `fraction` is not in (0, 1], `classes` is 0 or a label is
/// `>= classes`.
pub fn subsample_labels(
    labels: &[u32],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Vec<usize>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(invalid(format!(
            "subsample_labels: the fraction must lie in (0, 1], got {fraction}"
        )));
    }
    check_labels("subsample_labels", labels, labels.len(), classes)?;
    let mut out = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        if idx.is_empty() {
            continue;
        }
        shuffle(&mut idx, mix(seed, &[0x5ab5, c as u64]));
        let k = ((fraction * idx.len() as f64).round() as usize).clamp(1, idx.len());
        out.extend_from_slice(&idx[..k]);
    }
    out.sort_unstable();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// k-fold cross-validation.

/// The fold (in `0..folds`) of each labeled example, stratified by class: each class's
/// examples are shuffled (seeded by `seed` and the class), the classes are laid end to end
/// in class order, and the sequence is dealt round-robin into the folds. Every fold thus
/// holds `n / folds` or `n / folds + 1` examples, and `count / folds` or `count / folds + 1`
/// of each class. Deterministic in `(labels, classes, folds, seed)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when `classes` is 0, a label is `>= classes`, `folds < 2` or
/// `folds > labels.len()`.
pub fn kfold_assignments(
    labels: &[u32],
    classes: usize,
    folds: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    check_labels("kfold_assignments", labels, labels.len(), classes)?;
    if folds < 2 {
        return Err(invalid(format!(
            "kfold: at least 2 folds are needed, got {folds}"
        )));
    }
    if folds > labels.len() {
        return Err(invalid(format!(
            "kfold: {folds} folds for {} examples leave a fold empty",
            labels.len()
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &y) in labels.iter().enumerate() {
        by_class[y as usize].push(i);
    }
    let mut fold = vec![0; labels.len()];
    let mut pos = 0;
    for (c, idx) in by_class.iter_mut().enumerate() {
        shuffle(idx, mix(seed, &[0xf01d, c as u64]));
        for &i in idx.iter() {
            fold[i] = pos % folds;
            pos += 1;
        }
    }
    Ok(fold)
}

/// What [`kfold_probe`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct KFoldReport {
    /// The number of folds.
    pub folds: usize,
    /// The mean over the folds of the test accuracy, in [0, 1].
    pub accuracy: f64,
    /// The test accuracy of each fold, in fold order.
    pub fold_accuracy: Vec<f64>,
    /// The `lambda` chosen in each fold.
    pub lambdas: Vec<f64>,
    /// Examples.
    pub n: usize,
    /// Classes (the `classes` argument, present or not).
    pub classes: usize,
}

/// k-fold cross-validated linear probe, as SentEval's k-fold setting (MR, CR, SUBJ, MPQA):
/// the `n` examples are split into `folds` stratified folds ([`kfold_assignments`] with
/// `seed`), and each fold in turn is the test set of a [`linear_probe`] trained on the other
/// folds: standardized with the statistics of the training part only, `lambda` chosen on a
/// held-out part of it ([`select_lambda`], split seeded by `cfg.seed`), refitted on the whole
/// training part. The report gives each fold's test accuracy and their mean. The folds run
/// one after the other (each fit is parallel inside), so at most one copy of the training
/// part is alive; the result is bit-identical for any thread count.
///
/// # Errors
/// [`Error::InvalidArgument`] when `n`, `dim` or `classes` is 0, a label is `>= classes`,
/// fewer than two classes occur, a feature is NaN or infinite, `folds < 2`, `folds > n`, or
/// a setting of `cfg` is out of range; [`Error::ShapeMismatch`] when `x.len() != n * dim` or
/// `labels.len() != n`.
#[allow(clippy::too_many_arguments)]
pub fn kfold_probe(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    folds: usize,
    seed: u64,
    cfg: &ProbeConfig,
) -> Result<KFoldReport> {
    cfg.check()?;
    check_problem(x, n, dim, labels, classes, None)?;
    let mut present = vec![false; classes];
    for &y in labels {
        present[y as usize] = true;
    }
    let distinct = present.iter().filter(|&&p| p).count();
    if distinct < 2 {
        return Err(invalid(format!(
            "kfold: the labels hold {distinct} distinct class(es), at least 2 are needed"
        )));
    }
    let fold = kfold_assignments(labels, classes, folds, seed)?;
    let mut fold_accuracy = Vec::with_capacity(folds);
    let mut lambdas = Vec::with_capacity(folds);
    for k in 0..folds {
        let (test_idx, train_idx): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold[i] == k);
        let pick = |idx: &[usize]| -> Vec<u32> { idx.iter().map(|&i| labels[i]).collect() };
        let report = linear_probe(
            &select_rows(x, dim, &train_idx)?,
            &pick(&train_idx),
            &select_rows(x, dim, &test_idx)?,
            &pick(&test_idx),
            dim,
            classes,
            cfg,
        )?;
        fold_accuracy.push(report.accuracy);
        lambdas.push(report.lambda);
    }
    let accuracy = fold_accuracy.iter().sum::<f64>() / folds as f64;
    Ok(KFoldReport {
        folds,
        accuracy,
        fold_accuracy,
        lambdas,
        n,
        classes,
    })
}
