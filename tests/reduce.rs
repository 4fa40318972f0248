//! The deterministic tree reduction of `kernels::reduce`: its sums against a naive `f64`
//! sum over lengths around the chunk size, its order of additions against a sequential
//! model of the documented tree (midpoint split, left plus right), its shape, the leftmost
//! error of the fallible sum, the output slices handed to the leaves, and identical bits on
//! one-, two- and three-thread pools.

use selfsup::kernels::reduce::{tree_reduce, tree_sum, try_tree_sum};
use std::ops::Range;

/// A small deterministic generator (SplitMix64): values in `[-1, 1)` of mixed magnitudes.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * [1.0, 1e-3, 1e3][(z & 3) as usize % 3]
        })
        .collect()
}

/// The leaf every test sums with: the chunk's values in order, in `f64`.
fn seq(x: &[f32], r: Range<usize>) -> f64 {
    x[r].iter().map(|&v| f64::from(v)).sum()
}

/// The documented tree, sequentially: chunk sums combined left plus right, split at the
/// midpoint.
fn model(x: &[f32], chunk: usize, lo: usize, hi: usize) -> f64 {
    if hi - lo == 1 {
        return seq(x, lo * chunk..((lo + 1) * chunk).min(x.len()));
    }
    let mid = lo + (hi - lo) / 2;
    model(x, chunk, lo, mid) + model(x, chunk, mid, hi)
}

const CHUNKS: [usize; 3] = [1, 256, 16 * 1024];

fn lengths(chunk: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3, 5, 7, 13, 97, 1009, 7919, 65_537];
    v.extend([
        chunk.saturating_sub(1),
        chunk,
        chunk + 1,
        3 * chunk + 7,
        1_000_003,
    ]);
    v.sort_unstable();
    v.dedup();
    v
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn sums_match_a_naive_f64_sum() {
    for chunk in CHUNKS {
        for len in lengths(chunk) {
            // Integers: every partial sum is exact in f64, so any order gives the same bits.
            let ints: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 - 500.0).collect();
            let naive: f64 = ints.iter().map(|&v| f64::from(v)).sum();
            assert_eq!(
                tree_sum(len, chunk, |r| seq(&ints, r)),
                naive,
                "{len}/{chunk}"
            );
            // Mixed magnitudes: equal to within the rounding of the two orders.
            let x = data(len, len as u64);
            let naive: f64 = x.iter().map(|&v| f64::from(v)).sum();
            let bound: f64 = x.iter().map(|&v| f64::from(v).abs()).sum::<f64>() * 1e-13;
            let got = tree_sum(len, chunk, |r| seq(&x, r));
            assert!(
                (got - naive).abs() <= bound,
                "{len}/{chunk}: {got} vs {naive}"
            );
        }
    }
}

#[test]
fn additions_follow_the_documented_tree() {
    for chunk in CHUNKS {
        for len in lengths(chunk).into_iter().filter(|&l| l > 0) {
            let x = data(len, 7 * len as u64 + 1);
            let want = model(&x, chunk, 0, len.div_ceil(chunk));
            let got = tree_sum(len, chunk, |r| seq(&x, r));
            assert_eq!(got.to_bits(), want.to_bits(), "{len}/{chunk}");
            let got: Result<f64, ()> = try_tree_sum(len, chunk, |r| Ok(seq(&x, r)));
            assert_eq!(got.unwrap().to_bits(), want.to_bits(), "{len}/{chunk}");
        }
    }
}

#[test]
fn the_tree_splits_at_the_midpoint() {
    let shape = |hi: usize| {
        tree_reduce(
            0,
            hi,
            (),
            &|(), _, _| ((), ()),
            &|i, ()| i.to_string(),
            &|l, r| format!("({l} {r})"),
        )
    };
    assert_eq!(shape(1), "0");
    assert_eq!(shape(2), "(0 1)");
    assert_eq!(shape(5), "((0 1) (2 (3 4)))");
    assert_eq!(shape(8), "(((0 1) (2 3)) ((4 5) (6 7)))");
    // An empty range is one leaf; the sums return zero for it without calling the leaf.
    assert_eq!(shape(0), "0");
    assert_eq!(tree_sum(0, 4, |_| panic!("called")), 0.0);
    assert_eq!(try_tree_sum::<_, ()>(0, 4, |_| panic!("called")), Ok(0.0));
}

#[test]
fn the_leftmost_error_wins() {
    for threads in [1, 2] {
        let got = pool(threads).install(|| {
            try_tree_sum(100, 7, |r| match r.start / 7 {
                3 | 5 | 11 => Err(r.start),
                _ => Ok(1.0),
            })
        });
        assert_eq!(got, Err(21), "{threads} threads");
    }
}

#[test]
fn leaves_own_their_part_of_the_state() {
    let n = 1000;
    let mut out = vec![usize::MAX; n];
    let total = tree_reduce(
        0,
        n,
        &mut out[..],
        &|s: &mut [usize], lo, mid| s.split_at_mut(mid - lo),
        &|i, s: &mut [usize]| {
            assert_eq!(s.len(), 1);
            s[0] = i;
            i
        },
        &|l, r| l + r,
    );
    assert_eq!(total, n * (n - 1) / 2);
    assert!(out.iter().enumerate().all(|(i, &v)| i == v));
}

#[test]
fn bits_do_not_depend_on_the_thread_count() {
    let pools = [pool(1), pool(2), pool(3)];
    for chunk in CHUNKS {
        for len in lengths(chunk) {
            let x = data(len, 3 * len as u64 + 11);
            let bits: Vec<(u64, u64)> = pools
                .iter()
                .map(|p| {
                    p.install(|| {
                        let a = tree_sum(len, chunk, |r| seq(&x, r));
                        let b: Result<f64, ()> = try_tree_sum(len, chunk, |r| Ok(seq(&x, r)));
                        (a.to_bits(), b.unwrap().to_bits())
                    })
                })
                .collect();
            assert!(bits.windows(2).all(|w| w[0] == w[1]), "{len}/{chunk}");
            assert_eq!(bits[0].0, bits[0].1, "{len}/{chunk}");
        }
    }
}
