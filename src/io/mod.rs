//! File formats: checkpoints (safetensors), atomic writes, NumPy `.npy` matrices, the
//! PNG line chart of a run and ONNX model files of an encoder.

pub mod atomic;
pub mod checkpoint;
pub mod npy;
pub mod onnx;
pub mod plot;
