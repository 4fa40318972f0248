//! `selfsup probe --tsv` without a checkpoint: the tf-idf row on labeled sentences the test
//! writes, the label-draw columns (`--draws`), and the one-line errors of malformed TSV
//! files (file and line number) and of baselines that do not fit the probe.
#![cfg(feature = "cli")]

mod common;
use common::{fails_with, selfsup, TempDir};

/// 40 sentences of two labels, 20 each: each label has its own nouns, every sentence the
/// same filler words, so the labels are separable from the words alone (chance: 50%).
fn separable(dir: &TempDir) -> String {
    let mut tsv = String::new();
    let food = ["soup", "bread", "sauce", "salad", "cake"];
    let road = ["van", "truck", "tyre", "bridge", "lane"];
    for i in 0..20 {
        tsv.push_str(&format!(
            "food\tOn day {i} the cook tasted the {} and the {}.\n",
            food[i % 5],
            food[(i + 2) % 5]
        ));
        tsv.push_str(&format!(
            "road\tOn day {i} the driver checked the {} and the {}.\n",
            road[i % 5],
            road[(i + 3) % 5]
        ));
    }
    dir.write("labeled.tsv", tsv.as_bytes())
        .to_str()
        .unwrap()
        .to_string()
}

fn table(args: &[&str]) -> String {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The (mean, std) cells of the row named `name`, in percent.
fn cells(table: &str, name: &str) -> Vec<(f64, f64)> {
    let line = table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"));
    let words: Vec<&str> = line[name.len()..].split_whitespace().collect();
    // features, then per cell: "mean%", "±", "std"
    words[1..]
        .chunks(3)
        .map(|c| {
            assert_eq!(c[1], "±", "{line}");
            (
                c[0].trim_end_matches('%').parse().unwrap(),
                c[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_tfidf_row_beats_chance_and_draws_give_mean_and_std() {
    let dir = TempDir::new("cli-probe-text");
    let tsv = separable(&dir);
    let t = table(&[
        "probe", "--tsv", &tsv, "--labels", "20%,100%", "--folds", "4", "--draws", "3",
    ]);
    assert!(
        t.contains("over 4 folds (100% labels) or 3 label draws"),
        "{t}"
    );
    // 20% of each label's 20 sentences: 4 each.
    assert!(t.contains("labeled sentences per draw: 20%: 8"), "{t}");
    let row = cells(&t, "tf-idf");
    assert_eq!(row.len(), 2, "{t}");
    for (mean, std) in &row {
        assert!(
            *mean > 80.0,
            "the tf-idf row should separate the labels: {t}"
        );
        assert!((0.0..=50.0).contains(std), "{t}");
    }
    // No checkpoint: no random-init row by default.
    assert!(!t.contains("random init"), "{t}");

    // One draw: its std is 0 by definition; the k-fold column is the same as before.
    let one = table(&[
        "probe", "--tsv", &tsv, "--labels", "20%,100%", "--folds", "4", "--draws", "1",
    ]);
    let row1 = cells(&one, "tf-idf");
    assert_eq!(row1[0].1, 0.0, "{one}");
    assert_eq!(row1[1], row[1], "{one}\n{t}");

    // A cap of 2 columns: the two most frequent tokens ("the", then "." before "and", "day"
    // and "on" by their bytes) carry no label, so the row falls to about chance.
    let capped = table(&[
        "probe",
        "--tsv",
        &tsv,
        "--labels",
        "100%",
        "--folds",
        "4",
        "--tfidf-words",
        "2",
    ]);
    let line = capped.lines().find(|l| l.starts_with("tf-idf")).unwrap();
    assert!(line.split_whitespace().nth(1) == Some("2"), "{capped}");
    assert!(cells(&capped, "tf-idf")[0].0 < 70.0, "{capped}");
}

#[test]
fn malformed_tsv_lines_name_the_file_and_the_line() {
    let dir = TempDir::new("cli-probe-text-bad");
    let no_tab = dir.write("no_tab.tsv", b"food\tsoup\n\nroad\tvan\nno tab here\n");
    fails_with(
        &["probe", "--tsv", no_tab.to_str().unwrap()],
        "no_tab.tsv:4: expected `label<TAB>sentence`, found no tab",
    );
    let empty_label = dir.write("empty_label.tsv", b"food\tsoup\n\tvan\n");
    fails_with(
        &["probe", "--tsv", empty_label.to_str().unwrap()],
        "empty_label.tsv:2: the label is empty",
    );
    let empty_sentence = dir.write("empty_sentence.tsv", b"food\tsoup\nroad\t  \n");
    fails_with(
        &["probe", "--tsv", empty_sentence.to_str().unwrap()],
        "empty_sentence.tsv:2: the sentence after the label 'road' is empty",
    );
    let latin1 = dir.write("latin1.tsv", b"food\tsoup\nroad\tvan\nfood\tcaf\xe9\n");
    fails_with(
        &["probe", "--tsv", latin1.to_str().unwrap()],
        "latin1.tsv:3: not UTF-8 text: invalid byte 0xe9",
    );
    let one_label = dir.write("one.tsv", b"food\tsoup\nfood\tbread\n");
    fails_with(
        &["probe", "--tsv", one_label.to_str().unwrap()],
        "one.tsv: 2 labeled sentences of 1 label(s)",
    );
    let blank = dir.write("blank.tsv", b"\n  \r\n");
    fails_with(
        &["probe", "--tsv", blank.to_str().unwrap()],
        "blank.tsv: no labeled sentences",
    );
    let missing = dir.join("missing.tsv");
    fails_with(
        &["probe", "--tsv", missing.to_str().unwrap()],
        "missing.tsv",
    );

    // Baselines that do not fit: random needs a checkpoint, tfidf needs --tsv, and none
    // without a checkpoint leaves nothing to probe.
    let ok = dir.write("ok.tsv", b"food\tsoup\nroad\tvan\n");
    let ok = ok.to_str().unwrap();
    fails_with(
        &["probe", "--tsv", ok, "--baselines", "random"],
        "--baselines random needs a --checkpoint",
    );
    fails_with(
        &["probe", "--tsv", ok, "--baselines", "none"],
        "nothing to probe",
    );
    fails_with(
        &[
            "probe",
            "--checkpoint",
            "nowhere.safetensors",
            "--baselines",
            "tfidf",
        ],
        "tfidf is a row of the sentence probe (--tsv)",
    );
    fails_with(
        &["probe", "--tsv", ok, "--baselines", "pixels"],
        "'pixels' is not one of tfidf, random",
    );
    // --draws belongs to --tsv (clap's usage error).
    let out = selfsup(&["probe", "--checkpoint", "x.safetensors", "--draws", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tsv"));
}
