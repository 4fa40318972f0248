//! The process group of a training run: rank 0's decisions and weights shared by every
//! rank, gradients summed in rank order, and the run's checkpoints written by rank 0 and
//! read back collectively. A single process is the group of one.

use std::path::{Path, PathBuf};

use crate::dist::{self, Collectives, Scratch};
use crate::error::Result;
use crate::graph::Graph;
use crate::io::checkpoint::{self, CheckpointError};
use crate::optim::Optimizer;
use crate::train::state::{self, Metadata};

/// Checkpoint metadata key of the number of processes of the run that wrote it.
pub const RANKS_KEY: &str = "ranks";

/// Checkpoint metadata key of the training step.
pub const STEP_KEY: &str = "step";
/// Checkpoint metadata key of the method.
pub const METHOD_KEY: &str = "method";

/// Loads the newest checkpoint of `dir` into `graph` and `opt`, if there is one, and
/// returns its step; a checkpoint of another method, or of a run with another number of
/// ranks, is an error naming the file.
pub(crate) fn resume_run(
    dir: &Path,
    method: &str,
    graph: &mut Graph,
    opt: &mut Optimizer,
    ranks: usize,
) -> std::result::Result<Option<u64>, CheckpointError> {
    let Some((step, path)) = checkpoint::latest_in(dir)? else {
        return Ok(None);
    };
    let meta = state::load(&path, graph, Some(opt))?;
    if let Some(m) = meta.get(METHOD_KEY) {
        if m != method {
            return Err(CheckpointError::InvalidArgument {
                path,
                reason: format!("is a '{m}' run, this run is '{method}'"),
            });
        }
    }
    let saved = meta.get(RANKS_KEY).map_or("1", String::as_str);
    if saved != ranks.to_string() {
        return Err(CheckpointError::InvalidArgument {
            path,
            reason: format!(
                "was written by a run of {saved} process(es), this run has {ranks}: a \
                 data-parallel run resumes with the same number of processes"
            ),
        });
    }
    Ok(Some(step))
}

/// A trainer's process group and its reduction buffers. Shared by the image and the text
/// trainers.
pub(crate) struct Group {
    pub(crate) comm: Box<dyn Collectives>,
    scratch: Scratch,
}

/// Runs a trainer's step: on the rayon pool (see `kernels::on_pool`) when `on_pool`, in
/// place otherwise (the answer of [`Group::steps_on_pool`]).
pub(crate) fn run_step<R: Send>(on_pool: bool, step: impl FnOnce() -> R + Send) -> R {
    if on_pool {
        crate::kernels::on_pool(step)
    } else {
        step()
    }
}

impl Group {
    /// Whether a step moves onto the pool: yes, unless the group's other ranks are threads
    /// of this process sharing the same pool, where a rank waiting for its peers on a pool
    /// thread could leave none free to run them (a deadlock).
    pub(crate) fn steps_on_pool(&self) -> bool {
        !self.comm.ranks_share_the_pool()
    }

    /// The group of a trainer, after checking that every rank runs the same `what` (as
    /// its text `fingerprint()`, computed only for a group of several ranks): a mismatch is
    /// the same error on every rank.
    pub(crate) fn join(
        comm: Box<dyn Collectives>,
        what: &str,
        fingerprint: impl FnOnce() -> String,
    ) -> Result<Self> {
        if comm.size() > 1 {
            dist::check_same_config(&*comm, what, &fingerprint())?;
        }
        Ok(Self {
            comm,
            scratch: Scratch::default(),
        })
    }

