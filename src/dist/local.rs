//! `P` ranks as threads of one process: the same collectives as MPI's, through shared
//! memory, so the distributed path is testable inside `cargo test`.

use std::sync::{Arc, Condvar, Mutex};

use super::{check_all_to_all, check_gather, invalid, Collectives};
use crate::error::Result;

#[derive(Default)]
struct Slots {
    f32s: Vec<Vec<f32>>,
    f64s: Vec<Vec<f64>>,
    u64s: Vec<Vec<u64>>,
    /// Ranks that reached the current barrier, and the barrier's generation.
    arrived: usize,
    generation: u64,
    /// Ranks whose handle was dropped: a collective can no longer complete.
    left: usize,
}

struct Shared {
    size: usize,
    state: Mutex<Slots>,
    cv: Condvar,
}

/// One rank of a [`LocalGroup`]. Dropping it (the rank's thread ended, or failed) makes
/// every collective the other ranks are in, or enter later, fail instead of waiting.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGroup")
            .field("rank", &self.rank)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl LocalGroup {
    /// The `size` ranks of a new group, rank order; hand one to each thread.
    ///
    /// # Panics
    /// `size == 0`.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        assert!(size > 0, "a group has at least one rank");
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Slots {
                f32s: vec![Vec::new(); size],
                f64s: vec![Vec::new(); size],
                u64s: vec![Vec::new(); size],
                ..Slots::default()
            }),
            cv: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Runs `f` on `size` threads, each with one rank of a new group, and returns their
    /// results in rank order (a rank's panic is resumed here).
    ///
    /// # Panics
    /// `size == 0`, or a rank panicked.
    pub fn run<T: Send>(size: usize, f: impl Fn(LocalGroup) -> T + Sync) -> Vec<T> {
        let f = &f;
        std::thread::scope(|sc| {
            let ranks: Vec<_> = LocalGroup::new(size)
                .into_iter()
                .map(|c| sc.spawn(move || f(c)))
                .collect();
            ranks
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every rank arrived; fails when a rank left the group.
    fn barrier<'a>(
        &'a self,
        mut g: std::sync::MutexGuard<'a, Slots>,
    ) -> Result<std::sync::MutexGuard<'a, Slots>> {
        if g.left > 0 {
            return Err(invalid(format!(
                "rank {}: another rank left the group",
                self.rank
            )));
        }
        let generation = g.generation;
        g.arrived += 1;
        if g.arrived == self.shared.size {
            g.arrived = 0;
            g.generation += 1;
            self.shared.cv.notify_all();
            return Ok(g);
        }
        while g.generation == generation {
            if g.left > 0 {
                return Err(invalid(format!(
                    "rank {}: another rank left the group during a collective",
                    self.rank
                )));
            }
            g = self
                .shared
                .cv
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(g)
    }

    /// Writes this rank's part with `put`, waits for all, reads with `get`, waits again
    /// (so that no rank overwrites a part another is still reading).
    fn exchange(
        &self,
        put: impl FnOnce(&mut Slots),
        get: impl FnOnce(&Slots) -> Result<()>,
    ) -> Result<()> {
        let mut g = self.lock();
        put(&mut g);
        let g = self.barrier(g)?;
        let r = get(&g);
        let g = self.barrier(g)?;
        drop(g);
        r
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let mut g = self.lock();
        g.left += 1;
        self.shared.cv.notify_all();
    }
}

fn put<T: Copy>(slot: &mut Vec<T>, v: &[T]) {
    slot.clear();
    slot.extend_from_slice(v);
}

fn gather<T: Copy>(slots: &[Vec<T>], recv: &mut [T]) -> Result<()> {
    let n = slots[0].len();
    for (s, out) in slots.iter().zip(recv.chunks_mut(n.max(1))) {
        if s.len() != n {
            return Err(invalid(format!(
                "all-gather: ranks sent {} and {} values",
                n,
                s.len()
            )));
        }
        out.copy_from_slice(s);
    }
    Ok(())
}

impl Collectives for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.exchange(
            |s| put(&mut s.f32s[self.rank], send),
            |s| gather(&s.f32s, recv),
        )
    }
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.exchange(
            |s| put(&mut s.f64s[self.rank], send),
            |s| gather(&s.f64s, recv),
        )
    }
    fn all_gather_u64(&self, send: &[u64], recv: &mut [u64]) -> Result<()> {
        check_gather(self.size(), send.len(), recv.len())?;
        self.exchange(
            |s| put(&mut s.u64s[self.rank], send),
            |s| gather(&s.u64s, recv),
        )
    }
    fn all_to_all_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let p = self.size();
        check_all_to_all(p, send.len(), recv.len())?;
        let b = send.len() / p;
        self.exchange(
            |s| put(&mut s.f32s[self.rank], send),
            |s| {
                for (q, out) in recv.chunks_mut(b.max(1)).enumerate().take(p) {
                    let from = &s.f32s[q];
                    if from.len() != send.len() {
                        return Err(invalid(format!(
                            "all-to-all: ranks sent {} and {} values",
                            send.len(),
                            from.len()
                        )));
                    }
                    out.copy_from_slice(&from[self.rank * b..(self.rank + 1) * b]);
                }
                Ok(())
            },
        )
    }
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        if self.rank == 0 {
            return self.exchange(|s| put(&mut s.f32s[0], buf), |_| Ok(()));
        }
        let n = buf.len();
        self.exchange(
            |_| {},
            |s| {
                if s.f32s[0].len() != n {
                    return Err(invalid(format!(
                        "broadcast of {} values into {n}",
                        s.f32s[0].len()
                    )));
                }
                buf.copy_from_slice(&s.f32s[0]);
                Ok(())
            },
        )
    }

    fn ranks_share_the_pool(&self) -> bool {
        self.shared.size > 1
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    #[test]
    fn all_reduce_sums_in_rank_order_on_every_rank() {
        for p in 1..=4 {
            for len in [0, 1, 5, 7, 64] {
                let out = LocalGroup::run(p, |c| {
                    let r = c.rank() as f32;
                    let mut v: Vec<f32> = (0..len).map(|i| r * 0.1 + i as f32).collect();
                    let mut s = Scratch::default();
                    all_reduce_sum(&c, &mut v, &mut s).unwrap();
                    v
                });
                let want: Vec<f32> = (0..len)
                    .map(|i| (0..p).fold(0.0f32, |a, r| a + (r as f32 * 0.1 + i as f32)))
                    .collect();
                for o in &out {
                    assert_eq!(o, &want, "p = {p}, len = {len}");
                }
            }
        }
    }

    #[test]
    fn reduce_scatter_rows_is_the_adjoint_of_all_gather() {
        let p = 3;
        let out = LocalGroup::run(p, |c| {
            let r = c.rank();
            // Each rank has a gradient for all 3 x 2 rows: value = 100 * from + row.
            let full: Vec<f32> = (0..6).map(|i| (100 * r + i) as f32).collect();
            let mut mine = vec![0.0; 2];
            reduce_scatter_rows(&c, &full, &mut mine, &mut Scratch::default()).unwrap();
            mine
        });
        for (r, m) in out.iter().enumerate() {
            let want: Vec<f32> = (0..2)
                .map(|k| (0..p).map(|q| (100 * q + 2 * r + k) as f32).sum())
                .collect();
            assert_eq!(m, &want);
        }
    }

    #[test]
    fn gathers_broadcasts_and_config_checks() {
        let out = LocalGroup::run(3, |c| {
            let r = c.rank();
            let mut all = vec![0.0f32; 6];
            c.all_gather_f32(&[r as f32, 10.0], &mut all).unwrap();
            let mut b = vec![r as f32; 2];
            c.broadcast_f32(&mut b).unwrap();
            let same = check_same_config(&c, "configuration", "a").is_ok();
            let text = if r == 2 { "b" } else { "a" };
            let diff = check_same_config(&c, "configuration", text).unwrap_err();
            (all, b, same, diff.to_string())
        });
        for (all, b, same, diff) in out {
            assert_eq!(all, [0.0, 10.0, 1.0, 10.0, 2.0, 10.0]);
            assert_eq!(b, [0.0, 0.0]);
            assert!(same);
            assert!(diff.contains("rank(s) 2 differs"), "{diff}");
        }
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_instead_of_hanging() {
        let out = LocalGroup::run(2, |c| {
            if c.rank() == 1 {
                return Ok(());
            }
            let mut all = vec![0.0; 2];
            c.all_gather_f32(&[1.0], &mut all)
        });
        assert!(out[0].is_err());
    }
}
