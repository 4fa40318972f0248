//! Quick Thoughts end to end on the built-in corpus: the CNN sentence encoders f and g,
//! trained briefly with the in-batch objective on batches of contiguous sentences, rank a
//! sentence's neighbours far above chance on held-out documents.

use selfsup::graph::Mode;
use selfsup::kernels::contrastive::quickthought::qt_neighbor_targets;
use selfsup::nn::{quick_thoughts, QtObjective, SentenceEncoderConfig, SentenceEncoderKind};
use selfsup::optim::{AdamWConfig, OptimizerConfig};
use selfsup::text::{builtin_corpus, CorpusConfig, Vocab};

const BATCH: usize = 32;
const MAX_LEN: usize = 16;

/// Batches of `BATCH` contiguous sentences of `docs` (in order, across documents): token
/// ids (`BATCH x MAX_LEN`) and the in-batch previous/next targets.
/// Token ids (`BATCH x MAX_LEN`) and the target pairs of one batch.
type Batch = (Vec<u32>, Vec<(u32, u32)>);

fn batches(docs: &[Vec<String>], vocab: &Vocab) -> Vec<Batch> {
    let mut sents = Vec::new();
    let mut starts = Vec::new();
    for d in docs {
        starts.push(sents.len());
        sents.extend(d.iter());
    }
    let mut out = Vec::new();
    for b0 in (0..sents.len() - BATCH + 1).step_by(BATCH) {
        let mut ids = Vec::with_capacity(BATCH * MAX_LEN);
        for s in &sents[b0..b0 + BATCH] {
            let mut t = vocab.encode(s, MAX_LEN);
            t.resize(MAX_LEN, 0);
            ids.extend(t);
        }
        let local: Vec<usize> = starts
            .iter()
            .filter(|&&s| s >= b0 && s < b0 + BATCH)
            .map(|&s| s - b0)
            .collect();
        let mut targets = Vec::new();
        qt_neighbor_targets(BATCH, 0, &local, &mut targets).unwrap();
        out.push((ids, targets));
    }
    out
}

#[test]
fn in_batch_neighbour_accuracy_rises_far_above_chance() {
    let corpus = builtin_corpus(&CorpusConfig {
        documents: 400,
        seed: 5,
    });
    let docs: Vec<Vec<String>> = corpus.into_iter().map(|d| d.sentences).collect();
    let (train_docs, test_docs) = docs.split_at(320);
    let vocab = Vocab::build(train_docs.iter().flatten(), 1, 5000).unwrap();
    let train = batches(train_docs, &vocab);
    let test = batches(test_docs, &vocab);
    let cfg = SentenceEncoderConfig {
        kind: SentenceEncoderKind::Cnn,
        vocab: vocab.len(),
        embed_dim: 32,
        channels: 64,
        kernel: 3,
        max_len: MAX_LEN,
    };
    let mut m = quick_thoughts(&cfg, BATCH, QtObjective::InBatch, 9).unwrap();
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default())
        .build(m.graph.params().len())
        .unwrap();
    let evaluate = |m: &mut selfsup::nn::QuickThoughtsModel| {
        let (mut hits, mut total) = (0.0, 0.0);
        for (ids, targets) in &test {
            m.graph.set_tokens(m.f.tokens, ids).unwrap();
            m.graph.set_tokens(m.g.tokens, ids).unwrap();
            m.graph.set_targets(m.loss, targets).unwrap();
            m.graph.forward(Mode::Eval).unwrap();
            let acc = f64::from(m.graph.accuracy(m.loss).unwrap());
            hits += acc * targets.len() as f64;
            total += targets.len() as f64;
        }
        hits / total
    };
    let before = evaluate(&mut m);
    let mut losses = Vec::new();
    for epoch in 0..3 {
        for (ids, targets) in &train {
            m.graph.set_tokens(m.f.tokens, ids).unwrap();
            m.graph.set_tokens(m.g.tokens, ids).unwrap();
            m.graph.set_targets(m.loss, targets).unwrap();
            m.graph.forward(Mode::Train).unwrap();
            m.graph.backward().unwrap();
            if epoch == 2 {
                losses.push(m.graph.loss_f64(m.loss));
            }
            let (p, g, groups) = m.graph.params_and_grads();
            opt.step(p, g, groups, 3e-3).unwrap();
        }
    }
    let after = evaluate(&mut m);
    // Chance: an anchor with K targets among 31 candidates hits with probability K / 31.
    let chance = 2.0 / 31.0;
    eprintln!(
        "held-out neighbour accuracy: {:.1}% before, {:.1}% after (chance about {:.1}%); last-epoch loss {:.3}",
        100.0 * before,
        100.0 * after,
        100.0 * chance,
        losses.iter().sum::<f64>() / losses.len() as f64
    );
    assert!(before < 3.0 * chance, "untrained accuracy {before}");
    assert!(
        after >= 4.0 * chance,
        "trained accuracy {after} (chance {chance})"
    );
}
