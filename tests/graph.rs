//! The static graph: whole-graph finite differences on a tiny encoder, overfitting a small
//! batch, determinism across thread counts, shape errors at build time, modes.

use selfsup::graph::{Graph, GraphBuilder, Mode, TensorId};
use selfsup::kernels::contrastive::quickthought::qt_neighbor_targets;
use selfsup::nn::{
    encoder_classifier, linear_probe, projection_head, resnet_encoder, simclr, ResNetConfig,
};
use selfsup::Error;

fn tiny() -> ResNetConfig {
    ResNetConfig {
        in_channels: 2,
        image_size: 8,
        widths: vec![4, 6],
        blocks: vec![1, 2],
        head_hidden: 8,
        head_out: 5,
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Central difference of the loss (summed in f64 by the loss kernels) in parameter `k`.
fn central_difference(
    graph: &mut selfsup::graph::Graph,
    loss: selfsup::graph::TensorId,
    k: usize,
    rel: f32,
) -> f64 {
    let base = graph.params()[k];
    let h = rel * base.abs().max(0.1);
    let mut at = |v: f32| {
        graph.params_mut()[k] = v;
        graph.forward(Mode::Train).unwrap();
        graph.loss_f64(loss)
    };
    let fd = (at(base + h) - at(base - h)) / (f64::from(base + h) - f64::from(base - h));
    graph.params_mut()[k] = base;
    fd
}

/// Per parameter tensor: up to `per_tensor` evenly spaced entries, the relative error
/// `|fd - g| / |g|` of the vectors. In f32 a single difference carries rounding noise of
/// the whole forward, and in a network with ReLUs a perturbation may cross a kink, so the
/// check is on each tensor's vector, which a wrong gradient (a missing accumulation, a
/// transposed weight) fails by far.
fn check_tensors(
    graph: &mut selfsup::graph::Graph,
    loss: selfsup::graph::TensorId,
    per_tensor: usize,
    rel: f32,
    tol: f64,
) {
    graph.forward(Mode::Train).unwrap();
    graph.backward().unwrap();
    let grads = graph.param_grads().to_vec();
    let info: Vec<(String, std::ops::Range<usize>)> = graph
        .param_info()
        .iter()
        .map(|p| (p.name.clone(), p.range.clone()))
        .collect();
    for (name, r) in info {
        let step = (r.len() / per_tensor).max(1);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for k in r.clone().step_by(step) {
            let g = f64::from(grads[k]);
            let fd = central_difference(graph, loss, k, rel);
            num += (fd - g).powi(2);
            den += g * g;
        }
        let err = (num / den.max(1e-30)).sqrt();
        assert!(
            err <= tol,
            "{name}: |fd - g| / |g| = {err:.3e} (tol {tol}), |g| = {:.3e}",
            den.sqrt()
        );
    }
}

/// Every parameter tensor of SimCLR on a tiny encoder (conv, BatchNorm with batch
/// statistics, ReLU, residual adds with and without projection shortcuts, pooling, the head,
/// NT-Xent) against central differences.
#[test]
fn simclr_gradients_match_finite_differences() {
    let mut m = simclr(&tiny(), 3, 0.5, 7).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 1);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    check_tensors(&mut m.graph, m.loss, 24, 3e-3, 0.05);
}

#[test]
fn classifier_gradients_match_finite_differences() {
    let mut m = encoder_classifier(&tiny(), 5, 3, 3).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 2);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    m.graph.set_labels(m.loss, &[0, 2, 1, 1, 0]).unwrap();
    check_tensors(&mut m.graph, m.loss, 24, 3e-3, 0.05);
}

/// Without ReLU the loss is smooth, so every entry is checked on its own, tightly: conv
/// (stride 1 and 2), BatchNorm, a residual add whose input feeds two nodes, pooling,
/// linear, softmax cross-entropy.
#[test]
fn smooth_graph_gradients_match_finite_differences_entrywise() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[5, 2, 6, 6]).unwrap();
    let y = b.conv2d("c1", x, 4, 3, 1, 1).unwrap();
    let y = b.batchnorm("b1", y, false).unwrap();
    let y2 = b.conv2d("c2", y, 4, 3, 1, 1).unwrap();
    let y = b.add("add", y2, y, false).unwrap();
    let y = b.conv2d("c3", y, 3, 3, 2, 1).unwrap();
    let y = b.batchnorm("b3", y, false).unwrap();
    let h = b.global_avg_pool("pool", y).unwrap();
    let h = b.linear("fc0", h, 4, true, false).unwrap();
    let l = b.linear("fc", h, 3, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(5).unwrap();
    g.input_mut(x)
        .unwrap()
        .copy_from_slice(&values(5 * 2 * 36, 8));
    g.set_labels(loss, &[0, 2, 1, 1, 0]).unwrap();
    g.forward(Mode::Train).unwrap();
    g.backward().unwrap();
    let grads = g.param_grads().to_vec();
    let gmax = grads.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
    for (k, &g32) in grads.iter().enumerate() {
        let gk = f64::from(g32);
        let fd = central_difference(&mut g, loss, k, 1e-2);
        assert!(
            (fd - gk).abs() <= 1e-2 * gk.abs() + 2e-3 * gmax,
            "parameter {k}: finite difference {fd} vs backward {gk} (max |g| {gmax})"
        );
    }
}

