//! Checkpoint files: bit-exact round trips, the safetensors layout checked by an independent
//! parser, clear errors for another architecture, every kind of corrupt file rejected with a
//! typed error (never a panic), and atomic saves (a failed or killed save leaves the previous
//! file whole).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use selfsup::io::checkpoint::{
    self, checkpoint_file_name, keys, latest_in, list_in, load, save, save_in, Checkpoint,
    CheckpointError, TensorView, FORMAT_VERSION, MAX_HEADER_LEN,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "selfsup-ckpt-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of the files in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test may have made it read-only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A small model's worth of tensors with awkward values: signed zeros, subnormals, extremes,
/// a scalar and an empty tensor.
fn sample() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut conv: Vec<f32> = (0..8 * 3 * 3 * 3)
        .map(|i| ((i as f32) * 0.37).sin() * 1e-2)
        .collect();
    conv[0] = -0.0;
    conv[1] = f32::MIN_POSITIVE / 8.0; // subnormal
    conv[2] = f32::MAX;
    conv[3] = f32::MIN;
    conv[4] = f32::EPSILON;
    vec![
        ("stem.conv.weight".into(), vec![8, 3, 3, 3], conv),
        ("stem.bn.weight".into(), vec![8], vec![1.0; 8]),
        (
            "stem.bn.running_mean".into(),
            vec![8],
            (0..8).map(|i| i as f32 * 0.25).collect(),
        ),
        (
            "head.fc.weight".into(),
            vec![4, 5],
            (0..20).map(|i| 1.0 / (i as f32 + 1.0)).collect(),
        ),
        ("optim.step_scale".into(), vec![], vec![0.125]),
        ("optim.empty".into(), vec![0, 3], vec![]),
        ("ünïcode \"quoted\" name".into(), vec![1, 1], vec![-3.5]),
    ]
}

fn views(t: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<TensorView<'_>> {
    t.iter().map(|(n, s, d)| TensorView::new(n, s, d)).collect()
}

fn sample_meta() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        keys::MODEL_CONFIG.into(),
        r#"{"widths":[32,64,128],"blocks":[1,1,1],"in":"3x32x32"}"#.into(),
    );
    m.insert(keys::STEP.into(), "1200".into());
    m.insert(keys::EPOCH.into(), "3".into());
    m.insert(keys::OPTIMIZER.into(), "lars lr=0.3 wd=1e-6".into());
    m.insert(keys::SEED.into(), "42".into());
    m.insert("note".into(), "ünïcode, \"quotes\", \\ and\nnewline".into());
    m.insert(String::new(), "empty key".into());
    m
}

fn bits(d: &[f32]) -> Vec<u32> {
    d.iter().map(|x| x.to_bits()).collect()
}

