//! Helpers shared by the integration tests.

/// The proptest case count: `PROPTEST_CASES` when set (heavier sweeps), else `default`.
#[allow(dead_code)] // not every test binary that shares this module runs proptests
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Trains `t` from its current step to step `end` with its own loader; the step losses.
#[allow(dead_code)] // not every test binary that shares this module trains
pub fn train_to(t: &mut selfsup::pretrain::Pretrainer, end: u64) -> Vec<f64> {
    let mut loader = t.loader(end, 2);
    let mut losses = Vec::new();
    while let Some(b) = loader.next_batch() {
        let b = b.expect("a batch");
        losses.push(t.train_step(&b).expect("a training step").loss);
        loader.recycle(b);
    }
    losses
}
