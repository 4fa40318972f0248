//! BatchNorm2d nodes (Ioffe and Szegedy 2015; PyTorch defaults eps 1e-5, momentum 0.1),
//! optionally fused with ReLU, forward and backward, on [`crate::kernels::batchnorm`]: batch
//! statistics in training (the whole data-parallel group's with synchronized BatchNorm),
//! the running statistics in evaluation.

use super::InputGrads;
use crate::dist::{all_reduce_sum_f64, gather_f64};
use crate::error::Result;
use crate::graph::dist::DistCtx;
use crate::graph::tensors::{BufferInfo, ParamInfo};
use crate::graph::{Mode, TensorId};
use crate::kernels::batchnorm::{
    batchnorm_add_backward_input, batchnorm_add_backward_params, batchnorm_add_normalize_train,
    batchnorm_backward, batchnorm_backward_synced, batchnorm_forward_eval, batchnorm_forward_train,
    batchnorm_forward_train_synced, batchnorm_merge_moments, batchnorm_relu_backward,
    batchnorm_relu_forward_eval, batchnorm_relu_forward_train, batchnorm_statistics_train,
    BatchNorm2d, BnAffine, BnGrads, BnRunning, BnSaved, BnSync,
};

#[derive(Debug)]
pub(crate) struct BatchNormNode {
    pub(crate) bn: BatchNorm2d,
    /// Parameters.
    pub(crate) gamma: usize,
    pub(crate) beta: usize,
    /// Buffers (running statistics).
    pub(crate) mean: usize,
    pub(crate) var: usize,
    pub(crate) relu: bool,
    pub(crate) saved: BnSaved,
    /// Synchronized BatchNorm's per-channel values (`3 C` moments; the backward uses the
    /// first `2 C`).
    pub(crate) sync: Vec<f64>,
}

/// The node's gamma and beta.
pub(crate) fn affine<'a>(
    n: &BatchNormNode,
    param: &'a [f32],
    params: &[ParamInfo],
) -> BnAffine<'a> {
    BnAffine {
        gamma: &param[params[n.gamma].range.clone()],
        beta: &param[params[n.beta].range.clone()],
    }
}

/// The running statistics `mean` and `var` among the buffers (the mean's range first, as
/// the builder adds them).
fn running<'a>(
    buffer: &'a mut [f32],
    buffers: &[BufferInfo],
    mean: usize,
    var: usize,
) -> BnRunning<'a> {
    let (rm, rv) = (buffers[mean].range.clone(), buffers[var].range.clone());
    let (a, b) = buffer.split_at_mut(rv.start);
    BnRunning {
        mean: &mut a[rm],
        var: &mut b[..rv.len()],
    }
}

/// The node's gamma and beta gradients, overwritten by a backward (adjacent in the arena:
/// added one after the other).
fn affine_grads<'a>(
    n: &BatchNormNode,
    param_grad: &'a mut [f32],
    params: &[ParamInfo],
) -> (&'a mut [f32], &'a mut [f32]) {
    let (gr, br) = (params[n.gamma].range.clone(), params[n.beta].range.clone());
    let (pg_lo, pg_hi) = param_grad.split_at_mut(br.start);
    (&mut pg_lo[gr], &mut pg_hi[..br.len()])
}

// x [N, C, H, W], gamma, beta [C], running mean and variance [C] -> y [N, C, H, W]

/// Training: normalizes with the batch statistics (the group's with synchronized
/// BatchNorm over several ranks), saves them for the backward and updates the running
/// statistics in `buffer`. Evaluation: normalizes with the running statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    n: &mut BatchNormNode,
    mode: Mode,
    aff: BnAffine<'_>,
    x: &[f32],
    buffer: &mut [f32],
    buffers: &[BufferInfo],
    y: &mut [f32],
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let BatchNormNode {
        bn,
        mean,
        var,
        relu,
        saved,
        sync,
        ..
    } = n;
    match mode {
        Mode::Train => {
            let running = running(buffer, buffers, *mean, *var);
            if dist.sync_bn && dist.spans() {
                let (comm, scratch) = (dist.comm, &mut *dist.scratch);
                let ranks = comm.size();
                let mut reduce = |buf: &mut [f64]| {
                    let all = gather_f64(comm, buf, scratch)?;
                    batchnorm_merge_moments(all, buf)
                };
                let sync = BnSync {
                    buf: sync,
                    reduce: &mut reduce,
                    ranks,
                };
                batchnorm_forward_train_synced(bn, aff, x, running, saved, y, *relu, sync)?;
            } else if *relu {
                batchnorm_relu_forward_train(bn, aff, x, running, saved, y)?;
            } else {
                batchnorm_forward_train(bn, aff, x, running, saved, y)?;
            }
        }
        Mode::Eval => {
            let (m, v) = (
                &buffer[buffers[*mean].range.clone()],
                &buffer[buffers[*var].range.clone()],
            );
            if *relu {
                batchnorm_relu_forward_eval(bn, aff, m, v, x, y)?;
            } else {
                batchnorm_forward_eval(bn, aff, m, v, x, y)?;
            }
        }
    }
    Ok(())
}

