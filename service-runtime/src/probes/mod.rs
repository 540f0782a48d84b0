//! What a supervisor serves to probes (feature `http`): the HTTP endpoint in `http`
//! (`/livez`, `/readyz`, `/startupz`, `/health`), and in `metrics` the `/metrics` page it
//! adds with feature `metrics`, in the text formats of `exposition`.

#[cfg(feature = "metrics")]
mod exposition;
pub(crate) mod http;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
