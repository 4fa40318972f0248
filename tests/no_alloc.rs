//! Once warmed up, the GEMM and the convolution passes do not touch the heap: their packing
//! buffers and scratch are per-thread and reused. A counting global allocator proves it (on
//! a one-thread pool, so the thread that warmed the buffers is the one measured). The counter
//! is per thread: the test harness allocates on its own threads whenever another test ends,
//! and a process-wide count would see those (it did, under load: "gemm allocated 18 times").

use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d,
};
use selfsup::kernels::gemm::{gemm, Fused, GemmParams, MatMut, MatRef};
use selfsup::train::Method;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations of this thread (a `const` thread-local, so reading it never allocates).
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Each measurement holds this lock, so the measured tests do not compete for the cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn allocations_during(mut f: impl FnMut()) -> usize {
    f(); // warm-up: buffers grow to their steady size
    f();
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn gemm_and_conv_allocate_nothing_in_steady_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let (m, n, k) = (150, 700, 530);
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let bias = vec![1.0f32; n];
        let epi = Fused {
            col_bias: Some(&bias),
            relu: true,
            ..Fused::default()
        };
        let count = allocations_during(|| {
            gemm(
                &GemmParams::new().epilogue(&epi),
                MatRef::row_major(&a, m, k).unwrap(),
                MatRef::row_major(&b, k, n).unwrap(),
                MatMut::row_major(&mut c, m, n).unwrap(),
            )
            .unwrap();
        });
        assert_eq!(count, 0, "gemm allocated {count} times");

        for g in [
            Conv2d::new(4, 8, 16, 16, 16, 3, 1, 1),
            Conv2d::new(40, 8, 8, 8, 16, 3, 2, 1),
            // Pointwise strided (the ResNet shortcuts), with whole and padded pixel vectors.
            Conv2d::new(40, 8, 16, 16, 16, 1, 2, 0),
            Conv2d::new(40, 8, 7, 5, 16, 1, 3, 0),
            // Winograd F(2x2, 3x3) (AVX-512 or AVX2), several groups of images: the forward
            // pass, the input gradient through it and (AVX-512) the weight gradient (one chunk
            // per group, and more groups than chunks).
            Conv2d::new(20, 64, 8, 8, 64, 3, 1, 1),
            Conv2d::new(40, 64, 16, 16, 64, 3, 1, 1),
        ] {
            let x = vec![0.1f32; g.x_len()];
            let w = vec![0.2f32; g.w_len()];
            let dy = vec![0.3f32; g.y_len()];
            let mut y = vec![0.0f32; g.y_len()];
            let mut dx = vec![0.0f32; g.x_len()];
            let mut dw = vec![0.0f32; g.w_len()];
            let count = allocations_during(|| {
                conv2d_forward(&g, &x, &w, None, true, &mut y).unwrap();
                conv2d_backward_input(&g, &dy, &w, &mut dx).unwrap();
                conv2d_backward_weight(&g, &x, &dy, &mut dw, false).unwrap();
            });
            assert_eq!(count, 0, "{g:?}: conv passes allocated {count} times");
        }
    });
}

#[test]
fn nt_xent_allocates_nothing_with_a_warm_workspace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use selfsup::kernels::contrastive::ntxent::{NtXent, NtXentConfig};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let (m, d) = (1100usize, 24usize); // several tiles of 128 rows and a partial one
        let z: Vec<f32> = (0..m * d).map(|k| ((k * 37 % 101) as f32) - 50.0).collect();
        let mut dz = vec![0.0f32; m * d];
        let mut ws = NtXent::new();
        let cfg = NtXentConfig::new(0.1);
        let count = allocations_during(|| {
            ws.forward_backward(&z, m, d, &cfg, &mut dz).unwrap();
        });
        assert_eq!(count, 0, "NT-Xent allocated {count} times");
    });
}

#[test]
fn a_training_step_allocates_nothing_once_built() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use selfsup::graph::Mode;
    use selfsup::nn::{encoder_classifier, simclr, ResNetConfig};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let cfg = ResNetConfig {
            in_channels: 3,
            image_size: 16,
            widths: vec![8, 16],
            blocks: vec![1, 2],
            head_hidden: 16,
            head_out: 8,
        };
        let mut m = simclr(&cfg, 6, 0.5, 1).unwrap();
        let len: usize = m.graph.shape(m.input).iter().product();
        let x: Vec<f32> = (0..len)
            .map(|k| ((k * 31 % 97) as f32) / 97.0 - 0.5)
            .collect();
        m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
        let count = allocations_during(|| {
            m.graph.forward(Mode::Train).unwrap();
            m.graph.backward().unwrap();
            let (p, g, _) = m.graph.params_and_grads();
            for (p, g) in p.iter_mut().zip(g) {
                *p -= 0.01 * g;
            }
        });
        assert_eq!(count, 0, "a SimCLR step allocated {count} times");

        let mut c = encoder_classifier(&cfg, 8, 4, 2).unwrap();
        let len: usize = c.graph.shape(c.input).iter().product();
        c.graph
            .input_mut(c.input)
            .unwrap()
            .copy_from_slice(&x[..len]);
        c.graph
            .set_labels(c.loss, &[0, 1, 2, 3, 0, 1, 2, 3])
            .unwrap();
        let count = allocations_during(|| {
            c.graph.forward(Mode::Train).unwrap();
            c.graph.backward().unwrap();
            c.graph.forward_to(c.h, Mode::Eval).unwrap();
        });
        assert_eq!(count, 0, "a classifier step allocated {count} times");
    });
}

