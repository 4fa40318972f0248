//! Quick Thoughts objectives (Logeswaren & Lee, "An efficient framework for learning sentence
//! representations", ICLR 2018): a pairwise logistic loss over (anchor, positive, negative)
//! triplets, and the paper's in-batch classification, a softmax over every candidate of the
//! batch streamed over GEMM tiles with an online log-sum-exp (no `n x m` score matrix).
//!
//! # In-batch classification
//! Anchors `F` (`n x d`, encoder f) and candidates `G` (`m x d`, encoder g) give the scores
//! `S_ij = scale * f_i . g_j`. Anchor `i`'s own sentence may sit among the candidates, at row
//! `i + self_offset`; it is then left out of that anchor's softmax. For target pairs
//! `(i, c)` (usually the previous and the next sentence, see [`qt_neighbor_targets`]):
//!
//! ```text
//! L = (1/T) sum_{(i,c)} [ lse_{j != self(i)} S_ij - S_ic ]
//! dL/dS_ij = (K_i p_ij - Y_ij) / T,   p_ij = softmax over j != self(i),
//! dF = scale * W G,   dG = scale * W^T F,   W_ij = dL/dS_ij
//! ```
//! with `K_i` the number of targets of anchor `i` and `Y_ij` 1 for target pairs.
//!
//! The score matrix is never stored. Rows are cut into tiles of `tile_rows` anchors and
//! columns into tiles of `tile_cols` candidates (fixed sizes, independent of the thread count):
//! - forward, parallel over row tiles: the target scores are dot products; then each column
//!   tile of `S` is computed by a sequential GEMM into a per-thread scratch tile and folded
//!   into a running maximum and sum per row (the online log-sum-exp), and for each target the
//!   number of non-target candidates scoring above it is counted (for the accuracy).
//! - backward, two passes that recompute the tiles: `dF`, parallel over row tiles (each task
//!   owns its rows of `dF` and walks the column tiles in order), then `dG`, parallel over
//!   column tiles (each task owns its rows of `dG` and walks the row tiles in order). Every
//!   output row is written by one task in a fixed order, so the results are bit-identical for
//!   any thread count; the forward's loss is summed over row tiles by a fixed binary tree.
//!
//! The cost is five `n x m x d` GEMMs (the scores once in the forward and once in each
//! backward pass, plus `dF` and `dG`) and `3 n m` exponentials, against three GEMMs for an
//! implementation that keeps the score matrix: the price of `O((n + m) d)` memory.
//! Measured on a shared 2-core AMD EPYC (AVX2, loaded, so indicative only): `n = m = 400`,
//! `d = 1200`, default tiles: forward 6.6 ms, forward + backward 38 ms, one full
//! `400 x 400 x 1200` GEMM 5.0 ms; larger tiles (96 x 200) give 32 ms but fewer parallel tasks.
//!
//! Numerics: the target scores are dot products and the tile scores GEMM results, which may
//! differ in the last bits; the loss uses the former, the softmax the latter, and only the
//! accuracy of near-ties can notice. `W = (K p - Y) / T` is formed from its two terms, so where
//! a target takes almost all the probability its absolute error is about `eps / T`.
//!
//! # Distributed use
//! The layout is what data-parallel training across processes needs: each rank keeps its own
//! anchors `F` local, gathers the candidates `G` of all ranks (`m = ranks * n_local`, its own
//! block at `self_offset = rank * n_local`, targets pointing into the gathered block), and
//! after the backward sums the `dG` rows back to the ranks that own them (a reduce-scatter),
//! adding them to the gradient of their local candidates. The loss is the mean over the local
//! targets; scale the gradients by `T_local / T_global` for a global mean.
//!
//! # Pairwise logistic loss
//! For triplets `(i, p, q)`: `L = (1/T) sum softplus(a_i . (b_q - b_p))`, computed as
//! `max(t, 0) + ln_1p(exp(-|t|))` (no overflow), with
//! `dA_i += sigma(t)/T (b_q - b_p)`, `dB_q += sigma(t)/T a_i`, `dB_p -= sigma(t)/T a_i`.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};
use crate::kernels::gemm::{gemm, GemmParams, MatMut, MatRef, Transpose};
use crate::kernels::reduce::{tree_reduce, try_tree_sum};
use crate::kernels::simd::{Portable, Simd, LANES};
use crate::kernels::vmath::exp;

// ---------------------------------------------------------------------------------------
// SIMD dispatch: a kernel is a value whose `run` is generic over the token; `dispatch` calls
// it inside an `avx2,fma` function when the runtime dispatch chose AVX2, so the intrinsics
// and the generic `exp` inline into code compiled for AVX2.

trait Kernel {
    type Out;
    fn run<S: Simd>(self, s: S) -> Self::Out;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<K: Kernel>(s: crate::kernels::simd::Avx2, k: K) -> K::Out {
    k.run(s)
}

fn dispatch<K: Kernel>(k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = crate::kernels::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        return unsafe { run_avx2(s, k) };
    }
    k.run(Portable)
}

// ---------------------------------------------------------------------------------------
// Small vector helpers (each one a fixed order of operations, so a value computed twice has
// the same bits).

/// `sum_k a_k * x_k`.
#[inline(always)]
fn dot<S: Simd>(s: S, a: &[f32], x: &[f32]) -> f32 {
    let mut acc = s.splat(0.0);
    let full = a.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        acc = s.fma(s.load(&a[k..]), s.load(&x[k..]), acc);
    }
    let mut r = s.reduce_add(acc);
    for k in full..a.len() {
        r += a[k] * x[k];
    }
    r
}

/// `sum_k a_k * (x_k - y_k)`.
#[inline(always)]
fn dot_diff<S: Simd>(s: S, a: &[f32], x: &[f32], y: &[f32]) -> f32 {
    let mut acc = s.splat(0.0);
    let full = a.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let dv = s.sub(s.load(&x[k..]), s.load(&y[k..]));
        acc = s.fma(s.load(&a[k..]), dv, acc);
    }
    let mut r = s.reduce_add(acc);
    for k in full..a.len() {
        r += a[k] * (x[k] - y[k]);
    }
    r
}

