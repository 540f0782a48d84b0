//! The probe endpoint under clients that misbehave: slow or silent ones, too many, long
//! inputs, bodies; and how much of the reports each detail level shows. Real sockets on
//! loopback, short configured timeouts, every wait bounded by `PATIENCE`.

use std::net::SocketAddr;
use std::time::Duration;

use http_client::{PATIENCE, address_of, get, until};
use hyper::StatusCode;
use service_runtime::{
    HealthDetail, ProbeLimits, Service, ShowDetails, Supervisor, SupervisorHandle, lifecycle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod http_client;

/// A service whose optional check is degraded with a text no probe should show by default.
#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[health(name = "upstream")]
    async fn upstream(&self) -> HealthDetail {
        HealthDetail::degraded("login as trader:hunter2 refused by 10.0.0.3")
    }
}

/// A long time for a test: the timeouts a test does not exercise.
const LONG: Duration = Duration::from_secs(3600);
/// A short one: the timeout a test exercises.
const SHORT: Duration = Duration::from_millis(200);

/// Runs a supervisor with `Feed` and the probe endpoint; returns its handle and address.
async fn serve(
    configure: impl FnOnce(Supervisor) -> Supervisor,
) -> (SupervisorHandle, SocketAddr, tokio::task::JoinHandle<()>) {
    let supervisor = configure(Supervisor::new().add(Feed).serve_health("127.0.0.1:0"));
    let handle = supervisor.handle();
    let run = tokio::spawn(async move {
        let report = supervisor.run_until(std::future::pending()).await;
        assert!(report.is_success(), "{:?}", report.errors());
    });
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;
    (handle, address, run)
}

async fn stop(handle: SupervisorHandle, run: tokio::task::JoinHandle<()>) {
    handle.shutdown();
    tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent.
/// Panics if the connection is still open after `PATIENCE`.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server held the connection");
    received
}

/// Reads one whole response (head and `content-length` body) from a raw connection.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before a whole response");
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().unwrap());
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    })
    .await
    .expect("a response")
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_by_the_header_timeout() {
    let (handle, address, run) =
        serve(|s| s.probe_limits(ProbeLimits::new().header_timeout(SHORT).idle_timeout(LONG)))
            .await;
    // Slowloris: a header that keeps coming, one byte at a time, and never ends.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.unwrap();
                stream
                    .write_all(b"GET /livez HTTP/1.1\r\nX-Slow: ")
                    .await
                    .unwrap();
                let closing = async {
                    loop {
                        if stream.write_all(b"a").await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::time::timeout(PATIENCE, closing)
                    .await
                    .expect("the server closed the slow connection");
            })
        })
        .collect();
    for connection in slow {
        connection.await.unwrap();
    }
    // Silent: connected, nothing sent.
    let mut silent = TcpStream::connect(address).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    // A keep-alive connection silent after its answer: closed too.
    let mut kept = TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    until_closed(&mut kept).await;
    assert_eq!(get(address, "/livez").await.status, StatusCode::OK);
    stop(handle, run).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    let (handle, address, run) =
        serve(|s| s.probe_limits(ProbeLimits::new().header_timeout(LONG).idle_timeout(SHORT)))
            .await;
    let mut kept = TcpStream::connect(address).await.unwrap();
    for _ in 0..3 {
        kept.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(one_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    }
    assert!(until_closed(&mut kept).await.is_empty());
    stop(handle, run).await;
}

