//! What a supervisor serves to probes (feature `http`): the HTTP endpoint in `http`
//! (`/livez`, `/readyz`, `/startupz`, `/health`), its accept loop and connection cap in
//! `accept`, the bounds of each connection ([`ProbeLimits`]) in `limits`, how much of
//! the reports it shows ([`ShowDetails`]) in `detail`, what it reads from a request in
//! `input`, and in `metrics` the `/metrics` page it adds with feature `metrics`, in the
//! text formats of `exposition`.

mod accept;
mod detail;
#[cfg(feature = "metrics")]
mod exposition;
pub(crate) mod http;
mod input;
mod limits;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;

pub use detail::ShowDetails;
pub use limits::ProbeLimits;
