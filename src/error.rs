//! The crate's error type: every failure a user can reach is a value of [`Error`], never a panic.

use std::fmt;

/// A shape, as written in an error message: `[2, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl From<&[usize]> for Shape {
    fn from(s: &[usize]) -> Self {
        Shape(s.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(s: [usize; N]) -> Self {
        Shape(s.to_vec())
    }
}

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two operands of `op` do not fit together.
    #[error("{op}: shape mismatch: {lhs} vs {rhs}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Shape,
        rhs: Shape,
    },
    /// A strided view reaches past the end of its buffer, or its size overflows.
    #[error("{op}: {what} view of shape {shape} with strides ({row_stride}, {col_stride}) needs {needed} elements, buffer has {len}")]
    OutOfBounds {
        op: &'static str,
        what: &'static str,
        shape: Shape,
        row_stride: usize,
        col_stride: usize,
        needed: usize,
        len: usize,
    },
    /// A mutable view whose strides make two elements share one memory location.
    #[error("{op}: output view of shape {shape} with strides ({row_stride}, {col_stride}) overlaps itself")]
    SelfOverlap {
        op: &'static str,
        shape: Shape,
        row_stride: usize,
        col_stride: usize,
    },
    /// A parameter outside its valid range.
    #[error("{op}: invalid argument: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// The ranks of a data-parallel group were started differently: every rank found it at
    /// the same collective and fails with this error (none is left waiting in one).
    #[error("{msg}")]
    RanksDiffer { msg: String },
    /// A training run's folder: a file that cannot be read or written (named, with the
    /// operating system's reason), or settings that differ from the run's recorded ones.
    #[error("{0}")]
    Run(String),
    /// A graph that cannot be built or run: the node's name and what is wrong with it.
    #[error("graph node '{node}': {msg}")]
    Graph { node: String, msg: String },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Ok` when a slice has the length an operation needs, else [`Error::ShapeMismatch`] naming
/// the operand (`op`) with the length it has and the one it needs.
pub(crate) fn check_len(op: &'static str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: [got].into(),
            rhs: [want].into(),
        })
    }
}
