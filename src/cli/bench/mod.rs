//! `selfsup bench`: times the canonical workloads and reports, compares or exports them.
//!
//! Each workload runs at least one warm-up (the default is 2), then `--reps` timed
//! repetitions. The warm-ups decide how many operations one repetition runs so that it lasts
//! at least [`MIN_REP_SECONDS`]; the reported `seconds` is the median per-operation time over
//! the repetitions. Inputs are allocated, filled and checked once, outside the timing.
//!
//! This file is the command: its options and the run. Below it, each file imports only
//! files further down this list:
//! - [`scaling`]: `--scaling T1,T2`, the speed-up from one pool size to another;
//! - [`files`]: the `--json` and `--baseline` files;
//! - [`select`](mod@select): which workloads `--only` chooses;
//! - [`report`]: the table, the JSON and the comparison with a baseline;
//! - [`workloads`]: the registry of every workload, in order;
//! - [`sgemm`], [`conv`], [`models`]: the workloads by family;
//! - [`memory`]: the NT-Xent memory probe, read from [`peak_alloc`];
//! - [`ntxent`]: the NT-Xent workloads and their f64 check;
//! - [`timing`]: warm-ups, timed repetitions, median and range;
//! - [`workload`]: what a workload is; [`inputs`]: deterministic inputs;
//!   [`peak_alloc`]: the counting global allocator.

mod conv;
mod files;
mod inputs;
mod memory;
mod models;
mod ntxent;
pub mod peak_alloc;
mod report;
mod scaling;
mod select;
mod sgemm;
mod timing;
mod workload;
mod workloads;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use self::files::{check_json_target, load_baseline, write_json};
use self::memory::{probes, MemoryMeasurement, MemoryProbe};
use self::report::{Figures, Measurement, Report};
use self::select::select;
use self::timing::{median, min_max, time_rep, warm_up, MIN_REP_SECONDS};
use self::workload::{Reference, Workload};
use self::workloads::registry;
use super::Status;

/// A spread (max - min) / median above this earns a warning about a busy machine.
const NOISY_SPREAD: f64 = 0.10;

/// matrixmultiply's threading uses at most this many threads.
const MATRIXMULTIPLY_MAX_THREADS: usize = 4;

const BENCH_EXAMPLES: &str = "\
Examples:
  selfsup bench                                  all workloads, table on stdout
  selfsup bench --threads 2 --json ours.json     also write the JSON report
  selfsup bench --only sgemm_1024,sgemm_conv_*   a subset ('*' matches a prefix)
  selfsup bench --only ntxent_n16384_d128        the NT-Xent peak-memory probe alone
  selfsup bench --reference matrixmultiply --threads 2 --json mm.json
  selfsup bench --baseline main.json --tolerance 0.05   fail (exit 1) on a >5% slowdown
  selfsup bench --scaling 1,2 --reps 9 --only simclr_step_*   speed-up from 1 to 2 threads
  selfsup bench --peak --only simclr_step_*,embed_*   each workload's share of the FMA peak

Exit status: 0 on success, 1 when a workload is slower than --baseline allows,
2 on any error (bad flag, unreadable or malformed file, failed run).

The workloads, the side-by-side comparison with PyTorch on the same machine and the
measured figures: docs/performance.md.";

/// Options of `selfsup bench`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = BENCH_EXAMPLES)]
pub struct BenchArgs {
    /// Write the JSON report to FILE ('-': print it to stdout; the table then goes to stderr)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Run on a pool of T threads [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = at_least_one)]
    pub threads: Option<usize>,

    /// Run only these workloads (comma-separated; a trailing '*' matches a prefix)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Timed repetitions per workload; the median is reported (canonical figures use >= 5)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one)]
    pub reps: usize,

