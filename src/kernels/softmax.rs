//! Row-wise softmax, log-softmax and softmax cross-entropy with integer labels, computed
//! stably by subtracting each row's maximum (the log-sum-exp trick).
//!
//! - Math: for a row `z` of `c` logits with label `y`, `lse = m + ln sum_j e^(z_j - m)` with
//!   `m = max_j z_j`, the loss is `lse - z_y` and its gradient `softmax(z) - onehot(y)`. Every
//!   exponent is `<= 0`, so logits of any finite size (1e30, `f32::MAX`) neither overflow nor
//!   give NaN; the sum is at least 1, so its logarithm is finite.
//! - Vectorization: the exponentials go through the crate's generic vectorized `exp` on its
//!   `Simd` token (AVX2+FMA when the runtime dispatch chose it, the portable backend
//!   otherwise).
//! - Parallelism and determinism: rows are split into chunks of [`rows_per_chunk`]`(c)` rows,
//!   a number that depends on `c` only, never on the thread count. Each chunk sums its row
//!   losses in `f64` in row order; chunk sums are combined by the fixed binary tree over chunk
//!   indices of [`super::reduce`] (`rayon::join` on the midpoint). Results are bit-identical
//!   for any number of threads (on one instruction set) and nothing is allocated.

use super::reduce::tree_reduce;
use super::simd::{Portable, Simd, LANES};
use super::vmath::exp;
use crate::error::{check_len, Error, Result};

/// The parallel work unit, in logits: a chunk holds `max(1, CHUNK_ELEMS / c)` rows.
const CHUNK_ELEMS: usize = 8 * 1024;

/// Rows per parallel chunk for rows of `c` logits (depends on `c` only).
pub fn rows_per_chunk(c: usize) -> usize {
    (CHUNK_ELEMS / c.max(1)).max(1)
}

/// What [`softmax_cross_entropy`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XentStats {
    /// Mean loss over the rows, `(1/n) sum_i (lse_i - z_{i, y_i})`, accumulated in `f64`
    /// (kept in `f64` so that a loss above `f32::MAX` is still a number).
    pub loss: f64,
    /// Rows whose label is the *first* maximum of the row: on a tie the earliest index wins,
    /// as in `argmax` of NumPy and PyTorch, so a tie counts as correct only when the label
    /// is the smallest tied index.
    pub correct: usize,
}

/// Mean softmax cross-entropy over `n` rows of `c` logits (row-major `logits`, `n x c`) with
/// integer `labels`, the number of correct top-1 predictions, and optionally the gradient
/// `dlogits = (softmax(logits) - onehot(labels)) / n`, overwritten (`n x c`).
///
/// Deterministic for any thread count; allocates nothing.
///
/// # Errors
/// - [`Error::ShapeMismatch`] when `logits.len() != n * c`, `labels.len() != n` or
///   `dlogits.len() != n * c`.
/// - [`Error::InvalidArgument`] when `c == 0`, when `n == 0` (the mean of no rows is
///   undefined; a trainer that silently reported a loss of 0 for an empty batch would hide an
///   empty data set, so this is an error), when a label is `>= c` (naming the first such
///   row), or when a logit is NaN or infinite (naming the first such row). On the last error
///   `dlogits` holds unspecified values.
pub fn softmax_cross_entropy(
    logits: &[f32],
    n: usize,
    c: usize,
    labels: &[u32],
    dlogits: Option<&mut [f32]>,
) -> Result<XentStats> {
    const OP: &str = "softmax_cross_entropy";
    check_shape(OP, logits, n, c)?;
    check_len("softmax_cross_entropy (labels vs rows)", labels.len(), n)?;
    if let Some(d) = dlogits.as_deref() {
        check_len(
            "softmax_cross_entropy (dlogits vs logits)",
            d.len(),
            logits.len(),
        )?;
    }
    if n == 0 {
        return Err(invalid(
            OP,
            "no rows (n = 0): the mean loss is undefined".into(),
        ));
    }
    if let Some(row) = labels.iter().position(|&y| y as usize >= c) {
        return Err(invalid(
            OP,
            format!(
                "label {} of row {row} is out of range for {c} classes",
                labels[row]
            ),
        ));
    }
    let job = Xent {
        c,
        n,
        inv_n: 1.0 / n as f32,
    };
    let rpc = rows_per_chunk(c);
    let chunks = n.div_ceil(rpc);
    let (loss, correct) = xent_tree(&job, rpc, 0, chunks, logits, labels, dlogits)
        .map_err(|row| non_finite(OP, row))?;
    Ok(XentStats {
        loss: loss / n as f64,
        correct,
    })
}

