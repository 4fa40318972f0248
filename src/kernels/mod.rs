//! The hot loops. The only place in the crate with `unsafe` and CPU intrinsics; every public
//! function here is safe and checks its arguments before any unsafe code runs.

pub mod batchnorm;
pub mod contrastive;
pub mod conv;
pub mod dispatch;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod pool;
pub mod reference;
pub(crate) mod simd;
pub mod skinny;
pub mod softmax;
pub mod vmath;

pub use dispatch::{isa, Isa};
