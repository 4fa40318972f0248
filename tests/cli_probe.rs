//! `selfsup probe` as a user meets it: label shares as percentages, fractions or counts
//! (a bare `1` refused), the baseline rows chosen with `--baselines`, progress on stderr,
//! and a run folder taken for its newest checkpoint (also by `embed`).
#![cfg(feature = "cli")]

mod common;
use common::{fails_with, selfsup, TempDir};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = selfsup(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shares_baselines_progress_and_run_folders() {
    let d = TempDir::new("cli_probe");
    let run_dir = d.0.join("run");
    let r = run_dir.to_str().unwrap();
    let (ok, _, err) = run(&[
        "pretrain",
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--steps",
        "2",
        "--quiet",
        "--knn-every",
        "0",
        "--out",
        r,
    ]);
    assert!(ok, "{err}");

    // A run folder is its newest checkpoint; a count, a fraction and a percentage.
    let (ok, table, err) = run(&[
        "probe",
        "--checkpoint",
        r,
        "--labels",
        "50,0.01,5%",
        "--baselines",
        "random",
    ]);
    assert!(ok, "{err}");
    let head = table.lines().nth(1).unwrap();
    for col in ["50 labels", "1% labels", "5% labels"] {
        assert!(head.contains(col), "{head}");
    }
    let names: Vec<&str> = table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["random", "run/ckpt-00000002.safetensors"],
        "{table}"
    );
    // Progress: the plan (5% of 20,000 = 1,000 images covers the others: one class-balanced
    // shuffle per class, each share a prefix), then embedding and fitting lines.
    assert!(err.contains("1000 of 20000 training images"), "{err}");
    assert!(
        err.contains("embedding 1000 training and 2000 test images with random init"),
        "{err}"
    );
    assert!(
        err.contains("fitting run/ckpt-00000002.safetensors on 50 labels"),
        "{err}"
    );

    // No baseline: the encoder's row alone.
    let (ok, table, err) = run(&[
        "probe",
        "--checkpoint",
        r,
        "--labels",
        "1%",
        "--baselines",
        "none",
    ]);
    assert!(ok, "{err}");
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        !err.contains("raw pixels") && !err.contains("random init"),
        "{err}"
    );

    // embed takes the folder too.
    let npy = d.0.join("e.npy");
    let (ok, _, err) = run(&["embed", "--checkpoint", r, "--out", npy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(npy.is_file());

    for (labels, want) in [
        ("1", "ambiguous"),
        ("0", "--labels"),
        ("0%", "(0%, 100%]"),
        ("101%", "(0%, 100%]"),
        ("1.5", "(0, 1]"),
        ("abc", "600"),
    ] {
        fails_with(&["probe", "--checkpoint", r, "--labels", labels], want);
    }
    fails_with(
        &["probe", "--checkpoint", r, "--baselines", "raw,pixels"],
        "--baselines",
    );
    fails_with(
        &["probe", "--checkpoint", r, "--baselines", "none,raw"],
        "--baselines",
    );
    // A text spec for images points to the method that takes it.
    fails_with(
        &["probe", "--checkpoint", r, "--data", "text:notes.txt"],
        "--method quickthought",
    );
    fails_with(
        &["pretrain", "--data", "text:notes.txt", "--out", r],
        "--method quickthought",
    );
    let empty = d.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &["probe", "--checkpoint", empty.to_str().unwrap()],
        "without a checkpoint",
    );
}
