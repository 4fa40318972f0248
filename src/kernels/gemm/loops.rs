//! The BLIS five-loop nest around a [`MicroKernel`] (Van Zee and van de Geijn, "BLIS: A
//! Framework for Rapidly Instantiating BLAS Functionality", 2015).
//!
//! Parallelism: the B block is packed by all threads (split over micro-panels), then the
//! output is split into independent blocks of whole micro-panels (over M, and over N when M
//! is too short to feed every thread). The K reduction is never split, every element of C
//! sees the same sequence of operations whatever the partition, and the edge tiles run the
//! same kernel on a scratch tile, so results are bit-identical for any number of threads.

use super::epilogue::Epilogue;
use super::kernel::MicroKernel;
use super::pack::{PackA, PackB};
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// The largest `MR * NR` and `NR` of any kernel (sizes of the scratch tiles).
const MAX_TILE: usize = 128;
const MAX_NR: usize = 32;
/// Problems with fewer multiply-adds than this run on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 20;
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
    let parallel = m.saturating_mul(n).saturating_mul(k) >= SEQUENTIAL_BELOW
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
        // LOOP 4: split k into blocks of kc (one packed B block per step).
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            let beta = if pc == 0 { p.beta } else { 1.0 };
            let last = pc + kc == k;
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
                let (nb_i, nb_j) = split(mp, np, threads, mc_panels);
                let task = |t: usize| {
                    let (bi, bj) = (t / nb_j, t % nb_j);
                    let (ip0, ip1) = (bi * mp / nb_i, (bi + 1) * mp / nb_i);
                    let (jp0, jp1) = (bj * np / nb_j, (bj + 1) * np / nb_j);
                    // LOOP 3: split this block's rows into blocks of mc (packed A in L2).
                    for ic in (ip0..ip1).step_by(mc_panels) {
                        let ic_end = (ic + mc_panels).min(ip1);
                        with_buf(&PACK_A, (ic_end - ic) * kc * mr, |abuf| {
                            let i0 = ic * mr;
                            p.a.pack(i0, (ic_end * mr).min(m) - i0, pc, kc, mr, abuf);
                            // LOOP 2: over the nr-column micro-panels of B (one stays in L1).
                            for jp in jp0..jp1 {
                                let j0 = jc + jp * nr;
                                let w = nr.min(n - j0);
                                let bp = bbuf[jp * kc * nr..][..kc * nr].as_ptr();
                                // LOOP 1: over the mr-row micro-panels of A.
                                for ip in ic..ic_end {
                                    let i0 = ip * mr;
                                    let h = mr.min(m - i0);
                                    let ap = abuf[(ip - ic) * kc * mr..][..kc * mr].as_ptr();
                                    // SAFETY: the tile (i0.., j0..) of h x w lies inside C
                                    // (caller contract) and belongs to this task alone; the
                                    // packed panels hold kc*mr and kc*nr aligned floats.
                                    unsafe {
                                        let ct = c.get().add(i0 * p.rsc + j0 * p.csc);
                                        tile::<K>(
                                            kc, p.alpha, ap, bp, beta, ct, p.rsc, p.csc, h, w,
                                        );
                                        if last && !p.epi.is_identity() {
                                            epilogue_tile(p.epi, i0, j0, h, w, ct, p.rsc, p.csc);
                                        }
                                    }
                                }
                            }
                        });
                    }
                };
                if parallel {
                    (0..nb_i * nb_j).into_par_iter().for_each(task);
                } else {
                    (0..nb_i * nb_j).for_each(task);
                }
            });
        }
    }
}

/// One `h x w` tile: the kernel directly when it is full, through a scratch tile otherwise.
///
/// # Safety
/// As [`MicroKernel::kernel`], with C valid for `h x w` only.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile<K: MicroKernel>(
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
    (0..p.m).into_par_iter().for_each(|i| {
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
    });
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
