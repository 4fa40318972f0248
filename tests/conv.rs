//! conv2d forward, input gradient and weight gradient against the f64 direct convolution;
//! finite differences; thread-count invariance; bad geometry.

mod common;
use common::cases;

use proptest::prelude::*;
use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, conv2d_forward_residual, Conv2d,
};
use selfsup::kernels::elementwise::{add, add_relu};
use selfsup::kernels::reference::conv as refc;

/// Sizes as the strategies draw them, `((n, c_in, c_out), (h, w), (kh, kw), (sh, sw),
/// (ph, pw))`.
type Sizes = (
    (usize, usize, usize),
    (usize, usize),
    (usize, usize),
    (usize, usize),
    (usize, usize),
);

/// The geometry of drawn sizes, when the kernel fits the padded image.
fn valid_geometry(((n, ci, co), (h, w), (kh, kw), (sh, sw), (ph, pw)): Sizes) -> Option<Conv2d> {
    let g = Conv2d {
        n,
        c_in: ci,
        h,
        w,
        c_out: co,
        kh,
        kw,
        stride: (sh, sw),
        pad: (ph, pw),
    };
    g.validate().ok().map(|_| g)
}

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

fn close(
    what: &str,
    got: &[f32],
    want: &[f64],
    mag: &[f64],
    taps: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    let eps = f64::from(f32::EPSILON);
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = (taps as f64 + 4.0) * eps * (m + w.abs()) + 1e-6;
        prop_assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}[{i}] = {g}, want {w} (tol {tol:e})"
        );
    }
    Ok(())
}

fn geometry() -> impl Strategy<Value = Conv2d> {
    (
        // Output channels across the kernels' channel panels (16 for AVX2, 32 for AVX-512).
        (
            1usize..4,
            1usize..6,
            prop_oneof![1usize..9, 14usize..19, 30usize..35, 63usize..66],
        ),
        (1usize..12, 1usize..12),
        (1usize..6, 1usize..6),
        (1usize..4, 1usize..4),
        (0usize..3, 0usize..3),
    )
        .prop_filter_map("kernel must fit", valid_geometry)
}

/// Wide outputs for the row tiles of the direct forward pass (pixels in the lanes: 8 on
/// AVX2, 16 on AVX-512, up to 2 or 3 vectors per tile): rows of whole and partial vectors,
/// one or several tiles per row, horizontal strides 1 to 3 (column phases), channel counts
/// off the row tiles' 6 or 8.
fn wide_geometry() -> impl Strategy<Value = Conv2d> {
    (
        (
            1usize..3,
            1usize..5,
            prop_oneof![1usize..10, 13usize..18, 31usize..34],
        ),
        (
            1usize..5,
            prop_oneof![
                16usize..21,
                30usize..36,
                46usize..51,
                63usize..68,
                95usize..99
            ],
        ),
        (1usize..4, 1usize..4),
        (1usize..3, 1usize..4),
        (0usize..3, 0usize..3),
    )
        .prop_filter_map("kernel must fit", valid_geometry)
}

/// 3x3, stride-1, pad-1 kernels with at least 32 input and output channels (Winograd
/// F(2x2, 3x3) on AVX-512 and AVX2: the forward pass, the input gradient through it and, at
/// 64 channels and more on AVX-512, the weight gradient, overwritten and accumulated): odd
/// sizes (cut last tiles), 1x1 and 2x2 images, tile rows on and off the vectors' lanes,
/// channel counts off the 8-row panels and the 16-lane blocks of the weight gradient's
/// transposed input, batch 1, images cut into blocks of tile rows (32 channels, 31-35 pixels
/// wide).
fn winograd_geometry() -> impl Strategy<Value = Conv2d> {
    (
        (
            1usize..4,
            prop_oneof![32usize..35, 64usize..67, 71usize..74, 127usize..130],
            prop_oneof![32usize..35, 64usize..67, 69usize..73, 127usize..130],
        ),
        (
            prop_oneof![1usize..10, 15usize..18],
            prop_oneof![1usize..10, 31usize..35],
        ),
    )
        .prop_map(|((n, ci, co), (h, w))| Conv2d::new(n, ci, h, w, co, 3, 1, 1))
}

