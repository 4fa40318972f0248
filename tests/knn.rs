//! The weighted kNN monitor against a slow f64 reference.

use selfsup::eval::knn::{knn_accuracy, knn_predict, KnnConfig};
use selfsup::rng::SplitMix64;

/// Gaussian-ish clusters: `n` rows of dimension `d` around one centre per class.
fn clusters(n: usize, d: usize, classes: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..classes * d).map(|_| r.next_f32() * 2.0 - 1.0).collect();
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i * 7 + 3) % classes;
        y.push(c as u32);
        for j in 0..d {
            let noise: f32 = (0..4).map(|_| r.next_f32() - 0.5).sum();
            x.push(centres[c * d + j] + spread * noise);
        }
    }
    (x, y)
}

fn reference(
    bank: &[f32],
    labels: &[u32],
    q: &[f32],
    d: usize,
    classes: usize,
    k: usize,
    t: f64,
) -> Vec<u32> {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|&a| f64::from(a) * f64::from(a))
            .sum::<f64>()
            .sqrt()
    };
    let n = labels.len();
    q.chunks(d)
        .map(|qr| {
            let qn = norm(qr);
            let mut sims: Vec<(f64, usize)> = bank
                .chunks(d)
                .enumerate()
                .map(|(j, br)| {
                    let dot: f64 = qr
                        .iter()
                        .zip(br)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    (dot / (qn * norm(br)), j)
                })
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut votes = vec![0.0f64; classes];
            for &(s, j) in &sims[..k.min(n)] {
                votes[labels[j] as usize] += (s / t).exp();
            }
            let mut best = 0;
            for c in 0..classes {
                if votes[c] > votes[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

#[test]
fn matches_the_f64_reference() {
    for (n, m, d, classes, k, spread, seed) in [
        (300, 97, 16, 5, 20, 0.8, 1),
        (50, 300, 7, 3, 200, 1.5, 2), // k larger than the bank
        (513, 64, 33, 10, 1, 1.0, 3),
    ] {
        let (bank, labels) = clusters(n, d, classes, spread, seed);
        // Queries from the same centres: the bank's seed, drawn further along.
        let (more, _) = clusters(n + m, d, classes, spread, seed);
        let q = &more[n * d..];
        let cfg = KnnConfig { k, t: 0.1 };
        let got = knn_predict(&bank, &labels, q, d, classes, &cfg).unwrap();
        let want = reference(&bank, &labels, q, d, classes, k, 0.1);
        // f32 similarities may reorder near-ties at the k-th neighbour: allow 1 in 50.
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(
            diff * 50 <= m,
            "n {n} m {m} d {d} k {k}: {diff} of {m} differ"
        );
    }
}

#[test]
fn nearest_neighbour_of_a_bank_row_is_itself() {
    let (bank, labels) = clusters(200, 12, 4, 3.0, 9);
    let cfg = KnnConfig { k: 1, t: 0.1 };
    let acc = knn_accuracy(&bank, &labels, &bank, &labels, 12, 4, &cfg).unwrap();
    assert_eq!(acc, 1.0);
}

#[test]
fn separable_clusters_are_classified_and_noise_is_near_chance() {
    // One draw (same centres), split into bank and queries.
    let (all, all_labels) = clusters(1500, 32, 10, 0.1, 4);
    let (bank, q) = all.split_at(1000 * 32);
    let (labels, ql) = all_labels.split_at(1000);
    let acc = knn_accuracy(bank, labels, q, ql, 32, 10, &KnnConfig::default()).unwrap();
    assert!(acc > 0.99, "{acc}");
    // Labels unrelated to the features: about 1 in 10.
    let shuffled: Vec<u32> = (0..1000).map(|i| ((i * 37 + 11) % 10) as u32).collect();
    let acc = knn_accuracy(bank, &shuffled, q, ql, 32, 10, &KnnConfig::default()).unwrap();
    assert!(acc < 0.25, "{acc}");
}

#[test]
fn result_does_not_depend_on_the_thread_count() {
    let (bank, labels) = clusters(700, 20, 6, 1.5, 6);
    let (q, _) = clusters(600, 20, 6, 1.5, 7);
    let run = |t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| knn_predict(&bank, &labels, &q, 20, 6, &KnnConfig::default()).unwrap())
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_arguments_are_errors() {
    let (bank, labels) = clusters(10, 4, 2, 1.0, 8);
    let q = vec![0.5f32; 8];
    let ok = KnnConfig::default();
    assert!(knn_predict(&bank, &labels, &q, 0, 2, &ok).is_err());
    assert!(knn_predict(&bank, &labels, &q, 4, 1, &ok).is_err()); // label 1 >= classes 1
    assert!(knn_predict(&bank[..39], &labels, &q, 4, 2, &ok).is_err());
    assert!(knn_predict(&bank, &labels, &q[..7], 4, 2, &ok).is_err());
    assert!(knn_predict(&[], &[], &q, 4, 2, &ok).is_err());
    assert!(knn_predict(&bank, &labels, &q, 4, 2, &KnnConfig { k: 0, t: 0.1 }).is_err());
    assert!(knn_predict(&bank, &labels, &q, 4, 2, &KnnConfig { k: 5, t: 0.0 }).is_err());
    let mut bad = bank.clone();
    bad[5] = f32::NAN;
    let e = knn_predict(&bad, &labels, &q, 4, 2, &ok).unwrap_err();
    assert!(e.to_string().contains("bank row 1"), "{e}");
    assert!(knn_accuracy(&bank, &labels, &q, &[0], 4, 2, &ok).is_err());
}
