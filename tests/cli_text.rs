//! End-to-end tests of the text method on the command line: `pretrain --method
//! quickthought` on a folder of text files, then `embed --sentences`, `probe --tsv` and
//! `neighbors` on its checkpoint, and the one-line errors of bad text input.
#![cfg(feature = "cli")]

mod common;

use std::path::PathBuf;

use common::{newest_checkpoint, selfsup, TempDir};

fn ok(args: &[&str]) -> String {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `selfsup embed --checkpoint CKPT --sentences LINES --out NPY`, then the `.npy` it wrote:
/// its shape and values.
fn embed_sentences(
    ckpt: &str,
    lines: &std::path::Path,
    npy: &std::path::Path,
) -> (Vec<usize>, Vec<f32>) {
    ok(&[
        "embed",
        "--checkpoint",
        ckpt,
        "--sentences",
        lines.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    let mut f = std::fs::File::open(npy).unwrap();
    selfsup::io::npy::read_npy_f32(&mut f).unwrap()
}

/// Asserts exit status 2 and one `error:` line on stderr containing `want`.
fn fails_with(args: &[&str], want: &str) {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].contains(want), "{args:?}: '{want}' not in: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// A small corpus folder: 40 short stories about two subjects, plus files the reader must
/// skip (binary, one sentence, empty).
fn corpus(dir: &TempDir) -> PathBuf {
    let root = dir.join("corpus");
    for i in 0..40 {
        let (who, what) = if i % 2 == 0 {
            (
                "The cook",
                [
                    "chopped onions",
                    "stirred the soup",
                    "tasted the sauce",
                    "served dinner",
                ],
            )
        } else {
            (
                "The driver",
                [
                    "checked the tyres",
                    "filled the tank",
                    "drove north",
                    "parked the van",
                ],
            )
        };
        let text: String = what
            .iter()
            .map(|w| format!("{who} {w} on day {i}. "))
            .collect();
        dir.write(&format!("corpus/doc{i:02}.txt"), text.as_bytes());
    }
    dir.write("corpus/notes.gz", &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe]);
    dir.write("corpus/short.txt", b"Only one sentence.");
    dir.write("corpus/empty.txt", b"");
    root
}

const SMALL: &[&str] = &[
    "--method",
    "quickthought",
    "--embed-dim",
    "8",
    "--channels",
    "16",
    "--min-count",
    "1",
    "--quiet",
];

#[test]
fn pretrain_embed_probe_and_neighbors_on_a_text_folder() {
    let dir = TempDir::new("cli-text");
    let root = corpus(&dir);
    let data = format!("text:{}", root.display());
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let mut args = vec![
        "pretrain", "--data", &data, "--out", run_s, "--steps", "12", "--batch", "16",
    ];
    args.extend_from_slice(SMALL);
    let out = selfsup(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 not UTF-8 text"), "{err}");
    assert!(err.contains("1 with one sentence"), "{err}");
    assert!(err.contains("sentences/s"), "{err}");
    for f in ["config.json", "vocab.json", "metrics.jsonl", "loss.png"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["total_steps"], 12);
    // No --tau: the in-batch default, recorded.
    assert_eq!(config["temperature"], 50.0);
    // 40 documents: every 20th is held out for the monitor.
    assert_eq!(config["train_documents"], 38);
    let ckpt = newest_checkpoint(&run);
    let ckpt_s = ckpt.to_str().unwrap();

    // Resuming continues the same run; a different objective is another run.
    let mut more = args.clone();
    more.extend_from_slice(&["--resume"]);
    let mut other = more.clone();
    other.extend_from_slice(&["--objective", "pairwise"]);
    fails_with(&other, "--objective");
    // So is another temperature than the one the run trained with (its default, 50).
    let mut other = more.clone();
    other.extend_from_slice(&["--tau", "2"]);
    fails_with(&other, "--tau 50, this command says 2");

    // embed: one row per line, blank lines included.
    let lines = dir.write(
        "lines.txt",
        b"The cook stirred the soup.\n\nThe driver drove north.\n",
    );
    let npy = dir.join("sent.npy");
    let (shape, values) = embed_sentences(ckpt_s, &lines, &npy);
    assert_eq!(shape, vec![3, 32]);
    assert!(values.iter().all(|v| v.is_finite()));
    assert_ne!(values[..32], values[64..]);

    // probe on a labeled TSV: k-fold and few-label columns.
    let mut tsv = String::new();
    for i in 0..30 {
        if i % 2 == 0 {
            tsv.push_str(&format!("food\tThe cook tasted the sauce on day {i}.\n"));
        } else {
            tsv.push_str(&format!("road\tThe driver parked the van on day {i}.\n"));
        }
    }
    let tsv = dir.write("labeled.tsv", tsv.as_bytes());
    let table = ok(&[
        "probe",
        "--checkpoint",
        ckpt_s,
        "--tsv",
        tsv.to_str().unwrap(),
        "--folds",
        "3",
        "--labels",
        "20%,100%",
    ]);
    assert!(table.contains("random init"), "{table}");
    assert!(table.contains("run/ckpt-"), "{table}");
    assert!(table.contains("100% labels"), "{table}");

    // neighbors: the k nearest of the checkpoint's own corpus.
    let near = ok(&[
        "neighbors",
        "--checkpoint",
        ckpt_s,
        "-k",
        "3",
        "The cook chopped onions.",
    ]);
    let listed: Vec<&str> = near.lines().filter(|l| l.starts_with("   ")).collect();
    assert_eq!(listed.len(), 3, "{near}");
    assert!(near.contains("1. "), "{near}");

    // Bad input: one-line errors naming the problem.
    let bad_tsv = dir.write("bad.tsv", b"food\tfine line\nno tab here\n");
    fails_with(
        &[
            "probe",
            "--checkpoint",
            ckpt_s,
            "--tsv",
            bad_tsv.to_str().unwrap(),
        ],
        "bad.tsv:2: expected `label<TAB>sentence`",
    );
    let one_label = dir.write("one.tsv", b"food\ta\nfood\tb\n");
    fails_with(
        &[
            "probe",
            "--checkpoint",
            ckpt_s,
            "--tsv",
            one_label.to_str().unwrap(),
        ],
        "at least two labels",
    );
    let latin1 = dir.write("latin1.txt", b"caf\xe9 au lait\n");
    fails_with(
        &[
            "embed",
            "--checkpoint",
            ckpt_s,
            "--sentences",
            latin1.to_str().unwrap(),
            "--out",
            npy.to_str().unwrap(),
        ],
        "not UTF-8 text: invalid byte 0xe9 at byte offset 3",
    );
    fails_with(
        &[
            "embed",
            "--checkpoint",
            ckpt_s,
            "--out",
            npy.to_str().unwrap(),
        ],
        "pass --sentences",
    );
    fails_with(
        &["probe", "--checkpoint", ckpt_s, "--data", "builtin"],
        "--tsv",
    );
}

#[test]
fn bad_text_corpora_are_one_line_errors() {
    let dir = TempDir::new("cli-text-bad");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let run = |data: &str, extra: &[&str]| {
        let batch = if extra.contains(&"--batch") {
            &[][..]
        } else {
            &["--batch", "16"][..]
        };
        let mut a = vec!["pretrain", "--data", data, "--out", out_s, "--steps", "2"];
        a.extend_from_slice(batch);
        a.extend_from_slice(SMALL);
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let check = |args: Vec<String>, want: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&a, want);
    };
    let bin = dir.write("bin.txt", b"Valid. Then \xff\xfe bytes.");
    check(
        run(&format!("text:{}", bin.display()), &[]),
        "not UTF-8 text: invalid byte 0xff at byte offset 12",
    );
    let empty = dir.write("empty.txt", b"");
    check(
        run(&format!("text:{}", empty.display()), &[]),
        "no documents",
    );
    let missing = dir.join("nowhere");
    check(run(&format!("text:{}", missing.display()), &[]), "nowhere");
    let small = dir.write("small.txt", b"One. Two. Three.");
    check(
        run(&format!("text:{}", small.display()), &[]),
        "3 sentences in documents of two or more",
    );
    check(run("fashion-mnist", &[]), "builtin` or `text:PATH`");
    check(run("builtin", &["--batch", "3"]), "at least 4");
    check(run("builtin", &["--kernel", "4"]), "odd");
    // A very long sentence is cut to --max-len tokens and counted, not an error.
    let long: String = (0..300).map(|i| format!("w{i} ")).collect::<String>() + ".";
    let text = format!("{long} Short one. Another short one. And one more. Last one here.");
    let f = dir.write("long.txt", text.as_bytes());
    let a = run(
        &format!("text:{}", f.display()),
        &["--max-len", "8", "--batch", "4"],
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = selfsup(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 cut to 8 tokens"), "{err}");
}

/// `--subwords`: the vocabulary records the n-gram setting, the checkpoint rebuilds it for
/// `embed` and `probe`, and two unknown words get different rows (without subword units
/// both are `<unk>` alone).
#[test]
fn subword_units_are_recorded_and_used_by_embed_and_probe() {
    let dir = TempDir::new("cli-text-subwords");
    let root = corpus(&dir);
    let data = format!("text:{}", root.display());
    let lines = dir.write("oov.txt", b"zebras\nquokkas\n");
    let mut rows = Vec::new();
    for (name, subwords) in [("words", "0"), ("sub", "500")] {
        let run = dir.join(name);
        let run_s = run.to_str().unwrap();
        let mut args = vec![
            "pretrain",
            "--data",
            &data,
            "--out",
            run_s,
            "--steps",
            "6",
            "--batch",
            "16",
            "--encoder",
            "bow",
            "--subwords",
            subwords,
            "--subword-ngrams",
            "3-5",
        ];
        args.extend_from_slice(SMALL);
        ok(&args);
        let vocab: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("vocab.json")).unwrap()).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
        if subwords == "0" {
            assert!(vocab.get("subwords").is_none(), "{vocab}");
        } else {
            assert_eq!(vocab["subwords"]["buckets"], 500, "{vocab}");
            assert_eq!(vocab["subwords"]["min_n"], 3, "{vocab}");
            assert_eq!(vocab["subwords"]["max_n"], 5, "{vocab}");
            assert_eq!(config["args"]["subwords"], 500, "{config}");
            assert_eq!(
                config["encoder"]["vocab"],
                vocab["words"].as_array().unwrap().len() + 500
            );
        }
        let ckpt = newest_checkpoint(&run);
        let npy = dir.join(&format!("{name}.npy"));
        let (shape, values) = embed_sentences(ckpt.to_str().unwrap(), &lines, &npy);
        assert_eq!(shape, vec![2, 16]);
        rows.push(values);
        let mut tsv = String::new();
        for i in 0..20 {
            let (label, text) = if i % 2 == 0 {
                ("food", "The cook tasted the sauces")
            } else {
                ("road", "The driver parked the vans")
            };
            tsv.push_str(&format!("{label}\t{text} on day {i}.\n"));
        }
        let tsv = dir.write(&format!("{name}.tsv"), tsv.as_bytes());
        let table = ok(&[
            "probe",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--tsv",
            tsv.to_str().unwrap(),
            "--folds",
            "2",
            "--labels",
            "100%",
        ]);
        assert!(table.contains("random init"), "{table}");
    }
    // Words only: both unknown words are <unk>, the same row; with subwords they differ.
    assert_eq!(rows[0][..16], rows[0][16..]);
    assert_ne!(rows[1][..16], rows[1][16..]);
    fails_with(
        &[
            "pretrain",
            "--method",
            "quickthought",
            "--subword-ngrams",
            "5-3",
        ],
        "MIN-MAX",
    );
}
