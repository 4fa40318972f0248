//! Data-parallel training in one process: `P` ranks as threads ([`LocalGroup`]) against one
//! process with the whole batch. P ranks of batch B must give the loss and the gradients of
//! one process of batch P*B (synchronized BatchNorm; up to summation order), every rank
//! must hold the same weights, the same P must give the same bits, and a checkpoint is
//! written by rank 0 and resumed by all. (`tests/mpi.rs` runs the same under `mpirun`.)

mod common;
use common::{train_to, TempDir};

use std::collections::BTreeSet;
use std::sync::Arc;

use selfsup::data::augment::{RotnetAugment, SimclrAugment};
use selfsup::data::builtin::generate;
use selfsup::data::loader::EpochSampler;
use selfsup::data::ImageSet;
use selfsup::dist::{Collectives, LocalGroup};
use selfsup::nn::{QtObjective, ResNetConfig, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LarsConfig, LrSchedule, OptimizerConfig};
use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::text::{QtConfig, QtTrainer, TokenizedCorpus};
use selfsup::train::Method;

fn config(method: ImageMethod, batch: usize, steps: u64, sync_bn: bool) -> PretrainConfig {
    PretrainConfig {
        method,
        model: ResNetConfig {
            in_channels: 3,
            image_size: 32,
            widths: vec![8, 16],
            blocks: vec![1, 1],
            head_hidden: 32,
            head_out: 16,
        },
        batch,
        tau: 0.5,
        // LARS: its trust ratios read whole-tensor norms, so any rank-to-rank difference
        // in the summed gradient would show.
        optimizer: OptimizerConfig::Lars(LarsConfig::default()),
        schedule: LrSchedule::new(0.3, 1, steps).unwrap(),
        augment: SimclrAugment::for_image(32, 3, 0.5),
        rotnet: RotnetAugment::default(),
        seed: 11,
        sync_bn,
        local_negatives: false,
    }
}

fn unlabeled(n: usize) -> Arc<ImageSet> {
    let mut s = generate(n, 3);
    s.labels = None;
    s.classes = None;
    Arc::new(s)
}

/// What a run leaves: the losses, and the weights, gradients and BN buffers at its end.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    losses: Vec<f64>,
    params: Vec<f32>,
    grads: Vec<f32>,
    buffers: Vec<f32>,
}

fn run_of(t: &mut Pretrainer, steps: u64) -> Run {
    let losses = train_to(t, steps);
    Run {
        losses,
        params: t.graph().params().to_vec(),
        grads: t.graph().param_grads().to_vec(),
        buffers: t.graph().buffers().to_vec(),
    }
}

fn group_run(cfg: &PretrainConfig, data: &Arc<ImageSet>, p: usize, steps: u64) -> Vec<Run> {
    LocalGroup::run(p, |c| {
        let mut t = Pretrainer::in_group(cfg.clone(), Arc::clone(data), Box::new(c)).unwrap();
        run_of(&mut t, steps)
    })
}

/// `||a - b|| / ||a||`, in f64.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += (f64::from(x) - f64::from(y)).powi(2);
        n += f64::from(x).powi(2);
    }
    (d / n.max(1e-300)).sqrt()
}

fn assert_same_as_one_process(method: ImageMethod, p: usize) {
    let b = 8;
    let data = unlabeled(64);
    // One step: the gradient of the same weights on the same images.
    let one = {
        let mut t = Pretrainer::new(config(method, p * b, 3, true), Arc::clone(&data)).unwrap();
        let first = run_of(&mut t, 1);
        let rest = run_of(&mut t, 3);
        (first, rest)
    };
    let cfg = config(method, b, 3, true);
    let first = group_run(&cfg, &data, p, 1);
    let all = LocalGroup::run(p, |c| {
        let mut t = Pretrainer::in_group(cfg.clone(), Arc::clone(&data), Box::new(c)).unwrap();
        run_of(&mut t, 3)
    });
    for r in 0..p {
        // Every rank reports the global loss and holds the same summed gradient, bit for bit.
        assert!(
            first[r] == first[0],
            "{method:?} P = {p}: rank {r} differs from rank 0"
        );
        assert!(
            all[r] == all[0],
            "{method:?} P = {p}: rank {r} differs from rank 0"
        );
    }
    let (l1, lp) = (one.0.losses[0], first[0].losses[0]);
    assert!(
        (l1 - lp).abs() <= 1e-5 * l1.abs(),
        "{method:?} P = {p}: loss {lp} vs one process {l1}"
    );
    let g = rel(&one.0.grads, &first[0].grads);
    assert!(g < 1e-4, "{method:?} P = {p}: gradient differs by {g:e}");
    let bn = rel(&one.0.buffers, &first[0].buffers);
    assert!(
        bn < 1e-5,
        "{method:?} P = {p}: BN running statistics differ by {bn:e}"
    );
    // Three steps: the weights follow the one-process run up to rounding.
    assert_eq!(all[0].losses[0], first[0].losses[0]);
    for (s, (a, b)) in one.1.losses.iter().zip(&all[0].losses[1..]).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "{method:?} P = {p}: loss of step {}: {b} vs one process {a}",
            s + 1
        );
    }
    let w = rel(&one.1.params, &all[0].params);
    assert!(
        w < 1e-4,
        "{method:?} P = {p}: weights differ by {w:e} after 3 steps"
    );
}

