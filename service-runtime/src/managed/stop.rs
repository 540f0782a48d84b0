//! A stop: the run loop told to return and awaited (bounded), components stopped in
//! reverse, cleanup hooks run in reverse; every error collected.

use super::*;

impl<S: Service> Inner<S> {
    /// Stops at once, without a task, when there is nothing to await: no run loop, no
    /// component, and no cleanup hook owed.
    pub(super) fn stop_inline(&self, ctl: &mut Control) -> bool {
        let cleanup = ctl.cleanup_owed && !S::__HOOKS.cleanup.is_empty();
        if ctl.run.is_some() || !ctl.components.is_empty() || cleanup {
            return false;
        }
        ctl.cleanup_owed = false;
        let now = Instant::now();
        self.transition_at(ctl, ServiceStatus::Stopping, None, now);
        self.transition_at(ctl, ServiceStatus::Stopped, None, now);
        true
    }

    /// Registers a stop operation and returns it for the caller to drive. Called with
    /// `ctl` held, no op in flight, status `running` or `error` with something to clean up.
    pub(super) fn begin_stop(self: Arc<Self>, ctl: &mut Control) -> Arc<OpShared> {
        self.transition(ctl, ServiceStatus::Stopping, None);
        self.begin(ctl, OpKind::Stop, None, |inner| async move {
            inner.stop_owed().await
        })
    }

    /// The last step of every stop: nothing is owed any more; `stopped`, or `error` with
    /// `error`, which is also the stop's outcome.
    pub(super) fn end_stop(
        &self,
        ctl: &mut Control,
        error: Option<ServiceError>,
    ) -> Result<(), ServiceError> {
        ctl.cleanup_owed = false;
        match error {
            None => {
                self.transition(ctl, ServiceStatus::Stopped, None);
                Ok(())
            }
            Some(error) => {
                self.transition(ctl, ServiceStatus::Error, Some(error.clone()));
                Err(error)
            }
        }
    }

    /// Takes what a stop owes from `ctl`, runs the stop steps and ends in `stopped` or
    /// `error`. Status is `stopping` on entry.
    pub(super) async fn stop_owed(&self) -> Result<(), ServiceError> {
        let (run, components, cleanup) = {
            let mut ctl = self.lock();
            // `cleanup_owed` stays set until the cleanup ran: a stop abandoned half-way
            // (its runtime shut down) leaves it owed to the next start.
            (
                ctl.run.take(),
                std::mem::take(&mut ctl.components),
                ctl.cleanup_owed,
            )
        };
        let errors = self.stop_steps(run, components, cleanup).await;
        let error = ServiceError::combine(self.name(), errors);
        self.end_stop(&mut self.lock(), error)
    }

    /// Stops the run loop, the components (in reverse) and runs the cleanup hooks (in
    /// reverse), collecting every error. Each step is bounded by its timeout.
    pub(super) async fn stop_steps(
        &self,
        run: Option<RunLoop>,
        components: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> Vec<ServiceError> {
        let mut errors = Vec::new();
        if let Some(RunLoop {
            shutdown,
            mut handle,
        }) = run
        {
            shutdown.request();
            let limit = self.settings.get().stop_timeout;
            let deadline = Instant::now() + limit;
            // Unconstrained: with thousands of stops joined in one task, tokio's budget would
            // make every `JoinHandle` poll past the first 128 return `Pending` and re-wake.
            let abort = handle.abort_handle();
            let mut joining = tokio::task::coop::unconstrained(&mut handle);
            let joined = match returned_soon(&mut joining).await {
                Some(joined) => Some(joined),
                None => match self.list_run_join(abort, deadline) {
                    Some(listed) => self.join_listed(listed, joining).await,
                    // Boxed: a timer would enlarge every stop's future.
                    None => Box::pin(tokio::time::timeout_at(deadline, joining))
                        .await
                        .ok(),
                },
            };
            match joined {
                Some(Ok(None)) => {}
                Some(Ok(Some(error))) => errors.push(error),
                Some(Err(join_error)) => errors.push(self.logged(self.hook_error(
                    HookKind::Run,
                    run_hook_name::<S>(),
                    HookFailure::Panic(join_error.to_string()),
                ))),
                None => {
                    handle.abort();
                    errors.push(self.logged(self.hook_error(
                        HookKind::Run,
                        run_hook_name::<S>(),
                        HookFailure::Timeout(limit),
                    )));
                }
            }
        }
        for entry in components.iter().rev() {
            if let Err(error) = entry.handle.0.stop().await {
                errors.push(ServiceError::Component {
                    service: self.name().clone(),
                    component: entry.field,
                    source: Box::new(error),
                });
            }
        }
        if cleanup && !S::__HOOKS.cleanup.is_empty() {
            // Boxed: only services with cleanup hooks carry the state of running them.
            Box::pin(self.run_cleanups(&mut errors)).await;
        }
        errors
    }

    /// Runs the cleanup hooks in reverse source order under the service's write lock,
    /// collecting every failure.
    pub(super) async fn run_cleanups(&self, errors: &mut Vec<ServiceError>) {
        let limit = self.settings.get().stop_timeout;
        let acquired = match self.service.try_write() {
            Ok(service) => Ok(service),
            // Boxed: a timer would enlarge every stop's future.
            Err(_) => Box::pin(tokio::time::timeout(limit, self.service.write())).await,
        };
        match acquired {
            Ok(mut service) => {
                for (index, spec) in S::__HOOKS.cleanup.iter().enumerate().rev() {
                    let timeout = spec.timeout.unwrap_or(limit);
                    let future = service.__cleanup(index);
                    if let Outcome::Failed(failure) = self
                        .run_hook(HookKind::Cleanup, spec.name, future, timeout, None)
                        .await
                    {
                        errors.push(self.hook_error(HookKind::Cleanup, spec.name, failure));
                    }
                }
            }
            Err(_) => {
                let first = S::__HOOKS.cleanup.last().map_or("?", |spec| spec.name);
                errors.push(self.logged(self.hook_error(
                    HookKind::Cleanup,
                    first,
                    HookFailure::Error(Arc::from(BoxError::from(format!(
                        "no cleanup hook ran: a `Managed::read()` guard or a health check still held the service after {limit:?}"
                    )))),
                )));
            }
        }
    }
}
