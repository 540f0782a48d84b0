//! A reload: the `#[reload]` hooks of a `running` service in source order, each under its
//! timeout, then the reloads of its components in start order.
//!
//! A reload changes no status and is not an operation: a service keeps running through
//! it, whatever its hooks do. The hooks share the service with the run loop and the
//! health checks (`&self`, the read lock), so a stop that begins meanwhile runs its
//! cleanup hooks once the reload hook in flight returns (bounded by that hook's timeout).
//! Every hook runs even if one before it failed: a reload's hooks usually reload
//! independent things (a configuration file, a certificate), and one that cannot be
//! read must not keep the others stale.

use std::time::Duration;

use tokio::time::Instant;

use super::control::Inner;
use super::hooks::HookOutcome;
use crate::__private::ComponentEntry;
use crate::error::{HookKind, ServiceError};
use crate::service::Service;
use crate::status::ServiceStatus;

impl<S: Service> Inner<S> {
    /// Whether a reload has anything to run: a `#[reload]` hook of this service, or of a
    /// component it started.
    pub(super) fn reloads_anything(&self) -> bool {
        !S::__HOOKS.reload.is_empty()
            || self
                .lock()
                .components
                .iter()
                .any(|entry| entry.handle.0.reloads_anything())
    }

    /// Reloads a `running` service (see the module's doc); does nothing otherwise. All
    /// the failures, combined, are the outcome; the service keeps running either way.
    pub(super) async fn reload(&self) -> Result<(), ServiceError> {
        if self.status() != ServiceStatus::Running {
            tracing::debug!(parent: &self.span(), status = %self.status(), "not running: nothing to reload");
            return Ok(());
        }
        let began = Instant::now();
        let mut errors = Vec::new();
        if !S::__HOOKS.reload.is_empty() {
            self.run_reload_hooks(&mut errors).await;
        }
        let components: Vec<ComponentEntry> = self
            .lock()
            .components
            .iter()
            .map(|entry| ComponentEntry {
                field: entry.field.clone(),
                critical: entry.critical,
                handle: entry.handle.clone(),
            })
            .collect();
        for entry in &components {
            if let Err(error) = entry.handle.0.reload().await {
                errors.push(ServiceError::Component {
                    service: self.name().clone(),
                    component: entry.field.clone(),
                    source: Box::new(error),
                });
            }
        }
        let elapsed = began.elapsed();
        match ServiceError::combine(|| self.name().clone(), errors) {
            None => {
                tracing::info!(parent: &self.span(), ?elapsed, "reloaded");
                Ok(())
            }
            Some(error) => {
                tracing::warn!(parent: &self.span(), ?elapsed, %error, "reload failed; the service keeps running");
                Err(error)
            }
        }
    }

    /// Runs the reload hooks in source order under the service's read lock, collecting
    /// every failure.
    async fn run_reload_hooks(&self, errors: &mut Vec<ServiceError>) {
        // The budget of a hook without its own: a reload re-reads what the init hooks
        // read, so it gets their time.
        let limit = self.config().start_timeout;
        let service = match self.service.try_read() {
            Ok(service) => service,
            // A stop that began since holds or waits for the write lock (its cleanup
            // hooks): once it is done, the service no longer runs and nothing is reloaded.
            Err(_) => {
                let service = self.service.read().await;
                if self.status() != ServiceStatus::Running {
                    return;
                }
                service
            }
        };
        for (index, spec) in S::__HOOKS.reload.iter().enumerate() {
            let timeout: Duration = spec.timeout.unwrap_or(limit);
            let future = service.__reload(index);
            if let HookOutcome::Failed(failure) = self
                .run_hook(HookKind::Reload, spec.name, future, timeout, None)
                .await
            {
                errors.push(self.hook_error(HookKind::Reload, spec.name, failure));
            }
        }
    }
}
