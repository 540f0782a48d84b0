//! Servers of the program's own that mount a supervisor's probes, for the integration
//! tests: hyper's `serve_connection` over a `ProbeService`, and `axum::serve` over a
//! router. Each listens on a free loopback port and serves until the test ends.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use service_runtime::ProbeService;
use tokio::net::TcpListener;

/// Serves `service` with hyper alone, one task per connection.
pub async fn serve_with_hyper(service: ProbeService) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service.clone());
            tokio::spawn(connection);
        }
    });
    address
}

/// Serves `router` with `axum::serve`.
pub async fn serve_with_axum(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}
