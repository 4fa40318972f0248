//! The `selfsup` command-line program. All printing and exiting lives here and in
//! [`cli`]; the library only returns values and errors.
//!
//! Exit status: 0 on success, 1 when `bench --baseline` finds a regression, 2 on any error,
//! 130 or 143 when Ctrl-C or SIGTERM stopped `pretrain` (after its checkpoint).
//! Errors are one line on stderr, `error: ...` followed by their causes, never a panic.
#![warn(clippy::undocumented_unsafe_blocks)]

mod cli;

use std::process::ExitCode;

use cli::bench::peak_alloc::PeakAlloc;

use clap::error::ErrorKind;
use clap::Parser;

/// The system allocator with a live-bytes counter and a high-water mark, read by the memory
/// probes of `selfsup bench` (`ntxent_n16384_d128`).
#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc::new();

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            return match err.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    // Help and version go to stdout; a closed pipe is not worth reporting.
                    let _ = err.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("{}", cli::one_line_usage_error(&err));
                    ExitCode::from(2)
                }
            };
        }
    };
    let code = match cli::run(args) {
        Ok(cli::Status::Success) => ExitCode::SUCCESS,
        Ok(cli::Status::Regression) => ExitCode::from(1),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(code) = cli::interrupt::exit_code(&err) {
                // A signal stopped the run after its checkpoint, and the progress observer
                // said so; every rank stopped at the same step, so all end MPI normally.
                cli::group::end(true);
                return ExitCode::from(code);
            }
            // `{:#}` joins the cause chain with ": "; keep it to one line whatever the causes say.
            let msg = format!("{err:#}").replace(['\n', '\r'], " ");
            eprintln!("error: {msg}");
            // In a job of several processes, the others may wait in a collective: end them
            // (unless every rank found this error at the same point: then all finalize).
            cli::group::end(all_ranks_failed(&err));
            return ExitCode::from(2);
        }
    };
    cli::group::end(true);
    code
}

/// Whether every rank of a data-parallel job stops with this error at the same point (ranks
/// started differently), so that ending MPI normally cannot leave one waiting.
fn all_ranks_failed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<selfsup::Error>(),
            Some(selfsup::Error::RanksDiffer { .. })
        )
    })
}

/// True when the output was closed under us (`selfsup bench --list | head -1`): like other
/// command-line tools, stop quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
