//! NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al., 2020),
//! forward and backward, streamed over tiles: memory is O(rows * d + tile), never rows x rows.
//!
//! # The loss
//! For `Z` (`m x d`, `m = 2N` rows, two views of each of N images) let
//! `u_i = z_i / max(|z_i|, 1e-12)` (PyTorch's `F.normalize`), `s_ij = u_i . u_j / tau` and
//! `p(i)` the row holding the other view of row i's image. Then
//!
//! `l_i = -log( exp(s_ip(i)) / sum_{k != i} exp(s_ik) ) = lse_{k != i}(s_ik) - s_ip(i)`
//!
//! and the loss is the mean of `l_i` over the anchors (by default all `m` rows). The gradient
//! is with respect to `Z`, through the normalization.
//!
//! # Pairing conventions ([`Pairing`])
//! - [`Pairing::Adjacent`]: rows `2k` and `2k + 1` are the two views of image k (the layout of
//!   the PyTorch reference of docs/performance.md: `target = arange(2N) ^ 1`).
//! - [`Pairing::Halves`]: row `k` and row `k + N` (the first N rows are the first views, the
//!   last N the second: the layout of SimCLR's reference code).
//! - [`Pairing::Explicit`]: any involution without fixed points, e.g. for gathered batches.
//!
//! # How it is computed
//! Rows are split into tiles of `T` rows (64, 128 or 256 depending on `m` only, never on
//! the thread count). `S` is symmetric, so only tile pairs `(I, J)` with `I <= J` are
//! computed, each by one GEMM `S_IJ = U_I U_J^T / tau`:
//!
//! - **Forward.** Each row keeps a running maximum `m_i` and a running sum `r_i` of
//!   `exp(s_ik - m_i)` over its *negatives* (the online log-sum-exp); the positive's score
//!   `s_i+` is kept apart. A tile `S_IJ` updates the rows of I from its rows and the rows of
//!   J from its columns. Then `t_i = m_i + ln r_i - s_i+` and `l_i = softplus(t_i)`
//!   (`= ln(1 + sum_neg exp(s_ik - s_i+))`), which stays accurate when the positive
//!   dominates: there `lse_i - s_i+` would round to 0 in f32 and lose the loss and its
//!   gradient entirely.
//! - **Backward.** With `P_ik = exp(s_ik - lse_i)` (zero on the diagonal) and
//!   `W_ik = a_i (P_ik - [k = p(i)]) + a_k (P_ki - [i = p(k)])` (`a` = 1 for anchors), which is
//!   symmetric, `dL/dU = W U / (M tau)` where M is the number the loss is averaged over. The
//!   positive entries `P_i+ - 1 = -sigmoid(t_i)` are computed from `t_i`, not by
//!   subtraction. Each tile pair recomputes `S_IJ`, forms `W_IJ` in place, and runs two
//!   GEMMs: `dU_I += W_IJ U_J` and `dU_J += W_IJ^T U_I`. Then per row
//!   `dz_i = (du_i - (du_i . u_i) u_i) / |z_i|` (or `du_i / eps` for a row whose norm is
//!   below `eps`, as PyTorch differentiates `F.normalize`).
//! - **Order.** The tile pairs are scheduled as a round-robin tournament (the circle
//!   method): in each round every tile is in at most one pair, so the rounds run in parallel
//!   with no two tasks touching the same rows, and every row receives its updates in round
//!   order. The result is therefore bit-identical for any number of threads. Work is
//!   `4 m^2 d` flops in GEMMs (one for the forward, three for the backward, over half of the
//!   tile pairs) instead of the `6 m^2 d` of the dense formulation.
//!
//! # Numerical behaviour
//! - `|s_ik| <= 1/tau`, the running maximum keeps every exponent `<= 0`, so nothing
//!   overflows for any `tau` with a finite `1/tau` (`e^(1/tau)` itself overflows `f32` below
//!   `tau = 0.0113`, which is why the naive formula fails there).
//! - The diagonal (and the positive, in the running sums) is excluded with the finite mask
//!   `f32::MIN`, not `-inf`: `exp(MIN - m)` is 0, rows that have seen only masked entries
//!   are skipped, and no `inf - inf` can arise. Duplicate rows, zero rows and huge norms are fine (norms
//!   are computed in `f64`; a zero row has `u = 0`).
//! - Invalid input is an error, checked before any work: `tau <= 0`, non-finite `tau` or
//!   `1/tau`, fewer than 2 rows, `d = 0`, a non-finite element of `Z` (the error names the
//!   row), an odd row count for the built-in pairings, a partner table that is not an
//!   involution without fixed points, wrong buffer lengths.
//!
//! # Distributed use
//! With [`NtXentConfig::anchors`] only a range of rows are anchors (the rows a process owns)
//! while all rows (the projections gathered from every process) are candidates, and
//! [`NtXentConfig::mean_over`] sets the global anchor count. The gradient then covers every
//! gathered row and must be summed over the processes (reduce-scatter) before it reaches the
//! owner of each row; the sum over processes equals the gradient of the global loss.

