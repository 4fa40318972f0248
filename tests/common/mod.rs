//! Helpers shared by the integration tests.

/// The proptest case count: `PROPTEST_CASES` when set (heavier sweeps), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
