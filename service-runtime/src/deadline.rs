//! One thread of the process that ends run stops at their deadlines, where a tokio timer
//! would cost more than the stop itself.
//!
//! On a multi-thread runtime, arming a tokio timer while the worker that owns the driver
//! is parked without one (the usual state between stops) unparks it: a write to its
//! eventfd, and a worker woken to look for work, for every stop, although nearly every
//! loop returns long before its deadline (`BENCHMARKS.md`: ten times the system calls of
//! a hand-written stop). Here a stop's deadline is an entry in a list under a mutex,
//! removed when the stop ends; the thread is woken only when an entry is due earlier than
//! the time it sleeps until, so a steady stream of stops with one timeout wakes it about
//! once per timeout. Outside any tokio runtime there is no timer at all, and the list
//! replaces a thread per stop.
//!
//! A current-thread runtime keeps tokio timers (armed only for a loop that did not return
//! within one turn of the scheduler): its clock may be paused (`start_paused`, tests),
//! and a deadline must then follow tokio's clock rather than the wall clock. A
//! multi-thread runtime's clock cannot be paused.

use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// What an entry ends when it is due: the run stop `id` of a service.
pub(crate) trait Expire: Send + Sync {
    /// The deadline of the run stop `id` passed (nothing to do if it already ended).
    fn expire(&self, id: u64);
}

/// An entry of the list, for [`cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    index: u32,
    generation: NonZeroU32,
}

/// A slot of the list: an entry, or `None` (its index on the free list).
type Slot = Option<Entry>;

struct Entry {
    /// Drawn from a counter of the whole list, so that a stale [`Key`] (its entry taken
    /// by the thread, its slot reused, or the list emptied and rebuilt) finds nothing.
    generation: NonZeroU32,
    due: Instant,
    /// Weak: an entry never keeps a service alive (and is removed when its stop ends).
    target: Weak<dyn Expire>,
    id: u64,
}

struct List {
    slots: Vec<Slot>,
    free: Vec<u32>,
    next_generation: NonZeroU32,
    /// When the thread wakes next; `None` while it waits for an entry (or before it runs).
    wakes_at: Option<Instant>,
    started: bool,
}

static LIST: Mutex<List> = Mutex::new(List {
    slots: Vec::new(),
    free: Vec::new(),
    next_generation: NonZeroU32::MIN,
    wakes_at: None,
    started: false,
});

/// Woken when an entry is due before `wakes_at`.
static EARLIER: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, List> {
    // Never held while user code runs (`expire` is called after it is released).
    LIST.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls `target.expire(id)` at `due` unless [`cancel`]led first. `None` if the thread
/// could not be started (the caller then keeps the deadline itself).
pub(crate) fn register(due: Instant, target: Weak<dyn Expire>, id: u64) -> Option<Key> {
    let mut list = lock();
    if !list.started {
        let spawned = std::thread::Builder::new()
            .name("service-deadlines".into())
            .spawn(run);
        if let Err(error) = spawned {
            drop(list);
            tracing::warn!(
                %error,
                "no thread for stop deadlines: on a tokio runtime a timer keeps each one; \
                 a stop awaited outside tokio waits for its run loop however long it takes"
            );
            return None;
        }
        list.started = true;
    }
    let generation = list.next_generation;
    list.next_generation = generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
    let entry = Some(Entry {
        generation,
        due,
        target,
        id,
    });
    let index = match list.free.pop() {
        Some(index) => {
            list.slots[index as usize] = entry;
            index
        }
        None => {
            list.slots.push(entry);
            u32::try_from(list.slots.len() - 1).expect("fewer than 2^32 stops at once")
        }
    };
    let key = Key { index, generation };
    let earlier = list.wakes_at.is_none_or(|at| due < at);
    if earlier {
        // Set here, so the stops that follow (due later) do not wake the thread again.
        list.wakes_at = Some(due);
    }
    drop(list);
    if earlier {
        EARLIER.notify_one();
    }
    Some(key)
}

/// Removes the entry `key` (nothing if it was due and taken already).
pub(crate) fn cancel(key: Key) {
    let mut list = lock();
    let Some(slot) = list.slots.get_mut(key.index as usize) else {
        return;
    };
    let Some(entry) = slot.take_if(|entry| entry.generation == key.generation) else {
        return;
    };
    list.free.push(key.index);
    if list.free.len() == list.slots.len() {
        // Empty again (after a burst of stops, say): its memory goes back, but for a
        // few slots kept for the next stops.
        list.slots.clear();
        list.free.clear();
        list.slots.shrink_to(KEPT_SLOTS);
        list.free.shrink_to(KEPT_SLOTS);
    }
    drop(list);
    // The last reference to a freed service's memory may go here: not under the lock.
    drop(entry);
}

/// How many entries the list holds.
pub(crate) fn pending() -> usize {
    let list = lock();
    list.slots.len() - list.free.len()
}

/// The slots an empty list keeps room for.
const KEPT_SLOTS: usize = 64;

/// How long after a failed expiry (a panic: a tracing layer's, say) it is tried again.
const RETRY: Duration = if cfg!(test) {
    Duration::from_millis(20)
} else {
    Duration::from_secs(1)
};

/// Lets the next [`register`] start a new thread should this one end (it never returns;
/// it would end only by a panic outside the expiries, which are caught).
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        lock().started = false;
    }
}