/// The sentence-encoder shape of Quick Thoughts: token embeddings as a `1 x L` image with
/// the embedding as channels, a `1 x 3` convolution over time, ReLU, max over time, a
/// linear layer and softmax cross-entropy; every parameter tensor against central
/// differences (the rectangular convolution, the max-pool gradient routing and the
/// embedding's scatter-add included; the second encoder with ReLU folded into the pool),
/// the lookup itself, the padding row and the errors.
#[test]
fn sequence_encoder_gradients_match_finite_differences() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[4, 6, 1, 9]).unwrap();
    let y = b.conv2d_rect("conv", x, 5, (1, 3), (1, 1), (0, 1)).unwrap();
    assert_eq!(b.shape(y), &[4, 5, 1, 9]);
    let y = b.relu("relu", y).unwrap();
    let h = b.global_max_pool("max", y).unwrap();
    assert_eq!(b.shape(h), &[4, 5]);
    let l = b.linear("fc", h, 3, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(11).unwrap();
    g.input_mut(x)
        .unwrap()
        .copy_from_slice(&values(4 * 6 * 9, 12));
    g.set_labels(loss, &[0, 2, 1, 2]).unwrap();
    check_tensors(&mut g, loss, 30, 1e-3, 0.02);
    // The same encoder on token ids: an embedding table in front (repeated ids, so rows
    // accumulate gradients from several positions).
    let mut b = GraphBuilder::new();
    let e = b.embedding("emb", 4, 9, 7, 6, None).unwrap();
    assert_eq!(b.shape(e), &[4, 6, 1, 9]);
    let y = b.conv2d_rect("conv", e, 5, (1, 3), (1, 1), (0, 1)).unwrap();
    // ReLU and max over time as one node here (the sentence encoders' form).
    let h = b.global_max_pool_relu("max", y).unwrap();
    let l = b.linear("fc", h, 3, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(13).unwrap();
    let tokens: Vec<u32> = (0..36u32).map(|i| (i * 5 + i / 7) % 7).collect();
    g.set_tokens(e, &tokens).unwrap();
    g.set_labels(loss, &[1, 0, 2, 2]).unwrap();
    check_tensors(&mut g, loss, 30, 1e-3, 0.02);
    // The lookup itself: row `id` of the table, laid out as channels x time.
    g.forward(Mode::Train).unwrap();
    let table = g.params()[g.param_info()[0].range.clone()].to_vec();
    let out = g.value(e);
    for (k, &id) in tokens.iter().enumerate() {
        let (seq, t) = (k / 9, k % 9);
        for d in 0..6 {
            assert_eq!(out[(seq * 6 + d) * 9 + t], table[id as usize * 6 + d]);
        }
    }
    assert!(g.set_tokens(e, &tokens[..35]).is_err());
    assert!(g.set_tokens(e, &[7; 36]).is_err());
    assert!(g.set_tokens(loss, &tokens).is_err());

    // A padding row starts at zero and gets no gradient; the other rows start N(0, 1).
    let mut b = GraphBuilder::new();
    let e = b.embedding("emb", 2, 5, 50, 40, Some(0)).unwrap();
    let h = b.global_max_pool("max", e).unwrap();
    let l = b.linear("fc", h, 2, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(3).unwrap();
    g.set_tokens(e, &[0, 3, 0, 4, 0, 1, 0, 0, 2, 2]).unwrap();
    g.set_labels(loss, &[0, 1]).unwrap();
    g.forward(Mode::Train).unwrap();
    g.backward().unwrap();
    let r = g.param_info()[0].range.clone();
    let table = &g.params()[r.clone()];
    assert!(table[..40].iter().all(|&v| v == 0.0));
    assert!(g.param_grads()[r.start..r.start + 40]
        .iter()
        .all(|&v| v == 0.0));
    let rest = &table[40..];
    let mean = rest.iter().map(|&v| f64::from(v)).sum::<f64>() / rest.len() as f64;
    let var = rest
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / rest.len() as f64;
    assert!(
        mean.abs() < 0.1 && (var - 1.0).abs() < 0.15,
        "mean {mean} var {var}"
    );
    let mut b = GraphBuilder::new();
    assert!(b.embedding("bad", 2, 5, 10, 4, Some(10)).is_err());
    assert!(b.embedding("bad", 2, 5, 0, 4, None).is_err());
    assert!(b.embedding_bag("bad2", 2, 5, 10, 4, Some(10)).is_err());

    // The bag of embeddings: the mean over each row's non-padding tokens (a row of padding
    // only is a zero vector), checked against a direct f64 mean and by finite differences.
    let mut b = GraphBuilder::new();
    let (n, len, vocab, dim) = (5, 6, 9, 4);
    let e = b.embedding_bag("bag", n, len, vocab, dim, Some(0)).unwrap();
    assert_eq!(b.shape(e), &[n, dim]);
    let l = b.linear("fc", e, 3, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(17).unwrap();
    let tokens: Vec<u32> = vec![
        1, 2, 3, 0, 0, 0, // three tokens
        4, 4, 4, 4, 4, 4, // one token six times
        0, 0, 0, 0, 0, 0, // padding only
        8, 0, 7, 0, 6, 0, // padding between tokens
        1, 3, 5, 7, 2, 8, // no padding
    ];
    g.set_tokens(e, &tokens).unwrap();
    g.set_labels(loss, &[0, 1, 2, 1, 0]).unwrap();
    check_tensors(&mut g, loss, 40, 1e-3, 0.02);
    g.forward(Mode::Train).unwrap();
    let table = g.params()[g.param_info()[0].range.clone()].to_vec();
    let out = g.value(e).to_vec();
    for (row, seq) in tokens.chunks(len).enumerate() {
        let kept: Vec<usize> = seq
            .iter()
            .filter(|&&t| t != 0)
            .map(|&t| t as usize)
            .collect();
        for d in 0..dim {
            let want = if kept.is_empty() {
                0.0
            } else {
                kept.iter()
                    .map(|&t| f64::from(table[t * dim + d]))
                    .sum::<f64>()
                    / kept.len() as f64
            };
            let got = f64::from(out[row * dim + d]);
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "row {row}: {got} vs {want}"
            );
        }
    }
    // The padding row gets no gradient.
    g.backward().unwrap();
    let r = g.param_info()[0].range.clone();
    assert!(g.param_grads()[r.start..r.start + dim]
        .iter()
        .all(|&v| v == 0.0));

    // A kernel taller than the padded input is a build error naming the node.
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[2, 3, 1, 5]).unwrap();
    let e = b
        .conv2d_rect("tall", x, 4, (3, 3), (1, 1), (0, 1))
        .unwrap_err();
    assert!(e.to_string().contains("tall"), "{e}");
}

/// The bag-of-words sentence encoder over a vocabulary with subword units: the ids
/// `Vocab::encode` makes (each word, then its hashed character n-grams), through the
/// encoder `sentence_encoder` builds, checked by central differences; an unknown word's
/// n-gram rows get a gradient and its word row (`<unk>`) is shared.
#[test]
fn subword_bag_of_words_gradients_match_finite_differences() {
    use selfsup::nn::{sentence_encoder, SentenceEncoderConfig, SentenceEncoderKind};
    use selfsup::text::{Subwords, Vocab};
    let sw = Subwords {
        buckets: 13,
        min_n: 3,
        max_n: 4,
    };
    let vocab = Vocab::build(["the cat sat on the mat ."], 1, 100)
        .unwrap()
        .with_subwords(sw)
        .unwrap();
    let len = 24;
    let sentences = [
        "The cat sat.",
        "A dog barked!",
        "the mat",
        "zebras",
        "",
        "on the mat the cat sat on",
    ];
    let mut ids = vec![0u32; sentences.len() * len];
    for (s, row) in sentences.iter().zip(ids.chunks_mut(len)) {
        let e = vocab.encode(s, len);
        row[..e.len()].copy_from_slice(&e);
    }
    let cfg = SentenceEncoderConfig {
        kind: SentenceEncoderKind::Bow,
        vocab: vocab.len(),
        embed_dim: 3,
        channels: 0,
        kernel: 1,
        max_len: len,
    };
    let mut b = GraphBuilder::new();
    let enc = sentence_encoder(&mut b, "f", &cfg, sentences.len()).unwrap();
    let l = b.linear("fc", enc.h, 3, true, false).unwrap();
    let loss = b.softmax_cross_entropy("loss", l).unwrap();
    let mut g = b.build(5).unwrap();
    g.set_tokens(enc.tokens, &ids).unwrap();
    g.set_labels(loss, &[0, 1, 2, 1, 0, 2]).unwrap();
    check_tensors(&mut g, loss, 60, 1e-3, 0.02);
    // "zebras" is unknown: <unk> and its n-grams' rows all get a gradient.
    let r = g.param_info()[0].range.clone();
    let grads = &g.param_grads()[r];
    let row_moves = |id: u32| {
        grads[id as usize * 3..id as usize * 3 + 3]
            .iter()
            .any(|&v| v != 0.0)
    };
    let zebras = vocab.encode("zebras", len);
    assert!(zebras.len() > 1 && zebras.iter().all(|&id| row_moves(id)));
    assert!(!row_moves(0), "the padding row gets no gradient");
}

/// Quick Thoughts' in-batch loss as a graph node: two linear encoders f and g of the same
/// sentences (and one encoder feeding both sides), previous/next-sentence targets inside
/// two documents; every parameter against central differences, the loss against a direct
/// f64 evaluation, and the builder's errors.
#[test]
fn quick_thoughts_node_gradients_match_finite_differences() {
    use selfsup::kernels::contrastive::quickthought::qt_neighbor_targets;
    let (n, fin, d) = (7, 5, 4);
    let mut targets = Vec::new();
    qt_neighbor_targets(n, 0, &[0, 4], &mut targets).unwrap();
    for shared in [false, true] {
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[n, fin]).unwrap();
        let f = b.linear("f", x, d, true, false).unwrap();
        let g = if shared {
            f
        } else {
            // No bias: a shift shared by every candidate cancels in each softmax, so its
            // gradient is exactly zero and a finite difference only measures noise.
            b.linear("g", x, d, false, false).unwrap()
        };
        let loss = b.qt_in_batch("qt", f, g, 1.0, Some(0)).unwrap();
        let mut gr = b.build(21).unwrap();
        gr.input_mut(x)
            .unwrap()
            .copy_from_slice(&values(n * fin, 22));
        gr.set_targets(loss, &targets).unwrap();
        check_tensors(&mut gr, loss, 40, 1e-3, 1e-2);
        // The loss against a direct evaluation of the definition.
        gr.forward(Mode::Train).unwrap();
        let (fv, gv) = (gr.value(f).to_vec(), gr.value(g).to_vec());
        let score = |i: usize, j: usize| -> f64 {
            (0..d)
                .map(|k| f64::from(fv[i * d + k]) * f64::from(gv[j * d + k]))
                .sum()
        };
        let mut want = 0.0;
        for &(i, c) in &targets {
            let (i, c) = (i as usize, c as usize);
            let lse = (0..n)
                .filter(|&j| j != i)
                .map(|j| score(i, j).exp())
                .sum::<f64>()
                .ln();
            want += lse - score(i, c);
        }
        want /= targets.len() as f64;
        let got = gr.loss_f64(loss);
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
        assert!(gr.accuracy(loss).is_some());
    }
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[4, 3]).unwrap();
    let y = b.input("y", &[4, 2]).unwrap();
    assert!(b.qt_in_batch("w", x, y, 1.0, None).is_err());
    assert!(b.qt_in_batch("o", x, x, 1.0, Some(1)).is_err());
    assert!(b.qt_in_batch("s", x, x, f32::NAN, None).is_err());
}

