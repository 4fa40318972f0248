//! pool kernels (placeholder until filled).
