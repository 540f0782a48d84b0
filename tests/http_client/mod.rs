//! A real HTTP/1.1 client (hyper's) for the probe-endpoint tests; every exchange is
//! bounded so a hang fails the test instead of stalling it.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use service_runtime::SupervisorHandle;
use tokio::net::TcpStream;

/// The bound of every wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub allow: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request on a fresh connection.
pub async fn request(address: SocketAddr, method: Method, path: &str) -> Reply {
    try_request(address, method, path)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Sends one request on a fresh connection; `Err` says which step failed (a server that
/// is gone refuses the connection).
pub async fn try_request(address: SocketAddr, method: Method, path: &str) -> Result<Reply, String> {
    let exchange = async {
        let failed = |step: &str| {
            let step = step.to_owned();
            move |error: &dyn std::fmt::Display| format!("{step} {address}: {error}")
        };
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| failed("connecting to")(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("handshake with")(&e))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", address.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("requesting from")(&e))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &hyper::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let allow = header(hyper::header::ALLOW);
        let content_type = header(hyper::header::CONTENT_TYPE);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed("reading a body from")(&e))?
            .to_bytes();
        Ok(Reply {
            status,
            allow,
            content_type,
            body: String::from_utf8(body.to_vec()).unwrap(),
        })
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the probe answered")
}

/// `GET path`.
pub async fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, Method::GET, path).await
}

/// Polls `condition` until it holds, within [`PATIENCE`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// The probe endpoint's address, once it listens.
pub async fn address_of(handle: &SupervisorHandle) -> SocketAddr {
    until("the probe endpoint", || handle.probe_address().is_some()).await;
    handle.probe_address().unwrap()
}

/// `GET path` with an `Accept` header, if any; the reply and every response header.
pub async fn get_accepting(
    address: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (Reply, hyper::HeaderMap) {
    let headers: Vec<(&str, &str)> = accept
        .map(|accept| ("accept", accept))
        .into_iter()
        .collect();
    exchange(address, Method::GET, path, &headers).await
}

/// `method path` with `headers` on a fresh connection; the reply and every response
/// header.
pub async fn exchange(
    address: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (Reply, hyper::HeaderMap) {
    let exchange = async {
        let stream = TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", address.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let header = |name| {
            parts
                .headers
                .get(name)
                .map(|v: &hyper::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let reply = Reply {
            status: parts.status,
            allow: header(hyper::header::ALLOW),
            content_type: header(hyper::header::CONTENT_TYPE),
            body: String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        };
        (reply, parts.headers)
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the probe answered")
}
