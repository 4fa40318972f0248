//! The benchmark workloads of `selfsup bench`: every workload the command knows, in one place.
//!
//! A [`Workload`] is a name, the work one operation does (FLOPs or images, from which the
//! reported rate follows) and a setup closure that allocates and fills the inputs (untimed)
//! and returns a [`Runnable`] that runs the operation once per call. Adding a workload
//! (convolution, NT-Xent, a SimCLR step) means adding one entry to [`registry`]; the timing,
//! the table, the JSON and the baseline comparison need no change.
//!
//! Names and figures follow `shared/BENCHMARKS.md`, so the JSON can be compared side by side
//! with the reference scripts there.

use anyhow::{bail, ensure, Context, Result};
use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d,
};
use selfsup::kernels::gemm::matmul;

use super::ntxent::NtXentBench;

/// The implementation a workload is timed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reference {
    /// This crate's kernels.
    Selfsup,
    /// `matrixmultiply::sgemm` (threads from `MATMUL_NUM_THREADS`, at most 4).
    Matrixmultiply,
}

impl Reference {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Selfsup => "selfsup",
            Reference::Matrixmultiply => "matrixmultiply",
        }
    }
}

/// One operation, set up and ready: each call runs it once. Inputs live in the closure.
pub type Runnable = Box<dyn FnMut() -> Result<()> + Send>;

/// The setup closure of a workload: allocates and fills the inputs for one reference.
type Setup = Box<dyn Fn(Reference) -> Result<Runnable> + Send + Sync>;

/// The work one operation does; the reported rate is this divided by the median time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Floating-point operations per op, reported as `gflops`.
    Flops(f64),
    /// Images per op, reported as `images_per_s` (training and inference workloads).
    Images(f64),
    /// No natural rate; only `seconds` is reported (NT-Xent loss, for example).
    Seconds,
}

/// One named benchmark workload.
pub struct Workload {
    pub name: &'static str,
    /// One line for humans: what one operation is.
    pub about: String,
    pub work: Work,
    /// The references that implement this workload (`selfsup` always does).
    pub references: &'static [Reference],
    setup: Setup,
}

impl Workload {
    /// Allocates and fills the inputs, checks one result, and returns the timed operation.
    pub fn setup(&self, reference: Reference) -> Result<Runnable> {
        ensure!(
            self.references.contains(&reference),
            "workload '{}' has no '{}' implementation",
            self.name,
            reference.name()
        );
        (self.setup)(reference).with_context(|| format!("setting up workload '{}'", self.name))
    }
}

/// A dense row-major single-precision GEMM `C (m x n) = A (m x k) * B (k x n)`.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub name: &'static str,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Where the shape comes from.
    pub why: &'static str,
}

/// The GEMM workloads: the square figures of `shared/BENCHMARKS.md` and the shapes that
/// the convolutions and heads of ResNet-mini lower to (batch 32 of 32x32 images for the
/// stem and block1, batch 128 of 8x8 for block3, 2 x 4096 rows through a 128-wide layer).
pub const SGEMM_SHAPES: &[GemmShape] = &[
    gemm_shape("sgemm_256", 256, 256, 256, "square"),
    gemm_shape("sgemm_1024", 1024, 1024, 1024, "square"),
    gemm_shape("sgemm_2048", 2048, 2048, 2048, "square"),
    gemm_shape(
        "sgemm_conv_k27",
        32,
        32768,
        27,
        "stem conv 3->32, 3x3, 32 images 32x32",
    ),
    gemm_shape(
        "sgemm_conv_c32",
        32,
        32768,
        288,
        "conv 32->32, 3x3, 32 images 32x32",
    ),
    gemm_shape(
        "sgemm_conv_c128",
        128,
        8192,
        1152,
        "conv 128->128, 3x3, 128 images 8x8",
    ),
    gemm_shape(
        "sgemm_tall_skinny",
        8192,
        64,
        128,
        "8192 rows through a 128->64 layer",
    ),
];

const fn gemm_shape(
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    why: &'static str,
) -> GemmShape {
    GemmShape { name, m, n, k, why }
}

