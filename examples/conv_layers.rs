//! GFLOP/s of the convolution passes of the benchmark model's layers, one at a time: the
//! forward pass, the weight gradient and the input gradient of each, the best of `REPS`
//! timed runs after a warm-up. Run with
//! `cargo run --release --example conv_layers -- [REPS] [NAME...]`
//! (threads: `RAYON_NUM_THREADS`; names: stem, stem96, l1, l2, l3).

use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d,
};
use std::time::Instant;

fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The best time of `reps` runs of `f`, in seconds (with `MEDIAN` set: the median).
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    if std::env::var_os("MEDIAN").is_some() {
        v[reps / 2]
    } else {
        v[0]
    }
}

fn main() -> selfsup::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    // The batch (`BATCH`, default 512; half of it at 96 pixels).
    let n: usize = std::env::var("BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let layers = [
        ("stem", Conv2d::new(n, 3, 32, 32, 32, 3, 1, 1)),
        ("stem96", Conv2d::new(n / 2, 3, 96, 96, 32, 3, 2, 1)),
        ("l1", Conv2d::new(n, 32, 32, 32, 32, 3, 1, 1)),
        ("l2", Conv2d::new(n, 64, 16, 16, 64, 3, 1, 1)),
        ("l3", Conv2d::new(n, 128, 8, 8, 128, 3, 1, 1)),
        ("l2c1", Conv2d::new(n, 32, 32, 32, 64, 3, 2, 1)),
        ("l1_96", Conv2d::new(n / 2, 32, 48, 48, 32, 3, 1, 1)),
        ("l2_96", Conv2d::new(n / 2, 64, 24, 24, 64, 3, 1, 1)),
        ("l2c1_96", Conv2d::new(n / 2, 32, 48, 48, 64, 3, 2, 1)),
    ];
    let names: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    println!(
        "{:8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "layer", "fwd ms", "GFLOP/s", "wgrad ms", "GFLOP/s", "dx ms", "GFLOP/s"
    );
    for (name, g) in layers {
        if !names.is_empty() && !names.contains(&name) {
            continue;
        }
        let flops = 2.0 * (g.y_len() * g.c_in * g.kh * g.kw) as f64;
        let x = fill(g.x_len(), 1);
        let w = fill(g.w_len(), 2);
        let dy = fill(g.y_len(), 3);
        let mut y = vec![0.0f32; g.y_len()];
        let mut dw = vec![0.0f32; g.w_len()];
        let mut dx = vec![0.0f32; g.x_len()];
        let tf = best(reps, || {
            conv2d_forward(&g, &x, &w, None, true, &mut y).unwrap();
        });
        let tw = best(reps, || {
            conv2d_backward_weight(&g, &x, &dy, &mut dw, false).unwrap();
        });
        let ti = best(reps, || {
            conv2d_backward_input(&g, &dy, &w, &mut dx).unwrap();
        });
        let gf = |t: f64| flops / t / 1e9;
        println!(
            "{name:8} {:9.2} {:8.1} {:9.2} {:8.1} {:9.2} {:8.1}",
            tf * 1e3,
            gf(tf),
            tw * 1e3,
            gf(tw),
            ti * 1e3,
            gf(ti)
        );
        // A checksum, so that the A/B compares the same results.
        let sum = |v: &[f32]| v.iter().map(|&a| f64::from(a)).sum::<f64>();
        eprintln!(
            "{name}: sum y {:.6e} dw {:.6e} dx {:.6e}",
            sum(&y),
            sum(&dw),
            sum(&dx)
        );
    }
    Ok(())
}
