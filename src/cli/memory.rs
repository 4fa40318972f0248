//! The memory check before a run allocates: the library's estimate
//! ([`MemoryPlan`]) against the memory available, refused in one line naming the figure and
//! the flags that change it; and `--dry-run`'s report of the resolved run and its estimate.

use anyhow::{bail, Result};

use selfsup::train::memory::fmt_bytes;
use selfsup::train::{available_memory, MemoryPlan};

/// The flags a run's memory grows with: `at`, their values (`--batch 4096, --widths 8,16`),
/// and `lower`, the advice (`--batch, --widths or --image-size`).
pub(super) struct Knobs {
    pub at: String,
    pub lower: &'static str,
}

/// `Ok` when the part of `plan` still to be allocated fits in the available memory (or
/// when that is not known); otherwise the one-line error.
pub(super) fn check(plan: &MemoryPlan, knobs: &Knobs) -> Result<()> {
    match shortfall(plan, knobs) {
        Some(msg) => bail!("{msg}"),
        None => Ok(()),
    }
}

/// Why `plan` does not fit, or `None` when it does (or nothing is known of the machine).
fn shortfall(plan: &MemoryPlan, knobs: &Knobs) -> Option<String> {
    let available = available_memory()?;
    let need = plan.to_allocate();
    if need <= available {
        return None;
    }
    let largest = plan
        .largest()
        .map(|p| format!("{} {}, ", p.name, fmt_bytes(p.bytes)))
        .unwrap_or_default();
    Some(format!(
        "this run needs about {} of memory ({largest}at {}), {} are available: lower {}",
        fmt_bytes(need),
        knobs.at,
        fmt_bytes(available),
        knobs.lower
    ))
}

/// `--dry-run`: the run's description, its settings and its memory, part by part, with
/// what is available, on stdout.
pub(super) fn dry_run(description: &str, settings: &str, plan: &MemoryPlan, knobs: &Knobs) {
    println!("{description}");
    println!("{settings}");
    println!("memory estimate (peak, this process):");
    println!("{plan}");
    match available_memory() {
        Some(a) => println!("available: {}", fmt_bytes(a)),
        None => println!("available: unknown on this system (no check is made)"),
    }
    if let Some(msg) = shortfall(plan, knobs) {
        println!("does not fit: {msg}");
    }
    println!("dry run: nothing trained, no run folder written");
}
