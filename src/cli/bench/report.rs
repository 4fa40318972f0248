//! The outputs of `selfsup bench`: the JSON report, the human table, and the comparison
//! against a baseline report. Everything here is a pure function of its inputs.
//!
//! JSON shape (docs/performance.md; the comparison of docs/performance.md reads `workloads`):
//! `{"threads": 2, "isa": "avx2", "reference": "selfsup",
//!   "workloads": {"sgemm_1024": {"seconds": 0.031, "gflops": 69.1, ...}},
//!   "memory": {"ntxent_n16384_d128": {"peak_heap_bytes": ..., "seconds": ..., ...}}}`
//!
//! `memory` (present only when a memory probe ran) is apart from `workloads`, so readers of
//! the timings never see it.

use anyhow::{bail, Context, Result};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use super::memory::MemoryMeasurement;
use super::workload::Work;

/// The timing of one workload: per-operation seconds over the timed repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub work: Work,
    /// Median over the repetitions of the per-op time.
    pub seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
    /// Operations per timed repetition.
    pub ops_per_rep: u64,
}

impl Measurement {
    /// The figures of this measurement as they appear in a report.
    pub fn figures(&self) -> Figures {
        let (gflops, images_per_s) = match self.work {
            Work::Flops(f) => (Some(f / self.seconds / 1e9), None),
            Work::Images { images, .. } => (None, Some(images / self.seconds)),
            Work::Seconds { .. } => (None, None),
        };
        Figures {
            seconds: Some(self.seconds),
            gflops,
            images_per_s,
        }
    }

    /// The share of the FMA peak `peak_gflops` this workload's counted flops ran at.
    pub fn peak_share(&self, peak_gflops: f64) -> Option<f64> {
        let flops = self.work.flops()?;
        Some(flops / self.seconds / 1e9 / peak_gflops)
    }
}

/// The figures of one workload in a report (ours or a baseline's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub seconds: Option<f64>,
    pub gflops: Option<f64>,
    pub images_per_s: Option<f64>,
}

/// How a rate is derived from [`Figures`]; the first kind both sides have wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKind {
    Gflops,
    ImagesPerS,
    /// `1 / seconds`: operations per second.
    OpsPerS,
}

impl RateKind {
    pub const ALL: [RateKind; 3] = [RateKind::Gflops, RateKind::ImagesPerS, RateKind::OpsPerS];

    pub fn unit(self) -> &'static str {
        match self {
            RateKind::Gflops => "GFLOP/s",
            RateKind::ImagesPerS => "images/s",
            RateKind::OpsPerS => "ops/s",
        }
    }
}

impl Figures {
    /// The rate of kind `kind`, when these figures have it (higher is faster).
    pub fn rate(&self, kind: RateKind) -> Option<f64> {
        match kind {
            RateKind::Gflops => self.gflops,
            RateKind::ImagesPerS => self.images_per_s,
            RateKind::OpsPerS => self.seconds.map(|s| 1.0 / s),
        }
    }

    /// The preferred rate (gflops, else images/s, else 1/seconds), as compare.py reads it.
    pub fn best_rate(&self) -> Option<(f64, RateKind)> {
        RateKind::ALL
            .into_iter()
            .find_map(|k| self.rate(k).map(|r| (r, k)))
    }
}

/// The whole report of one `selfsup bench` run.
#[derive(Debug)]
pub struct Report {
    pub threads: usize,
    pub isa: &'static str,
    pub reference: &'static str,
    pub version: &'static str,
    pub warmup: usize,
    pub reps: usize,
    pub workloads: Vec<Measurement>,
    /// The memory probes that ran.
    pub memory: Vec<MemoryMeasurement>,
    /// The pool's FMA peak, when measured (`--peak`).
    pub peak_gflops: Option<f64>,
}

/// The serialized form of one workload entry.
#[derive(Serialize)]
struct Entry {
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images_per_s: Option<f64>,
    min_seconds: f64,
    max_seconds: f64,
    ops_per_rep: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_share: Option<f64>,
}

/// Rounds to `digits` significant digits (keeps the JSON readable; timings are not exact).
fn sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The measurements of a report and the peak their shares are taken of.
struct Workloads<'a> {
    ms: &'a [Measurement],
    peak_gflops: Option<f64>,
}

