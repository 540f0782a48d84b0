//! The design note's "Stream Processing Service Pattern" on a real broker: a producer and
//! consumers of a Redis stream, supervised, with a Redis health check guarded by a
//! circuit breaker. One process does it all, or each role runs in processes of its own:
//! one producer, and N consumer replicas in one consumer group.
//!
//! ```text
//! stream_pipeline          init: connect, XGROUP CREATE stream_pipeline:events processors 0 MKSTREAM
//!  │                       health "redis": PING through the circuit breaker
//!  ├─ consumer (component) XREADGROUP GROUP processors processor-1 … >, then the commit script
//!  └─ producer (component) XADD stream_pipeline:events <seq>-1 seq <seq> …, 20 a second
//!
//! … produce                the producer alone
//! … consume NAME           a replica: the group, the check, and a consumer named NAME, which
//!                          also claims what other replicas left pending (XAUTOCLAIM)
//! ```
//!
//! The services are in `tests/support/stream_pipeline/`, shared with the integration
//! tests that kill Redis under them (`tests/redis_pipeline.rs`) and kill replicas
//! (`tests/redis_replicas.rs`).
//!
//! ```sh
//! redis-server --port 6379 &                          # or any Redis; REDIS_URL says where
//! cargo run --example stream_pipeline                 # one process; stop with Ctrl-C
//! REDIS_URL=redis://127.0.0.1:6380 cargo run --example stream_pipeline
//! DEMO_RUN_FOR=10 cargo run --example stream_pipeline # or let it stop by itself
//! RUST_LOG=info cargo run --example stream_pipeline   # plus the runtime's own events (stderr)
//!
//! cargo build --example stream_pipeline; B=target/debug/examples/stream_pipeline
//! $B consume replica-1 & $B consume replica-2 & $B consume replica-3 &   # 3 replicas
//! $B produce --interval 1                              # and one producer, 1,000 a second
//! ```
//!
//! `produce` takes `--interval MS` between messages (default 50; 0: as fast as Redis
//! confirms them) and `--last N` (the last sequence to write, then it idles). `consume
//! NAME` takes `--batch N` (entries per read, default 32), `--work MS` (simulated work per
//! message, default 0), `--claim-idle MS` (claim entries pending longer than this from any
//! consumer, default 10,000) and `--lag-threshold MS` (the `lag` check is degraded once an
//! entry has been pending under NAME for longer, default 5,000). Every process serves its
//! probes on `PROBES_ADDR` (default `127.0.0.1:0`, any free port, printed at start;
//! `off`: none).
//!
//! It prints every status change, every change of the breaker, and a health line every
//! 2 s (a replica's with its lag). Stop Redis while it runs: the `redis` check turns
//! unhealthy, the breaker opens (the check is then degraded), the loops wait; start Redis
//! again and the pipeline carries on by itself, without losing a message or applying one
//! twice (with Redis's persistence on, e.g. `--appendonly yes`). Kill a replica (`kill
//! -9`): the others claim what it held once that has been idle for the claim bound. On
//! Ctrl-C (SIGINT) or SIGTERM the producer stops first, then the consumer, after
//! committing the batch it holds; a replica then leaves the group (`/readyz` is 503 from
//! the signal on).

#[path = "../tests/support/stream_pipeline/mod.rs"]
mod pipeline;

use std::collections::BTreeSet;
use std::process::{ExitCode, Termination};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::stream::{SelectAll, select_all};
use futures_util::{FutureExt, StreamExt};
use pipeline::{
    Consumer, ConsumerOptions, Ledger, Pipeline, Producer, ProducerOptions, Replica, Settings,
};
use redis::AsyncCommands;
use service_runtime::{
    CircuitBreaker, Managed, ServiceStatus, Shutdown, StatusChange, StatusChanges, Supervisor,
    SupervisorHandle,
};
use tokio::time::Instant;

const USAGE: &str = "usage: stream_pipeline                   producer and consumer in one process
       stream_pipeline produce [--interval MS] [--last N]
       stream_pipeline consume NAME [--batch N] [--work MS] [--claim-idle MS] [--lag-threshold MS]";

