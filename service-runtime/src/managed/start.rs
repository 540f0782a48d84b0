//! A start: init hooks in source order, components in field order, then `running` and the
//! run loop; a failure undoes what was done and ends in `error`, a cancellation by
//! `stop()` undoes it and ends in `stopped`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::RwLockWriteGuard;
use tokio::time::Instant;

use super::cancel::StartCancelled;
use super::control::{Control, Inner};
use super::decide::OpKind;
use super::hooks::HookOutcome;
use super::operation::{OpResult, Waiting};
use super::run_loop::LoopStart;
use crate::__private::ComponentEntry;
use crate::error::{BoxError, HookFailure, HookKind, ServiceError};
use crate::service::Service;
use crate::status::ServiceStatus;

impl<S: Service> Inner<S> {
    /// Whether a start has nothing to await: no init hook, no cleanup owed from a failed
    /// run, no component, no ready signal of the run loop.
    pub(super) fn start_owes_nothing(&self, ctl: &Control) -> bool {
        if !S::__HOOKS.init.is_empty()
            || S::__HOOKS.run_ready
            || ctl.cleanup_owed
            || !ctl.components.is_empty()
        {
            return false;
        }
        let Ok(service) = self.service.try_read() else {
            return false;
        };
        let mut components = Vec::new();
        service.__components(&mut components);
        components.is_empty()
    }

    /// `starting` and `running` at once (see [`start_owes_nothing`](Self::start_owes_nothing)).
    pub(super) fn start_inline(self: &Arc<Self>, ctl: &mut Control) -> OpResult {
        let now = Instant::now();
        self.transition(ctl, ServiceStatus::Starting, None, now);
        self.become_running(ctl, Vec::new(), None, now)
    }

    /// Begins a start from `stopped` or `error`. From `error` with cleanup or components
    /// owed, the start first stops what the failed run left (`error → stopping →
    /// stopped`), then starts.
    pub(super) fn begin_start(self: &Arc<Self>, ctl: &mut Control) -> Waiting {
        let restart_cleanup = self.status() == ServiceStatus::Error
            && (ctl.cleanup_owed || !ctl.components.is_empty());
        let first = if restart_cleanup {
            ServiceStatus::Stopping
        } else {
            ServiceStatus::Starting
        };
        drop(ctl.take_stop_cause());
        self.transition(ctl, first, None, Instant::now());
        self.begin(ctl, OpKind::Start, move |inner, id| {
            inner.start_sequence(StartCancelled { id }, restart_cleanup)
        })
    }

    /// The last step of every start: `running`, then the run loop, spawned with the
    /// status already `running` (its first poll sees it, and a loop that stops its own
    /// service makes a normal stop of a running one). Without a runtime to spawn the loop
    /// on, `error`, what was started left for a stop to undo.
    fn become_running(
        self: &Arc<Self>,
        ctl: &mut Control,
        components: Vec<ComponentEntry>,
        state: Option<S::__RunState>,
        now: Instant,
    ) -> OpResult {
        self.enter_running(ctl, components, now);
        match self.spawn_run_loop(ctl, LoopStart::running(state)) {
            Ok(run) => {
                ctl.run = run;
                self.watch_components(ctl);
                Ok(())
            }
            Err(error) => Err(self.fail(ctl, error)),
        }
    }

    /// `running`, with what the start started: cleanup is owed from now on.
    pub(super) fn enter_running(
        &self,
        ctl: &mut Control,
        components: Vec<ComponentEntry>,
        now: Instant,
    ) {
        ctl.components = components;
        ctl.cleanup_owed = true;
        self.transition(ctl, ServiceStatus::Running, None, now);
    }

