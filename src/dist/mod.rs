//! Data-parallel training across processes: the collective operations a training step
//! needs, behind one trait, and the deterministic reductions built on them.
//!
//! - [`Collectives`] is what the trainer and the graph ask of the process group: its rank
//!   and size, an all-gather, an all-to-all and a broadcast from rank 0. [`SingleProcess`]
//!   is the group of one (every default run); [`LocalGroup`] runs `P` ranks as threads of
//!   one process (the in-process tests); with the cargo feature `mpi`, `dist::mpi::MpiComm`
//!   is a group of MPI processes started by `mpirun`.
//! - Sums across ranks never use the transport's own reduction, whose order is up to the
//!   library: [`all_reduce_sum`] is a reduce-scatter (an all-to-all, then each rank adds its
//!   chunk's `P` parts in rank order) followed by an all-gather of the chunks, so the result
//!   is the same bits on every rank and in every run with the same `P`. It moves
//!   `2 (P - 1) / P` of the buffer per rank, as a ring all-reduce does.
//! - [`reduce_scatter_rows`] sums the gradient of gathered rows back to the rank that owns
//!   each row (the backward of an all-gather: what SimCLR's global negatives need).

use crate::error::{Error, Result};

/// A group of `size()` processes (ranks) that run the same program on their own part of
/// every batch. Every method is a collective: all ranks call it in the same order with the
/// same lengths, or the job fails (MPI) or waits (threads).
pub trait Collectives: Send {
    /// This process's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// `recv` (`size() * send.len()`) = every rank's `send`, in rank order.
    ///
    /// # Errors
    /// `recv` of another length; a failed transport.
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// As [`Collectives::all_gather_f32`] for `f64`.
    ///
    /// # Errors
    /// As [`Collectives::all_gather_f32`].
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()>;
    /// As [`Collectives::all_gather_f32`] for `u64`.
    ///
    /// # Errors
    /// As [`Collectives::all_gather_f32`].
    fn all_gather_u64(&self, send: &[u64], recv: &mut [u64]) -> Result<()>;
    /// `send` is `size()` equal blocks, block `q` for rank `q`; `recv` (as long) receives
    /// block `rank()` of every rank, in rank order.
    ///
    /// # Errors
    /// Lengths that are not `size()` equal blocks; a failed transport.
    fn all_to_all_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Rank 0's `buf` into every rank's `buf` (same length on all ranks).
    ///
    /// # Errors
    /// A failed transport.
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Whether other ranks of the group are threads of this process (false by default).
    /// Such a rank must not wait for its peers on a thread of the shared rayon pool: with
    /// more ranks than pool threads, a rank waiting there would hold a thread that a peer
    /// needs to arrive. The trainers keep such a rank's step on its own thread.
    fn ranks_share_the_pool(&self) -> bool {
        false
    }
}

pub(crate) fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: "dist", msg }
}

fn check_gather(size: usize, send: usize, recv: usize) -> Result<()> {
    if send.checked_mul(size) != Some(recv) {
        return Err(invalid(format!(
            "all-gather of {send} values from {size} ranks into {recv}"
        )));
    }
    Ok(())
}

fn check_all_to_all(size: usize, send: usize, recv: usize) -> Result<()> {
    if send != recv || !send.is_multiple_of(size.max(1)) {
        return Err(invalid(format!(
            "all-to-all of {send} values into {recv} over {size} ranks: needs equal lengths \
             of {size} equal blocks"
        )));
    }
    Ok(())
}

