//! The records of a graph's tensors as its plan lays them out: what a parameter is (its
//! kind decides initialization, weight decay and LARS adaptation), and each parameter,
//! buffer and activation's name, shape and range in its arena (an activation's in the
//! training and the evaluation plan, with its lifetimes).

use std::ops::Range;

use super::Mode;

/// What a parameter tensor is; decides its initialization and whether weight decay and LARS
/// adaptation apply (only to convolution and linear weights, as in SimCLR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution weight `[C_out, C_in, K, K]`.
    ConvWeight,
    /// A linear weight `[out, in]`.
    LinearWeight,
    /// A linear bias `[out]`.
    LinearBias,
    /// BatchNorm scale `[C]`.
    BnGamma,
    /// BatchNorm shift `[C]`.
    BnBeta,
    /// A token embedding table `[vocab, dim]` (initialized N(0, 1) as PyTorch's
    /// `nn.Embedding`; a padding row starts at zero).
    Embedding,
}

impl ParamKind {
    /// Whether weight decay (and LARS adaptation) applies.
    pub fn is_weight(self) -> bool {
        matches!(
            self,
            ParamKind::ConvWeight | ParamKind::LinearWeight | ParamKind::Embedding
        )
    }
}

/// One parameter tensor in the arena.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    /// Where it lives in [`Graph::params`](super::Graph::params).
    pub range: Range<usize>,
    /// Fan-in for the initialization.
    pub(crate) fan_in: usize,
}

/// One non-trained buffer (BatchNorm running statistics) in the buffer arena.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
    pub(crate) init: f32,
}

#[derive(Clone, Debug)]
pub(crate) struct TensorInfo {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    /// Range of its value in the arena in a training pass, and the steps over which it
    /// holds (see [`super::liveness`]).
    pub(crate) act: Range<usize>,
    pub(crate) life: Lifetime,
    /// The same in an evaluation forward (the same range for a kept tensor).
    pub(crate) act_eval: Range<usize>,
    pub(crate) life_eval: Lifetime,
    /// Range of its gradient in the arena (graph inputs have none).
    pub(crate) grad: Option<Range<usize>>,
    /// Whether its value and gradient stay readable after any pass.
    pub(crate) kept: bool,
}

impl TensorInfo {
    /// Range of its value in the arena in a pass of `mode`.
    pub(crate) fn value(&self, mode: Mode) -> Range<usize> {
        match mode {
            Mode::Train => self.act.clone(),
            Mode::Eval => self.act_eval.clone(),
        }
    }

    /// The steps over which its value holds in a pass of `mode`.
    pub(crate) fn life(&self, mode: Mode) -> Lifetime {
        match mode {
            Mode::Train => self.life,
            Mode::Eval => self.life_eval,
        }
    }
}

/// The steps `first..=last` of a pass over which a buffer must hold its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub(crate) first: usize,
    pub(crate) last: usize,
}

impl Lifetime {
    /// Whether some step lies in both.
    pub(crate) fn overlaps(self, other: Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether `step` lies in it.
    pub(crate) fn contains(self, step: usize) -> bool {
        (self.first..=self.last).contains(&step)
    }

    pub(crate) fn extend_to(&mut self, step: usize) {
        self.last = self.last.max(step);
    }
}
