//! An operation (a start or a stop) in flight, and how every call waiting for it gets
//! its outcome.
//!
//! An operation's work is one future, shared ([`futures_util::future::Shared`]) by every
//! call that waits for it: whichever of them is polled drives it, in its own task, so an
//! operation needs no task of its own (most starts and stops of services whose hooks
//! finish at once end at their first poll). A call that stops waiting before the end
//! hands the work to a spawned task (on the current runtime, else on the run loop's), so
//! the operation still runs to its end. Like any future, the work makes no progress while
//! nobody polls it: a `start()` kept aside unpolled, with no other call waiting, holds its
//! operation until it is polled again or dropped.
//!
//! The stop of a service with a run loop is the exception: its work runs in the loop's
//! task, which exists already, once the loop has returned ([`loop_stop`](super::loop_stop));
//! its callers wait for its end, and enforce its deadline.
//!
//! The work's guard ends an operation dropped before its end (its runtime shut down) in
//! `error`; a panic in the work (outside the hooks, which catch their own) is caught and
//! ends it the same way, so no caller waits for an end that will not come.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::{Shared, WeakShared};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cancel::StartCancel;
use super::control::{Control, Inner};
use super::decide::OpKind;
use super::hooks::poll_now;
use super::loop_stop::{LoopStop, LoopWait};
use crate::error::ServiceError;
use crate::service::Service;
use crate::status::ServiceStatus;

/// What an operation, and every call of `start()` or `stop()`, ends with.
pub(super) type OpResult = Result<(), ServiceError>;

/// An operation's work, before it is shared.
type BoxedWork = Pin<Box<dyn Future<Output = OpResult> + Send>>;

/// An operation's work, as every call waiting for it holds it.
pub(super) type Work = Shared<BoxedWork>;

/// The start or stop in flight, as the control keeps it.
pub(super) struct Op {
    pub(super) kind: OpKind,
    pub(super) id: u64,
    pub(super) work: OpWork,
    /// A start's cancellation, requested by `stop()`; `None` for a stop.
    pub(super) cancel: Option<StartCancel>,
    /// Where the work goes on when a call waiting for it goes away outside any runtime:
    /// the run loop's runtime for a stop in the loop, `None` for shared work.
    pub(super) runtime: Option<Handle>,
}

/// Where an operation's work runs.
pub(super) enum OpWork {
    /// Driven by its callers. Weak: the calls waiting hold the work, so that when the
    /// last of them is dropped with no runtime to hand it to, the work is dropped and its
    /// guard ends it.
    Shared {
        work: WeakShared<BoxedWork>,
        /// Cancels the work (its hooks in flight are dropped at its next poll): what a
        /// shutdown budget does to a service it gives up on (`Inner::abandon`). Made
        /// once the work first waits: most operations end at their first poll.
        abort: Option<CancellationToken>,
    },
    /// A stop in the run loop's task.
    InLoop(LoopStop),
}

impl Op {
    /// The operation, for one more call to wait for; `None` if it is ending (its last
    /// holder just dropped its work). `service` ends a stop in a loop at its deadline.
    pub(super) fn join<S: Service>(&self, service: &Arc<Inner<S>>) -> Option<Waiting> {
        let wait = match &self.work {
            OpWork::Shared { work, .. } => Wait::Shared(work.upgrade()?),
            OpWork::InLoop(stop) => Wait::InLoop(stop.wait(self.id, service.clone())),
        };
        Some(Waiting {
            wait: Some(wait),
            runtime: self.runtime.clone(),
        })
    }
}

impl<S: Service> Inner<S> {
    /// Records an operation of `kind` in `ctl` (whose status its caller has just moved
    /// to `starting` or `stopping`) and builds its work around `sequence`, which gets the
    /// operation's id and ends with its final transition. A call that goes away outside
    /// any runtime leaves the work to its other callers ([`Op::runtime`] is `None`).
    pub(super) fn begin<F, Fut>(
        self: &Arc<Self>,
        ctl: &mut Control,
        kind: OpKind,
        sequence: F,
    ) -> Waiting
    where
        F: FnOnce(Arc<Self>, u64) -> Fut + Send + 'static,
        Fut: Future<Output = OpResult> + Send + 'static,
    {
        let id = ctl.next_id();
        // Made outside the work, so that it also runs if the work is dropped unpolled.
        let mut guard = OpGuard::new(self.clone(), id, kind);
        let span = self.span();
        // The sequence's future is made at the first poll, inside the box: built here and
        // moved in, it would be copied at every layer.
        let work: BoxedWork = Box::pin(async move {
            let inner = &guard.inner;
            // Each layer is built in place (`pin!` of one expression): a layer bound to a
            // local first would keep a second copy of the sequence's state in the box.
            let result = if span.is_disabled() {
                let sequence = pin!(AssertUnwindSafe(sequence(inner.clone(), id)).catch_unwind());
                inner.abortable(id, sequence).await
            } else {
                let sequence = pin!(
                    AssertUnwindSafe(sequence(inner.clone(), id).instrument(span)).catch_unwind()
                );
                inner.abortable(id, sequence).await
            };
            // The span covers the sequence only: should its exit panic (a subscriber's
            // code), the guard is still armed and ends the operation.
            match result {
                Some(Ok(result)) => {
                    guard.finish(&result);
                    result
                }
                Some(Err(_)) => Err(guard.inner.abandoned(kind)),
                // Abandoned: the service is in `error` already, with the cause.
                None => {
                    let result = Err(guard.inner.last_error_or_abandoned(kind));
                    guard.finish(&result);
                    result
                }
            }
        });
        let work = work.shared();
        ctl.op = Some(Box::new(Op {
            kind,
            id,
            work: OpWork::Shared {
                work: work.downgrade().expect("not polled yet"),
                abort: None,
            },
            cancel: (kind == OpKind::Start).then(StartCancel::default),
            runtime: None,
        }));
        Waiting {
            wait: Some(Wait::Shared(work)),
            runtime: None,
        }
    }