/// `out += alpha * x`.
#[inline(always)]
fn axpy<S: Simd>(s: S, out: &mut [f32], alpha: f32, x: &[f32]) {
    let va = s.splat(alpha);
    let full = out.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let v = s.fma(va, s.load(&x[k..]), s.load(&out[k..]));
        s.store(&mut out[k..], v);
    }
    for k in full..out.len() {
        out[k] += alpha * x[k];
    }
}

/// `out += alpha * (x - y)`.
#[inline(always)]
fn axpy_diff<S: Simd>(s: S, out: &mut [f32], alpha: f32, x: &[f32], y: &[f32]) {
    let va = s.splat(alpha);
    let full = out.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let dv = s.sub(s.load(&x[k..]), s.load(&y[k..]));
        let v = s.fma(va, dv, s.load(&out[k..]));
        s.store(&mut out[k..], v);
    }
    for k in full..out.len() {
        out[k] += alpha * (x[k] - y[k]);
    }
}

/// The maximum of a row and whether every value is finite.
#[inline(always)]
fn max_finite<S: Simd>(s: S, x: &[f32]) -> (f32, bool) {
    let zero = s.splat(0.0);
    let mut mx = s.splat(f32::NEG_INFINITY);
    // `v * 0` is 0 for finite `v`, NaN for an infinity or a NaN.
    let mut bad = zero;
    let full = x.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let v = s.load(&x[k..]);
        mx = s.max(v, mx);
        bad = s.fma(v, zero, bad);
    }
    let mut m = s.reduce_max(mx);
    let mut fin = s.reduce_add(bad) == 0.0;
    for &v in &x[full..] {
        m = m.max(v);
        fin &= v.is_finite();
    }
    (m, fin)
}

/// `sum_j e^(x_j - m)` (entries equal to `-inf` add 0).
#[inline(always)]
fn sum_exp<S: Simd>(s: S, x: &[f32], m: f32) -> f32 {
    let vm = s.splat(m);
    let mut acc = s.splat(0.0);
    let full = x.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        acc = s.add(acc, exp(s, s.sub(s.load(&x[k..]), vm)));
    }
    if full < x.len() {
        let mut buf = [f32::NEG_INFINITY; LANES];
        buf[..x.len() - full].copy_from_slice(&x[full..]);
        acc = s.add(acc, exp(s, s.sub(s.load(&buf), vm)));
    }
    s.reduce_add(acc)
}

/// How many entries of `x` are strictly greater than `thr`.
#[inline(always)]
fn count_above<S: Simd>(s: S, x: &[f32], thr: f32) -> u32 {
    let (vt, one, zero) = (s.splat(thr), s.splat(1.0), s.splat(0.0));
    let mut acc = zero;
    let full = x.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        acc = s.add(acc, s.select_lt(vt, s.load(&x[k..]), one, zero));
    }
    // Lane counts stay below 2^24 (a tile row is far shorter), so the float sum is exact.
    let mut r = s.reduce_add(acc) as u32;
    for &v in &x[full..] {
        r += u32::from(v > thr);
    }
    r
}

/// `w_j <- e^((w_j - m) - ls) * a`.
#[inline(always)]
fn scaled_softmax<S: Simd>(s: S, w: &mut [f32], m: f32, ls: f32, a: f32) {
    let (vm, vls, va) = (s.splat(m), s.splat(ls), s.splat(a));
    let full = w.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let e = exp(s, s.sub(s.sub(s.load(&w[k..]), vm), vls));
        s.store(&mut w[k..], s.mul(e, va));
    }
    if full < w.len() {
        let rest = w.len() - full;
        let mut buf = [0.0f32; LANES];
        buf[..rest].copy_from_slice(&w[full..]);
        let e = exp(s, s.sub(s.sub(s.load(&buf), vm), vls));
        s.store(&mut buf, s.mul(e, va));
        w[full..].copy_from_slice(&buf[..rest]);
    }
}

// ---------------------------------------------------------------------------------------
// Shared checks and helpers.

fn invalid(op: &'static str, msg: String) -> Error {
    Error::InvalidArgument { op, msg }
}

/// The first row (of width `d`) holding a NaN or an infinity.
fn first_non_finite_row(x: &[f32], d: usize) -> Option<usize> {
    const CH: usize = 4096;
    x.par_chunks(CH)
        .enumerate()
        .filter_map(|(k, c)| {
            c.iter()
                .position(|v| !v.is_finite())
                .map(|p| (k * CH + p) / d)
        })
        .min()
}

fn check_matrix(op: &'static str, what: &str, x: &[f32], rows: usize, d: usize) -> Result<()> {
    let want = rows
        .checked_mul(d)
        .ok_or_else(|| invalid(op, format!("{what}: {rows} x {d} overflows")))?;
    if x.len() != want {
        return Err(Error::ShapeMismatch {
            op,
            lhs: [x.len()].into(),
            rhs: [rows, d].into(),
        });
    }
    if let Some(r) = first_non_finite_row(x, d) {
        return Err(invalid(
            op,
            format!("{what} row {r} holds a NaN or infinite value"),
        ));
    }
    Ok(())
}

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's score-tile scratch (grown once, then reused; a
/// fresh buffer only if the scratch is already in use on this thread).
fn with_tile<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    TILE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

// ---------------------------------------------------------------------------------------
// Pairwise logistic loss.

/// Triplets per parallel chunk of the loss sum.
const TRIPLET_CHUNK: usize = 256;
/// Rows per parallel chunk of `dA` and `dB`.
const GRAD_ROWS: usize = 32;