#[tokio::test]
async fn beyond_the_cap_connections_are_closed_and_livez_answers_under_it() {
    let (handle, address, run) = serve(|s| {
        s.probe_limits(
            ProbeLimits::new()
                .header_timeout(LONG)
                .idle_timeout(LONG)
                .max_connections(3),
        )
    })
    .await;
    // One keep-alive connection answering, two silent ones: the cap is reached.
    let mut kept = TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    let silent = [
        TcpStream::connect(address).await.unwrap(),
        TcpStream::connect(address).await.unwrap(),
    ];
    // Accepted after those (the backlog is first in, first out), and closed at once.
    for _ in 0..3 {
        let mut over = TcpStream::connect(address).await.unwrap();
        let _ = over
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let answer = until_closed(&mut over).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    // Under the cap, /livez keeps answering.
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    // Room again once connections close.
    drop(silent);
    drop(kept);
    tokio::time::timeout(PATIENCE, async {
        while !livez_answers(address).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a place under the cap again");
    stop(handle, run).await;
}

/// Whether `/livez` answers 200 on a fresh connection (not if it is closed at once).
async fn livez_answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return false;
    };
    let request = b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    until_closed(&mut stream).await.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn a_head_larger_than_16_kib_is_refused_and_a_body_is_never_read() {
    let (handle, address, run) = serve(|s| s).await;
    let mut large = TcpStream::connect(address).await.unwrap();
    let header = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\nX-Large: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let _ = large.write_all(header.as_bytes()).await;
    let answer = String::from_utf8_lossy(&until_closed(&mut large).await).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // A 100 MB body announced and sent as fast as it goes: answered, the connection
    // closed, and the server reads no more than its buffers hold.
    let mut body = TcpStream::connect(address).await.unwrap();
    body.write_all(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = body.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 100_000_000 && write.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let sent = tokio::time::timeout(PATIENCE, sender)
        .await
        .expect("the sender stopped")
        .unwrap();
    assert!(sent < 100_000_000, "the whole body was taken: {sent} bytes");
    stop(handle, run).await;
}

#[tokio::test]
async fn error_bodies_echo_a_short_escaped_prefix_and_are_not_sniffed() {
    let (handle, address, run) = serve(|s| s).await;
    let raw = |path: String| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        String::from_utf8(until_closed(&mut stream).await).unwrap()
    };

    let long = raw(format!("/health?service={}", "x".repeat(12 * 1024))).await;
    let (head, body) = long.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert_eq!(body, format!("no service named `{}…`\n", "x".repeat(64)));

    let hostile = raw("/health?service=%0D%0ASet-Cookie:%20a%3Cscript%3E%00".to_owned()).await;
    let body = hostile.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        body,
        "no service named `\\u{d}\\u{a}Set-Cookie: a\\u{3c}script\\u{3e}\\u{0}`\n"
    );
    // A sign is not a hex digit: `%+1` is `%`, a space (`+`) and `1`.
    let signed = raw("/health?service=%+1".to_owned()).await;
    assert_eq!(
        signed.split_once("\r\n\r\n").unwrap().1,
        "no service named `% 1`\n"
    );

    let path = raw(format!("/{}", "p".repeat(4 * 1024))).await;
    let body = path.split_once("\r\n\r\n").unwrap().1;
    assert!(body.starts_with(&format!("no such probe: /{}…;", "p".repeat(63))));
    assert!(body.len() < 256, "{}", body.len());
    stop(handle, run).await;
}

#[tokio::test]
async fn detail_levels_show_what_they_promise_and_no_more() {
    const SECRET: &str = "hunter2";
    for (level, expected) in [
        (None, "statuses"),
        (Some(ShowDetails::Statuses), "statuses"),
        (Some(ShowDetails::Never), "never"),
        (Some(ShowDetails::Always), "always"),
    ] {
        let (handle, address, run) = serve(|s| match level {
            Some(level) => s.show_details(level),
            None => s,
        })
        .await;
        let all = get(address, "/health").await;
        let one = get(address, "/health?service=feed").await;
        assert_eq!(all.status, StatusCode::OK, "degraded passes");
        match expected {
            "never" => {
                assert_eq!(all.json(), serde_json::json!({ "status": "degraded" }));
                assert_eq!(one.json(), serde_json::json!({ "status": "degraded" }));
            }
            "statuses" => {
                assert!(!all.body.contains(SECRET), "{}", all.body);
                assert!(!one.body.contains(SECRET), "{}", one.body);
                let feed = &all.json()["services"]["feed"];
                assert_eq!(feed, &one.json());
                assert_eq!(feed["status"], "degraded");
                assert_eq!(feed["dependencies"]["upstream"], "degraded");
                assert_eq!(feed["reason"], "dependency `upstream` is degraded");
                assert!(feed.get("details").is_none());
            }
            _ => {
                assert_eq!(
                    one.json()["details"]["upstream"],
                    "login as trader:hunter2 refused by 10.0.0.3"
                );
                assert!(all.body.contains(SECRET));
            }
        }
        stop(handle, run).await;
    }
}

/// A service whose critical check fails.
#[derive(Service)]
struct Broken;

#[lifecycle]
impl Broken {
    #[health(name = "database", critical)]
    async fn database(&self) -> HealthDetail {
        HealthDetail::unhealthy("connection refused")
    }
}

#[tokio::test]
async fn a_failing_readyz_names_the_service_unless_details_are_never_shown() {
    for (level, reason) in [
        (ShowDetails::Statuses, Some("unhealthy: broken")),
        (ShowDetails::Never, None),
    ] {
        let (handle, address, run) = serve(|s| s.add(Broken).show_details(level)).await;
        let ready = get(address, "/readyz").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready.json()["status"], "not ready");
        assert_eq!(ready.json()["reason"].as_str(), reason);
        let health = get(address, "/health?service=broken").await;
        assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!health.body.contains("refused"), "{}", health.body);
        stop(handle, run).await;
    }
}
