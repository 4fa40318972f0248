//! Training state on disk: checkpoint round trip, resuming after an interruption gives the
//! same bits as the uninterrupted run, and a checkpoint of another architecture, of another
//! optimizer, or a corrupt file is a clear error that leaves the model untouched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use selfsup::graph::Mode;
use selfsup::nn::{simclr, ResNetConfig, SimclrModel};
use selfsup::optim::{LrSchedule, Optimizer, OptimizerConfig, SgdConfig};
use selfsup::train;

fn tiny() -> ResNetConfig {
    ResNetConfig {
        in_channels: 2,
        image_size: 8,
        widths: vec![4, 6],
        blocks: vec![1, 1],
        head_hidden: 8,
        head_out: 5,
    }
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "selfsup-train-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The batch of step `s`: deterministic from the step, as a data loader seeded by
/// (seed, epoch, index) would give.
fn batch(len: usize, step: u64) -> Vec<f32> {
    let mut s = step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn sgd() -> OptimizerConfig {
    OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..SgdConfig::default()
    })
}

fn run_steps(m: &mut SimclrModel, opt: &mut Optimizer, sched: &LrSchedule, from: u64, to: u64) {
    let len: usize = m.graph.shape(m.input).iter().product();
    for s in from..to {
        m.graph
            .input_mut(m.input)
            .unwrap()
            .copy_from_slice(&batch(len, s));
        m.graph.forward(Mode::Train).unwrap();
        m.graph.backward().unwrap();
        let (p, g, groups) = m.graph.params_and_grads();
        opt.step(p, g, groups, sched.lr(s)).unwrap();
    }
}

fn state_bits(m: &SimclrModel, opt: &Optimizer) -> Vec<u32> {
    let mut v: Vec<u32> = m.graph.params().iter().map(|x| x.to_bits()).collect();
    v.extend(m.graph.buffers().iter().map(|x| x.to_bits()));
    for (_, t) in opt.state_tensors() {
        v.extend(t.iter().map(|x| x.to_bits()));
    }
    v
}

fn meta(step: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("step".to_string(), step.to_string()),
        ("model_config".to_string(), format!("{:?}", tiny())),
    ])
}