/// 1x1 unpadded kernels with a stride above 1 (the ResNet shortcut projections): odd sizes,
/// single-pixel outputs, pixel counts on and off the 8-lane vectors, channels across the
/// weight-gradient tile (4 x 3) and the GEMM's row panels (6 and 12 rows).
fn pointwise_strided() -> impl Strategy<Value = Conv2d> {
    (
        (
            1usize..5,
            prop_oneof![1usize..8, 30usize..35],
            prop_oneof![1usize..9, 11usize..14, 23usize..26, 63usize..66],
        ),
        (1usize..20, 1usize..20),
        (1usize..5, 1usize..5),
    )
        .prop_filter_map("a stride above 1", |((n, ci, co), (h, w), (sh, sw))| {
            let g = Conv2d {
                n,
                c_in: ci,
                h,
                w,
                c_out: co,
                kh: 1,
                kw: 1,
                stride: (sh, sw),
                pad: (0, 0),
            };
            (g.stride != (1, 1)).then_some(g)
        })
}

/// The forward pass with a residual is, bit for bit, the forward pass without ReLU followed
/// by the residual join (`add`, or `add_relu`), whatever the strategy stores it.
fn check_residual(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    seed: u64,
) -> Result<(), TestCaseError> {
    let r = fill(g.y_len(), seed + 4);
    for (bias, relu) in [
        (None, false),
        (Some(b), true),
        (None, true),
        (Some(b), false),
    ] {
        let mut plain = vec![f32::NAN; g.y_len()];
        conv2d_forward(g, x, w, bias, false, &mut plain).unwrap();
        let mut want = vec![f32::NAN; g.y_len()];
        if relu {
            add_relu(&plain, &r, &mut want).unwrap();
        } else {
            add(&plain, &r, &mut want).unwrap();
        }
        let mut y = vec![f32::NAN; g.y_len()];
        conv2d_forward_residual(g, x, w, bias, &r, relu, &mut y).unwrap();
        for (i, (a, e)) in y.iter().zip(&want).enumerate() {
            prop_assert_eq!(
                a.to_bits(),
                e.to_bits(),
                "residual forward at {}: {} vs {} (bias {}, relu {})",
                i,
                a,
                e,
                bias.is_some(),
                relu
            );
        }
    }
    let mut y = vec![0.0; g.y_len()];
    prop_assert!(conv2d_forward_residual(g, x, w, None, &r[1..], true, &mut y).is_err());
    Ok(())
}

fn check_all(g: &Conv2d, seed: u64) -> Result<(), TestCaseError> {
    let x = fill(g.x_len(), seed);
    let w = fill(g.w_len(), seed + 1);
    let b = fill(g.c_out, seed + 2);
    let taps = g.c_in * g.kh * g.kw;
    for (bias, relu) in [(None, false), (Some(&b[..]), true)] {
        let mut y = vec![f32::NAN; g.y_len()];
        conv2d_forward(g, &x, &w, bias, relu, &mut y).unwrap();
        let want = refc::conv2d_forward(g, &x, &w, bias, relu);
        let mag = refc::conv2d_forward_magnitude(g, &x, &w);
        close("y", &y, &want, &mag, taps)?;
    }
    check_residual(g, &x, &w, &b, seed)?;
    let dy = fill(g.y_len(), seed + 3);
    let mut dx = vec![f32::NAN; g.x_len()];
    conv2d_backward_input(g, &dy, &w, &mut dx).unwrap();
    let (want, mag) = refc::conv2d_backward_input(g, &dy, &w);
    close("dx", &dx, &want, &mag, g.c_out * g.kh * g.kw)?;

    let (want, mag) = refc::conv2d_backward_weight(g, &x, &dy);
    let mut dw = vec![f32::NAN; g.w_len()];
    conv2d_backward_weight(g, &x, &dy, &mut dw, false).unwrap();
    let depth = g.n * g.out_h() * g.out_w();
    close("dw", &dw, &want, &mag, depth)?;
    // Accumulation adds onto what is there.
    let mut acc = vec![1.0f32; g.w_len()];
    conv2d_backward_weight(g, &x, &dy, &mut acc, true).unwrap();
    let plus_one: Vec<f64> = want.iter().map(|v| v + 1.0).collect();
    close("dw accumulated", &acc, &plus_one, &mag, depth)?;
    Ok(())
}

