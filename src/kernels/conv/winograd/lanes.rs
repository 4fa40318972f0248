//! The vector operations of the Winograd transforms and products, per instruction set: 16
//! tiles per `zmm` register with AVX-512 (masks in `k` registers, an 8 x 32 product tile),
//! 8 per `ymm` register with AVX2 + FMA (masks as vectors, a 4 x 16 product tile), so that
//! the transforms in `mod.rs` are written once and compiled for each.
//!
//! Every method is `#[inline(always)]` and is only called from the bodies that the
//! `#[target_feature]` entry points of `mod.rs` inline, so the intrinsics compile for the
//! instruction set of the entry point (the "inline(always) under a target_feature wrapper"
//! pattern of `kernels/simd.rs`).

use std::arch::x86_64::*;

/// Output channels per panel of `U` (the broadcast rows of the product tiles).
pub(super) const ROWS: usize = 8;

/// One instruction set's vectors of tiles, as a token: a value exists only where the
/// instruction set does (see the constructors), so the register operations are safe; the
/// loads, stores and products are unsafe for their pointers.
pub(super) trait Lanes: Copy {
    /// Tiles (lanes) per vector.
    const N: usize;
    type V: Copy;
    /// A set of lanes.
    type K: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `max(0, a)`: `a` itself when it is NaN or -0, as `if a < 0 { 0 }`.
    fn relu(self, a: Self::V) -> Self::V;
    /// Lanes `lo..hi` (`lo <= hi <= N`).
    fn lanes(self, lo: usize, hi: usize) -> Self::K;
    /// `v` with the lanes of `k` loaded from `p + lane` (the lanes of `k` must be zero in
    /// `v`; the others are not read).
    unsafe fn load_into(self, v: Self::V, k: Self::K, p: *const f32) -> Self::V;
    /// The lanes of `k` loaded from `p + lane`, zero elsewhere.
    unsafe fn load(self, k: Self::K, p: *const f32) -> Self::V;
    /// The lanes of `k` stored to `p + lane`.
    unsafe fn store(self, p: *mut f32, k: Self::K, v: Self::V);
    /// The even and the odd floats of `a` followed by `b`.
    fn deinterleave(self, a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// `a0 b0 a1 b1 ...`: the first `N` floats, then the next `N`.
    fn interleave(self, a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// Tiles per call of [`Lanes::product`] when at least that many columns are left.
    const COLS: usize;
    /// `out[r * ld + j] = sum_ci u[ci * ROWS + r] * v[ci * ld + j]` for the `ROWS` rows of
    /// a panel and `j < cols`, where `cols` is [`Lanes::COLS`] or (at the end of a row of
    /// `ld` floats) a multiple of `N` below it: one fused multiply-add chain per output, in
    /// `ci` order. `u` valid for `cin * ROWS` reads, `v` for `cin` rows of `cols` floats at
    /// stride `ld`, `out` for `ROWS` rows of `cols` floats at stride `ld`.
    unsafe fn product(
        self,
        cin: usize,
        u: *const f32,
        v: *const f32,
        ld: usize,
        out: *mut f32,
        cols: usize,
    );
}

/// AVX-512F.
#[derive(Clone, Copy)]
pub(super) struct Avx512 {
    _private: (),
}

impl Avx512 {
    /// # Safety
    /// The CPU has AVX-512F.
    pub(super) unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl Lanes for Avx512 {
    const N: usize = 16;
    type V = __m512;
    type K = __mmask16;
    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn relu(self, a: __m512) -> __m512 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm512_max_ps(_mm512_setzero_ps(), a) }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> __mmask16 {
        let below = |n: usize| {
            if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as u16
            }
        };
        below(hi) & !below(lo)
    }
    #[inline(always)]
    unsafe fn load_into(self, v: __m512, k: __mmask16, p: *const f32) -> __m512 {
        // SAFETY: the caller's contract: the lanes of `k` are readable.
        unsafe { _mm512_mask_loadu_ps(v, k, p) }
    }
    #[inline(always)]
    unsafe fn load(self, k: __mmask16, p: *const f32) -> __m512 {
        // SAFETY: as `load_into`.
        unsafe { _mm512_maskz_loadu_ps(k, p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, k: __mmask16, v: __m512) {
        // SAFETY: the caller's contract: the lanes of `k` are writable.
        unsafe { _mm512_mask_storeu_ps(p, k, v) }
    }
    #[inline(always)]
    fn deinterleave(self, a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe {
            let evens =
                _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, evens, b),
                _mm512_permutex2var_ps(a, odds, b),
            )
        }
    }
    #[inline(always)]
    fn interleave(self, a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe {
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi =
                _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            (
                _mm512_permutex2var_ps(a, lo, b),
                _mm512_permutex2var_ps(a, hi, b),
            )
        }
    }
    const COLS: usize = 32;
    #[inline(always)]
    unsafe fn product(
        self,
        cin: usize,
        u: *const f32,
        v: *const f32,
        ld: usize,
        out: *mut f32,
        cols: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            if cols >= 32 {
                tile512::<2>(cin, u, v, ld, out);
            } else {
                tile512::<1>(cin, u, v, ld, out);
            }
        }
    }
}