/// What this process runs.
#[derive(Clone)]
enum Role {
    /// The producer and the consumer `processor-1`, as components of one service.
    Combined,
    Produce(ProducerOptions),
    /// A replica named by its consumer name.
    Consume(String, ConsumerOptions),
}

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

    let role = match parse_role(std::env::args().skip(1)) {
        Ok(role) => role,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut settings = match Settings::new(&url) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("invalid REDIS_URL {url:?}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ledger = Arc::new(Ledger::default());

    // One service per role; subscribe to it and its components before running, so the
    // printer sees every change from the first one.
    let (supervisor, changes, consumer, what) = match &role {
        Role::Combined => {
            let pipeline = Managed::new(Pipeline::new(
                settings.clone(),
                ProducerOptions {
                    interval: Duration::from_millis(50),
                    last: None,
                },
                ConsumerOptions::default(),
                ledger.clone(),
            ));
            let (producer, consumer) = {
                let pipeline = pipeline.read().await;
                (pipeline.producer.clone(), pipeline.consumer.clone())
            };
            let changes = vec![
                pipeline.subscribe(),
                consumer.subscribe(),
                producer.subscribe(),
            ];
            let supervisor = Supervisor::new().add(pipeline);
            (supervisor, changes, None, "pipeline".to_owned())
        }
        Role::Produce(options) => {
            let producer = Managed::new(Producer::new(settings.clone(), *options, ledger.clone()));
            let changes = vec![producer.subscribe()];
            let supervisor = Supervisor::new().add(producer);
            (supervisor, changes, None, "producer".to_owned())
        }
        Role::Consume(name, options) => {
            settings.consumer.clone_from(name);
            let replica = Managed::new(Replica::new(settings.clone(), *options, ledger.clone()));
            let consumer = replica.read().await.consumer.clone();
            let changes = vec![replica.subscribe(), consumer.subscribe()];
            let supervisor = Supervisor::new().add(replica);
            (
                supervisor,
                changes,
                Some(consumer),
                format!("replica `{name}`"),
            )
        }
    };
    let probes = std::env::var("PROBES_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let supervisor = if probes == "off" {
        supervisor
    } else {
        supervisor.serve_health(probes)
    };
    let supervisor = supervisor.shutdown_timeout(Duration::from_secs(10));
    let handle = supervisor.handle();

    let clock = Clock::new();
    let done = Shutdown::new();
    let banner = format!("{what} running; press Ctrl-C to stop");
    let printer = tokio::spawn(print_changes(changes, banner, clock, done.clone()));
    tokio::spawn(print_breaker(settings.breaker.clone(), clock, done.clone()));
    {
        let handle = handle.clone();
        // The endpoint listens before the first service starts.
        tokio::spawn(async move {
            let started = handle.started().await.is_ok();
            if let Some(address) = handle.probe_address().filter(|_| started) {
                println!(
                    "{} probes on http://{address}: /livez /readyz /health",
                    clock.stamp()
                );
            }
        });
    }
    {
        let (role, consumer) = (role.clone(), consumer.clone());
        let (ledger, handle) = (ledger.clone(), handle.clone());
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
                print_health(&role, &handle, consumer.as_ref(), &ledger, clock).await;
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
    summary(&role, &settings, &ledger, clock).await;
    if !report.is_success() && ledger.produced.load(Ordering::Relaxed) == 0 {
        eprintln!("is Redis running at {url}? (set REDIS_URL to point elsewhere)");
    }
    report.report() // prints the errors; 0 when every service stopped cleanly
}

/// The role and its options, from the command line.
fn parse_role(mut args: impl Iterator<Item = String>) -> Result<Role, String> {
    let role = match args.next().as_deref() {
        None => return Ok(Role::Combined),
        Some("produce") => Role::Produce(ProducerOptions {
            interval: Duration::from_millis(50),
            last: None,
        }),
        Some("consume") => {
            let name = args
                .next()
                .ok_or("consume: the consumer's NAME is missing")?;
            if name.starts_with('-') {
                return Err(format!("consume: {name:?} is not a consumer name"));
            }
            Role::Consume(
                name,
                ConsumerOptions {
                    claim_idle: Some(Duration::from_secs(10)),
                    ..ConsumerOptions::default()
                },
            )
        }
        Some(other) => return Err(format!("unknown role {other:?}")),
    };
    let mut role = role;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: a value is missing"))?;
        let number = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("{flag}: {value:?} is not a number"))
        };
        let millis = || number().map(|ms| Duration::from_secs_f64(ms / 1000.0));
        match (&mut role, flag.as_str()) {
            (Role::Produce(options), "--interval") => options.interval = millis()?,
            (Role::Produce(options), "--last") => options.last = Some(number()? as u64),
            (Role::Consume(_, options), "--batch") => options.batch = (number()? as usize).max(1),
            (Role::Consume(_, options), "--work") => options.work = millis()?,
            (Role::Consume(_, options), "--claim-idle") => options.claim_idle = Some(millis()?),
            (Role::Consume(_, options), "--lag-threshold") => options.lag_threshold = millis()?,
            _ => return Err(format!("unknown option {flag:?} for this role")),
        }
    }
    Ok(role)
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

/// Prints the status changes of the services in the order they happened (by their time:
/// the streams are merged), and `banner` once the top service runs; returns after `done`
/// once every queued change is printed.
async fn print_changes(streams: Vec<StatusChanges>, banner: String, clock: Clock, done: Shutdown) {
    let mut merged = select_all(streams);
    loop {
        let first = tokio::select! {
            Some(change) = merged.next() => change,
            () = done.requested() => break,
        };
        // Changes made together (a stop walks through all of them) arrive together.
        tokio::time::sleep(Duration::from_millis(5)).await;
        print_in_order(vec![first], &mut merged, &banner, clock);
    }
    print_in_order(Vec::new(), &mut merged, &banner, clock);
}

