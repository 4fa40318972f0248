//! Vectorized `exp` (and more to come) behind the runtime dispatch.
//!
//! `exp` follows the classic Cody-Waite scheme: `n = round(x / ln 2)`,
//! `r = x - n ln 2` in two parts (exact for the `n` that occur), a degree-6 polynomial for
//! `e^r` on `|r| <= ln 2 / 2`, and the scale `2^n` applied as two exact powers of two so that
//! results down to the subnormal range and up to overflow come out right.
//! Special values: `exp(NaN) = NaN`, `exp(+inf) = +inf`, `exp(-inf) = 0`,
//! `exp(x) = +inf` for `x > 88.7228`, and results below `f32::MIN_POSITIVE` are subnormal
//! (down to 0 below about -103.97).

use super::simd::{Simd, LANES};

/// `e^x` lane-wise. See the module documentation for the accuracy and special values.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| <= 2^15.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Clamp so that n stays in -150 ..= 128; the NaN of `x` survives (the `max`/`min` rule).
    let xc = s.min(s.splat(89.0), s.max(s.splat(-104.0), x));
    let n = s.round(s.mul(xc, s.splat(LOG2E)));
    let r = s.fma(n, s.splat(-LN2_HI), xc);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    // e^r = 1 + r + r^2 * p(r), Cephes coefficients.
    let mut p = s.splat(1.987_569_1e-4);
    p = s.fma(p, r, s.splat(1.398_199_9e-3));
    p = s.fma(p, r, s.splat(8.333_452e-3));
    p = s.fma(p, r, s.splat(4.166_579_6e-2));
    p = s.fma(p, r, s.splat(1.666_666_5e-1));
    p = s.fma(p, r, s.splat(5.000_000_1e-1));
    let r2 = s.mul(r, r);
    let y = s.add(s.fma(p, r2, r), s.splat(1.0));
    // 2^n as 2^h * 2^(n-h) with h = round(n / 2): both factors are normal powers of two.
    let h = s.round(s.mul(n, s.splat(0.5)));
    let y = s.mul(s.mul(y, s.exp2i(h)), s.exp2i(s.sub(n, h)));
    s.select_nan(x, x, y)
}

/// `x[i] <- e^x[i]` with the generic backend `s`.
#[inline(always)]
pub(crate) fn exp_slice_with<S: Simd>(s: S, x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let v = exp(s, s.load(c));
        s.store(c, v);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; LANES];
        buf[..rest.len()].copy_from_slice(rest);
        let v = exp(s, s.load(&buf));
        s.store(&mut buf, v);
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_slice_avx2(s: super::simd::Avx2, x: &mut [f32]) {
    exp_slice_with(s, x)
}

/// `x[i] <- e^x[i]` for every element, on the best instruction set of this CPU.
pub fn exp_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::simd::avx2() {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { exp_slice_avx2(s, x) };
        return;
    }
    exp_slice_with(super::simd::Portable, x)
}
