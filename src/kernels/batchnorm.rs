//! batchnorm kernels (placeholder until filled).
