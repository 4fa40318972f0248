//! What a run leaves for people to use: `metrics.csv` beside `metrics.jsonl` (the same
//! lines as a table), and plain progress lines when stderr is not a terminal.
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