#[test]
fn resuming_after_an_interruption_gives_the_uninterrupted_bits() {
    let dir = tmp_dir("resume");
    let sched = LrSchedule::new(0.1, 2, 8).unwrap();
    // Uninterrupted: 8 steps.
    let mut a = simclr(&tiny(), 4, 0.5, 9).unwrap();
    let mut oa = Optimizer::new(sgd(), a.graph.params().len()).unwrap();
    run_steps(&mut a, &mut oa, &sched, 0, 8);

    // Interrupted after 5 steps (a checkpoint each step; the process then "dies"), resumed
    // in a fresh model built with another seed, whose weights the checkpoint replaces.
    let mut b = simclr(&tiny(), 4, 0.5, 9).unwrap();
    let mut ob = Optimizer::new(sgd(), b.graph.params().len()).unwrap();
    for s in 0..5 {
        run_steps(&mut b, &mut ob, &sched, s, s + 1);
        train::save_in(&dir, s + 1, &b.graph, Some(&ob), &meta(s + 1), 2).unwrap();
    }
    drop((b, ob));
    let mut c = simclr(&tiny(), 4, 0.5, 12345).unwrap();
    let mut oc = Optimizer::new(sgd(), c.graph.params().len()).unwrap();
    let (step, md) = train::resume_latest(&dir, &mut c.graph, Some(&mut oc))
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(step, 5);
    assert_eq!(md["step"], "5");
    assert_eq!(oc.steps(), 5);
    run_steps(&mut c, &mut oc, &sched, step, 8);
    assert_eq!(state_bits(&a, &oa), state_bits(&c, &oc));
    // Only the newest two checkpoints are kept.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn round_trip_is_bit_exact_and_model_only_loads_work() {
    let dir = tmp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let sched = LrSchedule::new(0.1, 0, 3).unwrap();
    let mut a = simclr(&tiny(), 3, 0.5, 1).unwrap();
    let mut oa = Optimizer::new(sgd(), a.graph.params().len()).unwrap();
    run_steps(&mut a, &mut oa, &sched, 0, 3);
    train::save(&path, &a.graph, Some(&oa), &meta(3)).unwrap();
    // For evaluation: no optimizer; its state in the file is ignored.
    let mut b = simclr(&tiny(), 3, 0.5, 2).unwrap();
    let md = train::load(&path, &mut b.graph, None).unwrap();
    assert_eq!(md["optimizer"], "sgd");
    assert_eq!(md["optimizer_steps"], "3");
    assert_eq!(a.graph.params(), b.graph.params());
    assert_eq!(a.graph.buffers(), b.graph.buffers());
    // A model-only file loads for evaluation but cannot resume an optimizer.
    let model_only = dir.join("model-only.safetensors");
    train::save(&model_only, &a.graph, None, &meta(3)).unwrap();
    let mut c = simclr(&tiny(), 3, 0.5, 2).unwrap();
    train::load(&model_only, &mut c.graph, None).unwrap();
    assert_eq!(a.graph.params(), c.graph.params());
    let mut oc = Optimizer::new(sgd(), c.graph.params().len()).unwrap();
    let e = train::load(&model_only, &mut c.graph, Some(&mut oc))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no optimizer state"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_architecture_or_optimizer_is_a_clear_error_and_changes_nothing() {
    let dir = tmp_dir("mismatch");
    let path = dir.join("ckpt.safetensors");
    let a = simclr(&tiny(), 3, 0.5, 1).unwrap();
    let oa = Optimizer::new(sgd(), a.graph.params().len()).unwrap();
    train::save(&path, &a.graph, Some(&oa), &meta(0)).unwrap();

    let wider = ResNetConfig {
        widths: vec![4, 8],
        ..tiny()
    };
    let mut b = simclr(&wider, 3, 0.5, 2).unwrap();
    let before = b.graph.params().to_vec();
    let e = train::load(&path, &mut b.graph, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ckpt.safetensors") && e.contains("l2.c1.weight"),
        "{e}"
    );
    assert!(
        e.contains("[6, 4, 3, 3]") && e.contains("[8, 4, 3, 3]"),
        "{e}"
    );
    assert_eq!(b.graph.params(), &before[..]);

    let deeper = ResNetConfig {
        blocks: vec![1, 2],
        ..tiny()
    };
    let mut c = simclr(&deeper, 3, 0.5, 2).unwrap();
    let e = train::load(&path, &mut c.graph, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("l2.0.c1.weight") || e.contains("l2.c1"), "{e}");

    let mut d = simclr(&tiny(), 3, 0.5, 2).unwrap();
    let mut adam = Optimizer::new(
        OptimizerConfig::AdamW(Default::default()),
        d.graph.params().len(),
    )
    .unwrap();
    let before = d.graph.params().to_vec();
    let e = train::load(&path, &mut d.graph, Some(&mut adam))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'sgd'") && e.contains("'adamw'"), "{e}");
    assert_eq!(d.graph.params(), &before[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_or_missing_files_are_errors() {
    let dir = tmp_dir("corrupt");
    let path = dir.join("ckpt.safetensors");
    let a = simclr(&tiny(), 3, 0.5, 1).unwrap();
    train::save(&path, &a.graph, None, &meta(0)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut b = simclr(&tiny(), 3, 0.5, 2).unwrap();
    let before = b.graph.params().to_vec();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let e = train::load(&path, &mut b.graph, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ckpt.safetensors"), "{e}");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(train::load(&path, &mut b.graph, None).is_err());
    assert!(train::load(dir.join("missing.safetensors"), &mut b.graph, None).is_err());
    assert_eq!(b.graph.params(), &before[..]);
    assert!(
        train::resume_latest(dir.join("nowhere"), &mut b.graph, None).is_err()
            || train::resume_latest(dir.join("nowhere"), &mut b.graph, None)
                .unwrap()
                .is_none()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
