//! The crate's small deterministic random streams.
//!
//! Everything random in selfsup (initialization, shuffles, augmentations, the built-in
//! dataset) derives from a user seed through [`SplitMix64`] and [`mix`], whose outputs are
//! fixed by this file and never by a dependency's version, so a seed means the same run
//! on every build. Streams are keyed by what they serve (seed, epoch, index, view), never
//! by the thread that draws them.
//!
//! [`SplitMix64`] implements `rand_core`'s [`TryRng`] (hence [`rand_core::Rng`]) and
//! [`SeedableRng`], so the `rand` ecosystem's samplers, shuffles and distributions take it
//! as it is; its own methods below stay the ones the crate uses, with the values they
//! always gave.

use core::convert::Infallible;

use rand_core::{SeedableRng, TryRng};

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

/// The `rand_core` view of the stream: `next_u64` is [`SplitMix64::next_u64`], `next_u32`
/// its high 32 bits, `fill_bytes` the `next_u64` words little-endian (the last one cut).
impl TryRng for SplitMix64 {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((SplitMix64::next_u64(self) >> 32) as u32)
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(SplitMix64::next_u64(self))
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u64())
    }
}

/// The seed is the starting state, 8 bytes little-endian; `seed_from_u64(s)` is
/// [`SplitMix64::new`]`(s)` (SplitMix64 takes any state, small ones included, so the
/// trait's default scrambling of the seed is not needed).
impl SeedableRng for SplitMix64 {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        Self::new(u64::from_le_bytes(seed))
    }

    fn seed_from_u64(state: u64) -> Self {
        Self::new(state)
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

    /// Outputs of this file as it stood before `rand_core` (taken from that code and written
    /// down): the traits must not move a single value of the crate's own methods.
    #[test]
    fn the_crate_s_streams_are_pinned() {
        let mut r = SplitMix64::new(42);
        assert_eq!(r.next_u64(), 0xbdd7_3226_2feb_6e95);
        assert_eq!(r.next_u64(), 0x28ef_e333_b266_f103);
        assert_eq!(r.next_u64(), 0x4752_6757_130f_9f52);
        let mut r = SplitMix64::new(2026);
        assert_eq!(r.next_f64().to_bits(), 0x3feb_738a_b312_3291);
        assert_eq!(r.next_f64().to_bits(), 0x3fde_2f24_9f7b_4d50);
        assert_eq!(r.next_f32().to_bits(), 0x3f2a_d71e);
        assert_eq!(r.next_f32().to_bits(), 0x3ec5_0126);
        assert_eq!(r.below(10), 7);
        assert_eq!(r.below(1000), 726);
        assert_eq!(r.below(1 << 40), 1_047_845_477_477);
        assert_eq!(mix(7, &[1, 2, 3]), 0x8e08_294f_7fa3_0fda);
        assert_eq!(mix(0, &[]), 0x9bc9_b2d1_5ccc_e814);
        assert_eq!(permutation(10, 5), [2, 8, 4, 9, 5, 7, 0, 1, 6, 3]);
    }

    #[test]
    fn rand_core_traits_give_the_same_stream() {
        use rand_core::Rng;
        // Seeding through the trait starts the same stream as `new`.
        let mut a = SplitMix64::seed_from_u64(0);
        assert_eq!(Rng::next_u64(&mut a), 0xe220_a839_7b1d_cdaf);
        let mut b = SplitMix64::from_seed(42u64.to_le_bytes());
        assert_eq!(Rng::next_u64(&mut b), 0xbdd7_3226_2feb_6e95);
        // next_u32: the high half of the next word.
        assert_eq!(Rng::next_u32(&mut b), 0x28ef_e333);
        // fill_bytes: words little-endian, the last one cut.
        let mut c = SplitMix64::new(42);
        let mut bytes = [0u8; 12];
        c.fill_bytes(&mut bytes);
        assert_eq!(bytes[..8], 0xbdd7_3226_2feb_6e95u64.to_le_bytes());
        assert_eq!(bytes[8..], 0x28ef_e333_b266_f103u64.to_le_bytes()[..4]);
        assert_eq!(c.next_u64(), 0x4752_6757_130f_9f52);
    }

    #[test]
    fn composes_with_rand() {
        use rand::seq::SliceRandom;
        use rand::RngExt;
        let mut v: Vec<u32> = (0..50).collect();
        v.shuffle(&mut SplitMix64::new(3));
        let mut w: Vec<u32> = (0..50).collect();
        w.shuffle(&mut SplitMix64::new(3));
        assert_eq!(v, w);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
        let mut r = SplitMix64::new(1);
        for _ in 0..100 {
            let x: f64 = r.random();
            assert!((0.0..1.0).contains(&x));
            assert!((5..9).contains(&r.random_range(5..9)));
        }
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
