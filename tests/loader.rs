//! The epoch sampler and the prefetching loader.

use selfsup::data::loader::{Batch, EpochSampler, Loader};
use selfsup::data::DataError;
use std::collections::HashSet;

#[test]
fn each_epoch_visits_every_full_batch_item_once() {
    let (n, batch) = (103, 10);
    let mut s = EpochSampler::new(n, batch, 7).unwrap();
    assert_eq!(s.steps_per_epoch(), 10);
    for epoch in 0..3u64 {
        let mut seen = HashSet::new();
        for k in 0..10 {
            let (e, idx) = s.batch_of(epoch * 10 + k);
            assert_eq!(e, epoch);
            assert_eq!(idx.len(), batch);
            for &i in idx {
                assert!(i < n);
                assert!(seen.insert(i), "index {i} twice in epoch {epoch}");
            }
        }
        assert_eq!(seen.len(), 100);
    }
    // Epochs are shuffled differently.
    let a = s.batch_of(0).1.to_vec();
    let b = s.batch_of(10).1.to_vec();
    assert_ne!(a, b);
}

#[test]
fn a_step_s_batch_depends_only_on_seed_and_step() {
    let mut a = EpochSampler::new(50, 8, 1).unwrap();
    let mut b = EpochSampler::new(50, 8, 1).unwrap();
    // b jumps straight to step 13 (as a resumed run does); a walks there.
    for s in 0..13 {
        a.batch_of(s);
    }
    assert_eq!(a.batch_of(13).1, b.batch_of(13).1);
    let mut c = EpochSampler::new(50, 8, 2).unwrap();
    assert_ne!(a.batch_of(13).1, c.batch_of(13).1);
}

#[test]
fn shards_partition_the_global_batch() {
    let (n, batch, ranks) = (64, 12, 3);
    let mut whole = EpochSampler::new(n, batch, 5).unwrap();
    let mut shards: Vec<_> = (0..ranks)
        .map(|r| EpochSampler::sharded(n, batch, 5, r, ranks).unwrap())
        .collect();
    for step in 0..12 {
        let mut joined = Vec::new();
        for s in &mut shards {
            let (_, idx) = s.batch_of(step);
            assert_eq!(idx.len(), batch / ranks);
            joined.extend_from_slice(idx);
        }
        assert_eq!(joined, whole.batch_of(step).1);
    }
}

#[test]
fn sampler_rejects_bad_sizes() {
    assert!(EpochSampler::new(10, 0, 0).is_err());
    assert!(EpochSampler::new(10, 11, 0).is_err());
    assert!(EpochSampler::sharded(10, 4, 0, 0, 3).is_err());
    assert!(EpochSampler::sharded(10, 4, 0, 2, 2).is_err());
    assert!(EpochSampler::sharded(10, 4, 0, 0, 0).is_err());
}

fn fill_with_step(step: u64, b: &mut Batch) -> Result<(), DataError> {
    b.data.iter_mut().for_each(|v| *v = step as f32);
    b.labels.iter_mut().for_each(|v| *v = step as u32 * 2);
    Ok(())
}

#[test]
fn loader_delivers_every_step_in_order_and_reuses_buffers() {
    let mut l = Loader::spawn(5, 25, 2, 16, 3, fill_with_step);
    let mut ptrs = HashSet::new();
    let mut expect = 5;
    while let Some(b) = l.next_batch() {
        let b = b.unwrap();
        assert_eq!(b.step, expect);
        assert!(b.data.iter().all(|&v| v == expect as f32));
        assert_eq!(b.labels, vec![expect as u32 * 2; 3]);
        ptrs.insert(b.data.as_ptr() as usize);
        l.recycle(b);
        expect += 1;
    }
    assert_eq!(expect, 25);
    // Recycled: a handful of buffers served twenty batches.
    assert!(ptrs.len() <= 5, "{} distinct buffers", ptrs.len());
    assert!(l.next_batch().is_none());
}

#[test]
fn loader_without_recycling_does_not_deadlock() {
    let mut l = Loader::spawn(0, 10, 1, 4, 0, fill_with_step);
    let mut kept = Vec::new();
    while let Some(b) = l.next_batch() {
        kept.push(b.unwrap());
    }
    assert_eq!(kept.len(), 10);
}

#[test]
fn loader_error_is_delivered_once_then_the_stream_ends() {
    let mut l = Loader::spawn(0, 100, 2, 4, 0, |step, b| {
        if step == 3 {
            Err(DataError::Format {
                path: "x.bin".into(),
                problem: "bad record".into(),
            })
        } else {
            fill_with_step(step, b)
        }
    });
    for s in 0..3 {
        assert_eq!(l.next_batch().unwrap().unwrap().step, s);
    }
    let e = l.next_batch().unwrap().unwrap_err();
    assert!(e.to_string().contains("x.bin: bad record"), "{e}");
    assert!(l.next_batch().is_none());
}

#[test]
fn loader_reports_a_panicking_fill_as_an_error() {
    let mut l = Loader::spawn(0, 10, 2, 4, 0, |step, b| {
        assert!(step < 2, "fill failed");
        fill_with_step(step, b)
    });
    assert!(l.next_batch().unwrap().is_ok());
    assert!(l.next_batch().unwrap().is_ok());
    let e = l.next_batch().unwrap().unwrap_err();
    assert!(e.to_string().contains("stopped before step 2"), "{e}");
}

#[test]
fn dropping_a_loader_mid_stream_stops_its_worker() {
    let mut l = Loader::spawn(0, u64::MAX, 3, 1 << 10, 0, fill_with_step);
    assert!(l.next_batch().unwrap().is_ok());
    drop(l); // joins: returns only if the worker noticed
}