/// Strided geometries for the input gradient (polyphase on AVX2/AVX-512, col2im on the
/// portable path): 3x3 and 5x5 kernels (and mixed), strides 2 and 3, padding 0 to 2, odd and
/// even sizes down to images smaller than the kernel, and input channels (the polyphase
/// kernel's lanes) across the 16- and 32-lane panels.
fn strided_geometry() -> impl Strategy<Value = Conv2d> {
    (
        (
            1usize..4,
            prop_oneof![1usize..9, 14usize..19, 30usize..35, 63usize..66],
            1usize..20,
        ),
        (1usize..14, 1usize..14),
        (
            prop_oneof![Just(3usize), Just(5)],
            prop_oneof![Just(3usize), Just(5)],
        ),
        (2usize..4, 1usize..4),
        (0usize..3, 0usize..3),
        any::<bool>(),
    )
        .prop_filter_map(
            "kernel must fit",
            |((n, ci, co), (h, w), (kh, kw), (sh, sw), (ph, pw), swap)| {
                // Either axis may be the strided one (the other's stride 1 to 3).
                let stride = if swap { (sw, sh) } else { (sh, sw) };
                let g = Conv2d {
                    n,
                    c_in: ci,
                    h,
                    w,
                    c_out: co,
                    kh,
                    kw,
                    stride,
                    pad: (ph, pw),
                };
                g.validate().ok().map(|_| g)
            },
        )
}

/// The input gradient of `g` against the f64 reference; `dx` starts as NaN, so an element
/// left unwritten fails.
fn check_input_grad(g: &Conv2d, seed: u64) -> Result<(), TestCaseError> {
    let w = fill(g.w_len(), seed + 1);
    let dy = fill(g.y_len(), seed + 3);
    let mut dx = vec![f32::NAN; g.x_len()];
    conv2d_backward_input(g, &dy, &w, &mut dx).unwrap();
    let (want, mag) = refc::conv2d_backward_input(g, &dy, &w);
    close("dx", &dx, &want, &mag, g.c_out * g.kh * g.kw)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_direct_f64(g in geometry(), seed in any::<u64>()) {
        check_all(&g, seed)?;
    }

    #[test]
    fn wide_conv_matches_direct_f64(g in wide_geometry(), seed in any::<u64>()) {
        check_all(&g, seed)?;
    }

    #[test]
    fn pointwise_strided_matches_direct_f64(g in pointwise_strided(), seed in any::<u64>()) {
        check_all(&g, seed)?;
    }

    #[test]
    fn winograd_conv_matches_direct_f64(g in winograd_geometry(), seed in any::<u64>()) {
        check_all(&g, seed)?;
    }

    #[test]
    fn strided_input_grad_matches_direct_f64(g in strided_geometry(), seed in any::<u64>()) {
        check_input_grad(&g, seed)?;
    }
}

/// The pointwise strided weight gradient cuts the batch into blocks of whole images (about
/// 256 output pixels) and the blocks into at most 16 chunks: one block, several blocks per
/// chunk, a short last block, and more blocks than chunks.
#[test]
fn pointwise_strided_batches_match_reference() {
    for g in [
        // ResNet-mini's shortcuts at a small batch.
        Conv2d::new(3, 32, 32, 32, 64, 1, 2, 0),
        Conv2d::new(5, 64, 16, 16, 128, 1, 2, 0),
        // 8 x 8 outputs: 4 images a block, 10 blocks of 4 and a last one of 1.
        Conv2d::new(41, 8, 16, 16, 12, 1, 2, 0),
        // 2 x 2 outputs (one padded vector): 32 images a block, 19 blocks in 16 chunks.
        Conv2d::new(600, 3, 4, 4, 5, 1, 3, 0),
        // Unequal strides, a single input column, a single output pixel.
        Conv2d {
            stride: (2, 3),
            ..Conv2d::new(7, 6, 9, 10, 7, 1, 1, 0)
        },
        Conv2d {
            stride: (3, 1),
            ..Conv2d::new(2, 5, 7, 1, 9, 1, 1, 0)
        },
        Conv2d::new(1, 4, 1, 1, 3, 1, 2, 0),
    ] {
        check_all(&g, 17).unwrap();
    }
}

