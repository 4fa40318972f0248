//! `selfsup neighbors`: the sentences of a corpus nearest to given sentences, by the cosine
//! of a Quick Thoughts checkpoint's representations.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

const EXAMPLES: &str = "\
Examples:
  selfsup neighbors --checkpoint runs/qt/ckpt-3000.safetensors \"The soup needed more salt.\"
  selfsup neighbors --checkpoint runs/qt/ckpt-3000.safetensors --data text:notes/ -k 10 \"first\" \"second\"

The corpus is the checkpoint's training data (its --data, recorded in the checkpoint)
unless --data says otherwise; each distinct sentence is a candidate once. The score is
the cosine of the representations [f(s); g(s)].";

/// Options of `selfsup neighbors`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct NeighborsArgs {
    /// A checkpoint written by `selfsup pretrain --method quickthought`
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// The corpus to search: builtin or text:PATH [default: the checkpoint's training data]
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,

    /// How many neighbours to print per sentence
    #[arg(short, long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub k: u64,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,

    /// The sentences to look up
    #[arg(value_name = "SENTENCE", required = true)]
    pub sentences: Vec<String>,
}

/// Runs `selfsup neighbors`.
pub fn run(args: &NeighborsArgs) -> Result<()> {
    super::pretrain::set_threads(args.threads);
    super::text::neighbors(
        &args.checkpoint,
        args.data.as_deref(),
        &args.sentences,
        args.k as usize,
    )
}
