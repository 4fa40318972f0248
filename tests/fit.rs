//! The library's training loop, `train::fit`: the example program trains and resumes to the
//! same bits, the observer hears every event, a run folder's recorded settings and
//! checkpoints are guarded, a non-finite loss stops the run with the last checkpoint kept,
//! a stop signal saves at the step reached (agreed by every rank) and resumes to the same
//! bits, and Quick Thoughts runs through the same loop.

mod common;

#[path = "../examples/pretrain_simclr.rs"]
mod example;

use std::path::Path;
use std::sync::Arc;

use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::Splits;
use selfsup::dist::{Collectives, LocalGroup};
use selfsup::nn::{QtObjective, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LrSchedule, OptimizerConfig};
use selfsup::text::{builtin_corpus, CorpusConfig, TokenizedCorpus, Vocab};
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::text::{QtConfig, QtTrainer, TextModel};
use selfsup::train::{
    fit, FitConfig, FitSummary, MonitorKind, Observer, RunLength, RunStart, Silent, StepStats,
    StopSignal,
};

use common::TempDir;

fn ckpt(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join(format!("ckpt-{step:08}.safetensors"))
}

#[test]
fn the_example_trains_and_a_resumed_run_ends_on_the_same_bits() {
    let a = TempDir::new("fit_example_a");
    let whole = example::run(a.path(), 8).expect("the example's run");
    assert_eq!(whole.steps, 8);
    assert_eq!(
        whole.checkpoint.as_deref(),
        Some(ckpt(a.path(), 8).as_path())
    );
    let knn = whole
        .monitor_value
        .expect("the built-in data has a labeled test split");
    assert!((0.0..=1.0).contains(&knn), "{knn}");
    // The same run stopped after its checkpoint at step 4: the example resumes it.
    let b = TempDir::new("fit_example_b");
    for f in ["config.json", "metrics.jsonl"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    std::fs::copy(ckpt(a.path(), 4), ckpt(b.path(), 4)).unwrap();
    let rest = example::run(b.path(), 8).expect("the resumed run");
    assert_eq!(rest.steps, 4, "steps 4..8 only");
    assert_eq!(
        std::fs::read(ckpt(a.path(), 8)).unwrap(),
        std::fs::read(ckpt(b.path(), 8)).unwrap(),
        "a resumed run ends on the uninterrupted run's bits"
    );
}

/// Everything an observer is told, in order; with `stop_after`, it gives the stop signal
/// once that many steps are done.
#[derive(Default)]
struct Record {
    events: Vec<String>,
    stop_after: Option<(u64, StopSignal)>,
}

impl Observer for Record {
    fn resumed(&mut self, _dir: &Path, step: Option<u64>) {
        self.events.push(format!("resumed {step:?}"));
    }
    fn started(&mut self, run: &RunStart<'_>) {
        self.events.push(format!(
            "started {} {} {}..{}",
            run.method, run.items_per_step, run.start_step, run.total_steps
        ));
    }
    fn step(&mut self, s: &StepStats, total: u64, items_per_s: f64) {
        assert!(s.loss.is_finite() && items_per_s > 0.0);
        self.events.push(format!("step {} of {total}", s.step));
        if let Some((n, stop)) = &self.stop_after {
            if s.step + 1 == *n {
                stop.stop();
            }
        }
    }
    fn monitor(&mut self, kind: &MonitorKind, epoch: u64, step: u64, _value: f64) {
        self.events
            .push(format!("monitor {} epoch {epoch} step {step}", kind.key));
    }
    fn checkpoint(&mut self, path: &Path) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.events.push(format!("checkpoint {name}"));
    }
    fn finished(&mut self, s: &FitSummary) {
        self.events.push(format!("finished {} steps", s.steps));
    }
    fn stopped(&mut self, step: u64, checkpoint: Option<&Path>) {
        let name = checkpoint.map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        self.events.push(format!("stopped {step} {name:?}"));
    }
    fn failed(&mut self) {
        self.events.push("failed".into());
    }
}

