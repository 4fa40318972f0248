//! f64 direct convolution (the textbook seven nested loops) and its two gradients, written
//! from the definition `y[n,co,oy,ox] = b[co] + sum x[n,ci,oy*s+ky-p,ox*s+kx-p] w[co,ci,ky,kx]`.

use crate::kernels::conv::Conv2d;

fn at(g: &Conv2d, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
    let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
        None
    } else {
        Some((iy as usize, ix as usize))
    }
}

/// Visits every (output, input, weight) index triple that contributes a product.
fn for_each_tap(g: &Conv2d, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (g.out_h(), g.out_w());
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * g.c_out + co) * ho + oy) * wo + ox;
                    for ci in 0..g.c_in {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                if let Some((iy, ix)) = at(g, oy, ox, ky, kx) {
                                    let xi = ((n * g.c_in + ci) * g.h + iy) * g.w + ix;
                                    let wi = ((co * g.c_in + ci) * g.kh + ky) * g.kw + kx;
                                    f(yi, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward: `y` (with optional bias and ReLU).
pub fn conv2d_forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0f64; g.y_len()];
    for_each_tap(g, |yi, xi, wi| y[yi] += f64::from(x[xi]) * f64::from(w[wi]));
    let hw = g.out_h() * g.out_w();
    for (i, v) in y.iter_mut().enumerate() {
        if let Some(b) = bias {
            *v += f64::from(b[(i / hw) % g.c_out]);
        }
        if relu && *v < 0.0 {
            *v = 0.0;
        }
    }
    y
}

/// `sum |x w|` per output element: the scale of its rounding error.
pub fn conv2d_forward_magnitude(g: &Conv2d, x: &[f32], w: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0f64; g.y_len()];
    for_each_tap(g, |yi, xi, wi| {
        y[yi] += (f64::from(x[xi]) * f64::from(w[wi])).abs()
    });
    y
}

/// Input gradient `dx[xi] = sum dy[yi] w[wi]`, and its magnitude `sum |dy w|`.
pub fn conv2d_backward_input(g: &Conv2d, dy: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0f64; g.x_len()];
    let mut mag = vec![0.0f64; g.x_len()];
    for_each_tap(g, |yi, xi, wi| {
        let v = f64::from(dy[yi]) * f64::from(w[wi]);
        dx[xi] += v;
        mag[xi] += v.abs();
    });
    (dx, mag)
}

/// Weight gradient `dw[wi] = sum dy[yi] x[xi]`, and its magnitude `sum |dy x|`.
pub fn conv2d_backward_weight(g: &Conv2d, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0f64; g.w_len()];
    let mut mag = vec![0.0f64; g.w_len()];
    for_each_tap(g, |yi, xi, wi| {
        let v = f64::from(dy[yi]) * f64::from(x[xi]);
        dw[wi] += v;
        mag[wi] += v.abs();
    });
    (dw, mag)
}
