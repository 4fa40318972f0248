//! The MPI process group (cargo feature `mpi`): the ranks `mpirun` started, through Open
//! MPI's collectives (the `mpi` crate). Only its gathers, all-to-alls and broadcasts are
//! used; every sum is done by [`super::all_reduce_sum`] in rank order.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use mpi::Threading;

use super::{check_all_to_all, check_gather, invalid, Collectives};
use crate::error::Result;

/// MPI's state in this process: 0 never initialized, 1 initialized, 2 finalized.
static STATE: AtomicU8 = AtomicU8::new(0);
/// The job's number of processes, once initialized.
static JOB_SIZE: AtomicUsize = AtomicUsize::new(0);
/// This process's rank, once initialized.
static RANK: AtomicUsize = AtomicUsize::new(0);

/// The world of an MPI job. MPI stays initialized when it is dropped: the program ends
/// its MPI use with [`finalize`] after success, or [`abort_job`] after an error (a rank
/// that finalizes while the others wait in a collective would hang the job).
pub struct MpiComm {
    world: SimpleCommunicator,
}

// SAFETY: MPI is initialized with `Threading::Serialized` (checked in `MpiComm::init`), so
// its calls may come from any thread as long as no two run at once; a `MpiComm` is used
// through `&self` by one owner at a time (it is `Send`, not `Sync`).
unsafe impl Send for MpiComm {}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish()
    }
}

impl MpiComm {
    /// Initializes MPI (once per process) and installs a panic hook that aborts the whole
    /// job, so a panicking rank ends the job instead of leaving the others in a collective.
    /// A program started without `mpirun` is a group of one.
    ///
    /// # Errors
    /// MPI already initialized, or without the thread support the trainer needs.
    pub fn init() -> Result<Self> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| invalid("MPI was already initialized in this process".into()))?;
        if level < Threading::Serialized {
            return Err(invalid(format!(
                "the MPI library offers thread level {level:?}, the trainer needs Serialized"
            )));
        }
        let world = universe.world();
        // Finalized by `finalize`, not by dropping the universe (see the type's docs).
        std::mem::forget(universe);
        STATE.store(1, Ordering::SeqCst);
        JOB_SIZE.store(world.size().max(1) as usize, Ordering::SeqCst);
        RANK.store(world.rank().max(0) as usize, Ordering::SeqCst);
        if world.size() > 1 {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                // SAFETY: MPI is initialized (this hook is installed after it) and
                // MPI_Abort may be called from any thread; it does not return.
                unsafe {
                    mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
                }
            }));
        }
        Ok(Self { world })
    }

    /// Another handle on the same ranks, with its own message space (`MPI_Comm_dup`; a
    /// collective: every rank calls it at the same point), for a second trainer.
    pub fn duplicate(&self) -> Self {
        Self {
            world: self.world.duplicate(),
        }
    }

    /// Ends every rank of the job with `code` (what a failing rank does instead of
    /// returning: the others may be waiting in a collective).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collectives for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.world.all_gather_into(send, recv);
        Ok(())
    }
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.world.all_gather_into(send, recv);
        Ok(())
    }
    fn all_gather_u64(&self, send: &[u64], recv: &mut [u64]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.world.all_gather_into(send, recv);
        Ok(())
    }
    fn all_to_all_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_all_to_all(self.size(), send.len(), recv.len())?;
        self.world.all_to_all_into(send, recv);
        Ok(())
    }
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }
}

/// Finalizes MPI if this process initialized it (call once, at the successful end of the
/// program, after every collective).
pub fn finalize() {
    if STATE
        .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        // SAFETY: MPI was initialized by `MpiComm::init` and is finalized once (the state
        // moved from 1 to 2 here); no communication is pending at the program's end.
        unsafe {
            mpi::ffi::MPI_Finalize();
        }
    }
}

/// Ends every rank of a job of several processes with `code`; does nothing when MPI is not
/// initialized or the job is one process (the caller then exits normally). A rank other
/// than 0 waits a second first: when rank 0 fails at the same point, its message (usually
/// the one that names the cause) is printed before the job is killed.
pub fn abort_job(code: i32) {
    if STATE.load(Ordering::SeqCst) == 1 && JOB_SIZE.load(Ordering::SeqCst) > 1 {
        if RANK.load(Ordering::SeqCst) != 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        // SAFETY: MPI is initialized and not finalized; MPI_Abort does not return.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
    }
    finalize();
}
