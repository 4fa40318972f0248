//! The x86_64 AVX-512 kernels: a 12x32 GEMM register tile (24 zmm accumulators, two zmm B
//! loads and twelve broadcasts of A per step) and an 8x32 tile for the direct convolution's
//! gather. With two 512-bit FMA pipes this doubles the multiply-adds per cycle of the AVX2
//! 6x16 tile; every output is still one chain of fused multiply-adds in the order of the
//! depth, so results do not depend on the number of threads.

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

/// The AVX-512 kernel. Only selected when the CPU reports AVX-512F (and AVX2 and FMA).
pub(crate) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    // B micro-panel 192 x 32 floats (24 KiB) in a 32-48 KiB L1d; A block 144 x 192 (108 KiB)
    // in a 1-2 MiB L2; B block 192 x 4096 (3 MiB) in the shared L3.
    const MC: usize = 144;
    const KC: usize = 192;
    const NC: usize = 4096;

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
        // kernel after detecting AVX-512F.
        unsafe { kernel_12x32(kc, alpha, a, b, beta, c, rsc, csc) }
    }
}

/// Expands `$m!(i)` for the twelve rows `i = 0 .. 12` of the GEMM tile.
macro_rules! each_row {
    ($m:ident) => {
        $m!(0);
        $m!(1);
        $m!(2);
        $m!(3);
        $m!(4);
        $m!(5);
        $m!(6);
        $m!(7);
        $m!(8);
        $m!(9);
        $m!(10);
        $m!(11);
    };
}

/// # Safety
/// See [`MicroKernel::kernel`]; AVX-512F must be available.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32(
    kc: usize,
    alpha: f32,
    mut a: *const f32,
    mut b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; 12];
    if csc == 1 {
        // Start fetching the C tile now, so the update at the end does not wait on memory;
        // into L2, not L1: with a row stride of a multiple of 4 KiB (1024 or 2048 columns)
        // the twelve rows fall in the same L1 sets, and fetched there this early they
        // evicted each other and lines of the B panel before the update read them.
        for i in 0..12 {
            let row = c.wrapping_add(i * rsc);
            _mm_prefetch::<_MM_HINT_T1>(row.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(31).cast::<i8>());
        }
    }

    macro_rules! step {
        () => {{
            // SAFETY: `b` points into a packed panel of `kc * 32` floats and `a` into one of
            // `kc * 12`; the loops below run exactly `kc` steps.
            unsafe {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*a.add(i));
                    row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
                }
                a = a.add(12);
                b = b.add(32);
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

    // The rows are written out by a macro with constant indices, not a loop: indexing the
    // accumulators with a loop variable kept them in a stack array (zeroed by a call to
    // memset and spilled after the depth loop, on every call).
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    if csc == 1 {
        macro_rules! store_row {
            ($i:literal) => {
                // SAFETY: the caller guarantees the tile `c + i*rsc + j`, j < 32, is valid.
                unsafe {
                    let cp = c.add($i * rsc);
                    let mut r0 = _mm512_mul_ps(va, acc[$i][0]);
                    let mut r1 = _mm512_mul_ps(va, acc[$i][1]);
                    if beta != 0.0 {
                        r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp), r0);
                        r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp.add(16)), r1);
                    }
                    _mm512_storeu_ps(cp, r0);
                    _mm512_storeu_ps(cp.add(16), r1);
                }
            };
        }
        each_row!(store_row);
    } else {
        let mut t = [0.0f32; 32];
        macro_rules! store_row {
            ($i:literal) => {
                // SAFETY: `t` holds 32 floats; the tile `c + i*rsc + j*csc`, j < 32, is valid.
                unsafe {
                    _mm512_storeu_ps(t.as_mut_ptr(), _mm512_mul_ps(va, acc[$i][0]));
                    _mm512_storeu_ps(t.as_mut_ptr().add(16), _mm512_mul_ps(va, acc[$i][1]));
                    for (j, &v) in t.iter().enumerate() {
                        let cp = c.add($i * rsc + j * csc);
                        // Same rounding as the vector path: one fused multiply-add.
                        *cp = if beta != 0.0 { beta.mul_add(*cp, v) } else { v };
                    }
                }
            };
        }
        each_row!(store_row);
    }
}

/// An 8x32 tile of a direct convolution, `out[32 i + j] = sum_p bases[i][offs[p]] *
/// b[32 p + j]` (see `avx2::gather_tile_6x16`, of which this is the AVX-512 twin): 16 zmm
/// accumulators, eight broadcasts and two loads per step. Eight rows, not twelve as in the
/// GEMM tile: each row has its own base pointer, and twelve of them with the offset, panel
/// and counter registers exceed the sixteen general registers (the accumulators were then
/// spilled to the stack and the tile ran at half the speed).
///
/// # Safety
/// AVX-512F must be available; `offs` must be valid for `k` reads, `bases[i].add(o)` valid
/// for reading for every `i < 8` and every `o` in `offs[..k]`, and `b` valid for `k * 32`
/// reads.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gather_tile_8x32(
    k: usize,
    offs: *const usize,
    bases: &[*const f32; 8],
    b: *const f32,
    out: &mut [f32; 256],
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; 8];
    let mut b = b;
    let mut offs = offs;
    macro_rules! step {
        () => {{
            // SAFETY: the caller guarantees `offs` has `k` entries, every `bases[i] + o` is
            // readable, and `b` holds `k * 32` floats; the loops below run `k` steps.
            unsafe {
                let o = *offs;
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (row, base) in acc.iter_mut().zip(bases.iter()) {
                    let ai = _mm512_set1_ps(*base.add(o));
                    row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
                }
                offs = offs.add(1);
                b = b.add(32);
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
        // SAFETY: `out` holds 256 floats; row i covers out[32 i .. 32 i + 32].
        unsafe {
            _mm512_storeu_ps(out.as_mut_ptr().add(32 * i), row[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(32 * i + 16), row[1]);
        }
    }
}
