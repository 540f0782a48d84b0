//! What a supervisor's shutdown does to a service when its budget runs out: the service
//! is cancelled, as tokio-graceful-shutdown cancels what its budget abandons (OTP's
//! `brutal_kill`).
//!
//! Under the control lock the service moves to `error` with a
//! [`ServiceError::ShutdownCancelled`] cause and gives up what it owns: its run loop (whose
//! task is aborted), the loop a stop was waiting for, the operation in flight (whose work
//! is cancelled: its hooks in flight are dropped at its next poll, and every call waiting
//! for it gets the cause) and its components, which are cancelled the same way. Cleanup
//! stays owed: a later `stop()` or start runs the cleanup hooks that never ran. Until
//! then the service makes no transition (`Control::abandoned`), so a step of the
//! cancelled operation that was running on another thread cannot move it out of `error`.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::Inner;
use super::operation::OpWork;
use crate::error::ServiceError;
use crate::service::Service;
use crate::status::ServiceStatus;

impl<S: Service> Inner<S> {
    /// Cancels the service if it has not stopped (see the module's doc); returns the
    /// status it was cancelled in, `None` if it was `stopped`, or in `error` with nothing
    /// in flight.
    pub(super) fn abandon(&self, budget: Option<Duration>) -> Option<ServiceStatus> {
        let mut ctl = self.lock();
        let status = self.status();
        if matches!(status, ServiceStatus::Stopped | ServiceStatus::Error) && ctl.op.is_none() {
            return None;
        }
        let cause = ServiceError::ShutdownCancelled {
            service: self.name().clone(),
            budget,
            was_stopping: status == ServiceStatus::Stopping,
        };
        let run = ctl.run.take();
        // With a stop in a loop, the loop it waits for: no waiting call takes its end over.
        let op = ctl.op.take();
        let components = std::mem::take(&mut ctl.components);
        ctl.end_components_watch();
        drop(ctl.take_stop_cause());
        if status != ServiceStatus::Error {
            self.transition(
                &mut ctl,
                ServiceStatus::Error,
                Some(cause.clone()),
                Instant::now(),
            );
        }
        ctl.abandoned = true;
        drop(ctl);
        tracing::warn!(parent: &self.span(), error = %cause, "service cancelled");
        // After the lock is released: an abort may drop a task in this very call, and its
        // guard takes the lock.
        if let Some(run) = run {
            run.shutdown.request();
            run.task.abort();
        }
        match op.map(|op| op.work) {
            // Without a token the work has not waited yet: it finds its operation gone
            // when it does, and ends with the cause.
            Some(OpWork::Shared { abort, .. }) => abort.iter().for_each(CancellationToken::cancel),
            Some(OpWork::InLoop(stop)) => stop.cancel(cause),
            None => {}
        }
        for component in components.iter().rev() {
            component.handle.0.abandon(budget);
        }
        Some(status)
    }
}
