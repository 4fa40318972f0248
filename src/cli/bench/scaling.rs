//! `selfsup bench --scaling T1,T2`: the speed-up of each workload from T1 to T2 threads.
//!
//! Two separate runs (`--threads 1`, then `--threads 2`) compare figures taken minutes
//! apart, and on a shared machine the load, and with it the clock of a lone busy core,
//! drifts by tens of percent within minutes. Here each workload is set up once per pool, both
//! are warmed up, and then the timed repetitions alternate between the pools (T1, T2, T2,
//! T1, ...), so each pair of repetitions is seconds apart. The reported speed-up is the
//! median over the pairs of `time(T1) / time(T2)`, next to the median time on each pool.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::ThreadPool;
use serde::Serialize;

use super::files::write_json;
use super::report::name_width;
use super::timing::{median, min_max, time_rep, warm_up};
use super::workload::{Reference, Runnable, Workload};

/// The speed-up of one workload from the first to the second thread count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scaling {
    #[serde(skip)]
    pub name: String,
    /// Median per-operation seconds on each pool.
    pub seconds: [f64; 2],
    /// Median over the pairs of `seconds(T1) / seconds(T2)`.
    pub speedup: f64,
    pub speedup_min: f64,
    pub speedup_max: f64,
    /// Timed repetitions per pool (= pairs).
    pub pairs: usize,
}

/// The speed-up of `times[0][i] / times[1][i]` over the pairs `i` (both non-empty, equal
/// lengths), with the median time of each side.
pub fn summarize(name: &str, times: &[Vec<f64>; 2]) -> Scaling {
    let ratios: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| a / b).collect();
    let (speedup_min, speedup_max) = min_max(&ratios);
    Scaling {
        name: name.to_string(),
        seconds: [median(&times[0]), median(&times[1])],
        speedup: median(&ratios),
        speedup_min,
        speedup_max,
        pairs: ratios.len(),
    }
}

/// Sets `w` up on each pool, warms both up, then times `reps` repetitions on each,
/// alternating.
fn measure(w: &Workload, pools: &[ThreadPool; 2], warmup: usize, reps: usize) -> Result<Scaling> {
    let mut ops: Vec<(Runnable, u64)> = Vec::with_capacity(2);
    for pool in pools {
        ops.push(pool.install(|| -> Result<(Runnable, u64)> {
            let mut op = w.setup(Reference::Selfsup)?;
            let n = warm_up(&mut op, warmup, w.name)?;
            Ok((op, n))
        })?);
    }
    let mut times = [Vec::with_capacity(reps), Vec::with_capacity(reps)];
    for rep in 0..reps {
        // T1 first in even pairs, T2 first in odd ones: neither side always runs on the
        // caches and clocks the other left.
        let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (op, n) = &mut ops[side];
            times[side].push(pools[side].install(|| time_rep(op, *n, w.name))?);
        }
    }
    Ok(summarize(w.name, &times))
}

/// The JSON report of a scaling run.
#[derive(Serialize)]
struct ScalingJson<'a> {
    scaling: [usize; 2],
    isa: &'a str,
    selfsup_version: &'a str,
    warmup: usize,
    reps: usize,
    workloads: std::collections::BTreeMap<&'a str, &'a Scaling>,
}

/// Runs every workload of `workloads` on pools of `threads[0]` and `threads[1]` threads;
/// prints the table to `out` and, with `json`, writes the report there (`-`: stdout).
pub fn run(
    workloads: &[&Workload],
    threads: [usize; 2],
    warmup: usize,
    reps: usize,
    json: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let pool = |i: usize| {
        let t = threads[i];
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .thread_name(move |k| format!("selfsup-bench-{i}-{k}"))
            .build()
            .with_context(|| format!("--scaling: cannot start a pool of {t} threads"))
    };
    let pools = [pool(0)?, pool(1)?];
    let isa = selfsup::kernels::isa().name();
    let width = name_width(workloads.iter().map(|w| w.name));
    writeln!(
        out,
        "selfsup {} bench --scaling {},{}: isa {isa}; per workload {warmup} warm-up(s) on each \
         pool, then {reps} repetitions on each, alternated",
        env!("CARGO_PKG_VERSION"),
        threads[0],
        threads[1]
    )?;
    let (h0, h1) = (
        format!("{} thr ms", threads[0]),
        format!("{} thr ms", threads[1]),
    );
    writeln!(
        out,
        "{:<width$}  {h0:>12}  {h1:>12}  {:>8}  {:>15}",
        "workload", "speedup", "pairs min..max"
    )?;
    let mut done = Vec::with_capacity(workloads.len());
    for w in workloads {
        let s = measure(w, &pools, warmup, reps)?;
        let row = format!(
            "{:<width$}  {:>12.3}  {:>12.3}  {:>7.2}x  {:>6.2}..{:<6.2}",
            s.name,
            s.seconds[0] * 1e3,
            s.seconds[1] * 1e3,
            s.speedup,
            s.speedup_min,
            s.speedup_max
        );
        writeln!(out, "{}", row.trim_end())?;
        done.push(s);
    }
    let Some(path) = json else {
        return Ok(());
    };
    let report = ScalingJson {
        scaling: threads,
        isa,
        selfsup_version: env!("CARGO_PKG_VERSION"),
        warmup,
        reps,
        workloads: done.iter().map(|s| (s.name.as_str(), s)).collect(),
    };
    let mut text = serde_json::to_string_pretty(&report).context("--scaling: the JSON report")?;
    text.push('\n');
    write_json(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedup_is_the_median_of_the_pairs_ratios() {
        // Pairs 4/2 = 2, 3/2 = 1.5, 9/3 = 3: the median ratio is 2, while the ratio of the
        // median times (4 / 2) happens to agree and the mean ratio (2.17) does not.
        let s = summarize("w", &[vec![4.0, 3.0, 9.0], vec![2.0, 2.0, 3.0]]);
        assert_eq!(s.seconds, [4.0, 2.0]);
        assert_eq!((s.speedup, s.speedup_min, s.speedup_max), (2.0, 1.5, 3.0));
        assert_eq!(s.pairs, 3);
        // A drift that slows both sides of each pair alike leaves every ratio at 2.
        let s = summarize("w", &[vec![2.0, 4.0, 8.0, 16.0], vec![1.0, 2.0, 4.0, 8.0]]);
        assert_eq!((s.speedup, s.speedup_min, s.speedup_max), (2.0, 2.0, 2.0));
        assert_eq!(s.seconds, [6.0, 3.0]);
    }
}
