//! The BLIS five-loop nest around a [`MicroKernel`] (Van Zee and van de Geijn, "BLIS: A
//! Framework for Rapidly Instantiating BLAS Functionality", 2015).
//!
//! Parallelism: the output is split into independent blocks of whole micro-panels (over M,
//! and over N when M is too short to feed every thread). For a mid-size M the B block is
//! packed by all threads together (split over micro-panels) before the rows are split; for
//! a small output, or a tall one with many rows per thread, each thread packs the B it
//! needs itself and runs the whole depth in one parallel region. The K reduction is never
//! split, every element of C sees the same sequence of operations whatever the partition,
//! and the edge tiles run the same kernel on a scratch tile, so results are bit-identical
//! for any number of threads.

use super::epilogue::Epilogue;
use super::kernel::MicroKernel;
use super::pack::{PackA, PackB};
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// The largest `MR * NR` and `NR` of any kernel (sizes of the scratch tiles).
const MAX_TILE: usize = 384;
const MAX_NR: usize = 32;
/// Problems with fewer multiply-adds than this run on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 20;
/// Outputs of at most this many elements with more than one kc block take the one-region
/// schedule: each thread packs its own B, which costs less than two fork-joins per kc block.
const SMALL_OUTPUT: usize = 1 << 16;
/// From this many rows per thread on, each thread packs the whole B block for itself: the
/// copy costs it a few percent of its multiply-adds (B is `k x nc`, its share of the work
/// `m / threads x nc x k`), less than sharing one packed block did: two fork-joins per kc
/// block, and every thread reading the half packed by the other from that core's cache
/// (2026-12-08, AMD EPYC KVM, AVX-512, 2 vCPUs: 1024^3 on 2 threads 2-4% faster than the
/// shared block, and much less hurt when the other core is busy).
const PRIVATE_B_ROWS: usize = 512;
/// B micro-panels packed per call (one parallel work item).
const B_GROUP: usize = 8;

/// One GEMM after validation: `C <- epi(alpha * A * B + beta * C)`, `m x n` with depth `k`.
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: &'a dyn PackA,
    pub b: &'a dyn PackB,
    pub epi: &'a dyn Epilogue,
    pub c: CPtr,
    pub rsc: usize,
    pub csc: usize,
    /// May split the work over the rayon pool.
    pub parallel: bool,
}

/// The output pointer, shared by the tasks that write disjoint tiles of it.
#[derive(Clone, Copy)]
pub(crate) struct CPtr(pub(crate) *mut f32);
// SAFETY: every task writes a disjoint set of C elements (distinct micro-tiles of a view
// without self-overlap), so sharing the base pointer across threads cannot race.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

impl CPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A growable buffer that hands out 64-byte-aligned slices (packed panels).
#[derive(Default)]
pub(crate) struct AlignedBuf(Vec<f32>);

impl AlignedBuf {
    fn slice(&mut self, len: usize) -> &mut [f32] {
        if self.0.len() < len + 16 {
            self.0.resize(len + 16, 0.0);
        }
        let off = self.0.as_ptr().align_offset(64);
        &mut self.0[off..off + len]
    }
}

thread_local! {
    static PACK_A: RefCell<AlignedBuf> = RefCell::default();
    static PACK_B: RefCell<AlignedBuf> = RefCell::default();
}

/// Bytes the packing buffers ([`PACK_A`], [`PACK_B`]) of `K`'s GEMMs grow to on one thread
/// at most: an A block of `MC` rows and a B block of `NC` columns, each `1.25 KC` deep.
pub(super) fn pack_bytes<K: MicroKernel>() -> usize {
    4 * (K::MC + K::NC + 32) * (K::KC + K::KC / 4)
}

/// Runs `f` on an aligned slice of `len` floats from this thread's buffer `key`; reuses the
/// buffer across calls (no allocation in steady state) and falls back to a fresh one when it
/// is already in use (a GEMM nested inside another on the same thread).
fn with_buf<R>(
    key: &'static LocalKey<RefCell<AlignedBuf>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(buf.slice(len)),
        Err(_) => f(AlignedBuf::default().slice(len)),
    })
}

