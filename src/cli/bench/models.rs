//! The whole-model workloads of `selfsup bench`: a SimCLR training step of ResNet-mini and
//! its inference (32x32, and resnet_mini96's 96x96 with the stride-2 stem), the SimCLR
//! augmentation of a batch, and a Quick Thoughts training step. The only workloads that
//! reach the library's models, data and trainers (all imported here).

use anyhow::{ensure, Result};
use selfsup::data::augment::{simclr_views, SimclrAugment};
use selfsup::data::image::to_byte;
use selfsup::data::ImageSet;
use selfsup::graph::{GraphBuilder, Mode};
use selfsup::nn::{
    resnet_encoder, simclr, QtObjective, ResNetConfig, SentenceEncoderConfig, SentenceEncoderKind,
};
use selfsup::optim::{AdamWConfig, LrSchedule, OptimizerConfig, Sgd, SgdConfig};
use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
use selfsup::train::text::{QtConfig, QtTrainer, TokenizedCorpus, QT_TEMPERATURE};
use selfsup::train::Method;

use super::inputs::filled;
use super::workload::{Reference, Work, Workload};

/// Sentences per Quick Thoughts step.
pub const QT_SENTENCES: usize = 256;

/// One Quick Thoughts training step with `pretrain --method quickthought`'s default encoders
/// (two CNNs: embedding 64, 256 channels, kernel 3) on 16-token sentences of the built-in
/// corpus: forward, the in-batch loss, backward, AdamW.
pub fn quickthought_workload(sentences: usize) -> Workload {
    Workload {
        name: "quickthought_step_cnn_b256",
        about: format!(
            "Quick Thoughts step, {sentences} contiguous built-in sentences of 16 tokens, CNN              f and g (embedding 64, 256 channels, kernel 3), in-batch loss, backward, AdamW              (sentences/s = {sentences} / seconds)"
        ),
        // The two CNNs' convolutions (64 x 3 -> 256 at 16 positions), forward and both
        // gradients; the embeddings and the in-batch scores are left out.
        work: Work::Seconds {
            flops: Some((sentences * 2 * 3 * 2 * 64 * 3 * 256 * 16) as f64),
        },
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let docs: Vec<Vec<String>> = builtin_corpus(&CorpusConfig {
                documents: 200,
                seed: 0x5eed_0501,
            })
            .into_iter()
            .map(|d| d.sentences)
            .collect();
            let vocab = Vocab::build(docs.iter().flatten(), 1, 20_000)?;
            let corpus = std::sync::Arc::new(TokenizedCorpus::new(&docs, &vocab, 16)?);
            let cfg = QtConfig {
                encoder: SentenceEncoderConfig {
                    kind: SentenceEncoderKind::Cnn,
                    vocab: vocab.len(),
                    embed_dim: 64,
                    channels: 256,
                    kernel: 3,
                    max_len: 16,
                },
                batch: sentences,
                objective: QtObjective::InBatch,
                temperature: QT_TEMPERATURE,
                optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
                schedule: LrSchedule::new(1e-3, 0, 1 << 40)?,
                seed: 0x5eed_0502,
            };
            let mut t = QtTrainer::new(cfg, corpus)?;
            // The check: a finite loss near ln(sentences - 1) or above at initialization (the
            // scores of untrained encoders are large, so the softmax starts peaked).
            let first = t.train_step()?.loss;
            let chance = ((sentences - 1) as f64).ln();
            ensure!(
                first.is_finite() && first > 0.5 * chance,
                "Quick Thoughts loss {first} at initialization (chance ln({}) = {chance})",
                sentences - 1
            );
            Ok(Box::new(move || t.train_step().map(|_| ()).map_err(Into::into)))
        }),
    }
}

/// Images per SimCLR augmentation batch (two views each), the batch of the SimCLR step.
pub const AUGMENT_IMAGES: usize = 256;

/// The two-view SimCLR augmentation of a batch of 32x32 RGB images (crop, flip, color jitter
/// at strength 0.5, grayscale; no blur, as for CIFAR), a new epoch on every call.
pub fn augment_workload(images: usize) -> Workload {
    const SIDE: usize = 32;
    Workload {
        name: "augment_simclr_32",
        about: format!(
            "SimCLR augmentation, {images} images 3x32x32 -> 2 views (crop, flip, jitter s 0.5, \
             grayscale)"
        ),
        work: Work::Images {
            images: images as f64,
            flops: None,
        },
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let n = 4 * images;
            // Pixels uniform in [0, 1), as bytes.
            let pixels = filled(n * 3 * SIDE * SIDE, 0x5eed_0401)
                .into_iter()
                .map(|x| to_byte(0.5 * (x + 1.0)))
                .collect();
            let set = ImageSet::uniform(pixels, n, 3, SIDE, SIDE);
            let cfg = SimclrAugment::for_image(SIDE, 3, 0.5);
            let indices: Vec<usize> = (0..images).map(|k| (k * 7) % n).collect();
            let mut out = vec![0.0f32; 2 * images * cfg.view_len(3)];
            let mut epoch = 0u64;
            simclr_views(&set, &indices, &cfg, 0x5eed_0402, epoch, &mut out)?;
            ensure!(
                out.iter().all(|v| (0.0..=1.0).contains(v)),
                "augmented views leave [0, 1]"
            );
            Ok(Box::new(move || {
                epoch += 1;
                simclr_views(&set, &indices, &cfg, 0x5eed_0402, epoch, &mut out)?;
                Ok(())
            }))
        }),
    }
}