/// `y = softmax(x)` row by row (`n x c`, row-major). Deterministic; allocates nothing.
///
/// # Errors
/// [`Error::ShapeMismatch`] on lengths other than `n * c`; [`Error::InvalidArgument`] when
/// `c == 0` or a value is NaN or infinite (naming the first such row; `y` then holds
/// unspecified values).
pub fn softmax_rows(x: &[f32], n: usize, c: usize, y: &mut [f32]) -> Result<()> {
    rowwise("softmax_rows", x, n, c, y, RowOp::Softmax)
}

/// `y = log_softmax(x) = x - lse(x)` row by row (`n x c`, row-major).
///
/// # Errors
/// As [`softmax_rows`].
pub fn log_softmax_rows(x: &[f32], n: usize, c: usize, y: &mut [f32]) -> Result<()> {
    rowwise("log_softmax_rows", x, n, c, y, RowOp::LogSoftmax)
}

fn invalid(op: &'static str, msg: String) -> Error {
    Error::InvalidArgument { op, msg }
}

fn non_finite(op: &'static str, row: usize) -> Error {
    invalid(op, format!("row {row} holds a NaN or infinite value"))
}

fn check_shape(op: &'static str, x: &[f32], n: usize, c: usize) -> Result<()> {
    if c == 0 {
        return Err(invalid(op, "no classes (c = 0)".into()));
    }
    let want = n
        .checked_mul(c)
        .ok_or_else(|| invalid(op, "n * c overflows".into()))?;
    check_len(op, x.len(), want)
}

// ---------------------------------------------------------------------------------------
// Row kernels, generic over the SIMD token.

/// The maximum of a non-empty row and whether every value is finite.
#[inline(always)]
fn row_max<S: Simd>(s: S, x: &[f32]) -> (f32, bool) {
    let zero = s.splat(0.0);
    let mut mx = s.splat(f32::NEG_INFINITY);
    // `v * 0` is 0 for finite `v` and NaN for an infinity or a NaN.
    let mut bad = zero;
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        let v = s.load(c);
        mx = s.max(v, mx);
        bad = s.fma(v, zero, bad);
    }
    let mut m = s.reduce_max(mx);
    let mut fin = s.reduce_add(bad) == 0.0;
    for &v in it.remainder() {
        m = m.max(v);
        fin &= v.is_finite();
    }
    (m, fin)
}

/// `sum_j e^(x_j - m)`, writing each term to `out` when given.
#[inline(always)]
fn sum_exp<S: Simd>(s: S, x: &[f32], m: f32, mut out: Option<&mut [f32]>) -> f32 {
    let vm = s.splat(m);
    let mut acc = s.splat(0.0);
    let full = x.len() / LANES * LANES;
    for j in (0..full).step_by(LANES) {
        let e = exp(s, s.sub(s.load(&x[j..]), vm));
        if let Some(o) = out.as_deref_mut() {
            s.store(&mut o[j..], e);
        }
        acc = s.add(acc, e);
    }
    if full < x.len() {
        let rest = x.len() - full;
        // Padding lanes are `-inf`, whose exponential is 0.
        let mut buf = [f32::NEG_INFINITY; LANES];
        buf[..rest].copy_from_slice(&x[full..]);
        let e = exp(s, s.sub(s.load(&buf), vm));
        s.store(&mut buf, e);
        if let Some(o) = out {
            o[full..].copy_from_slice(&buf[..rest]);
        }
        acc = s.add(acc, e);
    }
    s.reduce_add(acc)
}

/// `y <- y * a + b` over a row.
#[inline(always)]
fn scale_shift<S: Simd>(s: S, y: &mut [f32], a: f32, b: f32) {
    let (va, vb) = (s.splat(a), s.splat(b));
    let mut it = y.chunks_exact_mut(LANES);
    for c in &mut it {
        let v = s.fma(s.load(c), va, vb);
        s.store(c, v);
    }
    for v in it.into_remainder() {
        *v = *v * a + b;
    }
}

/// Whether `label` is the first maximum of `x` (whose maximum is `m`).
#[inline(always)]
fn first_argmax_is(x: &[f32], m: f32, label: usize) -> bool {
    x[label] == m && !x[..label].contains(&m)
}

struct Xent {
    c: usize,
    n: usize,
    inv_n: f32,
}

