//! Optimizers over the flat parameter arena (SGD with momentum and Nesterov, LARS, AdamW) and
//! the learning-rate schedule (linear warmup, then cosine decay).
//!
//! The trainer keeps every parameter of a model in one arena `params: &mut [f32]`, the
//! gradients in a parallel arena of the same length, and describes the tensors with a slice
//! of [`ParamGroup`]s (one per tensor). An optimizer keeps its state (momentum buffers, Adam
//! moments) in arenas of the same length, allocated when it is built, so a step never touches
//! the heap.
//!
//! - Groups: each group is a range of the arena. Groups must lie inside the arena and must not
//!   overlap; they need not cover it (elements outside every group are left alone, which
//!   freezes them). `decay` switches weight decay on for the tensor; `adapt` switches LARS's
//!   trust-ratio adaptation on (both are off for biases and BatchNorm gamma/beta in SimCLR).
//! - Determinism: the update of each element depends on that element alone, computed by the
//!   same scalar code whatever thread runs it; the LARS norms are fixed-tree reductions
//!   ([`crate::kernels::elementwise::sum_squares`] and the same scheme for the decayed
//!   gradient). Tensors longer than [`CHUNK`] are split into chunks of exactly `CHUNK`
//!   elements and updated in parallel. The result is bit-identical for any thread count.
//! - Precision: updates run in `f32` in the order PyTorch (or SimCLR's TF LARS) writes them;
//!   scalar coefficients (bias corrections, `lr * wd`, trust ratios) are computed in `f64`
//!   and rounded once. No multiply-add is fused, so every ISA gives the same bits. The
//!   results agree with PyTorch to rounding, not bit for bit (its vectorized CPU kernels fuse
//!   some multiply-adds).
//! - Checkpoints: [`Optimizer::state_tensors`] lists the state arenas by name (each name
//!   starts with the optimizer's kind, `sgd.`, `lars.` or `adamw.`) and [`Optimizer::steps`]
//!   gives the step counter; [`Optimizer::load_state_tensors`] restores both and refuses state
//!   of another kind or length.

mod adamw;
mod lars;
mod schedule;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use lars::{trust_ratio, Lars, LarsConfig};
pub use schedule::{LrScaling, LrSchedule};
pub use sgd::{Sgd, SgdConfig};

use crate::error::{check_len, Error, Result};
use crate::kernels::reduce::tree_sum;
use rayon::prelude::*;
use std::ops::Range;

/// The parallel work unit of an update, in elements (the element-wise kernels' chunk); does
/// not depend on the number of threads.
pub const CHUNK: usize = crate::kernels::elementwise::CHUNK;

/// One tensor of the parameter arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroup {
    /// The tensor's name (used in error messages).
    pub name: String,
    /// Where the tensor lives in the arena.
    pub range: Range<usize>,
    /// Whether weight decay applies (false for biases and BatchNorm gamma/beta in SimCLR).
    pub decay: bool,
    /// Whether LARS adapts the step with the trust ratio (false for the same tensors).
    pub adapt: bool,
}

impl ParamGroup {
    /// A group with the given flags.
    pub fn new(name: impl Into<String>, range: Range<usize>, decay: bool, adapt: bool) -> Self {
        ParamGroup {
            name: name.into(),
            range,
            decay,
            adapt,
        }
    }

    /// A weight tensor: decayed and adapted.
    pub fn weight(name: impl Into<String>, range: Range<usize>) -> Self {
        Self::new(name, range, true, true)
    }

    /// A bias or BatchNorm gamma/beta: neither decayed nor adapted (SimCLR's exclusions).
    pub fn excluded(name: impl Into<String>, range: Range<usize>) -> Self {
        Self::new(name, range, false, false)
    }
}

/// Which optimizer, with its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// [`Sgd`].
    Sgd(SgdConfig),
    /// [`Lars`].
    Lars(LarsConfig),
    /// [`AdamW`].
    AdamW(AdamWConfig),
}

impl OptimizerConfig {
    /// Builds the optimizer for an arena of `len` parameters (allocates its state).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a hyperparameter is out of range.
    pub fn build(self, len: usize) -> Result<Optimizer> {
        Optimizer::new(self, len)
    }
}

/// An optimizer over the flat parameter arena: one of [`Sgd`], [`Lars`], [`AdamW`].
#[derive(Debug, Clone)]
pub enum Optimizer {
    /// SGD with momentum, dampening, Nesterov and coupled weight decay.
    Sgd(Sgd),
    /// LARS as SimCLR uses it.
    Lars(Lars),
    /// AdamW with decoupled weight decay.
    AdamW(AdamW),
}

impl Optimizer {
    /// Builds the optimizer of `config` for an arena of `len` parameters (allocates its
    /// state, zeroed, and sets the step counter to 0).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a hyperparameter is out of range.
    pub fn new(config: OptimizerConfig, len: usize) -> Result<Self> {
        Ok(match config {
            OptimizerConfig::Sgd(c) => Optimizer::Sgd(Sgd::new(c, len)?),
            OptimizerConfig::Lars(c) => Optimizer::Lars(Lars::new(c, len)?),
            OptimizerConfig::AdamW(c) => Optimizer::AdamW(AdamW::new(c, len)?),
        })
    }

