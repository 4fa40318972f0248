//! Quick Thoughts loss nodes (Logeswaran and Lee 2018) on
//! [`crate::kernels::contrastive::quickthought`]: the in-batch classification of anchors
//! against candidates (every rank's candidates in a data-parallel step) and the pairwise
//! logistic loss over triplets. Each training forward computes the input gradients with the
//! loss; the backward scales them.

use super::InputGrads;
use crate::dist::reduce_scatter_rows;
use crate::error::Result;
use crate::graph::dist::{sized, DistCtx};
use crate::graph::{err, Mode, TensorId};
use crate::kernels::contrastive::quickthought::{
    qt_pairwise_hits, qt_pairwise_logistic, QtBatch, QtInBatch, QtStats,
};
use crate::kernels::elementwise::scale;

/// In-batch classification of anchors `f` (input 0) against candidates `g` (input 1), with
/// targets set by [`crate::graph::Graph::set_targets`].
#[derive(Debug)]
pub(crate) struct QtInBatchNode {
    pub(crate) scale: f32,
    pub(crate) self_offset: Option<usize>,
    pub(crate) targets: Vec<(u32, u32)>,
    pub(crate) ws: Box<QtInBatch>,
    pub(crate) stats: Option<QtStats>,
    /// The gradients of the last training forward.
    pub(crate) df: Vec<f32>,
    pub(crate) dg: Vec<f32>,
    pub(crate) loss64: f64,
    /// Data-parallel: every rank's candidates and their gradient (sized on the first
    /// distributed step).
    pub(crate) gathered: Vec<f32>,
    pub(crate) dg_all: Vec<f32>,
}

// f [n, d] (anchors), g [m, d] (candidates), targets (anchor, candidate) -> loss [1]

/// The loss into `y[0]`; in training also the gradients into the node's `df`, `dg`.
pub(crate) fn in_batch_forward(
    q: &mut QtInBatchNode,
    mode: Mode,
    (f, fs): (&[f32], &[usize]),
    (g, gs): (&[f32], &[usize]),
    y: &mut [f32],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let QtInBatchNode {
        scale: sc,
        self_offset,
        targets,
        ws,
        stats,
        df,
        dg,
        loss64,
        gathered,
        dg_all,
    } = q;
    let (n, m, d) = (fs[0], gs[0], fs[1]);
    let st = if mode == Mode::Train && dist.spans() {
        // This rank's anchors f against every rank's candidates g, gathered in rank order:
        // the targets' candidates are numbered in that order (rank q's row k is q m + k,
        // see `Graph::set_targets`), the excluded self is moved there. The loss is the mean
        // over the group's target pairs: this rank's mean and gradients are weighted by its
        // share of them, and the candidates' gradients summed back to their owners.
        let (p, r) = (dist.comm.size(), dist.comm.rank());
        let all = sized(gathered, p * m * d);
        dist.comm.all_gather_f32(g, all)?;
        let b = QtBatch {
            f,
            n,
            g: all,
            m: p * m,
            d,
            scale: *sc,
            self_offset: self_offset.map(|o| o + r * m),
            targets,
        };
        let dall = sized(dg_all, p * m * d);
        let st = ws.forward_backward(&b, df, dall)?;
        let gm = dist.group_mean(st.loss, st.hits, st.targets)?;
        scale(df, gm.share as f32);
        scale(dall, gm.share as f32);
        reduce_scatter_rows(dist.comm, dall, dg, dist.scratch)?;
        QtStats {
            loss: gm.loss,
            hits: gm.hits,
            targets: gm.total,
        }
    } else {
        let b = QtBatch {
            f,
            n,
            g,
            m,
            d,
            scale: *sc,
            self_offset: *self_offset,
            targets,
        };
        match mode {
            Mode::Train => ws.forward_backward(&b, df, dg)?,
            Mode::Eval => ws.forward(&b)?,
        }
    };
    *stats = Some(st);
    y[0] = st.loss as f32;
    *loss64 = st.loss;
    Ok(())
}

/// `df` and `dg` scaled by the gradient arriving at the loss, `dy[0]`; with both inputs the
/// same tensor, the second adds to the first.
pub(crate) fn in_batch_backward(
    q: &QtInBatchNode,
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    inputs: &[TensorId],
) -> Result<()> {
    gx.emit_scaled(inputs[0], dy[0], &q.df)?;
    gx.emit_scaled(inputs[1], dy[0], &q.dg)
}

/// Pairwise logistic loss over `(anchor, pos, neg)` triplets set by
/// [`crate::graph::Graph::set_triplets`]: anchors are rows of `a` (input 0), positives and
/// negatives rows of `b` (input 1).
#[derive(Debug)]
pub(crate) struct QtPairwiseNode {
    pub(crate) n_a: usize,
    pub(crate) n_b: usize,
    pub(crate) triplets: Vec<(u32, u32, u32)>,
    /// `(hits, triplets)` of the last successful forward: how many triplets scored their
    /// positive above their negative.
    pub(crate) hits: Option<(usize, usize)>,
    /// The gradients of the last forward.
    pub(crate) da: Vec<f32>,
    pub(crate) db: Vec<f32>,
    pub(crate) loss64: f64,
}

// a [n_a, d] (anchors), b [n_b, d] (positives and negatives), triplets -> loss [1]

/// The loss into `y[0]` and the gradients into the node's `da`, `db` (the kernel produces
/// them with the loss; in evaluation mode they are simply not used).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pairwise_forward(
    q: &mut QtPairwiseNode,
    name: &str,
    mode: Mode,
    a: &[f32],
    b: &[f32],
    d: usize,
    y: &mut [f32],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let QtPairwiseNode {
        n_a,
        n_b,
        triplets,
        hits,
        da,
        db,
        loss64,
    } = q;
    *hits = None;
    if triplets.is_empty() {
        return Err(err(name, "no triplets set (Graph::set_triplets)".into()));
    }
    let mut loss = qt_pairwise_logistic(a, *n_a, b, *n_b, d, triplets, da, db)?;
    let mut h = (qt_pairwise_hits(a, b, d, triplets), triplets.len());
    if mode == Mode::Train && dist.spans() {
        // The mean over the group's triplets (negatives stay in the rank's batch).
        let g = dist.group_mean(loss, h.0, h.1)?;
        scale(da, g.share as f32);
        scale(db, g.share as f32);
        loss = g.loss;
        h = (g.hits, g.total);
    }
    *hits = Some(h);
    y[0] = loss as f32;
    *loss64 = loss;
    Ok(())
}

/// `da` and `db` scaled by the gradient arriving at the loss, `dy[0]`; with both inputs the
/// same tensor, the second adds to the first.
pub(crate) fn pairwise_backward(
    q: &QtPairwiseNode,
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    inputs: &[TensorId],
) -> Result<()> {
    gx.emit_scaled(inputs[0], dy[0], &q.da)?;
    gx.emit_scaled(inputs[1], dy[0], &q.db)
}
