//! `serve_health`'s own listener (feature `http`): the probe endpoint on a port of its
//! own, over HTTP/1.1, with each connection's hyper settings and bounds ([`ProbeLimits`],
//! enforced by `limits` and `accept`). What it answers is made in `routes`, as for every
//! other endpoint of the supervisor.

use std::convert::Infallible;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::limits::{InFlight, ProbeLimits, Watched};
use crate::supervisor::SupervisorHandle;

/// The most a probe connection buffers of a request: probes send no large headers, and
/// a head that does not fit is answered 431.
const MAX_BUF_SIZE: usize = 16 * 1024;

/// Where `serve_health` listens and the bounds of its connections. (What every endpoint
/// answers with, its cache and detail level, is the supervisor's: `ProbeAnswers`.)
#[derive(Clone, Debug, Default)]
pub(crate) struct ProbeConfig {
    /// Empty until `serve_health` names it: nothing is served.
    pub(crate) address: String,
    pub(crate) limits: ProbeLimits,
}

/// The running endpoint; dropping it stops the listener and every connection.
pub(crate) struct ProbeServer {
    task: JoinHandle<()>,
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the endpoint and serves it on a spawned task.
pub(crate) async fn serve(
    config: &ProbeConfig,
    handle: SupervisorHandle,
) -> std::io::Result<(ProbeServer, SocketAddr)> {
    let listener = TcpListener::bind(&config.address).await?;
    let local = listener.local_addr()?;
    let limits = config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper's header timeout is silently off.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_SIZE);
    #[cfg(not(feature = "metrics"))]
    tracing::info!(address = %local, "serving /livez /readyz /startupz /health");
    #[cfg(feature = "metrics")]
    tracing::info!(address = %local, "serving /livez /readyz /startupz /health /metrics");
    let task = tokio::spawn(super::accept::accept_loop(
        listener,
        limits.max_connections,
        move |stream| {
            let handle = handle.clone();
            let http = http.clone();
            async move {
                let in_flight = InFlight::default();
                let io = Watched::new(stream, limits.idle_timeout, in_flight.clone());
                let service = hyper::service::service_fn(move |request| {
                    let handle = handle.clone();
                    let answering = in_flight.enter();
                    async move {
                        let response = super::routes::respond(&handle, request).await;
                        drop(answering);
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "probe connection ended with an error");
                }
            }
        },
    ));
    Ok((ProbeServer { task }, local))
}
