//! The `#[run]` hook's task: spawned at the end of a start, told to return through its
//! [`Shutdown`], and reporting its exit (an error moves the service to `error`, `Ok`
//! stops it, and a stop waiting for it ends).

use super::*;

pub(super) struct RunLoop {
    pub(super) shutdown: Shutdown,
    pub(super) handle: JoinHandle<Option<ServiceError>>,
}

/// Inside a run task: holds the service for the loop, and reports the task dropped
/// before its loop returned.
pub(super) struct RunExitGuard<S: Service> {
    /// A reference of the runtime's own, not a handle: dropping the last [`Managed`]
    /// still ends the loop ([`Inner::last_handle_gone`]).
    pub(super) inner: Arc<Inner<S>>,
    /// The loop returned and reported it.
    pub(super) reported: bool,
    /// The loop's own signal: tells this loop apart from a later one.
    pub(super) signal: Shutdown,
}

impl<S: Service> RunExitGuard<S> {
    /// The loop returned with `outcome`: reports it (see [`Inner::on_run_exit`]); the
    /// task's output is the error left for a stop in flight.
    pub(super) fn finish(
        &mut self,
        outcome: Result<crate::__private::HookResult, String>,
    ) -> Option<ServiceError> {
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(HookFailure::Error(Arc::from(error))),
            Err(panic) => Some(HookFailure::Panic(panic)),
        };
        self.reported = true;
        self.inner
            .clone()
            .on_run_exit(run_hook_name::<S>(), error, &self.signal)
    }
}

/// The service's read guard for its run loop.
pub(super) async fn read_for_run<S: Service>(inner: &Inner<S>) -> RwLockReadGuard<'_, S> {
    let service = &inner.service;
    match service.try_read() {
        Ok(guard) => guard,
        // Boxed: rare (a `read()` guard held elsewhere at the loop's start).
        Err(_) => Box::pin(service.read()).await,
    }
}

/// The largest run future kept in place in its task (see `Inner::spawn_run_loop`).
pub(super) const MAX_INLINE_RUN_FUTURE: usize = 1024;