/// Writes a file of an 8-byte LE header length, the header text and the data bytes.
fn craft(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Loads `path`, expecting an error whose message names the file and contains `needle`.
fn load_err(path: &Path, needle: &str) -> CheckpointError {
    let err = match load(path) {
        Ok(_) => panic!(
            "{} loaded; expected an error with {needle:?}",
            path.display()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert_eq!(err.path(), path);
    err
}

// ---------------------------------------------------------------------------------------
// An independent minimal safetensors parser
// ---------------------------------------------------------------------------------------

struct Parsed {
    header_len: usize,
    metadata: BTreeMap<String, String>,
    /// name -> (dtype, shape, [begin, end])
    tensors: BTreeMap<String, (String, Vec<usize>, [usize; 2])>,
    data: Vec<u8>,
}

/// Parses a safetensors file from the format's definition alone: 8-byte LE header length,
/// a JSON object header, then the data section that the `data_offsets` index.
fn parse_safetensors(bytes: &[u8]) -> Parsed {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let obj = header.as_object().expect("header is a JSON object");
    let mut metadata = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            for (mk, mv) in v.as_object().expect("__metadata__ is an object") {
                let s = mv.as_str().expect("metadata values are strings");
                metadata.insert(mk.clone(), s.to_string());
            }
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap().to_string();
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let off = v["data_offsets"].as_array().unwrap();
        assert_eq!(off.len(), 2);
        let offsets = [
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        ];
        tensors.insert(k.clone(), (dtype, shape, offsets));
    }
    Parsed {
        header_len: n,
        metadata,
        tensors,
        data: bytes[8 + n..].to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Round trips and the file layout
// ---------------------------------------------------------------------------------------

#[test]
fn round_trip_is_bit_exact_with_metadata() {
    let dir = TempDir::new("roundtrip");
    let path = dir.join("ckpt.safetensors");
    let t = sample();
    let meta = sample_meta();
    save(&path, &views(&t), &meta).unwrap();

    let ckpt = load(&path).unwrap();
    assert_eq!(ckpt.path(), path);
    let mut want_meta = meta.clone();
    want_meta.insert(keys::FORMAT_VERSION.into(), FORMAT_VERSION.into());
    assert_eq!(ckpt.metadata(), &want_meta);
    assert_eq!(ckpt.tensors().len(), t.len());
    for (name, shape, data) in &t {
        let got = ckpt.tensor(name).unwrap();
        assert_eq!(&got.shape, shape, "{name}");
        assert_eq!(bits(&got.data), bits(data), "{name}");
    }
    assert_eq!(ckpt.meta(keys::STEP).unwrap(), "1200");
    assert_eq!(ckpt.meta_parse::<u64>(keys::STEP).unwrap(), 1200);
    assert_eq!(ckpt.meta_parse::<u32>(keys::SEED).unwrap(), 42);

    // Saving what was loaded gives the same bytes back (names sorted either way).
    let path2 = dir.join("again.safetensors");
    let sorted: Vec<_> = {
        let mut s = t.clone();
        s.sort_by(|a, b| a.0.cmp(&b.0));
        s
    };
    save(&path, &views(&sorted), &meta).unwrap();
    save(&path2, &ckpt.views(), ckpt.metadata()).unwrap();
    assert_eq!(fs::read(&path).unwrap(), fs::read(&path2).unwrap());
    assert_eq!(dir.names(), ["again.safetensors", "ckpt.safetensors"]);
}

#[test]
fn file_is_standard_safetensors() {
    let dir = TempDir::new("layout");
    let path = dir.join("ckpt.safetensors");
    let t = sample();
    save(&path, &views(&t), &sample_meta()).unwrap();
    let bytes = fs::read(&path).unwrap();
    let p = parse_safetensors(&bytes);

    // Header: starts with '{', padded with spaces to 8-byte alignment of the data section.
    assert_eq!(bytes[8], b'{');
    assert_eq!((8 + p.header_len) % 8, 0);
    assert_eq!(p.metadata[keys::FORMAT_VERSION], FORMAT_VERSION);
    assert_eq!(
        p.metadata[keys::MODEL_CONFIG],
        sample_meta()[keys::MODEL_CONFIG]
    );
    assert_eq!(p.metadata.len(), sample_meta().len() + 1);

    // Every tensor: F32, its shape, offsets tiling the data section in the order given.
    assert_eq!(p.tensors.len(), t.len());
    let mut cursor = 0;
    for (name, shape, data) in &t {
        let (dtype, got_shape, [begin, end]) = &p.tensors[name];
        assert_eq!(dtype, "F32");
        assert_eq!(got_shape, shape);
        assert_eq!(
            *begin, cursor,
            "{name} starts where the previous tensor ended"
        );
        assert_eq!(end - begin, data.len() * 4);
        assert_eq!(
            &p.data[*begin..*end],
            &f32_bytes(data)[..],
            "{name}: f32 LE bytes"
        );
        cursor = *end;
    }
    assert_eq!(cursor, p.data.len(), "no bytes after the last tensor");

    // The `safetensors` crate reads it too, to the same tensors.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), t.len());
    for (name, shape, data) in &t {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(view.shape(), &shape[..], "{name}");
        assert_eq!(view.data(), &f32_bytes(data)[..], "{name}");
    }
}

#[test]
fn written_bytes_are_pinned() {
    // The exact file for two tensors given out of name order: the header's keys sorted
    // (metadata first, then the tensors by name, each entry's fields by name), no spaces,
    // padded with spaces to a multiple of 8; the data in the order given. Checkpoints of a
    // pinned run stay byte-identical only while this holds.
    let dir = TempDir::new("pinned");
    let path = dir.join("p.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert(keys::STEP.to_string(), "3".to_string());
    save(
        &path,
        &[
            TensorView::new("w", &[2], &[1.0, -2.0]),
            TensorView::new("b", &[], &[0.5]),
        ],
        &meta,
    )
    .unwrap();
    let json = concat!(
        r#"{"__metadata__":{"format_version":"1","step":"3"},"#,
        r#""b":{"data_offsets":[8,12],"dtype":"F32","shape":[]},"#,
        r#""w":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}"#
    );
    let padded = json.len().div_ceil(8) * 8;
    let mut want = (padded as u64).to_le_bytes().to_vec();
    want.extend_from_slice(json.as_bytes());
    want.resize(8 + padded, b' ');
    want.extend_from_slice(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f]);
    assert_eq!(
        String::from_utf8_lossy(&fs::read(&path).unwrap()),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(fs::read(&path).unwrap(), want);
}

#[test]
fn empty_checkpoint_round_trips() {
    let dir = TempDir::new("empty");
    let path = dir.join("e.safetensors");
    save(&path, &[], &BTreeMap::new()).unwrap();
    let ckpt = load(&path).unwrap();
    assert!(ckpt.tensors().is_empty());
    assert_eq!(ckpt.meta(keys::FORMAT_VERSION).unwrap(), FORMAT_VERSION);
    ckpt.check_only(Vec::<String>::new()).unwrap();
}

#[test]
fn files_from_other_writers_load() {
    // No metadata at all, extra fields in an entry, no padding, tensors listed out of order.
    let dir = TempDir::new("foreign");
    let path = dir.join("f.safetensors");
    let header = r#"{"b":{"shape":[2],"dtype":"F32","data_offsets":[8,16],"extra":[1,{"x":null}]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    craft(&path, header, &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let ckpt = load(&path).unwrap();
    assert!(ckpt.metadata().is_empty());
    assert_eq!(ckpt.tensor("a").unwrap().data, [1.0, 2.0]);
    assert_eq!(ckpt.tensor("b").unwrap().data, [3.0, 4.0]);
    // "__metadata__": null is allowed by the format.
    craft(
        &path,
        r#"{"__metadata__":null,"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
        &f32_bytes(&[7.0]),
    );
    assert_eq!(load(&path).unwrap().tensor("a").unwrap().data, [7.0]);
}

// ---------------------------------------------------------------------------------------
// Restoring a model: names and shapes
// ---------------------------------------------------------------------------------------

fn saved_sample(dir: &TempDir) -> (PathBuf, Checkpoint) {
    let path = dir.join("run-ckpt.safetensors");
    save(&path, &views(&sample()), &sample_meta()).unwrap();
    let ckpt = load(&path).unwrap();
    (path, ckpt)
}

#[test]
fn shape_mismatch_names_tensor_file_and_both_shapes() {
    let dir = TempDir::new("shape");
    let (path, mut ckpt) = saved_sample(&dir);
    let err = ckpt.take("stem.conv.weight", &[16, 3, 3, 3]).unwrap_err();
    assert!(matches!(err, CheckpointError::ShapeMismatch { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint {}: tensor 'stem.conv.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]",
            path.display()
        )
    );
    // The failed take left the tensor in place; a right one removes it.
    assert!(ckpt.tensor("stem.conv.weight").is_some());
    let w = ckpt.take("stem.conv.weight", &[8, 3, 3, 3]).unwrap();
    assert_eq!(bits(&w), bits(&sample()[0].2));
    assert!(ckpt.tensor("stem.conv.weight").is_none());
    let err = ckpt.take("stem.conv.weight", &[8, 3, 3, 3]).unwrap_err();
    assert!(
        matches!(err, CheckpointError::MissingTensor { .. }),
        "{err}"
    );

    // copy_into: a mismatch leaves the destination untouched.
    let mut dst = vec![9.0f32; 20];
    let err = ckpt
        .copy_into("head.fc.weight", &[5, 4], &mut dst)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("'head.fc.weight' has shape [4, 5], the model expects [5, 4]"),
        "{msg}"
    );
    assert!(dst.iter().all(|&x| x == 9.0));
    // A scalar against a vector of one: shapes, not sizes, must match.
    let mut one = [0.0f32];
    let err = ckpt
        .copy_into("optim.step_scale", &[1], &mut one)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has shape [], the model expects [1]"),
        "{err}"
    );
    ckpt.copy_into("optim.step_scale", &[], &mut one).unwrap();
    assert_eq!(one, [0.125]);
    // A destination of the wrong length is an error too, not a panic.
    let mut short = vec![0.0f32; 19];
    let err = ckpt
        .copy_into("head.fc.weight", &[4, 5], &mut short)
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidArgument { .. }),
        "{err}"
    );
    ckpt.copy_into("head.fc.weight", &[4, 5], &mut dst).unwrap();
    assert_eq!(bits(&dst), bits(&sample()[3].2));
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let dir = TempDir::new("names");
    let (path, ckpt) = saved_sample(&dir);
    let mut dst = [0.0f32; 64];
    let err = ckpt
        .copy_into("block2.conv1.weight", &[4, 4, 2, 2], &mut dst)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint {}: no tensor 'block2.conv1.weight' (the model expects one of shape [4, 4, 2, 2])",
            path.display()
        )
    );

    let names: Vec<String> = sample().into_iter().map(|t| t.0).collect();
    ckpt.check_only(&names).unwrap();
    let err = ckpt.check_only(&names[2..]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("2 tensor(s) the model does not have: 'stem.bn.weight', 'stem.conv.weight'"),
        "{msg}"
    );
    match err {
        CheckpointError::UnexpectedTensors { names, .. } => {
            assert_eq!(names, ["stem.bn.weight", "stem.conv.weight"])
        }
        e => panic!("{e}"),
    }
}

