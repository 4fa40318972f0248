//! The normalized similarity GEMM: `S_ij = (a_i / |a_i|) . (b_j / |b_j|) / tau`.
//!
//! Row norms are computed once (in `f64`, so `|z|^2` cannot overflow) and applied in the GEMM
//! epilogue as a per-row and a per-column scale, with `1 / tau` as `alpha`: the normalized
//! rows are never stored. A row whose norm is below [`NORM_EPS`] is divided by `NORM_EPS`
//! instead (as PyTorch's `F.normalize`), so a zero row has similarity 0 with everything.
//!
//! Scaling after the product needs the raw dot products to be finite and normal. When some
//! row's norm lies outside `[2^-60, 2^60]` the rows are first scaled by exact powers of two
//! into `[0.5, 2)` (the scale moves into the epilogue factor, so the result is unchanged up
//! to rounding); huge and tiny inputs therefore work too, at the cost of one copy.
//!
//! [`self_similarity`] uses the symmetry of `Z Z^T`: only the tiles on and above the
//! diagonal are multiplied and the others are mirrored, halving the work. `S_ij` and `S_ji`
//! are bit-identical. Work is split into fixed tiles, so the result is bit-identical for any
//! number of threads. Non-finite input, `tau <= 0`, `d = 0` and wrong lengths are errors.

use super::ntxent::NORM_EPS;
use crate::error::{check_len, Error, Result};
use crate::kernels::gemm::{gemm, Fused, GemmParams, MatMut, MatRef, Transpose};
use rayon::prelude::*;
use std::borrow::Cow;

const OP: &str = "similarity";

/// Output tile edge of the symmetric product.
const TILE: usize = 256;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

fn check_common(tau: f32, d: usize) -> Result<f32> {
    let alpha = 1.0 / tau;
    if !(tau.is_finite() && tau > 0.0 && alpha.is_finite()) {
        return Err(invalid(format!(
            "temperature tau = {tau}: must be positive and finite with a finite 1/tau"
        )));
    }
    if d == 0 {
        return Err(invalid("d = 0: rows must have at least one element".into()));
    }
    Ok(alpha)
}

/// Rows ready for the product: the data (scaled by powers of two when needed) and the
/// epilogue factor `1 / max(|z_i|, eps)` that goes with it.
struct Prepared<'a> {
    data: Cow<'a, [f32]>,
    inv: Vec<f32>,
}

fn prepare<'a>(what: &str, z: &'a [f32], rows: usize, d: usize) -> Result<Prepared<'a>> {
    let len = rows
        .checked_mul(d)
        .ok_or_else(|| invalid(format!("{what}: {rows} x {d} overflows")))?;
    check_len(OP, z.len(), len)?;
    let mut norms = vec![0.0f64; rows];
    let bad = norms
        .par_iter_mut()
        .zip(z.par_chunks(d))
        .enumerate()
        .with_min_len(64)
        .filter_map(|(i, (n, row))| {
            if row.iter().any(|x| !x.is_finite()) {
                return Some(i);
            }
            *n = row
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            None
        })
        .min();
    if let Some(i) = bad {
        return Err(invalid(format!("{what}: row {i} has a non-finite element")));
    }
    const LO: f64 = 1.0 / (1u64 << 60) as f64;
    const HI: f64 = (1u64 << 60) as f64;
    let safe = norms.iter().all(|&n| n == 0.0 || (LO..=HI).contains(&n));
    if safe {
        let inv = norms
            .iter()
            .map(|&n| (1.0 / n.max(NORM_EPS)) as f32)
            .collect();
        return Ok(Prepared {
            data: Cow::Borrowed(z),
            inv,
        });
    }
    // Scale each row by 2^-e so that its norm is in [0.5, 2): exact, and the epilogue
    // factor becomes 2^e / max(|z|, eps).
    let mut scaled = z.to_vec();
    let mut inv = vec![0.0f32; rows];
    scaled
        .par_chunks_mut(d)
        .zip(inv.par_iter_mut())
        .zip(norms.par_iter())
        .with_min_len(64)
        .for_each(|((row, inv), &n)| {
            let e = if n > 0.0 { n.log2().round() as i32 } else { 0 };
            let down = 2f64.powi(-e);
            for x in row.iter_mut() {
                *x = (f64::from(*x) * down) as f32;
            }
            *inv = (2f64.powi(e) / n.max(NORM_EPS)) as f32;
        });
    Ok(Prepared {
        data: Cow::Owned(scaled),
        inv,
    })
}

