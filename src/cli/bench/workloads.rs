//! The registry of `selfsup bench`'s workloads: every workload the command knows, in order,
//! in one place.
//!
//! A [`Workload`] is a name, the work one operation does (FLOPs or images, from which the
//! reported rate follows) and a setup closure that allocates and fills the inputs (untimed)
//! and returns a [`Runnable`](super::workload::Runnable) that runs the operation once per
//! call. The workloads are defined by family (`sgemm`, `conv`, `ntxent`, `models`); adding
//! one (convolution, NT-Xent, a SimCLR step) means adding one entry to [`registry`]; the
//! timing, the table, the JSON and the baseline comparison need no change.
//!
//! Names and figures follow docs/performance.md, so the JSON can be compared side by side
//! with the reference scripts there.

use super::conv::{conv_workload, CONV_BATCH, CONV_LAYERS};
use super::models::{
    augment_workload, embed96_workload, embed_workload, quickthought_workload,
    simclr_step96_workload, simclr_step_workload, AUGMENT_IMAGES, EMBED96_IMAGES, EMBED_IMAGES,
    QT_SENTENCES, SIMCLR96_IMAGES, SIMCLR_IMAGES,
};
use super::ntxent::{ntxent_workload, NTXENT_D, NTXENT_SIZES, NTXENT_TAU};
use super::sgemm::{sgemm_workload, SGEMM_SHAPES};
use super::workload::Workload;

/// Every workload, in the order they run and are reported.
pub fn registry() -> Vec<Workload> {
    let mut all: Vec<Workload> = SGEMM_SHAPES.iter().map(|&s| sgemm_workload(s)).collect();
    all.extend(
        CONV_LAYERS
            .iter()
            .map(|&(name, hw, c)| conv_workload(name, CONV_BATCH, hw, c)),
    );
    all.extend(
        NTXENT_SIZES
            .iter()
            .map(|&(name, n)| ntxent_workload(name, n, NTXENT_D, NTXENT_TAU)),
    );
    all.push(simclr_step_workload(SIMCLR_IMAGES));
    all.push(simclr_step96_workload(SIMCLR96_IMAGES));
    all.push(embed_workload(EMBED_IMAGES));
    all.push(embed96_workload(EMBED96_IMAGES));
    all.push(augment_workload(AUGMENT_IMAGES));
    all.push(quickthought_workload(QT_SENTENCES));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_shapes_positive() {
        let all = registry();
        let mut names: Vec<_> = all.iter().map(|w| w.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for s in SGEMM_SHAPES {
            assert!(s.m > 0 && s.n > 0 && s.k > 0, "{}", s.name);
        }
    }
}
