//! A run that does not fit in memory is refused before it allocates, in one line naming the
//! figure and the flags that change it (not an abort in the allocator); `pretrain --dry-run`
//! prints the estimate part by part and writes nothing; and the estimate, made from the
//! graph's plan before anything is allocated, matches what the trainer then allocates: the
//! arenas exactly, the whole run's peak heap within 25%.
#![cfg(feature = "cli")]

mod common;
use common::{selfsup, TempDir};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use selfsup::data::builtin::{builtin_splits, BuiltinConfig};
use selfsup::data::Splits;
use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
use selfsup::train::Method;

/// The system allocator with the live heap bytes of every thread and their high-water mark.
struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The command: widths of 2048 to 8192 channels at batch 4096 need hundreds of GB.
#[test]
fn a_run_too_large_for_memory_is_refused_in_one_line() {
    let d = TempDir::new("too_large");
    let out = d.join("run");
    let args = [
        "pretrain",
        "--data",
        "builtin",
        "--steps",
        "1",
        "--batch",
        "4096",
        "--widths",
        "2048,4096,8192",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = selfsup(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    let line = lines[0];
    assert!(line.starts_with("error: this run needs about "), "{line}");
    // The figure (hundreds of GB), what is available and the flags that change it.
    assert!(line.contains(" GB of memory"), "{line}");
    assert!(line.contains("are available"), "{line}");
    for flag in ["--batch", "--widths", "--image-size"] {
        assert!(line.contains(flag), "{flag} not named: {line}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    assert!(!out.exists(), "the refused run wrote its folder");
}

/// Runs `pretrain --dry-run` with `args` into a fresh folder: it must succeed, print every
/// one of `parts` and leave the run folder unwritten.
fn dry_run(args: &[&str], parts: &[&str]) {
    let d = TempDir::new("dry_run");
    let out = d.join("run");
    let mut all = vec!["pretrain", "--dry-run", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = selfsup(&all);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for part in parts {
        assert!(text.contains(part), "'{part}' missing:\n{text}");
    }
    assert!(!out.exists(), "--dry-run wrote the run folder");
}

#[test]
fn dry_run_prints_the_estimate_and_writes_nothing() {
    dry_run(
        &["--batch", "64"],
        &[
            "simclr: 20000 images",
            "batch 64",
            "lars optimizer",
            "activations and gradients",
            "parameters",
            "parameter gradients",
            "optimizer state",
            "kernel workspaces",
            "loader",
            "kNN monitor",
            "dataset",
            "total",
            "available",
        ],
    );
    // Quick Thoughts too, with its own parts.
    dry_run(
        &["--method", "quickthought"],
        &[
            "quick thoughts",
            "activations and gradients",
            "corpus",
            "total",
        ],
    );
}

#[test]
fn the_help_says_how_memory_grows() {
    let o = selfsup(&["pretrain", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("grow linearly with\nthe batch and with the pixels"),
        "{text}"
    );
    assert!(text.contains("--dry-run"), "{text}");
}

/// The part of `plan` named `name`, in bytes.
fn part(plan: &selfsup::train::MemoryPlan, name: &str) -> u64 {
    plan.parts
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no part '{name}' in\n{plan}"))
        .bytes
}

#[test]
fn the_estimate_matches_the_arenas_and_the_peak_heap() {
    let (train, test) = builtin_splits(&BuiltinConfig {
        n_train: 512,
        n_test: 128,
        ..BuiltinConfig::default()
    });
    let splits = Arc::new(Splits::new(train, Some(test)));
    for (method, widths) in [
        (ImageMethod::SimClr, vec![16, 32, 64]),
        (ImageMethod::RotNet, vec![8, 16]),
    ] {
        let mut cfg = PretrainConfig::for_images(method, 3, 32);
        cfg.batch = 64;
        cfg.model.widths = widths.clone();
        cfg.model.blocks = vec![1; widths.len()];
        let plan = Pretrainer::memory_plan(&cfg, &splits.train, Some(&splits)).unwrap();

        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let mut t = Pretrainer::new(cfg, Arc::clone(&splits.train))
            .unwrap()
            .with_monitor(Arc::clone(&splits));
        // The arenas the graph allocated are the ones its plan gave.
        let g = t.graph();
        let arena = g.activation_bytes() as u64;
        assert_eq!(part(&plan, "activations and gradients"), arena);
        assert_eq!(part(&plan, "parameters"), 4 * g.params().len() as u64);
        assert_eq!(
            part(&plan, "parameter gradients"),
            4 * g.param_grads().len() as u64
        );
        let opt = t.core().optimizer();
        let state: usize = opt.state_tensors().iter().map(|(_, v)| v.len()).sum();
        assert_eq!(part(&plan, "optimizer state"), 4 * state as u64);
        // Two steps (the loader fills its batches ahead) and the kNN monitor: the peak of
        // the heap over the run against the estimate of what it allocates.
        t.train_step().unwrap();
        t.train_step().unwrap();
        assert!(t.monitor().unwrap().is_some());
        let peak = (PEAK.load(Relaxed) - before) as f64;
        let estimate = plan.to_allocate() as f64;
        assert!(
            (estimate / peak - 1.0).abs() <= 0.25,
            "{method:?}: estimated {estimate} bytes, the peak heap grew by {peak}:\n{plan}"
        );
        // The training graph's and the monitor's arenas are most of it: the test measures
        // the plans, not noise.
        let graphs = arena + part(&plan, "kNN monitor");
        assert!(graphs as f64 > 0.7 * peak, "{graphs} of {peak}");
    }
}
