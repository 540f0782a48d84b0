//! The `#[run]` hook's task: spawned once the service is `running`, told to return
//! through its [`Shutdown`] by the stop that takes it (see [`loop_stop`](super::loop_stop):
//! the task then carries out the rest of that stop). A loop that returns on its own makes
//! a transition instead: an error moves the service to `error`, `Ok` asks for a stop.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{RwLockReadGuard, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::Managed;
use super::control::{Control, Inner, run_hook_name};
use super::hooks::panic_message;
use crate::__private::HookResult;
use crate::error::{BoxError, HookFailure, HookKind, ServiceError};
use crate::service::{Lifecycle, Service};
use crate::status::ServiceStatus;
use crate::{Ready, Shutdown};

/// The run loop of a `running` service.
pub(super) struct RunLoop {
    /// Tells this loop from an earlier one that returns late (aborted at a stop's
    /// deadline while it blocked its thread).
    pub(super) id: u64,
    pub(super) shutdown: Shutdown,
    pub(super) task: AbortHandle,
    /// The runtime the loop runs on: a stop whose caller goes away outside any runtime
    /// goes on in a task there.
    pub(super) runtime: Handle,
}

/// Futures up to this size are held in place in the loop's task; larger ones (a buffer
/// held across an `.await`) are boxed, so the task is not built on the stack of the
/// `start()` that spawns it.
const MAX_INLINE_RUN_FUTURE: usize = 1024;

/// The size of the future `S::__run` returns, without making one.
fn run_future_size<S: Lifecycle>() -> usize {
    fn size_of_output<'a, S: 'a, T, F>(_: fn(&'a S, Shutdown, Ready, Option<T>) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size_of_output(S::__run)
}

/// How a loop ended, for a start that waits for its ready signal: `None` for `Ok`.
pub(super) type EarlyExit = Option<HookFailure>;

/// What a run loop begins with.
pub(super) struct LoopStart<S: Service> {
    /// The hook's ready signal and where the loop's end goes while a start waits for
    /// it (see [`ready_wait`](super::ready_wait)); `None` for a loop `running` at once.
    pub(super) ready: Option<(Ready, oneshot::Sender<EarlyExit>)>,
    pub(super) state: Option<S::__RunState>,
}

impl<S: Service> LoopStart<S> {
    /// The start of a loop that is `running` at once.
    pub(super) fn running(state: Option<S::__RunState>) -> Self {
        LoopStart { ready: None, state }
    }
}

/// Inside a loop's task: reports the loop's exit, or the task dropped before it.
struct RunTaskGuard<S: Service> {
    /// A reference of the runtime's own, not a handle: dropping the last
    /// [`Managed`] still ends the loop.
    inner: Arc<Inner<S>>,
    id: u64,
    reported: bool,
}

impl<S: Service> RunTaskGuard<S> {
    /// Reports the loop's end and, if a stop took the loop, carries out the rest of it:
    /// returns the steps left to await, if any (boxed: the task lives as long as its
    /// loop, their state only at its end). `early_exit` is set while a start waits for
    /// the loop's ready signal: the loop's end goes there rather than to a transition,
    /// unless the start adopted the loop (closed the receiver) by then.
    fn end(
        mut self,
        outcome: Result<HookResult, String>,
        early_exit: Option<oneshot::Sender<EarlyExit>>,
    ) -> Option<BoxFuture<'static, ()>> {
        self.reported = true;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(HookFailure::Error(Arc::from(error))),
            Err(panic) => Some(HookFailure::Panic(panic)),
        };
        // A start that waits for this loop's ready signal takes its end instead.
        let failure = match early_exit {
            Some(early_exit) => match self.inner.hand_to_start(self.id, early_exit, failure) {
                Ok(()) => return None,
                Err(failure) => failure,
            },
            None => failure,
        };
        let (op, error) = self.inner.clone().on_run_exit(self.id, failure)?;
        let errors = error.into_iter().collect();
        self.inner.clone().rest_of_loop_stop(op, errors)
    }
}

impl<S: Service> Drop for RunTaskGuard<S> {
    fn drop(&mut self) {
        if !self.reported {
            self.inner.run_task_dropped(self.id);
        }
    }
}

/// The service's read guard for its run loop.
async fn read_for_run<S: Service>(inner: &Inner<S>) -> RwLockReadGuard<'_, S> {
    match inner.service.try_read() {
        Ok(guard) => guard,
        Err(_) => inner.service.read().await,
    }
}

impl<S: Service> Inner<S> {
    /// Spawns the run loop of a service that has one, on the current runtime.
    pub(super) fn spawn_run_loop(
        self: &Arc<Self>,
        ctl: &mut Control,
        start: LoopStart<S>,
    ) -> Result<Option<RunLoop>, ServiceError> {
        if S::__HOOKS.run.is_none() {
            return Ok(None);
        }
        let Ok(runtime) = Handle::try_current() else {
            return Err(self.hook_error(
                HookKind::Run,
                run_hook_name::<S>(),
                HookFailure::Error(Arc::from(BoxError::from(
                    "there is no tokio runtime to spawn it on: start the service from within one",
                ))),
            ));
        };
        let id = ctl.next_id();
        let shutdown = Shutdown::new();
        // Moved into the task, so that it also reports a task dropped before its first poll.
        let guard = RunTaskGuard {
            inner: self.clone(),
            id,
            reported: false,
        };
        let state = start.state;
        let task = match start.ready {
            None if run_future_size::<S>() <= MAX_INLINE_RUN_FUTURE => {
                self.spawn_run_task_inline(guard, shutdown.clone(), state)
            }
            ready => self.spawn_run_task_boxed(guard, shutdown.clone(), ready, state),
        };
        Ok(Some(RunLoop {
            id,
            shutdown,
            task,
            runtime,
        }))
    }

