//! A start: init hooks in source order, components in field order, then the run loop and
//! `running`; a failure or a cancellation undoes what was done.

use super::*;

impl<S: Service> Inner<S> {
    /// Starts at once, without an operation, when there is nothing to await: no init
    /// hook, no component, no cleanup owed (a run hook is spawned, not awaited).
    /// Observers see the same transitions.
    pub(super) fn start_inline(self: &Arc<Self>, ctl: &mut Control) -> bool {
        if !S::__HOOKS.init.is_empty() || ctl.cleanup_owed || !ctl.components.is_empty() {
            return false;
        }
        // Spawning the run loop needs a runtime; without one, the operation path fails
        // cleanly (the service ends in `error`) instead of panicking half-way.
        if S::__HOOKS.run.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let Ok(service) = self.service.try_read() else {
            return false;
        };
        let mut components = Vec::new();
        service.__components(&mut components);
        if !components.is_empty() {
            return false;
        }
        drop(service);
        let now = Instant::now();
        self.transition_at(ctl, ServiceStatus::Starting, None, now);
        // The run loop cannot report an exit before `ctl` is released, by then `running`.
        ctl.run = S::__HOOKS.run.map(|_| self.spawn_run_loop());
        self.transition_at(ctl, ServiceStatus::Running, None, now);
        ctl.cleanup_owed = true;
        true
    }

    /// Registers a start operation and returns it for the caller to drive. Called with
    /// `ctl` held, no op in flight, status `stopped` or `error`.
    pub(super) fn begin_start(self: Arc<Self>, ctl: &mut Control) -> Arc<OpShared> {
        // Only the loop this start spawns may report an early exit.
        ctl.early_run_exit = None;
        let cancel = Shutdown::new();
        let restart_cleanup = self.status() == ServiceStatus::Error
            && (ctl.cleanup_owed || !ctl.components.is_empty());
        let first = if restart_cleanup {
            ServiceStatus::Stopping
        } else {
            ServiceStatus::Starting
        };
        self.transition(ctl, first, None);
        let signal = cancel.clone();
        self.begin(ctl, OpKind::Start, Some(cancel), move |inner| {
            inner.start_sequence(signal, restart_cleanup)
        })
    }

