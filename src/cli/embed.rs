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
image, in the dataset's order: numpy.load('emb.npy').shape == (images, features); emb.ids.tsv
beside it names each row (row, source file or split:index, label). --format csv writes one
table instead: row,source,label,f0,f1,...

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

/// The output format of `selfsup embed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A .npy array and a .ids.tsv beside it
    Npy,
    /// One CSV table: ids, then features
    Csv,
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

    /// The output file: .npy (float32, rows x features) with the rows' ids in a
    /// `.ids.tsv` beside it (emb.npy -> emb.ids.tsv), or one CSV with --format csv
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// npy: the features as a NumPy array and the ids in `<name>.ids.tsv`; csv: one table,
    /// the ids then the features on each row
    #[arg(long, value_enum, default_value_t = FormatArg::Npy)]
    pub format: FormatArg,

    /// Images per forward pass
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,

    /// Worker threads for the kernels [default: the number of logical CPUs]
    #[arg(long, value_name = "T", value_parser = super::values::at_least_one::<u64>)]
    pub threads: Option<u64>,
}

/// Where and how the rows go: the format, the output file, and the id columns (their names
/// and, per row, their values).
struct Output<'a> {
    format: FormatArg,
    out: &'a Path,
    id_names: &'a [&'a str],
    ids: Vec<Vec<String>>,
}

/// The file of the row ids beside an `.npy` output: `emb.npy` -> `emb.ids.tsv`.
pub fn ids_path(out: &Path) -> PathBuf {
    out.with_extension("ids.tsv")
}

/// A CSV cell: quoted (quotes doubled) when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A TSV cell: tabs and line breaks become spaces.
fn tsv_cell(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

impl Output<'_> {
    /// Writes the `items.len() x d` float32 features of `items`, atomically and streamed:
    /// `fill` puts the rows of `chunk` items at a time into the buffer it is given, and they
    /// are written before the next chunk. An error of `fill` stops the write (no partial
    /// file is left) and is returned as it is. For npy, the ids go to [`ids_path`] after the
    /// array is in place.
    fn write<T>(
        &self,
        items: &[T],
        d: usize,
        chunk: usize,
        mut fill: impl FnMut(&[T], &mut Vec<f32>) -> selfsup::Result<()>,
    ) -> Result<()> {
        let mut rows = Vec::new();
        let mut failure = None;
        let mut done = 0usize;
        checkpoint::write_atomically(self.out, |w| {
            match self.format {
                FormatArg::Npy => w.write_all(&selfsup::io::npy::header(&[items.len(), d]))?,
                FormatArg::Csv => {
                    let mut head: Vec<String> =
                        self.id_names.iter().map(|n| n.to_string()).collect();
                    head.extend((0..d).map(|k| format!("f{k}")));
                    writeln!(w, "{}", head.join(","))?;
                }
            }
            for c in items.chunks(chunk.max(1)) {
                if let Err(e) = fill(c, &mut rows) {
                    failure = Some(e);
                    return Err(std::io::Error::other("embedding failed"));
                }
                match self.format {
                    FormatArg::Npy => selfsup::io::npy::write_f32(w, &rows)?,
                    FormatArg::Csv => {
                        for row in rows.chunks(d.max(1)) {
                            let mut cells: Vec<String> =
                                self.ids[done].iter().map(|c| csv_cell(c)).collect();
                            cells.extend(row.iter().map(|v| v.to_string()));
                            writeln!(w, "{}", cells.join(","))?;
                            done += 1;
                        }
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| match failure.take() {
            Some(f) => anyhow::Error::from(f),
            None => anyhow::Error::from(e),
        })?;
        if self.format == FormatArg::Npy {
            let tsv = ids_path(self.out);
            checkpoint::write_atomically(&tsv, |w| {
                writeln!(w, "{}", self.id_names.join("\t"))?;
                for r in &self.ids {
                    let cells: Vec<String> = r.iter().map(|c| tsv_cell(c)).collect();
                    writeln!(w, "{}", cells.join("\t"))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// What was written, for the closing line.
    fn files(&self) -> String {
        match self.format {
            FormatArg::Npy => format!(
                "{} (ids: {})",
                self.out.display(),
                ids_path(self.out).display()
            ),
            FormatArg::Csv => self.out.display().to_string(),
        }
    }
}

/// Runs `selfsup embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    set_threads(args.threads);
    let checkpoint = &resolve_checkpoint(&args.checkpoint)?;
    let text = is_text_checkpoint(checkpoint)?;
    match (&args.sentences, text) {
        (Some(input), true) => {
            return embed_sentences_file(
                checkpoint,
                input,
                &args.out,
                args.format,
                args.batch as usize,
            )
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
    // Each row's source (its file, else its index in the split) and label (its class name
    // when the data names its classes).
    let (split_name, files) = match args.split {
        SplitArg::Train => ("train", splits.train_files.as_ref()),
        SplitArg::Test => ("test", splits.test_files.as_ref()),
    };
    let labels = match args.split {
        SplitArg::Train => splits.train_labels.as_deref(),
        SplitArg::Test => set.labels.as_deref(),
    };
    let ids = idx
        .iter()
        .map(|&i| {
            let source = files.map_or_else(
                || format!("{split_name}:{i}"),
                |f| f[i].display().to_string(),
            );
            let label = labels.map_or(String::new(), |l| {
                let c = l[i] as usize;
                splits
                    .class_names
                    .as_ref()
                    .and_then(|n| n.get(c).cloned())
                    .unwrap_or_else(|| c.to_string())
            });
            vec![i.to_string(), source, label]
        })
        .collect();
    let output = Output {
        format: args.format,
        out: &args.out,
        id_names: &["row", "source", "label"],
        ids,
    };
    output.write(&idx, d, batch, |chunk, rows| {
        rows.resize(chunk.len() * d, 0.0);
        emb.embed(set, chunk, rows)
    })?;
    eprintln!(
        "{}: {} x {d} features of {} ({:?} split)",
        output.files(),
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
    format: FormatArg,
    batch: usize,
) -> Result<()> {
    let mut model = TextModel::open(checkpoint, batch)?;
    let sentences = read_sentence_lines(input)?;
    if sentences.is_empty() {
        bail!("{}: no lines to embed", input.display());
    }
    let d = model.embedder.dim();
    let output = Output {
        format,
        out,
        id_names: &["row", "sentence"],
        ids: sentences
            .iter()
            .enumerate()
            .map(|(i, s)| vec![i.to_string(), s.clone()])
            .collect(),
    };
    output.write(&sentences, d, EMBED_CHUNK, |chunk, rows| {
        *rows = model.embedder.embed_sentences(&model.vocab, chunk)?;
        Ok(())
    })?;
    eprintln!(
        "{}: {} x {d} sentence representations of {}",
        output.files(),
        sentences.len(),
        input.display()
    );
    Ok(())
}
