//! The command line of the `selfsup` program (binary only: the library never prints or exits).
//!
//! Subcommands: `pretrain`, `probe`, `embed`, `export`, `neighbors`, `preview`, `bench`, and `demo`
//! (the default run: what `selfsup` without arguments does), each one module handling both
//! images and text; the helpers they share (`data`, `group`, `interrupt`, `progress`,
//! `threads`) are modules of their own, never a sibling subcommand.

pub mod bench;
mod data;
mod default_run;
mod embed;
mod export;
pub mod group;
pub mod interrupt;
mod memory;
mod neighbors;
mod pretrain;
mod preview;
mod probe;
mod progress;
mod threads;
pub(crate) mod values;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Self-supervised representation learning on CPUs, with hand-written SIMD kernels.
#[derive(Debug, Parser)]
#[command(
    name = "selfsup",
    version,
    propagate_version = true,
    after_help = "Without a command, `selfsup` runs `selfsup demo`: SimCLR and RotNet on the \
                  built-in dataset for a few minutes, then the linear-probe table."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Learn an encoder without labels (SimCLR, RotNet or Quick Thoughts) into a run folder
    Pretrain(pretrain::PretrainArgs),
    /// Linear probe of a checkpoint's frozen features, beside raw pixels and random init
    Probe(probe::ProbeArgs),
    /// Write a checkpoint's features of a dataset (or of sentences) to a NumPy .npy file
    Embed(embed::EmbedArgs),
    /// Write a checkpoint's frozen image encoder as an ONNX model file
    Export(export::ExportArgs),
    /// The corpus sentences nearest to given sentences (Quick Thoughts checkpoints)
    Neighbors(neighbors::NeighborsArgs),
    /// A PNG grid of images and their augmented views
    Preview(preview::PreviewArgs),
    /// The default run: SimCLR and RotNet on the built-in data, then the probe table
    Demo(default_run::DemoArgs),
    /// Time the canonical workloads (docs/performance.md): table, JSON, regression check
    Bench(bench::BenchArgs),
}

/// How a successful run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// `bench --baseline` found a workload slower than allowed (exit status 1).
    Regression,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Status> {
    // `selfsup` without arguments (what `cargo run --release` runs) is the default run.
    let command = match cli.command {
        Some(c) => c,
        None => Command::Demo(default_demo_args()),
    };
    let ok = |r: Result<()>| r.map(|()| Status::Success);
    match command {
        Command::Pretrain(args) => ok(pretrain::run(&args)),
        Command::Probe(args) => ok(probe::run(&args)),
        Command::Embed(args) => ok(embed::run(&args)),
        Command::Export(args) => ok(export::run(&args)),
        Command::Neighbors(args) => ok(neighbors::run(&args)),
        Command::Preview(args) => ok(preview::run(&args)),
        Command::Demo(args) => ok(default_run::run(&args)),
        Command::Bench(args) => bench::run(&args),
    }
}

/// `selfsup demo` with every option at its default (the defaults live in one place: clap).
fn default_demo_args() -> default_run::DemoArgs {
    match Cli::parse_from(["selfsup", "demo"]).command {
        Some(Command::Demo(args)) => args,
        _ => unreachable!("`selfsup demo` parses to the demo command"),
    }
}

/// A clap usage error on one line: the `error: ...` line and its tips, without the usage
/// block and the `--help` hint. Plain text (no colours).
pub fn one_line_usage_error(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let mut line = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Tips are separate sentences; other continuation lines complete the first one.
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_means_the_default_run() {
        let args = default_demo_args();
        assert!(args.simclr_minutes + args.rotnet_minutes <= 4.0);
        assert_eq!(args.out, std::path::PathBuf::from("runs/default"));
    }

    fn usage_error(args: &[&str]) -> String {
        one_line_usage_error(&Cli::try_parse_from(args).unwrap_err())
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        for args in [
            &["selfsup", "bench", "--threads", "0"][..],
            &["selfsup", "bench", "--reps", "0"],
            &["selfsup", "bench", "--jsn", "x"],
            &[
                "selfsup",
                "bench",
                "--baseline",
                "a.json",
                "--tolerance",
                "1.5",
            ],
            &["selfsup", "bench", "--tolerance", "0.2"],
            &["selfsup", "bench", "--reference", "blas"],
            &["selfsup", "frobnicate"],
        ] {
            let e = usage_error(args);
            assert!(e.starts_with("error: "), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
        assert!(usage_error(&["selfsup", "bench", "--threads", "0"]).contains("--threads"));
        assert!(usage_error(&["selfsup", "bench", "--jsn", "x"]).contains("'--json'"));
    }
}
