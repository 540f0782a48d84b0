//! The design note's "Stream Processing Service Pattern" on a real broker: a producer and
//! a consumer of a Redis stream, as components of a pipeline service, with a Redis
//! health check guarded by a circuit breaker.
//!
//! ```text
//! stream_pipeline          init: connect, XGROUP CREATE stream_pipeline:events processors 0 MKSTREAM
//!  │                       health "redis": PING through the circuit breaker
//!  ├─ consumer (component) XREADGROUP GROUP processors processor-1 … >, then XACK
//!  └─ producer (component) XADD stream_pipeline:events <seq>-1 seq <seq> …, 20 a second
//! ```
//!
//! The services are in `tests/support/stream_pipeline/`, shared with the integration
//! test that kills Redis under them (`tests/redis_pipeline.rs`).
//!
//! ```sh
//! redis-server --port 6379 &                          # or any Redis; REDIS_URL says where
//! cargo run --example stream_pipeline                 # stop with Ctrl-C
//! REDIS_URL=redis://127.0.0.1:6380 cargo run --example stream_pipeline
//! DEMO_RUN_FOR=10 cargo run --example stream_pipeline # or let it stop by itself
//! RUST_LOG=info cargo run --example stream_pipeline   # plus the runtime's own events (stderr)
//! ```
//!
//! It prints every status change, every change of the breaker, and a health line every
//! 2 s. Stop Redis while it runs: the `redis` check turns unhealthy, the breaker opens
//! (the check is then degraded), the producer and the consumer wait; start Redis again
//! and the pipeline carries on by itself, without losing or repeating a message (with
//! Redis's persistence on, e.g. `--appendonly yes`). On Ctrl-C (SIGINT) or SIGTERM the
//! producer stops first, then the consumer, after acknowledging the batch it holds.

#[path = "../tests/support/stream_pipeline/mod.rs"]
mod pipeline;

use std::collections::BTreeSet;
use std::process::{ExitCode, Termination};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use pipeline::{ConsumerOptions, Ledger, Pipeline, ProducerOptions, Settings};
use redis::AsyncCommands;
use service_runtime::{
    CircuitBreaker, Managed, ServiceStatus, Shutdown, StatusChange, StatusChanges, Supervisor,
    SupervisorHandle,
};
use tokio::time::Instant;

/// The line printed once the pipeline runs.
const BANNER: &str = "pipeline running; press Ctrl-C to stop";

#[tokio::main]
async fn main() -> ExitCode {
    // The runtime's own tracing events go to stderr, only when asked for with RUST_LOG.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let settings = match Settings::new(&url) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("invalid REDIS_URL {url:?}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ledger = Arc::new(Ledger::default());
    let pipeline = Managed::new(Pipeline::new(
        settings.clone(),
        ProducerOptions {
            interval: Duration::from_millis(50),
            last: None,
        },
        ConsumerOptions {
            batch: 32,
            work: Duration::ZERO,
            ..ConsumerOptions::default()
        },
        ledger.clone(),
    ));
    let supervisor = Supervisor::new()
        .add(pipeline.clone())
        .shutdown_timeout(Duration::from_secs(10));
    let handle = supervisor.handle();

    // Subscribe before running, so the printer sees every change from the first one.
    let (producer, consumer) = {
        let pipeline = pipeline.read().await;
        (pipeline.producer.clone(), pipeline.consumer.clone())
    };
    let clock = Clock::new();
    let done = Shutdown::new();
    let printer = tokio::spawn(print_changes(
        [
            pipeline.subscribe(),
            consumer.subscribe(),
            producer.subscribe(),
        ],
        clock,
        done.clone(),
    ));
    tokio::spawn(print_breaker(settings.breaker.clone(), clock, done.clone()));
    {
        let (pipeline, ledger, handle) = (pipeline.clone(), ledger.clone(), handle.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval_at(
                Instant::now() + Duration::from_secs(2),
                Duration::from_secs(2),
            );
            loop {
                interval.tick().await;
                if handle.is_stopping() {
                    return;
                }
                print_health(&pipeline, &ledger, &handle, clock).await;
            }
        });
    }
    if let Some(seconds) = std::env::var("DEMO_RUN_FOR")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            println!(
                "{} DEMO_RUN_FOR={seconds} elapsed; shutting down",
                clock.stamp()
            );
            handle.shutdown();
        });
    }

    println!("{} connecting to {url}", clock.stamp());
    let report = supervisor.run_until_signal().await;
    done.request();
    let _ = printer.await;
    summary(&settings, &ledger, clock).await;
    if !report.is_success() && ledger.produced.load(Ordering::Relaxed) == 0 {
        eprintln!("is Redis running at {url}? (set REDIS_URL to point elsewhere)");
    }
    report.report() // prints the errors; 0 when the pipeline stopped cleanly
}