#[test]
fn simclr_over_two_and_three_ranks_equals_one_process_of_the_whole_batch() {
    assert_same_as_one_process(ImageMethod::SimClr, 2);
    assert_same_as_one_process(ImageMethod::SimClr, 3);
}

#[test]
fn rotnet_over_two_ranks_equals_one_process_of_the_whole_batch() {
    assert_same_as_one_process(ImageMethod::RotNet, 2);
}

#[test]
fn a_gather_whose_backward_drops_the_other_ranks_terms_would_be_caught() {
    // The equivalence above would fail if each rank only kept the gradient of its own
    // anchors' terms for its rows: check that the other ranks' terms are not negligible
    // here, i.e. that the test has the power to see the bug.
    let data = unlabeled(64);
    let mut t =
        Pretrainer::new(config(ImageMethod::SimClr, 16, 3, true), Arc::clone(&data)).unwrap();
    let whole = run_of(&mut t, 1);
    let mut t =
        Pretrainer::new(config(ImageMethod::SimClr, 8, 3, true), Arc::clone(&data)).unwrap();
    let half = run_of(&mut t, 1);
    assert!(rel(&whole.grads, &half.grads) > 1e-2);
}

#[test]
fn same_ranks_same_bits_and_local_batchnorm_keeps_ranks_in_step() {
    let data = unlabeled(64);
    let cfg = config(ImageMethod::SimClr, 8, 3, false);
    let a = group_run(&cfg, &data, 2, 3);
    let b = group_run(&cfg, &data, 2, 3);
    assert!(a == b, "two runs of the same group differ");
    // Rank 0's BatchNorm running statistics are every rank's (as PyTorch's DDP broadcasts
    // its buffers), so the ranks hold the same model.
    assert!(a[0] == a[1], "ranks hold different weights");
    assert!(a[0].losses.iter().all(|l| l.is_finite()));
}

#[test]
fn every_image_once_per_epoch_across_the_ranks() {
    for ranks in [1, 2, 3] {
        let (n, global) = (50, 12);
        let mut whole = EpochSampler::new(n, global, 9).unwrap();
        let mut parts: Vec<EpochSampler> = (0..ranks)
            .map(|r| EpochSampler::sharded(n, global, 9, r, ranks).unwrap())
            .collect();
        for epoch in 0..2u64 {
            let mut seen = BTreeSet::new();
            let spe = whole.steps_per_epoch();
            for step in epoch * spe..(epoch + 1) * spe {
                let mut joined = Vec::new();
                for p in &mut parts {
                    let (e, idx) = p.batch_of(step);
                    assert_eq!(e, epoch);
                    assert_eq!(idx.len(), global / ranks);
                    joined.extend_from_slice(idx);
                }
                // The ranks' parts, in rank order, are the one-process batch.
                assert_eq!(joined, whole.batch_of(step).1);
                for i in joined {
                    assert!(seen.insert(i), "image {i} twice in epoch {epoch}");
                }
            }
            assert_eq!(seen.len(), spe as usize * global);
        }
    }
}

