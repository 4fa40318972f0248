//! The NT-Xent workloads of `selfsup bench` (docs/performance.md: loss over 2N rows of
//! dimension 128, tau 0.1, forward + gradient w.r.t. the rows) and their check against a
//! streamed f64 recomputation.
//!
//! The check never forms the `2N x 2N` similarity matrix: one blocked pass over the tile
//! pairs `I <= J` (the matrix is symmetric) accumulates, per row in f64, the sum of
//! `exp(s_ik - 1/tau)` over `k != i`, the positive's score and the largest negative score.
//! That gives the loss, the top-1 accuracy and every row's log-sum-exp; a gradient row then
//! costs `O(rows * d)` more. The pass is `O(rows^2 d)` flops with `O(rows * d)` memory and
//! runs on the benchmark's thread pool (about a second for N = 4096 on two cores).

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;
use selfsup::kernels::contrastive::ntxent::{NtXent, NtXentConfig, NtXentOutput, NORM_EPS};
use wide::f64x4;

use super::inputs::filled;
use super::workload::{Reference, Work, Workload};

/// The NT-Xent workloads of docs/performance.md: N images, so 2N rows (the two views of
/// each image are adjacent rows, as in the PyTorch reference of docs/performance.md) of dimension
/// [`NTXENT_D`], temperature [`NTXENT_TAU`]; one operation is the loss and its gradient with
/// respect to the rows.
pub const NTXENT_SIZES: &[(&str, usize)] = &[
    ("ntxent_n256_d128", 256),
    ("ntxent_n1024_d128", 1024),
    ("ntxent_n4096_d128", 4096),
];

/// The row dimension of the NT-Xent workloads.
pub const NTXENT_D: usize = 128;
/// The temperature of the NT-Xent workloads.
pub const NTXENT_TAU: f32 = 0.1;

/// The NT-Xent workload of `n` images (`2n` rows) of dimension `d` at temperature `tau`.
pub fn ntxent_workload(name: &'static str, n: usize, d: usize, tau: f32) -> Workload {
    Workload {
        name,
        about: format!(
            "NT-Xent, {} rows x {d} (two views of {n} images), tau {tau}: loss + gradient \
             w.r.t. the rows",
            2 * n
        ),
        // S = Z Z^T (2n x 2n x d multiply-adds), then the gradient (S' Z: as many
        // again, twice over: the rows are both sides of the product).
        work: Work::Seconds {
            flops: Some(3.0 * 2.0 * (2 * n) as f64 * (2 * n) as f64 * d as f64),
        },
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut bench = NtXentBench::new(n, d, tau, 0x5eed_0201);
            bench.run()?;
            bench.check()?;
            Ok(Box::new(move || bench.run()))
        }),
    }
}

/// Rows per block of the f64 pass: two blocks of 64 rows x 128 f64 fit in L2.
const BLOCK: usize = 64;

/// The operands of one NT-Xent operation, allocated and filled once, outside the timing.
pub struct NtXentBench {
    /// Rows: two views of each image, in the adjacent pairing (rows 2k and 2k + 1).
    m: usize,
    d: usize,
    tau: f32,
    z: Vec<f32>,
    dz: Vec<f32>,
    ws: NtXent,
    out: Option<NtXentOutput>,
}

impl NtXentBench {
    /// `n` images (`2n` rows) of dimension `d`, filled deterministically from `seed`; the
    /// gradient buffer starts as NaN, so a row the kernel does not write fails the check.
    pub fn new(n: usize, d: usize, tau: f32, seed: u64) -> Self {
        let m = 2 * n;
        Self {
            m,
            d,
            tau,
            z: filled(m * d, seed),
            dz: vec![f32::NAN; m * d],
            ws: NtXent::new(),
            out: None,
        }
    }

    /// One forward and backward pass: the loss and its gradient into `dz`.
    pub fn run(&mut self) -> Result<()> {
        let cfg = NtXentConfig::new(self.tau);
        let out = self
            .ws
            .forward_backward(&self.z, self.m, self.d, &cfg, &mut self.dz)?;
        self.out = Some(out);
        Ok(())
    }

    /// Checks the last [`run`](Self::run): the loss and the accuracy against the f64 pass,
    /// a few gradient rows (both views of an image, tile edges) against f64 gradient rows,
    /// and every gradient row for finiteness and orthogonality to its input row.
    pub fn check(&self) -> Result<()> {
        self.check_rows(&spot_rows(self.m))
    }

