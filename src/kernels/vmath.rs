//! Vectorized `exp`, `ln`, `log1p` and `softplus` (Cody-Waite reduction and the Cephes
//! `expf` / `logf` polynomials, S. L. Moshier, *Methods and Programs for Mathematical
//! Functions*, 1989) behind the runtime dispatch.
//!
//! Each function is one generic `#[inline(always)]` body over `Simd` (`kernels/simd.rs`);
//! the slice APIs enter it through an `#[target_feature(enable = "avx2,fma")]` wrapper when
//! the dispatch chose AVX2+FMA, else with the portable backend.
//!
//! # Algorithms
//! - `exp`: `n = round(x / ln 2)`, `r = x - n ln 2` in two parts (exact for the `n` that
//!   occur), `e^r = 1 + r + r^2 p(r)` with a degree-5 `p` on `|r| <= ln 2 / 2`, and the scale
//!   `2^n` applied as two exact powers of two, so results down to the subnormal range and up
//!   to overflow come out right.
//! - `ln`: subnormal inputs are first scaled by `2^23`; `x = (1 + f) 2^k` with `1 + f` in
//!   `[sqrt(1/2), sqrt(2)]` (`f` exact), `ln(1 + f) = f - f^2 / 2 + f^3 p(f)` with a degree-8
//!   `p`, plus `k ln 2` in two parts. `k LN2_HI + f` is summed with its rounding error kept
//!   (Fast2Sum), so the result is rounded once at the end.
//! - `log1p`: `u = 1 + x` with its rounding error `c` (TwoSum, exact), the `ln` kernel on `u`
//!   plus the correction `c/u - (c/u)^2 / 2`; when `u` is in `[sqrt(1/2), sqrt(2))` the kernel
//!   takes `f = x` itself (exact). So `log1p(x) = x` for tiny `x`.
//! - `softplus(x) = max(x, 0) + log1p(e^(-|x|))`, never overflowing. `t = e^(-|x|)` is kept
//!   as `t_hi + t_lo` (the reduction and the rounding of `1 + q` carried apart, about 2^-30
//!   relative), because `log1p` near `t = 0.3` would double exp's error in ulps of the result;
//!   `max(x, 0) + ln(1 + t)` is summed with TwoSum. `softplus(x) = x` for large `x`, and
//!   `e^x` (subnormal results included) for very negative `x`.
//!
//! # Accuracy
//! Measured against `f64` references (`f64::exp`, `f64::ln`, `f64::ln_1p`, and
//! `max(x, 0) + ln_1p(exp(-|x|))` in `f64`), in ulps of the `f32` result. Where the result is
//! subnormal the ulp is `2^-149`, so that column is an absolute error bound; an infinite
//! result counts as `2^128`, and a reference that rounds to an infinity must be met exactly.
//! Inputs: **every** `f32` bit pattern, both signs (`SELFSUP_EXHAUSTIVE=1 cargo test --release
//! --lib vmath`, about 25 minutes on 2 cores); the default test run checks every 997th bit
//! pattern (every binade), every pattern within 2048 of each boundary, and exact special
//! values, and asserts the bounds in the last column for both backends (1 s in release, about
//! 20 s in a debug build). The portable backend was built
//! without FMA (the x86_64 baseline), so its `fma` rounds twice; each backend is
//! deterministic, and the two may differ in the last bit.
//!
//! | function   | max ulp, AVX2+FMA | max ulp, portable | subnormal results | asserted bound |
//! |------------|-------------------|-------------------|-------------------|----------------|
//! | `exp`      | 1.011             | 0.990             | 0.75 x 2^-149     | 1.02, 1 x 2^-149 |
//! | `ln`       | 0.778             | 0.827             | none occur        | 0.85           |
//! | `log1p`    | 0.851             | 0.926             | exact (`= x`)     | 0.95           |
//! | `softplus` | 0.890             | 0.977             | 0.80 x 2^-149     | 1.0, 1 x 2^-149  |
//!
//! (Measured on an AMD EPYC (Zen 3), x86_64. `exp` computes what the first version did (only
//! the NaN lanes are blended differently); its worst case, at `x = -5.8778844`, is just over
//! one ulp.)
//!
//! # Throughput
//! `cargo bench --bench vmath` (64K floats in place, in L2), ns per element, on a shared
//! 2-vCPU AMD EPYC (Zen 3) VM with other jobs running, so +-20%:
//!
//! | function   | AVX2+FMA | portable (SSE2) | scalar `std` loop |
//! |------------|----------|-----------------|-------------------|
//! | `exp`      | 0.62     | 2.2             | 4.3               |
//! | `ln`       | 1.6      | 4.0             | 5.4 (`f32::ln`)   |
//! | `log1p`    | 1.8      | 4.4             | 13.7 (`ln_1p`)    |
//! | `softplus` | 3.7      | 7.8             | 17.8              |
//!
//! `softplus` pays for its accuracy (a double-`f32` `e^-|x|`, compensated sums, a division):
//! about `exp + log1p`.
//!
//! # Special values
//! - `exp`: `exp(NaN) = NaN`, `exp(+inf) = +inf`, `exp(-inf) = 0`, `exp(x) = +inf` from
//!   `x = 88.72284` (`ln(f32::MAX)` is 88.7228391) up, results below `f32::MIN_POSITIVE`
//!   (`x < -87.33655`) are subnormal, and 0 below `ln(2^-150)`, about -103.97208.
//! - `ln`: `ln(NaN) = NaN`, `ln(+inf) = +inf`, `ln(+-0) = -inf`, `ln(x < 0) = NaN` (also for
//!   `-inf`), `ln(1) = +0`; subnormal inputs get the accuracy above
//!   (`ln(2^-149) = -103.27893`).
//! - `log1p`: `log1p(NaN) = NaN`, `log1p(+inf) = +inf`, `log1p(-1) = -inf`,
//!   `log1p(x < -1) = NaN`, `log1p(+-0) = +-0`, `log1p(x) = x` for `|x| < 2^-30`.
//! - `softplus`: `softplus(NaN) = NaN`, `softplus(+inf) = +inf`, `softplus(-inf) = 0`,
//!   `softplus(0) = ln 2`.
//!
//! With flush-to-zero / denormals-are-zero set (`elementwise::with_flush_denormals`),
//! subnormal inputs read as 0 (so `ln` gives -inf for them) and subnormal results become 0;
//! the bounds above hold for everything else.
//!
//! The slice functions process 8 lanes at a time and the tail through a zero-padded buffer
//! with the same code, so every element gets the same bits as a one-element call. They run on
//! the calling thread; the `_into` forms check that the lengths agree.

