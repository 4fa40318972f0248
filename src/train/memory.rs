//! The memory a training run takes at its peak, estimated before anything large is
//! allocated: the static graph's plan gives the arena of the activations and their
//! gradients (liveness-shared), the parameters and their gradients and the kernels'
//! scratch; the optimizer keeps one (SGD's momentum, LARS's) or two (AdamW's moments) values
//! per parameter; the loader holds the batches it prepares ahead; the monitor builds an
//! evaluation graph of its own; the dataset is already in memory. [`MemoryPlan::check`]
//! compares what is still to be allocated with the memory the machine has available
//! ([`available_memory`]: `MemAvailable` of `/proc/meminfo`, or less under a cgroup limit),
//! so a run that cannot fit is refused with its figure instead of aborting in the allocator.
//!
//! Every figure saturates at `u64::MAX` instead of overflowing: a configuration too large to
//! be addressed is a run that does not fit, never a panic.

use std::fmt;

use crate::data::folder::human_bytes;
use crate::error::{Error, Result};
use crate::graph::GraphMemory;
use crate::optim::OptimizerConfig;

/// One part of a run's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPart {
    /// What it is (`activations and gradients`).
    pub name: String,
    /// What it holds or what makes it grow, for a reader (`2 x 256 views of 3 x 32 x 32`).
    pub detail: String,
    /// Bytes (saturating at `u64::MAX`).
    pub bytes: u64,
    /// Whether it is in memory already (the loaded dataset), so not to be allocated.
    pub loaded: bool,
}

/// The memory of a run, part by part ([`crate::train::image::Pretrainer::memory_plan`],
/// [`crate::train::text::QtTrainer::memory_plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The parts, the largest consumers first as the trainers list them.
    pub parts: Vec<MemoryPart>,
}

/// `bytes` in human units; `u64::MAX` (a saturated figure) as more than can be addressed.
pub fn fmt_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        "more than can be addressed".into()
    } else {
        human_bytes(bytes)
    }
}

impl MemoryPlan {
    /// Adds a part not allocated yet.
    pub fn add(&mut self, name: &str, detail: impl Into<String>, bytes: u64) {
        self.parts.push(MemoryPart {
            name: name.into(),
            detail: detail.into(),
            bytes,
            loaded: false,
        });
    }

    /// Adds a part in memory already.
    pub fn add_loaded(&mut self, name: &str, detail: impl Into<String>, bytes: u64) {
        self.parts.push(MemoryPart {
            name: name.into(),
            detail: detail.into(),
            bytes,
            loaded: true,
        });
    }

    /// Adds a graph's activations, parameters, their gradients and buffers as one part
    /// each, the names prefixed with `of` (empty for the training graph); its workspace
    /// when `workspace`.
    pub fn add_graph(&mut self, of: &str, m: &GraphMemory, detail: &str, workspace: bool) {
        let name = |n: &str| {
            if of.is_empty() {
                n.to_string()
            } else {
                format!("{of}: {n}")
            }
        };
        self.add(&name("activations and gradients"), detail, m.activations);
        self.add(&name("parameters"), "", m.params);
        self.add(&name("parameter gradients"), "", m.params);
        self.add(
            &name("buffers"),
            "BatchNorm statistics, evaluation's folded weights, the loss's saved gradient",
            m.buffers,
        );
        if workspace {
            self.add(
                &name("kernel workspaces"),
                "per-thread scratch of the convolutions and GEMMs",
                m.workspace,
            );
        }
    }

    /// Adds the optimizer's state for `params` parameters.
    pub fn add_optimizer(&mut self, opt: &OptimizerConfig, params: u64) {
        let (name, copies) = match opt {
            OptimizerConfig::Sgd(_) => ("SGD momentum", 1),
            OptimizerConfig::Lars(_) => ("LARS momentum", 1),
            OptimizerConfig::AdamW(_) => ("AdamW moments", 2),
        };
        let detail = format!("{name}, {copies} value(s) per parameter");
        self.add("optimizer state", detail, params.saturating_mul(4 * copies));
    }

    /// Bytes of every part.
    pub fn total(&self) -> u64 {
        sum(self.parts.iter())
    }

    /// Bytes still to be allocated (the parts not [`loaded`](MemoryPart::loaded)).
    pub fn to_allocate(&self) -> u64 {
        sum(self.parts.iter().filter(|p| !p.loaded))
    }

    /// The largest part still to be allocated.
    pub fn largest(&self) -> Option<&MemoryPart> {
        self.parts
            .iter()
            .filter(|p| !p.loaded)
            .max_by_key(|p| p.bytes)
    }