/// How many output blocks to make along M and along N (in micro-panels), so that every
/// thread has work of about the same size.
fn split(mp: usize, np: usize, threads: usize, mc_panels: usize) -> (usize, usize) {
    let nb_i = mp.div_ceil(mc_panels).max(1);
    if threads <= 1 {
        return (nb_i, 1);
    }
    if nb_i >= threads {
        return ((nb_i.div_ceil(threads) * threads).min(mp), 1);
    }
    let g = gcd(nb_i, threads);
    (nb_i, (threads / g).clamp(1, np.max(1)))
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Runs the problem with kernel `K`.
///
/// # Safety
/// `p.c.add(i * p.rsc + j * p.csc)` must be valid for reads and writes for all `i < m`,
/// `j < n`, pairwise distinct, and not accessed by anyone else during the call; `p.a` and
/// `p.b` must be `m x k` and `k x n`; `K`'s CPU features must be present.
pub(crate) unsafe fn run<K: MicroKernel>(p: &Problem<'_>) {
    let (m, n, k) = (p.m, p.n, p.k);
    if m == 0 || n == 0 {
        return;
    }
    let c = p.c;
    if k == 0 || p.alpha == 0.0 {
        // SAFETY: forwarded from the caller.
        unsafe { scale_only(p, c) };
        return;
    }
    let (mr, nr) = (K::MR, K::NR);
    debug_assert!(mr * nr <= MAX_TILE && nr <= MAX_NR);
    // Below about 2 MFLOP (tens of microseconds) waking other threads costs more than it
    // saves: run on the calling thread. The tiles and their arithmetic are the same.
    let parallel = p.parallel
        && m.saturating_mul(n).saturating_mul(k) >= SEQUENTIAL_BELOW
        && rayon::current_num_threads() > 1;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let mp = m.div_ceil(mr);
    let mc_panels = K::MC / mr;

    // The depth is cut into equal blocks of at most 1.25 KC, so no pass over C is a sliver
    // (k = 288 runs as one block, not 256 + 32). Depends on k alone, never on threads.
    let kblocks = k.div_ceil(K::KC + K::KC / 4);
    let kc_step = k.div_ceil(kblocks);

    // LOOP 5: split n into blocks of nc columns (the B block lives in L3).
    for jc in (0..n).step_by(K::NC) {
        let nc = K::NC.min(n - jc);
        let np = nc.div_ceil(nr);
        let (mut nb_i, nb_j) = split(mp, np, threads, mc_panels);
        // A small output with a deep reduction, or many rows per thread: each task packs
        // its own B for every kc block.
        let private_b = (m * nc <= SMALL_OUTPUT || m >= PRIVATE_B_ROWS * threads) && kblocks > 1;
        if private_b && nb_j == 1 {
            // One task per thread keeps that packing from being repeated more than once per
            // thread (its rows still go through A in mc blocks).
            nb_i = nb_i.min(threads);
        }
        let blk = Blocking {
            jc,
            nc,
            np,
            nb_i,
            nb_j,
            mp,
            kc_step,
        };
        if nb_i == 1 || nb_j > 1 || private_b {
            // Short M, a small output with a deep reduction, or a tall one: each task owns
            // a block of the output and packs its own B for every kc block. One parallel
            // region for the whole depth, no barrier per block.
            let task = |t: usize| {
                // SAFETY: forwarded from the caller; tasks own disjoint tiles.
                unsafe { private_task::<K>(p, c, &blk, t) }
            };
            if parallel {
                (0..nb_i * nb_j).into_par_iter().for_each(task);
            } else {
                (0..nb_i * nb_j).for_each(task);
            }
            continue;
        }
        // Mid-size M: per kc block, all threads pack one shared B block, then split the rows.
        // LOOP 4: split k into blocks of kc (one packed B block per step).
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            with_buf(&PACK_B, np * kc * nr, |bbuf| {
                // Packed in groups of B_GROUP panels, each group walking B in memory order.
                let pack_b = |(g, out): (usize, &mut [f32])| {
                    let j0 = g * B_GROUP * nr;
                    p.b.pack(pc, kc, jc + j0, (B_GROUP * nr).min(nc - j0), nr, out);
                };
                if parallel {
                    bbuf.par_chunks_mut(B_GROUP * kc * nr)
                        .enumerate()
                        .for_each(pack_b);
                } else {
                    bbuf.chunks_mut(B_GROUP * kc * nr)
                        .enumerate()
                        .for_each(pack_b);
                }
                let bbuf: &[f32] = bbuf;
                let task = |t: usize| {
                    let (ip0, ip1) = blk.rows_of(t);
                    // SAFETY: forwarded from the caller; tasks own disjoint row blocks.
                    unsafe { row_blocks::<K>(p, c, &blk, pc, kc, ip0, ip1, bbuf, 0..np) };
                };
                if parallel {
                    (0..nb_i).into_par_iter().for_each(task);
                } else {
                    (0..nb_i).for_each(task);
                }
            });
        }
    }
}

