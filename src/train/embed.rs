//! The frozen image encoder: the representation `h` (eval-mode BatchNorm, before any head)
//! of any number of images in fixed-size batches, from a trainer's graph or a checkpoint;
//! and the copy of a graph's weights into another by tensor name.

use std::path::Path;

use crate::data::resize::eval_views;
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, Mode, TensorId};
use crate::io::checkpoint::{self, CheckpointError};
use crate::nn::{resnet_encoder, ResNetConfig};
use crate::rng::mix;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: "embed", msg }
}

/// The model configuration a checkpoint of an image run records (its header alone is read:
/// the tensors are read and checked when the encoder is loaded).
///
/// # Errors
/// [`Error::Run`] naming the file: unreadable, without a configuration, or malformed.
pub fn model_config(path: &Path) -> Result<ResNetConfig> {
    let meta = checkpoint::load_metadata(path).map_err(Error::from)?;
    let text = meta.get("config").ok_or_else(|| {
        Error::Run(format!(
            "{}: no model configuration in the metadata (not written by `selfsup pretrain`)",
            path.display()
        ))
    })?;
    serde_json::from_str(text).map_err(|e| {
        Error::Run(format!(
            "{}: the model configuration is malformed: {e}",
            path.display()
        ))
    })
}

/// The frozen encoder: `h` of any number of images, `batch` at a time, eval-mode BN.
pub struct Embedder {
    graph: Graph,
    input: TensorId,
    h: TensorId,
    batch: usize,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("batch", &self.batch)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// A randomly initialized encoder (the random-init baseline of the probe).
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(cfg: &ResNetConfig, batch: usize, seed: u64) -> Result<Self> {
        let mut b = GraphBuilder::new();
        let enc = resnet_encoder(&mut b, cfg, batch.max(1))?;
        // It only embeds: no training plan.
        b.eval_only();
        let graph = b.build(mix(seed, &[0]))?;
        Ok(Self {
            graph,
            input: enc.input,
            h: enc.h,
            batch: batch.max(1),
            dim: cfg.feature_dim(),
        })
    }

    /// The encoder of a trainer's current weights.
    ///
    /// # Errors
    /// As [`Embedder::new`].
    pub fn from_graph(cfg: &ResNetConfig, batch: usize, src: &Graph) -> Result<Self> {
        let mut e = Self::new(cfg, batch, 0)?;
        copy_by_name(src, &mut e.graph)?;
        Ok(e)
    }

    /// The encoder stored in a checkpoint (extra tensors, such as the head or the
    /// optimizer state, are ignored; every encoder tensor must be there with its shape).
    ///
    /// # Errors
    /// A checkpoint that is unreadable, corrupt or of another encoder architecture.
    pub fn from_checkpoint(
        cfg: &ResNetConfig,
        batch: usize,
        path: impl AsRef<Path>,
    ) -> std::result::Result<Self, CheckpointError> {
        let path = path.as_ref();
        let bad = |reason: String| CheckpointError::InvalidArgument {
            path: path.to_path_buf(),
            reason,
        };
        let mut e = Self::new(cfg, batch, 0).map_err(|err| bad(err.to_string()))?;
        let ck = checkpoint::load(path)?;
        let g = &mut e.graph;
        let params: Vec<_> = g.param_info().to_vec();
        for p in &params {
            ck.copy_into(&p.name, &p.shape, &mut g.params_mut()[p.range.clone()])?;
        }
        let buffers: Vec<_> = g.buffer_info().to_vec();
        for b in &buffers {
            ck.copy_into(&b.name, &b.shape, &mut g.buffers_mut()[b.range.clone()])?;
        }
        Ok(e)
    }

    /// The width of `h`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The side of the square inputs the encoder takes.
    pub fn image_size(&self) -> usize {
        self.graph.shape(self.input)[2]
    }

    /// `h` of the images `indices` of `set` into `out` (`indices.len() x dim`), in batches:
    /// each image's evaluation view at the encoder's size ([`eval_views`]: the shorter side
    /// resized, the central square; an exact copy of an image of that size).
    ///
    /// # Errors
    /// Images of another channel count than the encoder's, a wrong `out` length, an index
    /// out of range.
    pub fn embed(&mut self, set: &ImageSet, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let want = self.graph.shape(self.input).to_vec();
        if set.channels != want[1] {
            return Err(invalid(format!(
                "the images have {} channels, the encoder takes {}",
                set.channels, want[1]
            )));
        }
        if out.len() != indices.len() * self.dim {
            return Err(Error::InvalidArgument {
                op: "embed",
                msg: format!(
                    "output of {} values for {} images",
                    out.len(),
                    indices.len()
                ),
            });
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= set.n) {
            return Err(invalid(format!("image {i} of a set of {}", set.n)));
        }
        let len = want[1] * want[2] * want[3];
        for (chunk, o) in indices
            .chunks(self.batch)
            .zip(out.chunks_mut(self.batch * self.dim))
        {
            let x = self.graph.input_mut(self.input)?;
            eval_views(set, chunk, want[2], &mut x[..chunk.len() * len]);
            // A short last batch: the unused rows are zero and their outputs dropped.
            x[chunk.len() * len..].fill(0.0);
            self.graph.forward_to(self.h, Mode::Eval)?;
            o.copy_from_slice(&self.graph.value(self.h)[..chunk.len() * self.dim]);
        }
        Ok(())
    }

    /// `h` of every image of `set`, `n x dim`.
    ///
    /// # Errors
    /// As [`Embedder::embed`].
    pub fn embed_all(&mut self, set: &ImageSet) -> Result<Vec<f32>> {
        let idx: Vec<usize> = (0..set.n).collect();
        let mut out = vec![0.0; set.n * self.dim];
        self.embed(set, &idx, &mut out)?;
        Ok(out)
    }
}

/// Copies every parameter and buffer of `dst` from the tensor of the same name in `src`.
pub(crate) fn copy_by_name(src: &Graph, dst: &mut Graph) -> Result<()> {
    type Entry = (String, Vec<usize>, std::ops::Range<usize>);
    let params = |g: &Graph| -> Vec<Entry> {
        g.param_info()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone(), p.range.clone()))
            .collect()
    };
    let buffers = |g: &Graph| -> Vec<Entry> {
        g.buffer_info()
            .iter()
            .map(|b| (b.name.clone(), b.shape.clone(), b.range.clone()))
            .collect()
    };
    let copy = |want: Vec<Entry>, have: Vec<Entry>, from: &[f32], to: &mut [f32]| {
        for (name, shape, range) in want {
            let (_, _, r) = have
                .iter()
                .find(|(n, s, _)| *n == name && *s == shape)
                .ok_or_else(|| invalid(format!("the source model has no tensor '{name}'")))?;
            to[range].copy_from_slice(&from[r.clone()]);
        }
        Ok::<(), Error>(())
    };
    copy(params(dst), params(src), src.params(), dst.params_mut())?;
    copy(buffers(dst), buffers(src), src.buffers(), dst.buffers_mut())
}
