//! The x86_64 AVX2 + FMA microkernel: a 6x16 register tile (12 ymm accumulators, two ymm
//! B loads and one broadcast of A per step), the shape BLIS uses on Haswell and Zen.

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

/// The AVX2 + FMA kernel. Only selected when the CPU reports both features.
pub(crate) struct Avx2Fma;

impl MicroKernel for Avx2Fma {
    const MR: usize = 6;
    const NR: usize = 16;
    // A block 72 x 256..320 floats (72-90 KiB) in the 512 KiB L2; B micro-panel 256..320 x 16
    // (16-20 KiB) in the 32 KiB L1d; B block 256 x 4080 (4 MiB) in the shared L3. MC = 72
    // measured a few percent ahead of BLIS's Zen value 144 on the 2-core EPYC (Zen 3).
    const MC: usize = 72;
    const KC: usize = 256;
    const NC: usize = 4080;

    #[inline]
    unsafe fn kernel(
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        beta: f32,
        c: *mut f32,
        rsc: usize,
        csc: usize,
    ) {
        // SAFETY: the caller upholds the trait contract and the dispatcher only selects this
        // kernel after detecting AVX2 and FMA.
        unsafe { kernel_6x16(kc, alpha, a, b, beta, c, rsc, csc) }
    }
}

/// # Safety
/// See [`MicroKernel::kernel`]; AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_6x16(
    kc: usize,
    alpha: f32,
    mut a: *const f32,
    mut b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; 6];
    if csc == 1 {
        // Start fetching the C tile now, so the update at the end does not wait on memory.
        for i in 0..6 {
            let row = c.wrapping_add(i * rsc);
            _mm_prefetch::<_MM_HINT_T0>(row.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(15).cast::<i8>());
        }
    }

    macro_rules! step {
        () => {{
            // SAFETY: `b` points into a 32-byte-aligned packed panel of `kc * 16` floats and
            // `a` into one of `kc * 6`; the loop below runs exactly `kc` steps.
            unsafe {
                let b0 = _mm256_load_ps(b);
                let b1 = _mm256_load_ps(b.add(8));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*a.add(i));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
                a = a.add(6);
                b = b.add(16);
            }
        }};
    }

    for _ in 0..kc / 4 {
        step!();
        step!();
        step!();
        step!();
    }
    for _ in 0..kc % 4 {
        step!();
    }

    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    if csc == 1 {
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the caller guarantees the tile `c + i*rsc + j`, j < 16, is valid.
            unsafe {
                let cp = c.add(i * rsc);
                let mut r0 = _mm256_mul_ps(va, row[0]);
                let mut r1 = _mm256_mul_ps(va, row[1]);
                if beta != 0.0 {
                    r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp), r0);
                    r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp.add(8)), r1);
                }
                _mm256_storeu_ps(cp, r0);
                _mm256_storeu_ps(cp.add(8), r1);
            }
        }
    } else {
        let mut t = [0.0f32; 16];
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: `t` holds 16 floats; the tile `c + i*rsc + j*csc`, j < 16, is valid.
            unsafe {
                _mm256_storeu_ps(t.as_mut_ptr(), _mm256_mul_ps(va, row[0]));
                _mm256_storeu_ps(t.as_mut_ptr().add(8), _mm256_mul_ps(va, row[1]));
                for (j, &v) in t.iter().enumerate() {
                    let cp = c.add(i * rsc + j * csc);
                    // Same rounding as the vector path: one fused multiply-add.
                    *cp = if beta != 0.0 { beta.mul_add(*cp, v) } else { v };
                }
            }
        }
    }
}

/// A 6x16 tile of a direct convolution, `out[16 i + j] = sum_p bases[i][offs[p]] *
/// b[16 p + j]`: row `i` is an output pixel (its own base pointer into a zero-padded input),
/// `offs[p]` the input offset of kernel tap `p`, and `b` a 16-channel panel of the weights.
/// No column matrix is packed: the six broadcasts per step read the input directly.
///
/// # Safety
/// AVX2 and FMA must be available; `offs` must be valid for `k` reads, `bases[i].add(o)`
/// valid for reading for every `i < 6` and every `o` in `offs[..k]`, and `b` valid for
/// `k * 16` reads.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gather_tile_6x16(
    k: usize,
    offs: *const usize,
    bases: &[*const f32; 6],
    b: *const f32,
    out: &mut [f32; 96],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; 6];
    let mut b = b;
    let mut offs = offs;
    macro_rules! step {
        () => {{
            // SAFETY: the caller guarantees `offs` has `k` entries, every `bases[i] + o` is
            // readable, and `b` holds `k * 16` floats; the loops below run `k` steps.
            unsafe {
                let o = *offs;
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (row, base) in acc.iter_mut().zip(bases.iter()) {
                    let ai = _mm256_broadcast_ss(&*base.add(o));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
                offs = offs.add(1);
                b = b.add(16);
            }
        }};
    }
    for _ in 0..k / 4 {
        step!();
        step!();
        step!();
        step!();
    }
    for _ in 0..k % 4 {
        step!();
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: `out` holds 96 floats; row i covers out[16 i .. 16 i + 16].
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * i), row[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * i + 8), row[1]);
        }
    }
}
