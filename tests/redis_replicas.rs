//! The stream pipeline scaled out: replicas of `examples/stream_pipeline.rs`, each a process
//! of its own under its own consumer name in one consumer group, on a private
//! `redis-server` (started on a free loopback port, persisting, as in
//! `tests/redis_pipeline.rs`). One replica is killed with SIGKILL while it holds entries,
//! another stopped with SIGTERM while it holds entries; the survivor finishes, and every
//! entry's effect is in Redis exactly once.
//!
//! The producer is a process of its own (`stream_pipeline produce`), as in a deployment:
//! the replicas scale, the producer stays one (its explicit IDs make its retries
//! idempotent for one writer only). It writes 3,000 entries as fast as Redis confirms
//! them (about a thousand a second with an fsync at every write), and the replicas
//! start once a third is written, each spending 3 ms on each entry: they have a backlog
//! until near the end, so each holds a batch nearly all the time.
//!
//! Also here, in process: an entry claimed from a consumer that was slow, not dead, and
//! committed after all (one effect), and the `lag` check. The figures of BENCHMARKS.md
//! are in `redis_replicas/figures.rs`, an ignored test.
//!
//! Without `redis-server` on the PATH the tests print a loud notice and pass, except
//! under `CI=true`, where they fail.
#![cfg(unix)]

mod example_binary;
#[path = "support/stream_pipeline/mod.rs"]
mod pipeline;
#[path = "support/pipeline_process.rs"]
mod pipeline_process;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/stream_watch.rs"]
mod stream_watch;

mod http_client;

#[path = "redis_replicas/figures.rs"]
mod figures;

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use pipeline::{ConsumerOptions, Done, Ledger, Replica, Settings};
use pipeline_process::Process;
use redis_server::RedisServer;
use service_runtime::{HealthStatus, Managed};
use stream_watch::{Deadline, Keys, Watch, bounded};
use tokio::time::Instant;

const ENTRIES: u64 = 3000;
/// Entries per read or claim, and the simulated work on each.
const BATCH: &str = "16";
const WORK_MS: &str = "3";
/// The claim bound of the replicas: twenty times a batch's work, so a live replica's batch
/// is not claimed on a loaded machine (if it were, its commit would still apply nothing
/// twice).
const CLAIM_IDLE: Duration = Duration::from_secs(1);
/// What a loaded CI machine may add to the claim bound and its sweep interval (a quarter
/// of it) before the killed replica's last entry is claimed. A bound that catches claims
/// that never come by themselves, not a measurement (BENCHMARKS.md has those).
const CLAIM_SLACK: Duration = Duration::from_secs(15);
/// How long Redis's writes stay paused while a stopping replica's `/readyz` is read:
/// below the replicas' response timeout (2 s), so no call of theirs fails meanwhile.
const WRITES_PAUSED: Duration = Duration::from_millis(1500);

