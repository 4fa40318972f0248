//! Ctrl-C and SIGTERM during `selfsup pretrain`: the run stops after its current step,
//! saves a checkpoint at that step, prints where it is and the command that resumes it,
//! and exits with 130 (SIGINT) or 143 (SIGTERM); the printed command, run as printed,
//! continues the run to the same bits as a run that was never interrupted. A second signal
//! ends the program at once and leaves a folder that still resumes to those bits.
//!
//! Signals go to a child process through the `kill` command, once it has printed its first
//! step. The runs are tiny (8 x 8 images, widths 4,8, one thread) but long enough (600
//! steps, about a second) that the signal arrives well before their end.
#![cfg(all(feature = "cli", unix))]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{selfsup, TempDir};

/// The run's length: the interrupted runs and the uninterrupted one share it (the learning
/// rate schedule depends on it).
const STEPS: u64 = 600;

fn args(out: &Path) -> Vec<String> {
    let steps = STEPS.to_string();
    [
        "pretrain",
        "--data",
        "builtin:8",
        "--steps",
        &steps,
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--knn-every",
        "0",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ckpt(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join(format!("ckpt-{step:08}.safetensors"))
}

/// The final checkpoint of the run never interrupted (computed once).
fn uninterrupted() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let d = TempDir::new("signals_whole");
        let a = args(d.path());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = selfsup(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(ckpt(d.path(), STEPS)).expect("the final checkpoint")
    })
}

/// Runs `cmd`, sends `signal` (`INT`, `TERM`) `times` times in a row once it has printed a
/// step line, and returns its exit status and whole stderr.
fn interrupt(mut cmd: Command, signal: &str, times: usize) -> (Option<i32>, String) {
    let mut child = cmd
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start selfsup");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "selfsup ended before its first step: {text}");
        text.push_str(&line);
        if line.starts_with("step ") {
            break;
        }
    }
    let pid = child.id().to_string();
    let mut kill = Command::new("kill");
    kill.args(["-s", signal]);
    for _ in 0..times {
        kill.arg(&pid);
    }
    assert!(kill.status().expect("run kill").success());
    err.read_to_string(&mut text).expect("read stderr");
    let status = child.wait().expect("wait for selfsup");
    (status.code(), text)
}

fn selfsup_cmd(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_selfsup"));
    c.args(args);
    c
}

/// The interrupted run's closing lines: the step it stopped at, its checkpoint (which must
/// be at that step) and the resume command.
fn stopped_at(dir: &Path, err: &str) -> (u64, String) {
    stopped_before(dir, err, STEPS)
}

/// [`stopped_at`] for a run of `total` steps.
fn stopped_before(dir: &Path, err: &str, total: u64) -> (u64, String) {
    assert!(
        !err.contains("error:") && !err.contains("panicked"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    let [.., first, second] = lines[..] else {
        panic!("too few lines: {err}");
    };
    let rest = first
        .strip_prefix("interrupted at step ")
        .unwrap_or_else(|| panic!("no 'interrupted' line: {err}"));
    let (step, path) = rest.split_once(": checkpoint ").expect("the checkpoint");
    let step: u64 = step.parse().expect("a step");
    assert!(0 < step && step < total, "stopped at {step}: {err}");
    assert_eq!(Path::new(path), ckpt(dir, step), "{err}");
    assert!(Path::new(path).is_file(), "{path} missing");
    let cmd = second
        .strip_prefix("resume with: ")
        .expect("the resume line");
    assert!(
        cmd.ends_with(&format!("--out {} --resume", dir.display())),
        "{cmd}"
    );
    assert_eq!(logged_steps(dir), (0..step).collect::<Vec<_>>());
    (step, cmd.to_string())
}

/// The steps `metrics.jsonl` holds, in order (over every run into the folder).
fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().expect("a step"))
        .collect()
}

