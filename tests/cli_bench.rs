//! End-to-end tests of `selfsup bench`: the JSON report, the `--baseline` exit status, and
//! one-line errors for bad input. They run the built binary on the smallest workloads, and
//! the NT-Xent memory probe at a small size (`--memory-n`, a hidden flag for tests).
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// A file path in the temp directory, unique to this process and call; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "selfsup-cli-bench-{}-{}-{nanos}-{tag}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self(std::env::temp_dir().join(name))
    }

    fn with_contents(tag: &str, contents: &str) -> Self {
        let f = Self::new(tag);
        std::fs::write(&f.0, contents).expect("write temp file");
        f
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .expect("run the selfsup binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fast settings for runs whose figures do not matter.
const QUICK: &[&str] = &[
    "bench",
    "--only",
    "sgemm_256",
    "--reps",
    "1",
    "--warmup",
    "1",
];

#[test]
fn json_report_has_the_documented_shape() {
    let json = TempFile::new("report");
    let out = selfsup(&[
        "bench",
        "--only",
        "sgemm_256",
        "--reps",
        "5",
        "--threads",
        "2",
        "--json",
        json.path(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("sgemm_256") && stdout.contains("GFLOP/s"),
        "{stdout}"
    );

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json.0).unwrap()).unwrap();
    assert_eq!(v["threads"], 2);
    assert_eq!(v["reference"], "selfsup");
    assert!(
        ["avx512", "avx2", "portable"].contains(&v["isa"].as_str().unwrap()),
        "{v}"
    );
    let workloads = v["workloads"].as_object().unwrap();
    assert_eq!(workloads.len(), 1, "{v}");
    let w = &workloads["sgemm_256"];
    let seconds = w["seconds"].as_f64().unwrap();
    let gflops = w["gflops"].as_f64().unwrap();
    assert!(seconds > 0.0 && gflops > 0.0, "{w}");
    let expected = 2.0 * 256f64.powi(3) / seconds / 1e9;
    assert!(
        (gflops / expected - 1.0).abs() < 1e-3,
        "{gflops} vs {expected}"
    );
    let (lo, hi) = (
        w["min_seconds"].as_f64().unwrap(),
        w["max_seconds"].as_f64().unwrap(),
    );
    assert!(lo <= seconds && seconds <= hi, "{w}");
}

#[test]
fn json_to_stdout_is_pure_json() {
    let out = selfsup(&[QUICK, &["--json", "-"]].concat());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).expect("stdout is JSON");
    assert!(v["workloads"]["sgemm_256"]["gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn baseline_passes_when_not_slower_and_fails_with_exit_1_when_slower() {
    let slow = TempFile::with_contents(
        "slow-baseline",
        r#"{"threads": 2, "workloads": {"sgemm_256": {"seconds": 1000.0, "gflops": 0.001},
                                         "not_run_here": {"seconds": 1.0}}}"#,
    );
    let out = selfsup(&[QUICK, &["--baseline", slow.path()]].concat());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("faster") && stdout.contains("not measured"),
        "{stdout}"
    );

    let fast = TempFile::with_contents(
        "fast-baseline",
        r#"{"workloads": {"sgemm_256": {"seconds": 1e-9, "gflops": 1e9}}}"#,
    );
    let out = selfsup(&[QUICK, &["--baseline", fast.path(), "--tolerance", "0.5"]].concat());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("SLOWER") && stdout.contains("FAIL"),
        "{stdout}"
    );
}

