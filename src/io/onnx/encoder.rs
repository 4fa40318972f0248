//! The frozen ResNet image encoder of a checkpoint as an ONNX graph: every BatchNorm folded
//! into the convolution before it (with the running statistics, as the evaluation forward
//! does), then `Conv`, `Relu`, `Add`, `GlobalAveragePool` and `Flatten`, from the input
//! `input` (float32 NCHW, `[batch, channels, S, S]`, pixels in [0, 1]) to the output `h`
//! (`[batch, feature_dim]`), the batch a symbolic dimension.
//!
//! The layers follow [`crate::nn::resnet_encoder`]; the weights are read by the names and
//! shapes of the graph that function builds, and an encoder tensor the export does not place
//! is an error, so the two cannot drift apart unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Attribute, Dim, OnnxGraph, ValueInfo};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder};
use crate::io::checkpoint;
use crate::kernels::batchnorm::{batchnorm_fold, BatchNorm2d, BnAffine};
use crate::nn::{resnet_encoder, ResNetConfig};

/// The name of the graph input (the images).
pub const INPUT: &str = "input";
/// The name of the graph output (the representation h).
pub const OUTPUT: &str = "h";
/// The symbolic batch dimension of the input and the output.
pub const BATCH: &str = "batch";

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "onnx export",
        msg,
    }
}

/// The encoder's tensors by name, each taken at most once.
struct Weights<'a> {
    tensors: BTreeMap<&'a str, (&'a [usize], &'a [f32])>,
    used: BTreeMap<&'a str, bool>,
}

impl<'a> Weights<'a> {
    fn of(g: &'a Graph) -> Self {
        let mut tensors = BTreeMap::new();
        for p in g.param_info() {
            tensors.insert(
                p.name.as_str(),
                (&p.shape[..], &g.params()[p.range.clone()]),
            );
        }
        for b in g.buffer_info() {
            tensors.insert(
                b.name.as_str(),
                (&b.shape[..], &g.buffers()[b.range.clone()]),
            );
        }
        let used = tensors.keys().map(|&k| (k, false)).collect();
        Self { tensors, used }
    }

    fn take(&mut self, name: &str) -> Result<(&'a [usize], &'a [f32])> {
        let (key, t) = self
            .tensors
            .get_key_value(name)
            .map(|(k, t)| (*k, *t))
            .ok_or_else(|| invalid(format!("the encoder has no tensor '{name}'")))?;
        self.used.insert(key, true);
        Ok(t)
    }

    fn check_all_used(&self) -> Result<()> {
        let left: Vec<&str> = self
            .used
            .iter()
            .filter(|(_, &u)| !u)
            .map(|(&k, _)| k)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "the encoder's tensors {left:?} have no place in the exported graph"
            )))
        }
    }
}