/// `softplus(t) = ln(1 + e^t)` without overflow.
fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-t)` without overflow.
fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

#[derive(Clone, Copy)]
struct Pairwise<'a> {
    a: &'a [f32],
    b: &'a [f32],
    d: usize,
    triplets: &'a [(u32, u32, u32)],
}

impl Pairwise<'_> {
    fn rows(&self, (i, p, q): (u32, u32, u32)) -> (&[f32], &[f32], &[f32]) {
        let d = self.d;
        let (i, p, q) = (i as usize, p as usize, q as usize);
        (
            &self.a[i * d..(i + 1) * d],
            &self.b[p * d..(p + 1) * d],
            &self.b[q * d..(q + 1) * d],
        )
    }
    /// The margin `t = a_i . (b_q - b_p)` (same bits in every pass).
    #[inline(always)]
    fn margin<S: Simd>(&self, s: S, tr: (u32, u32, u32)) -> f32 {
        let (ai, bp, bq) = self.rows(tr);
        dot_diff(s, ai, bq, bp)
    }
    /// The gradient weight `sigma(t) / T`.
    #[inline(always)]
    fn weight<S: Simd>(&self, s: S, tr: (u32, u32, u32)) -> f32 {
        let t = self.margin(s, tr);
        (sigmoid(f64::from(t)) / self.triplets.len() as f64) as f32
    }
}

/// The loss sum over triplets `k0..k1`, or the first triplet whose margin overflows.
struct PairLoss<'a> {
    p: Pairwise<'a>,
    k0: usize,
    k1: usize,
}

impl Kernel for PairLoss<'_> {
    type Out = Result<f64, usize>;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> Self::Out {
        let mut sum = 0.0f64;
        for k in self.k0..self.k1 {
            let t = self.p.margin(s, self.p.triplets[k]);
            if !t.is_finite() {
                return Err(k);
            }
            sum += softplus(f64::from(t));
        }
        Ok(sum)
    }
}

/// The gradient rows `r0..` of `dA` (`side_a`) or `dB` held in `out`, overwritten.
struct PairGrad<'a, 'o> {
    p: Pairwise<'a>,
    side_a: bool,
    r0: usize,
    out: &'o mut [f32],
}

impl Kernel for PairGrad<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { p, side_a, r0, out } = self;
        let d = p.d;
        let rows = r0..r0 + out.len() / d;
        out.fill(0.0);
        for &tr in p.triplets {
            let (i, pp, q) = (tr.0 as usize, tr.1 as usize, tr.2 as usize);
            if side_a {
                if rows.contains(&i) {
                    let w = p.weight(s, tr);
                    let (_, bp, bq) = p.rows(tr);
                    axpy_diff(s, &mut out[(i - r0) * d..][..d], w, bq, bp);
                }
            } else if rows.contains(&pp) || rows.contains(&q) {
                let w = p.weight(s, tr);
                let (ai, _, _) = p.rows(tr);
                if rows.contains(&pp) {
                    axpy(s, &mut out[(pp - r0) * d..][..d], -w, ai);
                }
                if rows.contains(&q) {
                    axpy(s, &mut out[(q - r0) * d..][..d], w, ai);
                }
            }
        }
    }
}

/// The Quick Thoughts pairwise logistic loss: the mean over `triplets` `(anchor, pos, neg)`
/// of `softplus(a_anchor . b_neg - a_anchor . b_pos)`, with its gradients `da` (`n_a x d`)
/// and `db` (`n_b x d`), both overwritten. Anchors index rows of `a` (`n_a x d`), positives
/// and negatives rows of `b` (`n_b x d`); all row-major. Returns the loss.
///
/// When the anchors and candidates come from the same matrix, pass it as both `a` and `b`
/// and add `da` and `db` to get its gradient. A triplet with `pos == neg` contributes
/// `ln 2` to the loss and nothing to the gradients.
///
/// The margin is computed as `a . (b_neg - b_pos)` (one rounding less than two dot products
/// and exactly 0 for equal rows); parallel over fixed chunks of triplets (loss, summed in
/// `f64` by a fixed tree) and of gradient rows, so the results are bit-identical for any
/// thread count. Allocates nothing.
///
/// # Errors
/// - [`Error::ShapeMismatch`] when a slice does not hold its `rows x d` values.
/// - [`Error::InvalidArgument`] when `d == 0`, `triplets` is empty, an index is out of
///   range, `a` or `b` holds a NaN or an infinity (naming the row), or a margin overflows
///   `f32` (naming the triplet; `da` and `db` are then untouched).
#[allow(clippy::too_many_arguments)]
pub fn qt_pairwise_logistic(
    a: &[f32],
    n_a: usize,
    b: &[f32],
    n_b: usize,
    d: usize,
    triplets: &[(u32, u32, u32)],
    da: &mut [f32],
    db: &mut [f32],
) -> Result<f64> {
    const OP: &str = "qt_pairwise_logistic";
    if d == 0 {
        return Err(invalid(OP, "embedding dimension d = 0".into()));
    }
    check_matrix(OP, "A", a, n_a, d)?;
    check_matrix(OP, "B", b, n_b, d)?;
    check_len("qt_pairwise_logistic (dA vs A)", da.len(), a.len())?;
    check_len("qt_pairwise_logistic (dB vs B)", db.len(), b.len())?;
    if triplets.is_empty() {
        return Err(invalid(OP, "no triplets".into()));
    }
    for (k, &(i, p, q)) in triplets.iter().enumerate() {
        if i as usize >= n_a || p as usize >= n_b || q as usize >= n_b {
            return Err(invalid(
                OP,
                format!("triplet {k} = ({i}, {p}, {q}) out of range for {n_a} anchors and {n_b} candidates"),
            ));
        }
    }
    let p = Pairwise { a, b, d, triplets };
    let t = triplets.len();
    let sum = try_tree_sum(t, TRIPLET_CHUNK, |r| {
        dispatch(PairLoss {
            p,
            k0: r.start,
            k1: r.end,
        })
    })
    .map_err(|k| {
        let (i, pp, q) = triplets[k];
        invalid(
            OP,
            format!("the margin of triplet {k} = ({i}, {pp}, {q}) overflows f32"),
        )
    })?;
    for (side_a, out) in [(true, da), (false, db)] {
        out.par_chunks_mut(GRAD_ROWS * d)
            .enumerate()
            .for_each(|(c, out)| {
                dispatch(PairGrad {
                    p,
                    side_a,
                    r0: c * GRAD_ROWS,
                    out,
                })
            });
    }
    Ok(sum / t as f64)
}

// ---------------------------------------------------------------------------------------
// In-batch classification.

/// One in-batch problem: anchors `f` (`n x d`), candidates `g` (`m x d`), both row-major.
#[derive(Clone, Copy, Debug)]
pub struct QtBatch<'a> {
    pub f: &'a [f32],
    pub n: usize,
    pub g: &'a [f32],
    pub m: usize,
    pub d: usize,
    /// `S_ij = scale * f_i . g_j` (the paper uses plain inner products: `scale = 1`).
    pub scale: f32,
    /// Anchor `i`'s own sentence is candidate `i + self_offset` and is left out of its
    /// softmax; `None` when the candidates do not contain the anchors.
    pub self_offset: Option<usize>,
    /// `(anchor, candidate)` pairs: rows of `f` and rows of `g`. No pair may repeat.
    pub targets: &'a [(u32, u32)],
}

/// What a forward pass of [`QtInBatch`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QtStats {
    /// Mean over the target pairs of `-log softmax_i(candidate)`, accumulated in `f64`.
    pub loss: f64,
    /// Target pairs whose candidate ranks within the top `K_i` of its anchor's non-self
    /// candidates, `K_i` being that anchor's number of targets (rank = 1 + the number of
    /// candidates scoring strictly higher, so ties count in the target's favour).
    pub hits: usize,
    /// The number of target pairs.
    pub targets: usize,
}

impl QtStats {
    /// `hits / targets`, the monitoring accuracy.
    pub fn accuracy(&self) -> f64 {
        self.hits as f64 / self.targets.max(1) as f64
    }
}

/// The shape a forward pass saw, checked by the backward.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    n: usize,
    m: usize,
    d: usize,
    t: usize,
    scale: u32,
    self_offset: Option<usize>,
}

/// The Quick Thoughts in-batch classification loss, streamed over score tiles (see the
/// module documentation), with its reusable workspace: the per-row statistics and the
/// targets grouped by anchor live here, the score tiles in per-thread scratch, so repeated
/// calls of the same size allocate nothing.
///
/// ```
/// use selfsup::kernels::contrastive::quickthought::{qt_neighbor_targets, QtBatch, QtInBatch};
/// let (n, d) = (4, 3);
/// let f: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.7).sin()).collect();
/// let g: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.3).cos()).collect();
/// let mut targets = Vec::new();
/// qt_neighbor_targets(n, 0, &[], &mut targets).unwrap(); // (0,1), (1,0), (1,2), ...
/// let batch = QtBatch { f: &f, n, g: &g, m: n, d, scale: 1.0, self_offset: Some(0), targets: &targets };
/// let (mut df, mut dg) = (vec![0.0; n * d], vec![0.0; n * d]);
/// let mut qt = QtInBatch::new();
/// let stats = qt.forward_backward(&batch, &mut df, &mut dg).unwrap();
/// assert!(stats.loss > 0.0 && stats.targets == 6);
/// ```
#[derive(Debug)]
pub struct QtInBatch {
    tile_rows: usize,
    tile_cols: usize,
    /// `offs[i]..offs[i + 1]`: the targets of anchor `i` in `cand`, `ts` and `above`.
    offs: Vec<usize>,
    /// Target candidates grouped by anchor, ascending within an anchor.
    cand: Vec<u32>,
    /// Target scores `scale * f_i . g_c` (dot products).
    ts: Vec<f32>,
    /// Non-target, non-self candidates scoring strictly above each target.
    above: Vec<u32>,
    /// Per anchor: the maximum score and `ln sum_j e^(S_ij - max)` over its candidates.
    row_max: Vec<f32>,
    row_ls: Vec<f32>,
    seen: Option<Seen>,
}