/// Serializes the measurements as a JSON object in run order (not sorted by name).
impl Serialize for Workloads<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ordered_workloads(self.ms, self.peak_gflops, s)
    }
}

fn ordered_workloads<S: Serializer>(
    ms: &[Measurement],
    peak_gflops: Option<f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(ms.len()))?;
    for m in ms {
        let f = m.figures();
        let entry = Entry {
            seconds: sig(m.seconds, 6),
            gflops: f.gflops.map(|x| sig(x, 6)),
            images_per_s: f.images_per_s.map(|x| sig(x, 6)),
            min_seconds: sig(m.min_seconds, 6),
            max_seconds: sig(m.max_seconds, 6),
            ops_per_rep: m.ops_per_rep,
            peak_share: peak_gflops.and_then(|p| m.peak_share(p)).map(|x| sig(x, 3)),
        };
        map.serialize_entry(&m.name, &entry)?;
    }
    map.end()
}

/// What a memory entry counts, stated in the JSON beside the figures.
pub const MEMORY_COUNTS: &str = "one run from a fresh workspace on a fresh thread pool \
    (per-thread scratch counted); peak_heap_bytes: the most heap bytes live at once during \
    the call beyond those live before it (input z and output dz excluded, given apart); \
    retained_bytes: still live after the call (workspace and per-thread scratch)";

/// The serialized form of one memory probe.
#[derive(Serialize)]
struct MemoryEntry {
    rows: usize,
    d: usize,
    peak_heap_bytes: usize,
    retained_bytes: usize,
    input_bytes: usize,
    output_bytes: usize,
    seconds: f64,
    loss: f32,
    counts: &'static str,
}

fn ordered_memory<S: Serializer>(ms: &[MemoryMeasurement], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(ms.len()))?;
    for m in ms {
        let entry = MemoryEntry {
            rows: m.rows,
            d: m.d,
            peak_heap_bytes: m.peak_heap_bytes,
            retained_bytes: m.retained_bytes,
            input_bytes: m.input_bytes,
            output_bytes: m.output_bytes,
            seconds: sig(m.seconds, 6),
            loss: m.loss,
            counts: MEMORY_COUNTS,
        };
        map.serialize_entry(&m.name, &entry)?;
    }
    map.end()
}

#[derive(Serialize)]
struct ReportJson<'a> {
    threads: usize,
    isa: &'a str,
    reference: &'a str,
    selfsup_version: &'a str,
    warmup: usize,
    reps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_gflops: Option<f64>,
    workloads: Workloads<'a>,
    #[serde(
        serialize_with = "ordered_memory",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    memory: &'a [MemoryMeasurement],
}

