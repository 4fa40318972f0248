//! f64 references for the losses: softmax cross-entropy, (log-)softmax rows and the two Quick
//! Thoughts objectives, written as the textbook formulas over full matrices (the in-batch
//! score matrix is built whole), every sum in `f64`.

fn f(v: f32) -> f64 {
    f64::from(v)
}

/// `(m, ln sum_j e^(x_j - m))` with `m = max x`, over finite-or-`-inf` entries: the
/// log-sum-exp is their sum, kept apart so that `x_j - lse` can be formed as
/// `(x_j - m) - ln s` without losing `ln s` against a huge `m`.
pub fn lse_parts_f64(x: &[f64]) -> (f64, f64) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return (m, 0.0);
    }
    (m, x.iter().map(|&v| (v - m).exp()).sum::<f64>().ln())
}

/// `log_softmax` of each row of `x` (`n x c`).
pub fn log_softmax_f64(x: &[f32], n: usize, c: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * c);
    for row in x.chunks_exact(c).take(n) {
        let r: Vec<f64> = row.iter().map(|&v| f(v)).collect();
        let (m, ls) = lse_parts_f64(&r);
        out.extend(r.iter().map(|&v| (v - m) - ls));
    }
    out
}

/// `softmax` of each row of `x` (`n x c`).
pub fn softmax_f64(x: &[f32], n: usize, c: usize) -> Vec<f64> {
    log_softmax_f64(x, n, c).into_iter().map(f64::exp).collect()
}

/// Softmax cross-entropy with integer labels: `(mean loss, dlogits, correct)` where
/// `dlogits = (softmax - onehot) / n` and `correct` counts rows whose label is the first
/// maximum.
pub fn softmax_xent_f64(
    logits: &[f32],
    n: usize,
    c: usize,
    labels: &[u32],
) -> (f64, Vec<f64>, usize) {
    let ls = log_softmax_f64(logits, n, c);
    let mut loss = 0.0;
    let mut grad = vec![0.0; n * c];
    let mut correct = 0;
    for i in 0..n {
        let y = labels[i] as usize;
        loss -= ls[i * c + y];
        for j in 0..c {
            grad[i * c + j] = ls[i * c + j].exp() / n as f64;
        }
        grad[i * c + y] -= 1.0 / n as f64;
        let row = &logits[i * c..(i + 1) * c];
        let mut arg = 0;
        for j in 1..c {
            if row[j] > row[arg] {
                arg = j;
            }
        }
        correct += usize::from(arg == y);
    }
    (loss / n as f64, grad, correct)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f(x) * f(y)).sum()
}

/// `ln(1 + e^t)`, stably.
pub fn softplus_f64(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// The pairwise logistic loss: `(mean loss, dA, dB)` for triplets `(anchor, pos, neg)` over
/// `a` (`n_a x d`) and `b` (`n_b x d`), loss `softplus(a . b_neg - a . b_pos)`.
pub fn qt_pairwise_f64(
    a: &[f32],
    n_a: usize,
    b: &[f32],
    n_b: usize,
    d: usize,
    triplets: &[(u32, u32, u32)],
) -> (f64, Vec<f64>, Vec<f64>) {
    let t = triplets.len() as f64;
    let mut loss = 0.0;
    let mut da = vec![0.0; n_a * d];
    let mut db = vec![0.0; n_b * d];
    for &(i, p, q) in triplets {
        let (i, p, q) = (i as usize, p as usize, q as usize);
        let ai = &a[i * d..(i + 1) * d];
        let bp = &b[p * d..(p + 1) * d];
        let bq = &b[q * d..(q + 1) * d];
        let m = dot(ai, bq) - dot(ai, bp);
        loss += softplus_f64(m);
        let g = 1.0 / (1.0 + (-m).exp()) / t;
        for k in 0..d {
            da[i * d + k] += g * (f(bq[k]) - f(bp[k]));
            db[q * d + k] += g * f(ai[k]);
            db[p * d + k] -= g * f(ai[k]);
        }
    }
    (loss / t, da, db)
}

/// What [`qt_in_batch_f64`] computes.
#[derive(Clone, Debug)]
pub struct QtInBatchRef {
    pub loss: f64,
    /// `n x d`.
    pub df: Vec<f64>,
    /// `m x d`.
    pub dg: Vec<f64>,
    /// `|scale| sum_j (K_i p_ij + Y_ij) / T |g_jp|` (`n x d`): the magnitude a rounding error
    /// of `dF` scales with (`W = (K p - Y) / T` is formed from these two terms, which cancel
    /// when a target candidate takes almost all the probability).
    pub df_mag: Vec<f64>,
    /// `|scale| sum_i (K_i p_ij + Y_ij) / T |f_ip|` (`m x d`).
    pub dg_mag: Vec<f64>,
    /// Targets ranked within the top `K_i` of their anchor (strictly-higher counting).
    pub hits: usize,
    /// Targets whose hit or miss could flip under a perturbation of the scores of `tie_tol`
    /// (some other non-self candidate scores within `tie_tol` of the target).
    pub ambiguous: usize,
}

/// The full score matrix `S = scale F G^T` (`n x m`), with `-inf` at the excluded selves.
pub fn qt_scores_f64(
    fm: &[f32],
    n: usize,
    g: &[f32],
    m: usize,
    d: usize,
    scale: f32,
    self_offset: Option<usize>,
) -> Vec<f64> {
    let mut s = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            s[i * m + j] = f(scale) * dot(&fm[i * d..(i + 1) * d], &g[j * d..(j + 1) * d]);
        }
        if let Some(o) = self_offset {
            s[i * m + i + o] = f64::NEG_INFINITY;
        }
    }
    s
}