/// Default anchors per row tile.
pub const QT_TILE_ROWS: usize = 64;
/// Default candidates per column tile.
pub const QT_TILE_COLS: usize = 128;

const OP_FWD: &str = "QtInBatch::forward";
const OP_BWD: &str = "QtInBatch::backward";

/// What every tile pass reads.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    f: &'a [f32],
    g: &'a [f32],
    n: usize,
    m: usize,
    d: usize,
    scale: f32,
    self_offset: Option<usize>,
    tr: usize,
    tc: usize,
    offs: &'a [usize],
    cand: &'a [u32],
    /// `scale / T`: the gradient weight of one target pair.
    w_unit: f32,
}

impl Ctx<'_> {
    fn rows(&self, tile: usize) -> (usize, usize) {
        (tile * self.tr, ((tile + 1) * self.tr).min(self.n))
    }
    fn cols(&self, tile: usize) -> (usize, usize) {
        (tile * self.tc, ((tile + 1) * self.tc).min(self.m))
    }
    fn has_targets(&self, r0: usize, r1: usize) -> bool {
        self.offs[r1] > self.offs[r0]
    }
    /// The candidate excluded from anchor `i`'s softmax, when it lies in `c0..c1`.
    fn self_in(&self, i: usize, c0: usize, c1: usize) -> Option<usize> {
        self.self_offset
            .map(|o| i + o)
            .filter(|j| (c0..c1).contains(j))
            .map(|j| j - c0)
    }
    /// `tile <- scale * F[r0..r1] G[c0..c1]^T` (`(r1 - r0) x (c1 - c0)`), on this thread.
    fn scores(&self, (r0, r1): (usize, usize), (c0, c1): (usize, usize), tile: &mut [f32]) {
        let d = self.d;
        gemm(
            &GemmParams::default()
                .alpha(self.scale)
                .trans_b(Transpose::Yes)
                .sequential(),
            MatRef::row_major(&self.f[r0 * d..r1 * d], r1 - r0, d).expect("checked shape"),
            MatRef::row_major(&self.g[c0 * d..c1 * d], c1 - c0, d).expect("checked shape"),
            MatMut::row_major(tile, r1 - r0, c1 - c0).expect("checked shape"),
        )
        .expect("checked shapes");
    }
}

