//! `selfsup bench --only`: which workloads and memory probes a run chooses, by name or by
//! prefix, among those the chosen implementation has.

use anyhow::{bail, ensure, Result};

use super::memory::MemoryProbe;
use super::workload::{Reference, Workload};

/// What `--only` chose: timed workloads and memory probes, each in registry order.
pub struct Selection<'a> {
    pub workloads: Vec<&'a Workload>,
    pub probes: Vec<&'a MemoryProbe>,
}

impl Selection<'_> {
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.probes.is_empty()
    }
}

/// The workloads and memory probes named by `--only` (all when empty), in registry order,
/// restricted to those `reference` implements (memory probes are `selfsup` only). Explicit
/// names must exist and be implemented by `reference`; patterns (`prefix*`) must match at
/// least one.
pub fn select<'a>(
    all: &'a [Workload],
    probes: &'a [MemoryProbe],
    only: &[String],
    reference: Reference,
) -> Result<Selection<'a>> {
    let names: Vec<&str> = all
        .iter()
        .map(|w| w.name)
        .chain(probes.iter().map(|p| p.name))
        .collect();
    let supported: Vec<bool> = all
        .iter()
        .map(|w| w.references.contains(&reference))
        .chain(probes.iter().map(|_| reference == Reference::Selfsup))
        .collect();
    let chosen = select_names(&names, &supported, only, reference)?;
    let (w, p) = chosen.split_at(all.len());
    let pick = |c: &[bool]| -> Vec<usize> { (0..c.len()).filter(|&i| c[i]).collect() };
    Ok(Selection {
        workloads: pick(w).into_iter().map(|i| &all[i]).collect(),
        probes: pick(p).into_iter().map(|i| &probes[i]).collect(),
    })
}

/// Which of `names` `--only` chooses (see [`select`]); `supported[i]` says whether `reference`
/// implements `names[i]`.
fn select_names(
    names: &[&str],
    supported: &[bool],
    only: &[String],
    reference: Reference,
) -> Result<Vec<bool>> {
    let valid = || names.join(", ");
    if only.is_empty() {
        return Ok(supported.to_vec());
    }
    let mut chosen = vec![false; names.len()];
    for raw in only {
        let pattern = raw.trim();
        ensure!(
            !pattern.is_empty(),
            "--only: empty workload name (valid: {})",
            valid()
        );
        if let Some(prefix) = pattern.strip_suffix('*') {
            let mut any = false;
            for (i, name) in names.iter().enumerate() {
                if name.starts_with(prefix) && supported[i] {
                    chosen[i] = true;
                    any = true;
                }
            }
            ensure!(
                any,
                "--only: '{pattern}' matches no workload (valid: {})",
                valid()
            );
        } else {
            let Some(i) = names.iter().position(|&n| n == pattern) else {
                bail!("--only: unknown workload '{pattern}' (valid: {})", valid());
            };
            ensure!(
                supported[i],
                "--only: workload '{pattern}' has no '{}' implementation",
                reference.name()
            );
            chosen[i] = true;
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::memory::probes;
    use crate::cli::bench::workloads::registry;

    fn names(s: &Selection) -> Vec<&'static str> {
        s.workloads
            .iter()
            .map(|w| w.name)
            .chain(s.probes.iter().map(|p| p.name))
            .collect()
    }

    fn sel<'a>(
        all: &'a [Workload],
        probes: &'a [MemoryProbe],
        only: &[&str],
        r: Reference,
    ) -> Result<Selection<'a>> {
        select(all, probes, &strings(only), r)
    }

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_keeps_registry_order_and_dedups() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let got = sel(&all, &pr, &["sgemm_1024", "sgemm_256", "sgemm_256"], s).unwrap();
        assert_eq!(names(&got), ["sgemm_256", "sgemm_1024"]);
        let got = sel(&all, &pr, &["sgemm_conv_*"], s).unwrap();
        assert_eq!(
            names(&got),
            ["sgemm_conv_k27", "sgemm_conv_c32", "sgemm_conv_c128"]
        );
        let got = sel(&all, &pr, &[], s).unwrap();
        assert_eq!(
            (got.workloads.len(), got.probes.len()),
            (all.len(), pr.len())
        );
    }

    #[test]
    fn select_finds_the_ntxent_workloads_and_the_memory_probe() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let got = sel(&all, &pr, &["ntxent_n16384_d128", "ntxent_n256_d128"], s).unwrap();
        assert_eq!(names(&got), ["ntxent_n256_d128", "ntxent_n16384_d128"]);
        assert_eq!(got.probes.len(), 1);
        let got = sel(&all, &pr, &["ntxent_*"], s).unwrap();
        assert_eq!(
            names(&got),
            [
                "ntxent_n256_d128",
                "ntxent_n1024_d128",
                "ntxent_n4096_d128",
                "ntxent_n16384_d128"
            ]
        );
        // Only this crate's kernels have the NT-Xent workloads and the probe.
        let mm = Reference::Matrixmultiply;
        let got = sel(&all, &pr, &[], mm).unwrap();
        assert!(got.probes.is_empty());
        assert!(got.workloads.iter().all(|w| w.name.starts_with("sgemm_")));
        let err = sel(&all, &pr, &["ntxent_n16384_d128"], mm).err().unwrap();
        assert!(err.to_string().contains("no 'matrixmultiply'"), "{err}");
    }

    #[test]
    fn select_rejects_unknown_names_listing_valid_ones() {
        let (all, pr) = (registry(), probes());
        let s = Reference::Selfsup;
        let err = sel(&all, &pr, &["sgemm_999"], s).err().unwrap().to_string();
        assert!(err.contains("unknown workload 'sgemm_999'"), "{err}");
        assert!(err.contains("sgemm_256, sgemm_1024"), "{err}");
        assert!(err.contains("ntxent_n16384_d128"), "{err}");
        assert!(sel(&all, &pr, &["nope*"], s).is_err());
        assert!(sel(&all, &pr, &[""], s).is_err());
    }
}