/// The size of the future `S::__run` returns, without making one.
pub(super) fn run_future_size<S: Lifecycle>() -> usize {
    fn size_of_output<'a, S: 'a, F>(_: fn(&'a S, Shutdown) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size_of_output(S::__run)
}

impl<S: Service> Drop for RunExitGuard<S> {
    fn drop(&mut self) {
        if !self.reported {
            self.inner.run_task_dropped(&self.signal);
        }
    }
}

/// Whether the loop of `signal` is the one `ctl` keeps (not one that an earlier stop
/// took, or aborted at its deadline).
pub(super) fn is_current_loop(ctl: &Control, signal: &Shutdown) -> bool {
    ctl.run
        .as_ref()
        .is_some_and(|run| run.shutdown.is_same(signal))
}

impl<S: Service> Inner<S> {
    pub(super) fn spawn_run_loop(self: &Arc<Self>) -> RunLoop {
        let shutdown = Shutdown::new();
        // Moved into the task, so that it also reports a task dropped before its first poll.
        let exit = RunExitGuard {
            inner: self.clone(),
            reported: false,
            signal: shutdown.clone(),
        };
        // A task's future is built here, on the stack of the `start()` that spawns it:
        // a large run future (a buffer held across an `.await`) is boxed inside the
        // task instead, each way in a function of its own so that neither frame holds
        // the other's future.
        let handle = if run_future_size::<S>() <= MAX_INLINE_RUN_FUTURE {
            self.spawn_run_task_inline(exit)
        } else {
            self.spawn_run_task_boxed(exit)
        };
        RunLoop { shutdown, handle }
    }

    #[inline(never)]
    pub(super) fn spawn_run_task_inline(
        &self,
        mut exit: RunExitGuard<S>,
    ) -> JoinHandle<Option<ServiceError>> {
        self.spawn_run_task(async move {
            let outcome = {
                let guard = read_for_run(&exit.inner).await;
                let run = std::pin::pin!(guard.__run(exit.signal.clone()));
                catch_unwind_future(run).await
            };
            exit.finish(outcome)
        })
    }

    #[inline(never)]
    pub(super) fn spawn_run_task_boxed(
        &self,
        mut exit: RunExitGuard<S>,
    ) -> JoinHandle<Option<ServiceError>> {
        self.spawn_run_task(async move {
            let outcome = {
                let guard = read_for_run(&exit.inner).await;
                catch_unwind_future(Box::pin(guard.__run(exit.signal.clone()))).await
            };
            exit.finish(outcome)
        })
    }

    pub(super) fn spawn_run_task<F>(&self, task: F) -> JoinHandle<Option<ServiceError>>
    where
        F: Future<Output = Option<ServiceError>> + Send + 'static,
    {
        let span = self.hook_span(HookKind::Run, run_hook_name::<S>());
        // A span no subscriber wanted stays disabled for good: entering it at every poll
        // would do nothing.
        if span.is_disabled() {
            tokio::spawn(task)
        } else {
            tokio::spawn(task.instrument(span))
        }
    }

    /// The run loop ended. While `running`, an error moves the service to `error`
    /// (cleanup stays owed until `stop()`), and `Ok` stops the service. A [`OpKind::RunStop`]
    /// ends here. While starting or stopping otherwise, the operation in flight reports
    /// it; the returned error is for it.
    ///
    /// `signal` tells the loop apart: a loop aborted by an earlier stop's timeout may
    /// report late, when another loop already runs; only the loop in `ctl.run` counts.
    pub(super) fn on_run_exit(
        self: Arc<Self>,
        hook: &'static str,
        failure: Option<HookFailure>,
        signal: &Shutdown,
    ) -> Option<ServiceError> {
        let error = failure.map(|failure| self.hook_error(HookKind::Run, hook, failure));
        if let Some(error) = &error {
            tracing::error!(parent: &self.hook_span(HookKind::Run, hook), %error, "hook failed");
        }
        let mut ctl = self.lock();
        let current = is_current_loop(&ctl, signal);
        match self.status() {
            ServiceStatus::Running if !current => error,
            ServiceStatus::Running => {
                // The loop is no longer owed: a stop from now on must not wait for it.
                ctl.run = None;
                match error {
                    Some(error) => self.transition(&mut ctl, ServiceStatus::Error, Some(error)),
                    None => {
                        drop(ctl);
                        tracing::info!(parent: &self.span(), hook, "run hook returned; stopping the service");
                        self.stop_after_run_returned();
                    }
                }
                None
            }
            // A loop of an earlier run (aborted at a stop's deadline while it blocked its
            // thread) had its shutdown requested; the loop this start spawned has not.
            ServiceStatus::Starting if signal.is_requested() => error,
            ServiceStatus::Starting => {
                ctl.early_run_exit = Some(error.map(Box::new));
                None
            }
            ServiceStatus::Stopping => {
                match ctl.op.take_if(|op| current && op.kind == OpKind::RunStop) {
                    Some(op) => {
                        self.end_run_stop(ctl, op, error);
                        None
                    }
                    None => error,
                }
            }
            _ => error,
        }
    }

    /// The run task was dropped before its loop returned (its runtime shut down). A
    /// [`OpKind::RunStop`] waiting for it ends in `error` now rather than at its deadline; a
    /// `running` service moves to `error`, its loop no longer owed to a stop.
    pub(super) fn run_task_dropped(&self, signal: &Shutdown) {
        let mut ctl = self.lock();
        if !is_current_loop(&ctl, signal) {
            return;
        }
        if let Some(op) = ctl.op.take_if(|op| op.kind == OpKind::RunStop) {
            let error = ServiceError::Abandoned {
                service: self.name().clone(),
                operation: "stop",
            };
            self.end_run_stop(ctl, op, Some(error));
        } else if self.status() == ServiceStatus::Running {
            ctl.run = None;
            // Not logged as a failure: it happens at every program exit that leaves a
            // service running; the transition records it (at info level).
            let error = self.hook_error(
                HookKind::Run,
                run_hook_name::<S>(),
                HookFailure::Error(Arc::from(BoxError::from(
                    "its task was dropped before it returned (its tokio runtime shut down)",
                ))),
            );
            self.transition(&mut ctl, ServiceStatus::Error, Some(error));
        }
    }

    /// One handle less: the last one ends the run loop (see [`Inner::handles`]).
    pub(super) fn release_handle(&self) {
        // AcqRel, as `Arc`'s drop: every use through the other handles happens before
        // the loop is ended.
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.last_handle_gone();
        }
    }

    /// Nothing can stop the run loop any more: request its shutdown and abort its task,
    /// which holds the service (a loop that returned, or none, leaves nothing to do).
    /// A loop spawned later by a start still finishing in a task of its own is ended
    /// when that start ends (the check at the end of [`Inner::start_sequence`]).
    pub(super) fn last_handle_gone(&self) {
        let run = self.lock().run.take();
        if let Some(run) = run {
            run.shutdown.request();
            // After the lock is released: the abort may drop the task in this very
            // call, and its guard takes the lock.
            run.handle.abort();
        }
    }

    pub(super) fn stop_after_run_returned(self: Arc<Self>) {
        tokio::spawn(async move {
            let _ = Managed::counted(self).stop().await;
        });
    }
}