    /// A training run's checkpoint, written by rank 0 (the others return `Ok(None)`):
    /// `ckpt-<step>.safetensors` in `dir` with the model, the optimizer state and
    /// `metadata` plus the step, the method's name and the number of ranks, the newest
    /// `keep_last` kept.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn save(
        &self,
        dir: &Path,
        step: u64,
        method: &str,
        graph: &Graph,
        opt: &Optimizer,
        metadata: &Metadata,
        keep_last: usize,
    ) -> std::result::Result<Option<PathBuf>, CheckpointError> {
        if self.comm.rank() != 0 {
            return Ok(None);
        }
        let mut meta = metadata.clone();
        meta.insert(STEP_KEY.into(), step.to_string());
        meta.insert(METHOD_KEY.into(), method.into());
        meta.insert(RANKS_KEY.into(), self.comm.size().to_string());
        state::save_in(dir, step, graph, Some(opt), &meta, keep_last).map(Some)
    }

    /// Rank 0's `value`, on every rank.
    pub(crate) fn root_value(&self, value: u64) -> Result<u64> {
        let mut all = vec![0u64; self.comm.size()];
        self.comm.all_gather_u64(&[value], &mut all)?;
        Ok(all[0])
    }

    /// Whether `flag` is true on any rank, on every rank (one value gathered per rank;
    /// nothing sent in a group of one).
    pub(crate) fn any_rank(&self, flag: bool) -> Result<bool> {
        let p = self.comm.size();
        if p == 1 {
            return Ok(flag);
        }
        // Called before every step: no allocation for groups of up to 64 ranks.
        let mut small = [0u64; 64];
        let mut large = Vec::new();
        let all = if p <= small.len() {
            &mut small[..p]
        } else {
            large.resize(p, 0);
            &mut large[..]
        };
        self.comm.all_gather_u64(&[u64::from(flag)], all)?;
        Ok(all.iter().any(|&v| v != 0))
    }

    /// Rank 0's non-trained buffers (BatchNorm running statistics) to every rank.
    pub(crate) fn broadcast_buffers(&self, g: &mut Graph) -> Result<()> {
        if self.comm.size() > 1 {
            self.comm.broadcast_f32(g.buffers_mut())?;
        }
        Ok(())
    }

    /// Sums the parameter gradients over the group, in rank order (same bits on every
    /// rank).
    pub(crate) fn sum_grads(&mut self, g: &mut Graph) -> Result<()> {
        dist::all_reduce_sum(&*self.comm, g.param_grads_mut(), &mut self.scratch)
    }

    /// [`resume_run`] on rank 0, the outcome agreed by all ranks, then rank 0's weights,
    /// buffers and optimizer state sent to every rank.
    pub(crate) fn resume(
        &self,
        dir: &Path,
        method: &str,
        graph: &mut Graph,
        opt: &mut Optimizer,
    ) -> std::result::Result<Option<u64>, CheckpointError> {
        let comm = &*self.comm;
        let ranks = comm.size();
        if ranks == 1 {
            return resume_run(dir, method, graph, opt, 1);
        }
        let failed = |reason: String| CheckpointError::InvalidArgument {
            path: dir.to_path_buf(),
            reason,
        };
        let mine = if comm.rank() == 0 {
            resume_run(dir, method, graph, opt, ranks)
        } else {
            Ok(None)
        };
        // [status, step] of every rank: 0 = nothing to resume, 1 = resumed, 2 = failed.
        let status = match &mine {
            Ok(None) => [0, 0],
            Ok(Some(s)) => [1, *s],
            Err(_) => [2, 0],
        };
        let mut all = vec![0u64; 2 * ranks];
        comm.all_gather_u64(&status, &mut all)
            .map_err(|e| failed(e.to_string()))?;
        match all[0] {
            2 => {
                return mine.and_then(|_| {
                    Err(failed(
                        "rank 0 could not resume from this folder (its message says why)".into(),
                    ))
                })
            }
            0 => return Ok(None),
            _ => {}
        }
        let step = all[1];
        let broadcast =
            |buf: &mut [f32]| comm.broadcast_f32(buf).map_err(|e| failed(e.to_string()));
        broadcast(graph.params_mut())?;
        broadcast(graph.buffers_mut())?;
        let mut state: Vec<(String, Vec<f32>)> = opt
            .state_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.to_vec()))
            .collect();
        for (_, v) in &mut state {
            broadcast(v)?;
        }
        let steps = self
            .root_value(opt.steps())
            .map_err(|e| failed(e.to_string()))?;
        opt.load_state_tensors(steps, state)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Some(step))
    }
}
