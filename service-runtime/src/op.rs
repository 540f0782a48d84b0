//! One start or stop of a managed service in flight: run in the task of the caller that
//! began it, and moved to a spawned task only when that caller goes away or another
//! caller waits for it.
//!
//! Running in place saves a task (a cache-line-aligned cell of 1–2 KiB and a trip through
//! the scheduler) per operation; the hand-over keeps the guarantee a spawned task gives:
//! an operation always runs to its end even when the future that began it is dropped or
//! is kept without being polled while another call waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::ServiceError;
use crate::util::WakerSlots;

/// The work of an operation: its whole sequence, ending with the final transition.
pub(crate) type OpFuture = Pin<Box<dyn Future<Output = OpResult> + Send>>;

pub(crate) type OpResult = Result<(), ServiceError>;

/// Shared between the caller driving an operation, the callers waiting for it and, once
/// handed over, the task running it.
pub(crate) struct OpShared {
    state: Mutex<State>,
}

struct State {
    work: Work,
    /// The driving caller's waker, woken when a waiter takes the work from it.
    driver: Option<Waker>,
    /// Set once the work ended (or was dropped before its end), for the waiters.
    result: Option<OpResult>,
    /// Woken once `result` is set, one slot per waiting [`ResultWait`]: a wait is a
    /// reference and a slot number, where a `Notified` would add ~100 bytes to every
    /// `stop()` future.
    waiters: WakerSlots,
}

enum Work {
    /// Between two polls by the driving caller.
    Parked(OpFuture),
    /// Being polled by the driving caller (taken out of the lock for the poll, so a hook
    /// that calls back into its own service never meets a held lock). `detach` asks the
    /// driver to hand the work over once the poll returns.
    Polling {
        detach: bool,
    },
    /// Running in a spawned task.
    Detached,
    Finished,
}

impl OpShared {
    pub(crate) fn new(work: OpFuture) -> Arc<Self> {
        Arc::new(OpShared {
            state: Mutex::new(State {
                work: Work::Parked(work),
                driver: None,
                result: None,
                waiters: WakerSlots::default(),
            }),
        })
    }

