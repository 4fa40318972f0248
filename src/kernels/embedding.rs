//! Token embedding lookup (PyTorch's `nn.Embedding`, and `nn.EmbeddingBag` with mode
//! `mean`): the forward gathers rows of a `vocab x dim` table, the backward scatter-adds the
//! output gradient into the table's gradient.
//!
//! - The forwards run in parallel over the `N` sequences, each written by one thread, so
//!   they are identical for any thread count.
//! - The backwards sum sequentially in sequence, position and element order (`N * L * dim`
//!   additions, cheap beside the convolution that reads the embedding), so the table's
//!   gradient does not depend on the thread count either.
//! - A `padding` id (PyTorch's `padding_idx`) gets no gradient and is left out of a bag's
//!   mean; the plain lookup still reads its row (which the caller keeps at zero).

use crate::error::{check_len, Error, Result};
use rayon::prelude::*;

/// The sizes of a lookup: `n` sequences of `len` token ids into a `vocab x dim` table, with
/// an optional padding id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedding {
    pub n: usize,
    pub len: usize,
    pub vocab: usize,
    pub dim: usize,
    pub padding: Option<u32>,
}

impl Embedding {
    /// `Ok` when the sizes are usable and `table`-like (`vocab * dim`) and `ids` (`n * len`)
    /// slices have their lengths, every id below `vocab`.
    fn check(&self, op: &'static str, table: usize, ids: &[u32]) -> Result<()> {
        if self.len == 0 || self.dim == 0 {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "sequence length {} and dim {} must be > 0",
                    self.len, self.dim
                ),
            });
        }
        if let Some(p) = self.padding.filter(|&p| p as usize >= self.vocab) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "padding id {p} is not below the vocabulary size {}",
                    self.vocab
                ),
            });
        }
        check_len(op, table, self.vocab * self.dim)?;
        check_len(op, ids.len(), self.n * self.len)?;
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= self.vocab)
        {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "token id {id} at position {i} is not below the vocabulary size {}",
                    self.vocab
                ),
            });
        }
        Ok(())
    }
}

// table [vocab, dim], ids [N, L] -> y [N, dim, 1, L] (y[b, e, 0, t] = table[ids[b, t], e]);
// backward: dy [N, dim, 1, L] -> dtable [vocab, dim].

/// Embedding lookup: `table` (`vocab x dim`) rows gathered for `ids` (`N x L`) into the
/// channel-major `y` (`N x dim x 1 x L`, `y[b, e, 0, t] = table[ids[b, t], e]`): a sentence
/// as a `1 x L` image with the embedding as channels.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `table`, `ids` or `y` differ from the sizes;
/// [`Error::InvalidArgument`] when `len` or `dim` is zero, or an id or the padding id is not
/// below `vocab`.
pub fn embedding_forward(g: &Embedding, table: &[f32], ids: &[u32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "embedding_forward";
    g.check(OP, table.len(), ids)?;
    check_len(OP, y.len(), g.n * g.dim * g.len)?;
    let (len, dim) = (g.len, g.dim);
    y.par_chunks_mut(dim * len)
        .zip(ids.par_chunks(len))
        .for_each(|(ys, seq)| {
            for (t, &id) in seq.iter().enumerate() {
                let row = &table[id as usize * dim..(id as usize + 1) * dim];
                for (e, &v) in row.iter().enumerate() {
                    ys[e * len + t] = v;
                }
            }
        });
    Ok(())
}

/// The gradient of [`embedding_forward`]: `dtable` (`vocab x dim`, overwritten) gets
/// `dtable[ids[b, t], e] += dy[b, e, 0, t]` for every non-padding position, summed in order
/// of `b`, then `t`; the padding row and unused rows are zero.
///
/// # Errors
/// As [`embedding_forward`], with `dtable` and `dy` in place of `table` and `y`.
pub fn embedding_backward(
    g: &Embedding,
    ids: &[u32],
    dy: &[f32],
    dtable: &mut [f32],
) -> Result<()> {
    const OP: &str = "embedding_backward";
    g.check(OP, dtable.len(), ids)?;
    check_len(OP, dy.len(), g.n * g.dim * g.len)?;
    let (len, dim, padding) = (g.len, g.dim, g.padding);
    dtable.fill(0.0);
    for (b, seq) in ids.chunks(len).enumerate() {
        let dys = &dy[b * dim * len..(b + 1) * dim * len];
        for (t, &id) in seq
            .iter()
            .enumerate()
            .filter(|&(_, &id)| Some(id) != padding)
        {
            let row = &mut dtable[id as usize * dim..(id as usize + 1) * dim];
            for (e, r) in row.iter_mut().enumerate() {
                *r += dys[e * len + t];
            }
        }
    }
    Ok(())
}

// table [vocab, dim], ids [N, L] -> y [N, dim] (the mean of each row's non-padding
// embeddings); backward: dy [N, dim] -> dtable [vocab, dim].

/// Bag of embeddings, mode `mean`: `y[b]` (`N x dim`) is the mean of `table[ids[b, t]]`
/// over the non-padding positions `t` of sequence `b` (summed in position order, then
/// multiplied by `1 / count`); a sequence of padding only gives a zero vector.
///
/// # Errors
/// As [`embedding_forward`], with `y` of `N * dim`.
pub fn embedding_bag_mean_forward(
    g: &Embedding,
    table: &[f32],
    ids: &[u32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "embedding_bag_mean_forward";
    g.check(OP, table.len(), ids)?;
    check_len(OP, y.len(), g.n * g.dim)?;
    let (len, dim, padding) = (g.len, g.dim, g.padding);
    y.par_chunks_mut(dim)
        .zip(ids.par_chunks(len))
        .for_each(|(ys, seq)| {
            ys.fill(0.0);
            let mut count = 0usize;
            for &id in seq.iter().filter(|&&id| Some(id) != padding) {
                let row = &table[id as usize * dim..(id as usize + 1) * dim];
                ys.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                count += 1;
            }
            if count > 0 {
                let inv = 1.0 / count as f32;
                ys.iter_mut().for_each(|a| *a *= inv);
            }
        });
    Ok(())
}

/// The gradient of [`embedding_bag_mean_forward`]: `dtable` (`vocab x dim`, overwritten)
/// gets `dtable[ids[b, t]] += (1 / count_b) * dy[b]` for every non-padding position, summed
/// in order of `b`, then `t` (`count_b` the non-padding positions of sequence `b`).
///
/// # Errors
/// As [`embedding_bag_mean_forward`], with `dtable` and `dy` in place of `table` and `y`.
pub fn embedding_bag_mean_backward(
    g: &Embedding,
    ids: &[u32],
    dy: &[f32],
    dtable: &mut [f32],
) -> Result<()> {
    const OP: &str = "embedding_bag_mean_backward";
    g.check(OP, dtable.len(), ids)?;
    check_len(OP, dy.len(), g.n * g.dim)?;
    let (len, dim, padding) = (g.len, g.dim, g.padding);
    dtable.fill(0.0);
    for (b, seq) in ids.chunks(len).enumerate() {
        let tokens = seq.iter().filter(|&&id| Some(id) != padding);
        let count = tokens.clone().count();
        if count == 0 {
            continue;
        }
        let inv = 1.0 / count as f32;
        let dys = &dy[b * dim..(b + 1) * dim];
        for &id in tokens {
            let row = &mut dtable[id as usize * dim..(id as usize + 1) * dim];
            row.iter_mut().zip(dys).for_each(|(r, &d)| *r += inv * d);
        }
    }
    Ok(())
}