#[test]
fn check_layout_rejects_another_architecture() {
    let dir = TempDir::new("layout-check");
    let (path, ckpt) = saved_sample(&dir);
    let t = sample();
    let expected: Vec<(&str, &[usize])> = t
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_slice()))
        .collect();
    ckpt.check_layout(expected.iter().copied()).unwrap();

    // A wider stem: the first differing tensor is named with both shapes.
    let wider = [8usize * 2, 3, 3, 3];
    let mut other = expected.clone();
    other[0].1 = &wider;
    let err = ckpt.check_layout(other.iter().copied()).unwrap_err();
    assert!(err
        .to_string()
        .contains(&format!("checkpoint {}: tensor 'stem.conv.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]", path.display())));
    // A model with one tensor fewer: the extra one is named.
    let err = ckpt
        .check_layout(expected[1..].iter().copied())
        .unwrap_err();
    assert!(err.to_string().contains("'stem.conv.weight'"), "{err}");
    assert!(matches!(err, CheckpointError::UnexpectedTensors { .. }));
    // A model with one tensor more.
    let mut more = expected.clone();
    more.push(("block2.conv1.weight", &[128, 64, 3, 3]));
    let err = ckpt.check_layout(more.iter().copied()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::MissingTensor { .. }),
        "{err}"
    );
}

