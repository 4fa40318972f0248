//! `selfsup bench`: times the canonical workloads and reports, compares or exports them.
//!
//! Each workload runs at least one warm-up (the default is 2), then `--reps` timed
//! repetitions. The warm-ups decide how many operations one repetition runs so that it lasts
//! at least [`MIN_REP_SECONDS`]; the reported `seconds` is the median per-operation time over
//! the repetitions. Inputs are allocated, filled and checked once, outside the timing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use super::memory::{probes, MemoryMeasurement, MemoryProbe};
use super::report::{self, Figures, Measurement, Report};
use super::workloads::{registry, Reference, Runnable, Workload};
use super::Status;

/// The shortest timed repetition: short ops are batched up to this length.
pub const MIN_REP_SECONDS: f64 = 0.030;
/// Least total warm-up time per workload (threads awake, clock ramped).
pub const MIN_WARMUP_SECONDS: f64 = 0.25;

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
  python3 ../shared/anchors/compare.py ours.json mm.json
  selfsup bench --baseline main.json --tolerance 0.05   fail (exit 1) on a >5% slowdown
  selfsup bench --scaling 1,2 --reps 9 --only simclr_step_*   speed-up from 1 to 2 threads

Exit status: 0 on success, 1 when a workload is slower than --baseline allows,
2 on any error (bad flag, unreadable or malformed file, failed run).";

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

    /// Images in the NT-Xent memory probe instead of 16384 (for quick tests)
    #[arg(long, value_name = "N", hide = true, value_parser = at_least_one)]
    pub memory_n: Option<usize>,
}

fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a positive whole number".into()),
    }
}

fn fraction(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        Ok(_) => Err("must be a fraction in [0, 1), e.g. 0.10 for 10%".into()),
        Err(_) => Err("expected a number in [0, 1), e.g. 0.10 for 10%".into()),
    }
}

/// What `--only` chose: timed workloads and memory probes, each in registry order.
pub struct Selection<'a> {
    pub workloads: Vec<&'a Workload>,
    pub probes: Vec<&'a MemoryProbe>,
}

impl Selection<'_> {
    fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.probes.is_empty()
    }
}

/// The workloads and memory probes named by `--only` (all when empty), in registry order,
/// restricted to those `reference` implements (memory probes are `selfsup` only). Explicit
/// names must exist and be implemented by `reference`; patterns (`prefix*`) must match at
/// least one.
pub fn select<'a>(
    all: &'a [Workload],
    probes: &'a [MemoryProbe],
    only: &[String],
    reference: Reference,
) -> Result<Selection<'a>> {
    let names: Vec<&str> = all
        .iter()
        .map(|w| w.name)
        .chain(probes.iter().map(|p| p.name))
        .collect();
    let supported: Vec<bool> = all
        .iter()
        .map(|w| w.references.contains(&reference))
        .chain(probes.iter().map(|_| reference == Reference::Selfsup))
        .collect();
    let chosen = select_names(&names, &supported, only, reference)?;
    let (w, p) = chosen.split_at(all.len());
    let pick = |c: &[bool]| -> Vec<usize> { (0..c.len()).filter(|&i| c[i]).collect() };
    Ok(Selection {
        workloads: pick(w).into_iter().map(|i| &all[i]).collect(),
        probes: pick(p).into_iter().map(|i| &probes[i]).collect(),
    })
}

/// Which of `names` `--only` chooses (see [`select`]); `supported[i]` says whether `reference`
/// implements `names[i]`.
fn select_names(
    names: &[&str],
    supported: &[bool],
    only: &[String],
    reference: Reference,
) -> Result<Vec<bool>> {
    let valid = || names.join(", ");
    if only.is_empty() {
        return Ok(supported.to_vec());
    }
    let mut chosen = vec![false; names.len()];
    for raw in only {
        let pattern = raw.trim();
        ensure!(
            !pattern.is_empty(),
            "--only: empty workload name (valid: {})",
            valid()
        );
        if let Some(prefix) = pattern.strip_suffix('*') {
            let mut any = false;
            for (i, name) in names.iter().enumerate() {
                if name.starts_with(prefix) && supported[i] {
                    chosen[i] = true;
                    any = true;
                }
            }
            ensure!(
                any,
                "--only: '{pattern}' matches no workload (valid: {})",
                valid()
            );
        } else {
            let Some(i) = names.iter().position(|&n| n == pattern) else {
                bail!("--only: unknown workload '{pattern}' (valid: {})", valid());
            };
            ensure!(
                supported[i],
                "--only: workload '{pattern}' has no '{}' implementation",
                reference.name()
            );
            chosen[i] = true;
        }
    }
    Ok(chosen)
}

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

/// Warms up the operation of workload `name` and returns how many operations one timed
/// repetition runs. The first warm-up is one operation; later ones are full repetitions,
/// and the last one decides the repetition size. Warm-ups go on until there have been
/// `warmup` of them and they have lasted [`MIN_WARMUP_SECONDS`] in all, so the threads are
/// awake and the clock has ramped before the first timed repetition.
pub(crate) fn warm_up(op: &mut Runnable, warmup: usize, name: &str) -> Result<u64> {
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
pub(crate) fn time_rep(op: &mut Runnable, n: u64, name: &str) -> Result<f64> {
    time_ops(op, n).with_context(|| format!("running workload '{name}'"))
}

/// The smallest and the largest of a non-empty list.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    (min, xs.iter().copied().fold(0.0, f64::max))
}