/// One chunk of rows: `(sum of row losses, correct rows)`, or the first non-finite row
/// (relative to the chunk).
#[inline(always)]
fn xent_chunk<S: Simd>(
    s: S,
    job: &Xent,
    x: &[f32],
    labels: &[u32],
    mut dl: Option<&mut [f32]>,
) -> Result<(f64, usize), usize> {
    let c = job.c;
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for (i, (row, &y)) in x.chunks_exact(c).zip(labels).enumerate() {
        let y = y as usize;
        let (m, finite) = row_max(s, row);
        if !finite {
            return Err(i);
        }
        let sum = match dl.as_deref_mut() {
            Some(d) => {
                let d = &mut d[i * c..(i + 1) * c];
                let sum = sum_exp(s, row, m, Some(&mut *d));
                // p_j / n = e^(z_j - m) / (sum * n); the label's entry then loses 1 / n.
                let a = (1.0 / (f64::from(sum) * job.n as f64)) as f32;
                scale_shift(s, d, a, 0.0);
                d[y] -= job.inv_n;
                sum
            }
            None => sum_exp(s, row, m, None),
        };
        loss += (f64::from(m) - f64::from(row[y])) + f64::from(sum).ln();
        correct += usize::from(first_argmax_is(row, m, y));
    }
    Ok((loss, correct))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn xent_chunk_avx2(
    s: super::simd::Avx2,
    job: &Xent,
    x: &[f32],
    labels: &[u32],
    dl: Option<&mut [f32]>,
) -> Result<(f64, usize), usize> {
    xent_chunk(s, job, x, labels, dl)
}

fn xent_chunk_dispatch(
    job: &Xent,
    x: &[f32],
    labels: &[u32],
    dl: Option<&mut [f32]>,
) -> Result<(f64, usize), usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        return unsafe { xent_chunk_avx2(s, job, x, labels, dl) };
    }
    xent_chunk(Portable, job, x, labels, dl)
}

/// A chunk's logits, labels and (optionally) gradient rows.
type XentSlices<'s> = (&'s [f32], &'s [u32], Option<&'s mut [f32]>);

/// Chunks `lo..hi` (of `rpc` rows each; `x`, `labels`, `dl` start at chunk `lo`), combined by
/// the fixed binary tree of [`tree_reduce`]. Errors carry the absolute row (the leftmost
/// failing row wins).
fn xent_tree(
    job: &Xent,
    rpc: usize,
    lo: usize,
    hi: usize,
    x: &[f32],
    labels: &[u32],
    dl: Option<&mut [f32]>,
) -> Result<(f64, usize), usize> {
    tree_reduce(
        lo,
        hi,
        (x, labels, dl),
        &|(x, labels, dl): XentSlices<'_>, lo, mid| {
            let rows = (mid - lo) * rpc;
            let (xl, xr) = x.split_at(rows * job.c);
            let (yl, yr) = labels.split_at(rows);
            let (dll, dlr) = match dl {
                Some(d) => {
                    let (a, b) = d.split_at_mut(rows * job.c);
                    (Some(a), Some(b))
                }
                None => (None, None),
            };
            ((xl, yl, dll), (xr, yr, dlr))
        },
        &|lo, (x, labels, dl)| xent_chunk_dispatch(job, x, labels, dl).map_err(|r| lo * rpc + r),
        &|l, r| {
            let (l, r) = (l?, r?);
            Ok((l.0 + r.0, l.1 + r.1))
        },
    )
}

// ---------------------------------------------------------------------------------------
// Softmax / log-softmax rows.

#[derive(Clone, Copy)]
enum RowOp {
    Softmax,
    LogSoftmax,
}

#[inline(always)]
fn rows_chunk<S: Simd>(s: S, op: RowOp, c: usize, x: &[f32], y: &mut [f32]) -> Result<(), usize> {
    for (i, (row, out)) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)).enumerate() {
        let (m, finite) = row_max(s, row);
        if !finite {
            return Err(i);
        }
        match op {
            RowOp::Softmax => {
                let sum = sum_exp(s, row, m, Some(&mut *out));
                scale_shift(s, out, 1.0 / sum, 0.0);
            }
            RowOp::LogSoftmax => {
                let sum = sum_exp(s, row, m, None);
                // x - m is computed first (exact when x is near m), then ln(sum) subtracted.
                let ls = sum.ln();
                out.copy_from_slice(row);
                scale_shift(s, out, 1.0, -m);
                scale_shift(s, out, 1.0, -ls);
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_chunk_avx2(
    s: super::simd::Avx2,
    op: RowOp,
    c: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), usize> {
    rows_chunk(s, op, c, x, y)
}

fn rows_chunk_dispatch(op: RowOp, c: usize, x: &[f32], y: &mut [f32]) -> Result<(), usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        return unsafe { rows_chunk_avx2(s, op, c, x, y) };
    }
    rows_chunk(Portable, op, c, x, y)
}

fn rowwise(
    name: &'static str,
    x: &[f32],
    n: usize,
    c: usize,
    y: &mut [f32],
    op: RowOp,
) -> Result<()> {
    use rayon::prelude::*;
    check_shape(name, x, n, c)?;
    check_len(name, y.len(), x.len())?;
    let rpc = rows_per_chunk(c);
    let bad = y
        .par_chunks_mut(rpc * c)
        .zip(x.par_chunks(rpc * c))
        .enumerate()
        .map(|(k, (yc, xc))| {
            rows_chunk_dispatch(op, c, xc, yc)
                .err()
                .map(|r| k * rpc + r)
        })
        .flatten()
        .min();
    match bad {
        Some(row) => Err(non_finite(name, row)),
        None => Ok(()),
    }
}