/// Bad input: a non-zero exit, one line on stderr starting with `error:`, no panic.
fn assert_one_line_error(args: &[&str], mentions: &str) {
    let out = selfsup(args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_ne!(
        out.status.code(),
        Some(1),
        "{args:?}: 1 is reserved for regressions"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    assert!(
        stderr.contains(mentions),
        "{args:?}: {stderr} should mention {mentions}"
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let missing = TempFile::new("missing");
    assert_one_line_error(
        &[QUICK, &["--baseline", missing.path()]].concat(),
        missing.path(),
    );
    let garbage = TempFile::with_contents("garbage", "{\"workloads\": {");
    assert_one_line_error(
        &[QUICK, &["--baseline", garbage.path()]].concat(),
        "invalid JSON",
    );
    let other = TempFile::with_contents("other", r#"{"workloads": {"x": {"seconds": 1}}}"#);
    assert_one_line_error(
        &[QUICK, &["--baseline", other.path()]].concat(),
        other.path(),
    );
    assert_one_line_error(&["bench", "--only", "sgemm_7"], "sgemm_256");
    assert_one_line_error(&["bench", "--threads", "0"], "--threads");
    assert_one_line_error(&["bench", "--reps", "0"], "--reps");
    assert_one_line_error(
        &["bench", "--baseline", "x", "--tolerance", "1"],
        "--tolerance",
    );
    assert_one_line_error(&["bench", "--json", "/no/such/dir/x.json"], "/no/such/dir");
    assert_one_line_error(&["bench", "--bogus"], "--bogus");
}

#[test]
fn list_prints_the_workload_names() {
    let out = selfsup(&["bench", "--list"]);
    assert!(out.status.success());
    let names: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    for name in [
        "sgemm_256",
        "sgemm_1024",
        "sgemm_2048",
        "sgemm_conv_c128",
        "sgemm_tall_skinny",
        "simclr_step_resnet_mini_b256",
        "simclr_step_resnet_mini96_b128",
        "embed_resnet_mini_b512",
        "embed_resnet_mini96_b256",
        "ntxent_n256_d128",
        "ntxent_n1024_d128",
        "ntxent_n4096_d128",
        "ntxent_n16384_d128",
    ] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
    }
    // The NT-Xent workloads and the probe are this crate's only.
    let out = selfsup(&["bench", "--list", "--reference", "matrixmultiply"]);
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("ntxent"),
        "{}",
        text(&out.stdout)
    );
}

/// Fast settings for the smallest NT-Xent workload.
const QUICK_NTXENT: &[&str] = &[
    "bench",
    "--only",
    "ntxent_n256_d128",
    "--reps",
    "1",
    "--warmup",
    "1",
    "--threads",
    "2",
];

#[test]
fn ntxent_reports_seconds_only() {
    let out = selfsup(&[QUICK_NTXENT, &["--json", "-"]].concat());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).expect("stdout is JSON");
    let w = &v["workloads"]["ntxent_n256_d128"];
    let seconds = w["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0 && seconds < 10.0, "{w}");
    assert!(
        w.get("gflops").is_none() && w.get("images_per_s").is_none(),
        "{w}"
    );
    assert!(v.get("memory").is_none(), "{v}");
    let table = text(&out.stderr);
    assert!(table.contains("ntxent_n256_d128"), "{table}");
    assert!(!table.contains("memory:"), "{table}");
}

#[test]
fn ntxent_has_no_matrixmultiply_reference() {
    assert_one_line_error(
        &[QUICK_NTXENT, &["--reference", "matrixmultiply"]].concat(),
        "no 'matrixmultiply' implementation",
    );
    assert_one_line_error(
        &["bench", "--only", "ntxent_n16384_d128", "--memory-n", "0"],
        "--memory-n",
    );
}

#[test]
fn memory_probe_json_shape_and_baseline_compatibility() {
    let json = TempFile::new("memory");
    let out = selfsup(
        &[
            QUICK_NTXENT,
            &[
                "--only",
                "ntxent_n256_d128,ntxent_n16384_d128",
                "--memory-n",
                "256",
                "--json",
                json.path(),
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("memory:") && table.contains("peak heap MiB"),
        "{table}"
    );
    let report = std::fs::read_to_string(&json.0).unwrap();
    let v: Value = serde_json::from_str(&report).unwrap();
    // The timings stay in `workloads` (what compare.py reads); the probe goes apart, under
    // the name of the size it ran.
    let workloads = v["workloads"].as_object().unwrap();
    assert_eq!(
        workloads.keys().collect::<Vec<_>>(),
        ["ntxent_n256_d128"],
        "{v}"
    );
    let memory = v["memory"].as_object().unwrap();
    assert_eq!(memory.len(), 1, "{v}");
    let e = &memory["ntxent_n256_d128"];
    let bytes = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k}: {e}"));
    assert_eq!(bytes("rows"), 512);
    assert_eq!(bytes("d"), 128);
    assert_eq!(bytes("input_bytes"), 512 * 128 * 4);
    assert_eq!(bytes("output_bytes"), 512 * 128 * 4);
    // The workspace keeps (at least) the normalized rows, as large as the input.
    assert!(bytes("retained_bytes") >= bytes("input_bytes"), "{e}");
    assert!(bytes("peak_heap_bytes") >= bytes("retained_bytes"), "{e}");
    assert!(bytes("peak_heap_bytes") < 64 << 20, "{e}");
    assert!(e["seconds"].as_f64().unwrap() > 0.0, "{e}");
    assert!(e["loss"].as_f64().unwrap().is_finite(), "{e}");

    // A report with a memory object is a valid baseline.
    let out = selfsup(
        &[
            QUICK_NTXENT,
            &["--baseline", json.path(), "--tolerance", "0.99"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok: 1 compared"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn scaling_reports_both_pools_and_the_median_pair_ratio() {
    let out = selfsup(&[
        "bench",
        "--only",
        "sgemm_256",
        "--warmup",
        "1",
        "--reps",
        "3",
        "--scaling",
        "1,2",
        "--json",
        "-",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pure JSON on stdout");
    assert_eq!(v["scaling"], serde_json::json!([1, 2]));
    let w = &v["workloads"]["sgemm_256"];
    let seconds = w["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 2);
    assert!(seconds.iter().all(|s| s.as_f64().unwrap() > 0.0), "{w}");
    let (s, lo, hi) = (
        w["speedup"].as_f64().unwrap(),
        w["speedup_min"].as_f64().unwrap(),
        w["speedup_max"].as_f64().unwrap(),
    );
    assert!(lo > 0.0 && lo <= s && s <= hi, "{w}");
    assert_eq!(w["pairs"], 3);
    // The table went to stderr, with the workload's row.
    assert!(text(&out.stderr).contains("sgemm_256"));
}

#[test]
fn scaling_rejects_bad_thread_counts_and_conflicting_flags() {
    assert_one_line_error(&[QUICK, &["--scaling", "1"]].concat(), "two thread counts");
    assert_one_line_error(
        &[QUICK, &["--scaling", "1,2,3"]].concat(),
        "two thread counts",
    );
    assert_one_line_error(&[QUICK, &["--scaling", "2,2"]].concat(), "must differ");
    assert_one_line_error(&[QUICK, &["--scaling", "0,2"]].concat(), "--scaling");
    assert_one_line_error(
        &[QUICK, &["--scaling", "1,2", "--threads", "2"]].concat(),
        "--threads",
    );
    assert_one_line_error(
        &["bench", "--only", "ntxent_n16384_d128", "--scaling", "1,2"],
        "memory probes",
    );
}

/// `--peak`: the FMA peak once, then each workload's share of it; the share is the
/// workload's GFLOP/s over the peak (so a workload with counted flops and its rate agree).
#[test]
fn peak_reports_each_workloads_share_of_the_fma_peak() {
    let out = selfsup(&[QUICK, &["--peak", "--json", "-"]].concat());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).expect("stdout is JSON");
    let peak = v["peak_gflops"].as_f64().expect("peak_gflops");
    assert!(peak > 0.1, "{v}");
    let w = &v["workloads"]["sgemm_256"];
    let share = w["peak_share"].as_f64().expect("peak_share");
    let want = w["gflops"].as_f64().unwrap() / peak;
    assert!((share - want).abs() <= 0.01 * want, "{share} vs {want}");
    let table = text(&out.stderr);
    assert!(
        table.contains("FMA peak:") && table.contains("% of peak"),
        "{table}"
    );
    // Without the flag, no peak anywhere.
    let out = selfsup(&[QUICK, &["--json", "-"]].concat());
    assert!(!text(&out.stdout).contains("peak"));
    assert_one_line_error(&["bench", "--peak", "--scaling", "1,2"], "--peak");
}
