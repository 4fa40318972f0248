//! selfsup: self-supervised representation learning on CPUs.
//!
//! The crate's core is [`kernels`]: cache-blocked SIMD kernels (GEMM first) with runtime CPU
//! dispatch, safe public APIs and results that are bit-identical for any thread count.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod text;
pub mod train;

pub use error::{Error, Result};
