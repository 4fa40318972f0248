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
//! computed, each by one GEMM `S_IJ = U_I U_J^T / tau`. Every tile's normalized rows are
//! packed once per call into the GEMM kernel's micro-panels, in the three forms the tile
//! GEMMs take them (`U_I` as a left operand, `U_J^T` and `U_J` as right operands), and the
//! tile GEMMs run over those panels (`gemm_prepacked`): each row meets every other tile
//! three or four times, and packing it inside each of those small GEMMs had cost about as
//! much as the multiplications. Only the weight tile `W_IJ` is packed per pair.
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
//!   GEMMs: `dU_I += W_IJ U_J` and `dU_J += W_IJ^T U_I` (the diagonal pair, each tile's
//!   first update, writes `dU_I` instead of adding to it, so `dz` is never cleared). Then per row
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
use crate::kernels::gemm::{
    gemm_prepacked, pack_a, pack_b, packed_a_len, packed_b_len, MatMut, MatRef, PackedA, PackedB,
    PanelBuf,
};
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

/// A tile of rows, and where its packed panels start in the workspace's panel buffers.
#[derive(Clone, Copy, Debug)]
struct Tile {
    start: usize,
    end: usize,
    anchor: bool,
    /// Offset of the rows as the left operand of the score GEMM (`h x d`) in `NtXent::lhs`,
    /// of the rows transposed as its right operand (`d x h`) in `NtXent::rhs_t`, and of the
    /// rows as the right operand of the gradient GEMMs (`h x d`) in `NtXent::rhs`.
    lhs: usize,
    rhs_t: usize,
    rhs: usize,
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
    /// With a fixed shift `c`: `exp(c - lse_i)` for anchors, 0 for the other rows.
    gexp: Vec<f32>,
    tiles: Vec<Tile>,
    /// Every tile's normalized rows, packed once per call in the three forms the tile
    /// GEMMs take them (see [`Tile`]), so no tile GEMM packs its `U` operand.
    lhs: PanelBuf,
    rhs_t: PanelBuf,
    rhs: PanelBuf,
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

        // Tiles: anchor boundaries are tile boundaries.
        let t = tile_size(m);
        self.tiles.clear();
        let (mut lhs, mut rhs_t, mut rhs) = (0, 0, 0);
        for seg in [0..anchors.start, anchors.clone(), anchors.end..m] {
            let anchor = seg == anchors;
            let mut s = seg.start;
            while s < seg.end {
                let e = (s + t).min(seg.end);
                self.tiles.push(Tile {
                    start: s,
                    end: e,
                    anchor,
                    lhs,
                    rhs_t,
                    rhs,
                });
                lhs += packed_a_len(e - s, d);
                rhs_t += packed_b_len(d, e - s);
                rhs += packed_b_len(e - s, d);
                s = e;
            }
        }