/// The partition of one `nc`-column block into `nb_i x nb_j` output blocks of whole panels.
struct Blocking {
    jc: usize,
    nc: usize,
    np: usize,
    nb_i: usize,
    nb_j: usize,
    mp: usize,
    kc_step: usize,
}

impl Blocking {
    /// The A micro-panels `ip0 .. ip1` of task `t`.
    fn rows_of(&self, t: usize) -> (usize, usize) {
        let bi = t / self.nb_j;
        (bi * self.mp / self.nb_i, (bi + 1) * self.mp / self.nb_i)
    }
    /// The B micro-panels `jp0 .. jp1` (relative to `jc`) of task `t`.
    fn cols_of(&self, t: usize) -> (usize, usize) {
        let bj = t % self.nb_j;
        (bj * self.np / self.nb_j, (bj + 1) * self.np / self.nb_j)
    }
}

/// One output block that packs its own B slice, for every kc block of the depth.
///
/// # Safety
/// As [`run`]; the tiles of task `t` are touched by this call only.
unsafe fn private_task<K: MicroKernel>(p: &Problem<'_>, c: CPtr, blk: &Blocking, t: usize) {
    let (nr, k) = (K::NR, p.k);
    let (ip0, ip1) = blk.rows_of(t);
    let (jp0, jp1) = blk.cols_of(t);
    if ip0 == ip1 || jp0 == jp1 {
        return;
    }
    let j0 = jp0 * nr;
    let w = (jp1 * nr).min(blk.nc) - j0;
    with_buf(&PACK_B, (jp1 - jp0) * blk.kc_step * nr, |bbuf| {
        // LOOP 4: split k into blocks of kc.
        for pc in (0..k).step_by(blk.kc_step) {
            let kc = blk.kc_step.min(k - pc);
            let bblock = &mut bbuf[..(jp1 - jp0) * kc * nr];
            p.b.pack(pc, kc, blk.jc + j0, w, nr, bblock);
            // SAFETY: forwarded from the caller.
            unsafe { row_blocks::<K>(p, c, blk, pc, kc, ip0, ip1, bblock, jp0..jp1) };
        }
    });
}

/// LOOP 3 to LOOP 1 for A micro-panels `ip0 .. ip1` against the packed B micro-panels
/// `jps` (`bbuf` starts at panel `jps.start`).
///
/// # Safety
/// As [`run`]; the tiles `ip0..ip1 x jps` are touched by this call only.
#[allow(clippy::too_many_arguments)]
unsafe fn row_blocks<K: MicroKernel>(
    p: &Problem<'_>,
    c: CPtr,
    blk: &Blocking,
    pc: usize,
    kc: usize,
    ip0: usize,
    ip1: usize,
    bbuf: &[f32],
    jps: std::ops::Range<usize>,
) {
    let (mr, nr, m, n) = (K::MR, K::NR, p.m, p.n);
    let mc_panels = K::MC / mr;
    let beta = if pc == 0 { p.beta } else { 1.0 };
    let last = pc + kc == p.k;
    // LOOP 3: split the rows into blocks of mc (packed A in L2).
    for ic in (ip0..ip1).step_by(mc_panels) {
        let ic_end = (ic + mc_panels).min(ip1);
        with_buf(&PACK_A, (ic_end - ic) * kc * mr, |abuf| {
            let i0 = ic * mr;
            p.a.pack(i0, (ic_end * mr).min(m) - i0, pc, kc, mr, abuf);
            // LOOP 2: over the nr-column micro-panels of B (one stays in L1).
            for jp in jps.clone() {
                let j0 = blk.jc + jp * nr;
                let w = nr.min(n - j0);
                let bp = bbuf[(jp - jps.start) * kc * nr..][..kc * nr].as_ptr();
                // LOOP 1: over the mr-row micro-panels of A.
                for ip in ic..ic_end {
                    let i0 = ip * mr;
                    let h = mr.min(m - i0);
                    let ap = abuf[(ip - ic) * kc * mr..][..kc * mr].as_ptr();
                    // SAFETY: the tile (i0.., j0..) of h x w lies inside C (caller
                    // contract) and belongs to this call alone; the packed panels hold
                    // kc*mr and kc*nr aligned floats.
                    unsafe {
                        let ct = c.get().add(i0 * p.rsc + j0 * p.csc);
                        tile::<K>(kc, p.alpha, ap, bp, beta, ct, p.rsc, p.csc, h, w);
                        if last && !p.epi.is_identity() {
                            epilogue_tile(p.epi, i0, j0, h, w, ct, p.rsc, p.csc);
                        }
                    }
                }
            }
        });
    }
}

