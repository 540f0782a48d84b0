//! [`SupervisorHandle::probe_router`] (feature `axum`): the probes as an `axum::Router`
//! of one route per probe, to nest under a prefix of the program's own router or merge
//! into it.

use axum::Router;
use axum::extract::Request;
use axum::routing::any;

use super::routes::{Probe, answer};
use crate::supervisor::SupervisorHandle;

impl SupervisorHandle {
    /// The probes as an [`axum::Router`] (feature `axum`): `/livez`, `/readyz`,
    /// `/startupz`, `/health` and, with feature `metrics`, `/metrics`, answered as
    /// [`probe_service`](Self::probe_service) and `serve_health` answer them (one health
    /// cache, the supervisor's detail level; 405 for a method other than GET and HEAD).
    ///
    /// Nest it under a prefix (`Router::new().nest("/ops", handle.probe_router())`
    /// serves `/ops/readyz`) or merge it at the root (`.merge(handle.probe_router())`);
    /// it has no fallback, so any other path is the program's router's to answer. It
    /// takes the program's router's state type, whatever it is. The program's server
    /// owns the connections: the [`ProbeLimits`](crate::ProbeLimits) bound
    /// `serve_health`'s listener only.
    ///
    /// ```
    /// use axum::Router;
    /// use axum::routing::get;
    /// use service_runtime::Supervisor;
    ///
    /// let supervisor = Supervisor::new();
    /// let app: Router = Router::new()
    ///     .route("/orders", get(|| async { "[]" }))
    ///     .nest("/ops", supervisor.handle().probe_router());
    /// # let _ = app;
    /// ```
    pub fn probe_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Probe::ALL.iter().fold(Router::new(), |router, &probe| {
            let handle = self.clone();
            router.route(
                probe.path(),
                any(move |request: Request| async move { answer(&handle, probe, request).await }),
            )
        })
    }
}
