//! Item 4: probe throughput and latency over loopback, against a bare hyper handler that
//! returns the same bytes.
//!
//! Servers and the load generator are separate processes on one core each (CPU 0 for the
//! server, CPU 1 for the load, with `sched_setaffinity`), on current-thread runtimes.
//! The load generator is `wrk` when it is installed (`apt-get install wrk`), otherwise a
//! built-in one: keep-alive HTTP/1.1 connections, one request in flight per connection,
//! every latency recorded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use service_runtime::{ProbeLimits, Supervisor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::services::{OneCheck, named};
use crate::{Settings, median, num, parse_results, report};

/// Many connections (the throughput figure) and few (the latency without queueing: with
/// a closed loop at saturation, latency ≈ connections ÷ throughput for any server).
const CONNECTIONS: [usize; 2] = [64, 8];
const PATHS: [&str; 2] = ["/readyz", "/health"];

/// Pins the calling thread (and the threads it spawns later) to one CPU, when there are two.
fn pin(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return;
    }
    // SAFETY: a zeroed `cpu_set_t` is valid; `CPU_SET` writes within it; `sched_setaffinity`
    // reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Idle connections held open beside the load in the rows that measure their cost.
const IDLE: usize = 1_000;

/// `probe-server ours <services>`, `probe-server ours-wide <services>` (limits wide
/// enough to serve [`IDLE`] silent connections and the load at once, for as long as the
/// run) or `probe-server bare <readyz body> <health body>`: prints `ADDR <address>`,
/// then serves until killed.
pub fn server(kind: &str, rest: &[&str]) {
    pin(0);
    let rt = crate::runtime("ct");
    rt.block_on(async {
        match kind {
            "ours" | "ours-wide" => {
                let services: usize = rest[0].parse().expect("services");
                let mut supervisor = Supervisor::new().serve_health("127.0.0.1:0");
                if kind == "ours-wide" {
                    let hour = Duration::from_secs(3600);
                    supervisor = supervisor.probe_limits(
                        ProbeLimits::new()
                            .header_timeout(hour)
                            .idle_timeout(hour)
                            .max_connections(2 * IDLE),
                    );
                }
                for i in 0..services {
                    supervisor = supervisor.add(named(OneCheck, format!("service{i}")));
                }
                let handle = supervisor.handle();
                tokio::spawn(async move {
                    while !handle.has_started() || handle.probe_address().is_none() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    println!("ADDR {}", handle.probe_address().expect("probe address"));
                });
                let _ = supervisor.run_until(std::future::pending()).await;
            }
            "bare" => bare(rest[0].to_owned(), rest[1].to_owned()).await,
            other => panic!("unknown server {other}"),
        }
    });
}

/// The baseline: hyper's HTTP/1.1 server with a handler that returns fixed bytes.
async fn bare(readyz: String, health: String) {
    use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("ADDR {}", listener.local_addr().expect("local address"));
    let readyz = Bytes::from(readyz);
    let health = Bytes::from(health);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (readyz, health) = (readyz.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let body = if request.uri().path() == "/readyz" {
                    readyz.clone()
                } else {
                    health.clone()
                };
                async move {
                    let mut response = hyper::Response::new(Full::new(body));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The built-in load generator: `load <address> <path> <connections> <seconds>`.
pub fn load(address: &str, path: &str, connections: usize, seconds: f64) {
    pin(1);
    let address: SocketAddr = address.parse().expect("address");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").into_bytes();
    let rt = crate::runtime("ct");
    let (latencies, elapsed, errors) = rt.block_on(async move {
        let began = Instant::now();
        let deadline = began + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move { connection(address, &request, deadline).await })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            match task.await.expect("connection task") {
                Ok(mut l) => latencies.append(&mut l),
                Err(_) => errors += 1,
            }
        }
        (latencies, began.elapsed(), errors)
    });
    let mut sorted: Vec<f64> = latencies.iter().map(|&ns| f64::from(ns)).collect();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    report(
        "load",
        &[
            ("rps", latencies.len() as f64 / elapsed.as_secs_f64()),
            ("p50_us", pct(0.50) / 1e3),
            ("p99_us", pct(0.99) / 1e3),
            ("errors", f64::from(errors)),
        ],
    );
}

/// One keep-alive connection: request, read the whole response, repeat until `deadline`.
/// Returns each request's latency in ns.
async fn connection(
    address: SocketAddr,
    request: &[u8],
    deadline: Instant,
) -> std::io::Result<Vec<u32>> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut latencies = Vec::with_capacity(64 * 1024);
    let mut buffer = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let began = Instant::now();
        stream.write_all(request).await?;
        let mut filled = 0;
        loop {
            if filled == buffer.len() {
                // A body larger than the buffer (`/health` of 1,000 services).
                buffer.resize(2 * buffer.len(), 0);
            }
            let read = stream.read(&mut buffer[filled..]).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            filled += read;
            if let Some(total) = response_length(&buffer[..filled]) {
                if filled >= total {
                    assert!(buffer.starts_with(b"HTTP/1.1 200"), "not a 200 response");
                    break;
                }
            }
        }
        latencies.push(u32::try_from(began.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}

/// The length of a response (headers + `content-length`) once its headers are complete.
fn response_length(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = std::str::from_utf8(&bytes[..end]).ok()?;
    let length = headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    Some(end + length)
}

/// A server child and its address; killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(args: &[&str]) -> Server {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("--child")
        .arg("probe-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(address) = line.strip_prefix("ADDR ") {
                    break address.to_owned();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("the {args:?} server did not start");
            }
        }
    };
    Server { child, address }
}