    /// Drives the sequence of the operation `id`. Once it waits (its first poll is
    /// pending), the operation gets an abort token, with which [`abandon`](Self::abandon)
    /// cancels it; `None` when it is cancelled (or was abandoned before it waited).
    async fn abortable<F: Future>(&self, id: u64, mut sequence: Pin<&mut F>) -> Option<F::Output> {
        if let Some(output) = poll_now(&mut sequence).await {
            return Some(output);
        }
        let abort = {
            let mut ctl = self.lock();
            let op = ctl.op.as_mut().filter(|op| op.id == id)?;
            match &mut op.work {
                OpWork::Shared { abort, .. } => {
                    abort.get_or_insert_with(CancellationToken::new).clone()
                }
                OpWork::InLoop(_) => unreachable!("a loop's stop has no shared work"),
            }
        };
        abort.run_until_cancelled(sequence).await
    }

    /// The cause of the last move to `error`, or else `abandoned`'s error.
    fn last_error_or_abandoned(&self, kind: OpKind) -> ServiceError {
        let last = self.lock().last_error.as_deref().cloned();
        last.unwrap_or_else(|| self.abandoned(kind))
    }

    /// The error of an operation that could not finish.
    pub(super) fn abandoned(&self, kind: OpKind) -> ServiceError {
        ServiceError::Abandoned {
            service: self.name().clone(),
            operation: match kind {
                OpKind::Start => "start",
                OpKind::Stop => "stop",
            },
        }
    }

    /// Hands the operation in flight, if any, to a spawned task: a call about to wait
    /// for what the operation holds (the service's lock) must not wait for a caller
    /// that stopped polling it.
    pub(super) fn hand_over_op(self: &Arc<Self>) {
        let waiting = self.lock().op.as_ref().and_then(|op| op.join(self));
        drop(waiting);
    }
}

/// A call's hold on an operation. Awaiting it drives the work (or, for a stop in a loop,
/// waits for its end and enforces its deadline); dropped before the end, it hands what it
/// holds to a task (see the module's doc).
pub(super) struct Waiting {
    /// `None` once the outcome is taken (or given away).
    wait: Option<Wait>,
    runtime: Option<Handle>,
}

enum Wait {
    Shared(Work),
    InLoop(LoopWait),
}

impl Waiting {
    /// A wait for a stop in a loop.
    pub(super) fn in_loop(wait: LoopWait, runtime: Option<Handle>) -> Self {
        Waiting {
            wait: Some(Wait::InLoop(wait)),
            runtime,
        }
    }

    /// Awaits the operation's end and returns its outcome.
    pub(super) async fn outcome(mut self) -> OpResult {
        // Borrowed, not taken: should this future be dropped half-way, `self` still
        // holds the wait and hands it over.
        let result = match self.wait.as_ref().expect("held until the outcome is taken") {
            Wait::Shared(work) => work.clone().await,
            Wait::InLoop(wait) => wait.outcome().await,
        };
        self.wait = None;
        result
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(wait) = self.wait.take() else {
            return;
        };
        let runtime = || Handle::try_current().ok().or_else(|| self.runtime.clone());
        match wait {
            Wait::Shared(work) => {
                if work.peek().is_some() {
                    return;
                }
                match runtime() {
                    Some(runtime) => drop(runtime.spawn(work)),
                    // Nowhere to go on: dropped here (if no other call holds it, its guard
                    // ends the operation in `error`).
                    None => drop(work),
                }
            }
            Wait::InLoop(wait) => {
                if wait.ended() {
                    return;
                }
                // Someone has to end the stop at its deadline, should the loop not return.
                if let Some(runtime) = runtime() {
                    drop(runtime.spawn(async move {
                        let _ = wait.outcome().await;
                    }));
                }
            }
        }
    }
}

/// Inside an operation's work: the operation leaves the control after its final
/// transition; if the work is dropped before (or unwinds), the guard ends the operation
/// in `error`, rather than leaving `starting`/`stopping` behind.
pub(super) struct OpGuard<S: Service> {
    inner: Arc<Inner<S>>,
    id: u64,
    kind: OpKind,
    armed: bool,
}

impl<S: Service> OpGuard<S> {
    pub(super) fn new(inner: Arc<Inner<S>>, id: u64, kind: OpKind) -> Self {
        OpGuard {
            inner,
            id,
            kind,
            armed: true,
        }
    }

    /// The work's final transition is made, with `result`: the operation leaves the
    /// control (a call that sees it in between joins it and gets the same outcome).
    pub(super) fn finish(&mut self, result: &OpResult) {
        self.armed = false;
        let id = self.id;
        let op = self.inner.lock().op.take_if(|op| op.id == id);
        if let Some(OpWork::InLoop(stop)) = op.map(|op| op.work) {
            stop.publish(result.clone());
        }
    }
}

impl<S: Service> Drop for OpGuard<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut ctl = self.inner.lock();
        let Some(op) = ctl.op.take_if(|op| op.id == self.id) else {
            return;
        };
        let error = self.inner.abandoned(self.kind);
        self.inner.transition(
            &mut ctl,
            ServiceStatus::Error,
            Some(error.clone()),
            Instant::now(),
        );
        drop(ctl);
        if let OpWork::InLoop(stop) = op.work {
            stop.publish(Err(error));
        }
    }
}