    /// The body of a start operation. Returns once the service is `running`, `error`
    /// (the start failed) or `stopped` (the start was cancelled).
    pub(super) async fn start_sequence(
        self: Arc<Self>,
        cancel: Shutdown,
        restart_cleanup: bool,
    ) -> Result<(), ServiceError> {
        if restart_cleanup {
            Box::pin(self.stop_owed()).await?;
            let mut ctl = self.lock();
            if cancel.is_requested() {
                return Err(self.cancelled());
            }
            self.transition(&mut ctl, ServiceStatus::Starting, None);
        }

        // Exclusive access for the init hooks; a `read()` guard held elsewhere can delay
        // it, but never past the start timeout, and `stop()` still cancels the wait.
        let limit = self.settings.get().start_timeout;
        let acquired = match self.service.try_write() {
            Ok(service) => Some(Ok(service)),
            // Boxed: a timer would enlarge every start's future.
            Err(_) => Box::pin(async {
                tokio::select! {
                    biased;
                    () = cancel.requested() => None,
                    acquired = tokio::time::timeout(limit, self.service.write()) => Some(acquired),
                }
            })
            .await,
        };
        let mut service = match acquired {
            None => return Err(Box::pin(self.abandon_start(None, Vec::new(), false)).await),
            Some(Ok(service)) => service,
            Some(Err(_)) => {
                let hook = S::__HOOKS.init.first().map_or("init", |spec| spec.name);
                let error = self.logged(self.hook_error(
                    HookKind::Init,
                    hook,
                    HookFailure::Error(Arc::from(BoxError::from(format!(
                        "no init hook ran: a `Managed::read()` guard still held the service after {limit:?}"
                    )))),
                ));
                let mut ctl = self.lock();
                self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
                return Err(error);
            }
        };
        for (index, spec) in S::__HOOKS.init.iter().enumerate() {
            let timeout = spec.timeout.unwrap_or(self.settings.get().start_timeout);
            let future = service.__init(index);
            match self
                .run_hook(HookKind::Init, spec.name, future, timeout, Some(&cancel))
                .await
            {
                Outcome::Done => {}
                Outcome::Cancelled => {
                    drop(service);
                    return Err(Box::pin(self.abandon_start(None, Vec::new(), false)).await);
                }
                Outcome::Failed(failure) => {
                    let error = self.hook_error(HookKind::Init, spec.name, failure);
                    let mut ctl = self.lock();
                    self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
                    return Err(error);
                }
            }
        }
        let mut components = Vec::new();
        service.__components(&mut components);
        drop(service);

        let mut started = Vec::with_capacity(components.len());
        for entry in components {
            let result = tokio::select! {
                biased;
                () = cancel.requested() => None,
                result = entry.handle.0.start() => Some(result),
            };
            match result {
                Some(Ok(())) => started.push(entry),
                None => {
                    // The child's start goes on in its own task; stopping it cancels it.
                    started.push(entry);
                    return Err(Box::pin(self.abandon_start(None, started, true)).await);
                }
                Some(Err(error)) => {
                    let error = ServiceError::Component {
                        service: self.name().clone(),
                        component: entry.field,
                        source: Box::new(error),
                    };
                    return Err(Box::pin(self.fail_start(error, None, started)).await);
                }
            }
        }

        let run = S::__HOOKS.run.map(|_| self.spawn_run_loop());
        // Decide under the lock, act after releasing it (no guard lives across `.await`).
        let undo = {
            let mut ctl = self.lock();
            let early_exit = ctl.early_run_exit.take();
            if cancel.is_requested() {
                Some((None, run, started))
            } else if let Some(Some(error)) = early_exit {
                Some((Some(*error), run, started))
            } else {
                let finished_early = early_exit.is_some();
                ctl.run = run;
                ctl.components = started;
                ctl.cleanup_owed = true;
                self.transition(&mut ctl, ServiceStatus::Running, None);
                if finished_early {
                    // The run hook returned `Ok` before the start finished: it is done, so stop.
                    drop(ctl);
                    self.clone().stop_after_run_returned();
                }
                None
            }
        };
        // This start may be finishing in a task of its own after every handle went: the
        // loop it spawned would run on (its task holds the service), so end it now.
        if undo.is_none() && self.handles.load(Ordering::Acquire) == 0 {
            self.last_handle_gone();
        }
        match undo {
            None => Ok(()),
            Some((None, run, started)) => {
                Err(Box::pin(self.abandon_start(run, started, true)).await)
            }
            Some((Some(error), run, started)) => {
                Err(Box::pin(self.fail_start(error, run, started)).await)
            }
        }
    }

    /// A start failed after every init hook completed: undo it (run loop, components,
    /// cleanup hooks) and end in `error` with the first cause.
    pub(super) async fn fail_start(
        &self,
        error: ServiceError,
        run: Option<RunLoop>,
        started: Vec<ComponentEntry>,
    ) -> ServiceError {
        for secondary in self.stop_steps(run, started, true).await {
            // Each was logged where it happened; this ties it to the failed start.
            tracing::debug!(parent: &self.span(), error = %secondary, "while undoing a failed start");
        }
        let mut ctl = self.lock();
        ctl.early_run_exit = None;
        self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
        error
    }

    /// `stop()` cancelled the start: `starting → stopping`, undo what was done, `→ stopped`.
    pub(super) async fn abandon_start(
        &self,
        run: Option<RunLoop>,
        started: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> ServiceError {
        {
            let mut ctl = self.lock();
            self.transition(&mut ctl, ServiceStatus::Stopping, None);
        }
        let errors = self.stop_steps(run, started, cleanup).await;
        let mut ctl = self.lock();
        ctl.early_run_exit = None;
        match ServiceError::combine(self.name(), errors) {
            None => self.transition(&mut ctl, ServiceStatus::Stopped, None),
            Some(error) => self.transition(&mut ctl, ServiceStatus::Error, Some(error)),
        }
        self.cancelled()
    }

    pub(super) fn cancelled(&self) -> ServiceError {
        ServiceError::StartCancelled {
            service: self.name().clone(),
        }
    }
}