/// The body of one GET, with a blocking client.
fn fetch_body(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("a body")
}

/// Whether `wrk` can be run.
fn have_wrk() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// (requests/s, p50 µs, p99 µs) for one load run.
fn run_load(
    address: &str,
    path: &str,
    connections: usize,
    seconds: f64,
    wrk: bool,
) -> (f64, f64, f64) {
    if wrk {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new("wrk");
        command
            .args([
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
            ])
            .arg(format!("http://{address}{path}"));
        // SAFETY: `pin` only calls `sched_setaffinity`, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                pin(1);
                Ok(())
            });
        }
        let output = command.output().expect("run wrk");
        let text = String::from_utf8_lossy(&output.stdout);
        return parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"));
    }
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new(exe)
        .args([
            "--child",
            "load",
            address,
            path,
            &connections.to_string(),
            &seconds.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the load generator");
    let results = parse_results(&String::from_utf8_lossy(&output.stdout));
    let values = &results.first().expect("a load result").1;
    assert_eq!(values["errors"], 0.0, "connections failed");
    (values["rps"], values["p50_us"], values["p99_us"])
}

/// Requests/s and the 50th and 99th latency percentiles (µs) of `wrk --latency`.
fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let duration_us = |value: &str| -> Option<f64> {
        let value = value.trim();
        let split = value.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = value.split_at(split);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number,
            "ms" => number * 1e3,
            "s" => number * 1e6,
            _ => return None,
        })
    };
    let percentile = |p: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(p))
            .and_then(duration_us)
    };
    let rps = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some((rps, percentile("50%")?, percentile("99%")?))
}

pub fn run(settings: &Settings) -> String {
    let wrk = have_wrk();
    let seconds = if settings.quick { 1.0 } else { 5.0 };
    let rounds = if settings.quick { 1 } else { 3 };
    let sizes: &[usize] = if settings.quick { &[10] } else { &[10, 1_000] };
    let connection_counts: &[usize] = if settings.quick {
        &CONNECTIONS[..1]
    } else {
        &CONNECTIONS
    };
    // (connections, path, services, ours) -> samples of (rps, p50, p99); the bare server
    // of a size returns the bodies of that size.
    type Key<'a> = (usize, &'a str, usize, bool);
    let mut samples: BTreeMap<Key<'_>, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for &services in sizes {
        let ours = spawn_server(&["ours", &services.to_string()]);
        let readyz = fetch_body(&ours.address, "/readyz");
        let health = fetch_body(&ours.address, "/health");
        let bare = spawn_server(&["bare", &readyz, &health]);
        for _ in 0..rounds {
            for &connections in connection_counts {
                for path in PATHS {
                    samples
                        .entry((connections, path, services, true))
                        .or_default()
                        .push(run_load(&ours.address, path, connections, seconds, wrk));
                    samples
                        .entry((connections, path, services, false))
                        .or_default()
                        .push(run_load(&bare.address, path, connections, seconds, wrk));
                }
            }
        }
    }
    let medians: BTreeMap<Key<'_>, (f64, f64, f64)> = samples
        .into_iter()
        .map(|(key, s)| {
            let column =
                |f: fn(&(f64, f64, f64)) -> f64| median(&mut s.iter().map(f).collect::<Vec<_>>());
            (key, (column(|s| s.0), column(|s| s.1), column(|s| s.2)))
        })
        .collect();

    let mut out = String::new();
    let idle_rows = idle_connections(connection_counts, seconds, rounds, wrk);
    let _ = writeln!(
        out,
        "## 4. Probe throughput\n\n\
         {} over loopback, keep-alive connections, {seconds} s per run, median of {rounds} run(s); \
         server and load generator pinned to one core each, current-thread runtimes. The \
         supervisor runs N services of one instant check; `/health` is cached (default TTL 1 s). \
         The bare server is hyper with a handler returning the same bytes and headers. Targets: \
         ≥ 0.8 × bare hyper, p99 < 1 ms. At 64 connections both servers are saturated and \
         latency is mostly queueing (≈ 64 ÷ throughput); the 8-connection rows show latency \
         without it.\n",
        if wrk {
            "`wrk -t1 --latency`"
        } else {
            "the built-in load generator (`wrk` is not installed)"
        }
    );
    let _ = writeln!(
        out,
        "| connections | path | server | requests/s | ÷ bare | p50 | p99 |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|");
    let us = |v: f64| format!("{} µs", num(v, 0));
    for &connections in connection_counts {
        for path in PATHS {
            for &services in sizes {
                let base = medians[&(connections, path, services, false)];
                let row = medians[&(connections, path, services, true)];
                let _ = writeln!(
                    out,
                    "| {connections} | `{path}` | bare hyper, the bytes of {} services | {} | | {} | {} |",
                    num(services as f64, 0),
                    num(base.0, 0),
                    us(base.1),
                    us(base.2)
                );
                let p99 = if row.2 < 1_000.0 { " ✓" } else { " ✗" };
                let _ = writeln!(
                    out,
                    "| {connections} | `{path}` | ours, {} services | {} | {} | {} | {}{p99} |",
                    num(services as f64, 0),
                    num(row.0, 0),
                    ratio_at_least(row.0 / base.0, 0.8),
                    us(row.1),
                    us(row.2)
                );
            }
        }
    }
    out.push_str(&idle_rows);
    out
}