/// Writes a JSON report to `path` (`-`: standard output).
pub(crate) fn write_json(path: &Path, text: &str) -> Result<()> {
    if path == Path::new("-") {
        io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(path, text)
            .with_context(|| format!("cannot write --json file '{}'", path.display()))?;
    }
    Ok(())
}

fn load_baseline(path: &Path) -> Result<Vec<(String, Figures)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --baseline file '{}'", path.display()))?;
    report::parse_workloads(&text).with_context(|| format!("--baseline file '{}'", path.display()))
}

/// Fails early when `--json FILE` could not be written at the end.
fn check_json_target(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure!(
        dir.is_dir(),
        "--json file '{}': directory '{}' does not exist",
        path.display(),
        dir.display()
    );
    ensure!(
        !path.is_dir(),
        "--json file '{}' is a directory",
        path.display()
    );
    Ok(())
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
        super::scaling::run(
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
    let name_width = selected
        .workloads
        .iter()
        .map(|w| w.name.len())
        .chain(selected.probes.iter().map(|p| p.name.len()))
        .chain([8])
        .max()
        .unwrap_or(8);
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
    if !selected.workloads.is_empty() {
        writeln!(out, "{}", report::table_header(name_width))?;
    }
    let measurements = pool.install(|| -> Result<Vec<Measurement>> {
        let mut done = Vec::with_capacity(selected.workloads.len());
        for w in &selected.workloads {
            let m = measure(w, args.reference, args.warmup, args.reps)?;
            writeln!(out, "{}", report::table_row(&m, name_width))?;
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

    fn names(s: &Selection) -> Vec<&'static str> {
        s.workloads
            .iter()
            .map(|w| w.name)
            .chain(s.probes.iter().map(|p| p.name))
            .collect()
    }

    fn sel<'a>(
        all: &'a [Workload],
        probes: &'a [MemoryProbe],
        only: &[&str],
        r: Reference,
    ) -> Result<Selection<'a>> {
        select(all, probes, &strings(only), r)
    }

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_keeps_registry_order_and_dedups() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let got = sel(&all, &pr, &["sgemm_1024", "sgemm_256", "sgemm_256"], s).unwrap();
        assert_eq!(names(&got), ["sgemm_256", "sgemm_1024"]);
        let got = sel(&all, &pr, &["sgemm_conv_*"], s).unwrap();
        assert_eq!(
            names(&got),
            ["sgemm_conv_k27", "sgemm_conv_c32", "sgemm_conv_c128"]
        );
        let got = sel(&all, &pr, &[], s).unwrap();
        assert_eq!(
            (got.workloads.len(), got.probes.len()),
            (all.len(), pr.len())
        );
    }

    #[test]
    fn select_finds_the_ntxent_workloads_and_the_memory_probe() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let got = sel(&all, &pr, &["ntxent_n16384_d128", "ntxent_n256_d128"], s).unwrap();
        assert_eq!(names(&got), ["ntxent_n256_d128", "ntxent_n16384_d128"]);
        assert_eq!(got.probes.len(), 1);
        let got = sel(&all, &pr, &["ntxent_*"], s).unwrap();
        assert_eq!(
            names(&got),
            [
                "ntxent_n256_d128",
                "ntxent_n1024_d128",
                "ntxent_n4096_d128",
                "ntxent_n16384_d128"
            ]
        );
        // Only this crate's kernels have the NT-Xent workloads and the probe.
        let mm = Reference::Matrixmultiply;
        let got = sel(&all, &pr, &[], mm).unwrap();
        assert!(got.probes.is_empty());
        assert!(got.workloads.iter().all(|w| w.name.starts_with("sgemm_")));
        let err = sel(&all, &pr, &["ntxent_n16384_d128"], mm).err().unwrap();
        assert!(err.to_string().contains("no 'matrixmultiply'"), "{err}");
    }

    #[test]
    fn select_rejects_unknown_names_listing_valid_ones() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let err = sel(&all, &pr, &["sgemm_999"], s).err().unwrap().to_string();
        assert!(err.contains("unknown workload 'sgemm_999'"), "{err}");
        assert!(err.contains("sgemm_256, sgemm_1024"), "{err}");
        assert!(err.contains("ntxent_n16384_d128"), "{err}");
        assert!(sel(&all, &pr, &["nope*"], s).is_err());
        assert!(sel(&all, &pr, &[""], s).is_err());
    }

    #[test]
    fn repetition_sizing_and_median() {
        assert_eq!(ops_per_rep(0.001, 0.030), 30);
        assert_eq!(ops_per_rep(0.5, 0.030), 1);
        assert_eq!(ops_per_rep(0.0, 0.030), 1_000_000);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

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