/// One `h x w` tile: the kernel directly when it is full, through a scratch tile otherwise.
///
/// # Safety
/// As [`MicroKernel::kernel`], with C valid for `h x w` only.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn tile<K: MicroKernel>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    h: usize,
    w: usize,
) {
    let (mr, nr) = (K::MR, K::NR);
    if h == mr && w == nr {
        // SAFETY: full tile, caller contract.
        unsafe { K::kernel(kc, alpha, a, b, beta, c, rsc, csc) };
        return;
    }
    // The scratch tile runs the very same kernel, so edge elements round like the others.
    let mut t = [0.0f32; MAX_TILE];
    if beta != 0.0 {
        for i in 0..h {
            for j in 0..w {
                // SAFETY: (i, j) is inside the h x w tile.
                t[i * nr + j] = unsafe { *c.add(i * rsc + j * csc) };
            }
        }
    }
    // SAFETY: `t` is a dense mr x nr tile (mr * nr <= MAX_TILE).
    unsafe { K::kernel(kc, alpha, a, b, beta, t.as_mut_ptr(), nr, 1) };
    for i in 0..h {
        for j in 0..w {
            // SAFETY: (i, j) is inside the h x w tile.
            unsafe { *c.add(i * rsc + j * csc) = t[i * nr + j] };
        }
    }
}

/// Applies the epilogue to the final `h x w` tile at `c`, one row segment at a time.
///
/// # Safety
/// The tile must be valid and exclusively owned by the caller.
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue_tile(
    epi: &dyn Epilogue,
    i0: usize,
    j0: usize,
    h: usize,
    w: usize,
    c: *mut f32,
    rsc: usize,
    csc: usize,
) {
    for i in 0..h {
        // SAFETY: forwarded from the caller.
        unsafe { epilogue_row(epi, i0 + i, j0, w, c.add(i * rsc), csc) };
    }
}

/// # Safety
/// `row.add(j * csc)` must be valid and exclusively owned for `j < w`.
unsafe fn epilogue_row(
    epi: &dyn Epilogue,
    i: usize,
    j0: usize,
    w: usize,
    row: *mut f32,
    csc: usize,
) {
    if csc == 1 {
        // SAFETY: `w` contiguous floats owned by the caller.
        let s = unsafe { std::slice::from_raw_parts_mut(row, w) };
        epi.apply(i, j0, s);
        return;
    }
    let mut t = [0.0f32; MAX_NR];
    for start in (0..w).step_by(MAX_NR) {
        let seg = &mut t[..MAX_NR.min(w - start)];
        for (j, x) in seg.iter_mut().enumerate() {
            // SAFETY: start + j < w.
            *x = unsafe { *row.add((start + j) * csc) };
        }
        epi.apply(i, j0 + start, seg);
        for (j, &x) in seg.iter().enumerate() {
            // SAFETY: start + j < w.
            unsafe { *row.add((start + j) * csc) = x };
        }
    }
}

/// `C <- epi(beta * C)` (k = 0 or alpha = 0); with beta = 0, C is written without being read.
///
/// # Safety
/// As [`run`].
unsafe fn scale_only(p: &Problem<'_>, c: CPtr) {
    let row_op = |i: usize| {
        // SAFETY: row i of C is valid and belongs to this iteration alone.
        unsafe {
            let row = c.get().add(i * p.rsc);
            for j in 0..p.n {
                let e = row.add(j * p.csc);
                *e = if p.beta == 0.0 { 0.0 } else { p.beta * *e };
            }
            if !p.epi.is_identity() {
                epilogue_row(p.epi, i, 0, p.n, row, p.csc);
            }
        }
    };
    if p.parallel && p.m.saturating_mul(p.n) >= SEQUENTIAL_BELOW / 16 {
        (0..p.m).into_par_iter().for_each(row_op);
    } else {
        (0..p.m).for_each(row_op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_balances_and_covers() {
        for threads in 1..5 {
            for mp in 1..200 {
                for np in [1usize, 2, 7, 255] {
                    let (bi, bj) = split(mp, np, threads, 24);
                    assert!(bi >= 1 && bj >= 1 && bi <= mp && bj <= np);
                    // every block is at most mc_panels tall
                    assert!(mp.div_ceil(bi) <= 24 || bi == mp);
                }
            }
        }
    }
}
