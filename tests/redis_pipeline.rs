//! The stream pipeline of `examples/stream_pipeline.rs` against a real Redis: each test
//! starts its own `redis-server` on a free loopback port, with the stream persisted
//! (AOF, fsync at every write) in a directory of its own, and kills it with SIGKILL.
//!
//! Without `redis-server` on the PATH the tests print a loud notice and pass, except
//! under `CI=true`, where they fail: `.ci/run` installs it, so CI never skips them.

#[path = "support/stream_pipeline/mod.rs"]
mod pipeline;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pipeline::{ConsumerOptions, Ledger, Pipeline, ProducerOptions, Settings};
use redis::AsyncCommands;
use redis_server::RedisServer;
use service_runtime::{BreakerState, HealthReport, HealthStatus, Managed, ServiceStatus};
use tokio::time::Instant;

/// Every wait in these tests is bounded, so a hang fails instead of stalling.
const PATIENCE: Duration = Duration::from_secs(30);
/// A health report is due within the checks' timeout (500 ms); this adds slack for a
/// loaded machine.
const HEALTH_ANSWER: Duration = Duration::from_secs(3);
/// How long Redis stays down: longer than the breaker's open period (1 s).
const OUTAGE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_degrades_health_opens_the_breaker_and_loses_nothing() {
    const MESSAGES: u64 = 400;
    let Some(mut server) = RedisServer::start("redis_pipeline-crash").await else {
        return;
    };
    let settings = Settings::new(&server.url()).unwrap();
    let breaker = settings.breaker.clone();
    let ledger = Arc::new(Ledger::default());
    let pipeline = Managed::new(Pipeline::new(
        settings.clone(),
        ProducerOptions {
            interval: Duration::from_millis(10),
            last: Some(MESSAGES),
        },
        ConsumerOptions {
            batch: 16,
            work: Duration::ZERO,
            ..ConsumerOptions::default()
        },
        ledger.clone(),
    ));
    bounded("the pipeline to start", pipeline.start())
        .await
        .expect("the pipeline starts");
    let consumer = pipeline.read().await.consumer.clone();
    let producer = pipeline.read().await.producer.clone();

    // Messages flow, and everything is healthy.
    until("a quarter of the messages to be processed", || {
        ledger.processed_count() as u64 >= MESSAGES / 4
    })
    .await;
    let report = health(&pipeline).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.dependencies["redis"], HealthStatus::Healthy);
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Redis dies. The next report is no longer healthy: the PING fails (unhealthy), or
    // the breaker, opened by the producer's and consumer's failures, refuses it
    // (degraded). Every report comes back within the check timeout.
    server.kill();
    let killed = Instant::now();
    let down = health_until(&pipeline, "health to turn bad after the kill", |r| {
        r.status != HealthStatus::Healthy
    })
    .await;
    let detected_in = killed.elapsed();
    assert_ne!(
        down.dependencies["redis"],
        HealthStatus::Healthy,
        "{down:?}"
    );

    // The breaker opens, and the `redis` check reports it: degraded, with the reason.
    let open = health_until(&pipeline, "the breaker to open", |r| {
        r.dependencies["redis"] == HealthStatus::Degraded
            && r.details
                .get("redis")
                .is_some_and(|reason| reason.contains("circuit breaker `redis` is open"))
    })
    .await;
    let opened_in = killed.elapsed();
    assert_ne!(open.status, HealthStatus::Healthy);
    assert_ne!(breaker.state(), BreakerState::Closed);
    // The services do not fail: their loops wait for Redis.
    assert_eq!(pipeline.status(), ServiceStatus::Running);
    assert_eq!(consumer.status(), ServiceStatus::Running);
    assert_eq!(producer.status(), ServiceStatus::Running);
    let produced_before_outage = ledger.produced.load(Ordering::Relaxed);
    assert!(
        produced_before_outage < MESSAGES,
        "the outage came too late to matter: every message was already produced"
    );

    // Redis stays down past the breaker's open period: its trial call fails, it opens
    // again, and nothing gets through.
    tokio::time::sleep(OUTAGE).await;
    let still_down = health(&pipeline).await;
    assert_ne!(still_down.status, HealthStatus::Healthy, "{still_down:?}");
    assert_eq!(
        ledger.produced.load(Ordering::Relaxed),
        produced_before_outage,
        "nothing is produced while Redis is down"
    );

    // Redis comes back with its stream; the pipeline recovers by itself.
    server.restart().await;
    let outage = killed.elapsed();
    let restarted = Instant::now();
    health_until(&pipeline, "health to recover after the restart", |r| {
        r.status == HealthStatus::Healthy
    })
    .await;
    let recovered_in = restarted.elapsed();
    until("every message to be processed", || {
        ledger.processed_count() as u64 >= MESSAGES
    })
    .await;
    let drained_in = restarted.elapsed();
    assert_eq!(breaker.state(), BreakerState::Closed);

    bounded("the pipeline to stop", pipeline.stop())
        .await
        .expect("a graceful stop");
    assert_eq!(pipeline.status(), ServiceStatus::Stopped);

    // Exactly once: every sequence processed, none twice; nothing left pending.
    assert_eq!(ledger.produced.load(Ordering::Relaxed), MESSAGES);
    assert_exactly_once(&ledger.processed(), MESSAGES);
    let stream = server.inspect(&settings.stream, &settings.group).await;
    assert_eq!(stream.length, MESSAGES, "one stream entry per message");
    assert_eq!(stream.pending, 0, "no entry left unacknowledged");
    assert_effects_once(&server, &settings, MESSAGES).await;

    println!(
        "{MESSAGES} messages, each processed once; Redis killed after {produced_before_outage} \
         were produced. Health not healthy {detected_in:?} after the kill, breaker open (degraded) \
         after {opened_in:?}; outage {outage:?}; healthy again {recovered_in:?} after the restart, \
         every message processed {drained_in:?} after it. {} appends found already written, \
         {} entries redelivered from the pending list, {} failed or refused calls.",
        ledger.already_written.load(Ordering::Relaxed),
        ledger.redelivered.load(Ordering::Relaxed),
        ledger.failures.load(Ordering::Relaxed),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_nothing_pending_and_the_next_run_resumes() {
    const MESSAGES: u64 = 1000;
    let Some(server) = RedisServer::start("redis_pipeline-stop").await else {
        return;
    };
    let settings = Settings::new(&server.url()).unwrap();
    let ledger = Arc::new(Ledger::default());
    let run = || {
        Managed::new(Pipeline::new(
            settings.clone(),
            ProducerOptions {
                interval: Duration::from_millis(1),
                last: Some(MESSAGES),
            },
            // Slow work in batches: the stop arrives while a batch is in hand.
            ConsumerOptions {
                batch: 20,
                work: Duration::from_millis(1),
                ..ConsumerOptions::default()
            },
            ledger.clone(),
        ))
    };

    // Stopped mid-stream: the consumer finishes its batch and acknowledges it.
    let first = run();
    bounded("the first run to start", first.start())
        .await
        .expect("the first run starts");
    until("some messages to be processed", || {
        ledger.processed_count() >= 100
    })
    .await;
    bounded("the first run to stop", first.stop())
        .await
        .expect("a graceful stop");
    let produced = ledger.produced.load(Ordering::Relaxed);
    let processed = ledger.processed_count() as u64;
    let stream = server.inspect(&settings.stream, &settings.group).await;
    assert_eq!(stream.pending, 0, "no entry left unacknowledged");
    assert_eq!(
        stream.length, produced,
        "every append confirmed, none unconfirmed"
    );
    assert_eq!(ledger.acked.load(Ordering::Relaxed), processed);
    assert!(produced < MESSAGES, "stopped before the end of the stream");

    // The next run resumes both sides where the first stopped.
    let second = run();
    bounded("the second run to start", second.start())
        .await
        .expect("the second run starts");
    until("every message to be processed", || {
        ledger.processed_count() as u64 >= MESSAGES
    })
    .await;
    bounded("the second run to stop", second.stop())
        .await
        .expect("a graceful stop");
    assert_eq!(ledger.produced.load(Ordering::Relaxed), MESSAGES);
    assert_exactly_once(&ledger.processed(), MESSAGES);
    let stream = server.inspect(&settings.stream, &settings.group).await;
    assert_eq!(stream.pending, 0);
    assert_eq!(stream.length, MESSAGES);
    assert_effects_once(&server, &settings, MESSAGES).await;

    println!(
        "first run stopped after producing {produced} and processing {processed} messages, \
         nothing pending; the second run produced and processed the rest, {MESSAGES} in all, \
         each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_but_never_acknowledged_are_processed_by_the_next_run() {
    const EARLIER: u64 = 10;
    const MESSAGES: u64 = 20;
    let Some(server) = RedisServer::start("redis_pipeline-pending").await else {
        return;
    };
    let settings = Settings::new(&server.url()).unwrap();

    // An earlier run wrote 10 messages, and its consumer was delivered them and died
    // before acknowledging any.
    let setup = async {
        let client = redis::Client::open(server.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let () = conn
            .xgroup_create_mkstream(&settings.stream, &settings.group, "0")
            .await?;
        for seq in 1..=EARLIER {
            let _: String = conn
                .xadd(&settings.stream, format!("{seq}-1"), &[("seq", seq)])
                .await?;
        }
        let options = redis::streams::StreamReadOptions::default()
            .group(&settings.group, &settings.consumer)
            .count(100);
        let delivered: redis::streams::StreamReadReply = conn
            .xread_options(&[&settings.stream], &[">"], &options)
            .await?;
        Ok::<_, redis::RedisError>(delivered.keys[0].ids.len() as u64)
    };
    let delivered = bounded("the earlier run's traces", setup).await.unwrap();
    assert_eq!(delivered, EARLIER);
    assert_eq!(
        server
            .inspect(&settings.stream, &settings.group)
            .await
            .pending,
        EARLIER
    );

    let ledger = Arc::new(Ledger::default());
    let pipeline = Managed::new(Pipeline::new(
        settings.clone(),
        ProducerOptions {
            interval: Duration::from_millis(1),
            last: Some(MESSAGES),
        },
        ConsumerOptions {
            batch: 4,
            work: Duration::ZERO,
            ..ConsumerOptions::default()
        },
        ledger.clone(),
    ));
    bounded("the pipeline to start", pipeline.start())
        .await
        .expect("the pipeline starts");
    until("every message to be processed", || {
        ledger.processed_count() as u64 >= MESSAGES
    })
    .await;
    bounded("the pipeline to stop", pipeline.stop())
        .await
        .expect("a graceful stop");

    // The consumer read its pending list first; the producer resumed after the last ID.
    assert_eq!(ledger.redelivered.load(Ordering::Relaxed), EARLIER);
    assert_eq!(ledger.produced.load(Ordering::Relaxed), MESSAGES - EARLIER);
    assert_exactly_once(&ledger.processed(), MESSAGES);
    assert_eq!(
        ledger.processed()[..EARLIER as usize],
        (1..=EARLIER).collect::<Vec<_>>()
    );
    let stream = server.inspect(&settings.stream, &settings.group).await;
    assert_eq!(stream.pending, 0);
    assert_eq!(stream.length, MESSAGES);
    assert_effects_once(&server, &settings, MESSAGES).await;
}

// ---------------------------------------------------------------------------------------
// Checks.

fn assert_exactly_once(processed: &[u64], messages: u64) {
    let distinct: BTreeSet<u64> = processed.iter().copied().collect();
    let twice: Vec<u64> = {
        let mut seen = BTreeSet::new();
        processed
            .iter()
            .copied()
            .filter(|seq| !seen.insert(*seq))
            .collect()
    };
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    let expected: BTreeSet<u64> = (1..=messages).collect();
    let missing: Vec<u64> = expected.difference(&distinct).copied().collect();
    let unexpected: Vec<u64> = distinct.difference(&expected).copied().collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    assert!(unexpected.is_empty(), "not produced: {unexpected:?}");
    assert_eq!(processed.len() as u64, messages);
}

/// Redis's side: every message's effect counter is 1.
async fn assert_effects_once(server: &RedisServer, settings: &Settings, messages: u64) {
    let effects = server.counters(&settings.effects).await;
    let wrong: Vec<(u64, u64)> = (1..=messages)
        .map(|seq| (seq, effects.get(&seq).copied().unwrap_or(0)))
        .filter(|&(_, count)| count != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "effects not applied once (seq, count): {wrong:?}"
    );
    assert_eq!(
        effects.len() as u64,
        messages,
        "effects of unknown sequences"
    );
}

/// The pipeline's health report, which must come back within the check timeout.
async fn health(pipeline: &Managed<Pipeline>) -> HealthReport {
    tokio::time::timeout(HEALTH_ANSWER, pipeline.health())
        .await
        .expect("the health report comes back within the check timeout")
}

/// Polls the health report until `done`; returns the report that satisfied it.
async fn health_until(
    pipeline: &Managed<Pipeline>,
    what: &str,
    mut done: impl FnMut(&HealthReport) -> bool,
) -> HealthReport {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        let report = health(pipeline).await;
        if done(&report) {
            return report;
        }
        last = Some(report);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {PATIENCE:?} waiting for {what}; last report: {last:#?}");
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}
