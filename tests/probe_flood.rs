//! The probe endpoint in a process of its own, flooded: unfinished heads from 2,000
//! connections (its memory, from `/proc/PID/status`), and connections beyond its file
//! descriptors (its warnings, and that it serves again once descriptors are free).
//!
//! Each test re-runs this test binary as the server (`PROBE_FLOOD_SERVER` says which),
//! which prints `ADDR <address>` and serves until killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http_client::PATIENCE;
use service_runtime::{ProbeLimits, Service, Supervisor, lifecycle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod http_client;

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {}

/// The server half: runs when this binary is started with `PROBE_FLOOD_SERVER`, never
/// returns.
fn server_if_asked() {
    let Ok(kind) = std::env::var("PROBE_FLOOD_SERVER") else {
        return;
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Connections stay until the parent closes them.
        let limits = ProbeLimits::new()
            .header_timeout(Duration::from_secs(3600))
            .idle_timeout(Duration::from_secs(3600));
        let supervisor = Supervisor::new()
            .add(Feed)
            .serve_health("127.0.0.1:0")
            .probe_limits(limits);
        let handle = supervisor.handle();
        tokio::spawn(async move {
            while handle.probe_address().is_none() || !handle.has_started() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if kind == "few-descriptors" {
                // Room for three connections more than are open now.
                let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
                let limit = libc::rlimit {
                    rlim_cur: open + 3,
                    rlim_max: open + 3,
                };
                // SAFETY: `setrlimit` reads the struct it is given.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            }
            println!("ADDR {}", handle.probe_address().unwrap());
        });
        let _ = supervisor.run_until(std::future::pending()).await;
    });
    std::process::exit(0);
}

/// The server child; killed when dropped. Its stderr lines arrive on `stderr`.
struct Server {
    child: Child,
    address: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(kind: &str, test: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("PROBE_FLOOD_SERVER", kind)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let (address_sender, address) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, address)) = line.split_once("ADDR ") {
                let _ = address_sender.send(address.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let Ok(address) = address.recv_timeout(PATIENCE) else {
        // Not left running after the test fails.
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not print its address");
    };
    Server {
        child,
        address,
        stderr,
    }
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn livez_answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return false;
    };
    let request = b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// The client half's runtime (a plain `#[test]`: the server half makes its own).
fn client() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn unfinished_heads_from_2000_connections_keep_memory_within_twice_idle() {
    server_if_asked();
    client().block_on(heads());
}

async fn heads() {
    let server = spawn_server(
        "heads",
        "unfinished_heads_from_2000_connections_keep_memory_within_twice_idle",
    );
    assert!(livez_answers(server.address).await);
    let (idle, _) = memory(server.child.id());

    // Each connection sends up to 380 KB of a header that never ends, then holds on
    // to what it has until every one is done. A server that buffers it all needs
    // 2,000 × 380 KB; this one answers 431 or closes past 16 KiB, and serves at most
    // 256 connections at once.
    let address = server.address;
    let floods: Vec<_> = (0..2_000)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(address).await else {
                    return None;
                };
                let chunk = [b'a'; 16 * 1024];
                if stream
                    .write_all(b"GET /livez HTTP/1.1\r\nX-Flood: ")
                    .await
                    .is_err()
                {
                    return Some(stream);
                }
                for _ in 0..(380 * 1024 / chunk.len()) {
                    let write = tokio::time::timeout(PATIENCE, stream.write_all(&chunk));
                    if !matches!(write.await, Ok(Ok(()))) {
                        break;
                    }
                }
                Some(stream)
            })
        })
        .collect();
    let mut held = Vec::new();
    for flood in floods {
        held.push(flood.await.unwrap());
    }
    let (during, peak) = memory(server.child.id());
    eprintln!("RSS: {idle} KiB idle, {during} KiB under the flood, peak {peak} KiB");
    drop(held);
    assert!(
        livez_answers(server.address).await,
        "serves after the flood"
    );
    assert!(
        peak <= 2 * idle,
        "peak RSS {peak} KiB (now {during} KiB) against {idle} KiB idle"
    );
}

#[test]
fn out_of_descriptors_the_accept_loop_warns_rarely_and_recovers() {
    server_if_asked();
    client().block_on(few_descriptors());
}

async fn few_descriptors() {
    let server = spawn_server(
        "few-descriptors",
        "out_of_descriptors_the_accept_loop_warns_rarely_and_recovers",
    );
    // Three fit under its descriptor limit; the rest wait in the backlog while every
    // accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(server.address).await.unwrap());
    }
    let accept_warning = |line: &str| line.contains("could not accept");
    let first = loop {
        let line = server
            .stderr
            .recv_timeout(PATIENCE)
            .expect("a warning that accepting failed");
        if accept_warning(&line) {
            break line;
        }
    };
    assert!(first.contains("Too many open files"), "{first}");
    // A second of failing accepts: the old loop warned 20 times in it.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut more = 0;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match server.stderr.recv_timeout(left) {
            Ok(line) if accept_warning(&line) => more += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(more <= 1, "{more} more warnings within a second");
    // Descriptors freed: it accepts and answers again (within its longest pause).
    drop(held);
    let answered = tokio::time::timeout(PATIENCE, async {
        while !livez_answers(server.address).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "the endpoint answers once descriptors are free"
    );
}
