//! f64 references for the layer kernels: ReLU, residual add, BatchNorm2d, max / average /
//! global average pooling and the linear layer, forward and backward, written as the
//! textbook loops with every sum in `f64`.

fn f(v: f32) -> f64 {
    f64::from(v)
}

/// `max(x, 0)`, NaN kept.
pub fn relu_f64(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| if v < 0.0 { 0.0 } else { f(v) })
        .collect()
}

/// `mask > 0 ? dy : 0`.
pub fn relu_backward_f64(mask: &[f32], dy: &[f32]) -> Vec<f64> {
    mask.iter()
        .zip(dy)
        .map(|(&m, &d)| if m > 0.0 { f(d) } else { 0.0 })
        .collect()
}

/// `a + b`.
pub fn add_f64(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(&a, &b)| f(a) + f(b)).collect()
}

/// `max(a + b, 0)`.
pub fn add_relu_f64(a: &[f32], b: &[f32]) -> Vec<f64> {
    add_f64(a, b).into_iter().map(|v| v.max(0.0)).collect()
}

/// `sum a * b`.
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| f(a) * f(b)).sum()
}

/// The BatchNorm2d training forward in f64: `(y, mean, biased_var)` for input `n x c x hw`.
pub fn batchnorm_train_f64(
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let xs: Vec<f64> = x.iter().map(|&v| f(v)).collect();
    batchnorm_train_f64_exact((n, c, hw), &xs, gamma, beta, eps)
}

/// As [`batchnorm_train_f64`] with an f64 input (for finite differences).
pub fn batchnorm_train_f64_exact(
    (n, c, hw): (usize, usize, usize),
    x: &[f64],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut y = vec![0.0; x.len()];
    let (mut means, mut vars) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let idx = |i: usize, j: usize| i * c * hw + ch * hw + j;
        let mut s = 0.0;
        for i in 0..n {
            for j in 0..hw {
                s += x[idx(i, j)];
            }
        }
        let mean = s / m;
        let mut ss = 0.0;
        for i in 0..n {
            for j in 0..hw {
                ss += (x[idx(i, j)] - mean).powi(2);
            }
        }
        let var = ss / m;
        let inv = 1.0 / (var + f(eps)).sqrt();
        for i in 0..n {
            for j in 0..hw {
                y[idx(i, j)] = f(gamma[ch]) * (x[idx(i, j)] - mean) * inv + f(beta[ch]);
            }
        }
        means[ch] = mean;
        vars[ch] = var;
    }
    (y, means, vars)
}

/// The BatchNorm2d eval forward in f64 with running statistics.
pub fn batchnorm_eval_f64(
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            let inv = 1.0 / (f(running_var[ch]) + f(eps)).sqrt();
            for j in 0..hw {
                let k = i * c * hw + ch * hw + j;
                y[k] = f(gamma[ch]) * (f(x[k]) - f(running_mean[ch])) * inv + f(beta[ch]);
            }
        }
    }
    y
}

/// The BatchNorm2d training backward in f64: `(dx, dgamma, dbeta)`, from the batch
/// statistics recomputed in f64.
pub fn batchnorm_backward_f64(
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let beta = vec![0.0f32; c];
    let (_, mean, var) = batchnorm_train_f64((n, c, hw), x, gamma, &beta, eps);
    let m = (n * hw) as f64;
    let mut dx = vec![0.0; x.len()];
    let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let inv = 1.0 / (var[ch] + f(eps)).sqrt();
        let idx = |i: usize, j: usize| i * c * hw + ch * hw + j;
        let xhat = |k: usize| (f(x[k]) - mean[ch]) * inv;
        let (mut s, mut sx) = (0.0, 0.0);
        for i in 0..n {
            for j in 0..hw {
                s += f(dy[idx(i, j)]);
                sx += f(dy[idx(i, j)]) * xhat(idx(i, j));
            }
        }
        for i in 0..n {
            for j in 0..hw {
                let k = idx(i, j);
                dx[k] = f(gamma[ch]) * inv / m * (m * f(dy[k]) - s - xhat(k) * sx);
            }
        }
        dg[ch] = sx;
        db[ch] = s;
    }
    (dx, dg, db)
}

