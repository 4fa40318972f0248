//! Batches in training order, prepared ahead on a worker thread.
//!
//! - [`EpochSampler`] maps a global step to its epoch and the dataset indices of its batch:
//!   every epoch is a fresh permutation of the indices drawn from `(seed, epoch)` alone, cut
//!   into `n / batch` full batches (the tail that does not fill a batch is left for that
//!   epoch, as `drop_last = true`). A run resumed at step `s` sees exactly the batches the
//!   uninterrupted run saw from step `s` on. [`EpochSampler::sharded`] gives each of
//!   `ranks` processes a disjoint part of every global batch.
//! - [`Loader`] runs a fill function for steps `start, start + 1, ...` on one worker thread
//!   (which may itself use the rayon pool to fill a batch in parallel), `depth` batches ahead
//!   of the trainer, into buffers the trainer hands back with [`Loader::recycle`]: once
//!   warm, no batch is allocated. Dropping the loader stops and joins the worker.
//!
//! What a batch holds depends only on its step, never on timing or thread counts, so the
//! prefetching changes speed, not results.

use super::{fmt_err, DataError};
use crate::rng::{mix, permutation};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// The order in which a dataset of `n` items is visited in batches of `batch`.
#[derive(Clone, Debug)]
pub struct EpochSampler {
    n: usize,
    batch: usize,
    seed: u64,
    /// This process's part of each global batch: `rank` of `ranks`.
    rank: usize,
    ranks: usize,
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochSampler {
    /// Batches of `batch` of the `n` items, shuffled per epoch from `seed`.
    ///
    /// # Errors
    /// `batch == 0` or `batch > n`.
    pub fn new(n: usize, batch: usize, seed: u64) -> Result<Self, String> {
        Self::sharded(n, batch, seed, 0, 1)
    }

    /// Global batches of `batch` items of which this process takes the `rank`-th of `ranks`
    /// equal parts (`batch` a multiple of `ranks`): across all ranks every item of an epoch's
    /// full batches is visited exactly once.
    ///
    /// # Errors
    /// `batch == 0`, `batch > n`, `ranks == 0`, `rank >= ranks` or `batch % ranks != 0`.
    pub fn sharded(
        n: usize,
        batch: usize,
        seed: u64,
        rank: usize,
        ranks: usize,
    ) -> Result<Self, String> {
        if batch == 0 {
            return Err("the batch size must be at least 1".into());
        }
        if batch > n {
            return Err(format!(
                "the batch size {batch} is larger than the dataset ({n} items)"
            ));
        }
        if ranks == 0 || rank >= ranks {
            return Err(format!("rank {rank} of {ranks} processes"));
        }
        if !batch.is_multiple_of(ranks) {
            return Err(format!(
                "the batch size {batch} does not split evenly over {ranks} processes"
            ));
        }
        Ok(Self {
            n,
            batch,
            seed,
            rank,
            ranks,
            cached: None,
        })
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.n / self.batch) as u64
    }

    /// Items per batch of this process (`batch / ranks`).
    pub fn local_batch(&self) -> usize {
        self.batch / self.ranks
    }

    /// The epoch of a global step.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch()
    }

    /// The dataset indices of this process's part of the batch of `step`, and its epoch.
    pub fn batch_of(&mut self, step: u64) -> (u64, &[usize]) {
        let spe = self.steps_per_epoch();
        let (epoch, pos) = (step / spe, (step % spe) as usize);
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let order = permutation(self.n, mix(self.seed, &[0x005a_3f1e, epoch]));
            self.cached = Some((epoch, order));
        }
        let order = &self.cached.as_ref().expect("just cached").1;
        let local = self.local_batch();
        let start = pos * self.batch + self.rank * local;
        (epoch, &order[start..start + local])
    }
}

/// One prepared batch: the values (layout up to the fill function) and labels, and the step
/// and epoch it belongs to.
#[derive(Debug, Default)]
pub struct Batch {
    /// The batch's values, `data_len` long.
    pub data: Vec<f32>,
    /// The batch's labels (RotNet's rotation labels, a probe's classes), `labels_len` long.
    pub labels: Vec<u32>,
    /// The global step this batch is for.
    pub step: u64,
}

/// Prepares the batches of steps `start..end` on a worker thread, `depth` ahead.
pub struct Loader {
    ready: Option<Receiver<Result<Batch, DataError>>>,
    free: Option<SyncSender<Batch>>,
    worker: Option<JoinHandle<()>>,
    next_step: u64,
    end: u64,
}

impl Loader {
    /// The most batches a loader of `depth` holds at once: `depth` ready, one being filled
    /// and one in the trainer's hands.
    pub fn buffers(depth: usize) -> usize {
        depth.max(1) + 2
    }

    /// Starts the worker. `fill(step, batch)` writes the batch of `step` into `batch.data`
    /// (`data_len` values) and `batch.labels` (`labels_len`); an error ends the stream after
    /// it is delivered. `depth >= 1` batches are kept in flight.
    pub fn spawn<F>(
        start: u64,
        end: u64,
        depth: usize,
        data_len: usize,
        labels_len: usize,
        mut fill: F,
    ) -> Self
    where
        F: FnMut(u64, &mut Batch) -> Result<(), DataError> + Send + 'static,
    {
        let depth = depth.max(1);
        let (ready_tx, ready_rx) = sync_channel::<Result<Batch, DataError>>(depth);
        let (free_tx, free_rx) = sync_channel::<Batch>(depth + 2);
        let worker = std::thread::Builder::new()
            .name("selfsup-loader".into())
            .spawn(move || {
                for step in start..end {
                    // A recycled buffer if there is one, else a new one: a trainer that
                    // keeps its batches costs memory (bounded by `depth` in flight), never
                    // a deadlock.
                    let mut b = free_rx.try_recv().unwrap_or_else(|_| Batch {
                        data: vec![0.0; data_len],
                        labels: vec![0; labels_len],
                        step: 0,
                    });
                    b.step = step;
                    let r = fill(step, &mut b).map(|()| b);
                    let failed = r.is_err();
                    if ready_tx.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the loader thread");
        Self {
            ready: Some(ready_rx),
            free: Some(free_tx),
            worker: Some(worker),
            next_step: start,
            end,
        }
    }

    /// The next batch, in step order; `None` after the last step or after an error was
    /// delivered.
    pub fn next_batch(&mut self) -> Option<Result<Batch, DataError>> {
        if self.next_step >= self.end {
            return None;
        }
        let r = match self.ready.as_ref()?.recv() {
            Ok(r) => r,
            // The worker ended before the last step without sending an error: it panicked.
            Err(_) => Err(fmt_err(
                std::path::Path::new("<batch loader>"),
                format!("the loader thread stopped before step {}", self.next_step),
            )),
        };
        match &r {
            Ok(_) => self.next_step += 1,
            Err(_) => self.next_step = self.end,
        }
        Some(r)
    }

    /// Hands a batch's buffers back for reuse (without it, each batch is a new allocation).
    pub fn recycle(&self, b: Batch) {
        if let Some(f) = &self.free {
            // A full or closed channel only means the buffer is not needed any more.
            let _ = f.try_send(b);
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing both channels wakes the worker wherever it waits.
        self.free.take();
        self.ready.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("next_step", &self.next_step)
            .field("end", &self.end)
            .finish()
    }
}
