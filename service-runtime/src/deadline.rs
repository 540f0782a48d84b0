//! The deadline of a run loop's stop, at no wake-up cost where a tokio timer has one.
//!
//! On a multi-thread runtime, arming a tokio timer while the worker that drives timers is
//! parked wakes that worker (an eventfd write and a context switch), at every stop,
//! although nearly every run loop returns long before its deadline. There (and outside
//! any runtime) a deadline is an entry in one list of the process instead, served by one
//! thread (`service-deadlines`, started at the first use) that sleeps until the earliest
//! entry and wakes its waiter; an entry is removed when its wait ends or is dropped.
//!
//! The entry is listed at the wait's first poll, not later: the stop's task may sit in
//! the local queue of the very worker its loop blocks (a loop that ignores the request
//! and blocks its thread), and on a runtime whose other workers are busy nobody steals
//! it, so a timer armed at a later poll would wait for the loop to release its worker.
//! The list's thread wakes the task from outside the workers, which puts it on the
//! runtime's shared queue, where a busy worker still finds it.
//!
//! On a current-thread runtime a deadline is a tokio timer, so that a paused clock
//! (tests) moves it, armed only after one turn of the scheduler (by then the loop has
//! usually returned, and the timer is never registered; a loop that blocks the only
//! thread blocks every timer anyway). The flavour is asked of [`flavour`](crate::flavour).
//!
//! The list's lock is held only to insert, remove and take entries; wakers are woken
//! after it is released.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, Waker};
use std::time::Instant;

/// Resolves once `deadline` has passed.
pub(crate) async fn sleep_until(deadline: tokio::time::Instant) {
    let list = if crate::flavour::current_thread() {
        None
    } else {
        list()
    };
    let Some(list) = list else {
        return after_one_turn(deadline).await;
    };
    // Listed at the first poll, with the waker: one visit to the list's lock.
    let mut entry: Option<Entry> = None;
    std::future::poll_fn(|cx| match &entry {
        Some(entry) => entry.poll(cx),
        None => {
            entry = Some(Entry {
                list,
                key: list.insert(deadline.into_std(), cx.waker().clone()),
            });
            Poll::Pending
        }
    })
    .await;
}

/// A tokio timer, armed only if the deadline's waiter is still waiting one turn of the
/// scheduler later: the run loop it waits for was woken before it, so it has usually
/// returned by then, and the timer is never registered.
async fn after_one_turn(deadline: tokio::time::Instant) {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        // To the back of the run queue, behind the tasks already woken.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    // Boxed: made only for a loop that did not return at once, it keeps every stop's
    // future small.
    Box::pin(tokio::time::sleep_until(deadline)).await;
}

/// The process's list, its thread started at the first call; `None` if the thread could
/// not be started (the caller then arms a tokio timer).
fn list() -> Option<&'static List> {
    static LIST: OnceLock<Option<&'static List>> = OnceLock::new();
    *LIST.get_or_init(|| {
        let list: &'static List = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("service-deadlines".to_owned())
            .spawn(|| list.serve())
            .ok()
            .map(|_| list)
    })
}

/// An entry's place in the list: its deadline, and a number that tells apart entries of
/// the same instant.
type Key = (Instant, u64);

#[derive(Default)]
struct List {
    state: Mutex<State>,
    /// Wakes the thread for an entry earlier than the one it sleeps until.
    earlier: Condvar,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<Key, Waker>,
    next_id: u64,
    /// The deadline the thread sleeps until, if any.
    sleeping_until: Option<Instant>,
}

impl List {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only complete updates happen under it: a poisoned list is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> Key {
        let mut state = self.lock();
        state.next_id += 1;
        let key = (deadline, state.next_id);
        state.entries.insert(key, waker);
        let wake = state.sleeping_until.is_none_or(|until| deadline < until);
        drop(state);
        if wake {
            self.earlier.notify_one();
        }
        key
    }

    /// The thread: wakes the waiters of the entries due, then sleeps until the next one.
    fn serve(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let later = state.entries.split_off(&(now, u64::MAX));
            let due = std::mem::replace(&mut state.entries, later);
            if !due.is_empty() {
                drop(state);
                // Woken outside the lock: a waker runs the executor's code.
                due.into_values().for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            let next = state.entries.keys().next().map(|&(deadline, _)| deadline);
            state.sleeping_until = next;
            state = match next {
                Some(next) => {
                    let wait = next.saturating_duration_since(now);
                    self.earlier
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .earlier
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// A waiter's entry: removed from the list when the wait ends or is dropped.
struct Entry {
    list: &'static List,
    key: Key,
}

impl Entry {
    /// Ready once the thread took the entry (its deadline passed).
    fn poll(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut state = self.list.lock();
        let Some(waker) = state.entries.get_mut(&self.key) else {
            return Poll::Ready(());
        };
        if waker.will_wake(cx.waker()) {
            return Poll::Pending;
        }
        let replaced = std::mem::replace(waker, cx.waker().clone());
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let removed = self.list.lock().entries.remove(&self.key);
        drop(removed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn a_listed_deadline_passes_and_a_dropped_one_is_removed() {
        // Outside any runtime: the list.
        let began = Instant::now();
        block_on(super::sleep_until(
            tokio::time::Instant::now() + Duration::from_millis(30),
        ));
        assert!(began.elapsed() >= Duration::from_millis(30));
        let list = super::list().expect("the thread starts");
        let entry = super::Entry {
            list,
            key: list.insert(
                Instant::now() + Duration::from_secs(3600),
                std::task::Waker::noop().clone(),
            ),
        };
        let key = entry.key;
        assert!(list.lock().entries.contains_key(&key));
        drop(entry);
        assert!(!list.lock().entries.contains_key(&key));
    }

    /// A minimal executor: polls on this thread, parks until woken.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park();
        }
    }
}
