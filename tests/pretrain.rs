//! Pretraining end to end on small models: determinism across thread counts, resume equals
//! the uninterrupted run, a failing loss is named (SimCLR beating the random encoder is
//! `tests/e2e_probe.rs`).

mod common;
use common::train_to;

use std::path::PathBuf;
use std::sync::Arc;

use selfsup::data::augment::{RotnetAugment, SimclrAugment};
use selfsup::data::builtin::generate;
use selfsup::data::ImageSet;
use selfsup::nn::ResNetConfig;
use selfsup::optim::{LrSchedule, OptimizerConfig, SgdConfig};
use selfsup::train::image::{Embedder, ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::Method;

fn tiny_model() -> ResNetConfig {
    ResNetConfig {
        in_channels: 3,
        image_size: 32,
        widths: vec![8, 16],
        blocks: vec![1, 1],
        head_hidden: 32,
        head_out: 16,
    }
}

fn config(method: ImageMethod, steps: u64, seed: u64) -> PretrainConfig {
    PretrainConfig {
        method,
        model: tiny_model(),
        batch: 16,
        tau: 0.5,
        optimizer: OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..SgdConfig::default()
        }),
        schedule: LrSchedule::new(0.05, 2, steps).unwrap(),
        augment: SimclrAugment::for_image(32, 3, 0.5),
        rotnet: RotnetAugment::default(),
        seed,
        sync_bn: false,
        local_negatives: false,
    }
}

fn unlabeled(n: usize, seed: u64) -> Arc<ImageSet> {
    let mut s = generate(n, seed);
    s.labels = None;
    s.classes = None;
    Arc::new(s)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfsup-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn weights_are_bit_identical_for_one_and_two_threads() {
    for method in [ImageMethod::SimClr, ImageMethod::RotNet] {
        let data = unlabeled(64, 1);
        let train = |threads| {
            in_pool(threads, || {
                let mut t = Pretrainer::new(config(method, 6, 7), Arc::clone(&data)).unwrap();
                let losses = train_to(&mut t, 6);
                (
                    losses,
                    t.graph().params().to_vec(),
                    t.graph().buffers().to_vec(),
                )
            })
        };
        let (l1, p1, b1) = train(1);
        let (l2, p2, b2) = train(2);
        assert_eq!(l1.len(), 6);
        assert!(l1.iter().all(|l| l.is_finite()));
        assert_eq!(l1, l2, "{method:?} losses");
        assert!(p1 == p2, "{method:?} parameters differ");
        assert!(b1 == b2, "{method:?} BN statistics differ");
    }
}

#[test]
fn resuming_from_a_checkpoint_equals_the_uninterrupted_run() {
    let data = unlabeled(64, 2);
    let dir = temp_dir("resume");
    let mut whole = Pretrainer::new(config(ImageMethod::SimClr, 8, 3), Arc::clone(&data)).unwrap();
    let all = train_to(&mut whole, 8);

    let mut first = Pretrainer::new(config(ImageMethod::SimClr, 8, 3), Arc::clone(&data)).unwrap();
    let a = train_to(&mut first, 5);
    first.save_in(&dir, &Default::default(), 2).unwrap();
    drop(first);
    let mut second = Pretrainer::new(config(ImageMethod::SimClr, 8, 3), Arc::clone(&data)).unwrap();
    assert_eq!(second.resume_from(&dir).unwrap(), Some(5));
    let b = train_to(&mut second, 8);
    let joined: Vec<f64> = a.into_iter().chain(b).collect();
    assert_eq!(joined, all);
    assert!(second.graph().params() == whole.graph().params());

    // Another method's checkpoint does not resume this run.
    let mut rot = Pretrainer::new(config(ImageMethod::RotNet, 8, 3), Arc::clone(&data)).unwrap();
    assert!(rot.resume_from(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configurations_are_errors() {
    let data = unlabeled(32, 3);
    let mut c = config(ImageMethod::SimClr, 4, 0);
    c.batch = 1;
    assert!(Pretrainer::new(c, Arc::clone(&data)).is_err());
    let mut c = config(ImageMethod::SimClr, 4, 0);
    c.tau = 0.0;
    assert!(Pretrainer::new(c, Arc::clone(&data)).is_err());
    let mut c = config(ImageMethod::SimClr, 4, 0);
    c.batch = 33; // larger than the data
    assert!(Pretrainer::new(c, Arc::clone(&data)).is_err());
    let mut c = config(ImageMethod::SimClr, 4, 0);
    c.model.in_channels = 1; // the data is RGB
    let e = Pretrainer::new(c, Arc::clone(&data)).unwrap_err();
    assert!(
        e.to_string()
            .contains("the images have 3 channels, the model takes 1"),
        "{e}"
    );
    // The views must have the model's size (the stored images need not).
    let mut c = config(ImageMethod::SimClr, 4, 0);
    c.augment = SimclrAugment::for_image(16, 3, 0.5);
    let e = Pretrainer::new(c, Arc::clone(&data)).unwrap_err();
    assert!(
        e.to_string()
            .contains("the augmentation makes 16x16 views, the model takes 32x32"),
        "{e}"
    );
}

#[test]
fn images_of_another_size_than_the_model_train_at_its_size() {
    // 32 x 32 images, a model of 16 x 16 inputs: SimCLR crops its views to 16, RotNet
    // rotates the evaluation views at 16.
    let data = unlabeled(32, 6);
    for method in [ImageMethod::SimClr, ImageMethod::RotNet] {
        let mut c = config(method, 2, 0);
        c.model.image_size = 16;
        c.augment = SimclrAugment::for_image(16, 3, 0.5);
        let mut t = Pretrainer::new(c, Arc::clone(&data)).unwrap();
        let losses = train_to(&mut t, 2);
        assert_eq!(losses.len(), 2, "{method:?}");
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{method:?}: {losses:?}"
        );
    }
}

#[test]
fn a_diverging_loss_stops_with_the_step_named() {
    let data = unlabeled(32, 4);
    let mut c = config(ImageMethod::RotNet, 50, 0);
    // A learning rate that blows the weights up within a few steps.
    c.schedule = LrSchedule::new(1e30, 0, 50).unwrap();
    let mut t = Pretrainer::new(c, data).unwrap();
    let mut loader = t.loader(50, 1);
    let mut failed = None;
    while let Some(b) = loader.next_batch() {
        let b = b.unwrap();
        match t.train_on(&b) {
            Ok(_) => loader.recycle(b),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let msg = failed.expect("the loss must stop being finite");
    assert!(msg.contains("at step"), "{msg}");
}

#[test]
fn embedder_matches_between_graph_and_checkpoint() {
    let data = unlabeled(32, 5);
    let dir = temp_dir("embed");
    let mut t = Pretrainer::new(config(ImageMethod::SimClr, 3, 1), Arc::clone(&data)).unwrap();
    train_to(&mut t, 3);
    let path = t.save_in(&dir, &Default::default(), 1).unwrap().unwrap();
    let probe = generate(10, 99);
    let mut a = Embedder::from_graph(&tiny_model(), 4, t.graph()).unwrap();
    let mut b = Embedder::from_checkpoint(&tiny_model(), 7, &path).unwrap();
    let ea = a.embed_all(&probe).unwrap();
    let eb = b.embed_all(&probe).unwrap();
    assert_eq!(ea.len(), 10 * 16);
    // Different batch sizes, same features (eval-mode BN is per image).
    assert_eq!(ea, eb);
    // A checkpoint of another encoder is refused.
    let mut other = tiny_model();
    other.widths = vec![8, 32];
    assert!(Embedder::from_checkpoint(&other, 4, &path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
