//! The run folder of a training run: `config.json` (the settings the run was started with
//! and what they resolved to, written atomically), `metrics.jsonl` (one JSON object per
//! step and per monitor run, appended so that a resumed run continues it), `loss.png` (the
//! loss curve of the whole run) and the checkpoints `ckpt-<step>.safetensors`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::io::plot::RunCurves;
use crate::nn::{QtObjective, SentenceEncoderKind};
use crate::train::method::StepStats;

/// The run's settings and what they resolved to.
pub const CONFIG_FILE: &str = "config.json";
/// One JSON object per step and per monitor run.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss curve.
pub const PLOT_FILE: &str = "loss.png";
/// The metrics as one CSV table, rewritten from `metrics.jsonl` when a run ends.
pub const METRICS_CSV_FILE: &str = "metrics.csv";

/// NT-Xent's temperature when the settings name none (SimCLR's).
pub const SIMCLR_TAU: f32 = 0.5;

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Run(format!("{what} {}: {e}", path.display()))
}

/// The settings a resumed run must share with the run it continues, as `config.json`
/// records them under `"args"` (a caller may record more there: see [`RunArgs`]). Settings
/// left unset resolve to the method's defaults before they are compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// `simclr`, `rotnet` or `quickthought`.
    pub method: String,
    /// The data, as the caller names it (`builtin`, `folder:DIR`, `text:PATH`, ...).
    pub data: String,
    /// Items per step on each rank.
    pub batch: usize,
    /// The seed of the weights, the data order and the augmentations.
    pub seed: u64,
    /// `sgd`, `lars` or `adamw`; unset: [`RunSettings::optimizer`]'s default.
    pub optimizer: Option<String>,
    /// The temperature (NT-Xent's; Quick Thoughts records its own in the model record).
    pub tau: Option<f32>,
    /// The encoder's widths per stage (image methods).
    #[serde(default)]
    pub widths: Vec<usize>,
    /// The sentence encoder (Quick Thoughts).
    #[serde(default = "default_encoder")]
    pub encoder: SentenceEncoderKind,
    /// The Quick Thoughts objective.
    #[serde(default = "default_objective")]
    pub objective: QtObjective,
    /// Tokens per sentence, when set.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// The side of the images the model takes (image methods; runs of earlier versions did
    /// not record it).
    #[serde(default)]
    pub image_size: Option<usize>,
}

impl Default for RunSettings {
    /// An empty record: SimCLR on unnamed data, batch 0, seed 0, every other setting unset
    /// (a base to fill with struct update syntax).
    fn default() -> Self {
        Self {
            method: "simclr".into(),
            data: String::new(),
            batch: 0,
            seed: 0,
            optimizer: None,
            tau: None,
            widths: Vec::new(),
            encoder: default_encoder(),
            objective: default_objective(),
            max_len: None,
            image_size: None,
        }
    }
}

fn default_encoder() -> SentenceEncoderKind {
    SentenceEncoderKind::Cnn
}

fn default_objective() -> QtObjective {
    QtObjective::InBatch
}

/// `simclr` -> `Simclr`: a value as the command line's enums print it.
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl RunSettings {
    /// The optimizer, its default resolved by the method (AdamW for Quick Thoughts, SGD
    /// for the image methods).
    pub fn optimizer(&self) -> &str {
        match (&self.optimizer, self.method.as_str()) {
            (Some(o), _) => o,
            (None, "quickthought") => "adamw",
            (None, _) => "sgd",
        }
    }

    /// The first setting in which `given` differs from these recorded ones: its flag, the
    /// recorded value and the given one.
    pub fn first_difference(&self, given: &RunSettings) -> Option<(&'static str, String, String)> {
        if let (Some(a), Some(b)) = (self.image_size, given.image_size) {
            if a != b {
                return Some(("--image-size", a.to_string(), b.to_string()));
            }
        }
        let pairs = |s: &RunSettings| {
            [
                capitalized(&s.method),
                s.data.clone(),
                s.batch.to_string(),
                s.seed.to_string(),
                capitalized(s.optimizer()),
                format!("{:?}", s.encoder),
                format!("{:?}", s.objective),
                format!("{:?}", s.max_len),
                format!("{:?}", s.widths),
                // NT-Xent's; a text run checks its temperature against its model record
                // (runs of earlier versions did not record it).
                s.tau.unwrap_or(SIMCLR_TAU).to_string(),
            ]
        };
        let flags = [
            "--method",
            "--data",
            "--batch",
            "--seed",
            "--optimizer",
            "--encoder",
            "--objective",
            "--max-len",
            "--widths",
            "--tau",
        ];
        // Quick Thoughts has no widths, and checks its temperature against its record.
        let checked = if given.method == "quickthought" {
            8
        } else {
            10
        };
        flags
            .into_iter()
            .zip(pairs(self).into_iter().zip(pairs(given)))
            .take(checked)
            .find(|(_, (a, b))| a != b)
            .map(|(flag, (a, b))| (flag, a, b))
    }
}

