//! The hot loops. The only place in the crate with `unsafe` and CPU intrinsics; every public
//! function here is safe and checks its arguments before any unsafe code runs.

pub mod batchnorm;
pub mod contrastive;
pub mod conv;
pub mod dispatch;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod linear;
pub mod peak;
pub mod pool;
pub mod reduce;
pub mod reference;
pub(crate) mod simd;
pub mod skinny;
pub mod softmax;
pub mod vmath;

pub use dispatch::{isa, Isa};

/// Runs `f` on a worker thread of the current rayon pool (the global one outside any
/// pool) and returns its result; inside a pool, `f` simply runs here.
///
/// Every kernel splits its work with rayon. Called from a thread outside the pool (a
/// program's main thread, say), each parallel loop hands its work to the pool's threads
/// and the caller sleeps until they are done, while the serial parts between the loops
/// run on the caller: the activations then travel between the cores' caches at every
/// hand-over, and a one-thread pool runs the work on another thread than the caller's.
/// Measured on 2026-12-03 (2 cores): `selfsup pretrain` of ResNet-mini on 1 thread ran
/// 41 images/s with each loop handed over from the main thread and 65 to 71 with the
/// whole step on the pool (widths 8/16/32: 273 and 366). The trainers, the probe's
/// L-BFGS and [`crate::graph::Graph`]'s forward and backward therefore move their work
/// into the pool with one hand-over.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    use super::on_pool;

    #[test]
    fn on_pool_moves_outside_callers_onto_a_worker_and_runs_workers_in_place() {
        // A thread of its own: never a worker of any pool.
        let outside = std::thread::spawn(|| {
            assert_eq!(rayon::current_thread_index(), None);
            on_pool(rayon::current_thread_index)
        })
        .join()
        .unwrap();
        assert!(outside.is_some(), "the closure ran outside the pool");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (here, inside) = pool.install(|| {
            let here = std::thread::current().id();
            (here, on_pool(|| std::thread::current().id()))
        });
        assert_eq!(here, inside, "a worker's call moved to another thread");
    }
}