    /// Untimed warm-up runs per workload; they also size the repetitions
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one)]
    pub warmup: usize,

    /// Compare with an earlier JSON report; exit 1 if a workload got slower
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,

    /// Allowed slowdown against --baseline, as a fraction in [0, 1)
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.10,
        value_parser = fraction,
        requires = "baseline"
    )]
    pub tolerance: f64,

    /// Implementation to time: this crate's kernels or matrixmultiply (for side-by-side runs)
    #[arg(long, value_enum, value_name = "IMPL", default_value_t = Reference::Selfsup)]
    pub reference: Reference,

    /// Time each workload on pools of T1 and T2 threads, repetitions alternated, and report
    /// the speed-up (the median of the pairs' time ratios)
    #[arg(
        long,
        value_name = "T1,T2",
        value_delimiter = ',',
        num_args = 1,
        value_parser = at_least_one,
        conflicts_with_all = ["threads", "baseline", "reference"]
    )]
    pub scaling: Vec<usize>,

    /// Print the (selected) workloads, one per line: name, then what one operation is; exit
    #[arg(long)]
    pub list: bool,

    /// Measure the pool's FMA peak first (every thread running register-only fused
    /// multiply-adds on the kernels' ISA) and print each workload's share of it, in the
    /// table and in the JSON (`peak_gflops`, per workload `peak_share`): the efficiency a
    /// regression job can track across machines
    #[arg(long, conflicts_with = "scaling")]
    pub peak: bool,

    /// Images in the NT-Xent memory probe instead of 16384 (for quick tests)
    #[arg(long, value_name = "N", hide = true, value_parser = at_least_one)]
    pub memory_n: Option<usize>,
}

fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    super::values::at_least_one(s)
}

fn fraction(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        Ok(_) => Err("must be a fraction in [0, 1), e.g. 0.10 for 10%".into()),
        Err(_) => Err("expected a number in [0, 1), e.g. 0.10 for 10%".into()),
    }
}

/// Warm-ups, then the timed repetitions of one workload.
fn measure(w: &Workload, reference: Reference, warmup: usize, reps: usize) -> Result<Measurement> {
    let mut op = w.setup(reference)?;
    let n = warm_up(&mut op, warmup, w.name)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        times.push(time_rep(&mut op, n, w.name)?);
    }
    let (min_seconds, max_seconds) = min_max(&times);
    Ok(Measurement {
        name: w.name.to_string(),
        work: w.work,
        seconds: median(&times),
        min_seconds,
        max_seconds,
        ops_per_rep: n,
    })
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the memory probes (each once, on its own fresh thread pool) and prints their table.
fn run_probes(
    probes: &[&MemoryProbe],
    threads: usize,
    memory_n: Option<usize>,
    name_width: usize,
    out: &mut dyn Write,
) -> Result<Vec<MemoryMeasurement>> {
    let mut done = Vec::with_capacity(probes.len());
    if probes.is_empty() {
        return Ok(done);
    }
    writeln!(
        out,
        "\nmemory: one run each, fresh workspace and fresh {threads}-thread pool (per-thread \
         scratch counted);\n  peak = most heap bytes live at once during the call beyond those \
         live before it (input and output apart)"
    )?;
    writeln!(out, "{}", report::memory_header(name_width))?;
    for p in probes {
        let m = p.run(threads, memory_n)?;
        writeln!(out, "{}", report::memory_row(&m, name_width))?;
        done.push(m);
    }
    Ok(done)
}

