//! linear kernels (placeholder until filled).
