//! f64 references for the contrastive kernels, built on the full similarity matrix.

use std::ops::Range;

/// The normalization of `F.normalize`: `z / max(|z|, eps)`, per row, in f64.
pub fn normalize_rows_f64(z: &[f64], m: usize, d: usize, eps: f64) -> Vec<f64> {
    let mut u = vec![0.0; m * d];
    for i in 0..m {
        let row = &z[i * d..(i + 1) * d];
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(eps);
        for k in 0..d {
            u[i * d + k] = row[k] / norm;
        }
    }
    u
}

/// The full cosine-similarity matrix `S_ij = u_a_i . u_b_j / tau` (`ma x mb`).
pub fn cosine_similarity_f64(
    a: &[f64],
    ma: usize,
    b: &[f64],
    mb: usize,
    d: usize,
    tau: f64,
    eps: f64,
) -> Vec<f64> {
    let ua = normalize_rows_f64(a, ma, d, eps);
    let ub = normalize_rows_f64(b, mb, d, eps);
    let mut s = vec![0.0; ma * mb];
    for i in 0..ma {
        for j in 0..mb {
            let mut acc = 0.0;
            for k in 0..d {
                acc += ua[i * d + k] * ub[j * d + k];
            }
            s[i * mb + j] = acc / tau;
        }
    }
    s
}

/// NT-Xent in f64 on the full matrix: the mean over `anchors` (divided by `mean_over`) of
/// `lse_{k != i} s_ik - s_i,partner[i]`, and its gradient with respect to `z` (`m x d`),
/// derived by hand (the tests check it against finite differences of this same function).
/// Also returns the top-1 accuracy (ties count as correct).
#[allow(clippy::too_many_arguments)]
pub fn nt_xent_f64(
    z: &[f64],
    m: usize,
    d: usize,
    tau: f64,
    partner: &[usize],
    anchors: Range<usize>,
    mean_over: usize,
    eps: f64,
) -> (f64, Vec<f64>, f64) {
    let u = normalize_rows_f64(z, m, d, eps);
    let s = cosine_similarity_f64(z, m, z, m, d, tau, eps);
    // g[i][k] = dL/ds_ik.
    let mut g = vec![0.0; m * m];
    let mut loss = 0.0;
    let mut correct = 0usize;
    for i in anchors.clone() {
        let row = &s[i * m..(i + 1) * m];
        let pos = row[partner[i]];
        // loss_i = ln(1 + sum_neg exp(s_ik - s_i+)), accurate when the positive dominates.
        let negs = || (0..m).filter(|&k| k != i && k != partner[i]);
        let mx = negs().map(|k| row[k]).fold(f64::NEG_INFINITY, f64::max);
        let (li, sig) = if mx == f64::NEG_INFINITY {
            (0.0, 0.0)
        } else {
            let t = mx + negs().map(|k| (row[k] - mx).exp()).sum::<f64>().ln() - pos;
            let sp = t.max(0.0) + (-t.abs()).exp().ln_1p();
            (sp, 1.0 / (1.0 + (-t).exp()))
        };
        loss += li;
        correct += usize::from(pos >= mx);
        let lse = pos + li;
        for k in negs() {
            g[i * m + k] += (row[k] - lse).exp() / mean_over as f64;
        }
        // P_i+ - 1 = -sigmoid(t).
        g[i * m + partner[i]] -= sig / mean_over as f64;
    }
    // dL/du_i = sum_k (g_ik + g_ki) u_k / tau.
    let mut du = vec![0.0; m * d];
    for i in 0..m {
        for k in 0..m {
            let w = (g[i * m + k] + g[k * m + i]) / tau;
            if w != 0.0 {
                for c in 0..d {
                    du[i * d + c] += w * u[k * d + c];
                }
            }
        }
    }
    // Through u = z / max(|z|, eps).
    let mut dz = vec![0.0; m * d];
    for i in 0..m {
        let row = &z[i * d..(i + 1) * d];
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        let g = &du[i * d..(i + 1) * d];
        if norm < eps {
            for c in 0..d {
                dz[i * d + c] = g[c] / eps;
            }
        } else {
            let dot: f64 = (0..d).map(|c| g[c] * u[i * d + c]).sum();
            for c in 0..d {
                dz[i * d + c] = (g[c] - dot * u[i * d + c]) / norm;
            }
        }
    }
    (
        loss / mean_over as f64,
        dz,
        correct as f64 / anchors.len() as f64,
    )
}