use super::simd::{Simd, LANES};
use crate::error::{check_len, Result};

/// ln 2 in two parts: `LN2_HI` has 9 significant bits, so `n * LN2_HI` is exact for
/// `|n| < 2^15`, and `LN2_HI + LN2_LO` is ln 2 to about 2^-33.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `f32` nearest to sqrt(2): `ln` mantissas above it are halved.
const SQRT2: f32 = std::f32::consts::SQRT_2;

/// `p(r)` with `e^r ~ 1 + r + r^2 p(r)` on `|r| <= ln 2 / 2`: the Cephes `expf` coefficients
/// (the last, 5.0000001e-1, is 0.5 in `f32`). Approximation error 0.05 ulp.
#[inline(always)]
fn exp_poly<S: Simd>(s: S, r: S::V) -> S::V {
    let mut p = s.splat(1.987_569_1e-4);
    p = s.fma(p, r, s.splat(1.398_199_9e-3));
    p = s.fma(p, r, s.splat(8.333_452e-3));
    p = s.fma(p, r, s.splat(4.166_579_6e-2));
    p = s.fma(p, r, s.splat(1.666_666_5e-1));
    s.fma(p, r, s.splat(0.5))
}

/// The reduction of `exp`: `(n, q)` with `e^x ~ 2^n (1 + q)`, `n` an integer in
/// `-150 ..= 128` (as a float) and `|q| <= 0.42`. NaN lanes give NaN.
#[inline(always)]
fn exp_reduce<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    // Clamp so that n stays in -150 ..= 128; the NaN of `x` survives (the `max`/`min` rule).
    let xc = s.min(s.splat(89.0), s.max(s.splat(-104.0), x));
    let n = s.round(s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    let r = s.fma(n, s.splat(-LN2_HI), xc);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let p = exp_poly(s, r);
    let r2 = s.mul(r, r);
    (n, s.fma(p, r2, r))
}

/// `2^n` for integer `n` in `-150 ..= 128`, as two factors `2^h`, `2^(n-h)` with
/// `h = round(n / 2)`: both are normal, so `(y * a) * b` rounds at most once.
#[inline(always)]
fn exp2_split<S: Simd>(s: S, n: S::V) -> (S::V, S::V) {
    let h = s.round(s.mul(n, s.splat(0.5)));
    (s.exp2i(h), s.exp2i(s.sub(n, h)))
}