#[test]
fn strided_input_grad_edges_match_reference() {
    let g = |n, c_in, (h, w), c_out, k, s, p| Conv2d {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k,
        kw: k,
        stride: (s, s),
        pad: (p, p),
    };
    for k in [3, 5] {
        for s in [2, 3] {
            for p in 0..3 {
                for hw in [(1, 1), (2, 3), (4, 4), (5, 6), (7, 7), (8, 9), (12, 11)] {
                    for (c_in, c_out) in [(1, 1), (3, 5), (17, 2), (33, 9), (64, 3)] {
                        let g = g(1, c_in, hw, c_out, k, s, p);
                        if g.validate().is_ok() {
                            check_input_grad(&g, (k * 100 + s * 10 + p) as u64).unwrap();
                        }
                    }
                }
            }
        }
    }
    // Pointwise strided (taps reach one pixel class of four), kernels smaller than the
    // stride (rows and columns no tap reaches), padding of the kernel size (stride 1 too).
    for g in [
        Conv2d::new(2, 32, 16, 16, 64, 1, 2, 0),
        Conv2d::new(3, 5, 9, 10, 4, 2, 3, 0),
        Conv2d::new(2, 4, 7, 7, 3, 2, 3, 1),
        Conv2d::new(2, 6, 5, 5, 3, 3, 1, 3),
        Conv2d::new(2, 6, 5, 6, 3, 2, 2, 2),
        // The ResNet stage entries at a small batch, and many groups of images.
        Conv2d::new(3, 32, 32, 32, 64, 3, 2, 1),
        Conv2d::new(3, 64, 16, 16, 128, 3, 2, 1),
        Conv2d::new(40, 16, 8, 8, 24, 3, 2, 1),
    ] {
        check_input_grad(&g, 5).unwrap();
    }
}

#[test]
fn resnet_mini_layers_match_reference() {
    // The layer shapes of the benchmark model, at a small batch.
    for g in [
        Conv2d::new(2, 3, 32, 32, 32, 3, 1, 1),
        Conv2d::new(2, 32, 32, 32, 32, 3, 1, 1),
        Conv2d::new(2, 3, 96, 96, 32, 3, 2, 1),
        Conv2d::new(2, 32, 16, 16, 64, 3, 2, 1),
        Conv2d::new(2, 32, 16, 16, 64, 1, 2, 0),
        Conv2d::new(2, 64, 8, 8, 64, 3, 1, 1),
        Conv2d::new(1, 64, 8, 8, 128, 1, 1, 0),
        // More images than one GEMM group holds (1024 columns): 16 + 4 images.
        Conv2d::new(20, 8, 8, 8, 8, 3, 1, 1),
        Conv2d::new(20, 8, 16, 16, 8, 3, 2, 1),
        Conv2d::new(20, 8, 8, 8, 8, 1, 1, 0),
        // Large images: the weight gradient sums over several groups of images (1 MiB of
        // padded input and transposed output gradient each), the forward pass over several
        // groups too.
        Conv2d::new(6, 16, 64, 64, 8, 3, 1, 1),
        // More groups of the weight gradient (18, two images each) than chunks (16): some
        // chunks sum two groups.
        Conv2d::new(36, 16, 48, 48, 8, 3, 1, 1),
    ] {
        check_all(&g, 7).unwrap();
    }
}