/// Runs `selfsup bench`.
pub fn run(args: &BenchArgs) -> Result<Status> {
    let all = registry();
    let all_probes = probes();
    let selected = select(&all, &all_probes, &args.only, args.reference)?;
    if args.list {
        let mut out = io::stdout().lock();
        let names = selected.workloads.iter().map(|w| (w.name, &w.about));
        let names = names.chain(selected.probes.iter().map(|p| (p.name, &p.about)));
        let names: Vec<_> = names.collect();
        let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, about) in names {
            writeln!(out, "{name:<width$}  {about}")?;
        }
        return Ok(Status::Success);
    }
    ensure!(!selected.is_empty(), "no workload to run");
    let scaling = match args.scaling.as_slice() {
        [] => None,
        &[t1, t2] if t1 != t2 => Some([t1, t2]),
        &[t, _] => bail!("--scaling: the two thread counts must differ (got {t},{t})"),
        more => bail!(
            "--scaling: expected two thread counts, e.g. --scaling 1,2 (got {})",
            more.len()
        ),
    };
    // Validate every input before the (long) measurement.
    let baseline = match &args.baseline {
        Some(path) => {
            let old = load_baseline(path)?;
            let common = selected
                .workloads
                .iter()
                .any(|w| old.iter().any(|(n, _)| n == w.name));
            ensure!(
                common,
                "--baseline file '{}' has none of the workloads of this run",
                path.display()
            );
            Some((path, old))
        }
        None => None,
    };
    let json_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = args.json.as_deref().filter(|_| !json_stdout) {
        check_json_target(path)?;
    }

    // The table goes to stdout, unless stdout carries the JSON.
    let mut out: Box<dyn Write + Send> = if json_stdout {
        Box::new(io::stderr())
    } else {
        Box::new(io::stdout())
    };
    if let Some(threads) = scaling {
        ensure!(
            !selected.workloads.is_empty(),
            "--scaling: no timed workload selected (the memory probes are not timed)"
        );
        if !selected.probes.is_empty() {
            eprintln!("note: --scaling skips the memory probes");
        }
        let json = args.json.as_deref();
        scaling::run(
            &selected.workloads,
            threads,
            args.warmup,
            args.reps,
            json,
            &mut out,
        )?;
        return Ok(Status::Success);
    }

    let threads = args.threads.unwrap_or_else(default_threads);
    if args.reference == Reference::Matrixmultiply {
        // matrixmultiply reads this once, at its first call; no thread has started yet.
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
        if threads > MATRIXMULTIPLY_MAX_THREADS {
            eprintln!(
                "warning: matrixmultiply uses at most {MATRIXMULTIPLY_MAX_THREADS} threads; \
                 the reference runs on {MATRIXMULTIPLY_MAX_THREADS}, not {threads}"
            );
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("selfsup-bench-{i}"))
        .build()
        .with_context(|| format!("--threads {threads}: cannot start the thread pool"))?;

    let isa = selfsup::kernels::isa().name();
    let name_width = report::name_width(
        (selected.workloads.iter().map(|w| w.name)).chain(selected.probes.iter().map(|p| p.name)),
    );
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let timing = if selected.workloads.is_empty() {
        "memory probes only".to_string()
    } else {
        format!(
            "{} warm-up{} + {} rep{} of >= {:.0} ms",
            args.warmup,
            plural(args.warmup),
            args.reps,
            plural(args.reps),
            MIN_REP_SECONDS * 1e3
        )
    };
    writeln!(
        out,
        "selfsup {} bench: {}, isa {isa}, {threads} thread{}; {timing}",
        env!("CARGO_PKG_VERSION"),
        args.reference.name(),
        plural(threads),
    )?;
    let peak_gflops = args
        .peak
        .then(|| pool.install(selfsup::kernels::peak::fma_peak_gflops));
    if let Some(p) = peak_gflops {
        writeln!(
            out,
            "FMA peak: {p:.1} GFLOP/s on {threads} thread{} ({isa}); shares count each \
             workload's convolution, GEMM and NT-Xent flops",
            plural(threads)
        )?;
    }
    if !selected.workloads.is_empty() {
        writeln!(out, "{}", report::table_header(name_width))?;
    }
    let measurements = pool.install(|| -> Result<Vec<Measurement>> {
        let mut done = Vec::with_capacity(selected.workloads.len());
        for w in &selected.workloads {
            let m = measure(w, args.reference, args.warmup, args.reps)?;
            writeln!(out, "{}", report::table_row(&m, name_width, peak_gflops))?;
            done.push(m);
        }
        Ok(done)
    })?;
    // The bench pool stays alive (idle) through the probes: its threads exiting now would
    // free their scratch while a probe counts.
    let memory = run_probes(
        &selected.probes,
        threads,
        args.memory_n,
        name_width,
        &mut out,
    )?;

    for m in &measurements {
        let spread = (m.max_seconds - m.min_seconds) / m.seconds;
        if spread > NOISY_SPREAD {
            eprintln!(
                "warning: {}: repetitions spread over {:.0}% of the median; is the machine busy?",
                m.name,
                spread * 100.0
            );
        }
    }

    let report = Report {
        threads,
        isa,
        reference: args.reference.name(),
        version: env!("CARGO_PKG_VERSION"),
        warmup: args.warmup,
        reps: args.reps,
        workloads: measurements,
        memory,
        peak_gflops,
    };
    if let Some(path) = args.json.as_deref() {
        write_json(path, &report.to_json())?;
    }

    let Some((path, old)) = baseline else {
        return Ok(Status::Success);
    };
    let new: Vec<(String, Figures)> = report
        .workloads
        .iter()
        .map(|m| (m.name.clone(), m.figures()))
        .collect();
    let rows = report::compare(&old, &new, args.tolerance);
    let shown = path.display().to_string();
    writeln!(out)?;
    write!(
        out,
        "{}",
        report::comparison_table(&rows, &shown, args.tolerance)
    )?;
    out.flush()?;
    Ok(if report::any_slower(&rows) {
        Status::Regression
    } else {
        Status::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parsers() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("-1").is_err());
        assert_eq!(fraction("0"), Ok(0.0));
        assert_eq!(fraction("0.1"), Ok(0.1));
        assert!(fraction("1").is_err());
        assert!(fraction("-0.1").is_err());
        assert!(fraction("NaN").is_err());
        assert!(fraction("ten").is_err());
    }
}
