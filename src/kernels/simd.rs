//! A small 8-lane `f32` SIMD abstraction, so that the math and loss kernels are written once
//! and compiled twice: with AVX2+FMA intrinsics and with the portable `wide` vectors.
//!
//! `wide` chooses its instructions at compile time, so inside a `#[target_feature]` function
//! it still emits the baseline (SSE2) code. Compute-bound loops (exp, log, the contrastive
//! tiles) therefore go through [`Simd`]: a zero-sized *token* type whose methods are the
//! vector operations. [`Avx2`] can only be obtained from [`Avx2::new`], which checks the CPU,
//! so its safe methods may call the AVX2/FMA intrinsics. Generic bodies are
//! `#[inline(always)]` and are entered through [`dispatch!`]-style wrappers: an
//! `#[target_feature(enable = "avx2,fma")]` function that calls the body with the token, so
//! the intrinsics inline into code compiled for AVX2 (the "token + inline(always)" pattern of
//! the `pulp` crate).
//!
//! Semantics shared by both backends (tests compare them):
//! - `max(a, b)` / `min(a, b)` return `b` when either operand is NaN (the x86 `maxps` rule),
//!   so `max(lo, x)` propagates a NaN `x`.
//! - `fma(a, b, c) = a * b + c`: fused (one rounding) on AVX2, two roundings on the portable
//!   backend unless the target has FMA at compile time. Results of the two backends can
//!   therefore differ in the last bit; each backend is deterministic.
//! - Horizontal reductions combine lanes in a fixed order: `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.

/// Lanes per vector.
pub(crate) const LANES: usize = 8;

/// An 8 x f32 SIMD instruction set, as a token. See the module documentation.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// The vector type.
    type V: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// Loads `s[0..8]`. Panics if `s` is shorter than 8.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores into `d[0..8]`. Panics if `d` is shorter than 8.
    fn store(self, d: &mut [f32], v: Self::V);
    fn to_array(self, v: Self::V) -> [f32; LANES];
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a > b ? a : b` (returns `b` when either is NaN).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a < b ? a : b` (returns `b` when either is NaN).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if a < b { x } else { y }`.
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// Lane-wise `if a.is_nan() { x } else { y }`.
    fn select_nan(self, a: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// Round to the nearest integer, ties to even (for |x| < 2^23).
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for lanes holding integers in `-126 ..= 127`.
    fn exp2i(self, n: Self::V) -> Self::V;
    /// Splits positive normal lanes into `(m, e)` with `x = m * 2^e`, `m` in `[1, 2)`, as
    /// floats. Other inputs give unspecified lanes (callers mask them).
    fn frexp(self, a: Self::V) -> (Self::V, Self::V);
    /// Sum of the lanes, in the fixed order of the module documentation.
    fn reduce_add(self, v: Self::V) -> f32 {
        let l = self.to_array(v);
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }
    /// Maximum of the lanes (NaN lanes are skipped unless all are NaN).
    fn reduce_max(self, v: Self::V) -> f32 {
        let l = self.to_array(v);
        l.iter().copied().fold(f32::NAN, f32::max)
    }
}

/// The portable backend: `wide::f32x8`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = wide::f32x8;

    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        wide::f32x8::splat(x)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> Self::V {
        let a: [f32; 8] = s[..8].try_into().expect("8 lanes");
        wide::f32x8::from(a)
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: Self::V) {
        d[..8].copy_from_slice(&v.to_array());
    }
    #[inline(always)]
    fn to_array(self, v: Self::V) -> [f32; LANES] {
        v.to_array()
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        a * b
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        a.simd_gt(b).select(a, b)
    }
    #[inline(always)]
    fn min(self, a: Self::V, b: Self::V) -> Self::V {
        a.simd_lt(b).select(a, b)
    }
    #[inline(always)]
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V {
        a.simd_lt(b).select(x, y)
    }
    #[inline(always)]
    fn select_nan(self, a: Self::V, x: Self::V, y: Self::V) -> Self::V {
        a.is_nan().select(x, y)
    }
    #[inline(always)]
    fn round(self, a: Self::V) -> Self::V {
        // 1.5 * 2^23: adding and subtracting it rounds to nearest even for |a| < 2^22.
        let magic = wide::f32x8::splat(12_582_912.0);
        (a + magic) - magic
    }
    #[inline(always)]
    fn exp2i(self, n: Self::V) -> Self::V {
        let i = n.round_int() + wide::i32x8::splat(127);
        bytemuck::cast(i << 23)
    }
    #[inline(always)]
    fn frexp(self, a: Self::V) -> (Self::V, Self::V) {
        let bits: wide::i32x8 = bytemuck::cast(a);
        let e: wide::i32x8 = (bits >> 23_i32) - wide::i32x8::splat(127);
        let m_bits = (bits & wide::i32x8::splat(0x007f_ffff)) | wide::i32x8::splat(0x3f80_0000);
        (bytemuck::cast(m_bits), e.round_float())
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Simd, LANES};
    use std::arch::x86_64::*;

    /// The AVX2+FMA backend. A value exists only if the CPU has both features.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2 {
        _private: (),
    }

    impl Avx2 {
        /// The token, if this CPU has AVX2 and FMA.
        pub(crate) fn new() -> Option<Self> {
            (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
                .then_some(Self { _private: () })
        }
    }

    // SAFETY (every `unsafe` block in this impl): an `Avx2` value exists only after
    // `Avx2::new` saw AVX2 and FMA on this CPU, so the intrinsics are available; loads and
    // stores go through slices indexed `[..8]` first, so they stay in bounds.
    impl Simd for Avx2 {
        type V = __m256;

        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m256 {
            let s = &s[..8];
            // SAFETY: see the impl comment; `s` has 8 elements.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, d: &mut [f32], v: __m256) {
            let d = &mut d[..8];
            // SAFETY: see the impl comment; `d` has 8 elements.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn to_array(self, v: __m256) -> [f32; LANES] {
            let mut out = [0.0f32; LANES];
            self.store(&mut out, v);
            out
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment. `maxps` returns its second operand on NaN.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment. `minps` returns its second operand on NaN.
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        fn select_lt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
        }
        #[inline(always)]
        fn select_nan(self, a: __m256, x: __m256, y: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a)) }
        }
        #[inline(always)]
        fn round(self, a: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn exp2i(self, n: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe {
                let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
            }
        }
        #[inline(always)]
        fn frexp(self, a: __m256) -> (__m256, __m256) {
            // SAFETY: see the impl comment.
            unsafe {
                let bits = _mm256_castps_si256(a);
                let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
                let m = _mm256_or_si256(
                    _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x3f80_0000),
                );
                (_mm256_castsi256_ps(m), _mm256_cvtepi32_ps(e))
            }
        }
    }
}

/// The AVX2 token when the dispatch chose AVX2+FMA ([`super::isa`], which honours
/// `SELFSUP_FORCE_PORTABLE`), else `None`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2() -> Option<Avx2> {
    if super::isa().has_avx2() {
        Avx2::new()
    } else {
        None
    }
}
