//! The kernels' thread count: the global rayon pool, sized once per process from a
//! command's `--threads` (the results are the same bits for any count).

/// Sets the kernels' thread count, when given.
pub fn set_threads(threads: Option<u64>) {
    if let Some(t) = threads {
        // An already-built pool (a second command in one process, tests) keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t as usize)
            .build_global();
    }
}