    // Each way in a function of its own, so that neither stack frame holds the other's
    // future. A loop whose start waits for its ready signal goes the boxed way: rare, it
    // keeps the `Ready` out of every other loop's task.
    #[inline(never)]
    fn spawn_run_task_inline(
        &self,
        guard: RunTaskGuard<S>,
        shutdown: Shutdown,
        state: Option<S::__RunState>,
    ) -> AbortHandle {
        self.spawn_run_task(async move {
            let outcome = {
                let service = read_for_run(&guard.inner).await;
                AssertUnwindSafe(service.__run(shutdown, Ready::unused(), state))
                    .catch_unwind()
                    .await
            };
            let outcome = outcome.map_err(|panic| panic_message(&*panic));
            if let Some(steps) = guard.end(outcome, None) {
                steps.await;
            }
        })
    }

    #[inline(never)]
    fn spawn_run_task_boxed(
        &self,
        guard: RunTaskGuard<S>,
        shutdown: Shutdown,
        ready: Option<(Ready, oneshot::Sender<EarlyExit>)>,
        state: Option<S::__RunState>,
    ) -> AbortHandle {
        self.spawn_run_task(async move {
            let (ready, early_exit) = match ready {
                Some((ready, early_exit)) => (ready, Some(early_exit)),
                None => (Ready::unused(), None),
            };
            let outcome = {
                let service = read_for_run(&guard.inner).await;
                AssertUnwindSafe(Box::pin(service.__run(shutdown, ready, state)))
                    .catch_unwind()
                    .await
            };
            let outcome = outcome.map_err(|panic| panic_message(&*panic));
            if let Some(steps) = guard.end(outcome, early_exit) {
                steps.await;
            }
        })
    }

    fn spawn_run_task<F>(&self, task: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = self.hook_span(HookKind::Run, run_hook_name::<S>());
        // A span no subscriber wanted stays disabled for good: entering it at every poll
        // would do nothing.
        if span.is_disabled() {
            tokio::spawn(task).abort_handle()
        } else {
            tokio::spawn(task.instrument(span)).abort_handle()
        }
    }

    /// The loop `id` returned. While it is the service's current loop (`running`), an
    /// error moves the service to `error` (cleanup stays owed until `stop()`) and `Ok`
    /// stops it. A loop a stop took ends that stop's wait for it: returns the stop's id,
    /// for the loop's task to carry out the rest, unless the stop's deadline passed.
    fn on_run_exit(
        self: Arc<Self>,
        id: u64,
        failure: Option<HookFailure>,
    ) -> Option<(u64, Option<ServiceError>)> {
        let hook = run_hook_name::<S>();
        let error = failure.map(|failure| self.hook_error(HookKind::Run, hook, failure));
        if let Some(error) = &error {
            tracing::error!(parent: &self.hook_span(HookKind::Run, hook), %error, "hook failed");
        }
        let mut ctl = self.lock();
        if ctl.run.as_ref().is_none_or(|run| run.id != id) {
            let op = Self::take_returned_loop(&mut ctl, id)?;
            return Some((op, error));
        }
        ctl.run = None;
        match error {
            Some(error) => {
                ctl.end_components_watch();
                self.transition(&mut ctl, ServiceStatus::Error, Some(error), Instant::now());
            }
            None => {
                drop(ctl);
                tracing::info!(parent: &self.span(), hook, "run hook returned; stopping the service");
                tokio::spawn(async move {
                    let _ = Managed::counted(self).stop().await;
                });
            }
        }
        None
    }

    /// The loop `id`'s task was dropped before the loop returned (its runtime shut
    /// down). A `running` service moves to `error`, its loop no longer owed to a stop; a
    /// stop waiting for the loop goes on in a call that waits for it.
    fn run_task_dropped(&self, id: u64) {
        let mut ctl = self.lock();
        if ctl.run.as_ref().is_none_or(|run| run.id != id) {
            Self::loop_task_gone(&mut ctl, id);
            return;
        }
        ctl.run = None;
        if self.status() == ServiceStatus::Starting {
            // A start waits for the loop's ready signal: it owns the status, and learns
            // of the task's end from its channel, whose sender the task dropped.
            return;
        }
        ctl.end_components_watch();
        // Not logged as a failure: it happens at every program exit that leaves a
        // service running; the transition records it (at info level).
        let error = self.hook_error(
            HookKind::Run,
            run_hook_name::<S>(),
            HookFailure::Error(Arc::from(BoxError::from(
                "its task was dropped before it returned (its tokio runtime shut down)",
            ))),
        );
        self.transition(&mut ctl, ServiceStatus::Error, Some(error), Instant::now());
    }

    /// One handle less: the last one ends the run loop.
    pub(super) fn release_handle(&self) {
        // AcqRel, as `Arc`'s drop: every use through the other handles happens before
        // the loop is ended.
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.last_handle_gone();
        }
    }

    /// Nothing can stop the run loop any more: tell it to return and abort its task,
    /// which holds the service. A loop spawned later by a start still finishing in a
    /// task of its own is ended when that start ends.
    pub(super) fn last_handle_gone(&self) {
        let run = {
            let mut ctl = self.lock();
            ctl.end_components_watch();
            ctl.run.take()
        };
        if let Some(run) = run {
            run.shutdown.request();
            // After the lock is released: the abort may drop the task in this very
            // call, and its guard takes the lock.
            run.task.abort();
        }
    }
}
