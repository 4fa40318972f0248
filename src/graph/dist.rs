//! The data-parallel context of a forward or backward: the process group, its reduction
//! buffers and the switches of a distributed step (synchronized BatchNorm, local
//! negatives), and the means over the whole group that the loss nodes report.

use crate::dist::{all_reduce_sum_f64, Collectives, Scratch};
use crate::error::Result;
use crate::kernels::contrastive::ntxent::NtXentOutput;

/// The process group of a forward or backward and its reduction buffers.
pub(crate) struct DistCtx<'a> {
    pub(crate) comm: &'a dyn Collectives,
    pub(crate) scratch: &'a mut Scratch,
    pub(crate) sync_bn: bool,
    pub(crate) local_negatives: bool,
}

impl<'a> DistCtx<'a> {
    pub(crate) fn new(
        comm: &'a dyn Collectives,
        scratch: &'a mut Scratch,
        sync_bn: bool,
        local_negatives: bool,
    ) -> Self {
        DistCtx {
            comm,
            scratch,
            sync_bn,
            local_negatives,
        }
    }

    /// Whether this pass spans several ranks.
    pub(crate) fn spans(&self) -> bool {
        self.comm.size() > 1
    }

    /// A per-item loss whose mean over this rank's `count` items is `loss` (with `hits`
    /// of them counted correct), made the group's: the mean over every rank's items.
    pub(crate) fn group_mean(&mut self, loss: f64, hits: usize, count: usize) -> Result<GroupMean> {
        let mut v = [loss * count as f64, hits as f64, count as f64];
        all_reduce_sum_f64(self.comm, &mut v, self.scratch)?;
        let total = v[2] as usize;
        Ok(GroupMean {
            loss: v[0] / v[2],
            hits: v[1] as usize,
            total,
            share: count as f64 / v[2],
        })
    }

    /// An NT-Xent result whose loss is already this rank's part of the group's mean (the
    /// kernel divided by the group's anchor count), made the group's: the summed loss and
    /// the mean accuracy (every rank has as many anchors).
    pub(crate) fn group_ntxent(&mut self, o: NtXentOutput) -> Result<NtXentOutput> {
        let mut v = [o.loss_f64, f64::from(o.accuracy)];
        all_reduce_sum_f64(self.comm, &mut v, self.scratch)?;
        Ok(NtXentOutput {
            loss: v[0] as f32,
            loss_f64: v[0],
            accuracy: (v[1] / self.comm.size() as f64) as f32,
        })
    }
}

/// A loss averaged over a data-parallel group's items.
pub(crate) struct GroupMean {
    /// The mean over every rank's items.
    pub(crate) loss: f64,
    /// Items counted correct, over every rank.
    pub(crate) hits: usize,
    /// Items over every rank.
    pub(crate) total: usize,
    /// This rank's items over `total`: the factor of its own mean's gradient.
    pub(crate) share: f64,
}

/// Resizes a buffer of a data-parallel step on its first use (later steps reuse it).
pub(crate) fn sized<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() != len {
        v.resize(len, T::default());
    }
    v
}
