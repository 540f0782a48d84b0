//! The design note's "Stream Processing Service Pattern" on a real broker: Redis Streams
//! with a consumer group. Shared by `examples/stream_pipeline.rs` (which runs it), and
//! `tests/redis_pipeline.rs` (which kills Redis under it) and `tests/redis_replicas.rs`
//! (which runs it as several processes and kills one).
//!
//! ```text
//! stream_pipeline ── init: connect, XGROUP CREATE … MKSTREAM ── health "redis": PING via the breaker
//!   ├─ consumer  (component, started first, stopped last)  XREADGROUP … > / 0, commit script
//!   └─ producer  (component, started last, stopped first)  XADD <seq>-1 seq <seq>
//!
//! stream_replica ── the same init and check, one process of N, each its own consumer name
//!   └─ consumer  (component)  … and XAUTOCLAIM of entries idle past the claim bound, a `lag` check
//! producer ── alone in a process of its own: one producer per stream
//! ```
//!
//! Each message's effect is applied exactly once across Redis outages, consumer crashes
//! and take-overs, provided Redis keeps what it acknowledged (persistence on:
//! `appendonly yes`, `appendfsync always`): the effect is written with the entry's ID and
//! its XACK in one Lua script (`scripts.rs`), so an entry processed again (a consumer that
//! died between its work and its commit does that work again on its next run, or a
//! replica claims it) is acknowledged without a second effect. One producer per stream;
//! one process per consumer name.
//!
//! - The producer gives every message an explicit ID, `<seq>-1`, and retries the same
//!   sequence until Redis confirms it. A retry whose first attempt was written after all
//!   is refused by Redis ("equal or smaller than the target stream top item"), which the
//!   producer counts as written: nothing is lost, nothing written twice. On start it
//!   resumes after the stream's last ID.
//! - The consumer reads new entries (`>`), processes them, then commits them: effects and
//!   acknowledgements in one script. After any error it first resends the commit it owes,
//!   then re-reads its own pending entries (ID `0`): what Redis delivered but the reply
//!   never arrived is processed then, and nothing processed is processed again.
//! - With a claim bound (`ConsumerOptions::claim_idle`), the consumer also sweeps the
//!   group's pending list every quarter of the bound and claims every entry idle longer
//!   than the bound (`claim.rs`): the entries of a replica that died are taken over by
//!   the others. Its `lag` check reports what is pending under its name and for how long
//!   (`lag.rs`), degraded past `ConsumerOptions::lag_threshold`.
//! - On stop the consumer finishes the batch in hand and commits it (its reads block for
//!   at most `BLOCK`, so it notices the stop promptly): nothing stays pending. Then it
//!   leaves the group (`XGROUP DELCONSUMER`, only if nothing is pending under its name).
//!
//! Every call to Redis goes through one [`CircuitBreaker`]: while Redis is down the loops
//! fail fast and wait, and the pipeline's `redis` check reports the breaker as `degraded`.
//! No loop ever gives up: when Redis is back, a trial call closes the breaker and the
//! pipeline carries on where it stopped, without a restart.
//!
//! Here: the settings, the ledger and the options the services share. The services are
//! in `combined.rs` (the pipeline in one process), `replica.rs`, `consumer.rs` and
//! `producer.rs`; the consumer's Lua scripts in `scripts.rs`, its claims in `claim.rs`,
//! its lag in `lag.rs`; how they all call Redis (a resend after a dropped connection,
//! the backoff, the PING check) in `calls.rs`.
#![allow(dead_code, unused_imports)] // the example and the tests each use their own subset

mod calls;
mod claim;
mod combined;
mod consumer;
mod lag;
mod producer;
mod replica;
mod scripts;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisResult};
use service_runtime::CircuitBreaker;

pub use calls::CallError;
pub use combined::Pipeline;
pub use consumer::Consumer;
pub use lag::Lag;
pub use producer::Producer;
pub use replica::Replica;
pub use scripts::{Committed, Done, commit};

use calls::query;

/// How long a consumer read waits for new entries: the longest a stop waits for it.
const BLOCK: Duration = Duration::from_millis(200);
/// A health check's calls (PING, XPENDING), below the services' `health_timeout` (500 ms),
/// so a hung call counts as a failure for the breaker instead of being dropped by the
/// timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// Where the pipeline's stream is and how it reaches it, shared by its services.
#[derive(Clone)]
pub struct Settings {
    pub client: redis::Client,
    /// The stream's key.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// The consumer's name in the group: keep it across restarts, so a restarted consumer
    /// finds the entries it was delivered but had not acknowledged.
    pub consumer: String,
    /// The set of the IDs whose effect is applied, written with each effect.
    pub processed: String,
    /// The effects: a hash of counters by sequence, each 1 once its message is processed.
    pub effects: String,
    /// Guards every call to Redis, from every service.
    pub breaker: CircuitBreaker,
}