#[test]
fn rank_zero_writes_the_checkpoint_and_every_rank_resumes_from_it() {
    let data = unlabeled(64);
    let cfg = config(ImageMethod::SimClr, 8, 4, true);
    let straight = group_run(&cfg, &data, 2, 4);
    let dirs = [TempDir::new("dist-r0"), TempDir::new("dist-r1")];
    // Two steps, then a checkpoint into each rank's own folder: only rank 0's gets one.
    LocalGroup::run(2, |c| {
        let r = c.rank();
        let mut t = Pretrainer::in_group(cfg.clone(), Arc::clone(&data), Box::new(c)).unwrap();
        train_to(&mut t, 2);
        let saved = t.save_in(dirs[r].path(), &Default::default(), 2).unwrap();
        assert_eq!(saved.is_some(), r == 0);
    });
    assert_eq!(std::fs::read_dir(dirs[1].path()).unwrap().count(), 0);
    // Resume: each rank is pointed at its own folder, only rank 0's holds the checkpoint,
    // and rank 1 receives rank 0's state.
    let resumed = LocalGroup::run(2, |c| {
        let r = c.rank();
        let mut t = Pretrainer::in_group(cfg.clone(), Arc::clone(&data), Box::new(c)).unwrap();
        assert_eq!(t.resume_from(dirs[r].path()).unwrap(), Some(2));
        assert_eq!(t.step(), 2);
        run_of(&mut t, 4)
    });
    for r in 0..2 {
        let (a, b) = (&resumed[r], &straight[r]);
        assert_eq!(a.losses, b.losses[2..], "rank {r}");
        assert!(a.params == b.params, "rank {r}: resumed weights differ");
        assert!(a.grads == b.grads, "rank {r}: resumed gradients differ");
        assert!(
            a.buffers == b.buffers,
            "rank {r}: resumed BN statistics differ"
        );
    }
    // A run of another number of processes does not resume it.
    let mut one =
        Pretrainer::new(config(ImageMethod::SimClr, 16, 4, true), Arc::clone(&data)).unwrap();
    let err = one.resume_from(dirs[0].path()).unwrap_err().to_string();
    assert!(err.contains("2 process(es), this run has 1"), "{err}");
    // A failure on rank 0 (another method's checkpoint) is an error on every rank.
    let rot = config(ImageMethod::RotNet, 8, 4, true);
    let errs = LocalGroup::run(2, |c| {
        let r = c.rank();
        let mut t = Pretrainer::in_group(rot.clone(), Arc::clone(&data), Box::new(c)).unwrap();
        t.resume_from(dirs[r].path()).unwrap_err().to_string()
    });
    assert!(errs[0].contains("ckpt-00000002"), "{}", errs[0]);
    assert!(errs[1].contains("rank 0 could not resume"), "{}", errs[1]);
}

#[test]
fn ranks_with_different_configurations_or_data_fail_together() {
    let data = unlabeled(64);
    let other = Arc::new({
        let mut s = generate(64, 4);
        s.labels = None;
        s.classes = None;
        s
    });
    for case in ["seed", "data"] {
        let errs = LocalGroup::run(3, |c| {
            let r = c.rank();
            let mut cfg = config(ImageMethod::SimClr, 8, 3, false);
            let mut d = Arc::clone(&data);
            if r == 2 {
                match case {
                    "seed" => cfg.seed += 1,
                    _ => d = Arc::clone(&other),
                }
            }
            Pretrainer::in_group(cfg, d, Box::new(c))
                .err()
                .map(|e| e.to_string())
        });
        for (r, e) in errs.iter().enumerate() {
            let e = e
                .as_deref()
                .unwrap_or_else(|| panic!("{case}: rank {r} started"));
            assert!(e.contains("rank(s) 2 differs from rank 0"), "{case}: {e}");
        }
    }
}

/// Documents of the built-in corpus (of different lengths: neighbour pairs straddle the
/// ranks' runs of sentences).
fn docs() -> Vec<Vec<String>> {
    builtin_corpus(&CorpusConfig {
        documents: 40,
        seed: 4,
    })
    .into_iter()
    .map(|d| d.sentences)
    .collect()
}

#[test]
fn quick_thoughts_in_batch_over_ranks_equals_one_process_of_the_whole_batch() {
    // Every step's window of P*B contiguous sentences is the one-process batch; a rank's
    // targets include the neighbours the next or previous rank holds.
    let b = 8;
    let docs = docs();
    let vocab = Vocab::build(docs.iter().flatten(), 1, 5000).unwrap();
    let corpus = Arc::new(TokenizedCorpus::new(&docs, &vocab, 12).unwrap());
    let cfg = |batch: usize| QtConfig {
        encoder: SentenceEncoderConfig {
            kind: SentenceEncoderKind::Cnn,
            vocab: vocab.len(),
            embed_dim: 16,
            channels: 32,
            kernel: 3,
            max_len: 12,
        },
        batch,
        objective: QtObjective::InBatch,
        temperature: 1.0,
        optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
        schedule: LrSchedule::new(1e-3, 0, 3).unwrap(),
        seed: 5,
    };
    for p in [2, 3] {
        let mut one = QtTrainer::new(cfg(p * b), Arc::clone(&corpus)).unwrap();
        let s1 = one.train_step().unwrap();
        let g1 = one.graph().param_grads().to_vec();
        let ranks = LocalGroup::run(p, |c| {
            let mut t = QtTrainer::in_group(cfg(b), Arc::clone(&corpus), Box::new(c)).unwrap();
            let s = t.train_step().unwrap();
            (s.loss, s.accuracy, t.graph().param_grads().to_vec())
        });
        for r in &ranks {
            assert_eq!(r, &ranks[0]);
        }
        let (loss, acc, g) = &ranks[0];
        assert!(
            (loss - s1.loss).abs() <= 1e-5 * s1.loss,
            "P = {p}: {loss} vs {}",
            s1.loss
        );
        assert!(
            (acc - s1.accuracy).abs() < 1e-9,
            "P = {p}: {acc} vs {}",
            s1.accuracy
        );
        let d = rel(&g1, g);
        assert!(d < 1e-4, "P = {p}: gradient differs by {d:e}");
    }
}