        // Normalize (and check) every row, then pack each tile's rows; one task per tile.
        self.u.resize(len, 0.0);
        self.inv.resize(m, 0.0);
        self.clamped.resize(m, false);
        self.lhs.reserve(lhs);
        self.rhs_t.reserve(rhs_t);
        self.rhs.reserve(rhs);
        let tiles = &self.tiles[..];
        let u = Shared::new(&mut self.u);
        let inv = Shared::new(&mut self.inv);
        let clamped = Shared::new(&mut self.clamped);
        let packs = [
            Shared::new(self.lhs.get_mut(lhs)),
            Shared::new(self.rhs_t.get_mut(rhs_t)),
            Shared::new(self.rhs.get_mut(rhs)),
        ];
        let bad = (0..tiles.len())
            .into_par_iter()
            .filter_map(|k| {
                let tile = tiles[k];
                let (r0, h) = (tile.start, tile.len());
                // SAFETY: each task takes the rows of its own tile, and the tiles' packed
                // regions (laid out one after another above) are disjoint.
                let (u, inv, clamped) = unsafe {
                    (
                        u.slice(r0 * d..tile.end * d),
                        inv.slice(r0..tile.end),
                        clamped.slice(r0..tile.end),
                    )
                };
                for (r, (u, z)) in u.chunks_mut(d).zip(z[r0 * d..].chunks(d)).enumerate() {
                    // A non-finite element makes the sum non-finite (squares of finite f32
                    // cannot overflow f64).
                    let ss = dot_f64(z, z);
                    if !ss.is_finite() {
                        return Some(r0 + r);
                    }
                    let norm = ss.sqrt();
                    clamped[r] = norm < NORM_EPS;
                    inv[r] = 1.0 / norm.max(NORM_EPS);
                    for (u, &x) in u.iter_mut().zip(z) {
                        *u = (f64::from(x) * inv[r]) as f32;
                    }
                }
                let rows = MatRef::row_major(u, h, d).expect("tile rows");
                // SAFETY: as above.
                let (a, bt, b) = unsafe {
                    (
                        packs[0].slice(tile.lhs..tile.lhs + packed_a_len(h, d)),
                        packs[1].slice(tile.rhs_t..tile.rhs_t + packed_b_len(d, h)),
                        packs[2].slice(tile.rhs..tile.rhs + packed_b_len(h, d)),
                    )
                };
                pack_a(rows, a).expect("packed length");
                pack_b(rows.t(), bt).expect("packed length");
                pack_b(rows, b).expect("packed length");
                None
            })
            .min();
        if let Some(i) = bad {
            return Err(invalid(format!("row {i} of Z has a non-finite element")));
        }

