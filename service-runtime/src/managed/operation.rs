//! An operation (a start or a stop) in flight, and how its outcome reaches every call
//! that waits for it.
//!
//! The call that begins an operation polls its work once, in its own task: most starts
//! and stops of services whose hooks finish at once end there, without a task. Work that
//! has to wait goes on in a task of its own, so it always runs to its end, whether the
//! call that began it keeps polling, goes away, or is kept aside unpolled. Outside any
//! runtime (a stop awaited with `futures::executor::block_on`, say) it runs on the
//! runtime of the service's run loop, or, with none, in the caller's task.
//!
//! Every call waiting for the operation holds its [`Outcome`], a shared one-shot result.
//! The work's guard publishes it after the final transition, or, when the work is
//! dropped before its end (its runtime shut down, a panic outside the hooks), ends the
//! operation in `error` and publishes that, so no caller ever waits for an end that will
//! not come.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use futures_util::FutureExt;
use futures_util::future::Shared;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::control::{Control, Inner};
use super::decide::OpKind;
use crate::error::ServiceError;
use crate::service::Service;
use crate::status::ServiceStatus;

/// What an operation, and every call of `start()` or `stop()`, ends with.
pub(super) type OpResult = Result<(), ServiceError>;

/// Where an operation's result reaches the calls that wait for it.
pub(super) type Outcome = Shared<oneshot::Receiver<OpResult>>;

type Work = Pin<Box<dyn Future<Output = OpResult> + Send>>;

/// The start or stop in flight, as the control keeps it.
pub(super) struct Op {
    pub(super) kind: OpKind,
    pub(super) id: u64,
    pub(super) outcome: Outcome,
    /// A start's cancellation, requested by `stop()`.
    pub(super) cancel: Option<CancellationToken>,
}

/// An operation just begun, for its caller to run. Dropped before it runs (a supervisor
/// that began a level's starts and went away), it hands its work to a task as `run`
/// would.
pub(super) struct Operation {
    /// `None` once handed over. Behind a lock only so that the futures of `start()` and
    /// `stop()` are `Sync` (a hook's future need not be); one task at a time polls it.
    work: Mutex<Option<Work>>,
    outcome: Outcome,
    /// Where the work goes on when it has to wait and its caller is outside any runtime.
    runtime: Option<Handle>,
}

impl<S: Service> Inner<S> {
    /// Records an operation of `kind` in `ctl` (whose status its caller has just moved
    /// to `starting` or `stopping`) and builds its work around `sequence`, which ends
    /// with the operation's final transition.
    pub(super) fn begin<F, Fut>(
        self: &Arc<Self>,
        ctl: &mut Control,
        kind: OpKind,
        cancel: Option<CancellationToken>,
        runtime: Option<Handle>,
        sequence: F,
    ) -> Operation
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = OpResult> + Send + 'static,
    {
        let id = ctl.next_id();
        let (sender, receiver) = oneshot::channel();
        let outcome = receiver.shared();
        // Made outside the work, so that it also runs if the work is dropped unpolled.
        let mut guard = OpGuard {
            inner: self.clone(),
            id,
            kind,
            sender: Some(sender),
        };
        let sequence = sequence(self.clone()).instrument(self.span());
        let work = Box::pin(async move {
            // The span covers the sequence only: should its exit panic (a subscriber's
            // code), the guard is still armed and ends the operation for its waiters.
            let result = sequence.await;
            guard.finish(result.clone());
            result
        });
        ctl.op = Some(Op {
            kind,
            id,
            outcome: outcome.clone(),
            cancel,
        });
        Operation {
            work: Mutex::new(Some(work)),
            outcome,
            runtime,
        }
    }

    /// The outcome of an operation another call runs.
    pub(super) async fn outcome_of(&self, kind: OpKind, outcome: Outcome) -> OpResult {
        // The guard always publishes; a closed channel would mean it was leaked.
        outcome.await.unwrap_or_else(|_| Err(self.abandoned(kind)))
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
}

impl Operation {
    /// Runs the operation to its end (see the module's doc) and returns its outcome.
    pub(super) async fn run(mut self) -> OpResult {
        if let Poll::Ready(result) =
            std::future::poll_fn(|cx| Poll::Ready(self.poll_work(cx))).await
        {
            return result;
        }
        if self.hand_over() {
            // The guard publishes whatever happens to the work (its task dropped with its
            // runtime included).
            let outcome = self.outcome.clone();
            return outcome
                .await
                .unwrap_or_else(|_| unreachable!("the guard publishes"));
        }
        std::future::poll_fn(|cx| self.poll_work(cx)).await
    }

    fn poll_work(&mut self, cx: &mut std::task::Context<'_>) -> Poll<OpResult> {
        let work = self.work.get_mut().unwrap_or_else(PoisonError::into_inner);
        let poll = work
            .as_mut()
            .expect("polled until its end")
            .as_mut()
            .poll(cx);
        if poll.is_ready() {
            *work = None;
        }
        poll
    }

    /// Moves the work to a task of the current runtime, or else of the run loop's;
    /// `false` when there is none.
    fn hand_over(&mut self) -> bool {
        let Some(runtime) = Handle::try_current().ok().or_else(|| self.runtime.clone()) else {
            return false;
        };
        let work = self.work.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(work) = work.take() {
            drop(runtime.spawn(work));
        }
        true
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        // Without a runtime the work is dropped here, and its guard ends it in `error`.
        self.hand_over();
    }
}

/// Inside an operation's work: publishes its result, or, if the work is dropped before
/// its end, ends the operation in `error` (rather than leaving `starting`/`stopping`
/// behind) and publishes that.
struct OpGuard<S: Service> {
    inner: Arc<Inner<S>>,
    id: u64,
    kind: OpKind,
    /// `None` once published.
    sender: Option<oneshot::Sender<OpResult>>,
}

impl<S: Service> OpGuard<S> {
    /// The work's final transition is made: the operation leaves the control, then its
    /// waiters get the result (a call that sees the operation in between joins it and
    /// gets the same result).
    fn finish(&mut self, result: OpResult) {
        let id = self.id;
        self.inner.lock().op.take_if(|op| op.id == id);
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(result);
        }
    }
}

impl<S: Service> Drop for OpGuard<S> {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        let error = self.inner.abandoned(self.kind);
        let mut ctl = self.inner.lock();
        if ctl.op.take_if(|op| op.id == self.id).is_some() {
            self.inner.transition(
                &mut ctl,
                ServiceStatus::Error,
                Some(error.clone()),
                Instant::now(),
            );
        }
        drop(ctl);
        let _ = sender.send(Err(error));
    }
}