/// [`exp_reduce`] with its roundings kept: `(n, y, ye)` with `e^x ~ 2^n (y + ye)` to about
/// 2^-30 relative, `y = fl(1 + q)` and `|ye| <= 2^-23`. The reduced argument is
/// `r + r_lo` (TwoSum) and `q = r + r^2 p(r)` is summed with Fast2Sum (`|r| >= |r^2 p|`).
#[inline(always)]
fn exp_reduce_hi_lo<S: Simd>(s: S, x: S::V) -> (S::V, S::V, S::V) {
    let one = s.splat(1.0);
    let xc = s.min(s.splat(89.0), s.max(s.splat(-104.0), x));
    let n = s.round(s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    // Exact: n LN2_HI is exact and close to xc.
    let r1 = s.fma(n, s.splat(-LN2_HI), xc);
    let nl = s.mul(n, s.splat(-LN2_LO));
    let r = s.add(r1, nl);
    let bb = s.sub(r, r1);
    let r_lo = s.add(s.sub(r1, s.sub(r, bb)), s.sub(nl, bb));
    let p = exp_poly(s, r);
    let w = s.mul(s.mul(r, r), p);
    let q = s.add(r, w);
    let q_err = s.sub(w, s.sub(q, r));
    let y = s.add(one, q);
    let ye = s.add(s.sub(one, y), q);
    // d e^r / dr = e^r ~ y.
    let ye = s.fma(r_lo, y, s.add(ye, q_err));
    (n, y, ye)
}

/// `y`, with the lanes where `x` is NaN replaced by that NaN.
///
/// Written as `x + x` (the same quiet NaN) rather than `x`: when `x` was loaded from the
/// address the result is stored to, LLVM turns "blend with `x`, store" into a masked store
/// (`vmaskmovps`) that skips the NaN lanes, which made `exp_inplace` twice as slow on Zen 3.
#[inline(always)]
fn keep_nan<S: Simd>(s: S, x: S::V, y: S::V) -> S::V {
    s.select_nan(x, s.add(x, x), y)
}

/// `e^x` lane-wise. See the module documentation for the accuracy and special values.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let (n, q) = exp_reduce(s, x);
    let y = s.add(q, s.splat(1.0));
    let (a, b) = exp2_split(s, n);
    let y = s.mul(s.mul(y, a), b);
    keep_nan(s, x, y)
}

/// Splits positive normal `x` into `(f, k)` with `x = (1 + f) 2^k`, `1 + f` in
/// `[sqrt(1/2), sqrt(2)]`; `f` is exact.
#[inline(always)]
fn reduce_log<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    let (m, k) = s.frexp(x);
    let one = s.splat(1.0);
    let m = s.select_lt(s.splat(SQRT2), m, s.mul(m, s.splat(0.5)), m);
    // `m` was halved exactly when it is now below 1 (it was in [1, 2)).
    let k = s.add(k, s.select_lt(m, one, one, s.splat(0.0)));
    (s.sub(m, one), k)
}

/// `ln(1 + f) + k ln 2` as an unevaluated sum `(hi, lo)`, for `f` in
/// `[sqrt(1/2) - 1, sqrt(2) - 1]`: `hi = k LN2_HI + f` rounded, `lo` its exact rounding
/// error (Fast2Sum: `|k LN2_HI| >= |f|` or `k = 0`) plus `-f^2 / 2 + f^3 p(f) + k LN2_LO`
/// (Cephes `logf` coefficients). The caller adds any correction to `lo`, then `hi + lo`.
#[inline(always)]
fn log_kernel<S: Simd>(s: S, f: S::V, k: S::V) -> (S::V, S::V) {
    let z = s.mul(f, f);
    // The rounding error of `z` (exact with a fused `fma`, 0 without one).
    let ze = s.fma(f, f, s.sub(s.splat(0.0), z));
    let mut p = s.splat(7.037_683_6e-2);
    p = s.fma(p, f, s.splat(-1.151_461e-1));
    p = s.fma(p, f, s.splat(1.167_699_9e-1));
    p = s.fma(p, f, s.splat(-1.242_014_1e-1));
    p = s.fma(p, f, s.splat(1.424_932_3e-1));
    p = s.fma(p, f, s.splat(-1.666_805_8e-1));
    p = s.fma(p, f, s.splat(2.000_071_5e-1));
    p = s.fma(p, f, s.splat(-2.499_999_4e-1));
    p = s.fma(p, f, s.splat(3.333_333e-1));
    let tail = s.mul(s.mul(p, f), z);
    let tail = s.fma(k, s.splat(LN2_LO), tail);
    let tail = s.fma(ze, s.splat(-0.5), tail);
    let tail = s.fma(z, s.splat(-0.5), tail);
    let big = s.mul(k, s.splat(LN2_HI));
    let hi = s.add(big, f);
    let err = s.sub(f, s.sub(hi, big));
    (hi, s.add(err, tail))
}

/// `ln(1 + c / u) ~ c / u - (c / u)^2 / 2`, for `|c| <= 2^-23 u`.
#[inline(always)]
fn log_correction<S: Simd>(s: S, u: S::V, c: S::V) -> S::V {
    let cu = s.div(c, u);
    s.fma(s.mul(cu, s.splat(-0.5)), cu, cu)
}