/// Time since the program started, for the start of each line.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn stamp(self) -> String {
        Self::format(self.start.elapsed())
    }

    /// The stamp of a wall-clock time (when a status change happened).
    fn stamp_at(self, at: SystemTime) -> String {
        Self::format(at.duration_since(self.wall).unwrap_or_default())
    }

    fn format(elapsed: Duration) -> String {
        format!("[{:>8.3}s]", elapsed.as_secs_f64())
    }
}

/// Prints the status changes of the pipeline and its components in the order they
/// happened (by their time: three streams are merged), and the banner once the pipeline
/// runs; returns after `done` once every queued change is printed.
async fn print_changes(streams: [StatusChanges; 3], clock: Clock, done: Shutdown) {
    let [mut a, mut b, mut c] = streams;
    loop {
        let first = tokio::select! {
            Some(change) = a.recv() => change,
            Some(change) = b.recv() => change,
            Some(change) = c.recv() => change,
            () = done.requested() => break,
        };
        // Changes made together (a stop walks through all three) arrive together.
        tokio::time::sleep(Duration::from_millis(5)).await;
        print_in_order(vec![first], [&mut a, &mut b, &mut c], clock);
    }
    print_in_order(Vec::new(), [&mut a, &mut b, &mut c], clock);
}

fn print_in_order(mut changes: Vec<StatusChange>, streams: [&mut StatusChanges; 3], clock: Clock) {
    for stream in streams {
        while let Some(change) = stream.try_recv() {
            changes.push(change);
        }
    }
    changes.sort_by_key(|change| change.at);
    for change in changes {
        let error = change.error.map(|e| format!("  {e}")).unwrap_or_default();
        println!(
            "{} {:<16} {} -> {}{error}",
            clock.stamp_at(change.at),
            change.service,
            change.from,
            change.to
        );
        if change.service.as_ref() == "stream_pipeline" && change.to == ServiceStatus::Running {
            println!("{} {BANNER}", clock.stamp_at(change.at));
        }
    }
}

/// Prints each change of the breaker's state (checked every 50 ms).
async fn print_breaker(breaker: CircuitBreaker, clock: Clock, done: Shutdown) {
    let mut last = breaker.state();
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = done.requested() => return,
            _ = interval.tick() => {}
        }
        let state = breaker.state();
        if state != last {
            println!(
                "{} circuit breaker `{}`: {last} -> {state}",
                clock.stamp(),
                breaker.name()
            );
            last = state;
        }
    }
}

/// One health line: the pipeline's status, its checks and components, and the counters.
async fn print_health(
    pipeline: &Managed<Pipeline>,
    ledger: &Ledger,
    handle: &SupervisorHandle,
    clock: Clock,
) {
    let health = pipeline.health().await;
    if handle.is_stopping() {
        return; // the report was taken before the shutdown began: it is already stale
    }
    let dependencies: Vec<String> = health
        .dependencies
        .iter()
        .map(|(name, status)| format!("{name} {status}"))
        .collect();
    let produced = ledger.produced.load(Ordering::Relaxed);
    let processed = ledger.processed_count();
    let mut line = format!(
        "{} health: {} ({})  produced {produced}, processed {processed}, acked {}",
        clock.stamp(),
        health.status,
        dependencies.join(", "),
        ledger.acked.load(Ordering::Relaxed),
    );
    if let Some(reason) = &health.reason {
        line.push_str(&format!("\n            {reason}"));
    }
    println!("{line}");
}

/// What went through, and what Redis still holds as pending once everything stopped.
async fn summary(settings: &Settings, ledger: &Ledger, clock: Clock) {
    let processed = ledger.processed();
    let distinct: BTreeSet<u64> = processed.iter().copied().collect();
    println!(
        "{} produced {}, processed {} ({} duplicates), acked {}; {} appends found already written, {} entries redelivered",
        clock.stamp(),
        ledger.produced.load(Ordering::Relaxed),
        processed.len(),
        processed.len() - distinct.len(),
        ledger.acked.load(Ordering::Relaxed),
        ledger.already_written.load(Ordering::Relaxed),
        ledger.redelivered.load(Ordering::Relaxed),
    );
    let pending = async {
        let mut conn = settings.client.get_multiplexed_async_connection().await?;
        let reply: redis::streams::StreamPendingReply =
            conn.xpending(&settings.stream, &settings.group).await?;
        Ok::<_, redis::RedisError>(reply.count())
    };
    match tokio::time::timeout(Duration::from_secs(1), pending).await {
        Ok(Ok(pending)) => println!(
            "{} entries pending in group `{}`: {pending}",
            clock.stamp(),
            settings.group
        ),
        Ok(Err(error)) => println!("{} pending entries unknown: {error}", clock.stamp()),
        Err(_) => println!(
            "{} pending entries unknown: Redis did not answer",
            clock.stamp()
        ),
    }
}
