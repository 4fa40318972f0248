//! `pretrain`'s defaults come from a recipe (`--recipe quick`, the default, or `paper`); a
//! flag given overrides its recipe value, and config.json records every value the run used,
//! never null.
#![cfg(feature = "cli")]

mod common;
use common::{fails_with, selfsup, TempDir};
use serde_json::Value;

/// Runs `pretrain --steps 1` with `extra` into a fresh folder; config.json's `args`.
fn resolved(tag: &str, extra: &[&str]) -> Value {
    let d = TempDir::new(tag);
    let out = d.join("run");
    let mut args = vec![
        "pretrain",
        "--steps",
        "1",
        "--knn-every",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = selfsup(&args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_no_nulls(&config, "config.json");
    config["args"].clone()
}

fn assert_no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("{at} is null"),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| assert_no_nulls(x, &format!("{at}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| assert_no_nulls(x, &format!("{at}.{k}"))),
        _ => {}
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_default_is_the_quick_recipe_recorded_in_full() {
    let a = resolved("recipe_quick", &[]);
    assert_eq!(a["recipe"], "quick");
    assert_eq!(a["method"], "simclr");
    assert_eq!(a["batch"], 32);
    assert_eq!(a["optimizer"], "lars");
    assert_eq!(f(&a["lr"]), 2.0);
    assert!((f(&a["weight_decay"]) - 1e-6).abs() < 1e-12);
    assert!((f(&a["tau"]) - 0.2).abs() < 1e-6);
    assert!((f(&a["crop_min"]) - 0.3).abs() < 1e-6);
    assert!((f(&a["strength"]) - 0.5).abs() < 1e-6);
    assert_eq!(a["widths"], serde_json::json!([8, 16, 32]));
    assert_eq!(a["image_size"], 32);
    assert!(a["threads"].as_u64().is_some_and(|t| t >= 1), "{a}");
    // The length alternatives not chosen are left out, not null.
    assert!(
        a.get("epochs").is_none() && a.get("minutes").is_none(),
        "{a}"
    );
}

#[test]
fn the_paper_recipe_and_flags_that_override_it() {
    let a = resolved("recipe_paper", &["--recipe", "paper", "--batch", "64"]);
    assert_eq!(a["recipe"], "paper");
    assert_eq!(a["batch"], 64);
    assert_eq!(a["optimizer"], "lars");
    // LARS at 0.3 x batch/256.
    assert!((f(&a["lr"]) - 0.075).abs() < 1e-12, "{a}");
    assert!((f(&a["tau"]) - 0.5).abs() < 1e-6);
    assert!((f(&a["crop_min"]) - 0.08).abs() < 1e-6);
    assert_eq!(a["widths"], serde_json::json!([32, 64, 128]));

    // Another optimizer than the recipe's takes that optimizer's generic defaults.
    let a = resolved(
        "recipe_sgd",
        &["--optimizer", "sgd", "--widths", "4,8", "--tau", "0.3"],
    );
    assert_eq!(a["optimizer"], "sgd");
    assert!((f(&a["lr"]) - 0.06 * 32.0 / 256.0).abs() < 1e-12, "{a}");
    assert!((f(&a["weight_decay"]) - 5e-4).abs() < 1e-9);
    assert!((f(&a["tau"]) - 0.3).abs() < 1e-6);
    assert_eq!(a["widths"], serde_json::json!([4, 8]));
}

#[test]
fn rotnet_takes_its_own_recipe_and_records_no_simclr_settings() {
    let a = resolved("recipe_rotnet", &["--method", "rotnet"]);
    assert_eq!(a["method"], "rotnet");
    assert_eq!(a["batch"], 32);
    assert_eq!(a["optimizer"], "sgd");
    assert!((f(&a["lr"]) - 0.2).abs() < 1e-12, "{a}");
    for k in ["tau", "crop_min", "strength"] {
        assert!(a.get(k).is_none(), "{k} recorded for rotnet: {a}");
    }
}

#[test]
fn recipe_errors_name_the_flag_and_what_is_allowed() {
    fails_with(
        &["pretrain", "--crop-min", "2"],
        "--crop-min <FRACTION>': expected a fraction of the image's area above 0 and at most 1",
    );
    fails_with(&["pretrain", "--crop-min", "0"], "--crop-min");
    fails_with(
        &["pretrain", "--strength", "-1"],
        "expected a strength from 0 to 2.5",
    );
    fails_with(&["pretrain", "--recipe", "fast"], "--recipe");
    fails_with(
        &["pretrain", "--method", "quickthought", "--recipe", "paper"],
        "quickthought has its own",
    );
}

#[test]
fn help_says_what_the_defaults_are_and_why() {
    let o = selfsup(&["pretrain", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for want in [
        "--recipe",
        "--recipe quick",
        "LARS at lr 2",
        "number of steps matters most",
        "--recipe paper",
    ] {
        assert!(help.contains(want), "'{want}' not in pretrain --help");
    }
}