/// The convolution workloads of `shared/BENCHMARKS.md`: 3x3, stride 1, padding 1,
/// `C_in = C_out`, batch 512 (two views of 256 images); one operation is the forward pass,
/// the input gradient and the weight gradient.
pub const CONV_LAYERS: &[(&str, usize, usize)] = &[
    ("conv_32x32_c32", 32, 32),
    ("conv_16x16_c64", 16, 64),
    ("conv_8x8_c128", 8, 128),
];

/// Images per convolution workload.
pub const CONV_BATCH: usize = 512;

/// The NT-Xent workloads of `shared/BENCHMARKS.md`: N images, so 2N rows (the two views of
/// each image are adjacent rows, as in `shared/anchors/torch_reference.py`) of dimension
/// [`NTXENT_D`], temperature [`NTXENT_TAU`]; one operation is the loss and its gradient with
/// respect to the rows.
pub const NTXENT_SIZES: &[(&str, usize)] = &[
    ("ntxent_n256_d128", 256),
    ("ntxent_n1024_d128", 1024),
    ("ntxent_n4096_d128", 4096),
];

/// The row dimension of the NT-Xent workloads.
pub const NTXENT_D: usize = 128;
/// The temperature of the NT-Xent workloads.
pub const NTXENT_TAU: f32 = 0.1;

/// Every workload, in the order they run and are reported.
pub fn registry() -> Vec<Workload> {
    let mut all: Vec<Workload> = SGEMM_SHAPES.iter().map(|&s| sgemm_workload(s)).collect();
    all.extend(
        CONV_LAYERS
            .iter()
            .map(|&(name, hw, c)| conv_workload(name, CONV_BATCH, hw, c)),
    );
    all.extend(
        NTXENT_SIZES
            .iter()
            .map(|&(name, n)| ntxent_workload(name, n, NTXENT_D, NTXENT_TAU)),
    );
    all.push(simclr_step_workload(SIMCLR_IMAGES));
    all.push(embed_workload(EMBED_IMAGES));
    all.push(augment_workload(AUGMENT_IMAGES));
    all.push(quickthought_workload(QT_SENTENCES));
    all
}

/// Sentences per Quick Thoughts step.
pub const QT_SENTENCES: usize = 256;