/// `(loss, accuracy)` of Quick Thoughts' pairwise objective straight from its definition in
/// f64: the mean of `log(1 + exp(a_i . b_q - a_i . b_p))` over the triplets, and the share of
/// triplets with `a_i . b_p > a_i . b_q`.
fn pairwise_reference(a: &[f32], b: &[f32], d: usize, triplets: &[(u32, u32, u32)]) -> (f64, f32) {
    let dot = |x: &[f32], r: usize, y: &[f32], c: usize| -> f64 {
        (0..d)
            .map(|k| f64::from(x[r * d + k]) * f64::from(y[c * d + k]))
            .sum()
    };
    let (mut loss, mut hits) = (0.0f64, 0usize);
    for &(i, p, q) in triplets {
        let (i, p, q) = (i as usize, p as usize, q as usize);
        let (sp, sq) = (dot(a, i, b, p), dot(a, i, b, q));
        loss += (1.0 + (sq - sp).exp()).ln();
        hits += usize::from(sp > sq);
    }
    let t = triplets.len();
    (loss / t as f64, hits as f32 / t as f32)
}

/// Quick Thoughts' pairwise loss as a graph node: one linear encoder feeding both sides (the
/// paper's f), two encoders of different batches, and an embedding table pooled into
/// sentence vectors; every parameter against central differences, the loss and the
/// accuracy against a direct f64 evaluation, evaluation mode, thread-count independence.
#[test]
fn quick_thoughts_pairwise_node_gradients_match_finite_differences() {
    let (fin, d) = (5, 4);
    // Repeated anchors, a repeated triplet, and one with pos == neg (ln 2, no gradient).
    let shared_triplets = [
        (0, 1, 3),
        (1, 2, 0),
        (2, 1, 5),
        (3, 4, 1),
        (4, 3, 6),
        (5, 6, 2),
        (6, 5, 0),
        (0, 6, 2),
        (2, 1, 5),
        (3, 3, 3),
    ];
    let split_triplets = [
        (0, 1, 6),
        (1, 2, 0),
        (2, 3, 4),
        (3, 4, 5),
        (4, 5, 1),
        (0, 3, 2),
        (2, 6, 6),
    ];
    for shared in [true, false] {
        let (n_a, n_b) = if shared { (7, 7) } else { (5, 7) };
        let triplets: &[(u32, u32, u32)] = if shared {
            &shared_triplets
        } else {
            &split_triplets
        };
        let build = || {
            let mut b = GraphBuilder::new();
            let xa = b.input("xa", &[n_a, fin]).unwrap();
            let fa = b.linear("fa", xa, d, true, false).unwrap();
            let (xb, fb) = if shared {
                (xa, fa)
            } else {
                let xb = b.input("xb", &[n_b, fin]).unwrap();
                // No bias: it cancels in b_neg - b_pos, so its gradient is exactly zero and
                // a finite difference would only measure noise.
                (xb, b.linear("fb", xb, d, false, false).unwrap())
            };
            let loss = b.qt_pairwise("qt", fa, fb).unwrap();
            assert_eq!(b.shape(loss), &[1]);
            let mut gr = b.build(31).unwrap();
            gr.input_mut(xa)
                .unwrap()
                .copy_from_slice(&values(n_a * fin, 32));
            if !shared {
                gr.input_mut(xb)
                    .unwrap()
                    .copy_from_slice(&values(n_b * fin, 33));
            }
            gr.set_triplets(loss, triplets).unwrap();
            (gr, fa, fb, loss)
        };
        let (mut gr, fa, fb, loss) = build();
        assert_eq!(gr.accuracy(loss), None);
        check_tensors(&mut gr, loss, 40, 1e-3, 1e-2);
        gr.forward(Mode::Train).unwrap();
        let (av, bv) = (gr.value(fa).to_vec(), gr.value(fb).to_vec());
        let (want, acc) = pairwise_reference(&av, &bv, d, triplets);
        let got = gr.loss_f64(loss);
        assert!(
            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
        assert_eq!(gr.loss(loss), got as f32);
        assert_eq!(gr.accuracy(loss), Some(acc));
        assert!(acc > 0.0 && acc < 1.0, "{acc}: a weak test");
        // Evaluation mode gives the same loss and accuracy.
        gr.forward(Mode::Eval).unwrap();
        assert_eq!(gr.loss_f64(loss), got);
        assert_eq!(gr.accuracy(loss), Some(acc));
        // The same bits for any number of threads.
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let (mut gr, _, _, loss) = build();
                    for _ in 0..3 {
                        gr.forward(Mode::Train).unwrap();
                        gr.backward().unwrap();
                        sgd(&mut gr, 0.1);
                    }
                    let mut bits: Vec<u64> =
                        gr.params().iter().map(|v| u64::from(v.to_bits())).collect();
                    bits.push(gr.loss_f64(loss).to_bits());
                    bits.push(u64::from(gr.accuracy(loss).unwrap().to_bits()));
                    bits
                })
        };
        let one = run(1);
        assert_eq!(one, run(3));
    }

    // Token ids through an embedding table, averaged into sentence vectors, both sides.
    let (n, len, vocab, dim) = (6, 4, 9, 5);
    let mut b = GraphBuilder::new();
    let e = b.embedding("emb", n, len, vocab, dim, None).unwrap();
    let h = b.global_avg_pool("pool", e).unwrap();
    let loss = b.qt_pairwise("qt", h, h).unwrap();
    let mut gr = b.build(41).unwrap();
    let tokens: Vec<u32> = (0..(n * len) as u32).map(|i| (i * 7 + i / 5) % 9).collect();
    gr.set_tokens(e, &tokens).unwrap();
    let triplets = [
        (0, 1, 4),
        (1, 0, 2),
        (2, 3, 5),
        (3, 2, 0),
        (4, 5, 1),
        (5, 4, 3),
    ];
    gr.set_triplets(loss, &triplets).unwrap();
    check_tensors(&mut gr, loss, 45, 1e-3, 1e-2);
    gr.forward(Mode::Train).unwrap();
    let hv = gr.value(h).to_vec();
    let (want, acc) = pairwise_reference(&hv, &hv, dim, &triplets);
    let got = gr.loss_f64(loss);
    assert!(
        (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
        "{got} vs {want}"
    );
    assert_eq!(gr.accuracy(loss), Some(acc));
}