/// What a caller records as the run's settings in `config.json` (under `"args"`): the
/// [`RunSettings`] themselves, or a superset of them (a command line's arguments) that
/// serializes their fields under the same names.
pub trait RunArgs: Serialize {
    /// The settings a resumed run must share.
    fn settings(&self) -> RunSettings;
}

impl RunArgs for RunSettings {
    fn settings(&self) -> RunSettings {
        self.clone()
    }
}

/// `config.json` as it is written.
#[derive(Serialize)]
struct ConfigOut<'a, A: Serialize, R: Serialize> {
    args: &'a A,
    #[serde(flatten)]
    record: &'a R,
    total_steps: u64,
    lr: f64,
    weight_decay: f32,
    warmup_steps: u64,
    version: &'static str,
}

/// What a resumed run reads back from `config.json`.
#[derive(Debug, Deserialize)]
pub struct RecordedRun {
    /// The settings the run was started with.
    pub args: RunSettings,
    /// Its length in steps.
    pub total_steps: u64,
}

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The folder `dir` (not created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder if needed.
    ///
    /// # Errors
    /// [`Error::Run`] naming the folder.
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, "creating the run folder", e))
    }

    /// `config.json`'s path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// Reads `config.json` as a `T` (a method reads its own record this way).
    ///
    /// # Errors
    /// [`Error::Run`]: a missing, unreadable or malformed file, named.
    pub fn read_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.config_path();
        let bytes = fs::read(&path).map_err(|e| io_err(&path, "--resume: reading", e))?;
        serde_json::from_slice(&bytes).map_err(|e| io_err(&path, "--resume: parsing", e))
    }

    /// `--resume`: the recorded run, after checking that it was started with the settings
    /// `given`.
    ///
    /// # Errors
    /// [`Error::Run`]: the file, or the first setting that differs.
    pub fn check_resume(&self, given: &RunSettings) -> Result<RecordedRun> {
        let old: RecordedRun = self.read_config()?;
        if let Some((flag, a, b)) = old.args.first_difference(given) {
            return Err(Error::Run(format!(
                "--resume: {} is another run: it was started with {flag} {a}, this command says {b}",
                self.config_path().display()
            )));
        }
        Ok(old)
    }

    /// Writes `config.json` atomically: `args`, the method's `record`, the run's length,
    /// learning rate, weight decay and warmup, and the crate's version.
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    #[allow(clippy::too_many_arguments)]
    pub fn write_config(
        &self,
        args: &impl Serialize,
        record: &impl Serialize,
        total_steps: u64,
        lr: f64,
        weight_decay: f32,
        warmup_steps: u64,
    ) -> Result<()> {
        let out = ConfigOut {
            args,
            record,
            total_steps,
            lr,
            weight_decay,
            warmup_steps,
            version: env!("CARGO_PKG_VERSION"),
        };
        let path = self.config_path();
        let text = serde_json::to_vec_pretty(&out).map_err(|e| io_err(&path, "writing", e))?;
        self.write_file(CONFIG_FILE, &text)
    }

    /// Writes `name` in the folder atomically.
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        checkpoint::write_atomically(&path, |w| w.write_all(contents)).map_err(Error::from)
    }

    /// The newest checkpoint's step and path, if any.
    ///
    /// # Errors
    /// [`Error::Run`]: an unreadable folder.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, PathBuf)>> {
        checkpoint::latest_in(&self.dir).map_err(Error::from)
    }
}

/// One step's line of `metrics.jsonl`.
#[derive(Serialize)]
struct StepLine {
    step: u64,
    epoch: u64,
    loss: f64,
    accuracy: f64,
    lr: f32,
    #[serde(flatten)]
    rate: BTreeMap<&'static str, f64>,
}

/// One monitor run's line of `metrics.jsonl`.
#[derive(Serialize)]
struct MonitorLine {
    epoch: u64,
    step: u64,
    #[serde(flatten)]
    value: BTreeMap<&'static str, f64>,
}

/// A run folder's `metrics.jsonl` (appended to, so a resumed run continues it) and its
/// `loss.png`.
pub struct MetricsLog {
    dir: PathBuf,
    path: PathBuf,
    /// `metrics.jsonl`, or a sink on the ranks other than 0 of a data-parallel run.
    file: Box<dyn Write + Send>,
    /// The line being written: a line reaches the file's buffer whole, so the file only
    /// ever ends between lines, even when the program is ended abruptly.
    line: Vec<u8>,
}

