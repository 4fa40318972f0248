//! File formats: checkpoints (safetensors), atomic writes, NumPy `.npy` matrices and the
//! PNG line chart of a run.

pub mod atomic;
pub mod checkpoint;
pub mod npy;
pub mod plot;