/// Forward: the target scores of rows `r0..r1` (their slots `ts`, `above` start at
/// `offs[r0]`).
struct TargetScores<'a, 'o> {
    cx: Ctx<'a>,
    r0: usize,
    r1: usize,
    ts: &'o mut [f32],
    above: &'o mut [u32],
}

impl Kernel for TargetScores<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let cx = self.cx;
        let (d, base) = (cx.d, cx.offs[self.r0]);
        for i in self.r0..self.r1 {
            let fi = &cx.f[i * d..(i + 1) * d];
            for k in cx.offs[i]..cx.offs[i + 1] {
                let c = cx.cand[k] as usize;
                self.ts[k - base] = cx.scale * dot(s, fi, &cx.g[c * d..(c + 1) * d]);
                self.above[k - base] = 0;
            }
        }
    }
}

/// Forward: folds one score tile (rows `r0..r1`, columns `c0..c1`) into the running maximum
/// and sum of each row and counts the non-target candidates above each target. Returns the
/// first row whose scores are not finite.
struct FoldTile<'a, 'o> {
    cx: Ctx<'a>,
    rows: (usize, usize),
    cols: (usize, usize),
    tile: &'o mut [f32],
    run_max: &'o mut [f32],
    run_sum: &'o mut [f32],
    ts: &'o [f32],
    above: &'o mut [u32],
}

impl Kernel for FoldTile<'_, '_> {
    type Out = Result<(), usize>;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> Self::Out {
        let cx = self.cx;
        let ((r0, r1), (c0, c1)) = (self.rows, self.cols);
        let w = c1 - c0;
        let base = cx.offs[r0];
        for i in r0..r1 {
            let (k0, k1) = (cx.offs[i], cx.offs[i + 1]);
            if k0 == k1 {
                continue; // no targets: this row's statistics are never used
            }
            let li = i - r0;
            let row = &mut self.tile[li * w..(li + 1) * w];
            let (mut mt, finite) = max_finite(s, row);
            if !finite {
                return Err(i);
            }
            if let Some(j) = cx.self_in(i, c0, c1) {
                let was = row[j];
                row[j] = f32::NEG_INFINITY;
                if was == mt {
                    mt = max_finite(s, row).0;
                }
            }
            if mt > f32::NEG_INFINITY {
                let (m_old, s_old) = (self.run_max[li], self.run_sum[li]);
                let m_new = m_old.max(mt);
                let rescaled = if s_old == 0.0 {
                    0.0
                } else {
                    s_old * (m_old - m_new).exp()
                };
                self.run_max[li] = m_new;
                self.run_sum[li] = rescaled + sum_exp(s, row, m_new);
            }
            // Non-target candidates above each target: all candidates above it, minus the
            // target candidates of this tile above it (the self is -inf, never above).
            for k in k0..k1 {
                let thr = self.ts[k - base];
                let mut cnt = count_above(s, row, thr);
                for &c in &cx.cand[k0..k1] {
                    let c = c as usize;
                    if (c0..c1).contains(&c) && row[c - c0] > thr {
                        cnt -= 1;
                    }
                }
                self.above[k - base] += cnt;
            }
        }
        Ok(())
    }
}

/// Backward: turns a score tile into the gradient weights `W = dL/dS * scale` in place.
struct WeightTile<'a, 'o> {
    cx: Ctx<'a>,
    rows: (usize, usize),
    cols: (usize, usize),
    tile: &'o mut [f32],
    row_max: &'a [f32],
    row_ls: &'a [f32],
}

impl Kernel for WeightTile<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let cx = self.cx;
        let ((r0, r1), (c0, c1)) = (self.rows, self.cols);
        let w = c1 - c0;
        for i in r0..r1 {
            let (k0, k1) = (cx.offs[i], cx.offs[i + 1]);
            let li = i - r0;
            let row = &mut self.tile[li * w..(li + 1) * w];
            if k0 == k1 {
                row.fill(0.0);
                continue;
            }
            if let Some(j) = cx.self_in(i, c0, c1) {
                row[j] = f32::NEG_INFINITY;
            }
            let a = (k1 - k0) as f32 * cx.w_unit;
            scaled_softmax(s, row, self.row_max[i], self.row_ls[i], a);
            for &c in &cx.cand[k0..k1] {
                let c = c as usize;
                if (c0..c1).contains(&c) {
                    row[c - c0] -= cx.w_unit;
                }
            }
        }
    }
}

/// A row tile's slices of the forward's per-row and per-target outputs: `row_max`,
/// `row_ls` from the tile's first row, `ts`, `above` from that row's first target.
type FwdSlices<'s> = (&'s mut [f32], &'s mut [f32], &'s mut [f32], &'s mut [u32]);

/// Forward over row tiles `lo..hi` by the fixed tree of [`tree_reduce`]; the slices start at
/// row `lo * tr` and at that row's first target. Returns (loss sum, hits) or the first row
/// whose scores overflow (the leftmost tile's).
fn forward_tree(
    cx: &Ctx<'_>,
    lo: usize,
    hi: usize,
    slices: FwdSlices<'_>,
) -> Result<(f64, usize), usize> {
    tree_reduce(
        lo,
        hi,
        slices,
        &|(row_max, row_ls, ts, above): FwdSlices<'_>, lo, mid| {
            let (r_lo, r_mid) = (cx.rows(lo).0, cx.rows(mid).0);
            let split_t = cx.offs[r_mid] - cx.offs[r_lo];
            let (mx_l, mx_r) = row_max.split_at_mut(r_mid - r_lo);
            let (ls_l, ls_r) = row_ls.split_at_mut(r_mid - r_lo);
            let (ts_l, ts_r) = ts.split_at_mut(split_t);
            let (ab_l, ab_r) = above.split_at_mut(split_t);
            ((mx_l, ls_l, ts_l, ab_l), (mx_r, ls_r, ts_r, ab_r))
        },
        &|tile, (row_max, row_ls, ts, above)| forward_tile(cx, tile, row_max, row_ls, ts, above),
        &|l, r| {
            let (l, r) = (l?, r?);
            Ok((l.0 + r.0, l.1 + r.1))
        },
    )
}

