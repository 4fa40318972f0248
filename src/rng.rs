//! The crate's small deterministic random streams.
//!
//! Everything random in selfsup (initialization, shuffles, augmentations, the built-in
//! dataset) derives from a user seed through [`SplitMix64`] and [`mix`], whose outputs are
//! fixed by this file and never by a dependency's version, so a seed means the same run
//! on every build. Streams are keyed by what they serve (seed, epoch, index, view), never
//! by the thread that draws them.

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny generator with a fixed stream.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        finalize(self.0)
    }

    /// A uniform `f64` in `[0, 1)` (53 random bits).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in `[0, 1)` (24 random bits).
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; `n > 0`, bias below 2^-32
    /// for the sizes used here).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// SplitMix64's output function: a bijective 64-bit mixer.
#[inline]
pub fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for the stream keyed by `keys` under `seed` (for example `[epoch, index, view]`):
/// each key is folded in through the mixer, so nearby keys give unrelated streams.
pub fn mix(seed: u64, keys: &[u64]) -> u64 {
    keys.iter()
        .fold(finalize(seed ^ 0x5e1f_5e1f_5e1f_5e1f), |h, &k| {
            finalize(h ^ finalize(k.wrapping_add(0x9e37_79b9_7f4a_7c15)))
        })
}

/// A uniformly random permutation of `0..n` (Fisher-Yates) from the stream `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    shuffle(&mut p, seed);
    p
}

/// Shuffles `v` in place (Fisher-Yates) from the stream `seed`.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_stream() {
        // The first outputs of SplitMix64 seeded with 0 (as in the reference C code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn permutation_is_a_permutation_and_depends_on_the_seed() {
        for n in [0, 1, 2, 7, 100] {
            let mut p = permutation(n, 3);
            p.sort_unstable();
            assert_eq!(p, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(permutation(50, 1), permutation(50, 2));
        assert_eq!(permutation(50, 1), permutation(50, 1));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(9);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[r.below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn mix_separates_nearby_keys() {
        let a = mix(1, &[0, 1]);
        assert_ne!(a, mix(1, &[1, 0]));
        assert_ne!(a, mix(2, &[0, 1]));
        assert_ne!(a, mix(1, &[0, 2]));
        assert_eq!(a, mix(1, &[0, 1]));
    }
}
