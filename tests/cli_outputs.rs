//! What the commands leave for people to use: `metrics.csv` beside `metrics.jsonl` (the same
//! lines as a table), plain progress lines when stderr is not a terminal, and `embed`'s row
//! ids (`.ids.tsv` beside the `.npy`, or one CSV), for images and sentences.
#![cfg(feature = "cli")]

mod common;
use common::{selfsup, TempDir};

#[test]
fn metrics_csv_holds_every_jsonl_line_and_progress_is_plain_when_piped() {
    let d = TempDir::new("cli_outputs");
    let run = d.0.join("run");
    let out = selfsup(&[
        "pretrain",
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--steps",
        "7",
        "--knn-every",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // stderr is a pipe here: plain lines, the first step's at once and the last one's.
    assert!(err.contains("step 1/7  loss"), "{err}");
    assert!(err.contains("step 7/7  loss"), "{err}");

    // loss.png: 900 x 600, with the loss (blue), the learning rate (orange) and the kNN
    // monitor (green) drawn.
    let png = image::open(run.join("loss.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (900, 600));
    for colour in [[31, 119, 180], [255, 127, 14], [44, 160, 44]] {
        assert!(
            png.pixels().any(|p| p.0 == colour),
            "no {colour:?} in loss.png"
        );
    }

    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut rows = csv.lines();
    let head: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(
        head,
        [
            "step",
            "epoch",
            "loss",
            "accuracy",
            "lr",
            "images_per_s",
            "knn_accuracy"
        ]
    );
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), lines.len(), "{csv}");
    assert_eq!(rows.len(), 8, "7 steps and the final kNN: {csv}");
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(row.len(), head.len(), "{row:?}");
        for (cell, key) in row.iter().zip(&head) {
            let v = line.get(*key).or_else(|| {
                // The speed and the monitor's value sit in their own maps in the JSON.
                line.as_object()?
                    .values()
                    .find_map(|inner| inner.as_object()?.get(*key))
            });
            match v {
                Some(v) => assert_eq!(
                    cell.parse::<f64>().unwrap(),
                    v.as_f64().unwrap(),
                    "{key} in {line}"
                ),
                None => assert!(cell.is_empty(), "{key}: '{cell}' in a line without it"),
            }
        }
    }
}

fn ok(args: &[&str]) -> String {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

#[test]
fn embed_names_every_row_beside_the_npy_or_in_one_csv() {
    let d = TempDir::new("cli_embed_ids");
    let run = d.0.join("run");
    let r = run.to_str().unwrap();
    ok(&[
        "pretrain",
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--steps",
        "1",
        "--quiet",
        "--knn-every",
        "0",
        "--out",
        r,
    ]);

    // npy + ids.tsv: the built-in test split, its labels by class name.
    let npy = d.0.join("emb.npy");
    ok(&[
        "embed",
        "--checkpoint",
        r,
        "--split",
        "test",
        "--out",
        npy.to_str().unwrap(),
    ]);
    let tsv = std::fs::read_to_string(d.0.join("emb.ids.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], "row\tsource\tlabel");
    assert_eq!(lines.len(), 1 + 2000);
    let names = selfsup::data::builtin::CLASS_NAMES;
    let (_, test) = selfsup::data::builtin::builtin_splits(&Default::default());
    for (i, line) in lines[1..].iter().enumerate().step_by(97) {
        let label = names[test.label(i).unwrap() as usize];
        assert_eq!(*line, format!("{i}\ttest:{i}\t{label}"));
    }

    // csv: the same ids, then the 8 features, equal to the npy's rows.
    let csv = d.0.join("emb.csv");
    let csv_s = csv.to_str().unwrap();
    ok(&[
        "embed",
        "--checkpoint",
        r,
        "--split",
        "test",
        "--format",
        "csv",
        "--out",
        csv_s,
    ]);
    let table = std::fs::read_to_string(&csv).unwrap();
    let mut rows = table.lines();
    assert_eq!(
        rows.next().unwrap(),
        "row,source,label,f0,f1,f2,f3,f4,f5,f6,f7"
    );
    let bytes = std::fs::read(&npy).unwrap();
    let data = &bytes[bytes.len() - 2000 * 8 * 4..];
    for (i, row) in rows.enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(
            cells[..3],
            [
                i.to_string().as_str(),
                &format!("test:{i}"),
                names[test.label(i).unwrap() as usize]
            ]
        );
        for (k, c) in cells[3..].iter().enumerate() {
            let at = (i * 8 + k) * 4;
            let want = f32::from_le_bytes(data[at..at + 4].try_into().unwrap());
            assert_eq!(c.parse::<f32>().unwrap(), want, "row {i} feature {k}");
        }
    }
}

#[test]
fn sentence_embeddings_carry_their_sentences() {
    let d = TempDir::new("cli_embed_text");
    let run = d.0.join("qt");
    let r = run.to_str().unwrap();
    ok(&[
        "pretrain",
        "--method",
        "quickthought",
        "--steps",
        "1",
        "--batch",
        "8",
        "--quiet",
        "--knn-every",
        "0",
        "--out",
        r,
    ]);
    let lines = d.0.join("lines.txt");
    std::fs::write(
        &lines,
        "A plain sentence.\nOne, with \"quotes\", and a comma.\n\tTabbed\there.\n",
    )
    .unwrap();
    let npy = d.0.join("s.npy");
    ok(&[
        "embed",
        "--checkpoint",
        r,
        "--sentences",
        lines.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    let tsv = std::fs::read_to_string(d.0.join("s.ids.tsv")).unwrap();
    assert_eq!(
        tsv,
        "row\tsentence\n0\tA plain sentence.\n1\tOne, with \"quotes\", and a comma.\n2\tTabbed here.\n"
    );
    let csv = d.0.join("s.csv");
    ok(&[
        "embed",
        "--checkpoint",
        r,
        "--sentences",
        lines.to_str().unwrap(),
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let table = std::fs::read_to_string(&csv).unwrap();
    let second = table.lines().nth(2).unwrap();
    assert!(
        second.starts_with("1,\"One, with \"\"quotes\"\", and a comma.\","),
        "{second}"
    );
}