/// The keys the pipeline writes, for a [`Watch`].
fn keys(settings: &Settings) -> Keys {
    Keys {
        stream: settings.stream.clone(),
        group: settings.group.clone(),
        effects: settings.effects.clone(),
        processed: settings.processed.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_one_stopped_and_every_effect_applied_once() {
    let Some(server) = RedisServer::start("redis_replicas-three").await else {
        return;
    };
    let binary = tokio::task::spawn_blocking(pipeline_process::binary)
        .await
        .expect("the example builds");
    let url = server.url();
    let settings = Settings::new(&url).unwrap();
    let mut redis = Watch::connect(&url, keys(&settings)).await;
    let claim_idle = CLAIM_IDLE.as_millis().to_string();
    let replica = |name: &str| {
        let args = ["consume", name, "--batch", BATCH, "--work", WORK_MS];
        let args = [&args[..], &["--claim-idle", &claim_idle]].concat();
        Process::start(&binary, name, &url, &args)
    };
    // The producer first, and the replicas once a third of the stream is written: each
    // replica then has a backlog to read whole batches from, until near the end.
    let last = ENTRIES.to_string();
    let produce = ["produce", "--interval", "0", "--last", &last];
    let mut producer = Process::start(&binary, "producer", &url, &produce);
    producer.running().await;
    let wait = Deadline::new("a third of the stream written");
    while redis.length().await < ENTRIES / 3 {
        wait.tick().await;
    }
    let mut killed = replica("replica-1");
    let mut stopped = replica("replica-2");
    let mut survivor = replica("replica-3");
    for process in [&mut killed, &mut stopped, &mut survivor] {
        process.running().await;
    }

    // 1. SIGKILL replica-1 while it holds entries: frozen first (SIGSTOP), so what it
    //    holds cannot change between the look and the kill.
    let wait = Deadline::new("a tenth of the effects");
    while redis.effects().await < ENTRIES / 10 {
        wait.tick().await;
    }
    let wait = Deadline::new("replica-1 to hold entries when frozen");
    loop {
        killed.freeze().await;
        if !redis.pending_of(&killed.name).await.is_empty() {
            break;
        }
        killed.signal("CONT");
        wait.tick().await;
    }
    killed.signal("KILL");
    let status = killed.exit().await;
    let died = Instant::now();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "replica-1 ended by SIGKILL: {status}"
    );
    let held = redis.pending_of(&killed.name).await;
    assert!(!held.is_empty(), "replica-1 held entries when it died");
    let wait = Deadline::new("the survivors to claim every entry replica-1 held");
    while !redis.pending_of(&killed.name).await.is_empty() {
        wait.tick().await;
    }
    let claimed_in = died.elapsed();
    let bound = CLAIM_IDLE + CLAIM_IDLE / 4 + CLAIM_SLACK;
    assert!(
        claimed_in <= bound,
        "replica-1's entries were claimed {claimed_in:?} after its death, past {bound:?}"
    );

    // 2. SIGTERM replica-2 while it holds entries, with Redis's writes paused: it cannot
    //    commit what it holds, so its stop is under way while its `/readyz` is read.
    let wait = Deadline::new("replica-2 to hold entries while writes are paused");
    let held_by_stopped = loop {
        redis.pause_writes(WRITES_PAUSED).await;
        let held = redis.pending_of(&stopped.name).await;
        if !held.is_empty() {
            break held;
        }
        redis.resume_writes().await;
        wait.tick().await;
    };
    let paused = Instant::now();
    stopped.signal("TERM");
    let probes = stopped.probes.expect("replica-2's probe address");
    let wait = Deadline::within(WRITES_PAUSED, "replica-2's /readyz to answer 503");
    let gone = |error| {
        format!("replica-2's probes are gone ({error}): its stop ended before the writes' pause")
    };
    loop {
        let readyz = http_client::try_request(probes, Method::GET, "/readyz").await;
        let readyz = readyz.unwrap_or_else(|error| panic!("{}", gone(error)));
        if readyz.status == 503 {
            break;
        }
        assert_eq!(readyz.status, 200, "{}", readyz.body);
        wait.tick().await;
    }
    let livez = http_client::try_request(probes, Method::GET, "/livez").await;
    let livez = livez.unwrap_or_else(|error| panic!("{}", gone(error)));
    assert_eq!(livez.status, 200, "live while it stops: {}", livez.body);
    let probed_in = paused.elapsed();
    redis.resume_writes().await;
    let status = stopped.exit().await;
    let stderr = stopped.stderr().await;
    assert_eq!(
        status.code(),
        Some(0),
        "replica-2 stopped cleanly: {status}\nstdout:\n{}\nstderr:\n{stderr}",
        stopped.output()
    );
    assert!(stderr.is_empty(), "replica-2's stderr:\n{stderr}");
    assert!(
        redis.pending_of(&stopped.name).await.is_empty(),
        "replica-2 left nothing pending"
    );
    assert!(
        !redis.consumers().await.contains(&stopped.name),
        "replica-2 left the group:\n{}",
        stopped.output()
    );
    assert!(stopped.output().contains("; left the group"));

    // 3. The survivor finishes.
    let wait = Deadline::new("every effect, with nothing pending");
    while redis.effects().await < ENTRIES || redis.group_pending().await > 0 {
        wait.tick().await;
    }
    for process in [&mut survivor, &mut producer] {
        process.signal("TERM");
        let status = process.exit().await;
        let stderr = process.stderr().await;
        assert_eq!(
            status.code(),
            Some(0),
            "{} stopped cleanly: {status}\nstdout:\n{}\nstderr:\n{stderr}",
            process.name,
            process.output()
        );
        assert!(stderr.is_empty(), "{}'s stderr:\n{stderr}", process.name);
    }

    // Every entry's effect exactly once, nothing pending, every entry of the killed
    // replica claimed by a survivor.
    assert_effects_once(&server, &settings, ENTRIES).await;
    assert_eq!(
        redis.processed_ids().await,
        ENTRIES,
        "one processed ID each"
    );
    assert_eq!(redis.length().await, ENTRIES, "one stream entry each");
    assert_eq!(redis.group_pending().await, 0, "nothing pending");
    let claimed: u64 = [&stopped, &survivor]
        .iter()
        .map(|process| process.figure(" claimed,").expect("a summary line"))
        .sum();
    assert!(
        claimed >= held.len() as u64,
        "the survivors claimed {claimed} entries, replica-1 held {}",
        held.len()
    );
    println!(
        "{ENTRIES} entries, each effect once. replica-1 SIGKILLed holding {} entries, all \
         claimed {claimed_in:?} after its death (claim bound {CLAIM_IDLE:?}); replica-2 \
         SIGTERMed holding {}, /readyz 503 within {probed_in:?}, exit 0, nothing pending, \
         left the group; the survivors claimed {claimed} entries in all.",
        held.len(),
        held_by_stopped.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_claimed_from_a_slow_consumer_that_commits_after_all_gets_one_effect() {
    const ENTRIES: u64 = 10;
    let Some(server) = RedisServer::start("redis_replicas-slow").await else {
        return;
    };
    let mut settings = Settings::new(&server.url()).unwrap();
    settings.consumer = "claimer".into();
    let mut slow = settings.clone();
    slow.consumer = "slow".into();

    // The slow consumer is delivered every entry, and works on them.
    let mut redis = Watch::connect(&server.url(), keys(&settings)).await;
    redis.append(1..=ENTRIES).await;
    let slow_conn = bounded("a connection", slow.connect()).await.unwrap();
    bounded("XGROUP CREATE", slow.ensure_group(&slow_conn))
        .await
        .unwrap();
    let options = redis::streams::StreamReadOptions::default()
        .group(&slow.group, &slow.consumer)
        .count(ENTRIES as usize);
    let read = redis::Cmd::xread_options(&[&slow.stream], &[">"], &options);
    let delivered: redis::streams::StreamReadReply =
        bounded("XREADGROUP", read.query_async(&mut slow_conn.clone()))
            .await
            .expect("XREADGROUP");
    let in_hand: Vec<Done> = delivered.keys[0].ids.iter().map(Done::of).collect();
    assert_eq!(in_hand.len() as u64, ENTRIES);

    // Another consumer claims them once idle for 100 ms, and works on them for 1 s.
    let ledger = Arc::new(Ledger::default());
    let claimer = Managed::new(Replica::new(
        settings.clone(),
        ConsumerOptions {
            batch: ENTRIES as usize,
            work: Duration::from_millis(100),
            claim_idle: Some(Duration::from_millis(100)),
            ..ConsumerOptions::default()
        },
        ledger.clone(),
    ));
    bounded("the claimer to start", claimer.start())
        .await
        .expect("the claimer starts");
    let wait = Deadline::new("the claim");
    while ledger.claimed.load(Ordering::Relaxed) < ENTRIES {
        wait.tick().await;
    }

    // The slow consumer commits meanwhile: its effects, and the acknowledgements.
    let committed = pipeline::commit(&slow_conn, &slow, &in_hand).await.unwrap();
    assert_eq!((committed.applied, committed.acked), (ENTRIES, ENTRIES));

    // The claimer's commit finds every effect applied: it applies none.
    let wait = Deadline::new("the claimer's commit");
    while ledger.already_applied.load(Ordering::Relaxed) < ENTRIES {
        wait.tick().await;
    }
    bounded("the claimer to stop", claimer.stop())
        .await
        .expect("a graceful stop");
    assert_eq!(ledger.applied.load(Ordering::Relaxed), 0);
    assert_eq!(ledger.processed(), (1..=ENTRIES).collect::<Vec<_>>());
    assert_effects_once(&server, &settings, ENTRIES).await;
    assert_eq!(redis.group_pending().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_check_reports_what_is_pending_and_degrades_past_its_threshold() {
    const ENTRIES: u64 = 8;
    let Some(server) = RedisServer::start("redis_replicas-lag").await else {
        return;
    };
    let mut settings = Settings::new(&server.url()).unwrap();
    settings.consumer = "lagging".into();
    // A backlog first, so that each read takes a whole batch.
    let mut redis = Watch::connect(&server.url(), keys(&settings)).await;
    redis.append(1..=ENTRIES).await;
    let ledger = Arc::new(Ledger::default());
    let replica = Managed::new(Replica::new(
        settings.clone(),
        // Each batch in hand for 600 ms.
        ConsumerOptions {
            batch: 4,
            work: Duration::from_millis(150),
            claim_idle: None,
            lag_threshold: Duration::from_millis(100),
        },
        ledger.clone(),
    ));
    bounded("the replica to start", replica.start())
        .await
        .expect("the replica starts");
    let consumer = replica.read().await.consumer.clone();
    let lag = || async {
        let report = bounded("the consumer's health", consumer.health()).await;
        let reason = report.details.get("lag").cloned().unwrap_or_default();
        (report.dependencies["lag"], reason)
    };
    let wait = Deadline::new("the lag check to turn degraded");
    let reason = loop {
        let (status, reason) = lag().await;
        if status == HealthStatus::Degraded {
            break reason;
        }
        wait.tick().await;
    };
    assert!(
        reason.starts_with("4 pending (oldest ") && reason.ends_with("behind by more than 100 ms"),
        "{reason}"
    );
    let wait = Deadline::new("every effect");
    while redis.effects().await < ENTRIES {
        wait.tick().await;
    }
    let (status, reason) = lag().await;
    assert_eq!(
        (status, reason.as_str()),
        (HealthStatus::Healthy, "0 pending, 0 in the group")
    );
    bounded("the replica to stop", replica.stop())
        .await
        .expect("a graceful stop");
}

/// Redis's side: every message's effect counter is 1, and there are no others.
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