/// Natural logarithm lane-wise. See the module documentation for the accuracy and special
/// values.
#[inline(always)]
pub(crate) fn ln<S: Simd>(s: S, x: S::V) -> S::V {
    let tiny = s.splat(f32::MIN_POSITIVE);
    let zero = s.splat(0.0);
    // Subnormal inputs: scale by 2^23 so that `frexp` sees a normal number.
    let xs = s.select_lt(x, tiny, s.mul(x, s.splat(8_388_608.0)), x);
    let (f, k) = reduce_log(s, xs);
    let k = s.add(k, s.select_lt(x, tiny, s.splat(-23.0), zero));
    let (hi, lo) = log_kernel(s, f, k);
    let y = s.add(hi, lo);
    // Special values. NaN lanes pass the first two selects and are put back last.
    let y = s.select_lt(x, s.splat(f32::INFINITY), y, s.splat(f32::INFINITY));
    let y = s.select_lt(x, s.splat(f32::from_bits(1)), s.splat(f32::NEG_INFINITY), y);
    let y = s.select_lt(x, zero, s.splat(f32::NAN), y);
    keep_nan(s, x, y)
}

/// `ln(1 + x)` lane-wise, accurate for small `|x|`. See the module documentation.
#[inline(always)]
pub(crate) fn log1p<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let zero = s.splat(0.0);
    let u = s.add(one, x);
    // TwoSum: 1 + x = u + c exactly.
    let b = s.sub(u, one);
    let c = s.add(s.sub(one, s.sub(u, b)), s.sub(x, b));
    // u >= 2^-24 here (other lanes are masked below), so it is normal.
    let (f, k) = reduce_log(s, u);
    // When k = 0 (u in [sqrt(1/2), sqrt(2))), x itself is the exact reduced argument.
    let k0 = s.mul(k, k);
    let f = s.select_lt(k0, s.splat(0.25), x, f);
    let c = s.select_lt(k0, s.splat(0.25), zero, c);
    // |x| < 2^-30: log1p(x) = x to 2^-31 relative (and keeps the sign of -0). The kernel
    // runs on f = 0 there, so that f^2 never goes subnormal (a microcode assist on x86).
    let ax = s.max(x, s.sub(zero, x));
    let small = s.splat(9.313_226e-10);
    let f = s.select_lt(ax, small, zero, f);
    let (hi, lo) = log_kernel(s, f, k);
    let y = s.add(hi, s.add(lo, log_correction(s, u, c)));
    let y = s.select_lt(ax, small, x, y);
    // Special values: u <= 0 exactly when x <= -1.
    let y = s.select_lt(x, s.splat(f32::INFINITY), y, s.splat(f32::INFINITY));
    let y = s.select_lt(u, s.splat(f32::from_bits(1)), s.splat(f32::NEG_INFINITY), y);
    let y = s.select_lt(u, zero, s.splat(f32::NAN), y);
    keep_nan(s, x, y)
}

/// `ln(1 + e^x) = max(x, 0) + log1p(e^(-|x|))` lane-wise. See the module documentation.
///
/// `t = e^(-|x|)` is carried as `t_hi + t_lo` (the rounding of `1 + q` in `exp` kept
/// apart), and `1 + t` as `u + c`, so that `log1p` sees `t` to about 2^-30 relative instead
/// of exp's ulp, which the logarithm would amplify up to twice near `x = -1.3`.
#[inline(always)]
pub(crate) fn softplus<S: Simd>(s: S, x: S::V) -> S::V {
    let zero = s.splat(0.0);
    let one = s.splat(1.0);
    // -|x| (NaN stays NaN: `min` returns its second operand).
    let neg_abs = s.min(x, s.sub(zero, x));
    let (n, y, ye) = exp_reduce_hi_lo(s, neg_abs);
    // Below t = 2^-30, log1p(t) = t to 2^-31 relative: the result is (y + ye) 2^n, rounded
    // once (twice for subnormal results). The log path runs on n clamped to -30 there, so it
    // never computes a subnormal intermediate (the smallest is (c/u)^2, about 2^-110): each
    // costs a microcode assist on x86, and without the clamp softplus took 6.2 instead of 3.3
    // ns per element for |x| in [20, 80] (AVX2, Zen 3).
    let n_min = s.splat(-30.0);
    let (a, b) = exp2_split(s, n);
    let t_tiny = s.mul(s.mul(s.add(y, ye), a), b);
    let scale = s.exp2i(s.max(n_min, n));
    let t_hi = s.mul(y, scale);
    let t_lo = s.mul(ye, scale);
    // 1 + t_hi = u + c0 exactly (Fast2Sum, t_hi <= 1).
    let u = s.add(one, t_hi);
    let c = s.add(s.sub(t_hi, s.sub(u, one)), t_lo);
    // u in [1, 2], normal. When k = 0 (u < sqrt(2)), t itself is the better reduced
    // argument: f = t_hi is exact and the correction t_lo is tiny.
    let (f, k) = reduce_log(s, u);
    let k0 = s.splat(0.5);
    let f = s.select_lt(k, k0, t_hi, f);
    let c = s.select_lt(k, k0, t_lo, c);
    let (hi, lo) = log_kernel(s, f, k);
    let lo = s.add(lo, log_correction(s, u, c));
    let hi = s.select_lt(n, n_min, t_tiny, hi);
    let lo = s.select_lt(n, n_min, zero, lo);
    // max(x, 0) + hi + lo with the first sum compensated (TwoSum). `max(0, x)` keeps a NaN.
    let xp = s.max(zero, x);
    let sum = s.add(xp, hi);
    let bb = s.sub(sum, xp);
    let err = s.add(s.sub(xp, s.sub(sum, bb)), s.sub(hi, bb));
    let y = s.add(sum, s.add(err, lo));
    // +inf would give inf - inf in the TwoSum.
    let y = s.select_lt(x, s.splat(f32::INFINITY), y, s.splat(f32::INFINITY));
    keep_nan(s, x, y)
}

