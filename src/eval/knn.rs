//! The weighted k-nearest-neighbour monitor (Wu et al. 2018, InstDisc; as in lightly's
//! `knn_predict`): cosine similarity of each query to every labeled feature, the `k` most
//! similar vote for their class with weight `exp(sim / t)`, the heaviest class wins.
//!
//! Features are L2-normalized once (norms in `f64`), similarities come from the crate's GEMM
//! in blocks of query rows (memory `block x n_train`), and the top `k` of each row are
//! selected with ties broken by the lower index, so the result is deterministic and
//! independent of the thread count.

use crate::error::{check_len, Error, Result};
use crate::kernels::gemm::{gemm, GemmParams, MatMut, MatRef, Transpose};
use rayon::prelude::*;

/// The monitor's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnConfig {
    /// Neighbours that vote (200 in InstDisc and lightly).
    pub k: usize,
    /// Temperature of the vote weights `exp(sim / t)` (lightly's default 0.1).
    pub t: f32,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self { k: 200, t: 0.1 }
    }
}

const OP: &str = "knn";
/// Query rows per similarity block.
const BLOCK: usize = 256;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

/// Rows of `x` (`n x d`) scaled to unit length (zero rows stay zero).
fn normalized(x: &[f32], n: usize, d: usize, what: &str) -> Result<Vec<f32>> {
    check_len(OP, x.len(), n * d)?;
    let mut out = x.to_vec();
    out.par_chunks_mut(d.max(1))
        .enumerate()
        .try_for_each(|(i, row)| {
            let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if !ss.is_finite() {
                return Err(invalid(format!("{what} row {i} is not finite")));
            }
            let inv = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
            row.iter_mut()
                .for_each(|v| *v = (f64::from(*v) * inv) as f32);
            Ok(())
        })?;
    Ok(out)
}

/// Predicted classes of the `m` query rows of `query` (`m x d`) by a weighted vote of their
/// `k` nearest rows of `bank` (`n x d`, labels `bank_labels < classes`).
///
/// # Errors
/// Wrong lengths, `d == 0`, `k == 0`, an empty bank, `t <= 0`, a label out of range or a
/// non-finite feature.
pub fn knn_predict(
    bank: &[f32],
    bank_labels: &[u32],
    query: &[f32],
    d: usize,
    classes: usize,
    cfg: &KnnConfig,
) -> Result<Vec<u32>> {
    if d == 0 {
        return Err(invalid("feature dimension 0".into()));
    }
    let n = bank_labels.len();
    if n == 0 {
        return Err(invalid("no labeled features to vote".into()));
    }
    if cfg.k == 0 || !(cfg.t > 0.0 && cfg.t.is_finite()) {
        return Err(invalid(format!(
            "k must be at least 1 and t positive, got k {} and t {}",
            cfg.k, cfg.t
        )));
    }
    if let Some((i, &l)) = bank_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(invalid(format!(
            "label {l} of bank row {i} is out of range (classes {classes})"
        )));
    }
    if !query.len().is_multiple_of(d) {
        return Err(invalid(format!(
            "query of {} values is not a whole number of rows of {d}",
            query.len()
        )));
    }
    let m = query.len() / d;
    let bank = normalized(bank, n, d, "bank")?;
    let query = normalized(query, m, d, "query")?;
    let k = cfg.k.min(n);
    let inv_t = 1.0 / f64::from(cfg.t);
    let mut sims = vec![0.0f32; BLOCK.min(m) * n];
    let mut pred = vec![0u32; m];
    for (qb, pb) in query.chunks(BLOCK * d).zip(pred.chunks_mut(BLOCK)) {
        let rows = pb.len();
        let s = &mut sims[..rows * n];
        gemm(
            &GemmParams::default().trans_b(Transpose::Yes),
            MatRef::row_major(qb, rows, d)?,
            MatRef::row_major(&bank, n, d)?,
            MatMut::row_major(s, rows, n)?,
        )?;
        pb.par_iter_mut().zip(s.par_chunks(n)).for_each_init(
            || (Vec::with_capacity(n), vec![0.0f64; classes]),
            |(idx, votes), (p, row)| {
                idx.clear();
                idx.extend(0..n as u32);
                // Most similar first; ties (and NaN-free equal values) by lower index.
                let cmp =
                    |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                if k < n {
                    idx.select_nth_unstable_by(k - 1, cmp);
                }
                let top = &mut idx[..k];
                top.sort_unstable_by(cmp);
                votes.iter_mut().for_each(|v| *v = 0.0);
                for &j in top.iter() {
                    let w = (f64::from(row[j as usize]) * inv_t).exp();
                    votes[bank_labels[j as usize] as usize] += w;
                }
                // The first heaviest class.
                let mut best = 0;
                for (c, &v) in votes.iter().enumerate() {
                    if v > votes[best] {
                        best = c;
                    }
                }
                *p = best as u32;
            },
        );
    }
    Ok(pred)
}

/// Top-1 accuracy of [`knn_predict`] on labeled queries.
///
/// # Errors
/// As [`knn_predict`], and `query_labels` not one per query row.
pub fn knn_accuracy(
    bank: &[f32],
    bank_labels: &[u32],
    query: &[f32],
    query_labels: &[u32],
    d: usize,
    classes: usize,
    cfg: &KnnConfig,
) -> Result<f64> {
    let pred = knn_predict(bank, bank_labels, query, d, classes, cfg)?;
    check_len(OP, query_labels.len(), pred.len())?;
    if pred.is_empty() {
        return Ok(0.0);
    }
    let hits = pred
        .iter()
        .zip(query_labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(hits as f64 / pred.len() as f64)
}
