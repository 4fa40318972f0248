//! The sharding under `mpirun` (feature `mpi`): run by `cargo test --features mpi`, this
//! program starts itself as the ranks of `mpirun -n 2` and `-n 3` jobs. Each rank builds
//! the trainers of a data-parallel run and all-gathers the images (SimCLR / RotNet) and the
//! sentences (Quick Thoughts) it takes at every step of two epochs; rank 0 checks that
//! across the ranks every item of an epoch's full batches is taken exactly once, and that
//! the ranks' parts, in rank order, are the batch one process of the whole batch takes.
//! (`harness = false`: MPI initializes once per process, so the checks run in the ranks.)

use std::process::{Command, ExitCode};
use std::sync::Arc;

use selfsup::data::augment::{RotnetAugment, SimclrAugment};
use selfsup::data::builtin::generate;
use selfsup::dist::mpi::{finalize, MpiComm};
use selfsup::dist::Collectives;
use selfsup::nn::{QtObjective, ResNetConfig, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, LrSchedule, OptimizerConfig, SgdConfig};
use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::text::{QtConfig, QtTrainer, TokenizedCorpus};
use selfsup::train::Method;

const CHILD: &str = "SELFSUP_MPI_SHARDS_RANK";
const BATCH: usize = 4;

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return rank_main();
    }
    let me = std::env::current_exe().expect("this test's path");
    for p in [2, 3] {
        let out = Command::new("mpirun")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env(CHILD, "1")
            .args(["--oversubscribe", "--bind-to", "none", "--timeout", "240"])
            .args(["-n", &p.to_string()])
            .arg(&me)
            .output()
            .expect("run mpirun (apt-get install openmpi-bin libopenmpi-dev)");
        let err = String::from_utf8_lossy(&out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("shards ok") {
            eprintln!("mpirun -n {p}: {:?}\n{text}\n{err}", out.status);
            return ExitCode::FAILURE;
        }
        println!("mpirun -n {p}: {}", text.trim());
    }
    println!("test result: ok. the shards of mpirun -n 2 and -n 3 partition every epoch");
    ExitCode::SUCCESS
}

fn image_config(method: ImageMethod) -> PretrainConfig {
    PretrainConfig {
        method,
        model: ResNetConfig {
            in_channels: 3,
            image_size: 32,
            widths: vec![4],
            blocks: vec![1],
            head_hidden: 8,
            head_out: 4,
        },
        batch: BATCH,
        tau: 0.5,
        optimizer: OptimizerConfig::Sgd(SgdConfig::default()),
        schedule: LrSchedule::new(0.1, 0, 10).unwrap(),
        augment: SimclrAugment::for_image(32, 3, 0.5),
        rotnet: RotnetAugment::default(),
        seed: 3,
        sync_bn: false,
        local_negatives: false,
    }
}

/// Checks on rank 0 that the gathered parts of every step equal the one-process batch and
/// that across an epoch every item is taken at most once, `steps_per_epoch` full global
/// batches in all; the other ranks only send their parts.
#[allow(clippy::too_many_arguments)]
fn check(
    comm: &dyn Collectives,
    what: &str,
    steps: u64,
    n_items: usize,
    mut mine: impl FnMut(u64) -> Vec<usize>,
    mut whole: impl FnMut(u64) -> Vec<usize>,
    steps_per_epoch: u64,
) -> Result<(), String> {
    let p = comm.size();
    let mut seen = vec![u64::MAX; n_items];
    let mut taken = 0usize;
    for step in 0..steps {
        let local: Vec<u64> = mine(step).iter().map(|&i| i as u64).collect();
        let mut all = vec![0u64; p * local.len()];
        comm.all_gather_u64(&local, &mut all)
            .map_err(|e| e.to_string())?;
        if comm.rank() != 0 {
            continue;
        }
        let epoch = step / steps_per_epoch;
        let want: Vec<u64> = whole(step).iter().map(|&i| i as u64).collect();
        if all != want {
            return Err(format!(
                "{what}: step {step}: the ranks' parts {all:?} are not the one-process batch {want:?}"
            ));
        }
        for &i in &all {
            if seen[i as usize] == epoch {
                return Err(format!("{what}: item {i} twice in epoch {epoch}"));
            }
            seen[i as usize] = epoch;
            taken += 1;
        }
        if (step + 1) % steps_per_epoch == 0 {
            let want = steps_per_epoch as usize * p * local.len();
            if taken != want {
                return Err(format!(
                    "{what}: epoch {epoch} took {taken} items, not {want}"
                ));
            }
            taken = 0;
        }
    }
    Ok(())
}

fn rank_main() -> ExitCode {
    let comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("MPI: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (rank, p) = (comm.rank(), comm.size());
    let mut data = generate(50, 1);
    data.labels = None;
    data.classes = None;
    let data = Arc::new(data);
    let mut verdicts = Vec::new();
    for method in [ImageMethod::SimClr, ImageMethod::RotNet] {
        let cfg = image_config(method);
        let mut whole_cfg = cfg.clone();
        whole_cfg.batch = BATCH * p;
        let mut one = Pretrainer::new(whole_cfg, Arc::clone(&data)).unwrap();
        let mut t =
            Pretrainer::in_group(cfg, Arc::clone(&data), Box::new(comm.duplicate())).unwrap();
        let spe = t.steps_per_epoch();
        verdicts.push(check(
            &comm,
            method.name(),
            2 * spe,
            data.n,
            |s| t.batch_images(s).1.to_vec(),
            |s| one.batch_images(s).1.to_vec(),
            spe,
        ));
    }
    // Quick Thoughts: each rank's run of contiguous sentences.
    let docs: Vec<Vec<String>> = builtin_corpus(&CorpusConfig {
        documents: 30,
        seed: 2,
    })
    .into_iter()
    .map(|d| d.sentences)
    .collect();
    let vocab = Vocab::build(docs.iter().flatten(), 1, 1000).unwrap();
    let corpus = Arc::new(TokenizedCorpus::new(&docs, &vocab, 8).unwrap());
    let qt = |batch| QtConfig {
        encoder: SentenceEncoderConfig {
            kind: SentenceEncoderKind::Bow,
            vocab: vocab.len(),
            embed_dim: 4,
            channels: 4,
            kernel: 1,
            max_len: 8,
        },
        batch,
        objective: QtObjective::InBatch,
        temperature: 1.0,
        optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
        schedule: LrSchedule::new(1e-3, 0, 10).unwrap(),
        seed: 4,
    };
    let mut one = QtTrainer::new(qt(BATCH * p), Arc::clone(&corpus)).unwrap();
    let mut t =
        QtTrainer::in_group(qt(BATCH), Arc::clone(&corpus), Box::new(comm.duplicate())).unwrap();
    let spe = t.steps_per_epoch();
    verdicts.push(check(
        &comm,
        "quickthought",
        2 * spe,
        corpus.sentences(),
        |s| t.batch(s).unwrap().sentences.to_vec(),
        |s| one.batch(s).unwrap().sentences.to_vec(),
        spe,
    ));
    drop(t);
    let failed: Vec<String> = verdicts.into_iter().filter_map(Result::err).collect();
    if rank == 0 {
        if failed.is_empty() {
            println!("shards ok for SimCLR, RotNet and Quick Thoughts over {p} ranks");
        } else {
            for f in &failed {
                eprintln!("{f}");
            }
        }
    }
    drop(comm);
    finalize();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
