//! The probe endpoint (feature `http`): `/livez`, `/readyz`, `/startupz` and `/health`
//! over HTTP/1.1, for Kubernetes probes and humans with `curl`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::supervisor::{SupervisorHandle, SupervisorHealth};

/// How long a computed health report answers probes when none is set: a probe storm
/// runs the checks at most once per second.
pub const DEFAULT_HEALTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Where and how the supervisor serves its probes.
#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    pub(crate) address: String,
    pub(crate) cache_ttl: Duration,
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
}

/// The last health report, when it was computed, the count of status changes it saw, and
/// what probes answer from it. It is reused while it is younger than the TTL and no
/// status changed since (the count, kept by the transitions themselves, did not move).
/// Refreshes are
/// single-flight: the async lock makes concurrent probes share one computation, which is
/// itself bounded by the checks' timeouts.
struct HealthCache {
    ttl: Duration,
    /// The report answering probes now; read without waiting.
    current: std::sync::Mutex<Option<Arc<Cached>>>,
    /// Held while a report is computed.
    refresh: tokio::sync::Mutex<()>,
}

struct Cached {
    at: Instant,
    generation: u64,
    health: SupervisorHealth,
    /// `/health`: the serialised report and its status code.
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
    ) -> Self {
        let unhealthy: Vec<&str> = health
            .services
            .values()
            .filter(|report| !report.is_ok())
            .map(|report| &*report.service_name)
            .collect();
        let unhealthy = (!unhealthy.is_empty()).then(|| {
            json_bytes(&Probe::fail(
                "not ready",
                &format!("unhealthy: {}", unhealthy.join(", ")),
            ))
        });
        Cached {
            at: Instant::now(),
            generation,
            body: json_bytes(&health),
            code: passing(health.status.is_ok()),
            unhealthy,
            health,
            latencies,
        }
    }
}

impl HealthCache {
    fn new(ttl: Duration) -> Self {
        HealthCache {
            ttl,
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
        let cached = Arc::new(Cached::new(generation, health, latencies));
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
        cache: HealthCache::new(config.cache_ttl),
    });
    tracing::info!(address = %local, "serving /livez /readyz /startupz /health");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "probe endpoint could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let context = context.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let context = context.clone();
                    async move { Ok::<_, Infallible>(route(&request, &context).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "probe connection ended with an error");
                }
            });
            while connections.try_join_next().is_some() {}
        }
    });
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
            format!("no such probe: {path}; try one of {}\n", PATHS.join(", ")),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}; use GET\n", request.method()),
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
            Some(report) => json(passing(report.is_ok()), report),
            None => text(
                StatusCode::NOT_FOUND,
                format!("no service named `{name}`\n"),
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
fn json_bytes(body: &impl Serialize) -> Bytes {
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
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The value of `key` in a query string, percent-decoded.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
            (STOPPING, Probe::fail("stopping", "shutdown in progress")),
        ] {
            assert_eq!(constant, &json_bytes(&probe)[..]);
        }
    }

    #[test]
    fn query_values_are_found_and_decoded() {
        assert_eq!(
            query_value(Some("service=market_feed"), "service").as_deref(),
            Some("market_feed")
        );
        assert_eq!(
            query_value(Some("a=1&service=a%20b"), "service").as_deref(),
            Some("a b")
        );
        assert_eq!(
            query_value(Some("service=%zz%"), "service").as_deref(),
            Some("%zz%")
        );
        assert_eq!(query_value(Some("other=1"), "service"), None);
        assert_eq!(query_value(None, "service"), None);
    }
}
