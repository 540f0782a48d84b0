//! What a supervisor serves to probes (feature `http`): the HTTP endpoint in `http`
//! (`/livez`, `/readyz`, `/startupz`, `/health`), and in `metrics` the `/metrics` page it
//! adds with feature `metrics`.

pub(crate) mod http;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
