//! The timing of one operation: warm-ups that size the repetitions, timed repetitions of at
//! least [`MIN_REP_SECONDS`], and the median and range of their per-operation times.

use std::time::Instant;

use anyhow::{Context, Result};

use super::workload::Runnable;

/// The shortest timed repetition: short ops are batched up to this length.
pub const MIN_REP_SECONDS: f64 = 0.030;
/// Least total warm-up time per workload (threads awake, clock ramped).
pub const MIN_WARMUP_SECONDS: f64 = 0.25;

/// How many operations make one repetition of at least `target` seconds.
pub fn ops_per_rep(seconds_per_op: f64, target: f64) -> u64 {
    if seconds_per_op.is_nan() || seconds_per_op <= 0.0 {
        return 1_000_000;
    }
    (target / seconds_per_op).ceil().clamp(1.0, 1e9) as u64
}

/// The median of a non-empty list.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Runs `op` `n` times and returns the seconds per operation.
fn time_ops(op: &mut Runnable, n: u64) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    Ok(start.elapsed().as_secs_f64() / n as f64)
}

/// Warms up the operation of workload `name` and returns how many operations one timed
/// repetition runs. The first warm-up is one operation; later ones are full repetitions,
/// and the last one decides the repetition size. Warm-ups go on until there have been
/// `warmup` of them and they have lasted [`MIN_WARMUP_SECONDS`] in all, so the threads are
/// awake and the clock has ramped before the first timed repetition.
pub fn warm_up(op: &mut Runnable, warmup: usize, name: &str) -> Result<u64> {
    let started = Instant::now();
    let mut n = ops_per_rep(time_rep(op, 1, name)?, MIN_REP_SECONDS);
    let mut done = 1;
    while done < warmup || started.elapsed().as_secs_f64() < MIN_WARMUP_SECONDS {
        n = ops_per_rep(time_rep(op, n, name)?, MIN_REP_SECONDS);
        done += 1;
    }
    Ok(n)
}

/// [`time_ops`], an error naming workload `name`.
pub fn time_rep(op: &mut Runnable, n: u64, name: &str) -> Result<f64> {
    time_ops(op, n).with_context(|| format!("running workload '{name}'"))
}

/// The smallest and the largest of a non-empty list.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    (min, xs.iter().copied().fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_sizing_and_median() {
        assert_eq!(ops_per_rep(0.001, 0.030), 30);
        assert_eq!(ops_per_rep(0.5, 0.030), 1);
        assert_eq!(ops_per_rep(0.0, 0.030), 1_000_000);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }
}
