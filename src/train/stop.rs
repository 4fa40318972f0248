//! A request to stop a training run early and cleanly: a shared flag that [`crate::train::fit()`]
//! reads before each step. Once it is set, the run stops before its next step, saves a
//! checkpoint at the step it reached and returns (the command line sets it from Ctrl-C and
//! SIGTERM; a library user from any thread, a deadline, a user interface).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A stop request shared between a training run and whoever may end it: clones share one
/// flag. Setting it costs the run nothing until then (one atomic load per step).
///
/// In a data-parallel run the ranks agree on it before every step (a stop asked on any rank
/// stops all of them at the same step), so every rank's [`crate::train::FitConfig`] reads
/// its own signal, set on one rank or on all.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal that has not been given.
    pub fn new() -> Self {
        Self::default()
    }

    /// The signal over an existing flag (an OS signal handler's, for example
    /// `signal_hook::flag::register(SIGINT, flag)`): the run stops once `flag` is true.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// The shared flag (true: stop).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// Asks the run to stop before its next step. Safe to call from any thread, any number
    /// of times.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignal;

    #[test]
    fn clones_share_the_flag() {
        let s = StopSignal::new();
        let c = s.clone();
        assert!(!c.is_stopped());
        s.stop();
        assert!(c.is_stopped());
        let f = StopSignal::from_flag(c.flag());
        assert!(f.is_stopped());
    }
}
