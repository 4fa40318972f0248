//! Products with a skinny operand, without packing: the two products of a linear classifier
//! with few classes over many wide rows (the linear probe's full-batch objective).
//!
//! - [`xwt`]: `Z = X W^T + b`, `X` `n x d`, `W` `c x d`, `Z` `n x c`.
//! - [`ptx_add`]: `G += P^T X`, `P` `n x c`, `X` `n x d`, `G` `c x d`.
//!
//! With `c` around 10 the general GEMM packs `X` into panels (a copy and a buffer per call)
//! for very little arithmetic per element; these kernels read `X` in place instead (about
//! 10% faster per probe evaluation, measured 2026-12-02; both are bound by reading `X`). `xwt` keeps a tile of 2 rows x 4
//! classes in 8 vector accumulators (6 loads per 8 FMAs); `ptx_add` keeps 4 classes x 16
//! columns (2 loads and 4 broadcasts per 8 FMAs) and walks the rows, so a block of rows that
//! `xwt` just read is read again from cache when the caller keeps blocks small (a few
//! hundred KiB).
//!
//! Both are sequential and sum in a fixed order (lanes over `k` in steps of 8, then the
//! lanes in `kernels::simd`'s fixed order, then the scalar tail; rows in increasing order),
//! so a caller that splits rows into fixed blocks gets results independent of the thread
//! count. The AVX2 backend fuses multiply-adds and the portable one may not, so the two
//! backends can differ in the last bits.

use super::simd::{Portable, Simd, LANES};
use crate::error::{Error, Result};

const OP: &str = "skinny";

fn check_len(what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(want) if want == len => Ok(()),
        _ => Err(Error::InvalidArgument {
            op: OP,
            msg: format!("{what} holds {len} values, expected {rows} x {cols}"),
        }),
    }
}

/// `z[r][j] = bias[j] + sum_k x[r][k] w[j][k]` for the row-major `x` (`n x d`), `w`
/// (`c x d`), `bias` (`c`) and `z` (`n x c`).
///
/// # Errors
/// [`Error::InvalidArgument`] when a length disagrees with the shapes.
pub fn xwt(
    x: &[f32],
    n: usize,
    d: usize,
    w: &[f32],
    c: usize,
    bias: &[f32],
    z: &mut [f32],
) -> Result<()> {
    check_len("x", x.len(), n, d)?;
    check_len("w", w.len(), c, d)?;
    check_len("bias", bias.len(), 1, c)?;
    check_len("z", z.len(), n, c)?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { xwt_avx2(s, x, n, d, w, c, bias, z) };
        return Ok(());
    }
    xwt_body(Portable, x, n, d, w, c, bias, z);
    Ok(())
}