/// The rows of [`IDLE`] silent connections held open beside the load, against the same
/// server and load without them: what the per-connection timers and the cap's
/// bookkeeping cost the connections that work.
fn idle_connections(connection_counts: &[usize], seconds: f64, rounds: usize, wrk: bool) -> String {
    let services = 10;
    let server = spawn_server(&["ours-wide", &services.to_string()]);
    /// (requests/s, p50 µs, p99 µs) of one run.
    type Sample = (f64, f64, f64);
    // (connections, path, idle connections held) -> samples
    let mut samples: BTreeMap<(usize, &str, bool), Vec<Sample>> = BTreeMap::new();
    for _ in 0..rounds {
        for &connections in connection_counts {
            for path in PATHS {
                for idle in [false, true] {
                    let held: Vec<TcpStream> = if idle {
                        (0..IDLE)
                            .map(|_| TcpStream::connect(&server.address).expect("connect"))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    samples
                        .entry((connections, path, idle))
                        .or_default()
                        .push(run_load(&server.address, path, connections, seconds, wrk));
                    drop(held);
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} silent connections held open beside the load (connected, nothing sent), \
         against the same server without them; ours with {services} services, limits \
         raised so every connection is served for the whole run (the default cap of 256 \
         would close most of them at once). Target: ≥ 0.9 × without.\n",
        num(IDLE as f64, 0)
    );
    let _ = writeln!(
        out,
        "| connections | path | beside the load | requests/s | ÷ without | p50 | p99 |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|");
    let us = |v: f64| format!("{} µs", num(v, 0));
    let column =
        |s: &[Sample], f: fn(&Sample) -> f64| median(&mut s.iter().map(f).collect::<Vec<_>>());
    for &connections in connection_counts {
        for path in PATHS {
            let without = &samples[&(connections, path, false)];
            let with = &samples[&(connections, path, true)];
            let base = column(without, |s| s.0);
            let _ = writeln!(
                out,
                "| {connections} | `{path}` | nothing | {} | | {} | {} |",
                num(base, 0),
                us(column(without, |s| s.1)),
                us(column(without, |s| s.2))
            );
            let rps = column(with, |s| s.0);
            let _ = writeln!(
                out,
                "| {connections} | `{path}` | {} idle connections | {} | {} | {} | {} |",
                num(IDLE as f64, 0),
                num(rps, 0),
                ratio_at_least(rps / base, 0.9),
                us(column(with, |s| s.1)),
                us(column(with, |s| s.2))
            );
        }
    }
    out
}

/// A ratio with a mark when it reaches (`✓`) or falls short of (`✗`) a minimum.
fn ratio_at_least(value: f64, minimum: f64) -> String {
    let mark = if value >= minimum { "✓" } else { "✗" };
    format!("{value:.2}× {mark}")
}
