//! End-to-end tests of `selfsup pretrain`, `probe`, `embed` and `preview` on the built-in
//! data with a tiny encoder, and the one-line errors of bad configurations.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fails_with, newest_checkpoint, selfsup};

/// A directory in the temp directory, unique to this process and tag; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("selfsup-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        Self(d)
    }
    fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TINY: &[&str] = &["--widths", "8,16", "--batch", "16", "--quiet"];

fn pretrain(out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["pretrain", "--data", "builtin", "--out", out];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    selfsup(&args)
}

#[test]
fn bad_configurations_are_one_line_errors() {
    let d = TempDir::new("bad");
    let out = d.join("run");
    let o = out.as_str();
    fails_with(&["pretrain", "--tau", "0", "--out", o], "--tau");
    fails_with(&["pretrain", "--tau", "-1", "--out", o], "--tau");
    fails_with(&["pretrain", "--batch", "1", "--out", o], "--batch");
    fails_with(&["pretrain", "--method", "byol", "--out", o], "byol");
    fails_with(
        &["pretrain", "--data", "nonsense:x", "--out", o],
        "unknown data spec",
    );
    fails_with(
        &["pretrain", "--data", "idx:/nonexistent/selfsup", "--out", o],
        "/nonexistent/selfsup",
    );
    fails_with(&["pretrain", "--steps", "0", "--out", o], "--steps");
    fails_with(&["pretrain", "--minutes", "-2", "--out", o], "--minutes");
    fails_with(
        &["probe", "--checkpoint", "/nonexistent/x.safetensors"],
        "x.safetensors",
    );
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    fails_with(
        &["embed", "--checkpoint", &junk, "--out", &d.join("e.npy")],
        "junk.safetensors",
    );
    assert!(!Path::new(&d.join("e.npy")).exists());
}