/// `g[j][k] += sum_r p[r][j] x[r][k]` for the row-major `p` (`n x c`), `x` (`n x d`) and
/// `g` (`c x d`); the rows' sum is formed first and then added to `g`.
///
/// # Errors
/// [`Error::InvalidArgument`] when a length disagrees with the shapes.
pub fn ptx_add(p: &[f32], n: usize, c: usize, x: &[f32], d: usize, g: &mut [f32]) -> Result<()> {
    check_len("p", p.len(), n, c)?;
    check_len("x", x.len(), n, d)?;
    check_len("g", g.len(), c, d)?;
    if n == 0 || c == 0 || d == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { ptx_avx2(s, p, n, c, x, d, g) };
        return Ok(());
    }
    ptx_body(Portable, p, n, c, x, d, g);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn xwt_avx2(
    s: super::simd::Avx2,
    x: &[f32],
    n: usize,
    d: usize,
    w: &[f32],
    c: usize,
    bias: &[f32],
    z: &mut [f32],
) {
    xwt_body(s, x, n, d, w, c, bias, z);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn ptx_avx2(
    s: super::simd::Avx2,
    p: &[f32],
    n: usize,
    c: usize,
    x: &[f32],
    d: usize,
    g: &mut [f32],
) {
    ptx_body(s, p, n, c, x, d, g);
}

/// Classes per tile of both kernels.
const GROUP: usize = 4;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn xwt_body<S: Simd>(
    s: S,
    x: &[f32],
    n: usize,
    d: usize,
    w: &[f32],
    c: usize,
    bias: &[f32],
    z: &mut [f32],
) {
    let mut r = 0;
    while r < n {
        let rows = (n - r).min(2);
        let xr = &x[r * d..(r + rows) * d];
        let zr = &mut z[r * c..(r + rows) * c];
        let mut j = 0;
        while j < c {
            let g = (c - j).min(GROUP);
            match (rows, g) {
                (2, 4) => xwt_tile::<S, 2, 4>(s, xr, d, w, j, bias, zr, c),
                (2, 3) => xwt_tile::<S, 2, 3>(s, xr, d, w, j, bias, zr, c),
                (2, 2) => xwt_tile::<S, 2, 2>(s, xr, d, w, j, bias, zr, c),
                (2, _) => xwt_tile::<S, 2, 1>(s, xr, d, w, j, bias, zr, c),
                (_, 4) => xwt_tile::<S, 1, 4>(s, xr, d, w, j, bias, zr, c),
                (_, 3) => xwt_tile::<S, 1, 3>(s, xr, d, w, j, bias, zr, c),
                (_, 2) => xwt_tile::<S, 1, 2>(s, xr, d, w, j, bias, zr, c),
                _ => xwt_tile::<S, 1, 1>(s, xr, d, w, j, bias, zr, c),
            }
            j += g;
        }
        r += rows;
    }
}

/// Rows `0..R` of `x` against classes `j0..j0 + G` of `w`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn xwt_tile<S: Simd, const R: usize, const G: usize>(
    s: S,
    x: &[f32],
    d: usize,
    w: &[f32],
    j0: usize,
    bias: &[f32],
    z: &mut [f32],
    c: usize,
) {
    let mut acc = [[s.splat(0.0); G]; R];
    let full = d - d % LANES;
    let mut k = 0;
    while k < full {
        let xv: [S::V; R] = std::array::from_fn(|r| s.load(&x[r * d + k..]));
        for (gi, wrow) in (0..G).map(|gi| (gi, &w[(j0 + gi) * d + k..])) {
            let wv = s.load(wrow);
            for r in 0..R {
                acc[r][gi] = s.fma(xv[r], wv, acc[r][gi]);
            }
        }
        k += LANES;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (gi, &a) in acc_r.iter().enumerate() {
            let j = j0 + gi;
            let mut v = s.reduce_add(a);
            for kk in full..d {
                v += x[r * d + kk] * w[j * d + kk];
            }
            z[r * c + j] = v + bias[j];
        }
    }
}

#[inline(always)]
fn ptx_body<S: Simd>(s: S, p: &[f32], n: usize, c: usize, x: &[f32], d: usize, g: &mut [f32]) {
    let mut j = 0;
    while j < c {
        let gs = (c - j).min(GROUP);
        match gs {
            4 => ptx_group::<S, 4>(s, p, n, c, x, d, g, j),
            3 => ptx_group::<S, 3>(s, p, n, c, x, d, g, j),
            2 => ptx_group::<S, 2>(s, p, n, c, x, d, g, j),
            _ => ptx_group::<S, 1>(s, p, n, c, x, d, g, j),
        }
        j += gs;
    }
}

/// Classes `j0..j0 + G` of `g` over all columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ptx_group<S: Simd, const G: usize>(
    s: S,
    p: &[f32],
    n: usize,
    c: usize,
    x: &[f32],
    d: usize,
    g: &mut [f32],
    j0: usize,
) {
    let mut k = 0;
    while k + 2 * LANES <= d {
        let mut acc = [[s.splat(0.0); 2]; G];
        for r in 0..n {
            let xr = &x[r * d + k..];
            let x0 = s.load(xr);
            let x1 = s.load(&xr[LANES..]);
            for (gi, a) in acc.iter_mut().enumerate() {
                let pv = s.splat(p[r * c + j0 + gi]);
                a[0] = s.fma(pv, x0, a[0]);
                a[1] = s.fma(pv, x1, a[1]);
            }
        }
        for (gi, a) in acc.iter().enumerate() {
            let row = &mut g[(j0 + gi) * d + k..];
            let lo = s.add(s.load(row), a[0]);
            s.store(row, lo);
            let hi = s.add(s.load(&row[LANES..]), a[1]);
            s.store(&mut row[LANES..], hi);
        }
        k += 2 * LANES;
    }
    if k + LANES <= d {
        let mut acc = [s.splat(0.0); G];
        for r in 0..n {
            let x0 = s.load(&x[r * d + k..]);
            for (gi, a) in acc.iter_mut().enumerate() {
                *a = s.fma(s.splat(p[r * c + j0 + gi]), x0, *a);
            }
        }
        for (gi, a) in acc.iter().enumerate() {
            let row = &mut g[(j0 + gi) * d + k..];
            let v = s.add(s.load(row), *a);
            s.store(row, v);
        }
        k += LANES;
    }
    for kk in k..d {
        for gi in 0..G {
            let mut v = 0.0f32;
            for r in 0..n {
                v += p[r * c + j0 + gi] * x[r * d + kk];
            }
            g[(j0 + gi) * d + kk] += v;
        }
    }
}