/// Images per SimCLR step (two views each), as in docs/performance.md.
pub const SIMCLR_IMAGES: usize = 256;
/// Images per embedding batch.
pub const EMBED_IMAGES: usize = 512;
/// Images per SimCLR step of resnet_mini96 (two views each).
pub const SIMCLR96_IMAGES: usize = 128;
/// Images per embedding batch of resnet_mini96.
pub const EMBED96_IMAGES: usize = 256;

/// resnet_mini96: ResNet-mini on 3x96x96 images, whose stem then has stride 2
/// ([`ResNetConfig::stem_stride`]); widths and head as ResNet-mini.
fn resnet_mini96() -> ResNetConfig {
    ResNetConfig {
        image_size: 96,
        ..ResNetConfig::default()
    }
}

/// One SimCLR training step of ResNet-mini: forward of encoder and head on two views of
/// each image, NT-Xent (tau 0.5), backward, SGD with momentum 0.9 and weight decay 1e-6.
pub fn simclr_step_workload(images: usize) -> Workload {
    simclr_step(
        "simclr_step_resnet_mini_b256",
        format!(
            "SimCLR step, ResNet-mini, {images} images x 2 views of 3x32x32 (random data), \
             NT-Xent tau 0.5, backward, SGD momentum 0.9 wd 1e-6"
        ),
        ResNetConfig::default(),
        images,
    )
}

/// The SimCLR step of [`simclr_step_workload`] for resnet_mini96 (3x96x96 images).
pub fn simclr_step96_workload(images: usize) -> Workload {
    simclr_step(
        "simclr_step_resnet_mini96_b128",
        format!(
            "SimCLR step, resnet_mini96 (stride-2 stem), {images} images x 2 views of 3x96x96 \
             (random data), NT-Xent tau 0.5, backward, SGD momentum 0.9 wd 1e-6"
        ),
        resnet_mini96(),
        images,
    )
}

/// The SimCLR step workload `name` of the encoder `cfg` on `images` images per step.
fn simclr_step(name: &'static str, about: String, cfg: ResNetConfig, images: usize) -> Workload {
    Workload {
        name,
        about,
        // Forward and both gradients of encoder and head for the 2 views, and NT-Xent's
        // three products of the 2N x head_out projections.
        work: Work::Images {
            images: images as f64,
            flops: Some(
                2.0 * images as f64 * 3.0 * cfg.forward_flops(true)
                    + 3.0 * 2.0 * (2 * images * 2 * images * cfg.head_out) as f64,
            ),
        },
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut m = simclr(&cfg, images, 0.5, 0x5eed_0201)?;
            let len: usize = m.graph.shape(m.input).iter().product();
            m.graph
                .input_mut(m.input)?
                .copy_from_slice(&filled(len, 0x5eed_0202));
            let mut opt = Sgd::new(
                SgdConfig {
                    momentum: 0.9,
                    weight_decay: 1e-6,
                    ..SgdConfig::default()
                },
                m.graph.params().len(),
            )?;
            let mut step = move || -> Result<f32> {
                m.graph.forward(Mode::Train)?;
                m.graph.backward()?;
                let (p, g, groups) = m.graph.params_and_grads();
                opt.step(p, g, groups, 0.1)?;
                Ok(m.graph.loss(m.loss))
            };
            // The check: a finite loss near ln(2N - 1) for random data at initialization.
            let first = step()?;
            let chance = ((2 * images - 1) as f32).ln();
            ensure!(
                first.is_finite() && (first - chance).abs() < 1.0,
                "SimCLR loss {first} at initialization, expected about ln({}) = {chance}",
                2 * images - 1
            );
            Ok(Box::new(move || step().map(|_| ())))
        }),
    }
}

/// Inference of the representation h (eval-mode BatchNorm) for a batch of images.
pub fn embed_workload(images: usize) -> Workload {
    embed(
        "embed_resnet_mini_b512",
        format!("ResNet-mini inference of h (eval-mode BatchNorm), {images} images 3x32x32"),
        ResNetConfig::default(),
        images,
    )
}

/// The inference of [`embed_workload`] for resnet_mini96 (3x96x96 images).
pub fn embed96_workload(images: usize) -> Workload {
    embed(
        "embed_resnet_mini96_b256",
        format!(
            "resnet_mini96 (stride-2 stem) inference of h (eval-mode BatchNorm), {images} \
             images 3x96x96"
        ),
        resnet_mini96(),
        images,
    )
}

/// The inference workload `name` of the encoder `cfg` on batches of `images` images.
fn embed(name: &'static str, about: String, cfg: ResNetConfig, images: usize) -> Workload {
    Workload {
        name,
        about,
        work: Work::Images {
            images: images as f64,
            flops: Some(images as f64 * cfg.forward_flops(false)),
        },
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut b = GraphBuilder::new();
            let enc = resnet_encoder(&mut b, &cfg, images)?;
            let mut g = b.build(0x5eed_0301)?;
            let len: usize = g.shape(enc.input).iter().product();
            g.input_mut(enc.input)?
                .copy_from_slice(&filled(len, 0x5eed_0302));
            g.forward_to(enc.h, Mode::Eval)?;
            let h = g.value(enc.h);
            ensure!(
                h.iter().all(|v| v.is_finite()) && h.iter().any(|&v| v > 0.0),
                "embedding is not finite and positive somewhere"
            );
            Ok(Box::new(move || {
                g.forward_to(enc.h, Mode::Eval)?;
                Ok(())
            }))
        }),
    }
}
