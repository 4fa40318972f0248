//! The hot loops. The only place in the crate with `unsafe` and CPU intrinsics; every public
//! function here is safe and checks its arguments before any unsafe code runs.

pub mod dispatch;
pub mod gemm;
pub mod reference;

pub use dispatch::{isa, Isa};