/// A lane-wise function, as a type, so that one `#[target_feature]` wrapper per slice shape
/// serves every function (a generic parameter monomorphizes and inlines inside the wrapper;
/// a closure passed in from outside would not inherit its target features).
pub(crate) trait LaneOp {
    fn apply<S: Simd>(s: S, x: S::V) -> S::V;
}

/// [`exp`] as a [`LaneOp`].
pub(crate) struct Exp;
/// [`ln`] as a [`LaneOp`].
pub(crate) struct Ln;
/// [`log1p`] as a [`LaneOp`].
pub(crate) struct Log1p;
/// [`softplus`] as a [`LaneOp`].
pub(crate) struct Softplus;

impl LaneOp for Exp {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::V) -> S::V {
        exp(s, x)
    }
}
impl LaneOp for Ln {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::V) -> S::V {
        ln(s, x)
    }
}
impl LaneOp for Log1p {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::V) -> S::V {
        log1p(s, x)
    }
}
impl LaneOp for Softplus {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::V) -> S::V {
        softplus(s, x)
    }
}

/// `x[i] <- F(x[i])` with the backend `s`; the tail goes through a zero-padded buffer.
/// (Two vectors per iteration measured no faster: the loops are throughput-bound.)
#[inline(always)]
pub(crate) fn map_inplace_with<S: Simd, F: LaneOp>(s: S, x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let v = F::apply(s, s.load(c));
        s.store(c, v);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; LANES];
        buf[..rest.len()].copy_from_slice(rest);
        let v = F::apply(s, s.load(&buf));
        s.store(&mut buf, v);
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

/// `dst[i] <- F(src[i])` with the backend `s`.
///
/// # Panics
/// If the lengths differ (the public callers check them first).
#[inline(always)]
#[track_caller]
pub(crate) fn map_into_with<S: Simd, F: LaneOp>(s: S, src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "map_into_with: length mismatch");
    let mut d = dst.chunks_exact_mut(LANES);
    let mut r = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut r) {
        let v = F::apply(s, s.load(sc));
        s.store(dc, v);
    }
    let (dr, sr) = (d.into_remainder(), r.remainder());
    if !sr.is_empty() {
        let mut buf = [0.0f32; LANES];
        buf[..sr.len()].copy_from_slice(sr);
        let v = F::apply(s, s.load(&buf));
        s.store(&mut buf, v);
        dr.copy_from_slice(&buf[..sr.len()]);
    }
}

/// [`map_inplace_with`] compiled for AVX2+FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA; holding an `Avx2` token proves it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn map_inplace_avx2<F: LaneOp>(s: super::simd::Avx2, x: &mut [f32]) {
    map_inplace_with::<_, F>(s, x)
}

/// [`map_into_with`] compiled for AVX2+FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA; holding an `Avx2` token proves it.
///
/// # Panics
/// If the lengths differ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn map_into_avx2<F: LaneOp>(s: super::simd::Avx2, src: &[f32], dst: &mut [f32]) {
    map_into_with::<_, F>(s, src, dst)
}

/// `x[i] <- F(x[i])` on the instruction set chosen by the dispatch.
#[inline]
fn map_inplace<F: LaneOp>(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { map_inplace_avx2::<F>(s, x) };
        return;
    }
    map_inplace_with::<_, F>(super::simd::Portable, x)
}