/// `out[i * cols + j] = S_ij` for `S = normalize(A) normalize(B)^T / tau`, with `A`
/// `rows_a x d` and `B` `rows_b x d` row-major and `out` `rows_a x rows_b`.
///
/// # Errors
/// [`Error::InvalidArgument`] for `tau <= 0` (or non-finite, or with an infinite `1/tau`),
/// `d = 0` or a non-finite input element (naming the matrix and row);
/// [`Error::ShapeMismatch`] for wrong lengths.
pub fn cross_similarity(
    a: &[f32],
    rows_a: usize,
    b: &[f32],
    rows_b: usize,
    d: usize,
    tau: f32,
    out: &mut [f32],
) -> Result<()> {
    let alpha = check_common(tau, d)?;
    let pa = prepare("A", a, rows_a, d)?;
    let pb = prepare("B", b, rows_b, d)?;
    check_len(OP, out.len(), rows_a.saturating_mul(rows_b))?;
    if rows_a == 0 || rows_b == 0 {
        return Ok(());
    }
    let epi = Fused {
        row_scale: Some(&pa.inv),
        col_scale: Some(&pb.inv),
        ..Fused::default()
    };
    gemm(
        &GemmParams::default()
            .alpha(alpha)
            .trans_b(Transpose::Yes)
            .epilogue(&epi),
        MatRef::row_major(&pa.data, rows_a, d)?,
        MatRef::row_major(&pb.data, rows_b, d)?,
        MatMut::row_major(out, rows_a, rows_b)?,
    )
}

/// `out[i * rows + j] = S_ij` for `S = normalize(Z) normalize(Z)^T / tau` (`Z` is
/// `rows x d` row-major): the tiles on and above the diagonal are computed, the others
/// mirrored. `out` is symmetric bit for bit.
///
/// # Errors
/// As [`cross_similarity`].
pub fn self_similarity(z: &[f32], rows: usize, d: usize, tau: f32, out: &mut [f32]) -> Result<()> {
    let alpha = check_common(tau, d)?;
    let p = prepare("Z", z, rows, d)?;
    check_len(OP, out.len(), rows.saturating_mul(rows))?;
    if rows == 0 {
        return Ok(());
    }
    let n = rows;
    let tiles = n.div_ceil(TILE);
    let data: &[f32] = &p.data;
    let inv = &p.inv[..];
    // Each task owns one row band of `out` and fills its tiles right of the diagonal.
    out.par_chunks_mut(TILE * n)
        .enumerate()
        .for_each(|(ti, band)| {
            let r0 = ti * TILE;
            let h = band.len() / n;
            let a = MatRef::row_major(&data[r0 * d..(r0 + h) * d], h, d).expect("band rows");
            for tj in ti..tiles {
                let c0 = tj * TILE;
                let w = TILE.min(n - c0);
                let b = MatRef::row_major(&data[c0 * d..(c0 + w) * d], w, d).expect("band rows");
                let epi = Fused {
                    row_scale: Some(&inv[r0..r0 + h]),
                    col_scale: Some(&inv[c0..c0 + w]),
                    ..Fused::default()
                };
                let c = MatMut::new(&mut band[c0..], h, w, n, 1).expect("tile view");
                gemm(
                    &GemmParams::default()
                        .alpha(alpha)
                        .trans_b(Transpose::Yes)
                        .epilogue(&epi)
                        .sequential(),
                    a,
                    b,
                    c,
                )
                .expect("tile gemm");
                if tj == ti {
                    // The diagonal tile: copy its upper triangle onto the lower one, so the
                    // matrix is symmetric bit for bit (the epilogue's two scale factors are
                    // applied in row-then-column order, so S_ij and S_ji could differ in
                    // the last bit if both were computed).
                    for r in 1..h {
                        for c in 0..r {
                            band[r * n + r0 + c] = band[c * n + r0 + r];
                        }
                    }
                }
            }
        });
    // Mirror: row band J takes its left part from the bands above it, which are only read
    // in their right parts (never written in this pass). The split at each band boundary
    // gives the borrow checker the same guarantee.
    for tj in 1..tiles {
        let (upper, lower) = out.split_at_mut(tj * TILE * n);
        let upper: &[f32] = upper;
        let c0 = tj * TILE;
        let band = &mut lower[..(TILE.min(n - c0)) * n];
        // Parallel over 32-row strips of the band; each copies a transposed 32 x 32 block
        // at a time, so reads and writes both stay within a few cache lines per row.
        band.par_chunks_mut(32 * n)
            .enumerate()
            .for_each(|(s, strip)| {
                let j0 = c0 + s * 32;
                let hs = strip.len() / n;
                for i0 in (0..c0).step_by(32) {
                    let i1 = (i0 + 32).min(c0);
                    for r in 0..hs {
                        let j = j0 + r;
                        let row = &mut strip[r * n..r * n + i1];
                        for i in i0..i1 {
                            row[i] = upper[i * n + j];
                        }
                    }
                }
            });
    }
    Ok(())
}