/// The services whose running state the banner announces: the top one of each role.
const TOP_SERVICES: [&str; 3] = ["stream_pipeline", "producer", "stream_replica"];

fn print_in_order(
    mut changes: Vec<StatusChange>,
    merged: &mut SelectAll<StatusChanges>,
    banner: &str,
    clock: Clock,
) {
    while let Some(Some(change)) = merged.next().now_or_never() {
        changes.push(change);
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
        let top = TOP_SERVICES.contains(&change.service.as_ref());
        if top && change.to == ServiceStatus::Running {
            println!("{} {banner}", clock.stamp_at(change.at));
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

/// One health line: the service's status, its checks and components, the counters, and
/// a replica's lag.
async fn print_health(
    role: &Role,
    handle: &SupervisorHandle,
    consumer: Option<&Managed<Consumer>>,
    ledger: &Ledger,
    clock: Clock,
) {
    let health = handle.health().await;
    let lag = match consumer {
        Some(consumer) => consumer.health().await.details.get("lag").cloned(),
        None => None,
    };
    if handle.is_stopping() {
        return; // the report was taken before the shutdown began: it is already stale
    }
    let Some(report) = health.services.values().next() else {
        return;
    };
    let dependencies: Vec<String> = report
        .dependencies
        .iter()
        .map(|(name, status)| format!("{name} {status}"))
        .collect();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let counters = match role {
        Role::Combined => format!(
            "produced {}, processed {}, acked {}",
            load(&ledger.produced),
            ledger.processed_count(),
            load(&ledger.acked)
        ),
        Role::Produce(_) => format!("produced {}", load(&ledger.produced)),
        Role::Consume(..) => format!(
            "processed {}, claimed {}, acked {}",
            ledger.processed_count(),
            load(&ledger.claimed),
            load(&ledger.acked)
        ),
    };
    let mut line = format!(
        "{} health: {} ({})  {counters}",
        clock.stamp(),
        report.status,
        dependencies.join(", "),
    );
    if let Some(lag) = lag {
        line.push_str(&format!("; lag: {lag}"));
    }
    if let Some(reason) = &report.reason {
        line.push_str(&format!("\n            {reason}"));
    }
    println!("{line}");
}

/// What went through, and what Redis still holds as pending once everything stopped.
async fn summary(role: &Role, settings: &Settings, ledger: &Ledger, clock: Clock) {
    let processed = ledger.processed();
    let distinct: BTreeSet<u64> = processed.iter().copied().collect();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let produced = format!(
        "produced {}; {} appends found already written",
        load(&ledger.produced),
        load(&ledger.already_written),
    );
    let consumed = format!(
        "processed {} ({} duplicates; {} claimed, {} redelivered), {} effects applied, {} found \
         applied already, {} acked",
        processed.len(),
        processed.len() - distinct.len(),
        load(&ledger.claimed),
        load(&ledger.redelivered),
        load(&ledger.applied),
        load(&ledger.already_applied),
        load(&ledger.acked),
    );
    match role {
        Role::Combined => println!("{} {produced}; {consumed}", clock.stamp()),
        Role::Produce(_) => {
            println!("{} {produced}", clock.stamp());
            return;
        }
        Role::Consume(name, _) => {
            let left = if ledger.left_group.load(Ordering::Relaxed) {
                "left the group"
            } else {
                "still in the group"
            };
            println!("{} consumer `{name}`: {consumed}; {left}", clock.stamp());
        }
    }
    let pending = async {
        let mut conn = settings.client.get_multiplexed_async_connection().await?;
        let reply: redis::streams::StreamPendingReply =
            conn.xpending(&settings.stream, &settings.group).await?;
        let own = match &reply {
            redis::streams::StreamPendingReply::Data(data) => data
                .consumers
                .iter()
                .find(|consumer| consumer.name == settings.consumer)
                .map_or(0, |consumer| consumer.pending),
            redis::streams::StreamPendingReply::Empty => 0,
        };
        Ok::<_, redis::RedisError>((reply.count(), own))
    };
    match tokio::time::timeout(Duration::from_secs(1), pending).await {
        Ok(Ok((pending, own))) => println!(
            "{} entries pending in group `{}`: {pending} ({own} under `{}`)",
            clock.stamp(),
            settings.group,
            settings.consumer,
        ),
        Ok(Err(error)) => println!("{} pending entries unknown: {error}", clock.stamp()),
        Err(_) => println!(
            "{} pending entries unknown: Redis did not answer",
            clock.stamp()
        ),
    }
}
