//! The probes' routes and answers (feature `http`): the one code path of every endpoint
//! that answers for a supervisor (`serve_health`'s listener, a mounted
//! [`ProbeService`](crate::ProbeService), the axum router). [`Probe`] names each route,
//! [`respond`] routes a request by its path, [`answer`] answers one probe; the JSON and
//! text bodies and their headers are made here.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::detail::{ShowDetails, report_body};
use super::input::{echo, query_value};
use crate::supervisor::SupervisorHandle;

/// One route of the probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    Livez,
    Readyz,
    Startupz,
    Health,
    #[cfg(feature = "metrics")]
    Metrics,
}

impl Probe {
    /// Every route, in the order a 404 lists them.
    pub(super) const ALL: &[Probe] = &[
        Probe::Livez,
        Probe::Readyz,
        Probe::Startupz,
        Probe::Health,
        #[cfg(feature = "metrics")]
        Probe::Metrics,
    ];

    /// The route's path, from the root of whatever serves it.
    pub(super) fn path(self) -> &'static str {
        match self {
            Probe::Livez => "/livez",
            Probe::Readyz => "/readyz",
            Probe::Startupz => "/startupz",
            Probe::Health => "/health",
            #[cfg(feature = "metrics")]
            Probe::Metrics => "/metrics",
        }
    }

    fn at(path: &str) -> Option<Probe> {
        Probe::ALL
            .iter()
            .copied()
            .find(|probe| probe.path() == path)
    }
}

/// The answer to `request`, routed by its path; 404 for a path that is no probe.
pub(super) async fn respond<B>(
    handle: &SupervisorHandle,
    request: Request<B>,
) -> Response<Full<Bytes>> {
    match Probe::at(request.uri().path()) {
        Some(probe) => answer(handle, probe, request).await,
        None => {
            let paths: Vec<&str> = Probe::ALL.iter().map(|probe| probe.path()).collect();
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "no such probe: {}; try one of {}\n",
                    echo(request.uri().path()),
                    paths.join(", ")
                ),
            )
        }
    }
}

/// The answer of `probe` to `request`, whatever its path: 405 for a method other than
/// GET and HEAD.
pub(super) async fn answer<B>(
    handle: &SupervisorHandle,
    probe: Probe,
    request: Request<B>,
) -> Response<Full<Bytes>> {
    // The body is never read. It is dropped once the answer is made, when hyper decides
    // whether the connection can carry another request (it can if the body arrived
    // whole with the head).
    let (parts, body) = request.into_parts();
    let response = answer_parts(handle, probe, &parts).await;
    drop(body);
    response
}

async fn answer_parts(
    handle: &SupervisorHandle,
    probe: Probe,
    request: &Parts,
) -> Response<Full<Bytes>> {
    if request.method != Method::GET && request.method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed on {}; use GET\n",
                echo(request.method.as_str()),
                probe.path()
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match probe {
        // Liveness never depends on dependencies: answering is the proof of life.
        Probe::Livez => json_static(StatusCode::OK, ALIVE),
        Probe::Startupz => {
            if handle.has_started() {
                json_static(StatusCode::OK, STARTED)
            } else {
                json_static(StatusCode::SERVICE_UNAVAILABLE, STARTING)
            }
        }
        Probe::Readyz => readiness(handle).await,
        Probe::Health => health(handle, request.uri.query()).await,
        #[cfg(feature = "metrics")]
        Probe::Metrics => {
            let cached = handle.probe_answers().cache.get(handle).await;
            let accept = request.headers.get(hyper::header::ACCEPT);
            super::metrics::response(handle, &cached.health, &cached.latencies, accept)
        }
    }
}

async fn readiness(handle: &SupervisorHandle) -> Response<Full<Bytes>> {
    // Checked first and without waiting: readiness turns false the moment shutdown begins.
    if handle.is_stopping() {
        return json_static(StatusCode::SERVICE_UNAVAILABLE, STOPPING);
    }
    let cache = &handle.probe_answers().cache;
    if let Some(not_running) = handle.not_running() {
        if cache.show() == ShowDetails::Never {
            return json_static(StatusCode::SERVICE_UNAVAILABLE, NOT_READY);
        }
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &StatusBody::fail("not ready", &not_running),
        );
    }
    let cached = cache.get(handle).await;
    if handle.is_stopping() {
        return json_static(StatusCode::SERVICE_UNAVAILABLE, STOPPING);
    }
    match &cached.unhealthy {
        None => json_static(StatusCode::OK, READY),
        Some(body) => with_json_headers(StatusCode::SERVICE_UNAVAILABLE, body.clone()),
    }
}

async fn health(handle: &SupervisorHandle, query: Option<&str>) -> Response<Full<Bytes>> {
    let cached = handle.probe_answers().cache.get(handle).await;
    match query_value(query, "service") {
        Some(name) => match cached.health.services.get(name.as_str()) {
            Some(report) => {
                with_json_headers(passing(report.is_ok()), report_body(report, cached.show))
            }
            None => text(
                StatusCode::NOT_FOUND,
                format!("no service named `{}`\n", echo(&name)),
            ),
        },
        None => with_json_headers(cached.code, cached.body.clone()),
    }
}

/// 200 when a report passes, 503 otherwise.
pub(super) fn passing(ok: bool) -> StatusCode {
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
pub(super) const NOT_READY: &[u8] = b"{\"status\":\"not ready\"}\n";
const STOPPING: &[u8] = b"{\"status\":\"stopping\",\"reason\":\"shutdown in progress\"}\n";

/// The body of `/livez`, `/readyz` and `/startupz`.
#[derive(Serialize)]
pub(super) struct StatusBody<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> StatusBody<'a> {
    /// Used by the test that checks the constant bodies.
    #[cfg(test)]
    fn pass(status: &'a str) -> Self {
        StatusBody {
            status,
            reason: None,
        }
    }

    pub(super) fn fail(status: &'a str, reason: &'a str) -> Self {
        StatusBody {
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
            (ALIVE, StatusBody::pass("alive")),
            (STARTED, StatusBody::pass("started")),
            (
                STARTING,
                StatusBody::fail("starting", "not every service has started yet"),
            ),
            (READY, StatusBody::pass("ready")),
            (NOT_READY, StatusBody::pass("not ready")),
            (
                STOPPING,
                StatusBody::fail("stopping", "shutdown in progress"),
            ),
        ] {
            assert_eq!(constant, &json_bytes(&probe)[..]);
        }
    }

    #[test]
    fn every_probe_is_found_at_its_path() {
        for &probe in Probe::ALL {
            assert_eq!(Probe::at(probe.path()), Some(probe));
        }
        assert_eq!(Probe::at("/livez/"), None);
        assert_eq!(Probe::at("/"), None);
    }
}
