//! The embedding lookup kernels against naive loops over random sizes, ids and padding: the
//! gathers and the bag means bit for bit, and the backwards bit for bit against a naive
//! scatter-add in sequence, position and element order (the order the graph summed in
//! before the lookup became a kernel); then the argument errors.
//!
//! `PROPTEST_CASES=2000 cargo test --release --test embedding` runs a heavier sweep.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::embedding::{
    embedding_backward, embedding_bag_mean_backward, embedding_bag_mean_forward, embedding_forward,
    Embedding,
};
use selfsup::Error;

/// `(sizes, table, ids, dy of the lookup, dy of the bag)`; ids drawn often from a small
/// range so that tokens repeat, and the padding id (when there is one) often among them.
fn problem() -> impl Strategy<Value = (Embedding, Vec<f32>, Vec<u32>, Vec<f32>, Vec<f32>)> {
    (
        0usize..=5,
        1usize..=9,
        1usize..=12,
        1usize..=17,
        any::<bool>(),
    )
        .prop_flat_map(|(n, len, vocab, dim, pad)| {
            let padding = if pad {
                (0..vocab as u32).boxed()
            } else {
                Just(u32::MAX).boxed()
            };
            (
                padding,
                prop::collection::vec(-2.0f32..2.0, vocab * dim),
                prop::collection::vec(0..vocab as u32, n * len),
                prop::collection::vec(-2.0f32..2.0, n * dim * len),
                prop::collection::vec(-2.0f32..2.0, n * dim),
            )
                .prop_map(move |(p, table, ids, dy, dy_bag)| {
                    let g = Embedding {
                        n,
                        len,
                        vocab,
                        dim,
                        padding: (p != u32::MAX).then_some(p),
                    };
                    (g, table, ids, dy, dy_bag)
                })
        })
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn lookup_matches_naive_gather_and_scatter_add((g, table, ids, dy, _) in problem()) {
        let (n, len, dim) = (g.n, g.len, g.dim);
        let mut y = vec![f32::NAN; n * dim * len];
        embedding_forward(&g, &table, &ids, &mut y).unwrap();
        let mut want = vec![0.0f32; n * dim * len];
        for b in 0..n {
            for t in 0..len {
                let id = ids[b * len + t] as usize;
                for e in 0..dim {
                    want[(b * dim + e) * len + t] = table[id * dim + e];
                }
            }
        }
        prop_assert_eq!(bits(&y), bits(&want));

        let mut dtable = vec![f32::NAN; table.len()];
        embedding_backward(&g, &ids, &dy, &mut dtable).unwrap();
        let mut want = vec![0.0f32; table.len()];
        for b in 0..n {
            for t in 0..len {
                let id = ids[b * len + t];
                if Some(id) == g.padding {
                    continue;
                }
                for e in 0..dim {
                    want[id as usize * dim + e] += dy[(b * dim + e) * len + t];
                }
            }
        }
        prop_assert_eq!(bits(&dtable), bits(&want));
    }

    #[test]
    fn bag_mean_matches_naive_mean_and_scatter_add((g, table, ids, _, dy) in problem()) {
        let (n, len, dim) = (g.n, g.len, g.dim);
        let mut y = vec![f32::NAN; n * dim];
        embedding_bag_mean_forward(&g, &table, &ids, &mut y).unwrap();
        let mut want = vec![0.0f32; n * dim];
        let mut dwant = vec![0.0f32; table.len()];
        for b in 0..n {
            let seq = &ids[b * len..(b + 1) * len];
            let kept: Vec<u32> = seq.iter().copied().filter(|&id| Some(id) != g.padding).collect();
            if kept.is_empty() {
                continue;
            }
            let inv = 1.0 / kept.len() as f32;
            for e in 0..dim {
                let mut s = 0.0f32;
                for &id in &kept {
                    s += table[id as usize * dim + e];
                }
                want[b * dim + e] = s * inv;
            }
            for &id in &kept {
                for e in 0..dim {
                    dwant[id as usize * dim + e] += inv * dy[b * dim + e];
                }
            }
        }
        prop_assert_eq!(bits(&y), bits(&want));

        let mut dtable = vec![f32::NAN; table.len()];
        embedding_bag_mean_backward(&g, &ids, &dy, &mut dtable).unwrap();
        prop_assert_eq!(bits(&dtable), bits(&dwant));
    }
}

#[test]
fn bad_arguments_are_errors() {
    let g = Embedding {
        n: 2,
        len: 3,
        vocab: 4,
        dim: 2,
        padding: Some(0),
    };
    let table = vec![1.0; 8];
    let ids = vec![0, 1, 2, 3, 1, 0];
    let mut y = vec![0.0; 12];
    embedding_forward(&g, &table, &ids, &mut y).unwrap();
    let shape = |r: Result<(), Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let invalid = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(shape(embedding_forward(&g, &table[1..], &ids, &mut y)));
    assert!(shape(embedding_forward(&g, &table, &ids[1..], &mut y)));
    assert!(shape(embedding_forward(&g, &table, &ids, &mut y[1..])));
    assert!(shape(embedding_bag_mean_forward(&g, &table, &ids, &mut y)));
    assert!(shape(embedding_backward(&g, &ids, &y[1..], &mut [0.0; 8])));
    assert!(shape(embedding_bag_mean_backward(
        &g,
        &ids,
        &y[..4],
        &mut [0.0; 7]
    )));
    let mut bad_ids = ids.clone();
    bad_ids[4] = 4;
    assert!(invalid(embedding_forward(&g, &table, &bad_ids, &mut y)));
    assert!(invalid(embedding_backward(&g, &bad_ids, &y, &mut [0.0; 8])));
    let bad_pad = Embedding {
        padding: Some(4),
        ..g
    };
    assert!(invalid(embedding_forward(&bad_pad, &table, &ids, &mut y)));
    let no_dim = Embedding { dim: 0, ..g };
    assert!(invalid(embedding_bag_mean_forward(
        &no_dim,
        &[],
        &ids,
        &mut []
    )));
}