/// One Quick Thoughts training step with `pretrain --method quickthought`'s default encoders
/// (two CNNs: embedding 64, 256 channels, kernel 3) on 16-token sentences of the built-in
/// corpus: forward, the in-batch loss, backward, AdamW.
fn quickthought_workload(sentences: usize) -> Workload {
    use selfsup::nn::{QtObjective, SentenceEncoderConfig, SentenceEncoderKind};
    use selfsup::optim::{AdamWConfig, LrSchedule, OptimizerConfig};
    use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
    use selfsup::train::text::{QtConfig, QtTrainer, TokenizedCorpus};
    use selfsup::train::Method;
    Workload {
        name: "quickthought_step_cnn_b256",
        about: format!(
            "Quick Thoughts step, {sentences} contiguous built-in sentences of 16 tokens, CNN              f and g (embedding 64, 256 channels, kernel 3), in-batch loss, backward, AdamW              (sentences/s = {sentences} / seconds)"
        ),
        work: Work::Seconds,
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
                temperature: selfsup::train::text::QT_TEMPERATURE,
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
fn augment_workload(images: usize) -> Workload {
    use selfsup::data::augment::{simclr_views, SimclrAugment};
    use selfsup::data::ImageSet;
    const SIDE: usize = 32;
    Workload {
        name: "augment_simclr_32",
        about: format!(
            "SimCLR augmentation, {images} images 3x32x32 -> 2 views (crop, flip, jitter s 0.5, \
             grayscale)"
        ),
        work: Work::Images(images as f64),
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let n = 4 * images;
            let set = ImageSet {
                // Pixels uniform in [0, 1).
                images: filled(n * 3 * SIDE * SIDE, 0x5eed_0401)
                    .into_iter()
                    .map(|x| 0.5 * (x + 1.0))
                    .collect(),
                labels: None,
                n,
                channels: 3,
                height: SIDE,
                width: SIDE,
                classes: None,
            };
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

/// Images per SimCLR step (two views each), as in `shared/BENCHMARKS.md`.
pub const SIMCLR_IMAGES: usize = 256;
/// Images per embedding batch.
pub const EMBED_IMAGES: usize = 512;

/// One SimCLR training step of ResNet-mini: forward of encoder and head on two views of
/// each image, NT-Xent (tau 0.5), backward, SGD with momentum 0.9 and weight decay 1e-6.
fn simclr_step_workload(images: usize) -> Workload {
    use selfsup::graph::Mode;
    use selfsup::nn::{simclr, ResNetConfig};
    use selfsup::optim::{Sgd, SgdConfig};
    Workload {
        name: "simclr_step_resnet_mini_b256",
        about: format!(
            "SimCLR step, ResNet-mini, {images} images x 2 views of 3x32x32 (random data), \
             NT-Xent tau 0.5, backward, SGD momentum 0.9 wd 1e-6"
        ),
        work: Work::Images(images as f64),
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut m = simclr(&ResNetConfig::default(), images, 0.5, 0x5eed_0201)?;
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
fn embed_workload(images: usize) -> Workload {
    use selfsup::graph::{GraphBuilder, Mode};
    use selfsup::nn::{resnet_encoder, ResNetConfig};
    Workload {
        name: "embed_resnet_mini_b512",
        about: format!("ResNet-mini inference of h (eval-mode BatchNorm), {images} images 3x32x32"),
        work: Work::Images(images as f64),
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut b = GraphBuilder::new();
            let enc = resnet_encoder(&mut b, &ResNetConfig::default(), images)?;
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

fn ntxent_workload(name: &'static str, n: usize, d: usize, tau: f32) -> Workload {
    Workload {
        name,
        about: format!(
            "NT-Xent, {} rows x {d} (two views of {n} images), tau {tau}: loss + gradient \
             w.r.t. the rows",
            2 * n
        ),
        work: Work::Seconds,
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            let mut bench = NtXentBench::new(n, d, tau, 0x5eed_0201);
            bench.run()?;
            bench.check()?;
            Ok(Box::new(move || bench.run()))
        }),
    }
}

fn conv_workload(name: &'static str, batch: usize, hw: usize, c: usize) -> Workload {
    let g = Conv2d::new(batch, c, hw, hw, c, 3, 1, 1);
    Workload {
        name,
        about: format!(
            "conv 3x3 s1 p1, {batch} x {c} x {hw} x {hw} -> {c} channels: forward + input \
             gradient + weight gradient"
        ),
        work: Work::Flops(3.0 * 2.0 * (batch * c * hw * hw * c * 9) as f64),
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            g.validate()?;
            let x = filled(g.x_len(), 0x5eed_0101);
            let w = filled(g.w_len(), 0x5eed_0102);
            let dy = vec![1.0f32; g.y_len()];
            let mut y = vec![0.0f32; g.y_len()];
            let mut dx = vec![0.0f32; g.x_len()];
            let mut dw = vec![0.0f32; g.w_len()];
            Ok(Box::new(move || {
                conv2d_forward(&g, &x, &w, None, false, &mut y)?;
                conv2d_backward_input(&g, &dy, &w, &mut dx)?;
                conv2d_backward_weight(&g, &x, &dy, &mut dw, false)?;
                Ok(())
            }))
        }),
    }
}

fn sgemm_workload(shape: GemmShape) -> Workload {
    let GemmShape { m, n, k, .. } = shape;
    Workload {
        name: shape.name,
        about: format!("C = A*B, M={m} N={n} K={k} ({})", shape.why),
        work: Work::Flops(2.0 * m as f64 * n as f64 * k as f64),
        references: &[Reference::Selfsup, Reference::Matrixmultiply],
        setup: Box::new(move |reference| {
            let mut bench = Sgemm::new(shape, reference)?;
            bench.run()?;
            bench.check()?;
            Ok(Box::new(move || bench.run()))
        }),
    }
}

/// The operands of one GEMM workload, allocated and filled once, outside the timing.
struct Sgemm {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    reference: Reference,
}

impl Sgemm {
    fn new(shape: GemmShape, reference: Reference) -> Result<Self> {
        let GemmShape { m, n, k, .. } = shape;
        // matrixmultiply takes strides as isize.
        for d in [m, n, k] {
            isize::try_from(d).context("dimension does not fit in isize")?;
        }
        Ok(Self {
            m,
            n,
            k,
            a: filled(m * k, 0x5eed_0001),
            b: filled(k * n, 0x5eed_0002),
            c: vec![0.0; m * n],
            reference,
        })
    }

    fn run(&mut self) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        match self.reference {
            Reference::Selfsup => matmul(m, n, k, &self.a, &self.b, &mut self.c)?,
            Reference::Matrixmultiply => {
                // SAFETY: `a` is m*k, `b` is k*n and `c` is m*n dense row-major f32 buffers
                // owned by `self` (so they live across the call and `c` is not aliased); the
                // strides (k, 1), (n, 1), (n, 1) stay inside them; `new` checked that the
                // dimensions fit in isize.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        self.a.as_ptr(),
                        k as isize,
                        1,
                        self.b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        self.c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
        }
        Ok(())
    }

    /// Spot-checks a few entries of C against an f64 dot product, so a broken kernel cannot
    /// report a fast time. The bound is the classical 2*K*eps on the sum of |a_ip * b_pj|.
    fn check(&self) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut rng = XorShift::new(0xc0ffee);
        let picks = (0..16).map(|_| (rng.below(m), rng.below(n)));
        for (i, j) in picks.chain([(0, 0), (m - 1, n - 1)]) {
            let (mut exact, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = f64::from(self.a[i * k + p]) * f64::from(self.b[p * n + j]);
                exact += t;
                abs += t.abs();
            }
            let got = f64::from(self.c[i * n + j]);
            let bound = 2.0 * k as f64 * f64::from(f32::EPSILON) * abs + 1e-6;
            let err = (got - exact).abs();
            if err.is_nan() || err > bound {
                bail!(
                    "wrong result from {}: C[{i}, {j}] = {got}, expected {exact} (within {bound:.1e})",
                    self.reference.name()
                );
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64) for benchmark inputs.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1), from the top 24 bits (exact in f32).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Uniform-ish in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `len` values uniform in [-1, 1), the same for the same seed on every machine.
pub fn filled(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift::new(seed);
    (0..len).map(|_| rng.next_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_shapes_positive() {
        let all = registry();
        let mut names: Vec<_> = all.iter().map(|w| w.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for s in SGEMM_SHAPES {
            assert!(s.m > 0 && s.n > 0 && s.k > 0, "{}", s.name);
        }
    }

    #[test]
    fn fill_is_deterministic_and_in_range() {
        let a = filled(10_000, 7);
        assert_eq!(a, filled(10_000, 7));
        assert_ne!(a, filled(10_000, 8));
        assert!(a.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn small_gemm_runs_and_checks_on_both_references() {
        let shape = gemm_shape("t", 7, 19, 5, "test");
        for r in [Reference::Selfsup, Reference::Matrixmultiply] {
            let w = sgemm_workload(shape);
            let mut op = w.setup(r).unwrap();
            op().unwrap();
        }
    }

    #[test]
    fn small_ntxent_runs_and_checks() {
        let w = ntxent_workload("t", 50, 20, 0.1);
        let mut op = w.setup(Reference::Selfsup).unwrap();
        op().unwrap();
        assert!(w.setup(Reference::Matrixmultiply).is_err());
        assert_eq!(w.work, Work::Seconds);
    }

    #[test]
    fn check_catches_a_wrong_result() {
        let shape = gemm_shape("t", 4, 4, 4, "test");
        let mut g = Sgemm::new(shape, Reference::Selfsup).unwrap();
        g.run().unwrap();
        g.c[15] += 1.0;
        let err = g.check().unwrap_err().to_string();
        assert!(err.contains("C[3, 3]"), "{err}");
    }
}
