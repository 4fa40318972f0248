//! f64 references: layers (placeholder until filled).