/// One row tile of [`forward_tree`]: its (loss sum, hits) or the first row whose scores
/// overflow.
fn forward_tile(
    cx: &Ctx<'_>,
    tile: usize,
    row_max: &mut [f32],
    row_ls: &mut [f32],
    ts: &mut [f32],
    above: &mut [u32],
) -> Result<(f64, usize), usize> {
    let (r0, r1) = cx.rows(tile);
    if !cx.has_targets(r0, r1) {
        return Ok((0.0, 0));
    }
    dispatch(TargetScores {
        cx: *cx,
        r0,
        r1,
        ts: &mut *ts,
        above: &mut *above,
    });
    row_max.fill(f32::NEG_INFINITY);
    row_ls.fill(0.0); // the running sum until the end of the sweep
    let col_tiles = cx.m.div_ceil(cx.tc);
    with_tile(cx.tr * cx.tc, |tile| -> Result<(), usize> {
        for ct in 0..col_tiles {
            let cols = cx.cols(ct);
            let tile = &mut tile[..(r1 - r0) * (cols.1 - cols.0)];
            cx.scores((r0, r1), cols, tile);
            dispatch(FoldTile {
                cx: *cx,
                rows: (r0, r1),
                cols,
                tile,
                run_max: &mut *row_max,
                run_sum: &mut *row_ls,
                ts: &*ts,
                above: &mut *above,
            })?;
        }
        Ok(())
    })?;
    let base = cx.offs[r0];
    let (mut loss, mut hits) = (0.0f64, 0usize);
    for i in r0..r1 {
        let (k0, k1) = (cx.offs[i], cx.offs[i + 1]);
        if k0 == k1 {
            continue;
        }
        let li = i - r0;
        row_ls[li] = row_ls[li].ln();
        let (m, ls) = (f64::from(row_max[li]), f64::from(row_ls[li]));
        let kk = k1 - k0;
        for k in k0..k1 {
            let t = ts[k - base];
            loss += (m - f64::from(t)) + ls;
            let higher_targets = ts[k0 - base..k1 - base].iter().filter(|&&u| u > t).count();
            let rank = 1 + above[k - base] as usize + higher_targets;
            hits += usize::from(rank <= kk);
        }
    }
    Ok((loss, hits))
}

impl Default for QtInBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl QtInBatch {
    /// A workspace with the default tiles ([`QT_TILE_ROWS`] x [`QT_TILE_COLS`]); allocates
    /// nothing until the first forward pass.
    pub fn new() -> Self {
        Self {
            tile_rows: QT_TILE_ROWS,
            tile_cols: QT_TILE_COLS,
            offs: Vec::new(),
            cand: Vec::new(),
            ts: Vec::new(),
            above: Vec::new(),
            row_max: Vec::new(),
            row_ls: Vec::new(),
            seen: None,
        }
    }

    /// A workspace with `tile_rows` anchors per row tile and `tile_cols` candidates per column
    /// tile. Results depend on the tile sizes (the order of the sums), never on the threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a tile size is 0.
    pub fn with_tiles(tile_rows: usize, tile_cols: usize) -> Result<Self> {
        if tile_rows == 0 || tile_cols == 0 {
            return Err(invalid(
                "QtInBatch::with_tiles",
                format!("tile sizes must be positive, got {tile_rows} x {tile_cols}"),
            ));
        }
        Ok(Self {
            tile_rows,
            tile_cols,
            ..Self::new()
        })
    }

    /// The tile sizes `(rows, cols)`.
    pub fn tiles(&self) -> (usize, usize) {
        (self.tile_rows, self.tile_cols)
    }

