//! elementwise kernels (placeholder until filled).