/// The printed resume command, run by a shell as printed (`exec`: the shell becomes
/// selfsup, so the signal reaches it).
fn shell(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {cmd}")]);
    c
}

#[test]
fn ctrl_c_then_sigterm_save_where_they_stop_and_the_resumed_run_ends_on_the_same_bits() {
    let whole = uninterrupted();
    let d = TempDir::new("signals_chain");
    let dir = d.join("run");

    let (code, err) = interrupt(selfsup_cmd(&args(&dir)), "INT", 1);
    assert_eq!(code, Some(130), "SIGINT: {err}");
    let (first, resume) = stopped_at(&dir, &err);

    // The printed command resumes; SIGTERM stops it again, a few steps on.
    let (code, err) = interrupt(shell(&resume), "TERM", 1);
    assert_eq!(code, Some(143), "SIGTERM: {err}");
    assert!(
        err.contains(&format!("resuming {} at step {first}", dir.display())),
        "{err}"
    );
    let (second, again) = stopped_at(&dir, &err);
    assert_eq!(again, resume, "the same command resumes again");
    assert!(second > first, "{first} then {second}");

    // And runs to the end, where it holds the uninterrupted run's bits.
    let o = shell(&resume).output().expect("run the resume command");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = std::fs::read(ckpt(&dir, STEPS)).expect("the final checkpoint");
    assert!(
        resumed == whole,
        "interrupted at {first} and {second}, resumed: the final checkpoint differs from \
         the uninterrupted run's"
    );
    // Each step logged once, in order, over the three runs.
    assert_eq!(logged_steps(&dir), (0..STEPS).collect::<Vec<_>>());
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_folder_still_resumes_to_the_same_bits() {
    let whole = uninterrupted();
    let d = TempDir::new("signals_twice");
    let dir = d.join("run");
    // A checkpoint after every step: the second signal may land in the middle of a write.
    let mut a = args(&dir);
    a.extend(["--checkpoint-every".into(), "1".into()]);
    let (code, err) = interrupt(selfsup_cmd(&a), "INT", 2);
    assert_eq!(code, Some(130), "SIGINT twice: {err}");
    assert!(
        !err.contains("error:") && !err.contains("panicked"),
        "{err}"
    );

    let mut resume = args(&dir);
    resume.push("--resume".into());
    let o = selfsup_cmd(&resume).output().expect("resume");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(ckpt(&dir, STEPS)).unwrap() == whole);
    // A write the second signal cut short left only a temporary file, swept since.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
}

#[test]
fn rotnet_and_quick_thoughts_stop_and_resume_the_same_way() {
    for (name, method) in [
        (
            "rotnet",
            &[
                "--method",
                "rotnet",
                "--data",
                "builtin:8",
                "--widths",
                "4,8",
            ][..],
        ),
        (
            "quickthought",
            &[
                "--method",
                "quickthought",
                "--channels",
                "16",
                "--embed-dim",
                "8",
            ],
        ),
    ] {
        let d = TempDir::new(name);
        let dir = d.join("run");
        let mut a: Vec<String> = ["pretrain", "--steps", "100000", "--batch", "16"]
            .iter()
            .chain(["--knn-every", "0", "--threads", "1"].iter())
            .chain(method)
            .map(|s| s.to_string())
            .collect();
        a.extend(["--out".into(), dir.to_str().unwrap().into()]);
        let (code, err) = interrupt(selfsup_cmd(&a), "TERM", 1);
        assert_eq!(code, Some(143), "{name}: {err}");
        let (first, resume) = stopped_before(&dir, &err, 100_000);
        // The printed command resumes where it stopped; Ctrl-C stops it again further on.
        let (code, err) = interrupt(shell(&resume), "INT", 1);
        assert_eq!(code, Some(130), "{name}: {err}");
        assert!(err.contains(&format!("at step {first}")), "{name}: {err}");
        let (second, _) = stopped_before(&dir, &err, 100_000);
        assert!(second > first, "{name}: {first} then {second}");
    }
}