/// `(out_h, out_w)` of a pooling: `floor((H + 2p - k) / s) + 1`.
pub fn pool_out(h: usize, w: usize, k: usize, s: usize, p: usize) -> (usize, usize) {
    ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
}

/// Max pooling forward in f64 over planes `planes x h x w`: `(y, argmax)`, padding `-inf`,
/// ties to the first maximum in row-major window order.
pub fn max_pool_f64(
    (planes, h, w): (usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    x: &[f32],
) -> (Vec<f64>, Vec<u32>) {
    let (oh, ow) = pool_out(h, w, k, s, p);
    let mut y = Vec::new();
    let mut arg = Vec::new();
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut best = f64::NEG_INFINITY;
                let mut at = u32::MAX;
                for di in 0..k {
                    for dj in 0..k {
                        let (r, c) = (
                            (i * s + di) as isize - p as isize,
                            (j * s + dj) as isize - p as isize,
                        );
                        if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
                            continue;
                        }
                        let v = f(x[pl * h * w + r as usize * w + c as usize]);
                        if at == u32::MAX || v > best {
                            best = v;
                            at = (r as usize * w + c as usize) as u32;
                        }
                    }
                }
                y.push(best);
                arg.push(at);
            }
        }
    }
    (y, arg)
}

/// Average pooling forward in f64, divisor `k * k` (padding counts as zero).
pub fn avg_pool_f64(
    (planes, h, w): (usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    x: &[f32],
) -> Vec<f64> {
    avg_pool_f64_exact(
        (planes, h, w),
        (k, s, p),
        &x.iter().map(|&v| f(v)).collect::<Vec<_>>(),
    )
}

/// As [`avg_pool_f64`] with an f64 input.
pub fn avg_pool_f64_exact(
    (planes, h, w): (usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    x: &[f64],
) -> Vec<f64> {
    let (oh, ow) = pool_out(h, w, k, s, p);
    let mut y = Vec::new();
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = 0.0;
                for di in 0..k {
                    for dj in 0..k {
                        let (r, c) = (
                            (i * s + di) as isize - p as isize,
                            (j * s + dj) as isize - p as isize,
                        );
                        if r >= 0 && c >= 0 && r < h as isize && c < w as isize {
                            acc += x[pl * h * w + r as usize * w + c as usize];
                        }
                    }
                }
                y.push(acc / (k * k) as f64);
            }
        }
    }
    y
}

/// The gradient of `sum(g * pool(x))` for a pooling that is linear in `x`, by the adjoint:
/// `dx[i] = sum_o g[o] * d y[o] / d x[i]`, probing each input with a unit vector.
pub fn linear_adjoint_f64(
    len_in: usize,
    forward: impl Fn(&[f64]) -> Vec<f64>,
    g: &[f32],
) -> Vec<f64> {
    let mut e = vec![0.0; len_in];
    (0..len_in)
        .map(|i| {
            e[i] = 1.0;
            let y = forward(&e);
            e[i] = 0.0;
            y.iter().zip(g).map(|(&y, &g)| y * f(g)).sum()
        })
        .collect()
}

/// Global average pooling forward in f64: `planes x hw -> planes`.
pub fn global_avg_pool_f64(planes: usize, hw: usize, x: &[f32]) -> Vec<f64> {
    (0..planes)
        .map(|p| x[p * hw..(p + 1) * hw].iter().map(|&v| f(v)).sum::<f64>() / hw as f64)
        .collect()
}

/// `y = x W^T + b` (`x`: `n x i`, `W`: `o x i`), optional ReLU.
pub fn linear_f64(
    (n, i, o): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut s = b.map_or(0.0, |b| f(b[c]));
            for k in 0..i {
                s += f(x[r * i + k]) * f(w[c * i + k]);
            }
            y[r * o + c] = if relu { s.max(0.0) } else { s };
        }
    }
    y
}

/// Linear backward in f64: `(dx = dy W, dw = dy^T x, db = colsum(dy))`.
pub fn linear_backward_f64(
    (n, i, o): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; n * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    for r in 0..n {
        for c in 0..o {
            let d = f(dy[r * o + c]);
            db[c] += d;
            for k in 0..i {
                dx[r * i + k] += d * f(w[c * i + k]);
                dw[c * i + k] += d * f(x[r * i + k]);
            }
        }
    }
    (dx, dw, db)
}