#[test]
fn metadata_errors_name_the_key() {
    let dir = TempDir::new("meta");
    let (_, ckpt) = saved_sample(&dir);
    let err = ckpt.meta("lr").unwrap_err();
    assert!(matches!(err, CheckpointError::MissingMetadata { .. }));
    assert!(err.to_string().contains("no metadata 'lr'"), "{err}");
    let err = ckpt.meta_parse::<u64>(keys::OPTIMIZER).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidMetadata { .. }));
    assert!(
        err.to_string().contains("metadata 'optimizer' = \"lars"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// save's own checks
// ---------------------------------------------------------------------------------------

#[test]
fn save_rejects_bad_input_and_writes_nothing() {
    let dir = TempDir::new("bad-input");
    let path = dir.join("x.safetensors");
    let meta = BTreeMap::new();
    let d4 = [1.0f32; 4];
    let cases: Vec<(Vec<TensorView>, &str)> = vec![
        (
            vec![TensorView::new("w", &[2, 3], &d4)],
            "'w' has shape [2, 3] but 4 elements",
        ),
        (
            vec![
                TensorView::new("w", &[4], &d4),
                TensorView::new("w", &[2, 2], &d4),
            ],
            "'w' is given twice",
        ),
        (vec![TensorView::new("__metadata__", &[4], &d4)], "reserved"),
        (
            vec![TensorView::new("w", &[1, 1, 1, 1, 1, 1, 1, 1, 4], &d4)],
            "at most 8",
        ),
        (
            vec![TensorView::new("w", &[usize::MAX, 2], &d4)],
            "elements",
        ),
    ];
    for (tensors, needle) in cases {
        let err = save(&path, &tensors, &meta).unwrap_err();
        assert!(
            matches!(err, CheckpointError::InvalidArgument { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let d = [0.0, 1.0, bad, 2.0];
        let err = save(&path, &[TensorView::new("layer.w", &[4], &d)], &meta).unwrap_err();
        assert!(
            matches!(err, CheckpointError::NonFinite { index: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("tensor 'layer.w'"), "{err}");
    }
    let mut m = BTreeMap::new();
    m.insert(keys::FORMAT_VERSION.to_string(), "0".to_string());
    let err = save(&path, &[], &m).unwrap_err();
    assert!(err.to_string().contains("format_version"), "{err}");
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

// ---------------------------------------------------------------------------------------
// Corrupt and unreadable files
// ---------------------------------------------------------------------------------------

#[test]
fn truncated_files_are_errors() {
    let dir = TempDir::new("truncated");
    let good = dir.join("good.safetensors");
    save(&good, &views(&sample()), &sample_meta()).unwrap();
    let bytes = fs::read(&good).unwrap();
    let path = dir.join("cut.safetensors");
    // Every prefix: too short for the length, inside the header, inside the data.
    for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = load(&path).expect_err("a truncated file must not load");
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "cut {cut}: {err}"
        );
        assert_eq!(err.path(), path);
    }
    fs::write(&path, b"").unwrap();
    load_err(&path, "shorter than the 8-byte header length");
    fs::write(&path, [1, 0, 0, 0, 0, 0, 0]).unwrap();
    load_err(&path, "the file is 7 bytes");
    // Data cut off, with the header intact: the tensors do not reach their offsets.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    fs::write(&path, &bytes[..8 + n + 4]).unwrap();
    load_err(&path, "outside the data section");
}

#[test]
fn header_length_past_the_file_is_an_error() {
    let dir = TempDir::new("hlen");
    let path = dir.join("h.safetensors");
    for n in [9u64, 1 << 20, u64::MAX, u64::MAX - 7, 1 << 63] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        fs::write(&path, b).unwrap();
        load_err(
            &path,
            &format!("the header length {n} exceeds the 2 bytes after it"),
        );
    }
}

#[test]
fn header_over_the_cap_is_an_error_before_reading_it() {
    let dir = TempDir::new("hcap");
    let path = dir.join("big.safetensors");
    let n = MAX_HEADER_LEN + 1;
    let f = fs::File::create(&path).unwrap();
    // A sparse file: only the length is written.
    f.set_len(8 + n).unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&n.to_le_bytes()).unwrap();
    drop(f);
    load_err(&path, "exceeds the limit");
}

#[test]
fn bad_headers_are_errors() {
    let dir = TempDir::new("headers");
    let path = dir.join("bad.safetensors");
    let four = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let cases: &[(&str, &[u8], &str)] = &[
        ("not json at all", &four, "bad header"),
        ("[1, 2, 3]", &four, "bad header"),
        ("\"just a string\"", &four, "bad header"),
        ("{\"a\": ", &four, "bad header"),
        ("{} trailing", &four, "bad header"),
        (
            r#"{"a":{"dtype":"F32","shape":[4]}}"#,
            &four,
            "tensor 'a': missing field `data_offsets`",
        ),
        (
            r#"{"a":{"dtype":"F32","data_offsets":[0,16]}}"#,
            &four,
            "tensor 'a': missing field `shape`",
        ),
        (
            r#"{"a":{"shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "tensor 'a': missing field `dtype`",
        ),
        (r#"{"a":7}"#, &four, "bad header"),
        (
            r#"{"a":{"dtype":7,"shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "tensor 'a': dtype: invalid type: integer `7`, expected a string",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4.5],"data_offsets":[0,16]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16,32]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,16]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"a":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "tensor 'a': duplicate field `dtype`",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,4],"data_offsets":[0,16]}}"#,
            &four,
            "more than 8 dimensions",
        ),
        (
            r#"{"__metadata__":{"step":12},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"__metadata__":[],"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "bad header",
        ),
        (
            r#"{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "__metadata__ appears twice",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &four,
            "tensor 'a' appears twice",
        ),
    ];
    for (header, data, needle) in cases {
        craft(&path, header, data);
        let err = load_err(&path, needle);
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "{header}: {err}"
        );
    }
    // Not UTF-8.
    let mut b = 4u64.to_le_bytes().to_vec();
    b.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    fs::write(&path, b).unwrap();
    load_err(&path, "bad header");
    // Deeply nested JSON: an error where a value is parsed, skipped where it is ignored;
    // either way no stack overflow.
    let open = "[".repeat(100_000);
    let close = "]".repeat(100_000);
    let deep = format!(r#"{{"a":{{"dtype":"F32","shape":{open}{close},"data_offsets":[0,16]}}}}"#);
    craft(&path, &deep, &four);
    load_err(&path, "bad header");
    let deep = format!(r#"{{"__metadata__":{open}{close}}}"#);
    craft(&path, &deep, &[]);
    load_err(&path, "bad header");
    let deep =
        format!(r#"{{"a":{{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":{open}{close}}}}}"#);
    craft(&path, &deep, &four);
    assert_eq!(load(&path).unwrap().tensor("a").unwrap().data.len(), 4);
}

#[test]
fn bad_offsets_are_errors() {
    let dir = TempDir::new("offsets");
    let path = dir.join("off.safetensors");
    let eight = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let t = |name: &str, shape: &str, b: u64, e: u64| {
        format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[{b},{e}]}}"#)
    };
    let cases = [
        // Out of range.
        (
            format!("{{{}}}", t("a", "[8]", 0, 64)),
            "outside the data section of 32 bytes",
        ),
        (
            format!("{{{}}}", t("a", "[8]", u64::MAX - 31, u64::MAX)),
            "outside the data section",
        ),
        // End before begin.
        (
            format!("{{{}}}", t("a", "[2]", 16, 8)),
            "data_offsets [16, 8], outside",
        ),
        // Size does not match the shape.
        (
            format!("{{{}}}", t("a", "[7]", 0, 32)),
            "needs 28 bytes, its data_offsets [0, 32] span 32",
        ),
        // A shape whose size overflows.
        (
            format!(
                "{{{}}}",
                t("a", "[4294967296,4294967296,4294967296]", 0, 32)
            ),
            "needs more than 2^64 bytes",
        ),
        // Overlap.
        (
            format!("{{{},{}}}", t("a", "[6]", 0, 24), t("b", "[4]", 16, 32)),
            "tensor 'b' at data_offsets [16, 32] overlaps tensor 'a', which ends at 24",
        ),
        // Two tensors on the same bytes.
        (
            format!("{{{},{}}}", t("a", "[8]", 0, 32), t("b", "[8]", 0, 32)),
            "overlaps tensor 'a'",
        ),
        // A gap.
        (
            format!("{{{},{}}}", t("a", "[2]", 0, 8), t("b", "[4]", 16, 32)),
            "leaves a gap after tensor 'a'",
        ),
        (
            format!("{{{}}}", t("a", "[4]", 16, 32)),
            "leaves a gap after the start of the data",
        ),
        // Trailing bytes nobody indexes.
        (
            format!("{{{}}}", t("a", "[4]", 0, 16)),
            "cover 16 bytes of the 32-byte data section",
        ),
    ];
    for (header, needle) in &cases {
        craft(&path, header, &eight);
        let err = load_err(&path, needle);
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "{header}: {err}"
        );
    }
}

#[test]
fn other_dtypes_are_errors_naming_the_tensor() {
    let dir = TempDir::new("dtype");
    let path = dir.join("d.safetensors");
    for dtype in ["F16", "BF16", "F64", "I64", "U8", "f32", ""] {
        let header = format!(
            r#"{{"ok":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"layer.w":{{"dtype":"{dtype}","shape":[2],"data_offsets":[4,8]}}}}"#
        );
        craft(&path, &header, &f32_bytes(&[1.0, 2.0]));
        let err = load_err(
            &path,
            &format!("tensor 'layer.w' has dtype {dtype}; only F32 is supported"),
        );
        assert!(matches!(err, CheckpointError::UnsupportedDtype { .. }));
    }
}

#[test]
fn non_finite_values_are_errors_naming_the_tensor() {
    let dir = TempDir::new("nan");
    let path = dir.join("n.safetensors");
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.running_var":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#;
    for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        craft(&path, header, &f32_bytes(&[1.0, 2.0, 0.5, 0.25, bad]));
        let err = load_err(&path, "tensor 'b.running_var' holds");
        assert!(
            matches!(err, CheckpointError::NonFinite { index: 2, .. }),
            "{err}"
        );
    }
    // A NaN with a payload is still a NaN.
    let mut data = f32_bytes(&[1.0, 2.0, 0.5, 0.25, 0.0]);
    data[16..20].copy_from_slice(&0x7fc0_1234u32.to_le_bytes());
    craft(&path, header, &data);
    load_err(&path, "NaN at flat index 2");
}

#[test]
fn unknown_format_version_is_an_error() {
    let dir = TempDir::new("version");
    let path = dir.join("v.safetensors");
    craft(
        &path,
        r#"{"__metadata__":{"format_version":"2"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &f32_bytes(&[1.0]),
    );
    let err = load_err(&path, "format_version '2' is not supported");
    assert!(matches!(err, CheckpointError::UnsupportedVersion { .. }));
}

#[test]
fn missing_file_directory_and_permission_errors() {
    let dir = TempDir::new("io");
    let missing = dir.join("nope.safetensors");
    let err = load_err(&missing, "cannot open the file for reading");
    match err {
        CheckpointError::Io { error, .. } => {
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound)
        }
        e => panic!("{e}"),
    }
    let err = load_err(&dir.0, "not a regular file (a directory)");
    assert!(matches!(err, CheckpointError::NotAFile { .. }));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("secret.safetensors");
        save(&path, &views(&sample()), &BTreeMap::new()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::File::open(&path).is_err() {
            let err = load_err(&path, "cannot open the file for reading");
            match err {
                CheckpointError::Io { error, .. } => {
                    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied)
                }
                e => panic!("{e}"),
            }
        } // else: running with privileges that ignore file modes (root).
    }
}

// ---------------------------------------------------------------------------------------
// Atomicity
// ---------------------------------------------------------------------------------------

fn tensors_a() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![("w".into(), vec![256, 256], vec![1.0; 256 * 256])]
}

