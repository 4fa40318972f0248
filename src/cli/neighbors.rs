//! `selfsup neighbors`: the sentences of a corpus nearest to given sentences, by the cosine
//! of a Quick Thoughts checkpoint's representations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use selfsup::train::text::TextModel;

use super::data::load_text;
use super::probe::resolve_checkpoint;
use super::threads::set_threads;

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
    /// A checkpoint written by `selfsup pretrain --method quickthought`, or its run folder
    /// (its newest checkpoint)
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// The corpus to search: builtin or text:PATH [default: the checkpoint's training data]
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,

    /// How many neighbours to print per sentence
    #[arg(short, long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub k: u64,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = super::values::at_least_one::<u64>)]
    pub threads: Option<u64>,

    /// The sentences to look up
    #[arg(value_name = "SENTENCE", required = true)]
    pub sentences: Vec<String>,
}

/// Runs `selfsup neighbors`.
pub fn run(args: &NeighborsArgs) -> Result<()> {
    set_threads(args.threads);
    neighbors(
        &resolve_checkpoint(&args.checkpoint)?,
        args.data.as_deref(),
        &args.sentences,
        args.k as usize,
    )
}

/// Scales each `d`-wide row of `x` to unit length (zero rows stay zero).
fn normalize_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if n > 0.0 {
            let s = (1.0 / n) as f32;
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// `selfsup neighbors`: the `k` sentences of the corpus nearest (by cosine of `[f; g]`) to
/// each query.
pub fn neighbors(
    checkpoint: &Path,
    data: Option<&str>,
    queries: &[String],
    k: usize,
) -> Result<()> {
    let mut model = TextModel::open(checkpoint, 256)?;
    let spec = match (data, model.data.as_deref()) {
        (Some(d), _) => d.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => bail!(
            "{}: the checkpoint does not say its data; pass --data",
            checkpoint.display()
        ),
    };
    let text = load_text(&spec)?;
    let mut corpus: Vec<String> = text
        .train
        .into_iter()
        .chain(text.held_out)
        .flatten()
        .collect();
    corpus.sort();
    corpus.dedup();
    let d = model.embedder.dim();
    let t0 = Instant::now();
    let mut bank = model.embedder.embed_sentences(&model.vocab, &corpus)?;
    normalize_rows(&mut bank, d);
    let mut q = model.embedder.embed_sentences(&model.vocab, queries)?;
    normalize_rows(&mut q, d);
    eprintln!(
        "{} distinct sentences of {spec} embedded in {:.1} s",
        corpus.len(),
        t0.elapsed().as_secs_f64()
    );
    for (query, qv) in queries.iter().zip(q.chunks(d)) {
        let mut scored: Vec<(f32, usize)> = bank
            .chunks(d)
            .enumerate()
            .map(|(i, b)| (b.iter().zip(qv).map(|(x, y)| x * y).sum::<f32>(), i))
            .collect();
        let k = k.min(scored.len());
        // Highest cosine first; ties by corpus order (deterministic).
        scored.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        });
        scored.truncate(k);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        println!("{query}");
        for (rank, (cos, i)) in scored.iter().enumerate() {
            println!("  {:>2}. {cos:.3}  {}", rank + 1, corpus[*i]);
        }
    }
    Ok(())
}