impl Report {
    /// The report as pretty-printed JSON, ending with a newline.
    pub fn to_json(&self) -> String {
        let json = ReportJson {
            threads: self.threads,
            isa: self.isa,
            reference: self.reference,
            selfsup_version: self.version,
            warmup: self.warmup,
            reps: self.reps,
            peak_gflops: self.peak_gflops.map(|p| sig(p, 4)),
            workloads: Workloads {
                ms: &self.workloads,
                peak_gflops: self.peak_gflops,
            },
            memory: &self.memory,
        };
        // Serializing plain structs, strings and finite-or-null floats cannot fail.
        let mut s = serde_json::to_string_pretty(&json).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The width of a table's name column: the longest of `names`, and at least 8 (`workload`).
pub fn name_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(str::len)
        .chain([8])
        .max()
        .unwrap_or(8)
}

/// The header of the results table, for names up to `name_width` characters.
pub fn table_header(name_width: usize) -> String {
    format!(
        "{:<name_width$}  {:>10}  {:>18}  {:>6} / {:<6}",
        "workload", "median ms", "rate", "min", "max"
    )
    .trim_end()
    .to_string()
}

/// One row of the results table: median time, rate, and the min/max spread of the
/// repetitions relative to the median; with `peak_gflops`, the share of the peak the
/// workload's counted flops ran at.
pub fn table_row(m: &Measurement, name_width: usize, peak_gflops: Option<f64>) -> String {
    let rate = match m.figures().best_rate() {
        Some((r, k)) if k != RateKind::OpsPerS => format!("{r:.2} {}", k.unit()),
        _ => "-".to_string(),
    };
    let pct = |x: f64| (x / m.seconds - 1.0) * 100.0;
    let spread = format!(
        "{:>6} / {:<6}",
        format!("{:+.1}%", pct(m.min_seconds)),
        format!("{:+.1}%", pct(m.max_seconds))
    );
    let share = peak_gflops
        .and_then(|p| m.peak_share(p))
        .map(|s| format!("  {:>5.1}% of peak", 100.0 * s))
        .unwrap_or_default();
    format!(
        "{:<name_width$}  {:>10.3}  {rate:>18}  {spread}{share}",
        m.name,
        m.seconds * 1e3
    )
    .trim_end()
    .to_string()
}

const MIB: f64 = 1024.0 * 1024.0;

/// The header of the memory table, for names up to `name_width` characters.
pub fn memory_header(name_width: usize) -> String {
    format!(
        "{:<name_width$}  {:>10}  {:>13}  {:>12}  {:>9}  {:>10}",
        "probe", "run ms", "peak heap MiB", "retained MiB", "input MiB", "output MiB"
    )
}

/// One row of the memory table.
pub fn memory_row(m: &MemoryMeasurement, name_width: usize) -> String {
    let mib = |b: usize| b as f64 / MIB;
    format!(
        "{:<name_width$}  {:>10.1}  {:>13.2}  {:>12.2}  {:>9.2}  {:>10.2}",
        m.name,
        m.seconds * 1e3,
        mib(m.peak_heap_bytes),
        mib(m.retained_bytes),
        mib(m.input_bytes),
        mib(m.output_bytes)
    )
}

/// Parses the `workloads` of a benchmark report (ours, or a reference script's), sorted by
/// name. Other top-level keys and other per-workload keys are ignored.
///
/// # Errors
/// Invalid JSON, no `workloads` object, an entry that is not an object, a figure that is
/// not a positive number, or an entry with none of `gflops`, `images_per_s`, `seconds`.
pub fn parse_workloads(text: &str) -> Result<Vec<(String, Figures)>> {
    let value: Value = serde_json::from_str(text).context("invalid JSON")?;
    let Some(top) = value.as_object() else {
        bail!("expected a JSON object at the top level");
    };
    let Some(workloads) = top.get("workloads") else {
        bail!("no \"workloads\" key");
    };
    let Some(workloads) = workloads.as_object() else {
        bail!("\"workloads\" is not an object");
    };
    let mut out = Vec::with_capacity(workloads.len());
    for (name, entry) in workloads {
        let Some(entry) = entry.as_object() else {
            bail!("workload '{name}' is not an object");
        };
        let field = |key: &str| -> Result<Option<f64>> {
            match entry.get(key) {
                None => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => Ok(Some(x)),
                    _ => bail!("workload '{name}': \"{key}\" must be a positive number, got {v}"),
                },
            }
        };
        let figures = Figures {
            seconds: field("seconds")?,
            gflops: field("gflops")?,
            images_per_s: field("images_per_s")?,
        };
        if figures.best_rate().is_none() {
            bail!("workload '{name}' has none of \"gflops\", \"images_per_s\", \"seconds\"");
        }
        out.push((name.clone(), figures));
    }
    Ok(out)
}

/// The outcome of comparing one workload with the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within tolerance (or faster by no more than the tolerance).
    Ok,
    /// Faster than `old * (1 + tolerance)`.
    Faster,
    /// Slower than `old * (1 - tolerance)`: a regression.
    Slower,
    /// Measured now, absent from the baseline.
    New,
    /// In the baseline, not measured in this run.
    NotMeasured,
    /// Both have the workload but no rate in common.
    Incomparable,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Faster => "faster",
            Verdict::Slower => "SLOWER",
            Verdict::New => "new (no baseline)",
            Verdict::NotMeasured => "not measured",
            Verdict::Incomparable => "no common figure",
        }
    }
}

/// One row of the baseline comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub name: String,
    pub kind: Option<RateKind>,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub verdict: Verdict,
}

impl Comparison {
    /// `new / old` (above 1 is faster), when both rates are known.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.new? / self.old?)
    }
}

