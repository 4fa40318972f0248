//! Data-parallel training under `mpirun` (feature `mpi`; `.ci/run` installs Open MPI and
//! runs these with `cargo test --release --features mpi --test mpi`). Each test starts a
//! job of 2 or 3 processes of the `selfsup` binary on this machine (loopback) and checks
//! what the job wrote and printed: the equivalence of P ranks of batch B with one process
//! of batch P*B, rank-0-only run folders, and jobs that end with a clear error instead of
//! hanging when the ranks disagree or one fails.
#![cfg(feature = "mpi")]

mod common;
use common::TempDir;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use selfsup::io::checkpoint;

/// Seconds after which mpirun itself ends a job (a hang would otherwise stall the suite).
const JOB_TIMEOUT: &str = "240";

/// `mpirun` with the options this machine needs (root in a container, more ranks than
/// cores, rayon threads not pinned); each `apps` entry is one MPMD part: `(ranks, args)`.
fn mpirun(apps: &[(usize, Vec<String>)]) -> (Output, Duration) {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RUST_BACKTRACE", "0")
        .args([
            "--oversubscribe",
            "--bind-to",
            "none",
            "--timeout",
            JOB_TIMEOUT,
        ]);
    for (k, (n, args)) in apps.iter().enumerate() {
        if k > 0 {
            cmd.arg(":");
        }
        cmd.args(["-n", &n.to_string(), env!("CARGO_BIN_EXE_selfsup")])
            .args(args);
    }
    let t0 = Instant::now();
    let out = cmd
        .output()
        .expect("run mpirun (apt-get install openmpi-bin libopenmpi-dev)");
    (out, t0.elapsed())
}

fn pretrain_args(out: &Path, batch: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "pretrain",
        "--method",
        "simclr",
        "--steps",
        "3",
        "--widths",
        "8,16",
        "--threads",
        "1",
        "--quiet",
        "--knn-every",
        "0",
        "--seed",
        "5",
        "--sync-bn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["--batch".into(), batch.to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The losses of `metrics.jsonl`, in order.
fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["loss"].as_f64().expect("a loss")
        })
        .collect()
}

fn final_weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, path) = checkpoint::latest_in(dir)
        .expect("read the run folder")
        .expect("a checkpoint");
    let ck = checkpoint::load(&path).expect("load the checkpoint");
    ck.tensors()
        .iter()
        .filter(|(n, _)| !n.starts_with("optim"))
        .map(|(n, t)| (n.clone(), t.data.clone()))
        .collect()
}

#[test]
fn p_ranks_of_batch_b_train_as_one_process_of_batch_p_times_b() {
    let b = 8;
    for p in [2usize, 3] {
        let one = TempDir::new("mpi-one");
        let many = TempDir::new("mpi-many");
        let (o, _) = mpirun(&[(1, pretrain_args(one.path(), p * b, &[]))]);
        assert!(o.status.success(), "{}", text(&o));
        let (o, _) = mpirun(&[(p, pretrain_args(many.path(), b, &[]))]);
        assert!(o.status.success(), "P = {p}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("over {p} processes")), "{err}");
        // Rank 0 alone logs: one line per step, not one per rank.
        let (l1, lp) = (losses(one.path()), losses(many.path()));
        assert_eq!(lp.len(), 3, "P = {p}: {lp:?}");
        for (s, (a, c)) in l1.iter().zip(&lp).enumerate() {
            assert!(
                (a - c).abs() <= 1e-4 * a.abs(),
                "P = {p}, step {s}: loss {c} vs one process {a}"
            );
        }
        let (w1, wp) = (final_weights(one.path()), final_weights(many.path()));
        assert_eq!(w1.len(), wp.len());
        for ((n1, a), (np, c)) in w1.iter().zip(&wp) {
            assert_eq!(n1, np);
            let num: f64 = a
                .iter()
                .zip(c)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            let den: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum();
            let rel = (num / den.max(1e-30)).sqrt();
            // One process and P ranks sum the same gradients in another order (the weight
            // gradient's chunks of images, the all-reduce), so the first step differs by
            // rounding (about 1e-8); a pre-activation near zero can then fall on the other
            // side of a ReLU, and the BatchNorm biases, whose norm after 3 steps from zero
            // is tiny, move by up to a few 1e-4 of it (measured 2026-12-03: 4.4e-4 at P = 3,
            // 2e-6 at P = 2). A wrong reduction (a rank's gradient dropped, summed instead
            // of averaged) moves those biases by their whole size.
            assert!(rel < 2e-3, "P = {p}: tensor {n1} differs by {rel:e}");
        }
        // Rank 0 alone writes the folder: the checkpoint, its config and log, no stray
        // temporary files of other ranks.
        let mut names: Vec<String> = std::fs::read_dir(many.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ckpt-00000003.safetensors",
                "config.json",
                "loss.png",
                "metrics.csv",
                "metrics.jsonl"
            ],
            "P = {p}"
        );
        // The checkpoint records the number of processes; a run of another number does
        // not resume it.
        let o = common::selfsup(
            &pretrain_args(many.path(), b, &["--resume"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{p} process(es), this run has 1")),
            "P = {p}: {err}"
        );
    }
}

#[test]
fn the_same_job_twice_gives_the_same_bits() {
    let (a, b) = (TempDir::new("mpi-a"), TempDir::new("mpi-b"));
    for d in [&a, &b] {
        let (o, _) = mpirun(&[(2, pretrain_args(d.path(), 8, &[]))]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(losses(a.path()), losses(b.path()));
    assert!(final_weights(a.path()) == final_weights(b.path()));
}

#[test]
fn ranks_started_with_different_arguments_all_stop_with_one_clear_error() {
    let d = TempDir::new("mpi-mismatch");
    let (o, took) = mpirun(&[
        (1, pretrain_args(d.path(), 8, &[])),
        (1, pretrain_args(d.path(), 8, &["--tau", "0.3"])),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // Every rank took the same branch and said so (no rank was left in a collective).
    assert_eq!(
        err.matches("the command line of rank(s) 1 differs from rank 0's")
            .count(),
        2,
        "{err}"
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(checkpoint::latest_in(d.path()).unwrap_or(None).is_none());
}

#[test]
fn a_rank_that_fails_ends_the_whole_job_instead_of_hanging() {
    let d = TempDir::new("mpi-dies");
    let missing = d.join("no-such-dir");
    let bad = format!("idx:{}", missing.display());
    let (o, took) = mpirun(&[
        (1, pretrain_args(d.path(), 8, &[])),
        (1, pretrain_args(d.path(), 8, &["--data", &bad])),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(took < Duration::from_secs(120), "took {took:?}");
}
