//! The portable microkernel, written with `wide` so it vectorizes on any target (SSE2 on a
//! baseline x86_64, NEON on aarch64): a 6x8 tile of `f32x8` accumulators.

use super::kernel::MicroKernel;
use wide::f32x8;

/// The portable kernel; always compiled, selected when AVX2+FMA is absent or when
/// `SELFSUP_FORCE_PORTABLE=1`.
pub(crate) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = 6;
    const NR: usize = 8;
    const MC: usize = 120;
    const KC: usize = 256;
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
        let mut acc = [f32x8::ZERO; 6];
        for p in 0..kc {
            // SAFETY: `b` is valid for `kc * 8` floats and `a` for `kc * 6` (trait contract);
            // `read_unaligned` makes no alignment assumption.
            let (bv, ap) = unsafe {
                (
                    f32x8::from(b.add(p * 8).cast::<[f32; 8]>().read_unaligned()),
                    a.add(p * 6).cast::<[f32; 6]>().read_unaligned(),
                )
            };
            for (acc_i, &ai) in acc.iter_mut().zip(ap.iter()) {
                *acc_i = f32x8::splat(ai).mul_add(bv, *acc_i);
            }
        }
        let va = f32x8::splat(alpha);
        let vb = f32x8::splat(beta);
        for (i, acc_i) in acc.iter().enumerate() {
            let mut r = va * *acc_i;
            if csc == 1 {
                // SAFETY: the caller guarantees `c + i*rsc + j`, j < 8, is valid and exclusive.
                unsafe {
                    let cp = c.add(i * rsc).cast::<[f32; 8]>();
                    if beta != 0.0 {
                        r = vb.mul_add(f32x8::from(cp.read_unaligned()), r);
                    }
                    cp.write_unaligned(r.to_array());
                }
            } else {
                let mut old = [0.0f32; 8];
                if beta != 0.0 {
                    for (j, o) in old.iter_mut().enumerate() {
                        // SAFETY: as above, with column stride `csc`.
                        *o = unsafe { *c.add(i * rsc + j * csc) };
                    }
                    r = vb.mul_add(f32x8::from(old), r);
                }
                for (j, v) in r.to_array().into_iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { *c.add(i * rsc + j * csc) = v };
                }
            }
        }
    }
}
