//! Deterministic pairwise tree reduction: a fixed-shape binary tree over an index range
//! `lo..hi`, split at the midpoint `lo + (hi - lo) / 2` whatever the thread count, each leaf
//! (one index: a fixed-size chunk its caller sums sequentially in `f64`) computed alone, the
//! two halves of every node run with `rayon::join` and combined left then right.
//!
//! The shape depends on the range only, so every addition happens in the same order on any
//! number of threads and the result is bit-identical. [`tree_reduce`] is the one
//! implementation; [`tree_sum`] and [`try_tree_sum`] are its `f64` sums over chunks of a
//! length, the kernels that carry per-leaf output slices (softmax cross-entropy, the Quick
//! Thoughts forward pass) call it with a splitter. Nothing is allocated.

use std::ops::Range;

/// Reduces the index range `lo..hi` by the fixed binary tree: a range of at most one index
/// is a leaf, `leaf(lo, state)`; a longer one splits at `mid = lo + (hi - lo) / 2`, its
/// `state` cut in two by `split(state, lo, mid)`, the halves `lo..mid` and `mid..hi` reduced
/// with `rayon::join` and joined by `combine(left, right)`.
///
/// `state` is what a leaf owns besides its index (`()` for a pure sum; for kernels that
/// write per-row outputs, the output slices, cut at the first row of `mid`). An empty range
/// is a leaf too (`leaf(lo, state)`); callers that want an identity for it check first.
pub fn tree_reduce<S, T, Sp, L, C>(
    lo: usize,
    hi: usize,
    state: S,
    split: &Sp,
    leaf: &L,
    combine: &C,
) -> T
where
    S: Send,
    T: Send,
    Sp: Fn(S, usize, usize) -> (S, S) + Sync,
    L: Fn(usize, S) -> T + Sync,
    C: Fn(T, T) -> T + Sync,
{
    if hi - lo <= 1 {
        return leaf(lo, state);
    }
    let mid = lo + (hi - lo) / 2;
    let (sl, sr) = split(state, lo, mid);
    let (l, r) = rayon::join(
        || tree_reduce(lo, mid, sl, split, leaf, combine),
        || tree_reduce(mid, hi, sr, split, leaf, combine),
    );
    combine(l, r)
}

/// The range of chunk `i` when `0..len` is cut into chunks of `chunk` elements (the last
/// one shorter).
fn chunk_range(i: usize, chunk: usize, len: usize) -> Range<usize> {
    i * chunk..((i + 1) * chunk).min(len)
}

/// `sum` over the chunks of `0..len` (`chunk` elements each, the last one shorter) of
/// `leaf(chunk range)`, the chunk sums added by the fixed tree of [`tree_reduce`] over chunk
/// indices; `0.0` when `len == 0`. Bit-identical for any thread count.
pub fn tree_sum<L>(len: usize, chunk: usize, leaf: L) -> f64
where
    L: Fn(Range<usize>) -> f64 + Sync,
{
    let chunks = len.div_ceil(chunk);
    if chunks == 0 {
        return 0.0;
    }
    tree_reduce(
        0,
        chunks,
        (),
        &|(), _, _| ((), ()),
        &|i, ()| leaf(chunk_range(i, chunk, len)),
        &|l: f64, r: f64| l + r,
    )
}

/// [`tree_sum`] with a fallible leaf: the same tree and additions; an error of any leaf is
/// the result, the leftmost one when several fail (every leaf still runs).
///
/// # Errors
/// The leftmost leaf's error.
pub fn try_tree_sum<L, E>(len: usize, chunk: usize, leaf: L) -> Result<f64, E>
where
    L: Fn(Range<usize>) -> Result<f64, E> + Sync,
    E: Send,
{
    let chunks = len.div_ceil(chunk);
    if chunks == 0 {
        return Ok(0.0);
    }
    tree_reduce(
        0,
        chunks,
        (),
        &|(), _, _| ((), ()),
        &|i, ()| leaf(chunk_range(i, chunk, len)),
        &|l: Result<f64, E>, r: Result<f64, E>| Ok(l? + r?),
    )
}