/// The gradients of gamma and beta (overwritten) and of `x0` from the saved statistics
/// (summed over the group with synchronized BatchNorm); computed even when `x0` is a graph
/// input, for the parameters.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    n: &mut BatchNormNode,
    affine: BnAffine<'_>,
    x: &[f32],
    dy: &[f32],
    param_grad: &mut [f32],
    params: &[ParamInfo],
    gx: &mut InputGrads<'_>,
    x0: TensorId,
    dist: &mut DistCtx<'_>,
) -> Result<()> {
    let mut dg = Some(affine_grads(n, param_grad, params));
    let BatchNormNode {
        bn,
        relu,
        saved,
        sync,
        ..
    } = n;
    let synced = dist.sync_bn && dist.spans();
    let (comm, dscratch) = (dist.comm, &mut *dist.scratch);
    let c = bn.c;
    gx.emit(x0, true, &mut |dx| {
        let (dgamma, dbeta) = dg.take().expect("called once");
        let grads = BnGrads { dx, dgamma, dbeta };
        if synced {
            let mut reduce = |buf: &mut [f64]| all_reduce_sum_f64(comm, buf, dscratch);
            let sync = BnSync {
                buf: &mut sync[..2 * c],
                reduce: &mut reduce,
                ranks: comm.size(),
            };
            batchnorm_backward_synced(bn, affine, *relu, saved, x, dy, grads, sync)
        } else if *relu {
            batchnorm_relu_backward(bn, affine, saved, x, dy, grads)
        } else {
            batchnorm_backward(bn, affine.gamma, saved, x, dy, grads)
        }
    })
}

// The training BatchNorm (without ReLU) fused with the residual join after it (see
// `Graph::set_train_fusion`): x [N, C, H, W], the join's other input `addend` and output
// y [N, C, H, W].

/// The BatchNorm's step of the fused forward: the batch statistics, saved and folded into
/// the running statistics; its output is never written.
pub(crate) fn join_statistics(
    n: &mut BatchNormNode,
    x: &[f32],
    buffer: &mut [f32],
    buffers: &[BufferInfo],
) -> Result<()> {
    let running = running(buffer, buffers, n.mean, n.var);
    batchnorm_statistics_train(&n.bn, x, running, &mut n.saved)
}

/// The join's step of the fused forward: `y = act(bn(x) + addend)` from the saved
/// statistics.
pub(crate) fn join_forward(
    n: &BatchNormNode,
    aff: BnAffine<'_>,
    x: &[f32],
    addend: &[f32],
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    batchnorm_add_normalize_train(&n.bn, aff, &n.saved, x, addend, relu, y)
}

/// The join's step of the fused backward: from its output gradient `dy` (and output `y`
/// with ReLU), the gradient both addends get, written to the addend's gradient `g` (its
/// first write), and the BatchNorm's gamma and beta gradients (overwritten).
#[allow(clippy::too_many_arguments)]
pub(crate) fn join_backward_params(
    n: &BatchNormNode,
    gamma: &[f32],
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    g: &mut [f32],
    param_grad: &mut [f32],
    params: &[ParamInfo],
) -> Result<()> {
    let (dgamma, dbeta) = affine_grads(n, param_grad, params);
    batchnorm_add_backward_params(&n.bn, gamma, &n.saved, x, y, dy, g, dgamma, dbeta)
}

/// The BatchNorm's step of the fused backward: the gradient of `x0` from the BatchNorm's
/// output gradient `g` (the addend's) and the gamma and beta gradients the join's step
/// wrote.
pub(crate) fn join_backward_input(
    n: &BatchNormNode,
    aff: BnAffine<'_>,
    x: &[f32],
    g: &[f32],
    (dgamma, dbeta): (&[f32], &[f32]),
    gx: &mut InputGrads<'_>,
    x0: TensorId,
) -> Result<()> {
    gx.emit(x0, false, &mut |dx| {
        batchnorm_add_backward_input(&n.bn, aff.gamma, &n.saved, x, g, dgamma, dbeta, dx)
    })
}

/// The node's gamma and beta gradients (read).
pub(crate) fn affine_grads_of<'a>(
    n: &BatchNormNode,
    param_grad: &'a [f32],
    params: &[ParamInfo],
) -> (&'a [f32], &'a [f32]) {
    (
        &param_grad[params[n.gamma].range.clone()],
        &param_grad[params[n.beta].range.clone()],
    )
}