    /// The work of a start. Ends `running`, `error` (the start failed) or `stopped` (the
    /// start was cancelled by `stop()`).
    async fn start_sequence(
        self: Arc<Self>,
        cancel: StartCancelled,
        restart_cleanup: bool,
    ) -> OpResult {
        if restart_cleanup {
            Box::pin(self.stop_owed()).await?;
            let mut ctl = self.lock();
            if cancel.is_requested_in(&ctl) {
                return Err(self.cancelled());
            }
            self.transition(&mut ctl, ServiceStatus::Starting, None, Instant::now());
        }
        let mut service = match self.write_for_init(cancel).await {
            Ok(service) => service,
            Err(None) => return Err(Box::pin(self.abandon_start(Vec::new(), false)).await),
            Err(Some(error)) => {
                let mut ctl = self.lock();
                return Err(self.fail(&mut ctl, error));
            }
        };
        // Filled by the `#[init(state)]` hook, for the run loop.
        let mut state = None;
        for (index, spec) in S::__HOOKS.init.iter().enumerate() {
            let timeout = spec.timeout.unwrap_or(self.config().start_timeout);
            let future = service.__init(index, &mut state);
            match self
                .run_hook(HookKind::Init, spec.name, future, timeout, Some(cancel))
                .await
            {
                HookOutcome::Done => {}
                HookOutcome::Cancelled => {
                    drop(service);
                    return Err(Box::pin(self.abandon_start(Vec::new(), false)).await);
                }
                HookOutcome::Failed(failure) => {
                    let error = self.hook_error(HookKind::Init, spec.name, failure);
                    let mut ctl = self.lock();
                    return Err(self.fail(&mut ctl, error));
                }
            }
        }
        let mut components = Vec::new();
        service.__components(&mut components);
        drop(service);

        // Boxed: only services with components carry the state of starting them.
        let started = if components.is_empty() {
            Vec::new()
        } else {
            Box::pin(self.start_components(components, cancel)).await?
        };

        if S::__HOOKS.run_ready {
            // Boxed: only services whose run hook signals ready carry this wait.
            return Box::pin(self.start_awaiting_ready(started, state, cancel)).await;
        }
        // Decided under one lock with `stop()`'s request: a cancelled start never runs.
        let running = {
            let mut ctl = self.lock();
            if cancel.is_requested_in(&ctl) {
                Err(started)
            } else {
                Ok(self.become_running(&mut ctl, started, state, Instant::now()))
            }
        };
        let result = match running {
            Ok(result) => result,
            Err(started) => return Err(Box::pin(self.abandon_start(started, true)).await),
        };
        // This start may end in a task after every handle went: nothing could stop the
        // loop it spawned, so it ends now.
        if self.handles.load(Ordering::Acquire) == 0 {
            self.last_handle_gone();
        }
        result
    }

    /// Starts the components in field order; on a failure or a cancellation, undoes the
    /// start (see [`fail_start`](Self::fail_start), [`abandon_start`](Self::abandon_start)).
    async fn start_components(
        &self,
        components: Vec<ComponentEntry>,
        cancel: StartCancelled,
    ) -> Result<Vec<ComponentEntry>, ServiceError> {
        let cancel = cancel.token(self);
        let mut started = Vec::with_capacity(components.len());
        for entry in components {
            match cancel.run_until_cancelled(entry.handle.0.start()).await {
                Some(Ok(())) => started.push(entry),
                None => {
                    // The child's start goes on in its own task; stopping it cancels it.
                    started.push(entry);
                    return Err(self.abandon_start(started, true).await);
                }
                Some(Err(error)) => {
                    let error = ServiceError::Component {
                        service: self.name().clone(),
                        component: entry.field.clone(),
                        source: Box::new(error),
                    };
                    return Err(self.fail_start(error, started).await);
                }
            }
        }
        Ok(started)
    }

    /// Exclusive access for the init hooks. A `read()` guard held elsewhere can delay
    /// it, never past the start timeout; `stop()` still cancels the wait. `Err(None)`:
    /// cancelled.
    async fn write_for_init(
        &self,
        cancel: StartCancelled,
    ) -> Result<RwLockWriteGuard<'_, S>, Option<ServiceError>> {
        if let Ok(service) = self.service.try_write() {
            return Ok(service);
        }
        let limit = self.config().start_timeout;
        // Boxed: a rare wait, kept out of every start's future.
        match Box::pin(
            cancel
                .token(self)
                .run_until_cancelled_owned(tokio::time::timeout(limit, self.service.write())),
        )
        .await
        {
            None => Err(None),
            Some(Ok(service)) => Ok(service),
            Some(Err(_)) => {
                let hook = S::__HOOKS.init.first().map_or("init", |spec| spec.name);
                Err(Some(self.logged(self.hook_error(
                    HookKind::Init,
                    hook,
                    HookFailure::Error(Arc::from(BoxError::from(format!(
                        "no init hook ran: a `Managed::read()` guard still held the service after {limit:?}"
                    )))),
                ))))
            }
        }
    }

    /// A start failed after every init hook completed: undo it (components, cleanup
    /// hooks) and end in `error` with the first cause.
    pub(super) async fn fail_start(
        &self,
        error: ServiceError,
        started: Vec<ComponentEntry>,
    ) -> ServiceError {
        for secondary in self.stop_steps(started, true).await {
            // Each was logged where it happened; this ties it to the failed start.
            tracing::debug!(parent: &self.span(), error = %secondary, "while undoing a failed start");
        }
        self.fail(&mut self.lock(), error)
    }

    /// `stop()` cancelled the start: `starting → stopping`, undo what was done, `→ stopped`.
    pub(super) async fn abandon_start(
        &self,
        started: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> ServiceError {
        self.transition(
            &mut self.lock(),
            ServiceStatus::Stopping,
            None,
            Instant::now(),
        );
        let errors = self.stop_steps(started, cleanup).await;
        let mut ctl = self.lock();
        match ServiceError::combine(|| self.name().clone(), errors) {
            None => self.transition(&mut ctl, ServiceStatus::Stopped, None, Instant::now()),
            Some(error) => drop(self.fail(&mut ctl, error)),
        }
        self.cancelled()
    }

    fn cancelled(&self) -> ServiceError {
        ServiceError::StartCancelled {
            service: self.name().clone(),
        }
    }
}
