//! `selfsup embed`: the representation h of a dataset's images as a NumPy `.npy` file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use selfsup::io::checkpoint;
use selfsup::text::read_text;
use selfsup::train::embed::{model_config, Embedder};
use selfsup::train::text::{is_text_checkpoint, TextModel};

use super::data::{load_splits, parse_image_size};
use super::probe::resolve_checkpoint;
use super::threads::set_threads;

const EXAMPLES: &str = "\
Examples:
  selfsup embed --checkpoint runs/simclr/ckpt-2000.safetensors --data builtin --out emb.npy
  selfsup embed --checkpoint runs/c10/ckpt-5000.safetensors --data cifar10:~/cifar --split test --out test.npy

The file holds one row of the encoder's features (h, before the projection head) per
image, in the dataset's order: numpy.load('emb.npy').shape == (images, features).

  selfsup embed --checkpoint runs/qt/ckpt-3000.safetensors --sentences lines.txt --out sent.npy

For a Quick Thoughts checkpoint, one row per line of the file: the concatenated outputs
of the two sentence encoders, [f(s); g(s)] (the paper's sentence representation).";

/// Which split to embed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The training split
    Train,
    /// The test split
    Test,
}

/// Options of `selfsup embed`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct EmbedArgs {
    /// A checkpoint written by `selfsup pretrain`, or its run folder (its newest checkpoint)
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// The data (see `selfsup pretrain --help`)
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "builtin",
        conflicts_with = "sentences"
    )]
    pub data: String,

    /// Quick Thoughts checkpoints: a UTF-8 file of sentences, one per line; the output has
    /// one row [f(s); g(s)] per line (a blank line is an empty sentence)
    #[arg(long, value_name = "FILE")]
    pub sentences: Option<PathBuf>,

    /// The side images are shown to the encoder at, in pixels [default: the size it was
    /// trained at]
    #[arg(long, value_name = "S", value_parser = parse_image_size, allow_negative_numbers = true, conflicts_with = "sentences")]
    pub image_size: Option<usize>,

    /// The split to embed
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    pub split: SplitArg,

    /// The output file (.npy, float32, images x features)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Images per forward pass
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
}

/// Writes the `items.len() x d` float32 features of `items` to the NumPy file `out`,
/// atomically and streamed: `fill` puts the rows of `chunk` items at a time into the buffer
/// it is given, and they are written before the next chunk. An error of `fill` stops the
/// write (no partial file is left) and is returned as it is.
fn write_npy_streamed<T>(
    out: &Path,
    items: &[T],
    d: usize,
    chunk: usize,
    mut fill: impl FnMut(&[T], &mut Vec<f32>) -> selfsup::Result<()>,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut failure = None;
    checkpoint::write_atomically(out, |w| {
        w.write_all(&selfsup::io::npy::header(&[items.len(), d]))?;
        for c in items.chunks(chunk.max(1)) {
            if let Err(e) = fill(c, &mut rows) {
                failure = Some(e);
                return Err(std::io::Error::other("embedding failed"));
            }
            selfsup::io::npy::write_f32(w, &rows)?;
        }
        Ok(())
    })
    .map_err(|e| match failure.take() {
        Some(f) => anyhow::Error::from(f),
        None => anyhow::Error::from(e),
    })
}

/// Runs `selfsup embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    set_threads(args.threads);
    let checkpoint = &resolve_checkpoint(&args.checkpoint)?;
    let text = is_text_checkpoint(checkpoint)?;
    match (&args.sentences, text) {
        (Some(input), true) => {
            return embed_sentences_file(checkpoint, input, &args.out, args.batch as usize)
        }
        (Some(_), false) => anyhow::bail!(
            "{} is an image encoder's checkpoint: --sentences needs a Quick Thoughts checkpoint",
            checkpoint.display()
        ),
        (None, true) => anyhow::bail!(
            "{} is a Quick Thoughts checkpoint: pass --sentences FILE (one sentence per line)",
            checkpoint.display()
        ),
        (None, false) => {}
    }
    let mut model = model_config(checkpoint)?;
    model.image_size = args.image_size.unwrap_or(model.image_size);
    let (splits, _) = load_splits(&args.data, Some(model.image_size))?;
    let set = match args.split {
        SplitArg::Train => &*splits.train,
        SplitArg::Test => splits
            .test
            .as_ref()
            .with_context(|| format!("{} has no test split", args.data))?,
    };
    let batch = args.batch as usize;
    let mut emb = Embedder::from_checkpoint(&model, batch, checkpoint)?;
    let d = emb.dim();
    let idx: Vec<usize> = (0..set.n).collect();
    write_npy_streamed(&args.out, &idx, d, batch, |chunk, rows| {
        rows.resize(chunk.len() * d, 0.0);
        emb.embed(set, chunk, rows)
    })?;
    eprintln!(
        "{}: {} x {d} features of {} ({:?} split)",
        args.out.display(),
        set.n,
        args.data,
        args.split
    );
    Ok(())
}

/// Lines per chunk of `embed --sentences` (the features of one chunk are held at once).
const EMBED_CHUNK: usize = 4096;

/// The lines of a sentence file (`selfsup embed --sentences`): one sentence per line, a
/// blank line an empty sentence (so rows match lines).
pub fn read_sentence_lines(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

/// `selfsup embed --sentences`: `[f(s); g(s)]` of each line of `input` into `out` (.npy,
/// `lines x 2*features`), written atomically.
pub fn embed_sentences_file(
    checkpoint: &Path,
    input: &Path,
    out: &Path,
    batch: usize,
) -> Result<()> {
    let mut model = TextModel::open(checkpoint, batch)?;
    let sentences = read_sentence_lines(input)?;
    if sentences.is_empty() {
        bail!("{}: no lines to embed", input.display());
    }
    let d = model.embedder.dim();
    write_npy_streamed(out, &sentences, d, EMBED_CHUNK, |chunk, rows| {
        *rows = model.embedder.embed_sentences(&model.vocab, chunk)?;
        Ok(())
    })?;
    eprintln!(
        "{}: {} x {d} sentence representations of {}",
        out.display(),
        sentences.len(),
        input.display()
    );
    Ok(())
}
