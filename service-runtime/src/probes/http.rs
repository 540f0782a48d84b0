//! The probe endpoint (feature `http`): `/livez`, `/readyz`, `/startupz` and `/health`
//! over HTTP/1.1, for Kubernetes probes and humans with `curl`: the routes, the health
//! cache they answer from, and each connection's hyper settings.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::detail::{ShowDetails, health_body, report_body};
use super::input::{echo, query_value};
use super::limits::{InFlight, ProbeLimits, Watched};
use crate::supervisor::{SupervisorHandle, SupervisorHealth};

/// How long a computed health report answers probes when none is set: a probe storm
/// runs the checks at most once per second.
pub const DEFAULT_HEALTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// The most a probe connection buffers of a request: probes send no large headers, and
/// a head that does not fit is answered 431.
const MAX_BUF_SIZE: usize = 16 * 1024;

/// Where and how the supervisor serves its probes.
#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    /// Empty until `serve_health` names it: nothing is served.
    pub(crate) address: String,
    pub(crate) cache_ttl: Duration,
    pub(crate) limits: ProbeLimits,
    pub(crate) show: ShowDetails,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            address: String::new(),
            cache_ttl: DEFAULT_HEALTH_CACHE_TTL,
            limits: ProbeLimits::new(),
            show: ShowDetails::default(),
        }
    }
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

struct Context {
    handle: SupervisorHandle,
    cache: HealthCache,
    show: ShowDetails,
}

/// The last health report, when it was computed, the count of status changes it saw, and
/// what probes answer from it. It is reused while it is younger than the TTL and no
/// status changed since (the count, kept by the transitions themselves, did not move).
/// Refreshes are
/// single-flight: the async lock makes concurrent probes share one computation, which is
/// itself bounded by the checks' timeouts.
struct HealthCache {
    ttl: Duration,
    /// The detail level the cached bodies are written at.
    show: ShowDetails,
    /// The report answering probes now; read without waiting.
    current: std::sync::Mutex<Option<Arc<Cached>>>,
    /// Held while a report is computed.
    refresh: tokio::sync::Mutex<()>,
}

struct Cached {
    at: Instant,
    generation: u64,
    health: SupervisorHealth,
    /// `/health`: the serialised report (at the endpoint's detail level) and its status code.
    body: Bytes,
    code: StatusCode,
    /// `/readyz` once every service runs: `None` when every report passes, otherwise the
    /// body naming the unhealthy services.
    unhealthy: Option<Bytes>,
    /// How long each service's report took, in the order added.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    latencies: Vec<(Arc<str>, Duration)>,
}

impl Cached {
    fn new(
        generation: u64,
        health: SupervisorHealth,
        latencies: Vec<(Arc<str>, Duration)>,
        show: ShowDetails,
    ) -> Self {
        let unhealthy: Vec<&str> = health
            .services
            .values()
            .filter(|report| !report.is_ok())
            .map(|report| &*report.service_name)
            .collect();
        let unhealthy = (!unhealthy.is_empty()).then(|| match show {
            ShowDetails::Never => Bytes::from_static(NOT_READY),
            _ => json_bytes(&Probe::fail(
                "not ready",
                &format!("unhealthy: {}", unhealthy.join(", ")),
            )),
        });
        Cached {
            at: Instant::now(),
            generation,
            body: health_body(&health, show),
            code: passing(health.status.is_ok()),
            unhealthy,
            health,
            latencies,
        }
    }
}