    /// `Ok` when what is still to be allocated fits in `available` bytes; otherwise an
    /// error with both figures and the largest part (`op` names the operation).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it does not fit.
    pub fn check(&self, op: &'static str, available: u64) -> Result<()> {
        let need = self.to_allocate();
        if need <= available {
            return Ok(());
        }
        let largest = self
            .largest()
            .map(|p| format!(" ({} {})", p.name, fmt_bytes(p.bytes)))
            .unwrap_or_default();
        Err(Error::InvalidArgument {
            op,
            msg: format!(
                "this run needs about {}{largest}, {} are available",
                fmt_bytes(need),
                human_bytes(available)
            ),
        })
    }
}

fn sum<'a>(parts: impl Iterator<Item = &'a MemoryPart>) -> u64 {
    parts.fold(0u64, |a, p| a.saturating_add(p.bytes))
}

impl fmt::Display for MemoryPlan {
    /// One line per part (name, size, detail), then the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.parts.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &self.parts {
            let mut detail = p.detail.clone();
            if p.loaded {
                detail = if detail.is_empty() {
                    "loaded".into()
                } else {
                    format!("{detail}; loaded")
                };
            }
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!("  ({detail})")
            };
            writeln!(f, "  {:<width$}  {:>9}{detail}", p.name, fmt_bytes(p.bytes))?;
        }
        write!(f, "  {:<width$}  {:>9}", "total", fmt_bytes(self.total()))
    }
}

/// The bytes this process can still allocate without swapping: `MemAvailable` of
/// `/proc/meminfo` (free memory plus the page cache the kernel can reclaim), or less when a
/// cgroup (a container, a scheduler's job) limits the process to less (its limit minus
/// what it uses, reclaimable file pages excepted). `None` where that is not known (other
/// operating systems, no `/proc`): then no check is made.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_field(&meminfo, "MemAvailable:")?;
    Some(match cgroup_headroom() {
        Some(h) => available.min(h),
        None => available,
    })
}

/// A `/proc/meminfo` field in bytes (the file gives kB).
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The cgroup's limit minus its use (inactive file pages, which it reclaims first, not
/// counted as used): cgroup v2 (`memory.max`, `memory.current`, `inactive_file`) or v1
/// (`memory.limit_in_bytes`, `memory.usage_in_bytes`, `total_inactive_file`) at the
/// usual mount point. `None` without a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let stat_field = |text: Option<String>, key: &str| {
        text.and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
    };
    let (limit, used, inactive) = if let Some(limit) = number(read("/sys/fs/cgroup/memory.max")) {
        (
            limit,
            number(read("/sys/fs/cgroup/memory.current"))?,
            stat_field(read("/sys/fs/cgroup/memory.stat"), "inactive_file "),
        )
    } else {
        (
            number(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?,
            number(read("/sys/fs/cgroup/memory/memory.usage_in_bytes"))?,
            stat_field(
                read("/sys/fs/cgroup/memory/memory.stat"),
                "total_inactive_file ",
            ),
        )
    };
    // v1 reports "no limit" as a huge number (the largest page-aligned i64).
    if limit >= 1 << 60 {
        return None;
    }
    Some(limit.saturating_sub(used.saturating_sub(inactive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_counts_what_is_not_loaded_and_names_the_largest_part() {
        let mut plan = MemoryPlan::default();
        plan.add("activations and gradients", "", 3_000_000_000);
        plan.add("parameters", "", 1_000_000);
        plan.add_loaded("dataset", "", 5_000_000_000);
        assert_eq!(plan.total(), 8_001_000_000);
        assert_eq!(plan.to_allocate(), 3_001_000_000);
        assert!(plan.check("pretrain", 3_001_000_000).is_ok());
        let e = plan
            .check("pretrain", 2_000_000_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3.0 GB"), "{e}");
        assert!(e.contains("activations and gradients 3.0 GB"), "{e}");
        assert!(e.contains("2.0 GB are available"), "{e}");
        let shown = plan.to_string();
        assert!(
            shown.contains("loaded") && shown.contains("total"),
            "{shown}"
        );
    }

    #[test]
    fn a_saturated_figure_never_fits() {
        let mut plan = MemoryPlan::default();
        plan.add("activations and gradients", "", u64::MAX);
        plan.add("parameters", "", 10);
        assert_eq!(plan.to_allocate(), u64::MAX);
        let e = plan
            .check("pretrain", u64::MAX - 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than can be addressed"), "{e}");
    }

    #[test]
    fn meminfo_is_read_in_kilobytes() {
        let text = "MemTotal:       24683772 kB\nMemAvailable:   21681496 kB\n";
        assert_eq!(
            meminfo_field(text, "MemAvailable:"),
            Some(21_681_496 * 1024)
        );
        assert_eq!(meminfo_field(text, "SwapFree:"), None);
    }
}