/// The pairwise node's errors: widths at build time (naming the node and both shapes),
/// triplets out of range or missing (typed errors naming the node, the triplets kept),
/// and a triplet count that shrinks and grows again.
#[test]
fn quick_thoughts_pairwise_node_checks_its_inputs() {
    let e = build_err(|b| {
        let x = b.input("x", &[4, 3])?;
        let y = b.input("y", &[5, 2])?;
        b.qt_pairwise("pw", x, y)?;
        Ok(())
    });
    assert!(
        e.contains("'pw'") && e.contains("[4, 3]") && e.contains("[5, 2]"),
        "{e}"
    );
    let e = build_err(|b| {
        let x = b.input("x", &[4, 3, 1, 1])?;
        b.qt_pairwise("pw", x, x)?;
        Ok(())
    });
    assert!(e.contains("'pw'") && e.contains("[4, 3, 1, 1]"), "{e}");

    let mut b = GraphBuilder::new();
    let xa = b.input("xa", &[3, 4]).unwrap();
    let xb = b.input("xb", &[5, 4]).unwrap();
    let fa = b.linear("fa", xa, 4, true, false).unwrap();
    let fb = b.linear("fb", xb, 4, true, false).unwrap();
    let loss = b.qt_pairwise("pw", fa, fb).unwrap();
    let mut gr = b.build(5).unwrap();
    gr.input_mut(xa).unwrap().copy_from_slice(&values(12, 6));
    gr.input_mut(xb).unwrap().copy_from_slice(&values(20, 7));
    // No triplets yet: the forward names the node.
    let e = gr.forward(Mode::Train).unwrap_err();
    assert!(
        matches!(e, Error::Graph { .. }) && e.to_string().contains("pw"),
        "{e}"
    );
    assert!(gr.accuracy(loss).is_none());
    let good = [(0, 1, 2), (2, 4, 0), (1, 3, 3)];
    gr.set_triplets(loss, &good).unwrap();
    gr.forward(Mode::Train).unwrap();
    let before = gr.loss_f64(loss);
    // An anchor past n_a (4 would be a valid candidate), a candidate past n_b, empty.
    for (bad, what) in [
        (&[(0, 1, 2), (3, 0, 1)][..], "triplet 1 = (3, 0, 1)"),
        (&[(0, 5, 2)][..], "triplet 0 = (0, 5, 2)"),
        (&[(0, 1, 2), (1, 2, 3), (2, 3, u32::MAX)][..], "triplet 2"),
        (&[][..], "no triplets"),
    ] {
        let e = gr.set_triplets(loss, bad).unwrap_err();
        assert!(matches!(e, Error::Graph { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("pw") && msg.contains(what), "{msg}");
    }
    gr.forward(Mode::Train).unwrap();
    assert_eq!(
        gr.loss_f64(loss),
        before,
        "a rejected set changed the triplets"
    );
    // Not a pairwise node.
    assert!(gr.set_triplets(fa, &good).is_err());
    assert!(gr.set_targets(loss, &[(0, 1)]).is_err());
    // Fewer, then more triplets than before.
    gr.set_triplets(loss, &good[..1]).unwrap();
    gr.forward(Mode::Train).unwrap();
    let (av, bv) = (gr.value(fa).to_vec(), gr.value(fb).to_vec());
    let (want, acc) = pairwise_reference(&av, &bv, 4, &good[..1]);
    assert!(
        (gr.loss_f64(loss) - want).abs() <= 1e-6 * (1.0 + want),
        "{want}"
    );
    assert_eq!(gr.accuracy(loss), Some(acc));
    let more: Vec<(u32, u32, u32)> = (0..40)
        .map(|k| (k % 3, (k * 3) % 5, (k * 2 + 1) % 5))
        .collect();
    gr.set_triplets(loss, &more).unwrap();
    gr.forward(Mode::Train).unwrap();
    gr.backward().unwrap();
    let (want, acc) = pairwise_reference(&av, &bv, 4, &more);
    assert!(
        (gr.loss_f64(loss) - want).abs() <= 1e-6 * (1.0 + want),
        "{want}"
    );
    assert_eq!(gr.accuracy(loss), Some(acc));
}

/// Plain SGD (the optimizers have their own tests).
fn sgd(g: &mut selfsup::graph::Graph, lr: f32) {
    let (p, gr, _) = g.params_and_grads();
    for (p, g) in p.iter_mut().zip(gr) {
        *p -= lr * g;
    }
}

#[test]
fn a_tiny_classifier_overfits_a_small_batch() {
    let mut m = encoder_classifier(&tiny(), 8, 4, 11).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 5);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    m.graph
        .set_labels(m.loss, &[0, 1, 2, 3, 3, 2, 1, 0])
        .unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..150 {
        m.graph.forward(Mode::Train).unwrap();
        m.graph.backward().unwrap();
        sgd(&mut m.graph, 0.1);
        last = m.graph.loss(m.loss);
        first.get_or_insert(last);
    }
    assert!(first.unwrap() > 1.0, "starts near ln 4: {first:?}");
    assert!(last < 0.05, "loss after 150 steps: {last}");
    assert_eq!(m.graph.accuracy(m.loss), Some(1.0));
}

#[test]
fn simclr_loss_falls_on_a_fixed_batch() {
    let mut m = simclr(&tiny(), 8, 0.5, 3).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 9);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    m.graph.forward(Mode::Train).unwrap();
    let start = m.graph.loss(m.loss);
    for _ in 0..100 {
        m.graph.forward(Mode::Train).unwrap();
        m.graph.backward().unwrap();
        sgd(&mut m.graph, 0.2);
    }
    m.graph.forward(Mode::Train).unwrap();
    let end = m.graph.loss(m.loss);
    // ln(15) = 2.71 at chance (the two "views" are unrelated random images, so the encoder
    // has to memorize the pairs); 100 steps of plain SGD bring it to about 1.44.
    assert!(start > 2.5 && end < 1.6, "NT-Xent {start} -> {end}");
}