        for v in [
            &mut self.rmax,
            &mut self.rsum,
            &mut self.pos,
            &mut self.lse,
            &mut self.sig,
            &mut self.gexp,
        ] {
            v.resize(m, 0.0);
        }
        self.rmax.fill(MASK);
        self.rsum.fill(0.0);
        self.pos.fill(0.0);
        self.lse.fill(0.0);
        self.gexp.fill(0.0);
        Ok(Plan {
            m,
            d,
            tau,
            pairing: cfg.pairing,
            anchors,
            mean_over,
            panels: [lhs, rhs_t, rhs],
            shift: (2.0 / f64::from(tau) <= FIXED_SHIFT_RANGE).then_some(1.0 / tau),
        })
    }

    /// The packed panels of the last `prepare`.
    fn panels(&self, plan: &Plan<'_>) -> Panels<'_> {
        Panels {
            lhs: self.lhs.get(plan.panels[0]),
            rhs_t: self.rhs_t.get(plan.panels[1]),
            rhs: self.rhs.get(plan.panels[2]),
            d: plan.d,
        }
    }

    fn run_forward(&mut self, plan: &Plan<'_>) -> NtXentOutput {
        let m = plan.m;
        let tiles = &self.tiles;
        let panels = Panels {
            lhs: self.lhs.get(plan.panels[0]),
            rhs_t: self.rhs_t.get(plan.panels[1]),
            rhs: self.rhs.get(plan.panels[2]),
            d: plan.d,
        };
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
                score_tile(&panels, ti_, tj_, alpha, s, ld);
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
                let cols = (tj_.anchor && ti != tj).then(|| {
                    // SAFETY: as above; `ti != tj`, so these rows differ from I's.
                    unsafe {
                        (
                            rmax.slice(tj_.start..tj_.end),
                            rsum.slice(tj_.start..tj_.end),
                        )
                    }
                });
                if let Some(c) = plan.shift {
                    shifted_stats(
                        s,
                        h,
                        w,
                        ld,
                        c,
                        ti_.anchor.then_some((mx_i, sm_i)),
                        cols,
                        rest,
                    );
                } else {
                    if ti_.anchor {
                        row_stats(s, h, ld, mx_i, sm_i);
                    }
                    if let Some((mx_j, sm_j)) = cols {
                        col_stats(s, h, w, ld, mx_j, sm_j, rest);
                    }
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
            // The sum is of exp(s - shift): the running maximum, or the fixed shift.
            let shift = plan.shift.unwrap_or(mx);
            let t = f64::from(shift) + f64::from(sum).ln() - f64::from(ps);
            let sp = t.max(0.0) + (-t.abs()).exp().ln_1p();
            total += sp;
            self.lse[i] = (f64::from(ps) + sp) as f32;
            if let Some(c) = plan.shift {
                self.gexp[i] = (f64::from(c) - (f64::from(ps) + sp)).exp() as f32;
            }
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
        let panels = self.panels(plan);
        let u = &self.u[..];
        // With a fixed shift the weights take exp(c - lse) (zero off the anchors) where the
        // general case takes lse.
        let lse = if plan.shift.is_some() {
            &self.gexp[..]
        } else {
            &self.lse[..]
        };
        let sig = &self.sig[..];
        // dz is not cleared: each tile's first update (its diagonal pair, the first round of
        // the tournament) overwrites its rows.
        let du = Shared::new(dz);
        let alpha = 1.0 / plan.tau;
        tournament(tiles.len(), |ti, tj| {
            let (ti_, tj_) = (tiles[ti], tiles[tj]);
            if !ti_.anchor && !tj_.anchor {
                if ti == tj {
                    // SAFETY: as below, no other task holds these rows.
                    unsafe { du.slice(ti_.start * d..ti_.end * d) }.fill(0.0);
                }
                return;
            }
            let (h, w) = (ti_.len(), tj_.len());
            let ld = w.next_multiple_of(LANES);
            let packed_w = packed_a_len(h, w).max(packed_a_len(w, h));
            with_scratch(h * ld + ld + packed_w, |buf| {
                let (s, rest) = buf.split_at_mut(h * ld);
                let (lse_cols, packed_w) = rest.split_at_mut(ld);
                score_tile(&panels, ti_, tj_, alpha, s, ld);
                lse_cols[..w].copy_from_slice(&lse[tj_.start..tj_.end]);
                lse_cols[w..].fill(0.0);
                if let Some(c) = plan.shift {
                    // `lse` holds exp(c - lse), zero off the anchors.
                    shifted_weight_tile(s, h, ld, c, &lse[ti_.start..ti_.end], lse_cols);
                } else {
                    weight_tile(
                        s,
                        h,
                        ld,
                        ti_.anchor.then(|| &lse[ti_.start..ti_.end]),
                        tj_.anchor.then_some(&*lse_cols),
                    );
                }
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
                // dU_I += W_IJ U_J and dU_J += W_IJ^T U_I: W is packed here (twice), the
                // rows were packed once in `prepare`.
                let wv = MatRef::new(s, h, w, ld, 1).expect("tile view");
                // SAFETY: as in the forward pass, no other task holds these rows.
                let du_i = unsafe { du.slice(ti_.start * d..ti_.end * d) };
                let wa = pack_a(wv, &mut packed_w[..packed_a_len(h, w)]).expect("packed length");
                let first = if ti == tj { 0.0 } else { 1.0 };
                gemm_prepacked(
                    1.0,
                    wa,
                    panels.rhs(tj_),
                    first,
                    MatMut::row_major(du_i, h, d).expect("rows"),
                )
                .expect("tile gemm");
                if ti != tj {
                    // SAFETY: as above; `ti != tj`, so the rows differ.
                    let du_j = unsafe { du.slice(tj_.start * d..tj_.end * d) };
                    let wt =
                        pack_a(wv.t(), &mut packed_w[..packed_a_len(w, h)]).expect("packed length");
                    gemm_prepacked(
                        1.0,
                        wt,
                        panels.rhs(ti_),
                        1.0,
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
                    let dot = dot_f64(g, u);
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
    /// The lengths of the three packed panel buffers (see [`Tile`]).
    panels: [usize; 3],
    /// `Some(1 / tau)` when every `exp(s - 1/tau)` is a normal float (see
    /// [`FIXED_SHIFT_RANGE`]): the exponentials are then taken once against that fixed
    /// shift instead of once per row and once per column against running maxima.
    shift: Option<f32>,
}

/// The largest score range `2 / tau` for which scores are shifted by the fixed `1 / tau`:
/// then `exp(s - 1/tau) >= e^-80`-ish, far from `f32` underflow (`e^-87`), and
/// `exp(1/tau - lse_i) <= e^80`, far from overflow, for every `|s| <= 1/tau` (up to the
/// rounding of the unit rows' products). Holds for `tau >= 0.025`. With a fixed shift one
/// exponential per score serves the row and the column of the symmetric tile (forward)
/// and both halves of the weight `W_ik = e^(s_ik - c) (e^(c - lse_i) + e^(c - lse_k))`
/// (backward), where running maxima need two.
const FIXED_SHIFT_RANGE: f64 = 80.0;

/// The tiles' packed rows (see [`Tile`]).
struct Panels<'a> {
    lhs: &'a [f32],
    rhs_t: &'a [f32],
    rhs: &'a [f32],
    d: usize,
}

impl Panels<'_> {
    /// Tile `t`'s rows as the left operand of a score GEMM (`h x d`).
    fn lhs(&self, t: Tile) -> PackedA<'_> {
        let len = packed_a_len(t.len(), self.d);
        PackedA::from_packed(&self.lhs[t.lhs..t.lhs + len], t.len(), self.d).expect("panels")
    }
    /// Tile `t`'s rows transposed, as the right operand of a score GEMM (`d x h`).
    fn rhs_t(&self, t: Tile) -> PackedB<'_> {
        let len = packed_b_len(self.d, t.len());
        PackedB::from_packed(&self.rhs_t[t.rhs_t..t.rhs_t + len], self.d, t.len()).expect("panels")
    }
    /// Tile `t`'s rows as the right operand of a gradient GEMM (`h x d`).
    fn rhs(&self, t: Tile) -> PackedB<'_> {
        let len = packed_b_len(t.len(), self.d);
        PackedB::from_packed(&self.rhs[t.rhs..t.rhs + len], t.len(), self.d).expect("panels")
    }
}

/// The tile height, from the row count only (never the thread count). 128 from 512 rows:
/// with the AVX-512 kernel's 12-row panels a 64-row tile computes 72 rows, and twice the
/// tiles means twice the tournament rounds (parallel regions); the larger diagonal tiles
/// cost less than both.
fn tile_size(m: usize) -> usize {
    if m >= 4096 {
        256
    } else if m >= 512 {
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
fn score_tile(p: &Panels<'_>, ti: Tile, tj: Tile, alpha: f32, s: &mut [f32], ld: usize) {
    let (h, w) = (ti.len(), tj.len());
    let c = MatMut::new(s, h, w, ld, 1).expect("tile view");
    gemm_prepacked(alpha, p.lhs(ti), p.rhs_t(tj), 0.0, c).expect("tile gemm");
    if w < ld {
        for row in s.chunks_exact_mut(ld) {
            row[w..].fill(MASK);
        }
    }
}

/// `a . b` in `f64`, over eight partial sums (so that it vectorizes) added in a fixed tree.
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    let s4 = [0, 1, 2, 3].map(|l| acc[l] + acc[l + 4]);
    ((s4[0] + s4[2]) + (s4[1] + s4[3])) + tail
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

/// The fixed-shift form of [`row_stats`] and [`col_stats`] in one pass: `e = exp(s - c)` once
/// per score, added to the row's sum (`rows`) and to the column's (`cols`); the maxima are
/// kept for the accuracy only. `scratch` holds at least `2 * ld` floats.
#[allow(clippy::too_many_arguments)]
fn shifted_stats(
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    c: f32,
    rows: Option<(&mut [f32], &mut [f32])>,
    cols: Option<(&mut [f32], &mut [f32])>,
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = simd::avx2() {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { shifted_stats_avx2(t, s, h, w, ld, c, rows, cols, scratch) };
        return;
    }
    shifted_stats_with(simd::Portable, s, h, w, ld, c, rows, cols, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn shifted_stats_avx2(
    t: simd::Avx2,
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    c: f32,
    rows: Option<(&mut [f32], &mut [f32])>,
    cols: Option<(&mut [f32], &mut [f32])>,
    scratch: &mut [f32],
) {
    shifted_stats_with(t, s, h, w, ld, c, rows, cols, scratch);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn shifted_stats_with<S: Simd>(
    t: S,
    s: &[f32],
    h: usize,
    w: usize,
    ld: usize,
    c: f32,
    mut rows: Option<(&mut [f32], &mut [f32])>,
    cols: Option<(&mut [f32], &mut [f32])>,
    scratch: &mut [f32],
) {
    let (cmax, cacc) = scratch[..2 * ld].split_at_mut(ld);
    cmax.fill(MASK);
    cacc.fill(0.0);
    let vc = t.splat(c);
    for r in 0..h {
        let row = &s[r * ld..(r + 1) * ld];
        let mut vmax = t.splat(MASK);
        let mut acc = t.splat(0.0);
        if cols.is_some() {
            for ((x, mc), ac) in row
                .chunks_exact(LANES)
                .zip(cmax.chunks_exact_mut(LANES))
                .zip(cacc.chunks_exact_mut(LANES))
            {
                let v = t.load(x);
                let e = vmath::exp(t, t.sub(v, vc));
                vmax = t.max(vmax, v);
                acc = t.add(acc, e);
                t.store(mc, t.max(t.load(mc), v));
                t.store(ac, t.add(t.load(ac), e));
            }
        } else {
            for x in row.chunks_exact(LANES) {
                let v = t.load(x);
                vmax = t.max(vmax, v);
                acc = t.add(acc, vmath::exp(t, t.sub(v, vc)));
            }
        }
        if let Some((mx, sm)) = rows.as_mut() {
            mx[r] = mx[r].max(t.reduce_max(vmax));
            sm[r] += t.reduce_add(acc);
        }
    }
    if let Some((mx, sm)) = cols {
        for k in 0..w {
            mx[k] = mx[k].max(cmax[k]);
            sm[k] += cacc[k];
        }
    }
}

/// The fixed-shift form of [`weight_tile`]: `W = exp(s - c) (g_row + g_col)` with
/// `g = exp(c - lse)` (zero for rows that are not anchors); `g_cols` has `ld` entries.
fn shifted_weight_tile(s: &mut [f32], h: usize, ld: usize, c: f32, g_rows: &[f32], g_cols: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = simd::avx2() {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { shifted_weight_tile_avx2(t, s, h, ld, c, g_rows, g_cols) };
        return;
    }
    shifted_weight_tile_with(simd::Portable, s, h, ld, c, g_rows, g_cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn shifted_weight_tile_avx2(
    t: simd::Avx2,
    s: &mut [f32],
    h: usize,
    ld: usize,
    c: f32,
    g_rows: &[f32],
    g_cols: &[f32],
) {
    shifted_weight_tile_with(t, s, h, ld, c, g_rows, g_cols);
}

#[inline(always)]
fn shifted_weight_tile_with<S: Simd>(
    t: S,
    s: &mut [f32],
    h: usize,
    ld: usize,
    c: f32,
    g_rows: &[f32],
    g_cols: &[f32],
) {
    let vc = t.splat(c);
    for r in 0..h {
        let row = &mut s[r * ld..(r + 1) * ld];
        let vr = t.splat(g_rows[r]);
        for (x, g) in row.chunks_exact_mut(LANES).zip(g_cols.chunks_exact(LANES)) {
            let e = vmath::exp(t, t.sub(t.load(x), vc));
            t.store(x, t.mul(e, t.add(vr, t.load(g))));
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