/// `dst[i] <- F(src[i])` on the instruction set chosen by the dispatch, after a length check.
#[inline]
fn map_into<F: LaneOp>(op: &'static str, src: &[f32], dst: &mut [f32]) -> Result<()> {
    check_len(op, dst.len(), src.len())?;
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA; the lengths are equal.
        unsafe { map_into_avx2::<F>(s, src, dst) };
        return Ok(());
    }
    map_into_with::<_, F>(super::simd::Portable, src, dst);
    Ok(())
}

/// `x[i] <- e^x[i]` for every element, on the best instruction set of this CPU. Accuracy
/// and special values: see the [module documentation](self).
pub fn exp_inplace(x: &mut [f32]) {
    map_inplace::<Exp>(x)
}

/// `dst[i] <- e^src[i]`. Errors with [`crate::Error::ShapeMismatch`] when the lengths
/// differ (then `dst` is untouched).
pub fn exp_into(src: &[f32], dst: &mut [f32]) -> Result<()> {
    map_into::<Exp>("exp_into", src, dst)
}

/// `x[i] <- ln(x[i])` (natural logarithm) for every element. Accuracy and special values:
/// see the [module documentation](self).
pub fn ln_inplace(x: &mut [f32]) {
    map_inplace::<Ln>(x)
}

/// `dst[i] <- ln(src[i])`. Errors with [`crate::Error::ShapeMismatch`] when the lengths
/// differ (then `dst` is untouched).
pub fn ln_into(src: &[f32], dst: &mut [f32]) -> Result<()> {
    map_into::<Ln>("ln_into", src, dst)
}

/// `x[i] <- ln(1 + x[i])` for every element, accurate for small `|x|`. Accuracy and
/// special values: see the [module documentation](self).
pub fn log1p_inplace(x: &mut [f32]) {
    map_inplace::<Log1p>(x)
}

/// `dst[i] <- ln(1 + src[i])`. Errors with [`crate::Error::ShapeMismatch`] when the lengths
/// differ (then `dst` is untouched).
pub fn log1p_into(src: &[f32], dst: &mut [f32]) -> Result<()> {
    map_into::<Log1p>("log1p_into", src, dst)
}

/// `x[i] <- ln(1 + e^x[i])` for every element, without overflow for any `x`. Accuracy and
/// special values: see the [module documentation](self).
pub fn softplus_inplace(x: &mut [f32]) {
    map_inplace::<Softplus>(x)
}

/// `dst[i] <- ln(1 + e^src[i])`. Errors with [`crate::Error::ShapeMismatch`] when the
/// lengths differ (then `dst` is untouched).
pub fn softplus_into(src: &[f32], dst: &mut [f32]) -> Result<()> {
    map_into::<Softplus>("softplus_into", src, dst)
}

#[cfg(test)]
mod tests {
    //! Accuracy against `f64` references, on both backends, over a strided sweep of every
    //! `f32` bit pattern (all of them with `SELFSUP_EXHAUSTIVE=1`), dense windows around the
    //! boundaries, and exact special values.

    use super::*;
    use crate::kernels::simd::Portable;
    use rayon::prelude::*;

    /// The bounds the module documentation asserts (the same for both backends: the portable
    /// one uses a fused `fma` when built with `-C target-feature=+fma`).
    struct Bound {
        /// Max error in ulps where the reference is normal (or overflows).
        normal_ulp: f64,
        /// Max error in units of 2^-149 where the reference is subnormal or zero.
        subnormal_abs: f64,
    }

    #[derive(Clone, Copy, Debug)]
    enum Backend {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2(crate::kernels::simd::Avx2),
    }

    impl Backend {
        fn name(self) -> &'static str {
            match self {
                Backend::Portable => "portable",
                #[cfg(target_arch = "x86_64")]
                Backend::Avx2(_) => "avx2",
            }
        }