#[test]
fn pretrain_writes_a_run_folder_that_probe_embed_and_resume_use() {
    let d = TempDir::new("run");
    let run = d.join("run");
    let o = pretrain(
        &run,
        &[
            "--steps",
            "4",
            "--checkpoint-every",
            "2",
            "--knn-every",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["config.json", "metrics.jsonl", "loss.png"] {
        assert!(Path::new(&run).join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(Path::new(&run).join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 4);
    assert!(steps
        .iter()
        .all(|v| v["loss"].as_f64().unwrap().is_finite()));
    // The final kNN monitor ran on the labeled test split.
    assert!(metrics.contains("knn_accuracy"));
    let ckpt = newest_checkpoint(&run);
    assert!(
        ckpt.to_str().unwrap().ends_with("4.safetensors"),
        "{ckpt:?}"
    );

    // A second pretrain into the same folder without --resume is refused...
    fails_with(
        &[
            "pretrain", "--data", "builtin", "--out", &run, "--widths", "8,16", "--batch", "16",
        ],
        "--resume",
    );
    // ...resuming with other settings too...
    fails_with(
        &[
            "pretrain", "--data", "builtin", "--out", &run, "--widths", "8,32", "--batch", "16",
            "--resume", "--steps", "6",
        ],
        "--widths",
    );
    // ...and resuming with the same settings continues to the run's end.
    let o = pretrain(&run, &["--steps", "4", "--resume", "--knn-every", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let npy = d.join("emb.npy");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        "builtin",
        "--split",
        "test",
        "--out",
        &npy,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, values) =
        selfsup::io::npy::read_npy_f32(&mut std::fs::File::open(&npy).unwrap()).unwrap();
    assert_eq!(shape, vec![2000, 16]);
    assert!(values.iter().all(|v| v.is_finite()));

    let o = selfsup(&[
        "probe",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        "builtin",
        "--labels",
        "1%",
        "--no-baselines",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("1% labels"), "{stdout}");
    fails_with(
        &[
            "probe",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--labels",
            "150%",
        ],
        "--labels",
    );
}

/// `--seed S` with `--threads 1` and `--threads 2` writes the same checkpoint, byte for
/// byte, for both methods (the tensors and the metadata: nothing in a checkpoint depends on
/// the thread count or the clock).
#[test]
fn checkpoints_are_bit_identical_for_one_and_two_threads() {
    let d = TempDir::new("threads");
    for method in ["simclr", "rotnet"] {
        let mut bytes = Vec::new();
        for threads in ["1", "2"] {
            let run = d.join(&format!("{method}-{threads}"));
            let o = pretrain(
                &run,
                &[
                    "--method",
                    method,
                    "--steps",
                    "3",
                    "--seed",
                    "7",
                    "--threads",
                    threads,
                    "--knn-every",
                    "0",
                ],
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let ckpt = newest_checkpoint(&run);
            assert!(
                ckpt.to_str().unwrap().ends_with("3.safetensors"),
                "{ckpt:?}"
            );
            bytes.push(std::fs::read(ckpt).unwrap());
        }
        assert!(bytes[0] == bytes[1], "{method}: the checkpoints differ");
    }
}

#[test]
fn preview_writes_a_png_grid() {
    let d = TempDir::new("preview");
    let png = d.join("grid.png");
    let o = selfsup(&[
        "preview", "--data", "builtin", "--images", "3", "--views", "2", "--out", &png,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&png).unwrap();
    // 3 rows and 1 + 2 columns of 32 x 3 pixel cells with 4-pixel gaps.
    assert_eq!((img.width(), img.height()), (3 * 100 + 4, 3 * 100 + 4));
}

/// A build without the `mpi` feature started by a launcher as one of several processes
/// refuses, rather than start independent runs into one folder (the launcher's variable
/// is set by hand: no mpirun needed).
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_processes() {
    for (var, cmd) in [
        ("OMPI_COMM_WORLD_SIZE", vec!["pretrain", "--steps", "1"]),
        (
            "PMI_SIZE",
            vec!["pretrain", "--method", "quickthought", "--steps", "1"],
        ),
    ] {
        let dir = std::env::temp_dir().join(format!("selfsup-nompi-{}", std::process::id()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfsup"))
            .args(&cmd)
            .arg("--out")
            .arg(&dir)
            .env(var, "2")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run selfsup");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without MPI"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!dir.exists(), "a run folder was made");
    }
    // The default run is one process in any build.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .env("OMPI_COMM_WORLD_SIZE", "3")
        .output()
        .expect("run selfsup");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs as one process"));
}

/// With stderr a pipe (a log file, a scheduler's output) and without `--quiet`, the run's
/// description comes first, then the progress as plain lines every 50 steps instead of a bar
/// that nobody sees; the run's closing line follows.
#[test]
fn progress_is_plain_lines_when_stderr_is_not_a_terminal() {
    let d = TempDir::new("plain");
    let run = d.join("run");
    let o = selfsup(&[
        "pretrain",
        "--data",
        "builtin",
        "--out",
        &run,
        "--widths",
        "4,8",
        "--batch",
        "8",
        "--steps",
        "100",
        "--knn-every",
        "0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    // The built-in train split: 20,000 RGB images of 32 x 32 bytes (61.4 MB), trained at
    // their size (stem stride 1 up to 64 pixels); 20,000 / 8 steps per epoch.
    assert_eq!(
        lines[0],
        "simclr: 20000 images of 3 channel(s) stored at 32x32 (61 MB in memory), trained at \
         32x32; encoder widths 4/8, stem stride 1; batch 8, 2500 steps per epoch",
        "{err}"
    );
    // Plain lines: the first step at once, then every 5 seconds, and the last step.
    assert!(lines[1].starts_with("step 1/100  loss "), "{err}");
    let n = lines.len();
    assert!(lines[n - 2].starts_with("step 100/100  loss "), "{err}");
    assert!(lines[n - 1].starts_with("simclr: 100 steps in "), "{err}");
    assert!(
        lines[2..n - 2].iter().all(|l| l.starts_with("step ")),
        "{err}"
    );
}

/// Each flag's error names the flag and what it takes (no internal field names, no
/// 18446744073709551615).
#[test]
fn flag_errors_say_what_is_allowed() {
    for (args, want) in [
        (
            &["pretrain", "--weight-decay", "-1"][..],
            "'--weight-decay <WD>': expected a finite number, 0 or more",
        ),
        (
            &["pretrain", "--epochs", "0"],
            "'--epochs <N>': expected a whole number of at least 1",
        ),
        (
            &["pretrain", "--knn-every", "-1"],
            "'--knn-every <N>': expected a whole number, 0 or more",
        ),
        (
            &["pretrain", "--checkpoint-every", "x"],
            "'--checkpoint-every <N>': expected a whole number, 0 or more",
        ),
        (
            &["embed", "--checkpoint", "x", "--threads", "0"],
            "'--threads <T>': expected a whole number of at least 1",
        ),
    ] {
        fails_with(args, want);
    }
}