    /// One update of every group with learning rate `lr`; allocates nothing.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `params` does not have the optimizer's length or `grads`
    /// not the length of `params`; [`Error::InvalidArgument`] when a group leaves the arena,
    /// two groups overlap, or `lr` is negative or not finite. Nothing is changed on error.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        groups: &[ParamGroup],
        lr: f32,
    ) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => o.step(params, grads, groups, lr),
            Optimizer::Lars(o) => o.step(params, grads, groups, lr),
            Optimizer::AdamW(o) => o.step(params, grads, groups, lr),
        }
    }

    /// `"sgd"`, `"lars"` or `"adamw"`: the prefix of every state tensor's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => sgd::KIND,
            Optimizer::Lars(_) => lars::KIND,
            Optimizer::AdamW(_) => adamw::KIND,
        }
    }

    /// The configuration the optimizer was built with.
    pub fn config(&self) -> OptimizerConfig {
        match self {
            Optimizer::Sgd(o) => OptimizerConfig::Sgd(*o.config()),
            Optimizer::Lars(o) => OptimizerConfig::Lars(*o.config()),
            Optimizer::AdamW(o) => OptimizerConfig::AdamW(*o.config()),
        }
    }

    /// The arena length the optimizer was built for.
    pub fn len(&self) -> usize {
        match self {
            Optimizer::Sgd(o) => o.len(),
            Optimizer::Lars(o) => o.len(),
            Optimizer::AdamW(o) => o.len(),
        }
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of successful steps taken (or restored by
    /// [`load_state_tensors`](Self::load_state_tensors)).
    pub fn steps(&self) -> u64 {
        match self {
            Optimizer::Sgd(o) => o.steps(),
            Optimizer::Lars(o) => o.steps(),
            Optimizer::AdamW(o) => o.steps(),
        }
    }

    /// The state arenas by name, each as long as the parameter arena.
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        match self {
            Optimizer::Sgd(o) => o.state_tensors(),
            Optimizer::Lars(o) => o.state_tensors(),
            Optimizer::AdamW(o) => o.state_tensors(),
        }
    }

    /// Restores the step counter and the state arenas saved by
    /// [`state_tensors`](Self::state_tensors) and [`steps`](Self::steps).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a tensor is missing, repeated or unknown (state of
    /// another optimizer kind); [`Error::ShapeMismatch`] when one has the wrong length.
    /// Nothing is changed on error.
    pub fn load_state_tensors<I, N, T>(&mut self, steps: u64, tensors: I) -> Result<()>
    where
        I: IntoIterator<Item = (N, T)>,
        N: AsRef<str>,
        T: AsRef<[f32]>,
    {
        match self {
            Optimizer::Sgd(o) => o.load_state_tensors(steps, tensors),
            Optimizer::Lars(o) => o.load_state_tensors(steps, tensors),
            Optimizer::AdamW(o) => o.load_state_tensors(steps, tensors),
        }
    }
}

impl From<Sgd> for Optimizer {
    fn from(o: Sgd) -> Self {
        Optimizer::Sgd(o)
    }
}

impl From<Lars> for Optimizer {
    fn from(o: Lars) -> Self {
        Optimizer::Lars(o)
    }
}

impl From<AdamW> for Optimizer {
    fn from(o: AdamW) -> Self {
        Optimizer::AdamW(o)
    }
}

/// `Err(InvalidArgument)` for `op` with `msg`.
pub(crate) fn invalid<T>(op: &'static str, msg: String) -> Result<T> {
    Err(Error::InvalidArgument { op, msg })
}

/// Checks a hyperparameter: finite and inside `[lo, hi]` (or `[lo, hi)` when `hi_open`).
pub(crate) fn check_hyper(
    op: &'static str,
    name: &str,
    v: f32,
    lo: f32,
    hi: f32,
    hi_open: bool,
) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
    if ok {
        Ok(())
    } else {
        let close = if hi_open { ')' } else { ']' };
        invalid(op, format!("{name} = {v} is outside [{lo}, {hi}{close}"))
    }
}

