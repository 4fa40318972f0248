//! conv2d (placeholder until filled).