    /// An operation without work of its own, ended by someone else through
    /// [`complete`](Self::complete); waiters only wait.
    pub(crate) fn ended_elsewhere() -> Arc<Self> {
        Arc::new(OpShared {
            state: Mutex::new(State {
                work: Work::Detached,
                driver: None,
                result: None,
                waiters: WakerSlots::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across a poll of user code, so poisoning cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the operation in the calling task; if it was handed over meanwhile, waits for
    /// it. Dropping this future half-way hands the operation over to a spawned task.
    pub(crate) fn drive(self: Arc<Self>) -> Drive {
        Drive::InPlace(InPlace(Some(self)))
    }

    /// Waits for an operation another caller began. The operation is handed over to a
    /// spawned task first, so it progresses even if that caller stops polling it.
    pub(crate) async fn join(self: &Arc<Self>) -> OpResult {
        self.hand_over();
        self.wait().await
    }

    fn poll_in_place(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<Option<OpResult>> {
        let mut work = {
            let mut state = self.lock();
            match std::mem::replace(&mut state.work, Work::Polling { detach: false }) {
                Work::Parked(work) => work,
                other => {
                    state.work = other;
                    return Poll::Ready(None);
                }
            }
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(result) => {
                drop(work);
                // No other reference: nobody waits, skip the publication.
                if Arc::strong_count(self) > 1 {
                    self.complete(result.clone());
                }
                Poll::Ready(Some(result))
            }
            Poll::Pending => {
                let mut state = self.lock();
                if let Work::Polling { detach: true } = state.work {
                    state.work = Work::Detached;
                    drop(state);
                    self.spawn(work);
                    return Poll::Ready(None);
                }
                state.work = Work::Parked(work);
                match &state.driver {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.driver = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Moves parked work to a spawned task (waking the caller that drove it), or asks
    /// the driver to do so after its current poll.
    pub(crate) fn hand_over(self: &Arc<Self>) {
        let taken = {
            let mut state = self.lock();
            match &mut state.work {
                Work::Parked(_) => {
                    let Work::Parked(work) = std::mem::replace(&mut state.work, Work::Detached)
                    else {
                        unreachable!("matched above")
                    };
                    Some((work, state.driver.take()))
                }
                Work::Polling { detach } => {
                    *detach = true;
                    None
                }
                Work::Detached | Work::Finished => None,
            }
        };
        if let Some((work, driver)) = taken {
            if let Some(driver) = driver {
                driver.wake();
            }
            self.spawn(work);
        }
    }

    fn spawn(self: &Arc<Self>, work: OpFuture) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = self.clone();
                drop(runtime.spawn(async move {
                    let result = work.await;
                    shared.complete(result);
                }));
            }
            // No runtime to run it on: dropping the work abandons it, which completes
            // the operation with an error (the `OpGuard` of `Inner::begin`), so no one
            // hangs.
            Err(_) => drop(work),
        }
    }

    /// Publishes the result to the waiters. The first result wins (the work's own, or
    /// the error of its abandonment).
    pub(crate) fn complete(&self, result: OpResult) {
        let waiters = {
            let mut state = self.lock();
            state.work = Work::Finished;
            if state.result.is_none() {
                state.result = Some(result);
            }
            state.waiters.take_all()
        };
        waiters.wake_all();
    }

    /// Waits for the result (does not move the work anywhere; see [`join`](Self::join)).
    pub(crate) fn wait(&self) -> ResultWait<&OpShared> {
        ResultWait {
            shared: self,
            slot: None,
        }
    }
}

/// The future of [`OpShared::drive`]. Written out rather than an `async fn` (120 bytes):
/// it is part of every `start()` and `stop()` future that runs an operation.
pub(crate) enum Drive {
    /// Polling the work in this task.
    InPlace(InPlace),
    /// The work was handed over: waiting for its result.
    Waiting(ResultWait<Arc<OpShared>>),
    Done,
}

/// The operation a [`Drive`] polls in place: handed over to a spawned task if the
/// `Drive` is dropped half-way (`None` once it no longer needs to be).
pub(crate) struct InPlace(Option<Arc<OpShared>>);

impl Drop for InPlace {
    fn drop(&mut self) {
        if let Some(shared) = &self.0 {
            shared.hand_over();
        }
    }
}

impl Future for Drive {
    type Output = OpResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult> {
        // Every variant is `Unpin`.
        let this = self.get_mut();
        if let Drive::InPlace(InPlace(in_place)) = this {
            let shared = in_place.as_ref().expect("set until the drive moves on");
            match shared.poll_in_place(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(result)) => {
                    *in_place = None;
                    *this = Drive::Done;
                    return Poll::Ready(result);
                }
                Poll::Ready(None) => {
                    let shared = in_place.take().expect("set until the drive moves on");
                    *this = Drive::Waiting(ResultWait { shared, slot: None });
                }
            }
        }
        match this {
            Drive::Waiting(wait) => {
                let result = std::task::ready!(wait.poll_result(cx));
                *this = Drive::Done;
                Poll::Ready(result)
            }
            _ => panic!("`Drive` polled after it completed"),
        }
    }
}

/// Waits for an operation's result (see [`OpShared::wait`]), through a reference or an
/// `Arc` of its own (`P`).
pub(crate) struct ResultWait<P: std::ops::Deref<Target = OpShared>> {
    shared: P,
    /// This wait's place in `State::waiters`, once it registered.
    slot: Option<usize>,
}

impl<P: std::ops::Deref<Target = OpShared>> ResultWait<P> {
    /// The result if the operation ended; otherwise `cx` is woken when it does.
    pub(crate) fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<OpResult> {
        let mut state = self.shared.lock();
        if let Some(result) = &state.result {
            return Poll::Ready(result.clone());
        }
        // Checked and registered under one lock, so `complete` cannot be missed.
        let replaced = state.waiters.register(&mut self.slot, cx.waker());
        drop(state);
        // Dropped once the lock is released: a waker's drop may run the executor's code.
        drop(replaced);
        Poll::Pending
    }
}

impl<P: std::ops::Deref<Target = OpShared> + Unpin> Future for ResultWait<P> {
    type Output = OpResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult> {
        self.get_mut().poll_result(cx)
    }
}

impl<P: std::ops::Deref<Target = OpShared>> Drop for ResultWait<P> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut state = self.shared.lock();
            // Once the result is set the list went to `complete`: nothing to free.
            let waker = state.result.is_none().then(|| state.waiters.vacate(slot));
            drop(state);
            drop(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::OpShared;

    #[test]
    fn dropped_waits_free_their_slots_and_the_rest_are_woken() {
        let shared = OpShared::ended_elsewhere();
        let mut cx = Context::from_waker(Waker::noop());
        // Waits polled once and dropped, one after another: one slot, reused.
        for _ in 0..1_000 {
            let mut wait = pin!(shared.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            shared.lock().waiters.allocated(),
            0,
            "the inline slot, reused"
        );
        // Three alive at once: three slots; results reach every one.
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(shared.wait())).collect();
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            shared.lock().waiters.allocated(),
            2,
            "the inline slot and two more"
        );
        shared.complete(Ok(()));
        for wait in &mut waits {
            assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        }
        assert_eq!(shared.lock().waiters.allocated(), 0);
    }
}