/// The Winograd forward pass (and the input gradient through it) and weight gradient
/// (overwritten and accumulated) at their edges: 1x1, 2x2 and odd images, a tile row of
/// exactly 16 and of 17 tiles, groups of several images with a short last group, batch 1,
/// images cut into blocks of tile rows (a short last block; a tile row of 9; the benchmark
/// model's 32 x 32 layer at 32 channels); for the weight gradient also more groups than
/// chunks (some chunks sum several groups) and input channels in 32-, 16- and partial
/// 16-lane blocks.
#[test]
fn winograd_edges_match_reference() {
    for g in [
        Conv2d::new(40, 64, 16, 16, 64, 3, 1, 1),
        Conv2d::new(2, 100, 6, 9, 64, 3, 1, 1),
        Conv2d::new(2, 81, 3, 3, 65, 3, 1, 1),
        Conv2d::new(1, 64, 1, 1, 64, 3, 1, 1),
        Conv2d::new(3, 64, 2, 2, 72, 3, 1, 1),
        Conv2d::new(2, 65, 3, 5, 64, 3, 1, 1),
        Conv2d::new(1, 64, 7, 32, 64, 3, 1, 1),
        Conv2d::new(1, 64, 4, 33, 64, 3, 1, 1),
        Conv2d::new(19, 64, 8, 8, 128, 3, 1, 1),
        Conv2d::new(10, 128, 5, 5, 66, 3, 1, 1),
        Conv2d::new(1, 32, 34, 34, 32, 3, 1, 1),
        Conv2d::new(2, 32, 35, 18, 40, 3, 1, 1),
        Conv2d::new(3, 32, 32, 32, 32, 3, 1, 1),
    ] {
        check_all(&g, 9).unwrap();
    }
}

/// `d/dx sum(r * conv(x))` by central differences on the f32 forward, at sampled points.
#[test]
fn gradients_match_finite_differences() {
    for g in [
        Conv2d::new(2, 3, 7, 6, 4, 3, 1, 1),
        Conv2d::new(1, 2, 9, 9, 3, 3, 2, 2),
        Conv2d::new(2, 3, 5, 5, 2, 1, 1, 0),
        Conv2d::new(2, 3, 5, 7, 4, 1, 2, 0),
    ] {
        let x = fill(g.x_len(), 1);
        let w = fill(g.w_len(), 2);
        let r = fill(g.y_len(), 3);
        let loss = |x: &[f32], w: &[f32]| -> f64 {
            let mut y = vec![0.0f32; g.y_len()];
            conv2d_forward(&g, x, w, None, false, &mut y).unwrap();
            y.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let mut dx = vec![0.0f32; g.x_len()];
        conv2d_backward_input(&g, &r, &w, &mut dx).unwrap();
        let mut dw = vec![0.0f32; g.w_len()];
        conv2d_backward_weight(&g, &x, &r, &mut dw, false).unwrap();
        let h = 1e-2f32;
        for i in (0..g.x_len()).step_by(5) {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp, &w) - loss(&xm, &w)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(dx[i])).abs() <= 2e-3 * (1.0 + fd.abs()),
                "{g:?} dx[{i}]: fd {fd} vs {}",
                dx[i]
            );
        }
        for i in 0..g.w_len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[i] += h;
            wm[i] -= h;
            let fd = (loss(&x, &wp) - loss(&x, &wm)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(dw[i])).abs() <= 2e-3 * (1.0 + fd.abs()),
                "{g:?} dw[{i}]: fd {fd} vs {}",
                dw[i]
            );
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn run_all(g: &Conv2d, threads: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let x = fill(g.x_len(), 11);
    let w = fill(g.w_len(), 12);
    let dy = fill(g.y_len(), 13);
    pool.install(|| {
        let mut y = vec![0.0f32; g.y_len()];
        conv2d_forward(g, &x, &w, None, true, &mut y).unwrap();
        let mut dx = vec![0.0f32; g.x_len()];
        conv2d_backward_input(g, &dy, &w, &mut dx).unwrap();
        let mut dw = vec![0.0f32; g.w_len()];
        conv2d_backward_weight(g, &x, &dy, &mut dw, false).unwrap();
        (bits(&y), bits(&dx), bits(&dw))
    })
}

