//! The stop of a `running` service with a run loop, carried out in the loop's task.
//!
//! The stop moves the loop from `Control::run` into its operation and tells it
//! to return ([`begin_loop_stop`](Inner::begin_loop_stop)). Its remaining steps (the
//! components, the cleanup hooks, the final transition) run in whichever task first takes
//! the loop's end out of the operation ([`LoopStop`]), under the lock, so exactly one does:
//!
//! - the loop's own task, as the loop returns (nearly always): the stop needs no task and
//!   no future of its own, only the cell its outcome is published in;
//! - a call waiting for the stop ([`LoopWait`]), once the stop's deadline has passed (the
//!   loop's task is aborted: a loop that blocks its thread ends later, unwaited, and its
//!   report finds no stop waiting for it), or once the loop's task was dropped before
//!   its loop returned (its runtime shut down).
//!
//! The task that takes the end holds the operation's guard, which publishes the outcome
//! to every waiting call, or ends the stop in `error` should that task be dropped
//! half-way. A call that stops waiting hands its wait to a spawned task, so the deadline
//! holds although nobody waits any more.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::control::{Control, Inner, run_hook_name};
use super::decide::OpKind;
use super::operation::{Op, OpGuard, OpResult, OpWork, Waiting};
use super::run_loop::RunLoop;
use crate::error::{HookFailure, HookKind, ServiceError};
use crate::service::Service;

/// A stop in a loop, as its operation keeps it.
pub(super) struct LoopStop {
    end: Arc<StopEnd>,
    deadline: Instant,
    /// The loop's task, which also runs the rest of the stop.
    task: AbortHandle,
    /// The loop the stop waits for, until a task takes its end.
    awaited: Option<AwaitedLoop>,
}

/// The loop a stop took from `Control::run` and waits for.
struct AwaitedLoop {
    /// The loop's id.
    id: u64,
    /// The loop's task was dropped before the loop returned: a waiting call takes the
    /// end.
    gone: bool,
}

/// Where a stop in a loop publishes its outcome.
struct StopEnd {
    outcome: OnceLock<OpResult>,
    /// Notified when the outcome is published, or when the loop's task is gone.
    changed: Notify,
}

impl LoopStop {
    /// A wait for this stop, by a call on `service`.
    pub(super) fn wait<S: Service>(&self, op: u64, service: Arc<Inner<S>>) -> LoopWait {
        LoopWait {
            end: self.end.clone(),
            op,
            deadline: self.deadline,
            service,
        }
    }

    /// Cancels the stop (see [`abandon`](super::abandon)): the loop's task is aborted,
    /// whether its loop still runs or it runs the rest of the stop, and `cause` is the
    /// outcome of every call waiting.
    pub(super) fn cancel(&self, cause: ServiceError) {
        self.task.abort();
        self.publish(Err(cause));
    }

    /// Publishes the stop's outcome to every call waiting for it.
    pub(super) fn publish(&self, result: OpResult) {
        let _ = self.end.outcome.set(result);
        self.end.changed.notify_waiters();
    }
}

impl Control {
    /// The stop in a loop in flight, with its id.
    fn loop_stop(&mut self) -> Option<(u64, &mut LoopStop)> {
        match self.op.as_deref_mut() {
            Some(Op {
                id,
                work: OpWork::InLoop(stop),
                ..
            }) => Some((*id, stop)),
            _ => None,
        }
    }
}

/// A call's wait for a stop in a loop.
pub(super) struct LoopWait {
    end: Arc<StopEnd>,
    op: u64,
    deadline: Instant,
    service: Arc<dyn TakeOver>,
}

impl LoopWait {
    /// Whether the stop's outcome is published.
    pub(super) fn ended(&self) -> bool {
        self.end.outcome.get().is_some()
    }

    /// Waits for the stop's outcome; takes the loop's end at the deadline, or when the
    /// loop's task is gone, and then runs the stop's remaining steps here.
    pub(super) async fn outcome(&self) -> OpResult {
        let mut due = false;
        loop {
            let changed = self.end.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(result) = self.end.outcome.get() {
                return result.clone();
            }
            if due {
                changed.await;
            } else {
                tokio::select! {
                    biased;
                    () = &mut changed => {}
                    () = crate::deadline::sleep_until(self.deadline) => due = true,
                }
            }
            // Nearly always what woke this wait: no need to listen again to learn it.
            if let Some(result) = self.end.outcome.get() {
                return result.clone();
            }
            // In a mutex, never contended: the future of a `stop()` is `Sync`, and the
            // steps' future need not be.
            let steps = self.service.clone().take_over(self.op, due).map(Mutex::new);
            if let Some(steps) = &steps {
                std::future::poll_fn(|cx| {
                    let mut steps = steps.lock().unwrap_or_else(PoisonError::into_inner);
                    steps.as_mut().poll(cx)
                })
                .await;
            }
        }
    }
}

