//! `selfsup export --format onnx` end to end: a tiny encoder trained for two steps (at 32
//! pixels, and at 96 with the stride-2 stem) is exported, the file is parsed and run by an
//! independent ONNX runtime (tract) at two batch sizes, and its `h` is compared with the
//! crate's own eval-mode encoder on the same images; and the command's one-line errors.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};

use common::{newest_checkpoint, selfsup, TempDir};
use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::resize::eval_tensor;
use selfsup::train::embed::{model_config, Embedder};
use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{tensor_shape_proto::dimension, ModelProto};
use tract_onnx::prelude::*;

/// Asserts exit status 2 and one `error:` line on stderr containing every one of `want`.
fn fails_with(args: &[&str], want: &[&str]) {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
    }
}

/// Trains a 2-stage encoder of widths 4 and 8 for two steps on `data`; the run folder.
fn tiny_run(dir: &TempDir, data: &str) -> PathBuf {
    let run = dir.join("run");
    let out = selfsup(&[
        "pretrain",
        "--data",
        data,
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--steps",
        "2",
        "--quiet",
        "--knn-every",
        "0",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// Exports `checkpoint` (a file or a run folder) to `out`; the command's stderr.
fn export(checkpoint: &Path, out: &Path) -> String {
    let r = selfsup(&[
        "export",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{err}");
    err
}

/// The ONNX model at `path` with its input set to `dims`, optimized and runnable.
fn runnable(path: &Path, dims: [usize; 4]) -> Arc<TypedRunnableModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .expect("tract parses the model")
        .with_input_fact(0, f32::fact(dims).into())
        .expect("the input takes a concrete batch")
        .into_optimized()
        .expect("tract optimizes the model")
        .into_runnable()
        .expect("a runnable plan")
}

/// The dimensions of a graph input or output as text (`batch` for a symbolic one).
fn dims_of(v: &tract_onnx::pb::ValueInfoProto) -> Vec<String> {
    let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        panic!("'{}' is not a tensor", v.name);
    };
    assert_eq!(t.elem_type, 1, "float32");
    t.shape
        .as_ref()
        .expect("a shape")
        .dim
        .iter()
        .map(|d| match d.value.as_ref() {
            Some(dimension::Value::DimValue(n)) => n.to_string(),
            Some(dimension::Value::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect()
}

/// Exports a tiny encoder trained on `data` (images of side `side`) and checks the file
/// against the crate's encoder; the largest relative difference seen.
fn export_and_compare(tag: &str, data: &str, side: usize) -> f32 {
    let dir = TempDir::new(tag);
    let run = tiny_run(&dir, data);
    let ckpt = newest_checkpoint(&run);
    let cfg = model_config(&ckpt).unwrap();
    assert_eq!(cfg.image_size, side);
    let onnx = dir.join("encoder.onnx");
    // The run folder means its newest checkpoint.
    let err = export(&run, &onnx);
    assert_eq!(err.lines().count(), 1, "{err}");
    for w in [
        onnx.to_str().unwrap(),
        &format!("'input' float32 [batch, 3, {side}, {side}]"),
        "'h' float32 [batch, 8]",
        "opset 13",
    ] {
        assert!(err.contains(w), "'{w}' not in: {err}");
    }
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // The file parses as the model that was written.
    let proto: ModelProto = tract_onnx::onnx()
        .proto_model_for_path(&onnx)
        .expect("the bytes parse as a ModelProto");
    assert_eq!(proto.ir_version, 7);
    assert_eq!(proto.producer_name, "selfsup");
    assert_eq!(proto.producer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(proto.opset_import.len(), 1);
    assert_eq!(proto.opset_import[0].domain, "");
    assert_eq!(proto.opset_import[0].version, 13);
    let graph = proto.graph.as_ref().expect("a graph");
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name, "input");
    let s = side.to_string();
    assert_eq!(
        dims_of(&graph.input[0]),
        ["batch", "3", s.as_str(), s.as_str()]
    );
    assert_eq!(graph.output.len(), 1);
    assert_eq!(graph.output[0].name, "h");
    assert_eq!(dims_of(&graph.output[0]), ["batch", "8"]);
    // stem, l1 (two convolutions: 4 -> 4 keeps the shape) and l2 (two and a shortcut).
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count("Conv"), 6);
    assert_eq!(count("Add"), 2);
    assert_eq!(count("GlobalAveragePool"), 1);
    assert_eq!(count("Flatten"), 1);
    assert_eq!(count("BatchNormalization"), 0, "BatchNorm is folded");
    assert_eq!(graph.initializer.len(), 12);
    for t in &graph.initializer {
        assert_eq!(t.data_type, 1, "{} is float32", t.name);
        let n: i64 = t.dims.iter().product();
        assert_eq!(t.raw_data.len() as i64, 4 * n, "{}", t.name);
    }
    let stem = graph.node.iter().find(|n| n.op_type == "Conv").unwrap();
    let strides = stem.attribute.iter().find(|a| a.name == "strides").unwrap();
    let want = if side > 64 { 2 } else { 1 };
    assert_eq!(strides.ints, [want, want], "the stem's stride");

    // Images at the model's size: the bytes as v / 255, NCHW.
    let (_, test) = builtin_splits(&BuiltinConfig {
        n_train: 1,
        n_test: 8,
        side,
        ..BuiltinConfig::default()
    });
    let len = 3 * side * side;
    let x: Vec<f32> = test
        .pixels()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    assert_eq!(x.len(), 8 * len);
    // What the crate's encoder is fed is exactly that.
    assert_eq!(eval_tensor(&test, side), x);

    let mut max_rel = 0f32;
    for n in [3usize, 5] {
        let idx: Vec<usize> = (8 - n..8).collect();
        // The crate's encoder, in batches of 2 (one short).
        let mut emb = Embedder::from_checkpoint(&cfg, 2, &ckpt).unwrap();
        let mut want = vec![0.0; n * 8];
        emb.embed(&test, &idx, &mut want).unwrap();

        let model = runnable(&onnx, [n, 3, side, side]);
        let input = Tensor::from_shape(&[n, 3, side, side], &x[(8 - n) * len..]).unwrap();
        let out = model.run(tvec!(input.into())).expect("the model runs");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shape(), [n, 8]);
        let got: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "a non-zero representation: {want:?}");
        for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let rel = (g - w).abs() / w.abs().max(1e-3 * scale);
            max_rel = max_rel.max(rel);
            assert!(
                rel <= 1e-4,
                "batch {n}, value {k}: onnx {g} vs selfsup {w} (relative {rel})"
            );
        }
    }
    eprintln!("{tag}: largest relative difference {max_rel:e}");
    max_rel
}

#[test]
fn an_exported_32_pixel_encoder_computes_what_embed_computes() {
    export_and_compare("onnx32", "builtin", 32);
}

#[test]
fn an_exported_96_pixel_encoder_with_the_stride_2_stem_computes_what_embed_computes() {
    export_and_compare("onnx96", "builtin:96", 96);
}

#[test]
fn export_errors_are_one_line_naming_the_file_or_flag() {
    let dir = TempDir::new("onnx-errors");
    let out = dir.join("e.onnx");
    let out_s = out.to_str().unwrap();
    let missing = dir.join("nope.safetensors");
    fails_with(
        &[
            "export",
            "--checkpoint",
            missing.to_str().unwrap(),
            "--out",
            out_s,
        ],
        &["nope.safetensors"],
    );
    // An empty run folder.
    fails_with(
        &[
            "export",
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--out",
            out_s,
        ],
        &["without a checkpoint"],
    );
    fails_with(
        &[
            "export",
            "--checkpoint",
            out_s,
            "--format",
            "tflite",
            "--out",
            out_s,
        ],
        &["--format", "onnx"],
    );
    // A file that is not a checkpoint.
    let junk = dir.write("junk.safetensors", b"not a checkpoint");
    fails_with(
        &[
            "export",
            "--checkpoint",
            junk.to_str().unwrap(),
            "--out",
            out_s,
        ],
        &["junk.safetensors"],
    );
    assert!(!out.exists());
}

#[test]
fn a_text_checkpoint_is_refused_in_one_line() {
    let dir = TempDir::new("onnx-text");
    for i in 0..12 {
        let text = format!(
            "The cook chopped onions on day {i}. The cook stirred the soup. \
             The cook served dinner. The cook washed up."
        );
        dir.write(&format!("corpus/doc{i:02}.txt"), text.as_bytes());
    }
    let data = format!("text:{}", dir.join("corpus").display());
    let run = dir.join("run");
    let r = selfsup(&[
        "pretrain",
        "--method",
        "quickthought",
        "--data",
        &data,
        "--embed-dim",
        "8",
        "--channels",
        "8",
        "--min-count",
        "1",
        "--steps",
        "2",
        "--batch",
        "8",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = dir.join("qt.onnx");
    fails_with(
        &[
            "export",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &["ckpt-", "Quick Thoughts", "image encoders only"],
    );
    assert!(!out.exists());
}