/// The group of one process: gathers copy, broadcasts do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collectives for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(1, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        check_gather(1, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_u64(&self, send: &[u64], recv: &mut [u64]) -> Result<()> {
        check_gather(1, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_to_all_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_all_to_all(1, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

mod local;
pub use local::LocalGroup;

#[cfg(feature = "mpi")]
pub mod mpi;

/// Reusable buffers of the deterministic reductions: sized on first use, so steps after the
/// first allocate nothing.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    send: Vec<f32>,
    recv: Vec<f32>,
    chunk: Vec<f32>,
    f64s: Vec<f64>,
}

fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// Sums `buf` element-wise over all ranks, in place, in rank order: every rank ends with
/// the same bits, and the same `P` gives the same bits in every run.
///
/// # Errors
/// A failed transport.
pub fn all_reduce_sum(comm: &dyn Collectives, buf: &mut [f32], s: &mut Scratch) -> Result<()> {
    let p = comm.size();
    if p == 1 || buf.is_empty() {
        return Ok(());
    }
    let chunk = buf.len().div_ceil(p);
    let send = fit(&mut s.send, p * chunk);
    send[..buf.len()].copy_from_slice(buf);
    send[buf.len()..].fill(0.0);
    let recv = fit(&mut s.recv, p * chunk);
    comm.all_to_all_f32(send, recv)?;
    let mine = fit(&mut s.chunk, chunk);
    sum_blocks(recv, mine);
    let out = fit(&mut s.send, p * chunk);
    comm.all_gather_f32(mine, out)?;
    buf.copy_from_slice(&out[..buf.len()]);
    Ok(())
}

/// `out` = the sum of the `blocks.len() / out.len()` consecutive blocks of `blocks`, added
/// in block order (rank order, when the blocks are every rank's).
fn sum_blocks<T: Copy + std::ops::AddAssign>(blocks: &[T], out: &mut [T]) {
    let n = out.len();
    out.copy_from_slice(&blocks[..n]);
    for b in blocks[n..].chunks_exact(n) {
        for (o, &v) in out.iter_mut().zip(b) {
            *o += v;
        }
    }
}

/// The backward of an all-gather of equal row blocks: `full` holds a value for every rank's
/// rows (`size() * mine.len()`), and `mine` receives the sum over all ranks of the block
/// this rank owns, added in rank order.
///
/// # Errors
/// `full` of another length than `size() * mine.len()`; a failed transport.
pub fn reduce_scatter_rows(
    comm: &dyn Collectives,
    full: &[f32],
    mine: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    let p = comm.size();
    check_gather(p, mine.len(), full.len())?;
    if p == 1 {
        mine.copy_from_slice(full);
        return Ok(());
    }
    let recv = fit(&mut s.recv, full.len());
    comm.all_to_all_f32(full, recv)?;
    sum_blocks(recv, mine);
    Ok(())
}

/// Sums small `f64` vectors (statistics, losses, counts) over all ranks in rank order.
///
/// # Errors
/// A failed transport.
pub fn all_reduce_sum_f64(comm: &dyn Collectives, buf: &mut [f64], s: &mut Scratch) -> Result<()> {
    let p = comm.size();
    if p == 1 || buf.is_empty() {
        return Ok(());
    }
    let all = gather_f64(comm, buf, s)?;
    sum_blocks(all, buf);
    Ok(())
}

/// Every rank's `f64` values (`size() * send.len()`, rank order) into `s`'s buffer.
///
/// # Errors
/// A failed transport.
pub fn gather_f64<'s>(
    comm: &dyn Collectives,
    send: &[f64],
    s: &'s mut Scratch,
) -> Result<&'s [f64]> {
    let all = fit(&mut s.f64s, comm.size() * send.len());
    comm.all_gather_f64(send, all)?;
    Ok(all)
}

/// A stable 64-bit hash (FNV-1a) of a configuration's text, the same on every machine.
pub fn config_hash(text: &str) -> u64 {
    content_hash([text.as_bytes()])
}

/// A stable 64-bit hash (FNV-1a) of the concatenation of `parts` (a sample of a data
/// set's bytes, for example), the same on every machine.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts
        .into_iter()
        .flatten()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Checks that every rank runs the same configuration: all ranks gather every rank's
/// [`config_hash`] and take the same branch, so a mismatch fails on every rank with the
/// same message (no rank is left waiting in a collective).
///
/// # Errors
/// [`Error::RanksDiffer`] naming the ranks whose configuration differs from rank 0's.
pub fn check_same_config(comm: &dyn Collectives, what: &str, text: &str) -> Result<()> {
    let p = comm.size();
    if p == 1 {
        return Ok(());
    }
    let mut all = vec![0u64; p];
    comm.all_gather_u64(&[config_hash(text)], &mut all)?;
    let differ: Vec<String> = (1..p)
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::RanksDiffer {
        msg: format!(
            "the {what} of rank(s) {} differs from rank 0's (every rank of a job must be \
             started with the same arguments and data)",
            differ.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_reductions_are_identity() {
        let c = SingleProcess;
        let mut s = Scratch::default();
        let mut v = vec![1.0, 2.0, 3.0];
        all_reduce_sum(&c, &mut v, &mut s).unwrap();
        assert_eq!(v, [1.0, 2.0, 3.0]);
        let mut mine = vec![0.0; 3];
        reduce_scatter_rows(&c, &v, &mut mine, &mut s).unwrap();
        assert_eq!(mine, v);
        assert!(check_same_config(&c, "x", "y").is_ok());
    }

    #[test]
    fn config_hash_is_fnv1a() {
        // FNV-1a test vectors (Fowler, Noll, Vo).
        assert_eq!(config_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(config_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(config_hash("foobar"), 0x8594_4171_f739_67e8);
    }
}
