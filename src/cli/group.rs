//! The process group of a command: one process, or the ranks of an `mpirun` job (feature
//! `mpi`). A binary built without MPI refuses to run under `mpirun -n P` with `P > 1`
//! rather than start `P` independent runs into the same folder.

use anyhow::{bail, Result};
use selfsup::dist::{Collectives, SingleProcess};

/// How many processes the launcher started, from the variables Open MPI (and MPICH's
/// Hydra, PMI) set for each rank; `None` when not started by a launcher.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// For the commands that run as one process: an error when started by `mpirun` as one of
/// several.
pub(super) fn single_process(what: &str) -> Result<()> {
    if let Some(n) = launched_size().filter(|&n| n > 1) {
        bail!(
            "{what} runs as one process (started as one of {n}): run `selfsup pretrain` \
             under mpirun"
        );
    }
    Ok(())
}

/// `" over P processes"` for a run's closing line, empty for one process.
pub(super) fn over_processes(ranks: usize) -> String {
    if ranks > 1 {
        format!(" over {ranks} processes")
    } else {
        String::new()
    }
}

/// The group this process belongs to: MPI's world when started by `mpirun` (and built
/// with the `mpi` feature), else a group of one.
pub(super) fn process_group() -> Result<Box<dyn Collectives>> {
    let launched = launched_size();
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        return Ok(Box::new(selfsup::dist::mpi::MpiComm::init()?));
    }
    if let Some(n) = launched.filter(|&n| n > 1) {
        bail!(
            "started by mpirun as one of {n} processes, but this selfsup was built without MPI: \
             build it with `cargo build --release --features mpi` (needs openmpi-bin, \
             libopenmpi-dev and libclang-dev)"
        );
    }
    Ok(Box::new(SingleProcess))
}

/// Ends the program's MPI use: finalizes when every rank gets here in step (`in_step`:
/// after success, or after an error every rank met at the same point); else, in a job of
/// several processes, aborts the whole job with status 2 (the other ranks may be waiting
/// in a collective and would never return). Without MPI, nothing.
pub fn end(in_step: bool) {
    #[cfg(feature = "mpi")]
    {
        if in_step {
            selfsup::dist::mpi::finalize();
        } else {
            selfsup::dist::mpi::abort_job(2);
        }
    }
    let _ = in_step;
}