    fn check_rows(&self, rows: &[usize]) -> Result<()> {
        let (m, d) = (self.m, self.d);
        let Some(out) = self.out else {
            bail!("nothing to check: the operation has not run");
        };
        ensure!(
            out.loss.is_finite(),
            "NT-Xent loss is not finite: {}",
            out.loss
        );
        check_orthogonal(&self.z, &self.dz, d)?;

        let tau = f64::from(self.tau);
        let (u, inv) = normalize(&self.z, d);
        let stats = RowStats::compute(&u, m, d, tau);
        let (loss, accuracy) = stats.loss_and_accuracy();
        // The kernel sums in f32 from f32 scores; |s| <= 1/tau scales their rounding. The
        // errors seen on the canonical sizes are 50 to 1000 times below these bounds.
        let tol = 1e-6 * loss.abs() + 2e-7 * (d as f64).sqrt() / tau;
        let got = f64::from(out.loss);
        ensure!(
            (got - loss).abs() <= tol,
            "wrong NT-Xent loss: {got}, expected {loss} (within {tol:.1e})"
        );
        // Near-ties between the positive and the best negative may flip a row or two.
        let wrong = (f64::from(out.accuracy) - accuracy).abs() * m as f64;
        ensure!(
            wrong <= 2.5,
            "wrong NT-Xent accuracy: {}, expected {accuracy}",
            out.accuracy
        );

        for &r in rows {
            let want = gradient_row_f64(&u, &inv, &stats.lse, m, d, tau, r);
            let gmax = want.iter().fold(0.0f64, |a, g| a.max(g.abs()));
            let tol = 1e-6 * (d as f64).sqrt() / tau * gmax + 1e-30;
            let got = &self.dz[r * d..(r + 1) * d];
            for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let err = (f64::from(g) - w).abs();
                if err.is_nan() || err > tol {
                    bail!(
                        "wrong NT-Xent gradient: dz[{r}, {j}] = {g}, expected {w} (within {tol:.1e})"
                    );
                }
            }
        }
        Ok(())
    }
}