/// Compares this run (`new`) with a baseline (`old`) workload by workload, on the first
/// rate kind both have. A workload regresses when `new < old * (1 - tolerance)`.
/// Rows follow `new`'s order, then the baseline-only workloads in the baseline's order.
pub fn compare(
    old: &[(String, Figures)],
    new: &[(String, Figures)],
    tolerance: f64,
) -> Vec<Comparison> {
    let find = |list: &[(String, Figures)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    };
    let mut rows = Vec::new();
    for (name, now) in new {
        let Some(before) = find(old, name) else {
            let best = now.best_rate();
            rows.push(Comparison {
                name: name.clone(),
                kind: best.map(|b| b.1),
                old: None,
                new: best.map(|b| b.0),
                verdict: Verdict::New,
            });
            continue;
        };
        let common = RateKind::ALL
            .into_iter()
            .find_map(|k| Some((k, before.rate(k)?, now.rate(k)?)));
        let row = match common {
            None => Comparison {
                name: name.clone(),
                kind: None,
                old: None,
                new: None,
                verdict: Verdict::Incomparable,
            },
            Some((kind, o, n)) => Comparison {
                name: name.clone(),
                kind: Some(kind),
                old: Some(o),
                new: Some(n),
                verdict: if n < o * (1.0 - tolerance) {
                    Verdict::Slower
                } else if n > o * (1.0 + tolerance) {
                    Verdict::Faster
                } else {
                    Verdict::Ok
                },
            },
        };
        rows.push(row);
    }
    for (name, before) in old {
        if find(new, name).is_none() {
            let best = before.best_rate();
            rows.push(Comparison {
                name: name.clone(),
                kind: best.map(|b| b.1),
                old: best.map(|b| b.0),
                new: None,
                verdict: Verdict::NotMeasured,
            });
        }
    }
    rows
}

/// The comparison as a text table followed by a one-line summary.
pub fn comparison_table(rows: &[Comparison], baseline: &str, tolerance: f64) -> String {
    let w = name_width(rows.iter().map(|r| r.name.as_str()));
    let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
    let mut out = format!(
        "{:<w$}  {:>12}  {:>12}  {:<8}  {:>6}  verdict\n",
        "workload", "baseline", "now", "unit", "ratio"
    );
    for r in rows {
        let ratio = r.ratio().map_or("-".to_string(), |x| format!("{x:.3}"));
        out += &format!(
            "{:<w$}  {:>12}  {:>12}  {:<8}  {:>6}  {}\n",
            r.name,
            num(r.old),
            num(r.new),
            r.kind.map_or("", RateKind::unit),
            ratio,
            r.verdict.label()
        );
    }
    let compared = rows.iter().filter(|r| r.ratio().is_some()).count();
    let slower = rows.iter().filter(|r| r.verdict == Verdict::Slower).count();
    let pct = tolerance * 100.0;
    if slower > 0 {
        out += &format!(
            "FAIL: {slower} of {compared} compared workloads more than {pct:.1}% slower than {baseline}\n"
        );
    } else {
        out +=
            &format!("ok: {compared} compared, none more than {pct:.1}% slower than {baseline}\n");
    }
    out
}

