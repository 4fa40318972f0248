//! Training state on disk: a graph's parameters and BatchNorm statistics and its optimizer's
//! state in one checkpoint file ([`crate::io::checkpoint`], safetensors, written atomically), and
//! the way back.
//!
//! Tensor names are the graph's parameter and buffer names (`stem.0.weight`,
//! `l1.b1.running_mean`, ...) and the optimizer's state names (`sgd.momentum_buffer`,
//! `adamw.exp_avg`, ...; each a flat arena of shape `[len]`). The metadata holds the
//! optimizer's kind and step counter beside whatever the caller adds (the model
//! configuration as JSON, the training step, the seed).
//!
//! Loading checks the whole file against the model before anything is copied: a checkpoint
//! of another architecture (a missing or extra tensor, a different shape) or of another
//! optimizer is an error naming the file and the tensor, and the model is left untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::graph::Graph;
use crate::io::checkpoint::{self, CheckpointError, TensorView};
use crate::optim::Optimizer;

/// A checkpoint's string metadata.
pub type Metadata = BTreeMap<String, String>;

/// Metadata key of the optimizer's kind (`sgd`, `lars`, `adamw`).
pub const OPTIMIZER_KEY: &str = "optimizer";
/// Metadata key of the optimizer's step counter.
pub const OPTIMIZER_STEPS_KEY: &str = "optimizer_steps";

/// The model's tensors: parameters, then buffers.
fn model_views(graph: &Graph) -> Vec<TensorView<'_>> {
    let mut v = Vec::new();
    for p in graph.param_info() {
        v.push(TensorView::new(
            &p.name,
            &p.shape,
            &graph.params()[p.range.clone()],
        ));
    }
    for b in graph.buffer_info() {
        v.push(TensorView::new(
            &b.name,
            &b.shape,
            &graph.buffers()[b.range.clone()],
        ));
    }
    v
}

