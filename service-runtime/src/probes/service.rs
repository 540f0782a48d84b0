//! [`ProbeService`] (feature `http`): the probes as a service to mount in the program's
//! own HTTP server, a `tower::Service` and a `hyper::service::Service`, answering as
//! `serve_health` does (the same routes, cache and detail level: the supervisor's).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};

use super::routes::respond;
use crate::supervisor::SupervisorHandle;

/// What a [`ProbeService`] answers a request with: it never fails.
type Answer = Result<Response<Full<Bytes>>, Infallible>;

/// The probes (`/livez`, `/readyz`, `/startupz`, `/health` and, with feature `metrics`,
/// `/metrics`) as a service for the program's own HTTP server; made by
/// [`SupervisorHandle::probe_service`]. Feature `http`.
///
/// It routes by the request's path as `serve_health` does (404 for any other path, 405
/// for a method other than GET and HEAD) and answers from the supervisor's own health
/// cache, at its [detail level](crate::Supervisor::show_details): the answers are the
/// same as on the `serve_health` port, which may serve beside it. Readiness is 503 from
/// the moment the supervisor's shutdown begins.
///
/// It is a [`tower::Service`](tower_service::Service) (axum's
/// [`Router::nest_service`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.nest_service),
/// tower stacks) and a [`hyper::service::Service`] (hyper's `serve_connection`), for any
/// request body, which it never reads. The server that mounts it owns the connections:
/// the [`ProbeLimits`](crate::ProbeLimits) bound `serve_health`'s listener only, and a
/// prefix must be stripped before the request reaches it (axum's `nest_service` does).
/// With feature `axum`, `SupervisorHandle::probe_router` gives an `axum::Router`
/// instead.
///
/// ```
/// use service_runtime::Supervisor;
/// use tower_service::Service as _;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let supervisor = Supervisor::new();
/// let mut probes = supervisor.handle().probe_service();
/// let request = hyper::Request::get("/livez").body(()).unwrap();
/// let response = probes.call(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # });
/// ```
#[derive(Clone)]
pub struct ProbeService {
    handle: SupervisorHandle,
}

impl SupervisorHandle {
    /// The probes as a [`ProbeService`], to mount in the program's own HTTP server
    /// (feature `http`). Every such service and `serve_health`'s port answer from one
    /// health cache.
    pub fn probe_service(&self) -> ProbeService {
        ProbeService {
            handle: self.clone(),
        }
    }
}

impl ProbeService {
    fn answer<B: Send + 'static>(&self, request: Request<B>) -> ProbeFuture {
        let handle = self.handle.clone();
        ProbeFuture(Box::pin(async move { Ok(respond(&handle, request).await) }))
    }
}

impl fmt::Debug for ProbeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeService").finish_non_exhaustive()
    }
}

impl<B: Send + 'static> tower_service::Service<Request<B>> for ProbeService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ProbeFuture;

    /// Always ready: a probe waits for nothing but its answer.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ProbeFuture {
        self.answer(request)
    }
}

impl<B: Send + 'static> hyper::service::Service<Request<B>> for ProbeService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ProbeFuture;

    fn call(&self, request: Request<B>) -> ProbeFuture {
        self.answer(request)
    }
}

/// The answer of a [`ProbeService`] to one request; it never fails.
#[must_use = "futures do nothing unless polled"]
pub struct ProbeFuture(Pin<Box<dyn Future<Output = Answer> + Send>>);

// A named type because the `Service` traits' `Future` must be nameable (and the box
// not part of the public API); it only forwards to the boxed answer.
impl Future for ProbeFuture {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ProbeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeFuture").finish_non_exhaustive()
    }
}