impl std::fmt::Debug for MetricsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MetricsLog {
    /// Opens `metrics.jsonl` of `dir` for appending; on the ranks other than 0 (`root`
    /// false) a log that writes nothing.
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    pub fn open(dir: &RunDir, root: bool) -> Result<Self> {
        if !root {
            return Ok(Self {
                dir: dir.path().to_path_buf(),
                path: PathBuf::new(),
                file: Box::new(std::io::sink()),
                line: Vec::new(),
            });
        }
        let path = dir.path().join(METRICS_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, "opening", e))?;
        Ok(Self {
            dir: dir.path().to_path_buf(),
            path,
            file: Box::new(BufWriter::new(file)),
            line: Vec::new(),
        })
    }

    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        let path = &self.path;
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|e| io_err(path, "writing", e))?;
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .map_err(|e| io_err(path, "writing", e))
    }

    /// One step's line: step, epoch, loss, accuracy, lr and the speed under `rate_key`
    /// (to a tenth).
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    pub fn step(&mut self, stats: &StepStats, rate_key: &'static str, rate: f64) -> Result<()> {
        self.line(&StepLine {
            step: stats.step,
            epoch: stats.epoch,
            loss: stats.loss,
            accuracy: stats.accuracy,
            lr: stats.lr,
            rate: BTreeMap::from([(rate_key, (rate * 10.0).round() / 10.0)]),
        })
    }

    /// One monitor run's line: epoch, step and the value under `key`.
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    pub fn monitor(&mut self, epoch: u64, step: u64, key: &'static str, value: f64) -> Result<()> {
        self.line(&MonitorLine {
            epoch,
            step,
            value: BTreeMap::from([(key, value)]),
        })
    }

    /// Flushes the file and draws `loss.png` from the whole run's curve (read back from
    /// the file, so a resumed run's earlier steps are in it).
    ///
    /// # Errors
    /// [`Error::Run`] naming the file.
    pub fn finish(mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| io_err(&self.path, "writing", e))?;
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let csv = self.dir.join(METRICS_CSV_FILE);
        let table = metrics_csv(&self.path).map_err(|e| io_err(&self.path, "reading", e))?;
        crate::io::atomic::write_atomically(&csv, |w| w.write_all(table.as_bytes()))
            .map_err(|e| io_err(&csv, "writing", e))?;
        let png = self.dir.join(PLOT_FILE);
        let curves = read_curves(&self.path).unwrap_or_default();
        crate::io::plot::run_chart(&png, &curves, 900, 600).map_err(|e| io_err(&png, "writing", e))
    }
}

/// `metrics.jsonl` as one CSV table: a column per key (`step, epoch, loss, accuracy, lr`,
/// then the others, such as the speed and the monitor, by name), a row per line,
/// empty cells where a line has no value (a monitor line has no loss, a step line no kNN
/// accuracy). Numbers are written as JSON writes them.
fn metrics_csv(path: &Path) -> std::io::Result<String> {
    let text = fs::read_to_string(path)?;
    let mut keys: Vec<String> = Vec::new();
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) else {
            continue;
        };
        // Nested maps (the speed or the monitor under its own key) are flattened.
        let mut flat = serde_json::Map::new();
        for (k, v) in map {
            match v {
                serde_json::Value::Object(inner) => flat.extend(inner),
                v => {
                    flat.insert(k, v);
                }
            }
        }
        for k in flat.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        rows.push(flat);
    }
    // The step's figures first, in this order; then the rest (speed, monitor) by name.
    const FIRST: [&str; 5] = ["step", "epoch", "loss", "accuracy", "lr"];
    keys.sort_by_key(|k| FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()));
    let mut out = keys.join(",");
    out.push('\n');
    for r in &rows {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| match r.get(k) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// The chart's curves from a `metrics.jsonl`: loss and learning rate per step line, the
/// monitor's value per monitor line (a line without a loss: `epoch`, `step` and the value
/// under the monitor's key, which names it).
fn read_curves(path: &Path) -> Option<RunCurves> {
    let text = fs::read_to_string(path).ok()?;
    let mut c = RunCurves::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let step = v.get("step").and_then(serde_json::Value::as_f64);
        if let (Some(s), Some(l)) = (step, v.get("loss")) {
            c.loss.push((s, l.as_f64().unwrap_or(f64::NAN)));
            if let Some(lr) = v.get("lr").and_then(serde_json::Value::as_f64) {
                c.lr.push((s, lr));
            }
        } else if let (Some(e), Some(m)) = (
            v.get("epoch").and_then(serde_json::Value::as_f64),
            v.as_object(),
        ) {
            if let Some((k, a)) = m.iter().find(|(k, _)| *k != "epoch" && *k != "step") {
                c.monitor.push((e, a.as_f64().unwrap_or(f64::NAN)));
                c.monitor_label = k.replace('_', " ").replace("knn", "kNN");
            }
        }
    }
    Some(c)
}