#[test]
fn training_is_bit_identical_for_any_thread_count() {
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut m = simclr(&tiny(), 6, 0.2, 5).unwrap();
                let x = values(m.graph.shape(m.input).iter().product(), 3);
                m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
                for _ in 0..3 {
                    m.graph.forward(Mode::Train).unwrap();
                    m.graph.backward().unwrap();
                    sgd(&mut m.graph, 0.1);
                }
                let mut bits: Vec<u32> = m.graph.params().iter().map(|v| v.to_bits()).collect();
                bits.extend(m.graph.buffers().iter().map(|v| v.to_bits()));
                bits
            })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn same_seed_same_weights_different_seed_different_weights() {
    let a = simclr(&tiny(), 2, 0.5, 1).unwrap();
    let b = simclr(&tiny(), 2, 0.5, 1).unwrap();
    let c = simclr(&tiny(), 2, 0.5, 2).unwrap();
    assert_eq!(a.graph.params(), b.graph.params());
    assert_ne!(a.graph.params(), c.graph.params());
    // PyTorch's default init ranges: conv weights within 1/sqrt(fan_in).
    let info = &a.graph.param_info()[0];
    assert_eq!(info.name, "stem.0.weight");
    assert_eq!(info.shape, vec![4, 2, 3, 3]);
    let bound = 1.0 / (18f32).sqrt();
    let w = &a.graph.params()[info.range.clone()];
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.5 * bound));
}

#[test]
fn names_follow_the_pytorch_reference_model() {
    let m = simclr(&ResNetConfig::default(), 2, 0.5, 1).unwrap();
    let names: Vec<&str> = m
        .graph
        .param_info()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for want in [
        "stem.0.weight",
        "stem.1.weight",
        "stem.1.bias",
        "l1.c1.weight",
        "l2.sc.0.weight",
        "l3.b2.bias",
        "head.0.weight",
        "head.2.bias",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let buffers: Vec<&str> = m
        .graph
        .buffer_info()
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert!(buffers.contains(&"l3.sc.1.running_var"));
    // Decay and LARS adaptation only on convolution and linear weights.
    for (g, p) in m.graph.param_groups().iter().zip(m.graph.param_info()) {
        assert_eq!(g.name, p.name);
        assert_eq!(g.range, p.range);
        assert_eq!(g.decay, p.kind.is_weight(), "{}", g.name);
        assert_eq!(g.adapt, p.kind.is_weight(), "{}", g.name);
    }
    let decayed = |n: &str| {
        m.graph
            .param_groups()
            .iter()
            .find(|g| g.name == n)
            .unwrap()
            .decay
    };
    assert!(decayed("l2.sc.0.weight") && decayed("head.0.weight") && decayed("stem.0.weight"));
    assert!(!decayed("l2.sc.1.weight") && !decayed("head.0.bias") && !decayed("stem.1.bias"));
    // ResNet-mini's parameter count (convs, BatchNorm, head), as in PyTorch.
    let total: usize = m.graph.params().len();
    assert_eq!(
        total,
        32 * 3 * 9
            + 2 * 32
            + 2 * (32 * 32 * 9 + 2 * 32)
            + (64 * 32 * 9 + 64 * 64 * 9 + 64 * 32 + 3 * 2 * 64)
            + (128 * 64 * 9 + 128 * 128 * 9 + 128 * 64 + 3 * 2 * 128)
            + (128 * 128 + 128 + 64 * 128 + 64)
    );
}

#[test]
fn eval_mode_uses_running_statistics_and_leaves_them_alone() {
    let mut m = simclr(&tiny(), 4, 0.5, 1).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 4);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    let before = m.graph.buffers().to_vec();
    m.graph.forward_to(m.h, Mode::Eval).unwrap();
    assert_eq!(m.graph.buffers(), &before[..]);
    let h_eval = m.graph.value(m.h).to_vec();
    m.graph.forward(Mode::Train).unwrap();
    assert_ne!(
        m.graph.buffers(),
        &before[..],
        "training updates running statistics"
    );
    assert_ne!(m.graph.value(m.h), &h_eval[..]);
    // Backward needs a full training forward.
    m.graph.forward_to(m.h, Mode::Train).unwrap();
    assert!(m.graph.backward().is_err());
    m.graph.forward(Mode::Eval).unwrap();
    assert!(m.graph.backward().is_err());
}