fn tensors_b() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![("w".into(), vec![256, 256], vec![2.0; 256 * 256])]
}

/// `path` holds exactly tensors `a` (true) or `b` (false).
fn holds_a(path: &Path) -> bool {
    let ckpt = load(path).unwrap();
    let w = &ckpt.tensor("w").unwrap().data;
    assert_eq!(w.len(), 256 * 256);
    if w.iter().all(|&x| x == 1.0) {
        true
    } else {
        assert!(w.iter().all(|&x| x == 2.0), "a mix of two saves");
        false
    }
}

#[test]
fn a_failed_save_leaves_the_previous_file_and_no_temp_files() {
    let dir = TempDir::new("atomic");
    let path = dir.join("ckpt.safetensors");
    save(&path, &views(&tensors_a()), &BTreeMap::new()).unwrap();
    let before = fs::read(&path).unwrap();

    // Refused input: nothing written.
    let nan = [f32::NAN];
    save(&path, &[TensorView::new("w", &[1], &nan)], &BTreeMap::new()).unwrap_err();
    assert_eq!(fs::read(&path).unwrap(), before);

    // A missing directory.
    let err = save(
        dir.join("no/such/dir/ckpt.safetensors"),
        &views(&tensors_b()),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("create the temporary file"),
        "{err}"
    );

    // A target that is a directory: the temporary file is written, then the rename fails,
    // and the temporary file must go.
    let target_dir = dir.join("target_is_dir");
    fs::create_dir(&target_dir).unwrap();
    fs::write(target_dir.join("inside"), b"x").unwrap();
    let err = save(&target_dir, &views(&tensors_b()), &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("rename"), "{err}");
    assert_eq!(fs::read(target_dir.join("inside")).unwrap(), b"x");
    assert_eq!(dir.names(), ["ckpt.safetensors", "target_is_dir"]);

    // A read-only directory (unless privileges ignore it).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe");
        let privileged = fs::write(&probe, b"").is_ok();
        let _ = fs::remove_file(&probe);
        if !privileged {
            let err = save(&path, &views(&tensors_b()), &BTreeMap::new()).unwrap_err();
            match &err {
                CheckpointError::Io { error, .. } => {
                    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied, "{err}")
                }
                e => panic!("{e}"),
            }
        }
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(holds_a(&path));
    assert_eq!(dir.names(), ["ckpt.safetensors", "target_is_dir"]);

    // And a good save replaces it whole.
    save(&path, &views(&tensors_b()), &BTreeMap::new()).unwrap();
    assert!(!holds_a(&path));
    assert_eq!(dir.names(), ["ckpt.safetensors", "target_is_dir"]);
}