    /// Checks a batch and groups its targets by anchor (into `offs` and `cand`).
    fn prepare(&mut self, b: &QtBatch<'_>) -> Result<()> {
        const OP: &str = OP_FWD;
        let (n, m, d) = (b.n, b.m, b.d);
        if d == 0 {
            return Err(invalid(OP, "embedding dimension d = 0".into()));
        }
        if !b.scale.is_finite() {
            return Err(invalid(OP, format!("scale {} is not finite", b.scale)));
        }
        check_matrix(OP, "F", b.f, n, d)?;
        check_matrix(OP, "G", b.g, m, d)?;
        if let Some(o) = b.self_offset {
            if n.checked_add(o).is_none_or(|e| e > m) {
                return Err(invalid(
                    OP,
                    format!("self_offset {o} puts the selves of {n} anchors past {m} candidates"),
                ));
            }
        }
        if b.targets.is_empty() {
            return Err(invalid(OP, "no target pairs".into()));
        }
        for (k, &(i, c)) in b.targets.iter().enumerate() {
            if i as usize >= n || c as usize >= m {
                return Err(invalid(
                    OP,
                    format!(
                        "target {k} = ({i}, {c}) out of range for {n} anchors and {m} candidates"
                    ),
                ));
            }
            if b.self_offset.is_some_and(|o| c as usize == i as usize + o) {
                return Err(invalid(
                    OP,
                    format!(
                        "target {k} = ({i}, {c}) is anchor {i}'s own sentence, which is excluded"
                    ),
                ));
            }
        }
        // Counting sort by anchor, then candidates ascending within each anchor.
        let t = b.targets.len();
        self.offs.clear();
        self.offs.resize(n + 1, 0);
        for &(i, _) in b.targets {
            self.offs[i as usize + 1] += 1;
        }
        for i in 0..n {
            self.offs[i + 1] += self.offs[i];
        }
        self.cand.clear();
        self.cand.resize(t, 0);
        for &(i, c) in b.targets {
            let i = i as usize;
            // `offs[i]` advances as a cursor and is restored below.
            self.cand[self.offs[i]] = c;
            self.offs[i] += 1;
        }
        for i in (1..=n).rev() {
            self.offs[i] = self.offs[i - 1];
        }
        self.offs[0] = 0;
        for i in 0..n {
            let list = &mut self.cand[self.offs[i]..self.offs[i + 1]];
            list.sort_unstable();
            if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
                return Err(invalid(
                    OP,
                    format!("target pair ({i}, {}) appears more than once", w[0]),
                ));
            }
        }
        Ok(())
    }

    fn ctx<'a>(&'a self, b: &QtBatch<'a>) -> Ctx<'a> {
        Ctx {
            f: b.f,
            g: b.g,
            n: b.n,
            m: b.m,
            d: b.d,
            scale: b.scale,
            self_offset: b.self_offset,
            tr: self.tile_rows,
            tc: self.tile_cols,
            offs: &self.offs,
            cand: &self.cand,
            w_unit: (f64::from(b.scale) / b.targets.len() as f64) as f32,
        }
    }

    /// The loss and the accuracy of one batch; keeps what [`QtInBatch::backward`] needs.
    ///
    /// # Errors
    /// - [`Error::ShapeMismatch`] when `f` or `g` does not hold `n x d` / `m x d` values.
    /// - [`Error::InvalidArgument`] when `d == 0`; `scale` is not finite; `f` or `g` holds a
    ///   NaN or an infinity (naming the row); `n + self_offset > m`; `targets` is empty,
    ///   holds an index out of range, a pair twice, or a pair whose candidate is the
    ///   anchor's excluded self; or the scores of a row overflow `f32` (naming the row).
    pub fn forward(&mut self, b: &QtBatch<'_>) -> Result<QtStats> {
        self.seen = None;
        self.prepare(b)?;
        let (n, t) = (b.n, b.targets.len());
        let mut row_max = std::mem::take(&mut self.row_max);
        let mut row_ls = std::mem::take(&mut self.row_ls);
        let mut ts = std::mem::take(&mut self.ts);
        let mut above = std::mem::take(&mut self.above);
        row_max.clear();
        row_max.resize(n, 0.0);
        row_ls.clear();
        row_ls.resize(n, 0.0);
        ts.clear();
        ts.resize(t, 0.0);
        above.clear();
        above.resize(t, 0);
        let cx = self.ctx(b);
        let row_tiles = n.div_ceil(cx.tr);
        let res = forward_tree(
            &cx,
            0,
            row_tiles,
            (&mut row_max, &mut row_ls, &mut ts, &mut above),
        );
        (self.row_max, self.row_ls, self.ts, self.above) = (row_max, row_ls, ts, above);
        let (loss, hits) = res.map_err(|row| {
            invalid(
                OP_FWD,
                format!(
                    "the scores of anchor row {row} are not finite (scale * f . g overflows f32)"
                ),
            )
        })?;
        self.seen = Some(Seen {
            n,
            m: b.m,
            d: b.d,
            t,
            scale: b.scale.to_bits(),
            self_offset: b.self_offset,
        });
        Ok(QtStats {
            loss: loss / t as f64,
            hits,
            targets: t,
        })
    }

    /// The gradients `df` (`n x d`) and `dg` (`m x d`) of the mean loss, overwritten. The
    /// batch must be the one of the preceding successful [`QtInBatch::forward`], with the
    /// same values (the shapes, the scale, the offset and the target set are checked).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no forward preceded it or the batch differs from the
    /// forward's; [`Error::ShapeMismatch`] when `df` or `dg` has the wrong length.
    pub fn backward(&mut self, b: &QtBatch<'_>, df: &mut [f32], dg: &mut [f32]) -> Result<()> {
        let Some(seen) = self.seen else {
            return Err(invalid(
                OP_BWD,
                "no successful forward pass to differentiate".into(),
            ));
        };
        let now = Seen {
            n: b.n,
            m: b.m,
            d: b.d,
            t: b.targets.len(),
            scale: b.scale.to_bits(),
            self_offset: b.self_offset,
        };
        if now != seen || b.f.len() != b.n * b.d || b.g.len() != b.m * b.d {
            return Err(invalid(
                OP_BWD,
                format!("the batch differs from the forward's: {now:?} vs {seen:?}"),
            ));
        }
        for &(i, c) in b.targets {
            let i = i as usize;
            let ok = i < b.n
                && self.cand[self.offs[i]..self.offs[i + 1]]
                    .binary_search(&c)
                    .is_ok();
            if !ok {
                return Err(invalid(
                    OP_BWD,
                    format!("target ({i}, {c}) was not in the forward's targets"),
                ));
            }
        }
        check_len("QtInBatch::backward (dF vs F)", df.len(), b.n * b.d)?;
        check_len("QtInBatch::backward (dG vs G)", dg.len(), b.m * b.d)?;
        let cx = self.ctx(b);
        let (row_max, row_ls) = (&self.row_max[..], &self.row_ls[..]);
        let d = cx.d;
        let (row_tiles, col_tiles) = (cx.n.div_ceil(cx.tr), cx.m.div_ceil(cx.tc));
        // dF = W G, parallel over row tiles.
        df.par_chunks_mut(cx.tr * d)
            .enumerate()
            .for_each(|(rt, out)| {
                let rows = cx.rows(rt);
                if !cx.has_targets(rows.0, rows.1) {
                    out.fill(0.0);
                    return;
                }
                with_tile(cx.tr * cx.tc, |tile| {
                    for ct in 0..col_tiles {
                        let cols = cx.cols(ct);
                        let (h, w) = (rows.1 - rows.0, cols.1 - cols.0);
                        let tile = &mut tile[..h * w];
                        cx.scores(rows, cols, tile);
                        dispatch(WeightTile {
                            cx,
                            rows,
                            cols,
                            tile,
                            row_max,
                            row_ls,
                        });
                        gemm(
                            &GemmParams::default()
                                .beta(if ct == 0 { 0.0 } else { 1.0 })
                                .sequential(),
                            MatRef::row_major(tile, h, w).expect("checked shape"),
                            MatRef::row_major(&cx.g[cols.0 * d..cols.1 * d], w, d)
                                .expect("checked shape"),
                            MatMut::row_major(out, h, d).expect("checked shape"),
                        )
                        .expect("checked shapes");
                    }
                });
            });
        // dG = W^T F, parallel over column tiles.
        dg.par_chunks_mut(cx.tc * d)
            .enumerate()
            .for_each(|(ct, out)| {
                let cols = cx.cols(ct);
                let mut first = true;
                with_tile(cx.tr * cx.tc, |tile| {
                    for rt in 0..row_tiles {
                        let rows = cx.rows(rt);
                        if !cx.has_targets(rows.0, rows.1) {
                            continue;
                        }
                        let (h, w) = (rows.1 - rows.0, cols.1 - cols.0);
                        let tile = &mut tile[..h * w];
                        cx.scores(rows, cols, tile);
                        dispatch(WeightTile {
                            cx,
                            rows,
                            cols,
                            tile,
                            row_max,
                            row_ls,
                        });
                        gemm(
                            &GemmParams::default()
                                .beta(if first { 0.0 } else { 1.0 })
                                .trans_a(Transpose::Yes)
                                .sequential(),
                            MatRef::row_major(tile, h, w).expect("checked shape"),
                            MatRef::row_major(&cx.f[rows.0 * d..rows.1 * d], h, d)
                                .expect("checked shape"),
                            MatMut::row_major(out, w, d).expect("checked shape"),
                        )
                        .expect("checked shapes");
                        first = false;
                    }
                });
                if first {
                    out.fill(0.0);
                }
            });
        Ok(())
    }

    /// [`QtInBatch::forward`] then [`QtInBatch::backward`].
    ///
    /// # Errors
    /// As the two passes.
    pub fn forward_backward(
        &mut self,
        b: &QtBatch<'_>,
        df: &mut [f32],
        dg: &mut [f32],
    ) -> Result<QtStats> {
        check_len("QtInBatch::forward_backward (dF vs F)", df.len(), b.f.len())?;
        check_len("QtInBatch::forward_backward (dG vs G)", dg.len(), b.g.len())?;
        let stats = self.forward(b)?;
        self.backward(b, df, dg)?;
        Ok(stats)
    }
}