        fn run<F: LaneOp>(self, x: &mut [f32]) {
            match self {
                Backend::Portable => map_inplace_with::<_, F>(Portable, x),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the token proves that this CPU has AVX2 and FMA.
                Backend::Avx2(s) => unsafe { map_inplace_avx2::<F>(s, x) },
            }
        }
    }

    /// Portable always; AVX2 when this CPU has it (said on stderr when it does not).
    fn backends() -> Vec<Backend> {
        #[allow(unused_mut)]
        let mut v = vec![Backend::Portable];
        #[cfg(target_arch = "x86_64")]
        match crate::kernels::simd::Avx2::new() {
            Some(s) => v.push(Backend::Avx2(s)),
            None => eprintln!("vmath tests: no AVX2+FMA on this CPU, portable backend only"),
        }
        v
    }

    /// Worst errors seen: in ulps where the reference is normal (or overflows), in units of
    /// 2^-149 where it is subnormal or zero.
    #[derive(Clone, Copy, Debug, Default)]
    struct Stats {
        count: u64,
        normal_ulp: f64,
        normal_at: f32,
        subnormal_abs: f64,
        subnormal_at: f32,
        /// An input whose result has the wrong class (NaN, infinity) for its reference.
        wrong: Option<(f32, f32, f64)>,
    }

    impl Stats {
        fn merge(mut self, o: Stats) -> Stats {
            self.count += o.count;
            if o.normal_ulp > self.normal_ulp {
                (self.normal_ulp, self.normal_at) = (o.normal_ulp, o.normal_at);
            }
            if o.subnormal_abs > self.subnormal_abs {
                (self.subnormal_abs, self.subnormal_at) = (o.subnormal_abs, o.subnormal_at);
            }
            self.wrong = self.wrong.or(o.wrong);
            self
        }

        fn add(&mut self, x: f32, y: f32, r: f64) {
            self.count += 1;
            // A reference that rounds to an infinite (or NaN) f32 must be met exactly.
            let rf = r as f32;
            if rf.is_nan() || rf.is_infinite() {
                let ok = if rf.is_nan() { y.is_nan() } else { y == rf };
                if !ok && self.wrong.is_none() {
                    self.wrong = Some((x, y, r));
                }
                return;
            }
            if y.is_nan() {
                self.wrong.get_or_insert((x, y, r));
                return;
            }
            // An infinite result stands for 2^128, the first value past f32::MAX's binade.
            let yv = if y.is_infinite() {
                y.signum() as f64 * 2f64.powi(128)
            } else {
                y as f64
            };
            let err = (yv - r).abs();
            if r.abs() < f32::MIN_POSITIVE as f64 {
                let e = err / 2f64.powi(-149);
                if e > self.subnormal_abs {
                    (self.subnormal_abs, self.subnormal_at) = (e, x);
                }
            } else {
                // The ulp of the binade of `r`, capped at the top f32 binade's.
                let exp2 = (((r.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023).min(127);
                let e = err / 2f64.powi(exp2 - 23);
                if e > self.normal_ulp {
                    (self.normal_ulp, self.normal_at) = (e, x);
                }
            }
        }
    }

    fn ref_exp(x: f32) -> f64 {
        (x as f64).exp()
    }
    fn ref_ln(x: f32) -> f64 {
        (x as f64).ln()
    }
    fn ref_log1p(x: f32) -> f64 {
        (x as f64).ln_1p()
    }
    fn ref_softplus(x: f32) -> f64 {
        let x = x as f64;
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    /// Runs `F` on `xs` with `b` and measures it against `reference`.
    fn measure<F: LaneOp>(b: Backend, xs: &[f32], reference: fn(f32) -> f64) -> Stats {
        xs.par_chunks(1 << 16)
            .map(|c| {
                let mut y = c.to_vec();
                b.run::<F>(&mut y);
                let mut st = Stats::default();
                for (&x, &y) in c.iter().zip(&y) {
                    st.add(x, y, reference(x));
                }
                st
            })
            .reduce(Stats::default, Stats::merge)
    }

    /// Every `stride`-th bit pattern of the 2^32, in blocks so that memory stays small.
    fn sweep<F: LaneOp>(b: Backend, stride: u64, reference: fn(f32) -> f64) -> Stats {
        let n = (1u64 << 32).div_ceil(stride);
        let block = 1u64 << 22;
        (0..n.div_ceil(block))
            .map(|blk| {
                let xs: Vec<f32> = (blk * block..((blk + 1) * block).min(n))
                    .map(|i| f32::from_bits((i * stride) as u32))
                    .collect();
                measure::<F>(b, &xs, reference)
            })
            .fold(Stats::default(), Stats::merge)
    }

    /// Every bit pattern within 2048 of each boundary, both signs.
    fn windows(boundaries: &[f32]) -> Vec<f32> {
        let mut xs = Vec::new();
        for &c in boundaries {
            for c in [c, -c] {
                let bits = c.to_bits() as i64;
                for d in -2048..=2048i64 {
                    let b = bits + d;
                    if (0..=u32::MAX as i64).contains(&b) {
                        xs.push(f32::from_bits(b as u32));
                    }
                }
            }
        }
        xs
    }

    /// Boundaries shared by all functions.
    const COMMON: &[f32] = &[
        0.0,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        1.0,
        0.5,
        2.0,
        std::f32::consts::SQRT_2,
        std::f32::consts::FRAC_1_SQRT_2,
    ];

    fn exhaustive() -> bool {
        std::env::var("SELFSUP_EXHAUSTIVE").is_ok_and(|v| !v.is_empty() && v != "0")
    }

    /// The whole check of one function on every backend: the sweep, the boundary windows and
    /// the exact special values, against the documented bounds.
    fn check<F: LaneOp>(
        name: &str,
        reference: fn(f32) -> f64,
        boundaries: &[f32],
        specials: &[(f32, f32)],
        bound: Bound,
    ) {
        let stride = if exhaustive() { 1 } else { 997 };
        let mut edges = windows(COMMON);
        edges.extend(windows(boundaries));
        for b in backends() {
            let st = sweep::<F>(b, stride, reference).merge(measure::<F>(b, &edges, reference));
            eprintln!(
                "{name} [{}] stride {stride}: {} inputs, max {:.3} ulp at {:e}, subnormal \
                 results max {:.3} x 2^-149 at {:e}",
                b.name(),
                st.count,
                st.normal_ulp,
                st.normal_at,
                st.subnormal_abs,
                st.subnormal_at
            );
            assert!(
                st.wrong.is_none(),
                "{name} [{}]: wrong class {:?}",
                b.name(),
                st.wrong
            );
            let bd = &bound;
            assert!(
                st.normal_ulp <= bd.normal_ulp,
                "{name} [{}]: {} ulp at {:e} (bits {:#x}) > {}",
                b.name(),
                st.normal_ulp,
                st.normal_at,
                st.normal_at.to_bits(),
                bd.normal_ulp
            );
            assert!(
                st.subnormal_abs <= bd.subnormal_abs,
                "{name} [{}]: subnormal error {} x 2^-149 at {:e} > {}",
                b.name(),
                st.subnormal_abs,
                st.subnormal_at,
                bd.subnormal_abs
            );
            let xs: Vec<f32> = specials.iter().map(|p| p.0).collect();
            let mut ys = xs.clone();
            b.run::<F>(&mut ys);
            for (&(x, want), &got) in specials.iter().zip(&ys) {
                let same = (want.is_nan() && got.is_nan()) || want.to_bits() == got.to_bits();
                assert!(
                    same,
                    "{name} [{}]({x:e}) = {got:e}, want {want:e}",
                    b.name()
                );
            }
        }
    }

    const INF: f32 = f32::INFINITY;
    const NAN: f32 = f32::NAN;

    #[test]
    fn exp_accuracy() {
        check::<Exp>(
            "exp",
            ref_exp,
            &[
                88.722_84, 88.722_83, 87.336_55, 103.972_08, 104.0, 89.0, 1e-8,
            ],
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, 0.0),
                (0.0, 1.0),
                (-0.0, 1.0),
                (88.722_84, INF),
                (89.0, INF),
                (f32::MAX, INF),
                (-104.0, 0.0),
                (-f32::MAX, 0.0),
                (1e-30, 1.0),
            ],
            Bound {
                normal_ulp: 1.02,
                subnormal_abs: 1.0,
            },
        );
    }

    #[test]
    fn ln_accuracy() {
        check::<Ln>(
            "ln",
            ref_ln,
            &[f32::from_bits(1), f32::from_bits(0x0040_0000), 1e-30, 1e30],
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, NAN),
                (0.0, -INF),
                (-0.0, -INF),
                (-1.0, NAN),
                (-f32::from_bits(1), NAN),
                (1.0, 0.0),
                (f32::from_bits(1), -103.278_93),
                (f32::MIN_POSITIVE, -87.336_55),
                (f32::MAX, 88.722_84),
            ],
            Bound {
                normal_ulp: 0.85,
                subnormal_abs: 0.0,
            },
        );
    }

    #[test]
    fn log1p_accuracy() {
        check::<Log1p>(
            "log1p",
            ref_log1p,
            &[1e-8, 1e-4, 0.25, 0.414, 1.0 - f32::EPSILON, 1e30],
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, NAN),
                (0.0, 0.0),
                (-0.0, -0.0),
                (-1.0, -INF),
                (-2.0, NAN),
                (1e-30, 1e-30),
                (-1e-30, -1e-30),
                (f32::from_bits(1), f32::from_bits(1)),
            ],
            Bound {
                normal_ulp: 0.95,
                subnormal_abs: 0.0,
            },
        );
    }

    #[test]
    fn softplus_accuracy() {
        check::<Softplus>(
            "softplus",
            ref_softplus,
            &[16.0, 17.0, 88.722_84, 87.336_55, 103.972_08, 104.0, 1e-8],
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, 0.0),
                (0.0, std::f32::consts::LN_2),
                (-0.0, std::f32::consts::LN_2),
                (100.0, 100.0),
                (f32::MAX, f32::MAX),
                (-104.0, 0.0),
                (-f32::MAX, 0.0),
            ],
            Bound {
                normal_ulp: 1.0,
                subnormal_abs: 1.0,
            },
        );
    }
}
