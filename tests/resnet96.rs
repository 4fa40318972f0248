//! The encoder above 64 pixels (resnet_mini96): a stride-2 stem derived from the image
//! size, the feature-map sizes it gives (read from built graphs), the 28-, 32- and 64-pixel
//! models left as they were, and one SimCLR step on 96x96 images, identical in bits with 1
//! and 2 threads.

use selfsup::graph::{GraphBuilder, Mode};
use selfsup::nn::{resnet_encoder, simclr, ResNetConfig};
use selfsup::optim::{Sgd, SgdConfig};

fn sized(image_size: usize) -> ResNetConfig {
    ResNetConfig {
        image_size,
        ..ResNetConfig::default()
    }
}

/// A small encoder (widths 4, 8, 16 by default) for the shape sweeps.
fn small(image_size: usize, stages: usize) -> ResNetConfig {
    ResNetConfig {
        in_channels: 3,
        image_size,
        widths: [4, 8, 16][..stages].to_vec(),
        blocks: vec![1; stages],
        head_hidden: 8,
        head_out: 4,
    }
}

/// The shapes of the stem's and the last stage's outputs, read from the built graph.
fn built_shapes(cfg: &ResNetConfig, batch: usize) -> (Vec<usize>, Vec<usize>) {
    let mut b = GraphBuilder::new();
    let enc = resnet_encoder(&mut b, cfg, batch).unwrap();
    let g = b.build(7).unwrap();
    (g.shape(enc.stem).to_vec(), g.shape(enc.features).to_vec())
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn stem_stride_is_one_up_to_64_pixels_and_two_above() {
    for size in [1, 7, 28, 32, 63, 64] {
        assert_eq!(sized(size).stem_stride(), 1, "{size}");
    }
    for size in [65, 96, 97, 100, 128, 224] {
        assert_eq!(sized(size).stem_stride(), 2, "{size}");
    }
    assert_eq!(ResNetConfig::default().stem_stride(), 1);
    assert_eq!(ResNetConfig::fashion_mnist().stem_stride(), 1);
}

#[test]
fn the_96_pixel_graph_builds_with_a_48x48_stem_output() {
    let cfg = sized(96);
    let (stem, features) = built_shapes(&cfg, 2);
    assert_eq!(stem, vec![2, 32, 48, 48]);
    assert_eq!(features, vec![2, 128, 12, 12]);
    assert_eq!(cfg.feature_map_sizes(), vec![48, 48, 24, 12]);
    assert_eq!(cfg.feature_dim(), 128);
    let m = simclr(&cfg, 2, 0.5, 1).unwrap();
    assert_eq!(m.graph.shape(m.input), &[4, 3, 96, 96]);
    assert_eq!(m.graph.shape(m.h), &[4, 128]);
    assert_eq!(m.graph.shape(m.z), &[4, 64]);
}

#[test]
fn feature_map_sizes_match_the_graph_at_large_and_odd_sizes() {
    // (image size, after the stem, after each of the three stages), worked by hand:
    // a stride-2 map of n is n / 2 rounded up.
    let table: [(usize, [usize; 4]); 10] = [
        (28, [28, 28, 14, 7]),
        (32, [32, 32, 16, 8]),
        (63, [63, 63, 32, 16]),
        (64, [64, 64, 32, 16]),
        (65, [33, 33, 17, 9]),
        (96, [48, 48, 24, 12]),
        (97, [49, 49, 25, 13]),
        (100, [50, 50, 25, 13]),
        (128, [64, 64, 32, 16]),
        (224, [112, 112, 56, 28]),
    ];
    for (size, want) in table {
        assert_eq!(small(size, 3).feature_map_sizes(), want.to_vec(), "{size}");
        // Each stage's output, read from a graph with that many stages.
        for stages in 1..=3 {
            let cfg = small(size, stages);
            let (stem, features) = built_shapes(&cfg, 1);
            assert_eq!(
                stem,
                vec![1, 4, want[0], want[0]],
                "{size}, {stages} stages"
            );
            let c = cfg.widths[stages - 1];
            let s = want[stages];
            assert_eq!(features, vec![1, c, s, s], "{size}, {stages} stages");
            assert_eq!(cfg.feature_dim(), c);
        }
    }
}

#[test]
fn every_size_up_to_230_builds_with_the_predicted_maps() {
    for size in 1..=230 {
        let cfg = small(size, 3);
        cfg.validate().unwrap();
        let sizes = cfg.feature_map_sizes();
        let mut b = GraphBuilder::new();
        let enc = resnet_encoder(&mut b, &cfg, 1).unwrap();
        assert_eq!(b.shape(enc.stem), &[1, 4, sizes[0], sizes[0]], "{size}");
        assert_eq!(
            b.shape(enc.features),
            &[1, 16, sizes[3], sizes[3]],
            "{size}"
        );
        assert_eq!(b.shape(enc.h), &[1, 16], "{size}");
        assert!(sizes.iter().all(|&s| s > 0));
    }
}

#[test]
fn an_empty_image_is_refused_with_a_clear_error() {
    let e = sized(0).validate().unwrap_err().to_string();
    assert!(e.contains("resnet config") && e.contains("empty"), "{e}");
    let mut b = GraphBuilder::new();
    let e = resnet_encoder(&mut b, &sized(0), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

/// The parameter names and shapes of ResNet-mini's encoder and head, as they were before
/// the stride-2 stem existed (PyTorch's names, arena order).
fn resnet_mini_params(in_channels: usize) -> Vec<(String, Vec<usize>)> {
    let mut p: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |name: &str, shape: &[usize]| p.push((name.to_string(), shape.to_vec()));
    let bn = |push: &mut dyn FnMut(&str, &[usize]), name: &str, c: usize| {
        push(&format!("{name}.weight"), &[c]);
        push(&format!("{name}.bias"), &[c]);
    };
    push("stem.0.weight", &[32, in_channels, 3, 3]);
    bn(&mut push, "stem.1", 32);
    let mut c_in = 32;
    for (s, c) in [32, 64, 128].into_iter().enumerate() {
        let l = format!("l{}", s + 1);
        push(&format!("{l}.c1.weight"), &[c, c_in, 3, 3]);
        bn(&mut push, &format!("{l}.b1"), c);
        push(&format!("{l}.c2.weight"), &[c, c, 3, 3]);
        bn(&mut push, &format!("{l}.b2"), c);
        if s > 0 {
            push(&format!("{l}.sc.0.weight"), &[c, c_in, 1, 1]);
            bn(&mut push, &format!("{l}.sc.1"), c);
        }
        c_in = c;
    }
    push("head.0.weight", &[128, 128]);
    push("head.0.bias", &[128]);
    push("head.2.weight", &[64, 128]);
    push("head.2.bias", &[64]);
    p
}

fn param_list(cfg: &ResNetConfig) -> Vec<(String, Vec<usize>)> {
    let m = simclr(cfg, 2, 0.5, 1).unwrap();
    m.graph
        .param_info()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect()
}

#[test]
fn the_28_32_and_64_pixel_models_are_unchanged() {
    for (cfg, maps) in [
        (ResNetConfig::fashion_mnist(), [28, 28, 14, 7]),
        (ResNetConfig::default(), [32, 32, 16, 8]),
        (sized(64), [64, 64, 32, 16]),
    ] {
        let size = cfg.image_size;
        assert_eq!(cfg.stem_stride(), 1, "{size}");
        assert_eq!(
            param_list(&cfg),
            resnet_mini_params(cfg.in_channels),
            "{size}"
        );
        let (stem, features) = built_shapes(&cfg, 2);
        assert_eq!(stem, vec![2, 32, maps[0], maps[0]], "{size}");
        assert_eq!(features, vec![2, 128, maps[3], maps[3]], "{size}");
        assert_eq!(cfg.feature_map_sizes(), maps.to_vec(), "{size}");
    }
    // The stride has no parameters: the 96-pixel model has the same ones.
    assert_eq!(param_list(&sized(96)), resnet_mini_params(3));
    // Nothing new in the configuration's JSON (stored in every checkpoint's metadata).
    assert_eq!(
        serde_json::to_string(&ResNetConfig::default()).unwrap(),
        r#"{"in_channels":3,"image_size":32,"widths":[32,64,128],"blocks":[1,1,1],"head_hidden":128,"head_out":64}"#
    );
}

/// One SimCLR step (2 images of 3x96x96, 4 views) under a pool of `threads` threads: the
/// loss and the parameters after the SGD step.
fn simclr96_step(threads: usize) -> (f32, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut m = simclr(&sized(96), 2, 0.5, 0x96).unwrap();
        let len: usize = m.graph.shape(m.input).iter().product();
        m.graph
            .input_mut(m.input)
            .unwrap()
            .copy_from_slice(&values(len, 0x9696));
        let mut opt = Sgd::new(
            SgdConfig {
                momentum: 0.9,
                weight_decay: 1e-6,
                ..SgdConfig::default()
            },
            m.graph.params().len(),
        )
        .unwrap();
        m.graph.forward(Mode::Train).unwrap();
        m.graph.backward().unwrap();
        let (p, g, groups) = m.graph.params_and_grads();
        opt.step(p, g, groups, 0.1).unwrap();
        (m.graph.loss(m.loss), m.graph.params().to_vec())
    })
}

#[test]
fn a_96_pixel_simclr_step_is_finite_and_the_same_with_1_and_2_threads() {
    let (loss1, params1) = simclr96_step(1);
    let (loss2, params2) = simclr96_step(2);
    assert!(loss1.is_finite() && loss1 > 0.0, "{loss1}");
    assert_eq!(loss1.to_bits(), loss2.to_bits());
    assert!(params1.iter().all(|v| v.is_finite()));
    let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&params1) == bits(&params2), "parameters differ");
    // The step moved the parameters.
    let fresh = simclr(&sized(96), 2, 0.5, 0x96).unwrap();
    assert_ne!(fresh.graph.params(), &params1[..]);
}

/// The forward flops of ResNet-mini at 32 x 32, counted by hand: stem 3 -> 32 at 32x32
/// (1,769,472), l1 two 32 -> 32 at 32x32 (37,748,736), l2 and l3 each a 3x3 of c -> 2c and
/// one of 2c -> 2c at half the side plus the 1x1 shortcut (29,360,128 each), and the head
/// 128 -> 128 -> 64 (49,152). At 96 x 96 the stride-2 stem makes every map 1.5x the side
/// of 32 x 32's: 2.25x the flops.
#[test]
fn forward_flops_count_the_convolutions_and_the_head() {
    let mini = ResNetConfig::default();
    assert_eq!(mini.forward_flops(false), 98_238_464.0);
    assert_eq!(mini.forward_flops(true), 98_287_616.0);
    let mini96 = ResNetConfig {
        image_size: 96,
        ..ResNetConfig::default()
    };
    assert_eq!(mini96.forward_flops(false), 2.25 * 98_238_464.0);
}