/// The thread: sleeps until the earliest entry is due, takes every due entry out of the
/// list, and expires them once the list is released.
fn run() {
    let _restart = Restart;
    let mut list = lock();
    loop {
        let now = Instant::now();
        match list.wakes_at {
            // Woken early (an earlier entry was registered, or spuriously): sleep on.
            Some(at) if now < at => {
                list = EARLIER
                    .wait_timeout(list, at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            None => {
                list = EARLIER.wait(list).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            Some(_) => {}
        }
        // A deadline passed: take what is due, find the next one.
        let List {
            slots,
            free: vacant,
            ..
        } = &mut *list;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        // A scan of every slot, under the lock: only when a deadline passed (a stop that
        // timed out, or the earliest entry's time after its stop ended), never per stop.
        for (index, slot) in slots.iter_mut().enumerate() {
            let Some(entry) = slot else { continue };
            if entry.due <= now {
                due.extend(slot.take());
                vacant.push(index as u32);
            } else {
                next = Some(next.map_or(entry.due, |next| next.min(entry.due)));
            }
        }
        if vacant.len() == slots.len() {
            slots.clear();
            vacant.clear();
            slots.shrink_to(KEPT_SLOTS);
            vacant.shrink_to(KEPT_SLOTS);
        }
        list.wakes_at = next;
        if due.is_empty() {
            continue;
        }
        drop(list);
        // In deadline order, should several have come due at once.
        due.sort_unstable_by_key(|entry| entry.due);
        for entry in due {
            expire(entry);
        }
        list = lock();
    }
}

/// Expires one entry, isolating the thread from what it runs: a panic (in a tracing
/// layer the expiry logs through) is caught and the entry tried again later; the last
/// reference to a service, should the thread hold it, is dropped on a thread of its own
/// (the service's `Drop` is the user's code: it must not hold up other deadlines).
fn expire(entry: Entry) {
    let Some(target) = entry.target.upgrade() else {
        return;
    };
    let expired = catch_unwind(AssertUnwindSafe(|| target.expire(entry.id)));
    if expired.is_err() {
        register(Instant::now() + RETRY, entry.target, entry.id);
    }
    if Arc::strong_count(&target) == 1 {
        // Without a thread, `spawn` drops the closure, and the service with it, here:
        // its panic contained all the same.
        let _ = catch_unwind(AssertUnwindSafe(move || {
            std::thread::Builder::new()
                .name("service-deadlines-drop".into())
                .spawn(move || drop(target))
        }));
    } else {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(target)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, Weak};
    use std::time::{Duration, Instant};

    use super::{Expire, cancel, register};

    /// Records the ids it expired; panics at the expiry of `panics_at` the first time.
    #[derive(Default)]
    struct Record {
        expired: Mutex<Vec<u64>>,
        calls: AtomicU64,
        panics_at: Option<u64>,
    }

    impl Expire for Record {
        fn expire(&self, id: u64) {
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            if first && self.panics_at == Some(id) {
                panic!("a layer panicked");
            }
            self.expired.lock().unwrap().push(id);
        }
    }

    fn target(record: &Arc<Record>) -> Weak<dyn Expire> {
        Arc::downgrade(record) as Weak<dyn Expire>
    }

    fn wait_for(record: &Record, expired: usize) {
        let began = Instant::now();
        while record.expired.lock().unwrap().len() < expired {
            assert!(began.elapsed() < Duration::from_secs(10), "never expired");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn due_entries_expire_in_deadline_order_and_cancelled_ones_never() {
        let record = Arc::new(Record::default());
        let now = Instant::now();
        let late = register(now + Duration::from_millis(60), target(&record), 3).unwrap();
        // Earlier than the time the thread sleeps until: it is woken for it.
        register(now + Duration::from_millis(20), target(&record), 2).unwrap();
        let cancelled = register(now + Duration::from_millis(10), target(&record), 1).unwrap();
        cancel(cancelled);
        cancel(cancelled); // twice: nothing
        wait_for(&record, 2);
        assert_eq!(*record.expired.lock().unwrap(), [2, 3]);
        assert!(now.elapsed() >= Duration::from_millis(60));
        // The key of an entry that expired finds nothing, even once its slot is reused
        // (it may be: the slots are shared with the other tests).
        let reused = register(
            Instant::now() + Duration::from_millis(10),
            target(&record),
            4,
        );
        cancel(late);
        cancel(cancelled);
        wait_for(&record, 3);
        assert_eq!(*record.expired.lock().unwrap(), [2, 3, 4]);
        assert!(reused.is_some());
        // A key cancelled once, its slot then reused by an entry (perhaps after the list
        // emptied and was rebuilt): cancelled again, it leaves the new entry alone.
        let old = register(
            Instant::now() + Duration::from_secs(3600),
            target(&record),
            5,
        );
        cancel(old.unwrap());
        register(
            Instant::now() + Duration::from_millis(5),
            target(&record),
            6,
        )
        .unwrap();
        cancel(old.unwrap());
        wait_for(&record, 4);
        assert_eq!(*record.expired.lock().unwrap(), [2, 3, 4, 6]);
    }

    #[test]
    fn an_entry_keeps_no_service_alive() {
        let record = Arc::new(Record::default());
        register(
            Instant::now() + Duration::from_millis(5),
            target(&record),
            9,
        )
        .unwrap();
        let weak = Arc::downgrade(&record);
        drop(record);
        assert!(weak.upgrade().is_none());
        std::thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn a_panicking_expiry_is_retried_and_the_thread_lives_on() {
        let panicky = Arc::new(Record {
            panics_at: Some(7),
            ..Record::default()
        });
        let calm = Arc::new(Record::default());
        let now = Instant::now();
        register(now + Duration::from_millis(5), target(&panicky), 7).unwrap();
        register(now + Duration::from_millis(10), target(&calm), 8).unwrap();
        wait_for(&calm, 1);
        wait_for(&panicky, 1);
        assert_eq!(*panicky.expired.lock().unwrap(), [7]);
        assert_eq!(panicky.calls.load(Ordering::SeqCst), 2, "the retry");
        assert!(now.elapsed() >= super::RETRY);
    }
}
