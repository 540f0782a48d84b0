//! The figures of BENCHMARKS.md's "Replicas of the stream pipeline": throughput of 1, 2
//! and 3 replica processes on one Redis, and the time from a replica's death to its last
//! entry claimed. A measurement, not a check: ignored, and run in release.
//!
//! ```sh
//! cargo test --release --test redis_replicas -- --ignored --nocapture
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::pipeline::Settings;
use crate::pipeline_process::{self, Process};
use crate::redis_server::RedisServer;
use crate::stream_watch::{Deadline, Watch};

/// Entries each throughput run processes: a backlog written before the replicas start.
const BACKLOG: u64 = 10_000;
/// How often the effects are counted while a run goes.
const SAMPLE: Duration = Duration::from_millis(5);
/// Runs of the claim measurement per claim bound.
const DEATHS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md: cargo test --release --test redis_replicas -- --ignored --nocapture"]
async fn replica_figures() {
    let binary = tokio::task::spawn_blocking(pipeline_process::binary)
        .await
        .expect("the example builds");
    println!("| work per entry | replicas | entries/s (10 % → 90 % of {BACKLOG}) |");
    println!("|---|---|---|");
    for work in ["0", "1"] {
        for replicas in 1..=3 {
            let Some(rate) = throughput(&binary, work, replicas).await else {
                return;
            };
            println!("| {work} ms | {replicas} | {rate:.0} |");
        }
    }
    println!();
    println!("| claim bound | death → last entry claimed, {DEATHS} runs |");
    println!("|---|---|");
    for claim_idle in [Duration::from_millis(250), Duration::from_secs(1)] {
        let mut runs = Vec::new();
        for _ in 0..DEATHS {
            let Some(claimed_in) = death_to_claim(&binary, claim_idle).await else {
                return;
            };
            runs.push(format!("{:.0} ms", claimed_in.as_secs_f64() * 1000.0));
        }
        println!("| {} ms | {} |", claim_idle.as_millis(), runs.join(", "));
    }
}

/// Entries per second of `replicas` processes working `work` ms per entry, from 10 % of
/// the backlog done to 90 %: the steady state, without the start and the last batches.
async fn throughput(binary: &std::path::PathBuf, work: &str, replicas: usize) -> Option<f64> {
    let server = RedisServer::start("redis_replicas-throughput").await?;
    let url = server.url();
    let mut redis = Watch::connect(&url, crate::keys(&Settings::new(&url).unwrap())).await;
    redis.append(1..=BACKLOG).await;
    let mut processes: Vec<Process> = (1..=replicas)
        .map(|i| {
            let name = format!("replica-{i}");
            let args = ["consume", &name, "--work", work, "--claim-idle", "10000"];
            Process::start(binary, &name, &url, &args)
        })
        .collect();
    let (low, high) = (BACKLOG / 10, BACKLOG * 9 / 10);
    let wait = Deadline::new("10 % of the backlog");
    let mut done = redis.effects().await;
    while done < low {
        wait.tick().await;
        done = redis.effects().await;
    }
    let (from, at_from) = (Instant::now(), done);
    let wait = Deadline::new("90 % of the backlog");
    while done < high {
        wait.check();
        tokio::time::sleep(SAMPLE).await;
        done = redis.effects().await;
    }
    let rate = (done - at_from) as f64 / from.elapsed().as_secs_f64();
    for process in &mut processes {
        process.signal("TERM");
        let status = process.exit().await;
        assert!(status.success(), "{}: {status}", process.name);
    }
    Some(rate)
}

/// Two replicas working 1 ms per entry on a backlog; one is frozen while it holds
/// entries and killed; returns the time from its death to its last entry claimed.
async fn death_to_claim(binary: &std::path::PathBuf, claim_idle: Duration) -> Option<Duration> {
    let server = RedisServer::start("redis_replicas-claim").await?;
    let url = server.url();
    let mut redis = Watch::connect(&url, crate::keys(&Settings::new(&url).unwrap())).await;
    redis.append(1..=BACKLOG).await;
    let claim = claim_idle.as_millis().to_string();
    let mut processes: Vec<Process> = ["replica-1", "replica-2"]
        .into_iter()
        .map(|name| {
            let args = ["consume", name, "--work", "1", "--claim-idle", &claim];
            Process::start(binary, name, &url, &args)
        })
        .collect();
    let wait = Deadline::new("some effects");
    while redis.effects().await < BACKLOG / 20 {
        wait.tick().await;
    }
    let (killed, rest) = processes.split_first_mut().expect("two replicas");
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
    killed.exit().await;
    let died = Instant::now();
    let wait = Deadline::new("replica-1's entries claimed");
    while !redis.pending_of(&killed.name).await.is_empty() {
        wait.check();
        tokio::time::sleep(SAMPLE).await;
    }
    let claimed_in = died.elapsed();
    for process in rest {
        process.signal("TERM");
        process.exit().await;
    }
    Some(claimed_in)
}
