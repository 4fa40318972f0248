//! A counting global allocator: the system allocator plus two atomic counters, the live heap
//! bytes and their high-water mark, so `selfsup bench` can report the peak heap of an
//! operation (see [`super::memory`]).
//!
//! Bytes are the sizes the program asked for (`Layout::size`), not what the system allocator
//! rounds them up to, nor the pages the kernel maps: a measure of the program's demand,
//! independent of the allocator. Thread stacks are not heap and are not counted.
//!
//! Each allocation and deallocation costs one or two relaxed atomic operations; the kernels
//! allocate nothing once warm, so timings do not see them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator with a live-bytes counter and a resettable high-water mark.
#[derive(Debug)]
pub struct PeakAlloc {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl PeakAlloc {
    /// Counters at zero.
    pub const fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Heap bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// The most bytes live at once since the last [`reset_peak`](Self::reset_peak).
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }

    /// Lowers the high-water mark to the bytes live now, and returns them.
    pub fn reset_peak(&self) -> usize {
        let live = self.live();
        self.peak.store(live, Relaxed);
        live
    }

    fn grew(&self, by: usize) {
        let now = self.live.fetch_add(by, Relaxed).wrapping_add(by);
        self.peak.fetch_max(now, Relaxed);
    }

    fn shrank(&self, by: usize) {
        self.live.fetch_sub(by, Relaxed);
    }
}

impl Default for PeakAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and returns
// its result, so `System`'s guarantees hold; the counters only observe sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (hence from `System`)
        // with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` came from this allocator (hence from `System`)
        // with `layout`, and that `new_size` is valid for its alignment.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let old = layout.size();
            if new_size >= old {
                self.grew(new_size - old);
            } else {
                self.shrank(old - new_size);
            }
        }
        p
    }
}

/// Held by the tests that read the global counters, so they do not disturb each other.
#[cfg(test)]
pub static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_bytes_and_the_high_water_mark() {
        let a = PeakAlloc::new();
        let l1 = Layout::from_size_align(1000, 8).unwrap();
        let l2 = Layout::from_size_align(500, 64).unwrap();
        // SAFETY: non-zero sizes; each pointer is freed once, with the layout (and, after
        // `realloc`, the size) it was allocated with.
        unsafe {
            let p1 = a.alloc(l1);
            let p2 = a.alloc_zeroed(l2);
            assert!(!p1.is_null() && !p2.is_null());
            assert_eq!((a.live(), a.peak()), (1500, 1500));
            a.dealloc(p1, l1);
            assert_eq!((a.live(), a.peak()), (500, 1500));
            assert_eq!(a.reset_peak(), 500);
            assert_eq!(a.peak(), 500);
            let p2 = a.realloc(p2, l2, 3000);
            assert!(!p2.is_null());
            assert_eq!((a.live(), a.peak()), (3000, 3000));
            let p2 = a.realloc(p2, Layout::from_size_align(3000, 64).unwrap(), 100);
            assert_eq!((a.live(), a.peak()), (100, 3000));
            a.dealloc(p2, Layout::from_size_align(100, 64).unwrap());
            assert_eq!((a.live(), a.peak()), (0, 3000));
        }
    }

    #[test]
    fn the_global_allocator_is_counting() {
        // Other tests allocate concurrently, so only lower bounds hold.
        let _guard = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let global = &crate::ALLOCATOR;
        global.reset_peak();
        let v = std::hint::black_box(vec![1u8; 4 << 20]);
        assert!(global.live() >= v.len(), "live {}", global.live());
        assert!(global.peak() >= v.len(), "peak {}", global.peak());
        drop(v);
    }
}