impl HealthCache {
    fn new(ttl: Duration, show: ShowDetails) -> Self {
        HealthCache {
            ttl,
            show,
            current: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The current report if it is still fresh.
    fn fresh(&self, handle: &SupervisorHandle) -> Option<Arc<Cached>> {
        let cached = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        (cached.generation == handle.generation() && cached.at.elapsed() < self.ttl)
            .then_some(cached)
    }

    async fn get(&self, handle: &SupervisorHandle) -> Arc<Cached> {
        if let Some(cached) = self.fresh(handle) {
            return cached;
        }
        let _refreshing = self.refresh.lock().await;
        // Another probe may have refreshed it while this one waited.
        if let Some(cached) = self.fresh(handle) {
            return cached;
        }
        // Read before computing: a change meanwhile makes this report stale.
        let generation = handle.generation();
        let (health, latencies) = handle.health_with_latency().await;
        let cached = Arc::new(Cached::new(generation, health, latencies, self.show));
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cached.clone());
        cached
    }
}

/// Binds the endpoint and serves it on a spawned task.
pub(crate) async fn serve(
    config: &ProbeConfig,
    handle: SupervisorHandle,
) -> std::io::Result<(ProbeServer, SocketAddr)> {
    let listener = TcpListener::bind(&config.address).await?;
    let local = listener.local_addr()?;
    let context = Arc::new(Context {
        handle,
        cache: HealthCache::new(config.cache_ttl, config.show),
        show: config.show,
    });
    let limits = config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper's header timeout is silently off.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_SIZE);
    tracing::info!(address = %local, "serving /livez /readyz /startupz /health");
    let task = tokio::spawn(super::accept::accept_loop(
        listener,
        limits.max_connections,
        move |stream| {
            let context = context.clone();
            let http = http.clone();
            async move {
                let in_flight = InFlight::default();
                let io = Watched::new(stream, limits.idle_timeout, in_flight.clone());
                let service = hyper::service::service_fn(move |request| {
                    let context = context.clone();
                    let answering = in_flight.enter();
                    async move {
                        let response = route(&request, &context).await;
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

#[cfg(not(feature = "metrics"))]
const PATHS: &[&str] = &["/livez", "/readyz", "/startupz", "/health"];
#[cfg(feature = "metrics")]
const PATHS: &[&str] = &["/livez", "/readyz", "/startupz", "/health", "/metrics"];

async fn route(request: &Request<Incoming>, context: &Context) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !PATHS.contains(&path) {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no such probe: {}; try one of {}\n",
                echo(path),
                PATHS.join(", ")
            ),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed on {path}; use GET\n",
                echo(request.method().as_str())
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let handle = &context.handle;
    match path {
        // Liveness never depends on dependencies: answering is the proof of life.
        "/livez" => json_static(StatusCode::OK, ALIVE),
        "/startupz" => {
            if handle.has_started() {
                json_static(StatusCode::OK, STARTED)
            } else {
                json_static(StatusCode::SERVICE_UNAVAILABLE, STARTING)
            }
        }
        "/readyz" => readiness(context).await,
        #[cfg(feature = "metrics")]
        "/metrics" => {
            let cached = context.cache.get(handle).await;
            let accept = request.headers().get(hyper::header::ACCEPT);
            super::metrics::response(handle, &cached.health, &cached.latencies, accept)
        }
        _ => health(request, context).await,
    }
}

async fn readiness(context: &Context) -> Response<Full<Bytes>> {
    let handle = &context.handle;
    // Checked first and without waiting: readiness turns false the moment shutdown begins.
    if handle.is_stopping() {
        return json_static(StatusCode::SERVICE_UNAVAILABLE, STOPPING);
    }
    if let Some(not_running) = handle.not_running() {
        if context.show == ShowDetails::Never {
            return json_static(StatusCode::SERVICE_UNAVAILABLE, NOT_READY);
        }
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Probe::fail("not ready", &not_running),
        );
    }
    let cached = context.cache.get(handle).await;
    if handle.is_stopping() {
        return json_static(StatusCode::SERVICE_UNAVAILABLE, STOPPING);
    }
    match &cached.unhealthy {
        None => json_static(StatusCode::OK, READY),
        Some(body) => with_json_headers(StatusCode::SERVICE_UNAVAILABLE, body.clone()),
    }
}

async fn health(request: &Request<Incoming>, context: &Context) -> Response<Full<Bytes>> {
    let cached = context.cache.get(&context.handle).await;
    match query_value(request.uri().query(), "service") {
        Some(name) => match cached.health.services.get(name.as_str()) {
            Some(report) => {
                with_json_headers(passing(report.is_ok()), report_body(report, context.show))
            }
            None => text(
                StatusCode::NOT_FOUND,
                format!("no service named `{}`\n", echo(&name)),
            ),
        },
        None => with_json_headers(cached.code, cached.body.clone()),
    }
}

fn passing(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

// The constant bodies, as `json` writes them (a unit test checks they agree).
const ALIVE: &[u8] = b"{\"status\":\"alive\"}\n";
const STARTED: &[u8] = b"{\"status\":\"started\"}\n";
const STARTING: &[u8] =
    b"{\"status\":\"starting\",\"reason\":\"not every service has started yet\"}\n";
const READY: &[u8] = b"{\"status\":\"ready\"}\n";
const NOT_READY: &[u8] = b"{\"status\":\"not ready\"}\n";
const STOPPING: &[u8] = b"{\"status\":\"stopping\",\"reason\":\"shutdown in progress\"}\n";

/// The body of `/livez`, `/readyz` and `/startupz`.
#[derive(Serialize)]
struct Probe<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> Probe<'a> {
    /// Used by the test that checks the constant bodies.
    #[cfg(test)]
    fn pass(status: &'a str) -> Self {
        Probe {
            status,
            reason: None,
        }
    }

    fn fail(status: &'a str, reason: &'a str) -> Self {
        Probe {
            status,
            reason: Some(reason),
        }
    }
}

/// `body` as JSON and a newline.
pub(super) fn json_bytes(body: &impl Serialize) -> Bytes {
    let mut bytes = serde_json::to_vec(body)
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}").into_bytes());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    with_json_headers(status, json_bytes(body))
}

fn json_static(status: StatusCode, body: &'static [u8]) -> Response<Full<Bytes>> {
    with_json_headers(status, Bytes::from_static(body))
}

fn with_json_headers(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Error bodies name what the request asked for: never to be read as HTML.
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_bodies_are_what_json_writes() {
        for (constant, probe) in [
            (ALIVE, Probe::pass("alive")),
            (STARTED, Probe::pass("started")),
            (
                STARTING,
                Probe::fail("starting", "not every service has started yet"),
            ),
            (READY, Probe::pass("ready")),
            (NOT_READY, Probe::pass("not ready")),
            (STOPPING, Probe::fail("stopping", "shutdown in progress")),
        ] {
            assert_eq!(constant, &json_bytes(&probe)[..]);
        }
    }
}
