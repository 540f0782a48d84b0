//! A stop: the run loop told to return and awaited (up to the stop timeout, see
//! [`loop_stop`](super::loop_stop)), components stopped in reverse field order, cleanup
//! hooks run in reverse source order; every error collected, and the service ends
//! `stopped` or `error`.

use std::sync::Arc;

use tokio::time::Instant;

use super::control::{Control, Inner};
use super::decide::OpKind;
use super::hooks::HookOutcome;
use super::operation::{OpResult, Waiting};
use crate::__private::ComponentEntry;
use crate::error::{BoxError, HookFailure, HookKind, ServiceError};
use crate::service::Service;
use crate::status::ServiceStatus;

impl<S: Service> Inner<S> {
    /// Whether a stop has nothing to await: no run loop, no component, no cleanup hook owed.
    pub(super) fn stop_owes_nothing(&self, ctl: &Control) -> bool {
        ctl.run.is_none() && !self.stop_steps_owed(ctl)
    }

    /// Whether a stop has components to stop or cleanup hooks to run.
    pub(super) fn stop_steps_owed(&self, ctl: &Control) -> bool {
        !ctl.components.is_empty() || self.cleanup_due(ctl)
    }

    fn cleanup_due(&self, ctl: &Control) -> bool {
        ctl.cleanup_owed && !S::__HOOKS.cleanup.is_empty()
    }

    /// `stopping` and `stopped` at once (see [`stop_owes_nothing`](Self::stop_owes_nothing)).
    pub(super) fn stop_inline(&self, ctl: &mut Control) {
        ctl.cleanup_owed = false;
        let now = Instant::now();
        self.transition(ctl, ServiceStatus::Stopping, None, now);
        self.transition(ctl, ServiceStatus::Stopped, None, now);
    }

    /// Begins a stop from `running`, or from `error` with something left to stop.
    /// The stop of a service with a run loop goes on in the loop's task once the loop
    /// returns; any other stop is an operation driven by its callers.
    pub(super) fn begin_stop(self: &Arc<Self>, ctl: &mut Control) -> Waiting {
        let now = Instant::now();
        ctl.end_components_watch();
        self.transition(ctl, ServiceStatus::Stopping, None, now);
        if let Some(run) = ctl.run.take() {
            return self.begin_loop_stop(ctl, run, now);
        }
        self.begin(ctl, OpKind::Stop, |inner, _| async move {
            inner.stop_owed().await
        })
    }

    /// Takes what a service without a run loop owes (components, cleanup) and stops it;
    /// the status is `stopping` on entry, `stopped` or `error` on return.
    pub(super) async fn stop_owed(&self) -> OpResult {
        let (components, cleanup) = {
            let mut ctl = self.lock();
            // `cleanup_owed` stays set until the cleanup ran: a stop abandoned half-way
            // (its runtime shut down) leaves it owed to the next start.
            (std::mem::take(&mut ctl.components), ctl.cleanup_owed)
        };
        let errors = self.stop_steps(components, cleanup).await;
        let error = ServiceError::combine(|| self.name().clone(), errors);
        self.end_stop(&mut self.lock(), error)
    }

    /// The last step of a stop: nothing is owed any more; `stopped`, or `error` with
    /// `error` (after the failure that began the stop, if one did), which is also the
    /// stop's outcome.
    pub(super) fn end_stop(&self, ctl: &mut Control, error: Option<ServiceError>) -> OpResult {
        ctl.cleanup_owed = false;
        let error = match ctl.take_stop_cause() {
            None => error,
            Some(cause) => ServiceError::combine(
                || self.name().clone(),
                [cause].into_iter().chain(error).collect(),
            ),
        };
        match error {
            None => {
                self.transition(ctl, ServiceStatus::Stopped, None, Instant::now());
                Ok(())
            }
            Some(error) => Err(self.fail(ctl, error)),
        }
    }

    /// Stops the components (in reverse) and runs the cleanup hooks (in reverse),
    /// collecting every error. Each step is bounded by its timeout.
    pub(super) async fn stop_steps(
        &self,
        components: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> Vec<ServiceError> {
        let mut errors = Vec::new();
        // Boxed: only services with components or cleanup hooks carry these steps' state.
        if !components.is_empty() {
            Box::pin(self.stop_components(&components, &mut errors)).await;
        }
        if cleanup && !S::__HOOKS.cleanup.is_empty() {
            Box::pin(self.run_cleanups(&mut errors)).await;
        }
        errors
    }

    /// Stops the components in reverse field order, collecting every failure.
    async fn stop_components(&self, components: &[ComponentEntry], errors: &mut Vec<ServiceError>) {
        for entry in components.iter().rev() {
            if let Err(error) = entry.handle.0.stop().await {
                errors.push(ServiceError::Component {
                    service: self.name().clone(),
                    component: entry.field.clone(),
                    source: Box::new(error),
                });
            }
        }
    }

    /// Runs the cleanup hooks in reverse source order under the service's write lock,
    /// collecting every failure.
    async fn run_cleanups(&self, errors: &mut Vec<ServiceError>) {
        let limit = self.config().stop_timeout;
        let acquired = match self.service.try_write() {
            Ok(service) => Ok(service),
            Err(_) => tokio::time::timeout(limit, self.service.write()).await,
        };
        let Ok(mut service) = acquired else {
            let first = S::__HOOKS.cleanup.last().map_or("?", |spec| spec.name);
            errors.push(self.logged(self.hook_error(
                HookKind::Cleanup,
                first,
                HookFailure::Error(Arc::from(BoxError::from(format!(
                    "no cleanup hook ran: a `Managed::read()` guard or a health check still held the service after {limit:?}"
                )))),
            )));
            return;
        };
        for (index, spec) in S::__HOOKS.cleanup.iter().enumerate().rev() {
            let timeout = spec.timeout.unwrap_or(limit);
            let future = service.__cleanup(index);
            if let HookOutcome::Failed(failure) = self
                .run_hook(HookKind::Cleanup, spec.name, future, timeout, None)
                .await
            {
                errors.push(self.hook_error(HookKind::Cleanup, spec.name, failure));
            }
        }
    }
}
