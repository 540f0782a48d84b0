//! The join of the supervisor's health aggregation (see [`join_all`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Runs futures (boxed, or otherwise `Unpin`) concurrently in the current task and
/// collects their outputs in order.
///
/// The futures are taken from `futures` one at a time at the first poll, each polled at
/// once with the caller's own waker: one that finishes then (an instant health check, a
/// start with nothing to await) is dropped before the next is made, so it costs no waker,
/// and a boxed one's allocation is free again for the next (with a thousand of them alive
/// at once, the allocator's per-thread cache would run dry). One still pending then gets a
/// waker of its own at the next wake-up, after which a wake-up polls only the futures that
/// were woken: O(N) polls in all rather than N per wake-up (with the supervisor on a
/// worker, woken after each service's start or stop, polling them all each time made
/// large levels quadratic).
///
/// The outputs of the futures that finish at their first poll before any is pending go
/// straight to the list returned; only the futures from the first pending one on have a
/// slot (so when all finish at once, as instant health checks do, no output is moved
/// through a slot and out again).
pub(crate) async fn join_all<I>(futures: I) -> Vec<<I::Item as Future>::Output>
where
    I: IntoIterator,
    I::Item: Future + Unpin,
{
    let mut futures = Some(futures.into_iter());
    let woken = Arc::new(Woken::default());
    // The outputs of the futures before the first that was pending at its first poll.
    let mut done = Vec::new();
    // The futures from that one on (slot `i` is future `done.len() + i`).
    let mut slots: Vec<Slot<I::Item>> = Vec::new();
    let mut remaining = 0;
    // Polled with the caller's waker only (at the first poll), not yet with one of their own.
    let mut untracked: Vec<usize> = Vec::new();
    let mut ready = Vec::new();
    std::future::poll_fn(move |cx| {
        if let Some(mut futures) = futures.take() {
            done.reserve_exact(futures.size_hint().0);
            while let Some(mut future) = futures.next() {
                match Pin::new(&mut future).poll(cx) {
                    Poll::Ready(output) if slots.is_empty() => done.push(output),
                    Poll::Ready(output) => slots.push(Slot::Done(Some(output))),
                    Poll::Pending => {
                        if slots.is_empty() {
                            slots.reserve_exact(futures.size_hint().0 + 1);
                        }
                        untracked.push(slots.len());
                        slots.push(Slot::Pending(future));
                        remaining += 1;
                    }
                }
            }
            return if remaining == 0 {
                Poll::Ready(std::mem::take(&mut done))
            } else {
                Poll::Pending
            };
        }
        {
            let mut parent = lock(&woken.parent);
            if !parent.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *parent = Some(cx.waker().clone());
            }
        }
        // Each child woken after this point wakes this task again: polled then, not in a
        // loop here (a child out of its cooperative budget wakes itself at once).
        ready.append(&mut lock(&woken.indices));
        for index in std::mem::take(&mut untracked) {
            let Slot::Pending(future) = &mut slots[index] else {
                continue;
            };
            // It may have kept the caller's waker: poll it once more with its own, so its
            // wake-ups are told apart from now on.
            let waker = Waker::from(Arc::new(ChildWaker {
                index,
                woken: woken.clone(),
            }));
            let poll = Pin::new(&mut *future).poll(&mut Context::from_waker(&waker));
            match poll {
                Poll::Ready(output) => {
                    slots[index] = Slot::Done(Some(output));
                    remaining -= 1;
                }
                Poll::Pending => track(&mut slots[index], waker),
            }
        }
        for &index in &ready {
            if let Slot::Tracked(future, waker) = &mut slots[index] {
                if let Poll::Ready(output) =
                    Pin::new(&mut *future).poll(&mut Context::from_waker(waker))
                {
                    slots[index] = Slot::Done(Some(output));
                    remaining -= 1;
                }
            }
        }
        ready.clear();
        if remaining == 0 {
            let mut outputs = std::mem::take(&mut done);
            outputs.extend(
                std::mem::take(&mut slots)
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Done(Some(output)) => output,
                        _ => unreachable!("every future is done, its output taken once"),
                    }),
            );
            Poll::Ready(outputs)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Gives a pending future the waker of its own it was just polled with.
fn track<F: Future>(slot: &mut Slot<F>, waker: Waker) {
    if let Slot::Pending(future) = std::mem::replace(slot, Slot::Done(None)) {
        *slot = Slot::Tracked(future, waker);
    }
}

enum Slot<F: Future> {
    /// Not polled yet, or polled only with the caller's waker.
    Pending(F),
    /// Pending, with a waker of its own.
    Tracked(F, Waker),
    Done(Option<F::Output>),
}

/// The futures of a [`join_all`] woken since it last looked, and its own waker.
#[derive(Default)]
struct Woken {
    indices: Mutex<Vec<usize>>,
    parent: Mutex<Option<Waker>>,
}

struct ChildWaker {
    index: usize,
    woken: Arc<Woken>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.woken.indices).push(self.index);
        if let Some(parent) = &*lock(&self.woken.parent) {
            parent.wake_by_ref();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    type Boxed<'a> = Pin<Box<dyn Future<Output = usize> + Send + 'a>>;

    /// Counts its polls, then sleeps `ms` (nothing when 0) and returns `value`.
    fn counted(polls: &AtomicUsize, ms: u64, value: usize) -> Boxed<'_> {
        let mut sleep = (ms > 0).then(|| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            match &mut sleep {
                Some(sleep) => sleep.as_mut().poll(cx).map(|()| value),
                None => Poll::Ready(value),
            }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn outputs_come_in_order_and_each_future_is_polled_a_bounded_number_of_times() {
        let polls: Vec<AtomicUsize> = (0..200).map(|_| AtomicUsize::new(0)).collect();
        // Even indices finish at once, odd ones after distinct delays (one wake-up each).
        // Made as they are taken, from an iterator.
        let futures = polls
            .iter()
            .enumerate()
            .map(|(i, p)| counted(p, if i % 2 == 0 { 0 } else { i as u64 }, i));
        let outputs = join_all(futures).await;
        assert_eq!(outputs, (0..200).collect::<Vec<_>>());
        for (i, p) in polls.iter().enumerate() {
            let polls = p.load(Ordering::SeqCst);
            if i % 2 == 0 {
                assert_eq!(polls, 1, "future {i} finished at its first poll");
            } else {
                // First poll, the poll with its own waker, the poll once woken.
                assert!(polls <= 3, "future {i} polled {polls} times");
            }
        }
    }

    #[tokio::test]
    async fn nothing_to_join() {
        assert!(join_all(Vec::<Boxed<'_>>::new()).await.is_empty());
    }
}
