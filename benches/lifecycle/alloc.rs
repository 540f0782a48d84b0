//! A counting global allocator, off unless a child turns it on: live bytes and the
//! number of allocations, to explain the RSS figures per service.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

pub struct Counting;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// With `record()`, the (size, alignment) of the first `RECORDED` allocations.
const RECORDED: usize = 4096;
static RECORD: AtomicBool = AtomicBool::new(false);
static SIZES: [AtomicU64; RECORDED] = [const { AtomicU64::new(0) }; RECORDED];

/// Live heap bytes (signed: frees of memory allocated before counting began).
pub type Live = i64;

#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub live: Live,
    pub allocs: u64,
}

pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Also records each allocation's size and alignment (see [`recorded`]).
pub fn record() {
    RECORD.store(true, Ordering::SeqCst);
    enable();
}

/// (size, alignment) of allocations number `from..to` (as counted by [`snapshot`]).
pub fn recorded(from: u64, to: u64) -> Vec<(u64, u64)> {
    (from..to.min(RECORDED as u64))
        .map(|i| {
            let packed = SIZES[i as usize].load(Ordering::SeqCst);
            (packed >> 16, packed & 0xffff)
        })
        .collect()
}

fn count(size: usize, align: usize) {
    LIVE.fetch_add(size as i64, Ordering::Relaxed);
    let index = ALLOCS.fetch_add(1, Ordering::Relaxed);
    if RECORD.load(Ordering::Relaxed) && (index as usize) < RECORDED {
        SIZES[index as usize].store(((size as u64) << 16) | align as u64, Ordering::Relaxed);
    }
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        live: LIVE.load(Ordering::SeqCst),
        allocs: ALLOCS.load(Ordering::SeqCst),
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            count(layout.size(), layout.align());
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            count(new_size, layout.align());
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
