//! NT-Xent loss nodes (SimCLR, Chen et al. 2020) on the streamed kernel of
//! [`crate::kernels::contrastive::ntxent`]: the training forward computes the gradient with
//! the loss (gathering every rank's rows as candidates in a data-parallel step, unless the
//! negatives are local), the backward scales it.

use super::InputGrads;
use crate::dist::reduce_scatter_rows;
use crate::error::Result;
use crate::graph::dist::{sized, DistCtx};
use crate::graph::{err, Mode, TensorId};
use crate::kernels::contrastive::ntxent::{NtXent, NtXentConfig, NtXentOutput, Pairing};

#[derive(Debug)]
pub(crate) struct NtXentNode {
    pub(crate) tau: f32,
    pub(crate) halves: bool,
    pub(crate) ws: Box<NtXent>,
    pub(crate) out: Option<NtXentOutput>,
    /// The gradient of the last training forward.
    pub(crate) dz: Vec<f32>,
    pub(crate) loss64: f64,
    /// Data-parallel: every rank's rows, and the gradient of all of them (sized on the
    /// first distributed step).
    pub(crate) gathered: Vec<f32>,
    pub(crate) dz_all: Vec<f32>,
}

// z [2N, d] (views 2k, 2k + 1 of image k, or k, k + N with `halves`) -> loss [1]

/// The loss into `y[0]`; in training also its gradient into the node's `dz`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    z: &mut NtXentNode,
    name: &str,
    mode: Mode,
    x: &[f32],
    shape: &[usize],
    y: &mut [f32],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let NtXentNode {
        tau,
        halves,
        ws,
        out,
        dz,
        loss64,
        gathered,
        dz_all,
    } = z;
    let (m, d) = (shape[0], shape[1]);
    let pairing = if *halves {
        Pairing::Halves
    } else {
        Pairing::Adjacent
    };
    let o = if mode == Mode::Train && dist.spans() && dist.local_negatives {
        // Each rank's rows contrasted among themselves; the loss (and so the gradient) is
        // this rank's share of the mean over the group's anchors.
        let cfg = NtXentConfig::new(*tau)
            .pairing(pairing)
            .mean_over(dist.comm.size() * m);
        let o = ws.forward_backward(x, m, d, &cfg, dz)?;
        dist.group_ntxent(o)?
    } else if mode == Mode::Train && dist.spans() {
        // Every rank's z gathered (rank order); this rank's rows are the anchors, every row
        // a candidate; the loss is the mean over all ranks' anchors; the gradient of every
        // row is summed back to the rank that owns it.
        if *halves {
            return Err(err(
                name,
                "a data-parallel NT-Xent needs the adjacent layout (views 2k, 2k+1)".into(),
            ));
        }
        let (p, r) = (dist.comm.size(), dist.comm.rank());
        let all = sized(gathered, p * m * d);
        dist.comm.all_gather_f32(x, all)?;
        let cfg = NtXentConfig::new(*tau)
            .pairing(Pairing::Adjacent)
            .anchors(r * m..(r + 1) * m)
            .mean_over(p * m);
        let dall = sized(dz_all, p * m * d);
        let o = ws.forward_backward(all, p * m, d, &cfg, dall)?;
        reduce_scatter_rows(dist.comm, dall, dz, dist.scratch)?;
        dist.group_ntxent(o)?
    } else {
        let cfg = NtXentConfig::new(*tau).pairing(pairing);
        match mode {
            Mode::Train => ws.forward_backward(x, m, d, &cfg, dz)?,
            Mode::Eval => ws.forward(x, m, d, &cfg)?,
        }
    };
    *out = Some(o);
    y[0] = o.loss;
    *loss64 = o.loss_f64;
    Ok(())
}

/// `dz` scaled by the gradient arriving at the loss, `dy[0]`.
pub(crate) fn backward(
    z: &NtXentNode,
    dy: &[f32],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit_scaled(x0, dy[0], &z.dz)
}