/// Triplets per parallel chunk of [`qt_pairwise_hits`].
const HITS_CHUNK: usize = 256;

/// The pairwise objective's accuracy count: how many triplets `(i, p, q)` of rows of `a`
/// and `b` (`d` wide) have `a_i . (b_q - b_p) < 0` (the positive scores above the negative),
/// each margin summed in `f64` in index order. The count is an integer sum, so it is the same
/// for any thread count; allocates nothing.
///
/// # Panics
/// An index past the rows of `a` or `b` (the graph checks its triplets when they are set).
pub fn qt_pairwise_hits(a: &[f32], b: &[f32], d: usize, triplets: &[(u32, u32, u32)]) -> usize {
    triplets
        .par_chunks(HITS_CHUNK)
        .map(|chunk| {
            chunk
                .iter()
                .filter(|&&(i, p, q)| {
                    let ai = &a[i as usize * d..][..d];
                    let bp = &b[p as usize * d..][..d];
                    let bq = &b[q as usize * d..][..d];
                    let margin: f64 = ai
                        .iter()
                        .zip(bq.iter().zip(bp))
                        .map(|(&x, (&yq, &yp))| f64::from(x) * (f64::from(yq) - f64::from(yp)))
                        .sum();
                    margin < 0.0
                })
                .count()
        })
        .sum()
}

/// The usual Quick Thoughts targets for a batch of `n` contiguous sentences: each sentence's
/// previous and next sentence (in that order, anchors ascending), skipping the batch edges
/// and never crossing a document boundary. `doc_starts` lists the sentences that begin a new
/// document (strictly increasing, each `< n`; 0 may be listed or not). Candidates are
/// `neighbour + self_offset` (the position of the neighbour among the candidates, as for
/// [`QtBatch::self_offset`]). `out` is cleared and filled; it allocates only when it grows.
///
/// # Errors
/// [`Error::InvalidArgument`] when `doc_starts` is not strictly increasing or holds an index
/// `>= n`, or an index does not fit `u32`.
pub fn qt_neighbor_targets(
    n: usize,
    self_offset: usize,
    doc_starts: &[usize],
    out: &mut Vec<(u32, u32)>,
) -> Result<()> {
    const OP: &str = "qt_neighbor_targets";
    if let Some(w) = doc_starts.windows(2).find(|w| w[0] >= w[1]) {
        return Err(invalid(
            OP,
            format!(
                "document starts must be strictly increasing, got {} then {}",
                w[0], w[1]
            ),
        ));
    }
    if let Some(&s) = doc_starts.iter().find(|&&s| s >= n) {
        return Err(invalid(
            OP,
            format!("document start {s} is not below n = {n}"),
        ));
    }
    if n.checked_add(self_offset)
        .is_none_or(|e| u32::try_from(e).is_err())
    {
        return Err(invalid(
            OP,
            format!("n + self_offset = {n} + {self_offset} does not fit u32"),
        ));
    }
    out.clear();
    let mut next_start = doc_starts.iter().copied().peekable();
    // `doc_begin`: the first sentence of the current document.
    let mut doc_begin = 0usize;
    for i in 0..n {
        while next_start.peek().is_some_and(|&s| s <= i) {
            doc_begin = next_start.next().expect("peeked");
        }
        let doc_end = next_start.peek().copied().unwrap_or(n);
        if i > doc_begin {
            out.push((i as u32, (i - 1 + self_offset) as u32));
        }
        if i + 1 < doc_end {
            out.push((i as u32, (i + 1 + self_offset) as u32));
        }
    }
    Ok(())
}