/// Adds the convolution `conv` with the evaluation BatchNorm `bn` folded in
/// (`w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma / sqrt(var + eps)`), and a
/// `Relu` when `relu`; returns the output's name.
fn conv_bn(
    out: &mut OnnxGraph,
    w: &mut Weights<'_>,
    (conv, bn): (&str, &str),
    x: &str,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<String> {
    let (shape, weight) = w.take(&format!("{conv}.weight"))?;
    let &[c_out, _, kh, kw] = shape else {
        return Err(invalid(format!(
            "'{conv}.weight' has shape {shape:?}, not [out, in, kh, kw]"
        )));
    };
    let (_, gamma) = w.take(&format!("{bn}.weight"))?;
    let (_, beta) = w.take(&format!("{bn}.bias"))?;
    let (_, mean) = w.take(&format!("{bn}.running_mean"))?;
    let (_, var) = w.take(&format!("{bn}.running_var"))?;
    let eps = BatchNorm2d::new(1, c_out, 1, 1).eps;
    let (mut scale, mut shift) = (vec![0.0; c_out], vec![0.0; c_out]);
    batchnorm_fold(
        BnAffine { gamma, beta },
        mean,
        var,
        eps,
        &mut scale,
        &mut shift,
    )?;
    let per = weight.len() / c_out.max(1);
    let folded: Vec<f32> = weight
        .chunks_exact(per.max(1))
        .zip(&scale)
        .flat_map(|(row, &s)| row.iter().map(move |&v| v * s))
        .collect();
    let wn = out.initializer(&format!("{conv}.weight"), shape, folded)?;
    let bias = out.initializer(&format!("{conv}.bias"), &[c_out], shift)?;
    let ints = |v: &[usize]| Attribute::Ints(v.iter().map(|&d| d as i64).collect());
    let y = out.node(
        "Conv",
        conv,
        &[x, &wn, &bias],
        &[bn],
        vec![
            ("kernel_shape", ints(&[kh, kw])),
            ("strides", ints(&[stride, stride])),
            ("pads", ints(&[pad, pad, pad, pad])),
            ("dilations", ints(&[1, 1])),
            ("group", Attribute::Int(1)),
        ],
    );
    if !relu {
        return Ok(y);
    }
    let r = format!("{bn}.relu");
    Ok(out.node("Relu", &r, &[&y], &[&r], vec![]))
}

/// A BasicBlock as [`crate::nn`] builds it: conv-BN-ReLU-conv-BN, a 1 x 1 projection
/// shortcut (conv-BN) when the shape changes, the sum, ReLU.
fn basic_block(
    out: &mut OnnxGraph,
    w: &mut Weights<'_>,
    name: &str,
    x: &str,
    (c_in, c_out): (usize, usize),
    stride: usize,
) -> Result<String> {
    let n = |s: &str| format!("{name}.{s}");
    let y = conv_bn(out, w, (&n("c1"), &n("b1")), x, stride, 1, true)?;
    let y = conv_bn(out, w, (&n("c2"), &n("b2")), &y, 1, 1, false)?;
    let shortcut = if stride != 1 || c_in != c_out {
        conv_bn(out, w, (&n("sc.0"), &n("sc.1")), x, stride, 0, false)?
    } else {
        x.to_string()
    };
    let sum = n("add");
    out.node("Add", &sum, &[&y, &shortcut], &[&sum], vec![]);
    let o = n("out");
    Ok(out.node("Relu", &o, &[&sum], &[&o], vec![]))
}

/// The ONNX graph of the eval-mode encoder `cfg` with the weights of `g`, a graph that
/// [`resnet_encoder`] built for `cfg` (tensor names and shapes are read from it).
///
/// # Errors
/// A tensor of the encoder missing from `g`, or one the export does not place.
pub fn encoder_graph(cfg: &ResNetConfig, g: &Graph) -> Result<OnnxGraph> {
    cfg.validate()?;
    let mut w = Weights::of(g);
    let mut out = OnnxGraph::new("selfsup_resnet_encoder");
    out.inputs.push(ValueInfo {
        name: INPUT.into(),
        dims: vec![
            Dim::Param(BATCH.into()),
            Dim::Value(cfg.in_channels),
            Dim::Value(cfg.image_size),
            Dim::Value(cfg.image_size),
        ],
    });
    let mut y = conv_bn(
        &mut out,
        &mut w,
        ("stem.0", "stem.1"),
        INPUT,
        cfg.stem_stride(),
        1,
        true,
    )?;
    let mut c_in = cfg.widths[0];
    for (s, (&c_out, &nb)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
        for k in 0..nb {
            let name = if nb == 1 {
                format!("l{}", s + 1)
            } else {
                format!("l{}.{k}", s + 1)
            };
            let stride = if s > 0 && k == 0 { 2 } else { 1 };
            y = basic_block(&mut out, &mut w, &name, &y, (c_in, c_out), stride)?;
            c_in = c_out;
        }
    }
    w.check_all_used()?;
    let pooled = out.node("GlobalAveragePool", "pool", &[&y], &["pool"], vec![]);
    out.node(
        "Flatten",
        "flatten",
        &[&pooled],
        &[OUTPUT],
        vec![("axis", Attribute::Int(1))],
    );
    out.outputs.push(ValueInfo {
        name: OUTPUT.into(),
        dims: vec![Dim::Param(BATCH.into()), Dim::Value(cfg.feature_dim())],
    });
    Ok(out)
}

/// The ONNX graph of the encoder `cfg` stored in the checkpoint `path` (its other tensors,
/// such as a head or the optimizer state, are left out).
///
/// # Errors
/// [`Error::Run`] naming the file: unreadable, corrupt, or without an encoder tensor of
/// `cfg` (or with another shape); an invalid configuration.
pub fn encoder_from_checkpoint(cfg: &ResNetConfig, path: &Path) -> Result<OnnxGraph> {
    let mut b = GraphBuilder::new();
    resnet_encoder(&mut b, cfg, 1)?;
    let mut g = b.build(0)?;
    let ck = checkpoint::load(path)?;
    let params = g.param_info().to_vec();
    for p in &params {
        ck.copy_into(&p.name, &p.shape, &mut g.params_mut()[p.range.clone()])?;
    }
    let buffers = g.buffer_info().to_vec();
    for b in &buffers {
        ck.copy_into(&b.name, &b.shape, &mut g.buffers_mut()[b.range.clone()])?;
    }
    encoder_graph(cfg, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(widths: &[usize], blocks: &[usize], size: usize) -> ResNetConfig {
        ResNetConfig {
            in_channels: 3,
            image_size: size,
            widths: widths.to_vec(),
            blocks: blocks.to_vec(),
            ..ResNetConfig::default()
        }
    }

    fn ops(g: &OnnxGraph) -> Vec<&str> {
        g.nodes.iter().map(|n| n.op_type.as_str()).collect()
    }

    #[test]
    fn the_layers_and_their_strides_follow_the_configuration() {
        let c = cfg(&[4, 8], &[1, 2], 96);
        let mut b = GraphBuilder::new();
        resnet_encoder(&mut b, &c, 1).unwrap();
        let g = b.build(7).unwrap();
        let o = encoder_graph(&c, &g).unwrap();
        // stem (conv, relu); l1: c1 relu c2 add relu (4 = 4, no shortcut);
        // l2.0: c1 relu c2 sc add relu (stride 2); l2.1: no shortcut; pool, flatten.
        let block = ["Conv", "Relu", "Conv", "Add", "Relu"];
        let mut want = vec!["Conv", "Relu"];
        want.extend(block);
        want.extend(["Conv", "Relu", "Conv", "Conv", "Add", "Relu"]);
        want.extend(block);
        want.extend(["GlobalAveragePool", "Flatten"]);
        assert_eq!(ops(&o), want);
        let strides = |name: &str| {
            let n = o.nodes.iter().find(|n| n.name == name).unwrap();
            n.attributes
                .iter()
                .find(|(k, _)| k == "strides")
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(strides("stem.0"), Attribute::Ints(vec![2, 2]));
        assert_eq!(strides("l2.0.c1"), Attribute::Ints(vec![2, 2]));
        assert_eq!(strides("l2.0.sc.0"), Attribute::Ints(vec![2, 2]));
        assert_eq!(strides("l2.1.c1"), Attribute::Ints(vec![1, 1]));
        // Every convolution has a weight and a bias: the stem, 2 + 3 + 2 in the blocks.
        assert_eq!(o.initializers.len(), 16);
        assert_eq!(o.outputs[0].shape_text(), "[batch, 8]");
        assert_eq!(o.inputs[0].shape_text(), "[batch, 3, 96, 96]");
    }

    #[test]
    fn batchnorm_folds_into_the_convolution_weights_and_bias() {
        let c = cfg(&[2], &[1], 8);
        let mut b = GraphBuilder::new();
        resnet_encoder(&mut b, &c, 1).unwrap();
        let mut g = b.build(3).unwrap();
        let set = |g: &mut Graph, name: &str, v: &[f32]| {
            if let Some(p) = g.param_info().iter().find(|p| p.name == name).cloned() {
                g.params_mut()[p.range].copy_from_slice(v);
            } else {
                let r = g
                    .buffer_info()
                    .iter()
                    .find(|b| b.name == name)
                    .unwrap()
                    .range
                    .clone();
                g.buffers_mut()[r].copy_from_slice(v);
            }
        };
        set(&mut g, "stem.1.weight", &[2.0, -1.0]);
        set(&mut g, "stem.1.bias", &[0.5, 3.0]);
        set(&mut g, "stem.1.running_mean", &[1.0, -2.0]);
        set(&mut g, "stem.1.running_var", &[4.0 - 1e-5, 0.25 - 1e-5]);
        let w: Vec<f32> = g
            .param_info()
            .iter()
            .find(|p| p.name == "stem.0.weight")
            .map(|p| g.params()[p.range.clone()].to_vec())
            .unwrap();
        let o = encoder_graph(&c, &g).unwrap();
        let init = |name: &str| {
            o.initializers
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .data
                .clone()
        };
        // sqrt(var + eps) = 2 and 0.5: scales 2 / 2 = 1 and -1 / 0.5 = -2.
        let fw = init("stem.0.weight");
        let per = w.len() / 2;
        for (k, (&f, &v)) in fw.iter().zip(&w).enumerate() {
            let s = if k < per { 1.0 } else { -2.0 };
            assert!(
                (f - v * s).abs() <= 1e-6 * v.abs().max(1.0),
                "{k}: {f} vs {v}"
            );
        }
        // beta - mean * scale: 0.5 - 1 * 1 = -0.5, 3 - (-2) * (-2) = -1.
        let bias = init("stem.0.bias");
        assert!(
            (bias[0] + 0.5).abs() < 1e-6 && (bias[1] + 1.0).abs() < 1e-6,
            "{bias:?}"
        );
    }

    #[test]
    fn a_graph_with_a_tensor_the_export_does_not_know_is_refused() {
        // A graph of widths [4] presented as widths [4, 8] lacks l2's tensors.
        let small = cfg(&[4], &[1], 8);
        let mut b = GraphBuilder::new();
        resnet_encoder(&mut b, &small, 1).unwrap();
        let g = b.build(0).unwrap();
        let e = encoder_graph(&cfg(&[4, 8], &[1, 1], 8), &g).unwrap_err();
        assert!(e.to_string().contains("no tensor 'l2.c1.weight'"), "{e}");
        // And a graph with an extra stage presented as the smaller one leaves tensors over.
        let mut b = GraphBuilder::new();
        resnet_encoder(&mut b, &cfg(&[4, 8], &[1, 1], 8), 1).unwrap();
        let g = b.build(0).unwrap();
        let e = encoder_graph(&small, &g).unwrap_err();
        assert!(e.to_string().contains("no place"), "{e}");
    }
}