#[test]
fn bit_identical_for_1_2_3_threads() {
    for g in [
        Conv2d::new(6, 16, 16, 16, 32, 3, 1, 1),
        Conv2d::new(5, 16, 16, 16, 32, 3, 2, 1),
        Conv2d::new(1, 32, 20, 20, 48, 3, 1, 1),
        Conv2d::new(1, 32, 20, 20, 48, 1, 2, 0),
        Conv2d::new(40, 8, 8, 8, 16, 3, 1, 1),
        Conv2d::new(40, 8, 16, 16, 16, 3, 2, 1),
        Conv2d::new(6, 16, 64, 64, 8, 3, 1, 1),
        Conv2d::new(36, 16, 48, 48, 8, 3, 1, 1),
        // Wide rows (the row tiles of the forward pass), strides 1 and 2.
        Conv2d::new(20, 3, 32, 32, 32, 3, 1, 1),
        Conv2d::new(9, 3, 35, 37, 20, 3, 2, 1),
        Conv2d::new(1, 5, 8, 70, 13, 3, 1, 1),
        // Pointwise strided: weight-gradient blocks in several chunks (whole and padded
        // pixel vectors), and more blocks than chunks.
        Conv2d::new(41, 32, 16, 16, 64, 1, 2, 0),
        Conv2d::new(9, 7, 15, 13, 10, 1, 3, 0),
        Conv2d::new(600, 3, 4, 4, 5, 1, 3, 0),
        // Strided input gradients (polyphase): both ResNet stage entries, many groups of
        // images, a 5x5 stride-3 kernel, tiny images.
        Conv2d::new(20, 32, 32, 32, 64, 3, 2, 1),
        Conv2d::new(33, 64, 16, 16, 128, 3, 2, 1),
        Conv2d::new(50, 33, 9, 11, 7, 5, 3, 2),
        Conv2d::new(40, 17, 2, 3, 5, 3, 2, 1),
        // Winograd F(2x2, 3x3): many groups of images (the model's 8x8 and 16x16 layers),
        // odd sizes, a short last group; the weight gradient with more groups than chunks.
        Conv2d::new(33, 128, 8, 8, 128, 3, 1, 1),
        Conv2d::new(40, 64, 16, 16, 64, 3, 1, 1),
        Conv2d::new(20, 64, 16, 16, 64, 3, 1, 1),
        Conv2d::new(13, 64, 11, 7, 72, 3, 1, 1),
    ] {
        let one = run_all(&g, 1);
        for t in [2, 3] {
            assert!(run_all(&g, t) == one, "{g:?}: {t} threads differ from 1");
        }
    }
}

#[test]
fn bad_geometry_and_lengths_are_errors() {
    let g = Conv2d::new(1, 2, 3, 3, 2, 5, 1, 0); // kernel larger than the input
    assert!(g.validate().is_err());
    let g = Conv2d {
        stride: (0, 1),
        ..Conv2d::new(1, 2, 8, 8, 2, 3, 1, 1)
    };
    assert!(g.validate().is_err());
    let g = Conv2d::new(1, 2, 8, 8, 2, 3, 1, 1);
    let x = vec![0.0f32; g.x_len()];
    let w = vec![0.0f32; g.w_len()];
    let mut y = vec![0.0f32; g.y_len() - 1];
    let err = conv2d_forward(&g, &x, &w, None, false, &mut y).unwrap_err();
    assert!(err.to_string().contains("conv2d output"), "{err}");
    let mut y = vec![0.0f32; g.y_len()];
    assert!(conv2d_forward(&g, &x, &w, Some(&[1.0]), false, &mut y).is_err());
    let mut dw = vec![0.0f32; g.w_len() + 1];
    assert!(conv2d_backward_weight(&g, &x, &y, &mut dw, false).is_err());
    // An empty batch: nothing to compute, the weight gradient is zero (or left as is).
    for e in [
        Conv2d::new(0, 2, 8, 8, 3, 3, 1, 1),
        Conv2d::new(0, 2, 8, 8, 3, 1, 2, 0),
    ] {
        conv2d_forward(&e, &[], &vec![1.0; e.w_len()], None, false, &mut []).unwrap();
        conv2d_backward_input(&e, &[], &vec![1.0; e.w_len()], &mut []).unwrap();
        let mut dw = vec![5.0f32; e.w_len()];
        conv2d_backward_weight(&e, &[], &[], &mut dw, true).unwrap();
        assert!(dw.iter().all(|&v| v == 5.0));
        conv2d_backward_weight(&e, &[], &[], &mut dw, false).unwrap();
        assert!(dw.iter().all(|&v| v == 0.0));
    }
    let huge = Conv2d::new(usize::MAX / 4, 4, 8, 8, 2, 3, 1, 1);
    assert!(huge.validate().is_err());
}
