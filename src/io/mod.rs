//! File formats: checkpoints (safetensors, written atomically), NumPy `.npy` matrices and
//! the PNG line chart of a run.

pub mod checkpoint;
pub mod npy;
pub mod plot;