/// The Quick Thoughts in-batch classification loss over the full score matrix: the mean
/// over target pairs `(i, c)` of `lse_{j != self(i)} S_ij - S_ic`, its gradients and the
/// top-`K_i` hits.
#[allow(clippy::too_many_arguments)]
pub fn qt_in_batch_f64(
    fm: &[f32],
    n: usize,
    g: &[f32],
    m: usize,
    d: usize,
    scale: f32,
    self_offset: Option<usize>,
    targets: &[(u32, u32)],
    tie_tol: f64,
) -> QtInBatchRef {
    let s = qt_scores_f64(fm, n, g, m, d, scale, self_offset);
    let t = targets.len() as f64;
    let lse: Vec<(f64, f64)> = (0..n)
        .map(|i| lse_parts_f64(&s[i * m..(i + 1) * m]))
        .collect();
    let mut k = vec![0usize; n];
    for &(i, _) in targets {
        k[i as usize] += 1;
    }
    // W = dL/dS, and |K p| + |Y| (its two terms before they cancel).
    let mut w = vec![0.0; n * m];
    for i in 0..n {
        if k[i] == 0 {
            continue;
        }
        for j in 0..m {
            w[i * m + j] = k[i] as f64 * ((s[i * m + j] - lse[i].0) - lse[i].1).exp() / t;
        }
    }
    let mut wabs = w.clone();
    let mut loss = 0.0;
    let (mut hits, mut ambiguous) = (0, 0);
    for &(i, c) in targets {
        let (i, c) = (i as usize, c as usize);
        loss += (lse[i].0 - s[i * m + c]) + lse[i].1;
        w[i * m + c] -= 1.0 / t;
        wabs[i * m + c] += 1.0 / t;
        let sc = s[i * m + c];
        let row = &s[i * m..(i + 1) * m];
        let higher = row.iter().filter(|&&v| v > sc).count();
        hits += usize::from(higher < k[i]); // rank 1 + higher <= K_i
        let close = row
            .iter()
            .enumerate()
            .any(|(j, &v)| j != c && (v - sc).abs() <= tie_tol);
        ambiguous += usize::from(close);
    }
    let sc = f(scale);
    let mut df = vec![0.0; n * d];
    let mut dg = vec![0.0; m * d];
    let mut df_mag = vec![0.0; n * d];
    let mut dg_mag = vec![0.0; m * d];
    for i in 0..n {
        for j in 0..m {
            let wij = w[i * m + j] * sc;
            let aij = wabs[i * m + j] * sc.abs();
            if aij == 0.0 {
                continue;
            }
            for p in 0..d {
                df[i * d + p] += wij * f(g[j * d + p]);
                dg[j * d + p] += wij * f(fm[i * d + p]);
                df_mag[i * d + p] += aij * f(g[j * d + p]).abs();
                dg_mag[j * d + p] += aij * f(fm[i * d + p]).abs();
            }
        }
    }
    QtInBatchRef {
        loss: loss / t,
        df,
        dg,
        df_mag,
        dg_mag,
        hits,
        ambiguous,
    }
}
