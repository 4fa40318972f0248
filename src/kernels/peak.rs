//! The machine's fused multiply-add peak: every thread of the current pool runs twelve
//! independent chains of register-only FMAs (zmm for AVX-512, ymm for AVX2, the portable
//! `wide` vectors elsewhere) at once; the figure is the flops of all threads over the wall
//! time, the best of a few runs. Twelve chains hide the FMA latency of every x86 core this
//! crate targets (4 cycles x 2 pipes needs 8). `selfsup bench --peak` divides each
//! workload's rate by it.

use std::hint::black_box;
use std::time::Instant;

use super::dispatch::{isa, Isa};

/// Independent accumulator chains per thread.
const CHAINS: usize = 12;

/// FMA iterations (each `CHAINS` vector FMAs) per thread per run.
const ITERS: u64 = 4_000_000;

/// Runs of the whole pool; the fastest counts.
const RUNS: usize = 3;

/// The FMA peak of the current rayon pool in GFLOP/s, on the kernels' ISA ([`isa`]): each
/// of its threads runs the same register-only loop concurrently. Takes about a tenth of a
/// second per run on a 2 GHz core (AVX-512).
pub fn fma_peak_gflops() -> f64 {
    let threads = rayon::current_num_threads();
    let lanes = match isa() {
        Isa::Avx512 => 16,
        Isa::Avx2Fma | Isa::Portable => 8,
    };
    let flops = (threads * CHAINS * lanes * 2) as f64 * ITERS as f64;
    (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            rayon::broadcast(|_| black_box(chains(black_box(ITERS))));
            flops / t0.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// One thread's loop on the kernels' ISA; the sum of its accumulators (so nothing is elided).
fn chains(iters: u64) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports AVX-512F only when the CPU has it.
        Isa::Avx512 => unsafe { x86::chains_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports AVX2+FMA only when the CPU has them.
        Isa::Avx2Fma => unsafe { x86::chains_avx2(iters) },
        _ => chains_portable(iters),
    }
}

fn chains_portable(iters: u64) -> f32 {
    use wide::f32x8;
    let (a, b) = (f32x8::splat(0.999_9), f32x8::splat(1e-7));
    let mut acc = [f32x8::splat(1.0); CHAINS];
    for _ in 0..iters {
        for c in &mut acc {
            *c = c.mul_add(a, b);
        }
    }
    acc.iter().map(|c| c.reduce_add()).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains_avx512(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in &mut acc {
                *c = _mm512_fmadd_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains_avx2(iters: u64) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in &mut acc {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for c in acc {
            // SAFETY: `lanes` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), c) };
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops compute what they claim: x <- 0.9999 x + 1e-7 from 1, per lane, per chain.
    #[test]
    fn the_chains_compute_the_recurrence() {
        let n = 1000;
        let mut x = 1.0f64;
        for _ in 0..n {
            x = x * f64::from(0.999_9f32) + f64::from(1e-7f32);
        }
        let want = x * (CHAINS * 8) as f64;
        let got = f64::from(chains_portable(n));
        assert!((got - want).abs() < 1e-3 * want, "{got} vs {want}");
        let lanes = if isa() == Isa::Avx512 { 16.0 } else { 8.0 };
        let got = f64::from(chains(n));
        let want = x * CHAINS as f64 * lanes;
        assert!((got - want).abs() < 1e-3 * want, "{got} vs {want}");
    }
}
