//! Ctrl-C and SIGTERM during `selfsup pretrain`: the first signal sets the run's
//! [`StopSignal`], so the training loop stops after its current step and saves a checkpoint
//! there; a second one ends the program at once (the checkpoint being written atomically,
//! the previous one stays whole). The exit status is the shell's convention, 128 + the
//! signal: 130 for SIGINT, 143 for SIGTERM. Before training starts (reading the data,
//! building the model) a signal ends the program as usual: there is nothing to save yet.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

use selfsup::train::{FitSummary, StopSignal};

/// Whether this command saves on a signal (`selfsup pretrain` does; the demo, which runs
/// several trainings and probes in a row, ends as usual).
static SAVE_ON_SIGNAL: AtomicBool = AtomicBool::new(false);

/// The installed handlers' stop signal and the number of the signal that came (0: none).
struct Handlers {
    stop: StopSignal,
    signal: Arc<AtomicUsize>,
}

static HANDLERS: OnceLock<Handlers> = OnceLock::new();

/// Makes this command's training run stop and save on Ctrl-C or SIGTERM (the handlers are
/// installed when training starts, by [`stop_signal`]).
pub fn save_on_signal() {
    SAVE_ON_SIGNAL.store(true, Ordering::SeqCst);
}

/// The stop signal of the training run about to start: with [`save_on_signal`], set by the
/// first SIGINT or SIGTERM (handlers installed now, once per process), the second one
/// exiting at once with 128 + its number; else a signal nothing sets.
///
/// # Errors
/// A handler that could not be installed.
pub fn stop_signal() -> Result<StopSignal> {
    if !SAVE_ON_SIGNAL.load(Ordering::SeqCst) {
        return Ok(StopSignal::new());
    }
    if let Some(h) = HANDLERS.get() {
        return Ok(h.stop.clone());
    }
    let stop = StopSignal::new();
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM] {
        // In this order: the exit is armed by the flag the first signal sets.
        flag::register_conditional_shutdown(sig, 128 + sig, stop.flag())
            .and_then(|_| flag::register_usize(sig, Arc::clone(&signal), sig as usize))
            .and_then(|_| flag::register(sig, stop.flag()))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    let stop_handle = stop.clone();
    let _ = HANDLERS.set(Handlers { stop, signal });
    Ok(stop_handle)
}

/// The error that ends a run its stop signal stopped: main exits with `code` and prints
/// nothing more (the progress observer said where the checkpoint is and how to resume).
#[derive(Debug)]
pub struct Interrupted {
    step: u64,
    code: u8,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted at step {}", self.step)
    }
}

impl std::error::Error for Interrupted {}

/// `Err(Interrupted)` when the run was stopped before its end.
///
/// # Errors
/// [`Interrupted`], carrying the exit status: 128 + the signal this process received, or
/// 143 when it stopped because another rank of its job did (mpirun forwards SIGTERM).
pub fn check(summary: &FitSummary) -> Result<()> {
    let Some(step) = summary.stopped_at else {
        return Ok(());
    };
    let sig = HANDLERS
        .get()
        .map(|h| h.signal.load(Ordering::SeqCst))
        .filter(|&s| s != 0)
        .unwrap_or(SIGTERM as usize);
    let code = u8::try_from(128 + sig).unwrap_or(u8::MAX);
    Err(Interrupted { step, code }.into())
}

/// The exit status of an [`Interrupted`] run, if `err` is one.
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Interrupted>())
        .map(|i| i.code)
}

/// The lines a stopped run prints on stderr: where its checkpoint is and the command that
/// resumes it (or, without a checkpoint, the command that starts it again).
pub fn report(step: u64, checkpoint: Option<&Path>, ranks: usize) -> [String; 2] {
    let args: Vec<OsString> = std::env::args_os().collect();
    match checkpoint {
        Some(p) => {
            let out = p.parent().unwrap_or(Path::new("."));
            [
                format!("interrupted at step {step}: checkpoint {}", p.display()),
                format!("resume with: {}", command(&resume_args(&args, out), ranks)),
            ]
        }
        None => [
            format!("interrupted at step {step}: no checkpoint yet, nothing to resume from"),
            format!("start again with: {}", command(&args, ranks)),
        ],
    }
}

/// This program's arguments with `--resume`, and `--out DIR` when the run folder was
/// left to its default.
fn resume_args(args: &[OsString], out: &Path) -> Vec<OsString> {
    let has = |flag: &str| {
        args.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        })
    };
    let mut v = args.to_vec();
    if !has("--out") {
        v.push("--out".into());
        v.push(out.as_os_str().to_owned());
    }
    if !has("--resume") {
        v.push("--resume".into());
    }
    v
}

/// A command line for a POSIX shell, under `mpirun -n P` for a job of several processes.
fn command(args: &[OsString], ranks: usize) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    let line = words.join(" ");
    if ranks > 1 {
        format!("mpirun -n {ranks} {line}")
    } else {
        line
    }
}

/// `s` as one shell word: as it is when it holds only safe characters, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_resume_command_adds_resume_and_the_default_folder() {
        let a = os(&["selfsup", "pretrain", "--steps", "9"]);
        assert_eq!(
            command(&resume_args(&a, Path::new("runs/pretrain")), 1),
            "selfsup pretrain --steps 9 --out runs/pretrain --resume"
        );
        let a = os(&["selfsup", "pretrain", "--out=r 1", "--resume"]);
        assert_eq!(
            command(&resume_args(&a, Path::new("r 1")), 2),
            "mpirun -n 2 selfsup pretrain '--out=r 1' --resume"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