/// A small SimCLR trainer: 256 built-in images, batch 32 (8 steps an epoch).
fn small_simclr(lr: f64) -> (Pretrainer, FitConfig<selfsup::train::RunSettings>) {
    let (train, test) = builtin_splits(&BuiltinConfig {
        n_train: 256,
        n_test: 64,
        ..BuiltinConfig::default()
    });
    let splits = Arc::new(Splits::new(train, Some(test)));
    let mut cfg = PretrainConfig::for_images(ImageMethod::SimClr, 3, 32);
    (cfg.batch, cfg.model.widths) = (32, vec![4, 8, 8]);
    let t = Pretrainer::new(cfg.clone(), Arc::clone(&splits.train))
        .unwrap()
        .with_monitor(splits);
    let fit_cfg = FitConfig::new("", cfg.settings("builtin small"), lr);
    (t, fit_cfg)
}

#[test]
fn the_observer_hears_every_event_and_the_folder_records_the_run() {
    let dir = TempDir::new("fit_events");
    let (mut t, mut cfg) = small_simclr(0.06);
    cfg.out = dir.path().to_path_buf();
    cfg.length = Some(RunLength::Epochs(2));
    cfg.checkpoint_every = 5;
    let mut rec = Record::default();
    let s = fit(&mut t, &cfg, &mut rec).unwrap();
    assert_eq!(s.steps, 16);
    let mut want = vec!["started simclr 32 0..16".to_string()];
    for step in 0..16u64 {
        want.push(format!("step {step} of 16"));
        if (step + 1) % 5 == 0 {
            want.push(format!("checkpoint ckpt-{:08}.safetensors", step + 1));
        }
        if step + 1 == 8 {
            want.push("monitor knn_accuracy epoch 1 step 8".into());
        }
    }
    want.push("checkpoint ckpt-00000016.safetensors".into());
    want.push("finished 16 steps".into());
    assert_eq!(rec.events, want);
    // config.json: the settings, the model, the length and schedule; metrics.jsonl: one
    // line a step and one a monitor run (the epoch's and the final one); the newest two
    // checkpoints; the loss curve.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["args"]["batch"], 32);
    assert_eq!(config["args"]["data"], "builtin small");
    assert_eq!(config["model"]["widths"], serde_json::json!([4, 8, 8]));
    assert_eq!(config["total_steps"], 16);
    assert_eq!(config["train_images"], 256);
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    assert_eq!(lines[0]["step"], 0);
    assert!(lines[0]["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(lines[8]["knn_accuracy"].as_f64().is_some());
    assert_eq!(lines[17]["step"], 16);
    let mut ckpts: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    ckpts.sort();
    assert_eq!(
        ckpts,
        ["ckpt-00000015.safetensors", "ckpt-00000016.safetensors"]
    );
    assert!(dir.join("loss.png").exists());

    // The same folder again: refused without resume; with resume and other settings,
    // refused naming the setting; with resume and the same settings, nothing left to do.
    let (mut t, mut again) = small_simclr(0.06);
    again.out = dir.path().to_path_buf();
    let e = fit(&mut t, &again, &mut Record::default()).unwrap_err();
    assert!(e.to_string().contains("already holds checkpoints"), "{e}");
    again.resume = true;
    let mut other = again.clone();
    other.args.batch = 64;
    let e = fit(&mut t, &other, &mut Record::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("it was started with --batch 32, this command says 64"),
        "{e}"
    );
    let mut rec = Record::default();
    let s = fit(&mut t, &again, &mut rec).unwrap();
    assert_eq!(s.steps, 0);
    assert_eq!(rec.events[0], "resumed Some(16)");
    assert_eq!(rec.events[1], "started simclr 32 16..16");
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = TempDir::new("fit_nan");
    // A learning rate no network survives: the loss leaves the floats within a few steps.
    let (mut t, mut cfg) = small_simclr(1e30);
    cfg.out = dir.path().to_path_buf();
    cfg.length = Some(RunLength::Steps(40));
    cfg.warmup = 0.0;
    cfg.checkpoint_every = 1;
    let mut rec = Record::default();
    let e = fit(&mut t, &cfg, &mut rec).unwrap_err().to_string();
    assert_eq!(rec.events.last().map(String::as_str), Some("failed"));
    let last = rec
        .events
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("checkpoint "))
        .expect("a checkpoint before the loss failed");
    assert!(e.contains("training stopped"), "{e}");
    assert!(e.contains("the last checkpoint") && e.contains(last), "{e}");
    // The kept checkpoint loads: its weights are finite.
    let kept = dir.join(last);
    selfsup::io::checkpoint::load(&kept).expect("the last good checkpoint is intact");
}

#[test]
fn quick_thoughts_trains_through_the_same_loop() {
    let dir = TempDir::new("fit_qt");
    let docs: Vec<Vec<String>> = builtin_corpus(&CorpusConfig {
        documents: 120,
        seed: 5,
    })
    .into_iter()
    .map(|d| d.sentences)
    .collect();
    let (train, held_out) = docs.split_at(100);
    let vocab = Vocab::build(train.iter().flatten(), 1, 5000).unwrap();
    let corpus = Arc::new(TokenizedCorpus::new(train, &vocab, 12).unwrap());
    let cfg = QtConfig {
        encoder: SentenceEncoderConfig {
            kind: SentenceEncoderKind::Cnn,
            vocab: vocab.len(),
            embed_dim: 16,
            channels: 32,
            kernel: 3,
            max_len: 12,
        },
        batch: 16,
        objective: QtObjective::InBatch,
        temperature: 10.0,
        optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
        schedule: LrSchedule::new(1e-3, 0, 1).unwrap(),
        seed: 3,
    };
    let mut t = QtTrainer::new(cfg, corpus)
        .unwrap()
        .with_monitor(TokenizedCorpus::new(held_out, &vocab, 12).unwrap())
        .with_vocab(&vocab);
    let settings = selfsup::train::RunSettings {
        method: "quickthought".into(),
        data: "builtin small".into(),
        batch: 16,
        seed: 3,
        ..Default::default()
    };
    let mut fit_cfg = FitConfig::new(dir.path(), settings, 1e-3);
    fit_cfg.length = Some(RunLength::Steps(6));
    let mut rec = Record::default();
    let s = fit(&mut t, &fit_cfg, &mut rec).unwrap();
    assert_eq!(s.steps, 6);
    assert!(rec.events[0].starts_with("started quickthought 16 0..6"));
    assert!(
        s.monitor_value.is_some(),
        "the held-out monitor ran at the end"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["temperature"], 10.0);
    assert_eq!(config["encoder"]["max_len"], 12);
    assert_eq!(
        Vocab::from_json(&std::fs::read_to_string(dir.join("vocab.json")).unwrap()).unwrap(),
        vocab
    );
    let model = TextModel::open(&ckpt(dir.path(), 6), 8).expect("the checkpoint opens");
    assert_eq!(model.data.as_deref(), Some("builtin small"));
    assert_eq!(model.vocab, vocab);
}

#[test]
fn a_stop_saves_at_the_step_reached_and_the_resumed_run_ends_on_the_same_bits() {
    let (whole, a) = (TempDir::new("fit_stop_whole"), TempDir::new("fit_stop"));
    let (mut t, mut cfg) = small_simclr(0.06);
    (cfg.out, cfg.length, cfg.monitor_every) = (whole.0.clone(), Some(RunLength::Steps(8)), 0);
    fit(&mut t, &cfg, &mut Silent).unwrap();

    // Stopped once 3 steps are done: a checkpoint at step 3, no final monitor.
    let (mut t, mut run) = small_simclr(0.06);
    (run.out, run.length, run.monitor_every) = (a.0.clone(), Some(RunLength::Steps(8)), 0);
    let mut rec = Record {
        stop_after: Some((3, run.stop.clone())),
        ..Record::default()
    };
    let s = fit(&mut t, &run, &mut rec).unwrap();
    assert_eq!((s.stopped_at, s.steps), (Some(3), 3));
    assert_eq!(s.checkpoint.as_deref(), Some(ckpt(a.path(), 3).as_path()));
    assert_eq!(s.monitor_value, None);
    assert_eq!(
        rec.events[3..],
        [
            "step 2 of 8",
            "checkpoint ckpt-00000003.safetensors",
            "stopped 3 Some(\"ckpt-00000003.safetensors\")"
        ]
    );
    assert!(a.join("loss.png").exists() && a.join("metrics.csv").exists());

    // Resumed with the signal already given: no step, nothing written, the same checkpoint.
    let (mut t, mut again) = small_simclr(0.06);
    (again.out, again.resume) = (a.0.clone(), true);
    again.stop.stop();
    let mut rec = Record::default();
    let s = fit(&mut t, &again, &mut rec).unwrap();
    assert_eq!((s.stopped_at, s.steps), (Some(3), 0));
    assert_eq!(
        rec.events[2..],
        ["stopped 3 Some(\"ckpt-00000003.safetensors\")"]
    );

    // Resumed to the end: the uninterrupted run's bits.
    let (mut t, mut rest) = small_simclr(0.06);
    (rest.out, rest.resume, rest.monitor_every) = (a.0.clone(), true, 0);
    let s = fit(&mut t, &rest, &mut Silent).unwrap();
    assert_eq!((s.stopped_at, s.steps), (None, 5));
    assert_eq!(
        std::fs::read(ckpt(whole.path(), 8)).unwrap(),
        std::fs::read(ckpt(a.path(), 8)).unwrap(),
        "a run stopped at step 3 and resumed ends on the uninterrupted run's bits"
    );
}

#[test]
fn a_stop_on_any_rank_stops_every_rank_at_the_same_step() {
    let (train, _) = builtin_splits(&BuiltinConfig {
        n_train: 128,
        n_test: 16,
        ..BuiltinConfig::default()
    });
    let train = Arc::new(train);
    let mut cfg = PretrainConfig::for_images(ImageMethod::SimClr, 3, 32);
    (cfg.batch, cfg.model.widths, cfg.model.blocks) = (8, vec![4, 8], vec![1, 1]);
    // `stopper`: the rank whose own signal is given; `after`: once that many steps are
    // done (rank 0, through its observer), or before the first (0).
    let run = |stopper: usize, after: u64| {
        let dir = TempDir::new("fit_stop_ranks");
        let sums = LocalGroup::run(2, |c| {
            let rank = c.rank();
            let mut t = Pretrainer::in_group(cfg.clone(), Arc::clone(&train), Box::new(c)).unwrap();
            let mut run = FitConfig::new(dir.path(), cfg.settings("builtin 128"), 0.06);
            (run.length, run.monitor_every) = (Some(RunLength::Steps(8)), 0);
            let mut rec = Record::default();
            if rank == stopper {
                if after == 0 {
                    run.stop.stop();
                } else {
                    rec.stop_after = Some((after, run.stop.clone()));
                }
            }
            fit(&mut t, &run, &mut rec).unwrap()
        });
        (sums, dir)
    };
    // Rank 0 asks after 2 steps: rank 1, whose own signal is never given, stops there too.
    let (sums, dir) = run(0, 2);
    for s in &sums {
        assert_eq!((s.stopped_at, s.steps), (Some(2), 2));
    }
    assert_eq!(
        sums[0].checkpoint.as_deref(),
        Some(ckpt(dir.path(), 2).as_path())
    );
    assert_eq!(sums[1].checkpoint, None, "rank 0 alone writes");
    // Rank 1 asks before the first step: rank 0 stops too, with nothing to save.
    let (sums, _dir) = run(1, 0);
    for s in &sums {
        assert_eq!((s.stopped_at, s.steps, &s.checkpoint), (Some(0), 0, &None));
    }
}