/// The rows whose gradient is checked: both views of the first and last image, the rows
/// around the tile edges (tiles are 64, 128 or 256 rows) and one from the middle.
fn spot_rows(m: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = [0, 1, 63, 64, 255, 256, m / 2 + 1, m - 2, m - 1]
        .into_iter()
        .filter(|&r| r < m)
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Every gradient row is finite and orthogonal to its input row (the gradient through
/// `z / |z|` has no component along `z`). `O(rows * d)`.
pub fn check_orthogonal(z: &[f32], dz: &[f32], d: usize) -> Result<()> {
    for (r, (zr, gr)) in z.chunks_exact(d).zip(dz.chunks_exact(d)).enumerate() {
        let (mut dot, mut zz, mut gg) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &g) in zr.iter().zip(gr) {
            let (a, g) = (f64::from(a), f64::from(g));
            dot += a * g;
            zz += a * a;
            gg += g * g;
        }
        ensure!(
            gg.is_finite(),
            "NT-Xent gradient row {r} is not finite (not written?)"
        );
        let bound = 1e-3 * (zz * gg).sqrt() + 1e-30;
        ensure!(
            dot.abs() <= bound,
            "NT-Xent gradient row {r} is not orthogonal to its input row: dz.z = {dot:.3e}, \
             |dz| |z| = {:.3e}",
            (zz * gg).sqrt()
        );
    }
    Ok(())
}

/// `F.normalize` in f64: the unit rows and `1 / max(|z_i|, eps)`.
fn normalize(z: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut u = Vec::with_capacity(z.len());
    let mut inv = Vec::with_capacity(z.len() / d);
    for row in z.chunks_exact(d) {
        let norm = row
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let r = 1.0 / norm.max(NORM_EPS);
        u.extend(row.iter().map(|&x| f64::from(x) * r));
        inv.push(r);
    }
    (u, inv)
}

/// `a . b` in f64 with four partial sums (so the compiler can vectorize it).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The rows `u` (`m x d`) as `m x q` vectors of four lanes, zero-padded (`q = ceil(d / 4)`).
fn pack4(u: &[f64], m: usize, d: usize) -> (Vec<f64x4>, usize) {
    let q = d.div_ceil(4);
    let mut packed = Vec::with_capacity(m * q);
    for row in u.chunks_exact(d) {
        for j in 0..q {
            let mut lanes = [0.0f64; 4];
            for (l, x) in lanes.iter_mut().enumerate() {
                *x = row.get(4 * j + l).copied().unwrap_or(0.0);
            }
            packed.push(f64x4::new(lanes));
        }
    }
    (packed, q)
}

/// The four dot products `a[r] . b[c]` of two pairs of packed rows.
#[inline]
fn dots_2x2(a: [&[f64x4]; 2], b: [&[f64x4]; 2]) -> [[f64; 2]; 2] {
    let mut acc = [[f64x4::ZERO; 2]; 2];
    for (((&a0, &a1), &b0), &b1) in a[0].iter().zip(a[1]).zip(b[0]).zip(b[1]) {
        acc[0][0] = a0.mul_add(b0, acc[0][0]);
        acc[0][1] = a0.mul_add(b1, acc[0][1]);
        acc[1][0] = a1.mul_add(b0, acc[1][0]);
        acc[1][1] = a1.mul_add(b1, acc[1][1]);
    }
    acc.map(|r| r.map(f64x4::reduce_add))
}

/// The positive of row `i` in the adjacent pairing.
fn partner(i: usize) -> usize {
    i ^ 1
}

/// Per-row f64 statistics over the full similarity matrix `s_ik = u_i . u_k / tau`.
struct RowStats {
    /// `ln sum_{k != i} exp(s_ik)`.
    lse: Vec<f64>,
    /// `s_i,partner(i)`.
    pos: Vec<f64>,
    /// `max_{k != i, partner(i)} s_ik`.
    negmax: Vec<f64>,
}

/// The partial sums of one block task, over all rows.
struct Partial {
    sum: Vec<f64>,
    pos: Vec<f64>,
    negmax: Vec<f64>,
}

impl Partial {
    fn new(m: usize) -> Self {
        Self {
            sum: vec![0.0; m],
            pos: vec![f64::NEG_INFINITY; m],
            negmax: vec![f64::NEG_INFINITY; m],
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for i in 0..self.sum.len() {
            self.sum[i] += other.sum[i];
            self.pos[i] = self.pos[i].max(other.pos[i]);
            self.negmax[i] = self.negmax[i].max(other.negmax[i]);
        }
        self
    }

    /// Adds the pair `(i, k)`, `i != k`, with score `s` to both rows.
    fn add(&mut self, i: usize, k: usize, s: f64, shift: f64) {
        let e = (s - shift).exp();
        self.sum[i] += e;
        self.sum[k] += e;
        if k == partner(i) {
            self.pos[i] = s;
            self.pos[k] = s;
        } else {
            self.negmax[i] = self.negmax[i].max(s);
            self.negmax[k] = self.negmax[k].max(s);
        }
    }
}

impl RowStats {
    /// One pass over the block pairs `I <= J` of the unit rows `u` (`m x d`, `m` even),
    /// parallel over `I` on the current rayon pool, in 2 x 2 tiles of rows.
    fn compute(u: &[f64], m: usize, d: usize, tau: f64) -> Self {
        assert!(
            m.is_multiple_of(2),
            "the adjacent pairing has an even number of rows"
        );
        // |u_i . u_k| <= 1, so every exp(s - 1/tau) is in [e^(-2/tau), 1]: no overflow, and
        // no underflow for tau above 0.003.
        let shift = 1.0 / tau;
        let (packed, q) = pack4(u, m, d);
        let row = |i: usize| &packed[i * q..(i + 1) * q];
        let blocks = m.div_ceil(BLOCK);
        let rows = |b: usize| b * BLOCK..((b + 1) * BLOCK).min(m);
        let total = (0..blocks)
            .into_par_iter()
            .fold(
                || Partial::new(m),
                |mut acc, bi| {
                    for bj in bi..blocks {
                        for i in rows(bi).step_by(2) {
                            // Rows come in pairs (blocks have an even number of rows); on the
                            // diagonal only k > i is taken.
                            let ks = if bi == bj { i } else { bj * BLOCK };
                            for k in (ks..rows(bj).end).step_by(2) {
                                let s = dots_2x2([row(i), row(i + 1)], [row(k), row(k + 1)]);
                                for (r, sr) in s.iter().enumerate() {
                                    for (c, &dot) in sr.iter().enumerate() {
                                        if k + c > i + r {
                                            acc.add(i + r, k + c, dot / tau, shift);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(|| Partial::new(m), Partial::merge);
        Self {
            lse: total.sum.iter().map(|&s| shift + s.ln()).collect(),
            pos: total.pos,
            negmax: total.negmax,
        }
    }

    /// The mean loss `lse_i - s_i+` over all rows, and the fraction of rows whose positive
    /// scores at least as high as every negative.
    fn loss_and_accuracy(&self) -> (f64, f64) {
        let m = self.lse.len() as f64;
        let loss = self
            .lse
            .iter()
            .zip(&self.pos)
            .map(|(l, p)| l - p)
            .sum::<f64>();
        let correct = self
            .pos
            .iter()
            .zip(&self.negmax)
            .filter(|(p, n)| p >= n)
            .count();
        (loss / m, correct as f64 / m)
    }
}

/// Row `r` of `dL/dz` in f64, given every row's log-sum-exp: `dL/du_r = sum_k W_rk u_k /
/// (m tau)` with `W_rk = P_rk + P_kr - 2 [k = partner(r)]`, `P_ik = exp(s_ik - lse_i)`
/// (`s` is symmetric), then through the normalization. `O(m * d)`.
fn gradient_row_f64(
    u: &[f64],
    inv: &[f64],
    lse: &[f64],
    m: usize,
    d: usize,
    tau: f64,
    r: usize,
) -> Vec<f64> {
    let ur = &u[r * d..(r + 1) * d];
    let mut du = vec![0.0f64; d];
    for k in (0..m).filter(|&k| k != r) {
        let uk = &u[k * d..(k + 1) * d];
        let s = dot(ur, uk) / tau;
        let mut w = (s - lse[r]).exp() + (s - lse[k]).exp();
        if k == partner(r) {
            w -= 2.0;
        }
        for (g, &x) in du.iter_mut().zip(uk) {
            *g += w * x;
        }
    }
    let scale = 1.0 / (m as f64 * tau);
    du.iter_mut().for_each(|g| *g *= scale);
    if inv[r] >= 1.0 / NORM_EPS {
        // A row at or below eps: F.normalize divides by eps, a constant.
        return du.iter().map(|g| g * inv[r]).collect();
    }
    let along = dot(&du, ur);
    du.iter()
        .zip(ur)
        .map(|(g, x)| (g - along * x) * inv[r])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup::kernels::reference::contrastive::nt_xent_f64;

    #[test]
    fn small_ntxent_runs_and_checks() {
        let w = ntxent_workload("t", 50, 20, 0.1);
        let mut op = w.setup(Reference::Selfsup).unwrap();
        op().unwrap();
        assert!(w.setup(Reference::Matrixmultiply).is_err());
        assert!(matches!(w.work, Work::Seconds { .. }));
    }

    #[test]
    fn streamed_f64_pass_matches_the_full_reference() {
        // 2 x 97 rows: several blocks, a ragged last one.
        let (n, d, tau) = (97, 24, 0.2f32);
        let m = 2 * n;
        let mut b = NtXentBench::new(n, d, tau, 11);
        b.run().unwrap();
        let z64: Vec<f64> = b.z.iter().map(|&x| f64::from(x)).collect();
        let partner: Vec<usize> = (0..m).map(partner).collect();
        let (loss, grad, acc) =
            nt_xent_f64(&z64, m, d, f64::from(tau), &partner, 0..m, m, NORM_EPS);
        let (u, inv) = normalize(&b.z, d);
        let stats = RowStats::compute(&u, m, d, f64::from(tau));
        let (l2, a2) = stats.loss_and_accuracy();
        assert!((loss - l2).abs() <= 1e-12 * loss.abs(), "{loss} vs {l2}");
        assert_eq!(acc, a2);
        for r in [0, 1, 63, 64, 100, m - 1] {
            let g = gradient_row_f64(&u, &inv, &stats.lse, m, d, f64::from(tau), r);
            for j in 0..d {
                let want = grad[r * d + j];
                assert!(
                    (g[j] - want).abs() <= 1e-12,
                    "row {r} col {j}: {} vs {want}",
                    g[j]
                );
            }
        }
        b.check_rows(&(0..m).collect::<Vec<_>>()).unwrap();
    }

    #[test]
    fn check_catches_wrong_results() {
        let mut b = NtXentBench::new(64, 16, 0.1, 5);
        b.run().unwrap();
        b.check().unwrap();

        let good = b.out.unwrap();
        b.out = Some(NtXentOutput {
            loss: good.loss * 1.001,
            ..good
        });
        let err = b.check().unwrap_err().to_string();
        assert!(err.contains("wrong NT-Xent loss"), "{err}");
        b.out = Some(good);

        // A gradient row scaled: still orthogonal, but wrong.
        for g in &mut b.dz[64 * 16..65 * 16] {
            *g *= 1.01;
        }
        let err = b.check().unwrap_err().to_string();
        assert!(err.contains("dz[64, "), "{err}");

        // A row left unwritten.
        b.dz[100 * 16] = f32::NAN;
        let err = b.check().unwrap_err().to_string();
        assert!(err.contains("row 100"), "{err}");
    }
}