fn build_err(f: impl FnOnce(&mut GraphBuilder) -> selfsup::Result<()>) -> String {
    let mut b = GraphBuilder::new();
    match f(&mut b) {
        Err(e @ Error::Graph { .. }) => e.to_string(),
        other => panic!("expected a graph error, got {other:?}"),
    }
}

#[test]
fn shape_errors_name_the_node_and_the_shapes() {
    let e = build_err(|b| {
        let x = b.input("x", &[4, 3, 8, 8])?;
        b.linear("fc", x, 10, true, false)?;
        Ok(())
    });
    assert!(e.contains("'fc'") && e.contains("[4, 3, 8, 8]"), "{e}");
    let e = build_err(|b| {
        let x = b.input("x", &[4, 3, 8, 8])?;
        let y = b.conv2d("c", x, 5, 3, 2, 1)?;
        b.add("join", x, y, true)?;
        Ok(())
    });
    assert!(
        e.contains("'join'") && e.contains("[4, 3, 8, 8]") && e.contains("[4, 5, 4, 4]"),
        "{e}"
    );
    let e = build_err(|b| {
        let x = b.input("x", &[2, 3, 4, 4])?;
        b.conv2d("big", x, 8, 7, 1, 1)?;
        Ok(())
    });
    assert!(e.contains("'big'") && e.contains("[2, 3, 4, 4]"), "{e}");
    let e = build_err(|b| {
        let x = b.input("x", &[5, 16])?;
        b.nt_xent("loss", x, 0.5, false)?;
        Ok(())
    });
    assert!(e.contains("'loss'") && e.contains("even"), "{e}");
    let e = build_err(|b| {
        let x = b.input("x", &[4, 16])?;
        b.nt_xent("loss", x, 0.0, false)?;
        Ok(())
    });
    assert!(e.contains("tau"), "{e}");
    let e = build_err(|b| {
        let x = b.input("x", &[4, 16])?;
        b.relu("x", x)?;
        Ok(())
    });
    assert!(e.contains("already exists"), "{e}");
    let e = build_err(|b| {
        b.input("x", &[4, 0])?;
        Ok(())
    });
    assert!(e.contains("empty"), "{e}");
    let e = build_err(|b| {
        let x = b.input("x", &[4, 16])?;
        b.global_avg_pool("pool", x)?;
        Ok(())
    });
    assert!(e.contains("'pool'") && e.contains("[4, 16]"), "{e}");
    assert!(GraphBuilder::new().build(0).is_err());
    let bad = ResNetConfig {
        widths: vec![4, 8],
        blocks: vec![1],
        ..tiny()
    };
    assert!(simclr(&bad, 2, 0.5, 0).is_err());
}

#[test]
fn labels_are_checked() {
    let mut p = linear_probe(4, 6, 3, 0).unwrap();
    assert!(p.graph.set_labels(p.loss, &[0, 1, 2]).is_err());
    let e = p
        .graph
        .set_labels(p.loss, &[0, 1, 3, 0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 3") && e.contains("position 2"), "{e}");
    assert!(p.graph.set_labels(p.logits, &[0, 1, 2, 0]).is_err());
    assert!(p.graph.input_mut(p.logits).is_err());
    p.graph.set_labels(p.loss, &[0, 1, 2, 0]).unwrap();
    p.graph.forward(Mode::Train).unwrap();
    assert!((p.graph.loss(p.loss) - 3f32.ln()).abs() < 0.5);
}

#[test]
fn non_finite_inputs_stop_with_the_node_named() {
    let mut m = simclr(&tiny(), 2, 0.5, 1).unwrap();
    let len: usize = m.graph.shape(m.input).iter().product();
    let mut x = values(len, 1);
    x[3] = f32::NAN;
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    let e = m.graph.forward(Mode::Train).unwrap_err().to_string();
    assert!(e.contains("'loss'") && e.contains("non-finite"), "{e}");
}

/// Training passes fuse each BatchNorm without ReLU with the residual join after it; the
/// losses, every parameter gradient, the parameters and running statistics after three SGD
/// steps are those of the unfused passes to the bit, in pools of 1 and 2 threads, for the
/// ResNet's joins (with ReLU, after identity and projection shortcuts) and one without ReLU.
#[test]
fn train_fusion_changes_no_bit() {
    let resnet = || {
        let m = simclr(&tiny(), 6, 0.2, 5).unwrap();
        let x = values(m.graph.shape(m.input).iter().product(), 3);
        let mut g = m.graph;
        g.input_mut(m.input).unwrap().copy_from_slice(&x);
        (g, m.loss)
    };
    let plain_join = || {
        // conv -> BatchNorm -> add (no ReLU) with another branch, then a classifier.
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[3, 2, 5, 5]).unwrap();
        let c = b.conv2d("c", x, 4, 3, 1, 1).unwrap();
        let s = b.conv2d("s", x, 4, 1, 1, 0).unwrap();
        let n = b.batchnorm("bn", c, false).unwrap();
        let a = b.add("join", s, n, false).unwrap();
        let p = b.global_avg_pool("pool", a).unwrap();
        let logits = b.linear("fc", p, 3, true, false).unwrap();
        let loss = b.softmax_cross_entropy("loss", logits).unwrap();
        let mut g = b.build(8).unwrap();
        g.input_mut(x).unwrap().copy_from_slice(&values(150, 12));
        g.set_labels(loss, &[0, 2, 1]).unwrap();
        (g, loss)
    };
    type Build = dyn Fn() -> (Graph, TensorId) + Sync;
    let run = |build: &Build, threads: usize, fused: bool| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let (mut g, loss) = build();
                g.set_train_fusion(fused);
                let mut bits = Vec::new();
                for _ in 0..3 {
                    g.forward(Mode::Train).unwrap();
                    g.backward().unwrap();
                    bits.push(g.loss(loss).to_bits());
                    bits.extend(g.param_grads().iter().map(|v| v.to_bits()));
                    sgd(&mut g, 0.1);
                }
                bits.extend(g.params().iter().map(|v| v.to_bits()));
                bits.extend(g.buffers().iter().map(|v| v.to_bits()));
                bits
            })
    };
    for build in [&resnet as &Build, &plain_join] {
        let want = run(build, 1, false);
        assert_eq!(want, run(build, 1, true));
        assert_eq!(want, run(build, 2, true));
    }
}

