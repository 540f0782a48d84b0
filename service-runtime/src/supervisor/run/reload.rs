//! A reload of every service, asked for by `SIGHUP` (under `run_until_signal`) or by
//! [`SupervisorHandle::reload`](crate::SupervisorHandle::reload): the running services
//! reloaded level by level in start order (what a service depends on reloads before it,
//! each level in parallel), with systemd told `RELOADING=1` before and `READY=1` after.
//!
//! Requests wait in a channel until the running phase takes them, one at a time: a
//! request made during the startup is carried out once every service runs; at the
//! shutdown the channel is closed and every request still waiting is answered
//! [`ReloadError::NotRunning`].

use std::fmt;

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Phase, Run};
use crate::ServiceError;
use crate::status::ServiceStatus;
use crate::supervisor::Entry;
use crate::supervisor::plan::Plan;
use crate::supervisor::signals::Trigger;

/// Why a [`SupervisorHandle::reload`](crate::SupervisorHandle::reload) did not reload
/// every service.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ReloadError {
    /// Some reload hooks failed; their services keep running. One error per service,
    /// each naming the service and its hook, in start order.
    Failed(Vec<ServiceError>),
    /// The supervisor is not running its services: it has not been run, it is shutting
    /// down, or its run is over.
    NotRunning,
    /// A shutdown began while the reload ran; what was not reloaded yet was not.
    Interrupted,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Failed(errors) => {
                write!(f, "reload failed for {} service(s): ", errors.len())?;
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{error}")?;
                }
                f.write_str(" (they keep running)")
            }
            ReloadError::NotRunning => f.write_str(
                "the supervisor is not running its services (not run yet, shutting down, or done)",
            ),
            ReloadError::Interrupted => f.write_str("a shutdown began while the reload ran"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// One request for a reload: where it came from, and who waits for its outcome.
pub(in crate::supervisor) struct ReloadRequest {
    /// `"SIGHUP"`, or `"SupervisorHandle::reload"`.
    pub(in crate::supervisor) reason: &'static str,
    pub(in crate::supervisor) reply: Option<oneshot::Sender<Result<(), ReloadError>>>,
}

impl ReloadRequest {
    /// Sends `outcome` to whoever waits for it, if anyone does.
    pub(super) fn answer(self, outcome: Result<(), ReloadError>) {
        if let Some(reply) = self.reply {
            // A caller that stopped waiting does not want it.
            let _ = reply.send(outcome);
        }
    }

    /// Answers the request `NotRunning`: the running phase is over.
    pub(super) fn refuse(self) {
        self.answer(Err(ReloadError::NotRunning));
    }
}

/// The next request (a reload, a command), or never once the channel is closed (it is,
/// at the shutdown).
pub(super) async fn next_request<T>(requests: &mut mpsc::UnboundedReceiver<T>) -> T {
    match requests.recv().await {
        Some(request) => request,
        None => std::future::pending().await,
    }
}

/// Closes the channel and hands every request still waiting to `refuse` (a request
/// sent from now on fails to send, which its sender answers `NotRunning`).
pub(super) fn refuse_from_now_on<T>(requests: &mut mpsc::UnboundedReceiver<T>, refuse: impl Fn(T)) {
    requests.close();
    while let Ok(request) = requests.try_recv() {
        refuse(request);
    }
}

/// Reloads the running services, level by level; returns the failures.
async fn reload_levels(entries: &[Entry], plan: &Plan) -> Vec<ServiceError> {
    let mut errors = Vec::new();
    for level in plan.levels() {
        let reloads = level
            .iter()
            .map(|&i| &entries[i].service.0)
            .filter(|service| service.status() == ServiceStatus::Running)
            .map(|service| service.reload());
        errors.extend(join_all(reloads).await.into_iter().filter_map(Result::err));
    }
    errors
}

impl Run {
    /// Whether any service would run a reload hook (its own, or a component's).
    pub(super) fn reloads_anything(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.service.0.reloads_anything())
    }

    /// Carries out one reload request, raced against the shutdown requests as a
    /// restart is; `false` when a shutdown request came first (the running phase ends).
    pub(super) async fn reload(
        &mut self,
        request: ReloadRequest,
        trigger: &mut Trigger<'_>,
    ) -> bool {
        let Some(began) = self.begin_reload(&request) else {
            request.answer(Ok(()));
            return true;
        };
        let shutdown = self.shared.shutdown.clone();
        let tally = self.shared.tally.clone();
        let errors = {
            let observer = &mut self.observer;
            let work = reload_levels(&self.entries, &self.plan);
            let mut work = std::pin::pin!(work);
            loop {
                tokio::select! {
                    biased;
                    reason = trigger.next() => {
                        tracing::info!(reason, "shutdown requested during a reload");
                        request.answer(Err(ReloadError::Interrupted));
                        return false;
                    }
                    () = shutdown.requested() => {
                        request.answer(Err(ReloadError::Interrupted));
                        return false;
                    }
                    errors = &mut work => break errors,
                    () = tally.arrived() => observer.absorb(Phase::Running),
                }
            }
        };
        let outcome = self.end_reload(began, errors);
        request.answer(outcome);
        true
    }

    /// Logs and tells systemd that a reload begins; `None` when there is nothing to
    /// reload (logged too: a `SIGHUP` that does nothing is said so).
    pub(super) fn begin_reload(&mut self, request: &ReloadRequest) -> Option<Instant> {
        if !self.reloads_anything() {
            if request.reply.is_none() {
                tracing::warn!(
                    reason = request.reason,
                    "reload requested, but no service has a `#[reload]` hook: ignored"
                );
            } else {
                tracing::info!(
                    reason = request.reason,
                    "reload requested; no service has a `#[reload]` hook"
                );
            }
            return None;
        }
        tracing::info!(reason = request.reason, "reloading every running service");
        #[cfg(feature = "systemd")]
        if let Some(systemd) = &mut self.systemd {
            systemd.reloading();
        }
        Some(Instant::now())
    }

    /// Logs the reload's outcome and tells systemd it is over.
    pub(super) fn end_reload(
        &mut self,
        began: Instant,
        errors: Vec<ServiceError>,
    ) -> Result<(), ReloadError> {
        let elapsed = began.elapsed();
        let outcome = if errors.is_empty() {
            tracing::info!(?elapsed, "reload done");
            Ok(())
        } else {
            let error = ReloadError::Failed(errors);
            tracing::warn!(?elapsed, %error, "reload done with failures");
            Err(error)
        };
        #[cfg(feature = "systemd")]
        if let Some(systemd) = &mut self.systemd {
            systemd.reloaded(outcome.as_ref().err());
        }
        outcome
    }
}