#[test]
fn a_quick_thoughts_pairwise_step_allocates_nothing_once_built() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use selfsup::graph::{GraphBuilder, Mode};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let (n, fin, d) = (40usize, 12usize, 16usize);
        // One encoder on both sides (the gradient is the sum of two) and a second graph
        // with two encoders.
        for shared in [true, false] {
            let mut b = GraphBuilder::new();
            let x = b.input("x", &[n, fin]).unwrap();
            let f = b.linear("f", x, d, true, false).unwrap();
            let g = if shared {
                f
            } else {
                b.linear("g", x, d, false, false).unwrap()
            };
            let loss = b.qt_pairwise("qt", f, g).unwrap();
            let mut graph = b.build(3).unwrap();
            let xv: Vec<f32> = (0..n * fin)
                .map(|k| ((k * 31 % 97) as f32) / 97.0 - 0.5)
                .collect();
            graph.input_mut(x).unwrap().copy_from_slice(&xv);
            // More than one parallel chunk of triplets.
            let triplets: Vec<(u32, u32, u32)> = (0..600u32)
                .map(|k| (k % 40, (k + 1) % 40, (k * 7 + 3) % 40))
                .collect();
            let mut acc = 0.0f32;
            let count = allocations_during(|| {
                graph.set_triplets(loss, &triplets).unwrap();
                graph.forward(Mode::Train).unwrap();
                graph.backward().unwrap();
                acc += graph.accuracy(loss).unwrap();
                let (p, g, _) = graph.params_and_grads();
                for (p, g) in p.iter_mut().zip(g) {
                    *p -= 0.01 * g;
                }
            });
            assert!(acc.is_finite());
            assert_eq!(
                count, 0,
                "a pairwise step (shared: {shared}) allocated {count} times"
            );
        }
    });
}

#[test]
fn a_quick_thoughts_trainer_step_allocates_nothing_even_across_epochs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use selfsup::nn::{QtObjective, SentenceEncoderConfig, SentenceEncoderKind};
    use selfsup::optim::{AdamWConfig, LrSchedule, OptimizerConfig};
    use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};
    use selfsup::train::text::{QtConfig, QtTrainer, TokenizedCorpus};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let docs: Vec<Vec<String>> = builtin_corpus(&CorpusConfig {
            documents: 8,
            seed: 1,
        })
        .into_iter()
        .map(|d| d.sentences)
        .collect();
        let vocab = Vocab::build(docs.iter().flatten(), 1, 1000).unwrap();
        let corpus = std::sync::Arc::new(TokenizedCorpus::new(&docs, &vocab, 12).unwrap());
        for objective in [QtObjective::InBatch, QtObjective::Pairwise] {
            let cfg = QtConfig {
                encoder: SentenceEncoderConfig {
                    kind: SentenceEncoderKind::Cnn,
                    vocab: vocab.len(),
                    embed_dim: 8,
                    channels: 16,
                    kernel: 3,
                    max_len: 12,
                },
                batch: 16,
                objective,
                temperature: 1.0,
                optimizer: OptimizerConfig::AdamW(AdamWConfig::default()),
                schedule: LrSchedule::new(1e-3, 0, 1000).unwrap(),
                seed: 2,
            };
            let mut t = QtTrainer::new(cfg, std::sync::Arc::clone(&corpus)).unwrap();
            // A few steps per epoch, so the measured calls lay out new epochs too.
            let spe = t.steps_per_epoch();
            assert!(spe <= 8, "{spe} steps per epoch");
            let count = allocations_during(|| {
                for _ in 0..spe + 1 {
                    t.train_step().unwrap();
                }
            });
            assert_eq!(count, 0, "{objective:?}: {count} allocations");
        }
    });
}

#[test]
fn a_data_parallel_step_allocates_nothing_once_warm() {
    // Two ranks as threads (`LocalGroup`), each on its own one-thread pool: the gathered
    // NT-Xent, synchronized BatchNorm and the gradient all-reduce reuse buffers sized by
    // the first step.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use selfsup::dist::{all_reduce_sum, Collectives, LocalGroup, Scratch};
    use selfsup::graph::Mode;
    use selfsup::nn::{simclr, ResNetConfig};
    let counts: Vec<usize> = LocalGroup::run(2, |comm| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            let cfg = ResNetConfig {
                in_channels: 3,
                image_size: 16,
                widths: vec![8, 16],
                blocks: vec![1, 1],
                head_hidden: 16,
                head_out: 8,
            };
            let mut m = simclr(&cfg, 6, 0.5, 1).unwrap();
            m.graph.set_sync_batchnorm(true);
            let r = comm.rank();
            let len: usize = m.graph.shape(m.input).iter().product();
            let x: Vec<f32> = (0..len)
                .map(|k| (((k + 7 * r) * 31 % 97) as f32) / 97.0 - 0.5)
                .collect();
            m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
            let mut scratch = Scratch::default();
            allocations_during(|| {
                m.graph.forward_with(Mode::Train, &comm).unwrap();
                m.graph.backward_with(&comm).unwrap();
                all_reduce_sum(&comm, m.graph.param_grads_mut(), &mut scratch).unwrap();
                comm.broadcast_f32(m.graph.buffers_mut()).unwrap();
            })
        })
    });
    assert_eq!(counts, [0, 0], "a data-parallel step allocated");
}