/// Eval mode folds each BatchNorm into the convolution before it; the result equals the
/// unfused evaluation up to rounding, after training has moved the running statistics.
#[test]
fn eval_fusion_matches_the_unfused_evaluation() {
    let mut m = simclr(&tiny(), 4, 0.5, 2).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 6);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    for _ in 0..3 {
        m.graph.forward(Mode::Train).unwrap();
        m.graph.backward().unwrap();
        sgd(&mut m.graph, 0.1);
    }
    m.graph.forward_to(m.h, Mode::Eval).unwrap();
    let fused = m.graph.value(m.h).to_vec();
    m.graph.set_eval_fusion(false);
    m.graph.forward_to(m.h, Mode::Eval).unwrap();
    let plain = m.graph.value(m.h).to_vec();
    let scale = plain.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(scale > 0.0);
    for (a, b) in fused.iter().zip(&plain) {
        assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
    }
}

/// The profile counts every node that runs: each convolution has forward time in training
/// and in a fused evaluation (where the BatchNorm after it runs inside it and has none of its
/// own), backward time only from training, and nothing at all once profiling is off.
#[test]
fn the_profile_times_every_node_that_runs() {
    let mut m = simclr(&tiny(), 4, 0.5, 2).unwrap();
    let x = values(m.graph.shape(m.input).iter().product(), 6);
    m.graph.input_mut(m.input).unwrap().copy_from_slice(&x);
    assert!(m.graph.profile().is_empty());
    let convs = |g: &Graph| -> Vec<(String, f64, f64)> {
        g.profile()
            .into_iter()
            .filter(|(n, _, _)| n.ends_with(".c1") || n.ends_with(".c2"))
            .map(|(n, f, b)| (n.to_string(), f, b))
            .collect()
    };
    m.graph.set_profiling(true);
    m.graph.forward_to(m.h, Mode::Eval).unwrap();
    let eval = convs(&m.graph);
    assert!(eval.len() >= 2, "{eval:?}");
    for (n, f, b) in &eval {
        assert!(*f > 0.0 && *b == 0.0, "fused eval of {n}: fwd {f} bwd {b}");
    }
    m.graph.set_profiling(false);
    m.graph.set_profiling(true);
    m.graph.forward(Mode::Train).unwrap();
    m.graph.backward().unwrap();
    for (n, f, b) in convs(&m.graph) {
        assert!(f > 0.0 && b > 0.0, "training of {n}: fwd {f} bwd {b}");
    }
    m.graph.set_profiling(false);
    assert!(m.graph.profile().is_empty());
}

/// What feeds a step of a graph: its inputs, labels, tokens, targets.
type Feed = Box<dyn Fn(&mut Graph)>;

/// A graph built twice by `build`, sharing bytes between tensors whose lifetimes do not
/// overlap and keeping every tensor apart ([`GraphBuilder::keep_all`]): three SGD steps give
/// the same losses, parameters and running statistics to the bit, and so does an evaluation
/// forward after them; the shared arena is the smaller. `build` returns the loss and what feeds a step.
fn shared_and_unshared_agree(build: &dyn Fn(&mut GraphBuilder) -> (TensorId, Feed)) {
    let run = |keep_all: bool| {
        let mut b = GraphBuilder::new();
        let (loss, feed) = build(&mut b);
        if keep_all {
            b.keep_all();
        }
        let mut g = b.build(9).unwrap();
        feed(&mut g);
        let mut bits = Vec::new();
        for _ in 0..3 {
            g.forward(Mode::Train).unwrap();
            g.backward().unwrap();
            bits.push(g.loss(loss).to_bits());
            sgd(&mut g, 0.1);
        }
        // The evaluation forward, on a plan of its own.
        g.forward(Mode::Eval).unwrap();
        bits.push(g.loss(loss).to_bits());
        bits.extend(g.params().iter().map(|v| v.to_bits()));
        bits.extend(g.buffers().iter().map(|v| v.to_bits()));
        (bits, g.activation_bytes(), g.unshared_activation_bytes())
    };
    let (shared, planned, unshared) = run(false);
    let (alone, planned_alone, _) = run(true);
    assert_eq!(shared, alone);
    assert!(planned < unshared, "{planned} of {unshared} bytes");
    assert!(planned_alone >= unshared);
}

#[test]
fn sharing_bytes_changes_no_bit() {
    let fill = |g: &mut Graph, x: TensorId, seed: u64| {
        let len = g.shape(x).iter().product();
        g.input_mut(x).unwrap().copy_from_slice(&values(len, seed));
    };
    // SimCLR: convolutions, BatchNorm, residual joins, pooling, the head, NT-Xent.
    shared_and_unshared_agree(&|b| {
        let enc = resnet_encoder(b, &tiny(), 6).unwrap();
        let z = projection_head(b, enc.h, 8, 5).unwrap();
        let loss = b.nt_xent("loss", z, 0.5, false).unwrap();
        (loss, Box::new(move |g| fill(g, enc.input, 31)))
    });
    // A classifier on an encoder whose stages have two blocks.
    shared_and_unshared_agree(&|b| {
        let enc = resnet_encoder(b, &tiny(), 5).unwrap();
        let logits = b.linear("fc", enc.h, 3, true, false).unwrap();
        let loss = b.softmax_cross_entropy("loss", logits).unwrap();
        (
            loss,
            Box::new(move |g| {
                fill(g, enc.input, 32);
                g.set_labels(loss, &[0, 2, 1, 1, 0]).unwrap();
            }),
        )
    });
    // Token embeddings, ReLU and linear with ReLU (backwards that read their output), max
    // pooling, one tensor on both sides of Quick Thoughts' loss.
    shared_and_unshared_agree(&|b| {
        let e = b.embedding("emb", 6, 5, 11, 4, Some(0)).unwrap();
        let y = b.conv2d_rect("conv", e, 7, (1, 3), (1, 1), (0, 1)).unwrap();
        let y = b.relu("relu", y).unwrap();
        let h = b.global_max_pool("max", y).unwrap();
        let f = b.linear("f", h, 6, true, true).unwrap();
        let f = b.linear("f2", f, 4, true, false).unwrap();
        let loss = b.qt_in_batch("qt", f, f, 1.0, Some(0)).unwrap();
        (
            loss,
            Box::new(move |g| {
                let tokens: Vec<u32> = (0..30u32).map(|i| (i * 7 + i / 4) % 11).collect();
                g.set_tokens(e, &tokens).unwrap();
                let mut targets = Vec::new();
                qt_neighbor_targets(6, 0, &[0, 3], &mut targets).unwrap();
                g.set_targets(loss, &targets).unwrap();
            }),
        )
    });
}