/// Checks everything a step needs before anything is changed: the arena lengths, the learning
/// rate, and that every group lies inside the arena and no two overlap. Allocates nothing
/// unless it fails.
pub(crate) fn check_step(
    op: &'static str,
    state_len: usize,
    params: &[f32],
    grads: &[f32],
    groups: &[ParamGroup],
    lr: f32,
) -> Result<()> {
    check_len(op, params.len(), state_len)?;
    check_len(op, grads.len(), params.len())?;
    if !(lr.is_finite() && lr >= 0.0) {
        return invalid(op, format!("learning rate {lr} is not a finite value >= 0"));
    }
    for g in groups {
        if g.range.start > g.range.end || g.range.end > params.len() {
            return invalid(
                op,
                format!(
                    "group '{}' ({:?}) leaves the arena of {} parameters",
                    g.name,
                    g.range,
                    params.len()
                ),
            );
        }
    }
    // Groups in increasing order (the usual layout) are checked in one pass; otherwise every
    // pair is compared (a model has at most a few hundred tensors, and nothing is allocated).
    let sorted = groups
        .windows(2)
        .all(|w| w[0].range.end <= w[1].range.start);
    if !sorted {
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                let disjoint = a.range.is_empty()
                    || b.range.is_empty()
                    || a.range.end <= b.range.start
                    || b.range.end <= a.range.start;
                if !disjoint {
                    return invalid(
                        op,
                        format!(
                            "groups '{}' ({:?}) and '{}' ({:?}) overlap",
                            a.name, a.range, b.name, b.range
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Restores named state arenas: every name in `names` must appear exactly once in `tensors`
/// with the length of its arena, and nothing else may appear. Checks everything before
/// copying anything.
pub(crate) fn load_named<I, N, T>(
    op: &'static str,
    names: &[&str],
    arenas: &mut [&mut Vec<f32>],
    tensors: I,
) -> Result<()>
where
    I: IntoIterator<Item = (N, T)>,
    N: AsRef<str>,
    T: AsRef<[f32]>,
{
    debug_assert_eq!(names.len(), arenas.len());
    let mut found: Vec<Option<T>> = (0..names.len()).map(|_| None).collect();
    for (name, data) in tensors {
        let name = name.as_ref();
        let Some(i) = names.iter().position(|n| *n == name) else {
            return invalid(
                op,
                format!("unknown optimizer state tensor '{name}' (expected {names:?})"),
            );
        };
        if found[i].is_some() {
            return invalid(op, format!("optimizer state tensor '{name}' appears twice"));
        }
        check_len(op, data.as_ref().len(), arenas[i].len())?;
        found[i] = Some(data);
    }
    if let Some(i) = found.iter().position(Option::is_none) {
        return invalid(
            op,
            format!("optimizer state tensor '{}' is missing", names[i]),
        );
    }
    for (arena, data) in arenas.iter_mut().zip(found) {
        if let Some(data) = data {
            arena.copy_from_slice(data.as_ref());
        }
    }
    Ok(())
}

/// Runs `f(p, s, g)` over matching chunks of exactly [`CHUNK`] elements (the last shorter),
/// in parallel when there is more than one.
pub(crate) fn chunks2<F>(p: &mut [f32], s: &mut [f32], g: &[f32], f: F)
where
    F: Fn(&mut [f32], &mut [f32], &[f32]) + Sync,
{
    if p.len() <= CHUNK {
        f(p, s, g);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(s.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((p, s), g)| f(p, s, g));
    }
}

/// Runs `f(p, s1, s2, g)` over matching chunks of exactly [`CHUNK`] elements (the last
/// shorter), in parallel when there is more than one.
pub(crate) fn chunks3<F>(p: &mut [f32], s1: &mut [f32], s2: &mut [f32], g: &[f32], f: F)
where
    F: Fn(&mut [f32], &mut [f32], &mut [f32], &[f32]) + Sync,
{
    if p.len() <= CHUNK {
        f(p, s1, s2, g);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(s1.par_chunks_mut(CHUNK))
            .zip(s2.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, s1), s2), g)| f(p, s1, s2, g));
    }
}

/// `sum_i (g[i] + wd * p[i])^2` with the decayed gradient rounded to `f32` first (as the
/// update uses it) and squared and summed in `f64`; `sum_i g[i]^2` when `wd` is `None`.
/// Chunks of [`CHUNK`] elements are summed sequentially (four interleaved `f64`
/// accumulators) and combined by the fixed binary tree of [`tree_sum`], so the result is
/// bit-identical for any thread count. `p` and `g` have the same length.
pub(crate) fn decayed_grad_sum_squares(g: &[f32], p: &[f32], wd: Option<f32>) -> f64 {
    debug_assert_eq!(g.len(), p.len());
    tree_sum(g.len(), CHUNK, |r| match wd {
        Some(wd) => chunk_sum_squares::<true>(&g[r.clone()], &p[r], wd),
        None => chunk_sum_squares::<false>(&g[r.clone()], &p[r], 0.0),
    })
}

/// One chunk of [`decayed_grad_sum_squares`], sequential.
#[inline(always)]
fn chunk_sum_squares<const DECAY: bool>(g: &[f32], p: &[f32], wd: f32) -> f64 {
    let d = |g: f32, p: f32| f64::from(if DECAY { g + wd * p } else { g });
    let mut acc = [0.0f64; 4];
    let mut ig = g.chunks_exact(4);
    let mut ip = p.chunks_exact(4);
    for (g4, p4) in (&mut ig).zip(&mut ip) {
        for j in 0..4 {
            let x = d(g4[j], p4[j]);
            acc[j] += x * x;
        }
    }
    for (&g, &p) in ig.remainder().iter().zip(ip.remainder()) {
        let x = d(g, p);
        acc[0] += x * x;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}