/// Calls `write` with every tensor to store (the model's, then the optimizer's state as
/// flat `[len]` tensors) and the metadata plus the optimizer's kind and step counter: the
/// one place [`save`] and [`save_in`] build a checkpoint's contents.
fn with_contents<R>(
    graph: &Graph,
    optimizer: Option<&Optimizer>,
    metadata: &BTreeMap<String, String>,
    write: impl FnOnce(&[TensorView<'_>], &BTreeMap<String, String>) -> R,
) -> R {
    let mut meta = metadata.clone();
    let state: Vec<(String, [usize; 1], &[f32])> = match optimizer {
        Some(opt) => {
            meta.insert(OPTIMIZER_KEY.into(), opt.kind().into());
            meta.insert(OPTIMIZER_STEPS_KEY.into(), opt.steps().to_string());
            opt.state_tensors()
                .into_iter()
                .map(|(name, data)| (name, [data.len()], data))
                .collect()
        }
        None => Vec::new(),
    };
    let mut all = model_views(graph);
    all.extend(
        state
            .iter()
            .map(|(n, s, d)| TensorView::new(n.as_str(), s.as_slice(), d)),
    );
    write(&all, &meta)
}

/// Writes the model (and the optimizer's state, if given) to `path`, atomically.
/// `metadata` is stored as given, plus the optimizer's kind and step counter.
///
/// # Errors
/// A [`CheckpointError`]: the operating system's (a missing directory, a full disk), or a
/// non-finite parameter (the previous checkpoint then stays in place).
pub fn save(
    path: impl AsRef<Path>,
    graph: &Graph,
    optimizer: Option<&Optimizer>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    with_contents(graph, optimizer, metadata, |tensors, meta| {
        checkpoint::save(path, tensors, meta)
    })
}

/// [`save`] into a run directory as `ckpt-<step>.safetensors`, keeping the newest
/// `keep_last` checkpoints. Returns the file's path.
///
/// # Errors
/// As [`save`].
pub fn save_in(
    dir: impl AsRef<Path>,
    step: u64,
    graph: &Graph,
    optimizer: Option<&Optimizer>,
    metadata: &BTreeMap<String, String>,
    keep_last: usize,
) -> Result<PathBuf, CheckpointError> {
    with_contents(graph, optimizer, metadata, |tensors, meta| {
        checkpoint::save_in(dir, step, tensors, meta, keep_last)
    })
}

/// Loads `path` into the model (and the optimizer, if given) and returns the checkpoint's
/// metadata. The whole file is checked against the model first; on any error nothing is
/// changed.
///
/// With `optimizer` = `None` the file's optimizer state, if any, is ignored (for
/// evaluation); with an optimizer, the file must hold that optimizer's state.
///
/// # Errors
/// A [`CheckpointError`] naming the file: unreadable or corrupt, a tensor missing, extra or
/// of another shape (another architecture), another optimizer's state.
pub fn load(
    path: impl AsRef<Path>,
    graph: &mut Graph,
    optimizer: Option<&mut Optimizer>,
) -> Result<BTreeMap<String, String>, CheckpointError> {
    let path = path.as_ref();
    let ck = checkpoint::load(path)?;
    let bad = |reason: String| CheckpointError::InvalidArgument {
        path: path.to_path_buf(),
        reason,
    };
    // The model's tensors, plus the optimizer's when one is restored.
    let mut expected: Vec<(String, Vec<usize>)> = graph
        .param_info()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .chain(
            graph
                .buffer_info()
                .iter()
                .map(|b| (b.name.clone(), b.shape.clone())),
        )
        .collect();
    let model_len = expected.len();
    let saved_kind = ck.metadata().get(OPTIMIZER_KEY).cloned();
    let mut steps = 0u64;
    if let Some(opt) = optimizer.as_deref() {
        match &saved_kind {
            Some(k) if k == opt.kind() => {}
            Some(k) => {
                return Err(bad(format!(
                    "holds the state of optimizer '{k}', the run uses '{}'",
                    opt.kind()
                )))
            }
            None => {
                return Err(bad(format!(
                    "holds no optimizer state, the run uses '{}' (a model-only checkpoint \
                     can start a new run, not resume one)",
                    opt.kind()
                )))
            }
        }
        steps = ck.meta_parse(OPTIMIZER_STEPS_KEY)?;
        for (name, data) in opt.state_tensors() {
            expected.push((name, vec![data.len()]));
        }
    } else if saved_kind.is_some() {
        // Evaluation: the optimizer's tensors may be present and are not needed.
        let names: Vec<&str> = ck
            .tensors()
            .keys()
            .map(String::as_str)
            .filter(|n| !expected.iter().any(|(e, _)| e == n))
            .collect();
        for n in names {
            if let Some(t) = ck.tensor(n) {
                expected.push((n.to_string(), t.shape.clone()));
            }
        }
    }
    ck.check_layout(expected.iter().map(|(n, s)| (n.as_str(), s.as_slice())))?;
    // Everything fits: copy.
    for (name, shape) in &expected[..model_len] {
        if let Some(p) = graph.param_info().iter().find(|p| &p.name == name) {
            let r = p.range.clone();
            ck.copy_into(name, shape, &mut graph.params_mut()[r])?;
        } else if let Some(b) = graph.buffer_info().iter().find(|b| &b.name == name) {
            let r = b.range.clone();
            ck.copy_into(name, shape, &mut graph.buffers_mut()[r])?;
        }
    }
    if let Some(opt) = optimizer {
        let state: Vec<(String, Vec<f32>)> = opt
            .state_tensors()
            .into_iter()
            .map(|(n, _)| {
                let data = ck.tensor(&n).map(|t| t.data.clone()).unwrap_or_default();
                (n, data)
            })
            .collect();
        opt.load_state_tensors(steps, state.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(ck.into_parts().0)
}

/// Loads the newest `ckpt-<step>.safetensors` of a run directory, if there is one; returns
/// its step and metadata.
///
/// # Errors
/// As [`load`], and an unreadable directory.
pub fn resume_latest(
    dir: impl AsRef<Path>,
    graph: &mut Graph,
    optimizer: Option<&mut Optimizer>,
) -> Result<Option<(u64, Metadata)>, CheckpointError> {
    match checkpoint::latest_in(dir)? {
        Some((step, path)) => Ok(Some((step, load(path, graph, optimizer)?))),
        None => Ok(None),
    }
}
