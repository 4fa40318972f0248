//! `selfsup export`: a checkpoint's frozen image encoder as an ONNX model file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use selfsup::io::checkpoint;
use selfsup::io::onnx::encoder::encoder_from_checkpoint;
use selfsup::io::onnx::OPSET_VERSION;
use selfsup::train::embed::model_config;
use selfsup::train::text::is_text_checkpoint;

use super::probe::resolve_checkpoint;

const EXAMPLES: &str = "\
Examples:
  selfsup export --checkpoint runs/simclr --format onnx --out encoder.onnx
  selfsup export --checkpoint runs/simclr/ckpt-2000.safetensors --out encoder.onnx

The model takes `input`, float32 [batch, channels, S, S] (NCHW, pixels scaled to [0, 1],
S the size the encoder was trained at) and gives `h`, float32 [batch, features]: the
features `selfsup embed` writes. BatchNorm is folded into the convolutions (eval mode).
In Python:

  import onnxruntime as ort
  h = ort.InferenceSession('encoder.onnx').run(None, {'input': x})[0]";

/// The model file format of `selfsup export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// ONNX (IR version 7, opset 13)
    Onnx,
}

/// Options of `selfsup export`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ExportArgs {
    /// A checkpoint of an image encoder written by `selfsup pretrain`, or its run folder
    /// (its newest checkpoint)
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// The model file format
    #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
    pub format: ExportFormat,

    /// The model file to write (replaced atomically)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// A size in bytes for people: `812 B`, `45.2 KiB`, `1.3 MiB`.
fn human_bytes(n: usize) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Runs `selfsup export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let ckpt = &resolve_checkpoint(&args.checkpoint)?;
    if is_text_checkpoint(ckpt)? {
        bail!(
            "{}: a Quick Thoughts (sentence encoder) checkpoint: export supports image \
             encoders only for now",
            ckpt.display()
        );
    }
    let cfg = model_config(ckpt)?;
    let graph = match args.format {
        ExportFormat::Onnx => encoder_from_checkpoint(&cfg, ckpt)?,
    };
    let bytes = graph.to_model_bytes();
    checkpoint::write_atomically(&args.out, |w| w.write_all(&bytes))?;
    let shapes = |v: &[selfsup::io::onnx::ValueInfo]| {
        v.iter()
            .map(|v| format!("'{}' float32 {}", v.name, v.shape_text()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "{}: ONNX opset {OPSET_VERSION}, input {} (pixels in [0, 1]) -> output {}; {} weights \
         (BatchNorm folded), {} (from {})",
        args.out.display(),
        shapes(&graph.inputs),
        shapes(&graph.outputs),
        graph.parameter_count(),
        human_bytes(bytes.len()),
        ckpt.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_the_largest_fitting_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1_048_576 / 2), "1.5 MiB");
    }
}