/// True when any row is a regression.
pub fn any_slower(rows: &[Comparison]) -> bool {
    rows.iter().any(|r| r.verdict == Verdict::Slower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, gflops: f64) -> (String, Figures) {
        let f = Figures {
            seconds: Some(1.0),
            gflops: Some(gflops),
            images_per_s: None,
        };
        (name.to_string(), f)
    }

    fn verdicts(old: f64, new: f64, tol: f64) -> Verdict {
        compare(&[g("w", old)], &[g("w", new)], tol)[0].verdict
    }

    #[test]
    fn verdicts_around_the_tolerance() {
        assert_eq!(verdicts(100.0, 100.0, 0.1), Verdict::Ok);
        assert_eq!(verdicts(100.0, 91.0, 0.1), Verdict::Ok);
        assert_eq!(verdicts(100.0, 89.0, 0.1), Verdict::Slower);
        assert_eq!(verdicts(100.0, 109.0, 0.1), Verdict::Ok);
        assert_eq!(verdicts(100.0, 111.0, 0.1), Verdict::Faster);
    }

    #[test]
    fn tolerance_edges() {
        // Exactly at the threshold is not "slower than" it (0.75 * 100 is exact).
        assert_eq!(verdicts(100.0, 75.0, 0.25), Verdict::Ok);
        assert_eq!(verdicts(100.0, 74.999, 0.25), Verdict::Slower);
        // Tolerance 0: any slowdown fails, equality passes.
        assert_eq!(verdicts(100.0, 100.0, 0.0), Verdict::Ok);
        assert_eq!(verdicts(100.0, 99.999, 0.0), Verdict::Slower);
        assert_eq!(verdicts(100.0, 100.001, 0.0), Verdict::Faster);
        // A tolerance just below 1 accepts almost anything.
        assert_eq!(verdicts(100.0, 0.01, 0.9999), Verdict::Ok);
    }

    #[test]
    fn missing_workloads_on_either_side_are_reported_not_failed() {
        let old = [g("a", 10.0), g("gone", 10.0)];
        let new = [g("a", 10.0), g("fresh", 10.0)];
        let rows = compare(&old, &new, 0.1);
        let names: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.verdict)).collect();
        assert_eq!(
            names,
            [
                ("a", Verdict::Ok),
                ("fresh", Verdict::New),
                ("gone", Verdict::NotMeasured)
            ]
        );
        assert!(!any_slower(&rows));
        assert_eq!(rows[1].ratio(), None);
    }

    #[test]
    fn rate_kinds_fall_back_and_invert_seconds() {
        let secs = |s: f64| Figures {
            seconds: Some(s),
            ..Figures::default()
        };
        let old = [("n".to_string(), secs(0.010))];
        // Twice the time is half the rate: a regression.
        let rows = compare(&old, &[("n".to_string(), secs(0.020))], 0.1);
        assert_eq!(rows[0].kind, Some(RateKind::OpsPerS));
        assert!((rows[0].ratio().unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(rows[0].verdict, Verdict::Slower);
        // Old has gflops, new only seconds: they compare on 1/seconds.
        let rows = compare(&[g("n", 50.0)], &[("n".to_string(), secs(0.5))], 0.1);
        assert_eq!(
            (rows[0].kind, rows[0].verdict),
            (Some(RateKind::OpsPerS), Verdict::Faster)
        );
        // No common figure at all.
        let img = Figures {
            images_per_s: Some(3.0),
            ..Figures::default()
        };
        let gf = Figures {
            gflops: Some(3.0),
            ..Figures::default()
        };
        let rows = compare(&[("x".into(), img)], &[("x".into(), gf)], 0.1);
        assert_eq!(rows[0].verdict, Verdict::Incomparable);
    }

    /// A report of 2 avx2 threads with nothing in it.
    fn report() -> Report {
        Report {
            threads: 2,
            isa: "avx2",
            reference: "selfsup",
            version: "0.1.0",
            warmup: 2,
            reps: 5,
            workloads: vec![],
            memory: vec![],
            peak_gflops: None,
        }
    }

    #[test]
    fn parses_our_report_and_foreign_ones() {
        let r = Report {
            workloads: vec![Measurement {
                name: "sgemm_256".into(),
                work: Work::Flops(2.0 * 256f64.powi(3)),
                seconds: 0.001,
                min_seconds: 0.0009,
                max_seconds: 0.0011,
                ops_per_rep: 30,
            }],
            ..report()
        };
        let json = r.to_json();
        assert!(!json.contains("memory"), "{json}");
        assert!(!json.contains("peak"), "{json}");
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["threads"], 2);
        assert_eq!(v["isa"], "avx2");
        assert_eq!(v["reference"], "selfsup");
        let parsed = parse_workloads(&json).unwrap();
        assert_eq!(parsed.len(), 1);
        assert!((parsed[0].1.gflops.unwrap() - 33.554432).abs() < 1e-3);
        // torch_reference.py style, with extra keys.
        let t = r#"{"torch": "2.15", "threads": 2, "workloads":
                    {"ntxent_n256_d128": {"seconds": 0.0056}, "embed": {"images_per_s": 400, "x": "y"}}}"#;
        let parsed = parse_workloads(t).unwrap();
        assert_eq!(parsed[1].0, "ntxent_n256_d128");
        assert_eq!(parsed[0].1.best_rate(), Some((400.0, RateKind::ImagesPerS)));
    }

    #[test]
    fn malformed_reports_are_errors_with_a_reason() {
        let err = |t: &str| format!("{:#}", parse_workloads(t).unwrap_err());
        assert!(err("{\"workloads\": ").contains("invalid JSON"));
        assert!(err("").contains("invalid JSON"));
        assert!(err("[1, 2]").contains("top level"));
        assert!(err("{\"threads\": 2}").contains("no \"workloads\""));
        assert!(err("{\"workloads\": [1]}").contains("not an object"));
        assert!(err("{\"workloads\": {\"a\": 3}}").contains("'a' is not an object"));
        assert!(err("{\"workloads\": {\"a\": {\"gflops\": \"fast\"}}}").contains("positive number"));
        assert!(err("{\"workloads\": {\"a\": {\"seconds\": 0}}}").contains("positive number"));
        assert!(err("{\"workloads\": {\"a\": {\"gflops\": -1}}}").contains("positive number"));
        assert!(err("{\"workloads\": {\"a\": {}}}").contains("none of"));
        // An empty workloads object is valid (the caller decides whether that is useful).
        assert!(parse_workloads("{\"workloads\": {}}").unwrap().is_empty());
    }

    #[test]
    fn memory_probes_go_apart_from_the_workloads() {
        let mem = MemoryMeasurement {
            name: "ntxent_n16384_d128".into(),
            rows: 32768,
            d: 128,
            peak_heap_bytes: 17 << 20,
            retained_bytes: 16 << 20,
            input_bytes: 16 << 20,
            output_bytes: 16 << 20,
            seconds: 6.5,
            loss: 10.4,
        };
        let r = Report {
            memory: vec![mem.clone()],
            ..report()
        };
        let json = r.to_json();
        let v: Value = serde_json::from_str(&json).unwrap();
        let e = &v["memory"]["ntxent_n16384_d128"];
        assert_eq!(e["peak_heap_bytes"], 17 << 20);
        assert_eq!(e["input_bytes"], 16 << 20);
        assert_eq!(e["seconds"], 6.5);
        assert_eq!(e["rows"], 32768);
        // Readers of the timings (ours, compare.py) see no memory entry.
        assert!(parse_workloads(&json).unwrap().is_empty());
        let row = memory_row(&mem, 18);
        assert!(row.contains("6500.0") && row.contains("17.00"), "{row}");
        assert_eq!(memory_header(18).len(), row.len(), "columns align");
    }

    #[test]
    fn comparison_table_summarizes() {
        let rows = compare(&[g("a", 100.0)], &[g("a", 50.0)], 0.1);
        let t = comparison_table(&rows, "old.json", 0.1);
        assert!(t.contains("SLOWER"), "{t}");
        assert!(t.contains("FAIL: 1 of 1 compared workloads more than 10.0% slower than old.json"));
        let rows = compare(&[g("a", 100.0)], &[g("a", 100.0)], 0.1);
        assert!(comparison_table(&rows, "old.json", 0.1).contains("ok: 1 compared, none"));
    }

    #[test]
    fn table_row_shows_rate_and_spread() {
        let m = Measurement {
            name: "w".into(),
            work: Work::Flops(1e9),
            seconds: 0.1,
            min_seconds: 0.09,
            max_seconds: 0.12,
            ops_per_rep: 1,
        };
        let row = table_row(&m, 8, None);
        assert!(!row.contains("peak"), "{row}");
        // 10 GFLOP/s of a 40 GFLOP/s peak.
        assert!(table_row(&m, 8, Some(40.0)).ends_with(" 25.0% of peak"));
        let images = Measurement {
            name: "img".into(),
            work: Work::Images {
                images: 4.0,
                flops: None,
            },
            ..m.clone()
        };
        assert!(!table_row(&images, 8, Some(40.0)).contains("peak"));
        let r = Report {
            workloads: vec![m.clone(), images],
            peak_gflops: Some(40.0),
            ..report()
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["peak_gflops"], 40.0);
        assert_eq!(v["workloads"]["w"]["peak_share"], 0.25);
        assert!(v["workloads"]["w"].get("gflops").is_some());
        let row = table_row(&m, 8, None);
        assert!(row.contains("100.000"), "{row}");
        assert!(row.contains("10.00 GFLOP/s"), "{row}");
        assert!(row.contains("-10.0% / +20.0%"), "{row}");
        assert_eq!(
            table_header(8).find(" / "),
            row.find(" / "),
            "columns align"
        );
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(0.0312345678, 3), 0.0312);
        assert_eq!(sig(69.12345, 4), 69.12);
        assert_eq!(sig(0.0, 3), 0.0);
    }
}