#[test]
fn quick_thoughts_pairwise_ranks_stay_in_step() {
    let docs = docs();
    let vocab = Vocab::build(docs.iter().flatten(), 1, 5000).unwrap();
    let corpus = Arc::new(TokenizedCorpus::new(&docs, &vocab, 12).unwrap());
    let cfg = QtConfig {
        encoder: SentenceEncoderConfig {
            kind: SentenceEncoderKind::Bow,
            vocab: vocab.len(),
            embed_dim: 16,
            channels: 16,
            kernel: 1,
            max_len: 12,
        },
        batch: 12,
        objective: QtObjective::Pairwise,
        temperature: 1.0,
        optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
        schedule: LrSchedule::new(1e-3, 0, 4).unwrap(),
        seed: 5,
    };
    let runs = LocalGroup::run(2, |c| {
        let mut t = QtTrainer::in_group(cfg.clone(), Arc::clone(&corpus), Box::new(c)).unwrap();
        let losses: Vec<f64> = (0..4).map(|_| t.train_step().unwrap().loss).collect();
        (losses, t.graph().params().to_vec())
    });
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].0.iter().all(|l| l.is_finite() && *l > 0.0));
}

#[test]
fn local_negatives_contrast_each_ranks_batch_among_itself() {
    // Two ranks with local negatives (and local BN) compute, each on its own batch, what
    // one process of that batch computes, the loss being the mean of the two: checked on
    // the graphs directly, fed the same rows.
    use selfsup::graph::Mode;
    use selfsup::nn::simclr;
    let cfg = config(ImageMethod::SimClr, 8, 3, false).model;
    let inputs: Vec<Vec<f32>> = (0..2)
        .map(|r| {
            let m = simclr(&cfg, 8, 0.5, 1).unwrap();
            let len: usize = m.graph.shape(m.input).iter().product();
            (0..len)
                .map(|k| (((k + 13 * r) * 31 % 97) as f32) / 97.0 - 0.5)
                .collect()
        })
        .collect();
    let alone: Vec<(f64, Vec<f32>)> = inputs
        .iter()
        .map(|x| {
            let mut m = simclr(&cfg, 8, 0.5, 1).unwrap();
            m.graph.input_mut(m.input).unwrap().copy_from_slice(x);
            m.graph.forward(Mode::Train).unwrap();
            m.graph.backward().unwrap();
            (m.graph.loss_f64(m.loss), m.graph.param_grads().to_vec())
        })
        .collect();
    let group = LocalGroup::run(2, |c| {
        let mut m = simclr(&cfg, 8, 0.5, 1).unwrap();
        m.graph.set_local_negatives(true);
        m.graph
            .input_mut(m.input)
            .unwrap()
            .copy_from_slice(&inputs[c.rank()]);
        m.graph.forward_with(Mode::Train, &c).unwrap();
        m.graph.backward_with(&c).unwrap();
        (m.graph.loss_f64(m.loss), m.graph.param_grads().to_vec())
    });
    let mean = (alone[0].0 + alone[1].0) / 2.0;
    for (r, (loss, grads)) in group.iter().enumerate() {
        assert!(
            (loss - mean).abs() <= 1e-6 * mean,
            "rank {r}: {loss} vs {mean}"
        );
        // Before the all-reduce, each rank's gradient is half its batch's gradient alone.
        let half: Vec<f32> = alone[r].1.iter().map(|g| g / 2.0).collect();
        let d = rel(&half, grads);
        assert!(d < 1e-5, "rank {r}: gradient differs by {d:e}");
    }
    // And the global-negatives default differs (each anchor sees the other rank's rows).
    let global = LocalGroup::run(2, |c| {
        let mut m = simclr(&cfg, 8, 0.5, 1).unwrap();
        m.graph
            .input_mut(m.input)
            .unwrap()
            .copy_from_slice(&inputs[c.rank()]);
        m.graph.forward_with(Mode::Train, &c).unwrap();
        m.graph.loss_f64(m.loss)
    });
    assert!((global[0] - mean).abs() > 1e-3, "{} vs {mean}", global[0]);
}