/// Takes the end of a stop's loop for a waiting call (object-safe, so that a wait is not
/// generic over the service).
trait TakeOver: Send + Sync {
    /// Takes the end of the loop the stop `op` waits for, if no task has: at the
    /// deadline (`due`), or because the loop's task is gone. Returns what is left of the
    /// stop's steps, if anything, for this call to run.
    fn take_over(self: Arc<Self>, op: u64, due: bool) -> Option<BoxFuture<'static, ()>>;
}

impl<S: Service> TakeOver for Inner<S> {
    fn take_over(self: Arc<Self>, op: u64, due: bool) -> Option<BoxFuture<'static, ()>> {
        let mut ctl = self.lock();
        let stop = ctl.loop_stop().filter(|(id, _)| *id == op)?.1;
        let awaited = stop.awaited.take_if(|awaited| awaited.gone || due)?;
        let task = stop.task.clone();
        drop(ctl);
        let error = if awaited.gone {
            self.abandoned(OpKind::Stop)
        } else {
            // After the lock is released: the abort may drop the task in this very call,
            // and its guard takes the lock.
            task.abort();
            let limit = self.config().stop_timeout;
            self.logged(self.hook_error(
                HookKind::Run,
                run_hook_name::<S>(),
                HookFailure::Timeout(limit),
            ))
        };
        self.rest_of_loop_stop(op, vec![error])
    }
}

impl<S: Service> Inner<S> {
    /// Begins the stop of a service whose status the caller has just moved from
    /// `running` to `stopping`, with its loop `run` (taken from `Control::run`).
    pub(super) fn begin_loop_stop(
        self: &Arc<Self>,
        ctl: &mut Control,
        run: RunLoop,
        now: Instant,
    ) -> Waiting {
        let op = ctl.next_id();
        run.shutdown.request();
        let stop = LoopStop {
            end: Arc::new(StopEnd {
                outcome: OnceLock::new(),
                changed: Notify::new(),
            }),
            deadline: now + self.config().stop_timeout,
            task: run.task,
            awaited: Some(AwaitedLoop {
                id: run.id,
                gone: false,
            }),
        };
        let wait = stop.wait(op, self.clone());
        // A stop whose caller goes away outside any runtime goes on where its loop runs.
        let runtime = Some(run.runtime);
        ctl.op = Some(Box::new(Op {
            kind: OpKind::Stop,
            id: op,
            work: OpWork::InLoop(stop),
            cancel: None,
            runtime: runtime.clone(),
        }));
        Waiting::in_loop(wait, runtime)
    }

    /// The loop `id` a stop took has returned: takes its end for the loop's task, unless
    /// a waiting call took it at the deadline. Returns the stop's id.
    pub(super) fn take_returned_loop(ctl: &mut Control, id: u64) -> Option<u64> {
        let (op, stop) = ctl.loop_stop()?;
        stop.awaited.take_if(|awaited| awaited.id == id)?;
        Some(op)
    }

    /// The loop `id` a stop took is gone with its task, before it returned: a call
    /// waiting for the stop takes its end (nothing to do if no stop waits for it).
    pub(super) fn loop_task_gone(ctl: &mut Control, id: u64) {
        let Some((_, stop)) = ctl.loop_stop() else {
            return;
        };
        if let Some(awaited) = stop.awaited.as_mut().filter(|awaited| awaited.id == id) {
            awaited.gone = true;
            stop.end.changed.notify_waiters();
        }
    }

    /// The rest of the stop `op` once its loop's end is taken (`errors`: the loop's
    /// failure, or its timeout): components, cleanup hooks, the final transition; then the
    /// outcome is published. Done at once when the service owes neither components nor
    /// cleanup hooks; otherwise returns those steps, boxed, for the caller to run.
    pub(super) fn rest_of_loop_stop(
        self: Arc<Self>,
        op: u64,
        mut errors: Vec<ServiceError>,
    ) -> Option<BoxFuture<'static, ()>> {
        let mut guard = OpGuard::new(self.clone(), op, OpKind::Stop);
        let mut ctl = self.lock();
        if self.stop_steps_owed(&ctl) {
            // `cleanup_owed` stays set until the cleanup ran (see `stop_owed`).
            let (components, cleanup) = (std::mem::take(&mut ctl.components), ctl.cleanup_owed);
            drop(ctl);
            return Some(Box::pin(async move {
                errors.extend(self.stop_steps(components, cleanup).await);
                let error = ServiceError::combine(|| self.name().clone(), errors);
                let result = self.end_stop(&mut self.lock(), error);
                guard.finish(&result);
            }));
        }
        let error = ServiceError::combine(|| self.name().clone(), errors);
        let result = self.end_stop(&mut ctl, error);
        drop(ctl);
        guard.finish(&result);
        None
    }
}