impl Settings {
    /// Settings for `url` with the default names and a breaker that opens after 3
    /// consecutive failures and lets a trial call through after 1 s.
    pub fn new(url: &str) -> RedisResult<Self> {
        Ok(Settings {
            client: redis::Client::open(url)?,
            stream: "stream_pipeline:events".into(),
            group: "processors".into(),
            consumer: "processor-1".into(),
            processed: "stream_pipeline:processed".into(),
            effects: "stream_pipeline:effects".into(),
            breaker: CircuitBreaker::new("redis")
                .failure_threshold(3)
                .open_for(Duration::from_secs(1))
                .half_open_trials(1),
        })
    }

    /// A connection that reconnects by itself: after a failed request the next one opens
    /// a new connection. Each connection attempt is made once (`number_of_retries(0)`):
    /// the services pace their own retries, with the breaker, and a request never waits
    /// behind the client's own reconnection backoff.
    pub async fn connect(&self) -> RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Duration::from_millis(500))
            // Above `BLOCK`: a blocking read is not a hung connection.
            .set_response_timeout(Duration::from_secs(2));
        self.client.get_connection_manager_with_config(config).await
    }

    /// `XGROUP CREATE <stream> <group> 0 MKSTREAM`; a group that exists is fine.
    pub async fn ensure_group(&self, conn: &ConnectionManager) -> RedisResult<()> {
        let create = Cmd::xgroup_create_mkstream(&self.stream, &self.group, "0");
        match query::<()>(conn, &create).await {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }
}

/// What the pipeline did, shared with whoever watches it (the example prints it, the
/// test checks it).
#[derive(Default)]
pub struct Ledger {
    /// Messages Redis confirmed (the producer moved to the next sequence).
    pub produced: AtomicU64,
    /// Sequences the consumer processed (did the work of), in order.
    pub processed: Mutex<Vec<u64>>,
    /// Effects the consumer's commits applied.
    pub applied: AtomicU64,
    /// Entries whose commit found their effect applied already: a commit resent after
    /// its reply was lost, or an entry another consumer had committed.
    pub already_applied: AtomicU64,
    /// Entries the commits' XACK reported acknowledged. A commit whose reply was lost
    /// in an outage is sent again and then counts 0, so after an outage this may fall
    /// short.
    pub acked: AtomicU64,
    /// XADD retries that found their entry already written (a reply lost in an outage).
    pub already_written: AtomicU64,
    /// Entries read from the consumer's own pending list (at start, or after an error):
    /// delivered earlier, never acknowledged.
    pub redelivered: AtomicU64,
    /// Entries the consumer claimed from the group's pending list (idle past the claim
    /// bound: most often another consumer's, gone).
    pub claimed: AtomicU64,
    /// Whether the consumer left the group when it stopped, holding nothing.
    pub left_group: AtomicBool,
    /// Failed or refused calls to Redis.
    pub failures: AtomicU64,
}

impl Ledger {
    pub fn processed_count(&self) -> usize {
        self.processed.lock().expect("ledger lock").len()
    }

    pub fn processed(&self) -> Vec<u64> {
        self.processed.lock().expect("ledger lock").clone()
    }
}

/// How fast the producer writes, and how many.
#[derive(Clone, Copy)]
pub struct ProducerOptions {
    /// Pause between messages; zero: none, as fast as Redis confirms them.
    pub interval: Duration,
    /// The last sequence to write, if any; then the producer idles until stopped.
    pub last: Option<u64>,
}

/// How the consumer reads, works and claims.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerOptions {
    /// Entries per read or claim (`COUNT`).
    pub batch: usize,
    /// Simulated work per message.
    pub work: Duration,
    /// Claim entries pending longer than this from any consumer of the group (those of
    /// a replica that died); `None` never claims. Longer than a batch takes to process
    /// and commit, or entries in hand are taken from live consumers (and processed
    /// twice, with one effect).
    pub claim_idle: Option<Duration>,
    /// The `lag` check is degraded once an entry has been pending under this consumer's
    /// name for longer than this.
    pub lag_threshold: Duration,
}

impl Default for ConsumerOptions {
    /// Batches of 32, no simulated work, no claims, degraded past 5 s of lag.
    fn default() -> Self {
        ConsumerOptions {
            batch: 32,
            work: Duration::ZERO,
            claim_idle: None,
            lag_threshold: Duration::from_secs(5),
        }
    }
}