/// The 8 x `16 NV` product tile of AVX-512: 8 output channels broadcast, `NV` vectors of
/// tiles.
///
/// # Safety
/// AVX-512F; as [`Lanes::product`] with `cols = 16 NV`.
#[inline(always)]
unsafe fn tile512<const NV: usize>(
    cin: usize,
    u: *const f32,
    v: *const f32,
    ld: usize,
    out: *mut f32,
) {
    // SAFETY: (the whole body) the caller's contract; `cin` steps of `ROWS` and of `ld`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
        let (mut u, mut v) = (u, v);
        for _ in 0..cin {
            let mut b = [_mm512_setzero_ps(); NV];
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm512_loadu_ps(v.add(16 * j));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*u.add(r));
                for (j, &bj) in b.iter().enumerate() {
                    row[j] = _mm512_fmadd_ps(a, bj, row[j]);
                }
            }
            u = u.add(ROWS);
            v = v.add(ld);
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, &val) in row.iter().enumerate() {
                _mm512_storeu_ps(out.add(r * ld + 16 * j), val);
            }
        }
    }
}

/// A set of lanes of an AVX2 vector: the mask, and whether it holds all 8 (plain loads and
/// stores then: a masked store is slow on some CPUs, microcoded on AMD's).
#[derive(Clone, Copy)]
pub(super) struct Lanes8 {
    mask: __m256i,
    all: bool,
}

/// AVX2 and FMA.
#[derive(Clone, Copy)]
pub(super) struct Avx2 {
    _private: (),
}

impl Avx2 {
    /// # Safety
    /// The CPU has AVX2 and FMA.
    pub(super) unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl Lanes for Avx2 {
    const N: usize = 8;
    type V = __m256;
    type K = Lanes8;
    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn relu(self, a: __m256) -> __m256 {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe { _mm256_max_ps(_mm256_setzero_ps(), a) }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> Lanes8 {
        // SAFETY: the token's instruction set.
        let mask = unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_and_si256(
                _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(lo as i32 - 1)),
                _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), idx),
            )
        };
        Lanes8 {
            mask,
            all: lo == 0 && hi >= 8,
        }
    }
    #[inline(always)]
    unsafe fn load_into(self, v: __m256, k: Lanes8, p: *const f32) -> __m256 {
        // SAFETY: the caller's contract: the lanes of `k` are readable (the others read as
        // zero, which leaves `v`'s lanes as they are).
        unsafe { _mm256_or_ps(v, self.load(k, p)) }
    }
    #[inline(always)]
    unsafe fn load(self, k: Lanes8, p: *const f32) -> __m256 {
        // SAFETY: the caller's contract: the lanes of `k` are readable.
        unsafe {
            if k.all {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, k.mask)
            }
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, k: Lanes8, v: __m256) {
        // SAFETY: the caller's contract: the lanes of `k` are writable.
        unsafe {
            if k.all {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, k.mask, v)
            }
        }
    }
    #[inline(always)]
    fn deinterleave(self, a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe {
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs in the order 0, 2, 1, 3.
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o))),
            )
        }
    }
    #[inline(always)]
    fn interleave(self, a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the token's instruction set; the caller's contract for pointers.
        unsafe {
            // [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7], then their halves.
            let lo = _mm256_unpacklo_ps(a, b);
            let hi = _mm256_unpackhi_ps(a, b);
            (
                _mm256_permute2f128_ps::<0x20>(lo, hi),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            )
        }
    }
    const COLS: usize = 16;
    #[inline(always)]
    unsafe fn product(
        self,
        cin: usize,
        u: *const f32,
        v: *const f32,
        ld: usize,
        out: *mut f32,
        cols: usize,
    ) {
        // SAFETY: the caller's contract; each half panel is 4 rows of the 8.
        unsafe {
            for half in 0..2 {
                let (u, out) = (u.add(4 * half), out.add(4 * half * ld));
                if cols >= 16 {
                    tile256::<2>(cin, u, v, ld, out)
                } else {
                    tile256::<1>(cin, u, v, ld, out)
                }
            }
        }
    }
}

/// The 4 x `8 NV` product tile of AVX2: 4 output channels of an 8-row panel broadcast, `NV`
/// vectors of tiles (8 accumulators, 2 loads and 4 broadcasts per 8 fused multiply-adds at
/// `NV = 2`; a third vector runs out of the 16 registers and spills).
///
/// # Safety
/// AVX2 and FMA; `u` the panel's row 0 (or 4), valid for `cin * ROWS` reads; `v`, `out` as
/// [`Lanes::product`] with `cols = 8 NV` and 4 rows of `out`.
#[inline(always)]
unsafe fn tile256<const NV: usize>(
    cin: usize,
    u: *const f32,
    v: *const f32,
    ld: usize,
    out: *mut f32,
) {
    // SAFETY: (the whole body) the caller's contract; `cin` steps of `ROWS` and of `ld`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; 4];
        let (mut u, mut v) = (u, v);
        for _ in 0..cin {
            let mut b = [_mm256_setzero_ps(); NV];
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm256_loadu_ps(v.add(8 * j));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*u.add(r));
                for (j, &bj) in b.iter().enumerate() {
                    row[j] = _mm256_fmadd_ps(a, bj, row[j]);
                }
            }
            u = u.add(ROWS);
            v = v.add(ld);
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, &val) in row.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * ld + 8 * j), val);
            }
        }
    }
}