use crate::error::{check_len, Error, Result};
use crate::kernels::gemm::{gemm, GemmParams, MatMut, MatRef, Transpose};
use crate::kernels::simd::{self, Simd, LANES};
use crate::kernels::vmath;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

const OP: &str = "nt_xent";

/// The norm below which a row is divided by `NORM_EPS` instead of its norm (as
/// `F.normalize` does).
pub const NORM_EPS: f64 = 1e-12;

/// Marks an excluded entry (the diagonal, padding) in a score tile: finite, so that
/// `exp(MASK - max)` is 0 and no `inf - inf` appears.
const MASK: f32 = f32::MIN;

/// Which rows hold the two views of the same image. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing<'a> {
    /// Rows `2k` and `2k + 1` (PyTorch reference layout).
    Adjacent,
    /// Rows `k` and `k + m/2` (SimCLR reference code layout).
    Halves,
    /// `partner[i]` is the positive of row `i`; must satisfy `partner[partner[i]] == i` and
    /// `partner[i] != i`.
    Explicit(&'a [usize]),
}

impl Pairing<'_> {
    #[inline]
    fn partner(&self, i: usize, m: usize) -> usize {
        match self {
            Pairing::Adjacent => i ^ 1,
            Pairing::Halves => {
                if i < m / 2 {
                    i + m / 2
                } else {
                    i - m / 2
                }
            }
            Pairing::Explicit(p) => p[i],
        }
    }

    fn validate(&self, m: usize) -> Result<()> {
        match self {
            Pairing::Adjacent | Pairing::Halves => {
                if !m.is_multiple_of(2) {
                    return Err(invalid(format!(
                        "{m} rows: the {self:?} pairing needs an even number of rows"
                    )));
                }
            }
            Pairing::Explicit(p) => {
                check_len(OP, p.len(), m)?;
                for (i, &j) in p.iter().enumerate() {
                    if j >= m || j == i || p[j] != i {
                        return Err(invalid(format!(
                            "partner table: row {i} -> {j} is not a pairing (every row needs \
                             a different partner that points back)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

/// The parameters of an NT-Xent evaluation.
#[derive(Clone, Debug)]
pub struct NtXentConfig<'a> {
    /// The temperature; `> 0` with a finite `1/tau`.
    pub tau: f32,
    /// Which rows are positives of each other.
    pub pairing: Pairing<'a>,
    /// The anchor rows (default: all). The others are candidates only.
    pub anchors: Option<Range<usize>>,
    /// The count the summed anchor losses are divided by (default: the number of anchors).
    pub mean_over: Option<usize>,
}

impl<'a> NtXentConfig<'a> {
    /// Temperature `tau`, [`Pairing::Adjacent`], every row an anchor.
    pub fn new(tau: f32) -> Self {
        Self {
            tau,
            pairing: Pairing::Adjacent,
            anchors: None,
            mean_over: None,
        }
    }
    #[must_use]
    pub fn pairing(mut self, pairing: Pairing<'a>) -> Self {
        self.pairing = pairing;
        self
    }
    #[must_use]
    pub fn anchors(mut self, anchors: Range<usize>) -> Self {
        self.anchors = Some(anchors);
        self
    }
    #[must_use]
    pub fn mean_over(mut self, count: usize) -> Self {
        self.mean_over = Some(count);
        self
    }
}

/// The result of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NtXentOutput {
    /// The loss, summed over the anchors and divided by `mean_over`.
    pub loss: f32,
    /// The same before rounding to `f32` (the sum runs in `f64`).
    pub loss_f64: f64,
    /// The fraction of anchors whose positive has the highest similarity among all their
    /// candidates (ties count as correct): SimCLR's contrastive top-1 accuracy.
    pub accuracy: f32,
}

/// A tile of rows.
#[derive(Clone, Copy, Debug)]
struct Tile {
    start: usize,
    end: usize,
    anchor: bool,
}

impl Tile {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// A reusable NT-Xent workspace: the buffers grow on the first call and are reused, so
/// repeated calls with the same shape allocate nothing.
#[derive(Debug, Default)]
pub struct NtXent {
    /// The normalized rows, `m x d`.
    u: Vec<f32>,
    /// `1 / max(|z_i|, eps)`.
    inv: Vec<f64>,
    /// Whether the row's norm was below `eps`.
    clamped: Vec<bool>,
    /// Running maximum, running sum, the positive's score and the log-sum-exp per row.
    rmax: Vec<f32>,
    rsum: Vec<f32>,
    pos: Vec<f32>,
    lse: Vec<f32>,
    /// `1 - P_i+`, the weight of the positive in the gradient.
    sig: Vec<f32>,
    tiles: Vec<Tile>,
}

/// Evaluates NT-Xent with a fresh workspace; see [`NtXent::forward_backward`].
///
/// # Errors
/// As [`NtXent::forward_backward`].
pub fn nt_xent(
    z: &[f32],
    rows: usize,
    d: usize,
    cfg: &NtXentConfig<'_>,
    dz: Option<&mut [f32]>,
) -> Result<NtXentOutput> {
    let mut ws = NtXent::new();
    match dz {
        Some(dz) => ws.forward_backward(z, rows, d, cfg, dz),
        None => ws.forward(z, rows, d, cfg),
    }
}

impl NtXent {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// The loss of `z` (`rows x d`, row-major) without the gradient.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] or [`Error::ShapeMismatch`] for the invalid inputs listed in
    /// the module documentation.
    pub fn forward(
        &mut self,
        z: &[f32],
        rows: usize,
        d: usize,
        cfg: &NtXentConfig<'_>,
    ) -> Result<NtXentOutput> {
        let plan = self.prepare(z, rows, d, cfg)?;
        Ok(self.run_forward(&plan))
    }

    /// The loss of `z` (`rows x d`, row-major) and its gradient, written to `dz`
    /// (`rows x d`; overwritten).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] or [`Error::ShapeMismatch`] for the invalid inputs listed in
    /// the module documentation.
    pub fn forward_backward(
        &mut self,
        z: &[f32],
        rows: usize,
        d: usize,
        cfg: &NtXentConfig<'_>,
        dz: &mut [f32],
    ) -> Result<NtXentOutput> {
        check_len(OP, dz.len(), rows.saturating_mul(d))?;
        let plan = self.prepare(z, rows, d, cfg)?;
        let out = self.run_forward(&plan);
        self.run_backward(&plan, dz);
        Ok(out)
    }

    /// Checks the arguments, normalizes the rows and lays out the tiles.
    fn prepare<'c>(
        &mut self,
        z: &[f32],
        m: usize,
        d: usize,
        cfg: &NtXentConfig<'c>,
    ) -> Result<Plan<'c>> {
        let tau = cfg.tau;
        if !(tau.is_finite() && tau > 0.0 && (1.0 / tau).is_finite()) {
            return Err(invalid(format!(
                "temperature tau = {tau}: must be positive and finite with a finite 1/tau"
            )));
        }
        if m < 2 {
            return Err(invalid(format!("{m} rows: needs at least 2")));
        }
        if d == 0 {
            return Err(invalid("d = 0: rows must have at least one element".into()));
        }
        let len = m
            .checked_mul(d)
            .ok_or_else(|| invalid(format!("{m} x {d} overflows")))?;
        check_len(OP, z.len(), len)?;
        cfg.pairing.validate(m)?;
        let anchors = cfg.anchors.clone().unwrap_or(0..m);
        if anchors.start >= anchors.end || anchors.end > m {
            return Err(invalid(format!(
                "anchor rows {anchors:?}: must be a non-empty range within 0..{m}"
            )));
        }
        let n_anchors = anchors.len();
        let mean_over = cfg.mean_over.unwrap_or(n_anchors);
        if mean_over == 0 {
            return Err(invalid("mean_over = 0".into()));
        }

        // Normalize (and check) every row.
        self.u.resize(len, 0.0);
        self.inv.resize(m, 0.0);
        self.clamped.resize(m, false);
        let bad = self
            .u
            .par_chunks_mut(d)
            .zip(z.par_chunks(d))
            .zip(self.inv.par_iter_mut().zip(self.clamped.par_iter_mut()))
            .enumerate()
            .with_min_len(64)
            .filter_map(|(i, ((u, z), (inv, clamped)))| {
                let mut ss = 0.0f64;
                for &x in z {
                    if !x.is_finite() {
                        return Some(i);
                    }
                    ss += f64::from(x) * f64::from(x);
                }
                let norm = ss.sqrt();
                *clamped = norm < NORM_EPS;
                *inv = 1.0 / norm.max(NORM_EPS);
                for (u, &x) in u.iter_mut().zip(z) {
                    *u = (f64::from(x) * *inv) as f32;
                }
                None
            })
            .min();
        if let Some(i) = bad {
            return Err(invalid(format!("row {i} of Z has a non-finite element")));
        }

        // Tiles: anchor boundaries are tile boundaries.
        let t = tile_size(m);
        self.tiles.clear();
        for seg in [0..anchors.start, anchors.clone(), anchors.end..m] {
            let anchor = seg == anchors;
            let mut s = seg.start;
            while s < seg.end {
                let e = (s + t).min(seg.end);
                self.tiles.push(Tile {
                    start: s,
                    end: e,
                    anchor,
                });
                s = e;
            }
        }
        for v in [
            &mut self.rmax,
            &mut self.rsum,
            &mut self.pos,
            &mut self.lse,
            &mut self.sig,
        ] {
            v.resize(m, 0.0);
        }
        self.rmax.fill(MASK);
        self.rsum.fill(0.0);
        self.pos.fill(0.0);
        self.lse.fill(0.0);
        Ok(Plan {
            m,
            d,
            tau,
            pairing: cfg.pairing,
            anchors,
            mean_over,
        })
    }

    fn run_forward(&mut self, plan: &Plan<'_>) -> NtXentOutput {
        let (m, d) = (plan.m, plan.d);
        let tiles = &self.tiles;
        let u = &self.u[..];
        let rmax = Shared::new(&mut self.rmax);
        let rsum = Shared::new(&mut self.rsum);
        let pos = Shared::new(&mut self.pos);
        let alpha = 1.0 / plan.tau;
        tournament(tiles.len(), |ti, tj| {
            let (ti_, tj_) = (tiles[ti], tiles[tj]);
            if !ti_.anchor && !tj_.anchor {
                return;
            }
            let (h, w) = (ti_.len(), tj_.len());
            let ld = w.next_multiple_of(LANES);
            with_scratch(h * ld + 2 * ld, |buf| {
                let (s, rest) = buf.split_at_mut(h * ld);
                score_tile(u, d, ti_, tj_, alpha, s, ld);
                if ti == tj {
                    for r in 0..h {
                        s[r * ld + r] = MASK;
                    }
                }
                // SAFETY: in a tournament round each tile is in at most one pair, and the
                // diagonal round touches each tile once, so no other task holds these rows.
                let (mx_i, sm_i, ps_i) = unsafe {
                    (
                        rmax.slice(ti_.start..ti_.end),
                        rsum.slice(ti_.start..ti_.end),
                        pos.slice(ti_.start..ti_.end),
                    )
                };
                // Positives: record their scores, then mask them, so the running sums hold
                // the negatives only (see `run_forward`'s end). Each positive pair (i, p(i))
                // with i in I and p(i) in J is also the entry of column p(i).
                for (r, ps) in ps_i.iter_mut().enumerate() {
                    let p = plan.pairing.partner(ti_.start + r, m);
                    if (tj_.start..tj_.end).contains(&p) {
                        let at = r * ld + p - tj_.start;
                        if ti_.anchor {
                            *ps = s[at];
                        }
                        if tj_.anchor && ti != tj {
                            // SAFETY: as above; `ti != tj`, so these rows differ from I's.
                            unsafe { pos.slice(p..p + 1)[0] = s[at] };
                        }
                        s[at] = MASK;
                    }
                }
                if ti_.anchor {
                    row_stats(s, h, ld, mx_i, sm_i);
                }
                if tj_.anchor && ti != tj {
                    // SAFETY: as above; `ti != tj`, so these rows differ from I's.
                    let (mx_j, sm_j) = unsafe {
                        (
                            rmax.slice(tj_.start..tj_.end),
                            rsum.slice(tj_.start..tj_.end),
                        )
                    };
                    col_stats(s, h, w, ld, mx_j, sm_j, rest);
                }
            });
        });

        // With r_i the sum of exp(s_ik - m_i) over the negatives and s_i+ the positive:
        // loss_i = ln(1 + r_i exp(m_i - s_i+)) = softplus(t_i), t_i = m_i + ln r_i - s_i+,
        // and 1 - P_i+ = sigmoid(t_i). Both are accurate when the positive dominates, where
        // `lse - s_i+` and `P - 1` would cancel to zero in f32.
        let mut total = 0.0f64;
        let mut correct = 0usize;
        for i in plan.anchors.clone() {
            let (mx, sum, ps) = (self.rmax[i], self.rsum[i], self.pos[i]);
            if mx == MASK {
                // No negatives (two rows): the softmax has one candidate, the loss is 0.
                self.lse[i] = ps;
                self.sig[i] = 0.0;
                correct += 1;
                continue;
            }
            let t = f64::from(mx) + f64::from(sum).ln() - f64::from(ps);
            let sp = t.max(0.0) + (-t.abs()).exp().ln_1p();
            total += sp;
            self.lse[i] = (f64::from(ps) + sp) as f32;
            self.sig[i] = if t >= 0.0 {
                1.0 / (1.0 + (-t).exp())
            } else {
                t.exp() / (1.0 + t.exp())
            } as f32;
            correct += usize::from(ps >= mx);
        }
        NtXentOutput {
            loss: (total / plan.mean_over as f64) as f32,
            loss_f64: total / plan.mean_over as f64,
            accuracy: correct as f32 / plan.anchors.len() as f32,
        }
    }

    fn run_backward(&mut self, plan: &Plan<'_>, dz: &mut [f32]) {
        let (m, d) = (plan.m, plan.d);
        let tiles = &self.tiles;
        let u = &self.u[..];
        let lse = &self.lse[..];
        let sig = &self.sig[..];
        dz.fill(0.0);
        let du = Shared::new(dz);
        let alpha = 1.0 / plan.tau;
        tournament(tiles.len(), |ti, tj| {
            let (ti_, tj_) = (tiles[ti], tiles[tj]);
            if !ti_.anchor && !tj_.anchor {
                return;
            }
            let (h, w) = (ti_.len(), tj_.len());
            let ld = w.next_multiple_of(LANES);
            with_scratch(h * ld + ld, |buf| {
                let (s, lse_cols) = buf.split_at_mut(h * ld);
                score_tile(u, d, ti_, tj_, alpha, s, ld);
                lse_cols[..w].copy_from_slice(&lse[tj_.start..tj_.end]);
                lse_cols[w..].fill(0.0);
                weight_tile(
                    s,
                    h,
                    ld,
                    ti_.anchor.then(|| &lse[ti_.start..ti_.end]),
                    tj_.anchor.then_some(&*lse_cols),
                );
                if ti == tj {
                    for r in 0..h {
                        s[r * ld + r] = 0.0;
                    }
                }
                // The positive entries: W_i+ = -(a_i sigmoid(t_i) + a_+ sigmoid(t_+)).
                for r in 0..h {
                    let i = ti_.start + r;
                    let p = plan.pairing.partner(i, m);
                    if (tj_.start..tj_.end).contains(&p) {
                        let a = if ti_.anchor { sig[i] } else { 0.0 };
                        let b = if tj_.anchor { sig[p] } else { 0.0 };
                        s[r * ld + p - tj_.start] = -(a + b);
                    }
                }
                let wv = MatRef::new(s, h, w, ld, 1).expect("tile view");
                let u_i = MatRef::row_major(&u[ti_.start * d..ti_.end * d], h, d).expect("rows");
                let u_j = MatRef::row_major(&u[tj_.start * d..tj_.end * d], w, d).expect("rows");
                let acc = GemmParams::default().beta(1.0).sequential();
                // SAFETY: as in the forward pass, no other task holds these rows.
                let du_i = unsafe { du.slice(ti_.start * d..ti_.end * d) };
                gemm(&acc, wv, u_j, MatMut::row_major(du_i, h, d).expect("rows"))
                    .expect("tile gemm");
                if ti != tj {
                    // SAFETY: as above; `ti != tj`, so the rows differ.
                    let du_j = unsafe { du.slice(tj_.start * d..tj_.end * d) };
                    gemm(
                        &acc.trans_a(Transpose::Yes),
                        wv,
                        u_i,
                        MatMut::row_major(du_j, w, d).expect("rows"),
                    )
                    .expect("tile gemm");
                }
            });
        });

        // Through the normalization, with the 1 / (M tau) scale.
        let c = 1.0 / (plan.mean_over as f64 * f64::from(plan.tau));
        let (inv, clamped) = (&self.inv[..], &self.clamped[..]);
        dz.par_chunks_mut(d)
            .zip(u.par_chunks(d))
            .enumerate()
            .with_min_len(64)
            .for_each(|(i, (g, u))| {
                let scale = c * inv[i];
                if clamped[i] {
                    for g in g.iter_mut() {
                        *g = (f64::from(*g) * scale) as f32;
                    }
                } else {
                    let dot: f64 = g
                        .iter()
                        .zip(u)
                        .map(|(&g, &u)| f64::from(g) * f64::from(u))
                        .sum();
                    for (g, &u) in g.iter_mut().zip(u) {
                        *g = ((f64::from(*g) - dot * f64::from(u)) * scale) as f32;
                    }
                }
            });
    }
}

/// What `prepare` decided.
#[derive(Debug)]
struct Plan<'a> {
    m: usize,
    d: usize,
    tau: f32,
    pairing: Pairing<'a>,
    anchors: Range<usize>,
    mean_over: usize,
}

/// The tile height, from the row count only (never the thread count).
fn tile_size(m: usize) -> usize {
    if m >= 4096 {
        256
    } else if m >= 1024 {
        128
    } else {
        64
    }
}

/// Runs `f(i, j)` over every tile pair `i <= j` of `n` tiles: first the diagonal pairs, then
/// the rounds of a round-robin tournament (circle method). Within a call of `f` no other call
/// in flight shares a tile with it.
fn tournament(n: usize, f: impl Fn(usize, usize) + Sync) {
    (0..n).into_par_iter().for_each(|t| f(t, t));
    let players = n + (n & 1);
    if players < 2 {
        return;
    }
    let last = players - 1;
    for round in 0..last {
        (0..players / 2).into_par_iter().for_each(|k| {
            let (a, b) = if k == 0 {
                (last, round)
            } else {
                ((round + k) % last, (round + last - k) % last)
            };
            if a < n && b < n {
                f(a.min(b), a.max(b));
            }
        });
    }
}

/// `s[r * ld + c] = alpha * u_I[r] . u_J[c]` for the `h x w` tile, and `MASK` in the padding
/// columns `w .. ld`.
fn score_tile(u: &[f32], d: usize, ti: Tile, tj: Tile, alpha: f32, s: &mut [f32], ld: usize) {
    let (h, w) = (ti.len(), tj.len());
    let a = MatRef::row_major(&u[ti.start * d..ti.end * d], h, d).expect("rows");
    let b = MatRef::row_major(&u[tj.start * d..tj.end * d], w, d).expect("rows");
    let c = MatMut::new(s, h, w, ld, 1).expect("tile view");
    gemm(
        &GemmParams::default()
            .alpha(alpha)
            .trans_b(Transpose::Yes)
            .sequential(),
        a,
        b,
        c,
    )
    .expect("tile gemm");
    if w < ld {
        for row in s.chunks_exact_mut(ld) {
            row[w..].fill(MASK);
        }
    }
}

/// Per-thread scratch of at least `len` floats, grown once.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut v = cell.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

/// A slice shared between the tasks of one tournament round, each of which takes a
/// different part of it.
#[derive(Clone, Copy)]
struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` is only a pointer; the tasks that use it take disjoint ranges (see
// `slice`), so sending it between threads is as safe as sending disjoint `&mut` slices.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn new(s: &mut [T]) -> Self {
        Self {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// No other live reference may overlap `r` while the returned slice is in use, and the
    /// slice this was made from must outlive it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, r: Range<usize>) -> &mut [T] {
        assert!(r.start <= r.end && r.end <= self.len, "range out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

// ---------------------------------------------------------------------------------------
// Vectorized tile passes, written once over `Simd` and dispatched at run time.

/// Merges the rows of the `h x ld` tile into the running maxima and sums.
fn row_stats(s: &[f32], h: usize, ld: usize, mx: &mut [f32], sm: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = simd::avx2() {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { row_stats_avx2(t, s, h, ld, mx, sm) };
        return;
    }
    row_stats_with(simd::Portable, s, h, ld, mx, sm);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_stats_avx2(t: simd::Avx2, s: &[f32], h: usize, ld: usize, mx: &mut [f32], sm: &mut [f32]) {
    row_stats_with(t, s, h, ld, mx, sm);
}

#[inline(always)]
fn row_stats_with<S: Simd>(t: S, s: &[f32], h: usize, ld: usize, mx: &mut [f32], sm: &mut [f32]) {
    for r in 0..h {
        let row = &s[r * ld..(r + 1) * ld];
        let mut vmax = t.splat(MASK);
        for c in row.chunks_exact(LANES) {
            vmax = t.max(vmax, t.load(c));
        }
        let m_new = mx[r].max(t.reduce_max(vmax));
        if m_new == MASK {
            continue; // nothing but masked entries so far
        }
        let vm = t.splat(m_new);
        let mut acc = t.splat(0.0);
        for c in row.chunks_exact(LANES) {
            acc = t.add(acc, vmath::exp(t, t.sub(t.load(c), vm)));
        }
        sm[r] = sm[r] * (mx[r] - m_new).exp() + t.reduce_add(acc);
        mx[r] = m_new;
    }
}

/// Merges the `w` columns of the `h x ld` tile into the running maxima and sums of the
/// column rows. `scratch` holds at least `2 * ld` floats.
fn col_stats(
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    mx: &mut [f32],
    sm: &mut [f32],
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = simd::avx2() {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { col_stats_avx2(t, s, h, w, ld, mx, sm, scratch) };
        return;
    }
    col_stats_with(simd::Portable, s, h, w, ld, mx, sm, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn col_stats_avx2(
    t: simd::Avx2,
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    mx: &mut [f32],
    sm: &mut [f32],
    scratch: &mut [f32],
) {
    col_stats_with(t, s, h, w, ld, mx, sm, scratch);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn col_stats_with<S: Simd>(
    t: S,
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    mx: &mut [f32],
    sm: &mut [f32],
    scratch: &mut [f32],
) {
    let (m_new, acc) = scratch[..2 * ld].split_at_mut(ld);
    m_new[..w].copy_from_slice(&mx[..w]);
    m_new[w..].fill(MASK);
    for r in 0..h {
        let row = &s[r * ld..(r + 1) * ld];
        for (mc, c) in m_new.chunks_exact_mut(LANES).zip(row.chunks_exact(LANES)) {
            let v = t.max(t.load(mc), t.load(c));
            t.store(mc, v);
        }
    }
    acc.fill(0.0);
    for r in 0..h {
        let row = &s[r * ld..(r + 1) * ld];
        for ((ac, mc), c) in acc
            .chunks_exact_mut(LANES)
            .zip(m_new.chunks_exact(LANES))
            .zip(row.chunks_exact(LANES))
        {
            let e = vmath::exp(t, t.sub(t.load(c), t.load(mc)));
            let v = t.add(t.load(ac), e);
            t.store(ac, v);
        }
    }
    for c in 0..w {
        if m_new[c] != MASK {
            sm[c] = sm[c] * (mx[c] - m_new[c]).exp() + acc[c];
            mx[c] = m_new[c];
        }
    }
}

/// Replaces the score tile by `a_I exp(s - lse_row) + a_J exp(s - lse_col)`, where a missing
/// side contributes nothing. `lse_cols` has `ld` entries.
fn weight_tile(
    s: &mut [f32],
    h: usize,
    ld: usize,
    lse_rows: Option<&[f32]>,
    lse_cols: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = simd::avx2() {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { weight_tile_avx2(t, s, h, ld, lse_rows, lse_cols) };
        return;
    }
    weight_tile_with(simd::Portable, s, h, ld, lse_rows, lse_cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weight_tile_avx2(
    t: simd::Avx2,
    s: &mut [f32],
    h: usize,
    ld: usize,
    lse_rows: Option<&[f32]>,
    lse_cols: Option<&[f32]>,
) {
    weight_tile_with(t, s, h, ld, lse_rows, lse_cols);
}

#[inline(always)]
fn weight_tile_with<S: Simd>(
    t: S,
    s: &mut [f32],
    h: usize,
    ld: usize,
    lse_rows: Option<&[f32]>,
    lse_cols: Option<&[f32]>,
) {
    for r in 0..h {
        let row = &mut s[r * ld..(r + 1) * ld];
        match (lse_rows, lse_cols) {
            (Some(lr), Some(lc)) => {
                let vr = t.splat(lr[r]);
                for (c, l) in row.chunks_exact_mut(LANES).zip(lc.chunks_exact(LANES)) {
                    let v = t.load(c);
                    let e = t.add(
                        vmath::exp(t, t.sub(v, vr)),
                        vmath::exp(t, t.sub(v, t.load(l))),
                    );
                    t.store(c, e);
                }
            }
            (Some(lr), None) => {
                let vr = t.splat(lr[r]);
                for c in row.chunks_exact_mut(LANES) {
                    let e = vmath::exp(t, t.sub(t.load(c), vr));
                    t.store(c, e);
                }
            }
            (None, Some(lc)) => {
                for (c, l) in row.chunks_exact_mut(LANES).zip(lc.chunks_exact(LANES)) {
                    let e = vmath::exp(t, t.sub(t.load(c), t.load(l)));
                    t.store(c, e);
                }
            }
            (None, None) => row.fill(0.0),
        }
    }
}
