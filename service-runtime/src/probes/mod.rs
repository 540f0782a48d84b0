//! What a supervisor serves to probes (feature `http`). One code path answers for every
//! endpoint of a supervisor: the routes and bodies in `routes`, from the health report
//! of `cache`, at the detail level of `detail` ([`ShowDetails`]), with what it reads from
//! a request in `input`, and in `metrics` the `/metrics` page added by feature `metrics`
//! (the supervisor's figures and the program's registry), in the text formats of
//! `exposition`. The endpoints are `http`, `serve_health`'s own listener (its accept loop
//! and connection cap in `accept`, the bounds of each connection, [`ProbeLimits`], in
//! `limits`); `service`, the [`ProbeService`] a program mounts in its own server; and
//! `router`, the same as an `axum::Router` (feature `axum`).

mod accept;
mod cache;
mod detail;
#[cfg(feature = "metrics")]
mod exposition;
pub(crate) mod http;
mod input;
mod limits;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
#[cfg(feature = "axum")]
mod router;
mod routes;
mod service;

pub use cache::DEFAULT_HEALTH_CACHE_TTL;
pub use detail::ShowDetails;
pub use limits::ProbeLimits;
pub use service::{ProbeFuture, ProbeService};

/// What every probe endpoint of one supervisor answers from, kept in the supervisor's
/// shared state so that `serve_health`'s port and every mounted service agree: the
/// health cache with its settings, and the program's own metrics.
#[derive(Default)]
pub(crate) struct ProbeAnswers {
    pub(crate) cache: cache::HealthCache,
    #[cfg(feature = "metrics")]
    pub(crate) app_metrics: metrics::AppMetrics,
}
