//! f64 references: conv (placeholder until filled).