#[test]
fn concurrent_saves_to_one_path_leave_one_whole_file() {
    let dir = TempDir::new("threads");
    let path = dir.join("ckpt.safetensors");
    std::thread::scope(|s| {
        for i in 0..4 {
            let path = &path;
            s.spawn(move || {
                let t = if i % 2 == 0 { tensors_a() } else { tensors_b() };
                for _ in 0..5 {
                    save(path, &views(&t), &BTreeMap::new()).unwrap();
                }
            });
        }
    });
    holds_a(&path);
    assert_eq!(dir.names(), ["ckpt.safetensors"]);
}

const CHILD_ENV: &str = "SELFSUP_CKPT_KILL_CHILD";

/// A writer killed (SIGKILL) at arbitrary moments never leaves a torn file: the test
/// re-runs itself as a child that saves in a loop, kills it, and loads what is there.
#[test]
fn killed_writer_never_leaves_a_torn_file() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // Child: save forever (bounded, should the parent die), alternating contents.
        let path = Path::new(&dir).join("ckpt.safetensors");
        let (a, b) = (tensors_a(), tensors_b());
        let start = std::time::Instant::now();
        let mut i = 0u64;
        while start.elapsed().as_secs() < 20 {
            let t = if i.is_multiple_of(2) { &a } else { &b };
            save(&path, &views(t), &BTreeMap::new()).unwrap();
            i += 1;
        }
        return;
    }
    let dir = TempDir::new("kill");
    let path = dir.join("ckpt.safetensors");
    let exe = std::env::current_exe().unwrap();
    for round in 0..6u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "killed_writer_never_leaves_a_torn_file",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for a first checkpoint, then kill after a varying delay.
        let start = std::time::Instant::now();
        while !path.exists() && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_micros(3_000 + round * 4_111));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(path.exists(), "the child never saved");
        holds_a(&path);
    }
    // Killed mid-save, a child may leave its temporary file; the checkpoint itself is whole,
    // and only temporary files of that name pattern are there besides it.
    for name in dir.names() {
        assert!(
            name == "ckpt.safetensors" || name.starts_with(".ckpt.safetensors.tmp."),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Run directories
// ---------------------------------------------------------------------------------------

#[test]
fn run_directory_keeps_the_last_k() {
    let dir = TempDir::new("run");
    assert_eq!(latest_in(&dir.0).unwrap(), None);
    assert!(latest_in(dir.join("missing")).is_err());
    let t = sample();
    let mut meta = sample_meta();
    // A stale temporary file of a killed run, and files that are not checkpoints.
    fs::write(dir.join(".ckpt-00000050.safetensors.tmp.99999.0"), b"torn").unwrap();
    fs::write(dir.join("config.json"), b"{}").unwrap();
    fs::write(dir.join("ckpt-latest.safetensors"), b"not a step").unwrap();

    for step in [100u64, 200, 300, 400] {
        meta.insert(keys::STEP.into(), step.to_string());
        let p = save_in(&dir.0, step, &views(&t), &meta, 2).unwrap();
        assert_eq!(p, dir.join(&checkpoint_file_name(step)));
    }
    assert_eq!(
        dir.names(),
        [
            "ckpt-00000300.safetensors",
            "ckpt-00000400.safetensors",
            "ckpt-latest.safetensors",
            "config.json"
        ]
    );
    let (step, latest) = latest_in(&dir.0).unwrap().unwrap();
    assert_eq!(step, 400);
    assert_eq!(
        load(&latest)
            .unwrap()
            .meta_parse::<u64>(keys::STEP)
            .unwrap(),
        400
    );
    assert_eq!(
        list_in(&dir.0).unwrap(),
        [
            (300, dir.join("ckpt-00000300.safetensors")),
            (400, dir.join("ckpt-00000400.safetensors"))
        ]
    );
    // Steps past 8 digits still sort by step.
    save_in(&dir.0, 123_456_789_012, &views(&t), &meta, 1).unwrap();
    assert_eq!(latest_in(&dir.0).unwrap().unwrap().0, 123_456_789_012);
    assert_eq!(list_in(&dir.0).unwrap().len(), 1);
    // keep_last = 0 is refused before anything is written.
    let err = save_in(&dir.0, 500, &views(&t), &meta, 0).unwrap_err();
    assert!(err.to_string().contains("keep_last"), "{err}");
    assert_eq!(list_in(&dir.0).unwrap().len(), 1);
    checkpoint::write_atomically(dir.join("config.json"), |w| w.write_all(b"{\"a\":1}")).unwrap();
    assert_eq!(fs::read(dir.join("config.json")).unwrap(), b"{\"a\":1}");
}

#[test]
fn metadata_is_read_from_the_header_alone() {
    let dir = TempDir::new("meta-only");
    let path = dir.join("m.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert("method".to_string(), "quickthought".to_string());
    let data = [1.0f32, 2.0, 3.0];
    save(&path, &[TensorView::new("w", &[3], &data)], &meta).unwrap();
    let full = load(&path).unwrap();
    let head = checkpoint::load_metadata(&path).unwrap();
    assert_eq!(&head, full.metadata());
    assert_eq!(head["method"], "quickthought");
    // A data section cut short: the header still reads, the full load refuses.
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert_eq!(checkpoint::load_metadata(&path).unwrap(), head);
    assert!(load(&path).is_err());
    // A header that claims more than the file holds, or is not JSON: errors naming the file.
    let bad = dir.join("bad.safetensors");
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load_metadata(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("exceeds"),
        "{e}"
    );
    craft(&bad, "{not json", &[]);
    let e = checkpoint::load_metadata(&bad).unwrap_err().to_string();
    assert!(e.contains("bad header"), "{e}");
    // Another format version is refused here too.
    craft(&bad, r#"{"__metadata__":{"format_version":"999"}}"#, &[]);
    assert!(matches!(
        checkpoint::load_metadata(&bad),
        Err(CheckpointError::UnsupportedVersion { .. })
    ));
}