/// After a pass the kept tensors (inputs, outputs, those marked) are readable, an internal
/// one only while its lifetime lasts, and reading it later is a clear panic; a kept
/// tensor's value and gradient are those of the plan that shares nothing.
#[test]
fn kept_tensors_stay_readable() {
    let build = |keep_all: bool| {
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[4, 3]).unwrap();
        // Read by the ReLU's forward only (its backward reads its own output).
        let a = b.linear("a", x, 5, true, false).unwrap();
        let r = b.relu("relu", a).unwrap();
        let m = b.linear("m", r, 5, true, false).unwrap();
        b.keep(m);
        let r = b.relu("relu2", m).unwrap();
        let logits = b.linear("out", r, 3, true, false).unwrap();
        let loss = b.softmax_cross_entropy("loss", logits).unwrap();
        if keep_all {
            b.keep_all();
        }
        let mut g = b.build(4).unwrap();
        g.input_mut(x).unwrap().copy_from_slice(&values(12, 40));
        g.set_labels(loss, &[0, 1, 2, 0]).unwrap();
        (g, [x, a, m, loss])
    };
    let (mut g, [x, a, m, loss]) = build(false);
    g.forward_to(a, Mode::Train).unwrap();
    assert!(g.is_readable(a));
    g.forward(Mode::Train).unwrap();
    g.backward().unwrap();
    assert!(g.is_readable(x) && g.is_readable(m) && g.is_readable(loss));
    assert!(!g.is_readable(a));
    assert!(g.grad(x).is_none());
    let (mut all, _) = build(true);
    all.forward(Mode::Train).unwrap();
    all.backward().unwrap();
    assert!(all.is_readable(a));
    assert_eq!(g.value(m), all.value(m));
    assert_eq!(g.grad(m), all.grad(m));
    assert_eq!(g.loss(loss), all.loss(loss));
    let e =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.value(a).len())).unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("'a'") && msg.contains("GraphBuilder::keep"),
        "{msg}"
    );
    // Another backward needs another forward.
    assert!(g.backward().is_err());
    // An evaluation forward leaves the kept gradients alone; its values are the unshared
    // plan's.
    let dm = g.grad(m).unwrap().to_vec();
    g.forward(Mode::Eval).unwrap();
    all.forward(Mode::Eval).unwrap();
    assert_eq!(g.grad(m).unwrap(), &dm[..]);
    assert_eq!(g.value(m), all.value(m));
    assert_eq!(g.loss(loss), all.loss(loss));
    assert!(!g.is_readable(a));
    g.forward_to(a, Mode::Eval).unwrap();
    assert_eq!(g.value(a), all.value(a));
}

/// An evaluation forward folds a convolution, the BatchNorm after it and the residual join
/// after that into one pass: the join's output matches the unfused evaluation, and the two
/// values the folded group never writes are not readable (a forward that stops at the
/// BatchNorm folds the pair only, and the BatchNorm's output is then readable).
#[test]
fn a_folded_join_leaves_its_inner_values_unreadable() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[3, 2, 5, 5]).unwrap();
    let c = b.conv2d("c", x, 2, 3, 1, 1).unwrap();
    let n = b.batchnorm("bn", c, false).unwrap();
    let j = b.add("join", n, x, true).unwrap();
    let h = b.global_avg_pool("pool", j).unwrap();
    let mut g = b.build(9).unwrap();
    g.input_mut(x).unwrap().copy_from_slice(&values(150, 41));
    // Running statistics away from their initial values.
    for (i, v) in g.buffers_mut().iter_mut().enumerate() {
        *v = 0.5 + 0.25 * (i % 3) as f32;
    }
    g.forward_to(j, Mode::Eval).unwrap();
    assert!(!g.is_readable(c) && !g.is_readable(n) && g.is_readable(j));
    let fused = g.value(j).to_vec();
    g.forward(Mode::Eval).unwrap();
    assert!(g.is_readable(h));
    g.set_eval_fusion(false);
    g.forward_to(j, Mode::Eval).unwrap();
    assert!(g.is_readable(n));
    let scale = fused.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(scale > 0.0 && fused.contains(&0.0));
    for (a, e) in fused.iter().zip(g.value(j)) {
        assert!((a - e).abs() <= 1e-5 * scale, "{a} vs {e}");
    }
    g.set_eval_fusion(true);
    g.forward_to(n, Mode::Eval).unwrap();
    assert!(!g.is_readable(c) && g.is_readable(n));
}

/// A training pass that fuses a BatchNorm with the residual join after it never writes the
/// BatchNorm's output, which is then not readable; without the fusion it is.
#[test]
fn a_fused_training_join_leaves_the_batchnorm_output_unreadable() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[3, 2, 5, 5]).unwrap();
    let a = b.conv2d("a", x, 2, 3, 1, 1).unwrap();
    let r = b.relu("r", a).unwrap();
    let c = b.conv2d("c", r, 2, 3, 1, 1).unwrap();
    let n = b.batchnorm("bn", c, false).unwrap();
    let j = b.add("join", n, r, true).unwrap();
    let mut g = b.build(9).unwrap();
    g.input_mut(x).unwrap().copy_from_slice(&values(150, 42));
    g.forward_to(j, Mode::Train).unwrap();
    assert!(!g.is_readable(n) && g.is_readable(j));
    let fused = g.value(j).to_vec();
    g.set_train_fusion(false);
    g.forward_to(j, Mode::Train).unwrap();
    assert!(g.is_readable(n));
    assert_eq!(g.value(j), &fused[..]);
}
