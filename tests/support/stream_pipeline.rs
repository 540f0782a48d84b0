//! The design note's "Stream Processing Service Pattern" on a real broker: Redis Streams
//! with a consumer group. Shared by `examples/stream_pipeline.rs` (which runs it) and
//! `tests/redis_pipeline.rs` (which kills Redis under it).
//!
//! ```text
//! stream_pipeline ── init: connect, XGROUP CREATE … MKSTREAM ── health "redis": PING via the breaker
//!   ├─ consumer  (component, started first, stopped last)  XREADGROUP … > / 0, XACK
//!   └─ producer  (component, started last, stopped first)  XADD <seq>-1 seq <seq>
//! ```
//!
//! Each message is processed exactly once across Redis outages, provided Redis keeps
//! what it acknowledged (persistence on: `appendonly yes`, `appendfsync always`) and the
//! process lives (a consumer that dies between processing and XACK processes those
//! entries again on its next run: at least once then). One producer and one consumer
//! name per stream.
//!
//!
//! - The producer gives every message an explicit ID, `<seq>-1`, and retries the same
//!   sequence until Redis confirms it. A retry whose first attempt was written after all
//!   is refused by Redis ("equal or smaller than the target stream top item"), which the
//!   producer counts as written: nothing is lost, nothing written twice. On start it
//!   resumes after the stream's last ID.
//! - The consumer reads new entries (`>`), processes them, then acknowledges them. After
//!   any error it first acknowledges what it processed but could not acknowledge, then
//!   re-reads its own pending entries (ID `0`): what Redis delivered but the reply never
//!   arrived is processed then, and nothing processed is processed again.
//! - On stop the consumer finishes the batch in hand and acknowledges it (its reads block
//!   for at most `BLOCK`, so it notices the stop promptly): nothing stays pending.
//!
//! Every call to Redis goes through one [`CircuitBreaker`]: while Redis is down the loops
//! fail fast and wait, and the pipeline's `redis` check reports the breaker as `degraded`.
//! No loop ever gives up: when Redis is back, a trial call closes the breaker and the
//! pipeline carries on where it stopped, without a restart.
#![allow(dead_code)] // the example and the test each use their own subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamInfoStreamReply, StreamReadOptions, StreamReadReply};
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};
use service_runtime::{
    BreakerError, CircuitBreaker, HealthDetail, Managed, Service, Shutdown, lifecycle,
};
use tokio::time::MissedTickBehavior;

/// How long a consumer read waits for new entries: the longest a stop waits for it.
const BLOCK: Duration = Duration::from_millis(200);
/// A health check's PING, below the services' `health_timeout` (500 ms), so a hung PING
/// counts as a failure for the breaker instead of being dropped by the timeout.
const PING_TIMEOUT: Duration = Duration::from_millis(300);
/// The first and the longest pause between attempts while Redis fails.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A client error: Redis's own, or the breaker's refusal while it is open.
pub type CallError = BreakerError<RedisError>;

/// Where the pipeline's stream is and how it reaches it, shared by the three services.
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
    /// Sequences the consumer processed, in order.
    pub processed: Mutex<Vec<u64>>,
    /// Entries XACK reported acknowledged. An XACK whose reply was lost in an outage
    /// is sent again and then counts 0, so after an outage this may fall short.
    pub acked: AtomicU64,
    /// XADD retries that found their entry already written (a reply lost in an outage).
    pub already_written: AtomicU64,
    /// Entries read from the consumer's own pending list (at start, or after an error):
    /// delivered earlier, never acknowledged.
    pub redelivered: AtomicU64,
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
    /// Pause between messages.
    pub interval: Duration,
    /// The last sequence to write, if any; then the producer idles until stopped.
    pub last: Option<u64>,
}

/// How the consumer reads and works.
#[derive(Clone, Copy)]
pub struct ConsumerOptions {
    /// Entries per read (`COUNT`).
    pub batch: usize,
    /// Simulated work per message.
    pub work: Duration,
}

// ---------------------------------------------------------------------------------------
// The pipeline.

/// The stream-processing service: owns the stream and its consumer group, checks Redis,
/// and runs a consumer and a producer as components. The consumer is declared first, so
/// it starts before the producer and stops after it, finishing what it holds.
#[derive(Service)]
#[service(
    name = "stream_pipeline",
    version = "1.0.0",
    start_timeout = "5s",
    stop_timeout = "5s",
    health_timeout = "500ms"
)]
pub struct Pipeline {
    settings: Settings,
    /// For the health check alone: the consumer's blocking reads would delay a PING
    /// sharing their connection.
    connection: Option<ConnectionManager>,
    #[service(component)]
    pub consumer: Managed<Consumer>,
    #[service(component)]
    pub producer: Managed<Producer>,
}

impl Pipeline {
    pub fn new(
        settings: Settings,
        producer: ProducerOptions,
        consumer: ConsumerOptions,
        ledger: Arc<Ledger>,
    ) -> Self {
        Pipeline {
            consumer: Managed::new(Consumer {
                settings: settings.clone(),
                options: consumer,
                ledger: ledger.clone(),
                connection: None,
                trouble: Trouble::default(),
            }),
            producer: Managed::new(Producer {
                settings: settings.clone(),
                options: producer,
                ledger,
                connection: None,
                next: AtomicU64::new(1),
                trouble: Trouble::default(),
            }),
            settings,
            connection: None,
        }
    }
}

#[lifecycle]
impl Pipeline {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        Ok(())
    }

    /// Before the components start: the consumer reads from the group at once.
    #[init]
    async fn create_group(&mut self) -> RedisResult<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        self.settings.ensure_group(conn).await
    }

    #[cleanup]
    async fn disconnect(&mut self) -> RedisResult<()> {
        self.connection = None;
        Ok(())
    }

    /// PING through the breaker: healthy when it answers, unhealthy when it fails,
    /// degraded (the breaker's own report) while the breaker is open and refuses calls.
    #[health(name = "redis", critical)]
    async fn redis(&self) -> HealthDetail {
        let Some(conn) = &self.connection else {
            return HealthDetail::unhealthy("not connected");
        };
        let breaker = &self.settings.breaker;
        let ping = async {
            let ping = redis::cmd("PING");
            match tokio::time::timeout(PING_TIMEOUT, query::<String>(conn, &ping)).await {
                Ok(reply) => reply.map(drop),
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no PONG within {PING_TIMEOUT:?}"),
                ))),
            }
        };
        match breaker.call(ping).await {
            Ok(()) => breaker.health(),
            Err(refused @ BreakerError::Open { .. }) => {
                let detail = breaker.health();
                if detail.reason.is_some() {
                    detail
                } else {
                    HealthDetail::degraded(refused.to_string())
                }
            }
            Err(BreakerError::Inner(error)) => {
                HealthDetail::unhealthy(format!("PING failed: {error}"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The consumer.

/// Reads the stream through the consumer group, processes each message and acknowledges
/// it.
#[derive(Service)]
#[service(
    name = "consumer",
    start_timeout = "5s",
    stop_timeout = "5s",
    health_timeout = "500ms"
)]
pub struct Consumer {
    settings: Settings,
    options: ConsumerOptions,
    ledger: Arc<Ledger>,
    connection: Option<ConnectionManager>,
    trouble: Trouble,
}

#[lifecycle]
impl Consumer {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> RedisResult<()> {
        self.connection = None;
        Ok(())
    }

    /// Optional: while the loop retries, the consumer is degraded, not failed.
    #[health(name = "stream", optional)]
    async fn stream(&self) -> HealthDetail {
        self.trouble.health("reading")
    }

    #[run]
    async fn consume(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        let mut reader = Reader {
            owed: Vec::new(),
            // Start with the pending list: entries an earlier run was delivered.
            catch_up: true,
        };
        let mut backoff = Backoff::default();
        while !shutdown.is_requested() {
            match self.step(conn, &mut reader).await {
                Ok(()) => {
                    backoff.reset();
                    self.trouble.clear();
                }
                Err(error) => {
                    self.ledger.failures.fetch_add(1, Ordering::Relaxed);
                    self.trouble.set(&error);
                    reader.catch_up = true;
                    if matches!(&error, BreakerError::Inner(e) if e.code() == Some("NOGROUP")) {
                        // Redis lost the group (restarted without persistence): recreate it.
                        let _ = self.settings.ensure_group(conn).await;
                    }
                    if !pause(&shutdown, backoff.after(&error)).await {
                        break;
                    }
                }
            }
        }
        // Stopping: every processed message gets its acknowledgement, if Redis allows.
        self.settle(conn, &mut reader.owed).await
    }
}

/// Where the consumer is.
struct Reader {
    /// Processed, not acknowledged yet: acknowledged before anything is read again.
    owed: Vec<String>,
    /// Read the consumer's own pending list (ID `0`) rather than new entries (`>`).
    catch_up: bool,
}

impl Consumer {
    /// One batch: acknowledge what is owed, read (own pending entries first, then new
    /// ones), process, acknowledge.
    async fn step(&self, conn: &ConnectionManager, reader: &mut Reader) -> Result<(), CallError> {
        self.ack(conn, &mut reader.owed).await?;
        let read = |from: &str| {
            let mut options = StreamReadOptions::default()
                .group(&self.settings.group, &self.settings.consumer)
                .count(self.options.batch);
            if from == ">" {
                options = options.block(BLOCK.as_millis() as usize);
            }
            Cmd::xread_options(&[&self.settings.stream], &[from], &options)
        };
        let from = if reader.catch_up { "0" } else { ">" };
        let reply: Option<StreamReadReply> = self
            .settings
            .breaker
            .call(async {
                match query_once(conn, &read(from)).await {
                    // The connection died under the read. On the new one, read the
                    // pending list: entries delivered with a lost reply are there.
                    Err(error) if is_dropped(&error) => {
                        reader.catch_up = true;
                        query_once(conn, &read("0")).await
                    }
                    other => other,
                }
            })
            .await?;
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        if reader.catch_up {
            if entries.is_empty() {
                reader.catch_up = false; // the pending list is empty: read new entries
            }
            self.ledger
                .redelivered
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
        }
        for entry in entries {
            self.process(&entry).await;
            reader.owed.push(entry.id);
        }
        self.ack(conn, &mut reader.owed).await
    }

    /// The work. An entry without a sequence (deleted, or written by someone else) is
    /// acknowledged and skipped.
    async fn process(&self, entry: &StreamId) {
        if !self.options.work.is_zero() {
            tokio::time::sleep(self.options.work).await;
        }
        if let Some(seq) = entry.get::<u64>("seq") {
            self.ledger.processed.lock().expect("ledger lock").push(seq);
        }
    }

    async fn ack(&self, conn: &ConnectionManager, owed: &mut Vec<String>) -> Result<(), CallError> {
        if owed.is_empty() {
            return Ok(());
        }
        // Acknowledging twice is harmless: an entry no longer pending is not counted.
        let ack = Cmd::xack(&self.settings.stream, &self.settings.group, owed);
        let acked: usize = self.settings.breaker.call(query(conn, &ack)).await?;
        self.ledger.acked.fetch_add(acked as u64, Ordering::Relaxed);
        owed.clear();
        Ok(())
    }

    /// The last acknowledgements, retried for a while (within the stop timeout) if
    /// Redis is down; what cannot be acknowledged stays pending, and the next run reads
    /// it again from the pending list.
    async fn settle(&self, conn: &ConnectionManager, owed: &mut Vec<String>) -> anyhow::Result<()> {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            match self.ack(conn, owed).await {
                Ok(()) => return Ok(()),
                Err(error) => tokio::time::sleep(backoff.after(&error)).await,
            }
        }
        anyhow::bail!(
            "{} processed entries left unacknowledged: {}",
            owed.len(),
            self.trouble.get().unwrap_or_default()
        )
    }
}

// ---------------------------------------------------------------------------------------
// The producer.

/// Appends numbered messages to the stream, each with the explicit ID `<seq>-1`.
#[derive(Service)]
#[service(
    name = "producer",
    start_timeout = "5s",
    stop_timeout = "5s",
    health_timeout = "500ms"
)]
pub struct Producer {
    settings: Settings,
    options: ProducerOptions,
    ledger: Arc<Ledger>,
    connection: Option<ConnectionManager>,
    /// The next sequence to write.
    next: AtomicU64,
    trouble: Trouble,
}

/// What an append found.
enum Appended {
    Written,
    /// A retry whose earlier attempt had been written.
    AlreadyThere,
}

#[lifecycle]
impl Producer {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        Ok(())
    }

    /// Resume after the stream's last ID, so a restarted producer neither rewrites nor
    /// skips a sequence.
    #[init]
    async fn resume(&mut self) -> RedisResult<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        let info = Cmd::xinfo_stream(&self.settings.stream);
        let last = match query::<StreamInfoStreamReply>(conn, &info).await {
            Ok(info) => info.last_generated_id,
            Err(error) if error.to_string().contains("no such key") => "0-0".into(),
            Err(error) => return Err(error),
        };
        let last_seq = last
            .split_once('-')
            .and_then(|(seq, _)| seq.parse::<u64>().ok())
            .unwrap_or(0);
        *self.next.get_mut() = last_seq + 1;
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> RedisResult<()> {
        self.connection = None;
        Ok(())
    }

    /// Optional: while an append is retried, the producer is degraded, not failed.
    #[health(name = "stream", optional)]
    async fn stream(&self) -> HealthDetail {
        self.trouble.health("appending")
    }

    #[run]
    async fn produce(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        let mut interval = tokio::time::interval(self.options.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = Backoff::default();
        loop {
            let seq = self.next.load(Ordering::Relaxed);
            if self.options.last.is_some_and(|last| seq > last) {
                shutdown.requested().await; // all written: idle until stopped
                return Ok(());
            }
            tokio::select! {
                () = shutdown.requested() => return Ok(()),
                _ = interval.tick() => {}
            }
            // The same sequence until Redis has it; an append in flight is never dropped.
            loop {
                match self.append(conn, seq).await {
                    Ok(appended) => {
                        if let Appended::AlreadyThere = appended {
                            self.ledger.already_written.fetch_add(1, Ordering::Relaxed);
                        }
                        backoff.reset();
                        self.trouble.clear();
                        break;
                    }
                    Err(error) => {
                        self.ledger.failures.fetch_add(1, Ordering::Relaxed);
                        self.trouble.set(&error);
                        if !pause(&shutdown, backoff.after(&error)).await {
                            return Ok(()); // stopping: `seq` was not confirmed
                        }
                    }
                }
            }
            self.ledger.produced.fetch_add(1, Ordering::Relaxed);
            self.next.store(seq + 1, Ordering::Relaxed);
        }
    }
}

impl Producer {
    /// `XADD <stream> <seq>-1 seq <seq> payload …`, idempotent thanks to the explicit ID.
    async fn append(&self, conn: &ConnectionManager, seq: u64) -> Result<Appended, CallError> {
        let fields = [
            ("seq", seq.to_string()),
            ("payload", format!("event #{seq}")),
        ];
        let add = Cmd::xadd(&self.settings.stream, format!("{seq}-1"), &fields);
        self.settings
            .breaker
            .call(async {
                match query::<Option<String>>(conn, &add).await {
                    Ok(_) => Ok(Appended::Written),
                    Err(error) if is_already_there(&error) => Ok(Appended::AlreadyThere),
                    Err(error) => Err(error),
                }
            })
            .await
    }
}

/// Redis refuses an explicit ID not above the stream's last one: with one producer
/// writing increasing IDs, that entry is ours, written by an earlier attempt.
fn is_already_there(error: &RedisError) -> bool {
    error.code() == Some("ERR") && error.to_string().contains("equal or smaller")
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// Sends `cmd` once.
async fn query_once<T: FromRedisValue>(conn: &ConnectionManager, cmd: &Cmd) -> RedisResult<T> {
    cmd.query_async(&mut conn.clone()).await
}

/// Sends `cmd`, and once more if its connection had died. After an outage the first
/// request on each connection fails even when Redis is back (the manager replaces a
/// dead connection when a request finds it); without the second attempt that failure
/// would count for the breaker and reopen it. For idempotent commands alone: PING, XADD
/// with an explicit ID, XACK, XGROUP CREATE, XINFO.
async fn query<T: FromRedisValue>(conn: &ConnectionManager, cmd: &Cmd) -> RedisResult<T> {
    match query_once(conn, cmd).await {
        Err(error) if is_dropped(&error) => query_once(conn, cmd).await,
        other => other,
    }
}

/// The connection is gone; the manager has begun to replace it.
fn is_dropped(error: &RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// The last error of a loop that is retrying, for its health check.
#[derive(Default)]
struct Trouble(Mutex<Option<String>>);

impl Trouble {
    fn set(&self, error: &CallError) {
        *self.0.lock().expect("trouble lock") = Some(error.to_string());
    }

    fn clear(&self) {
        self.0.lock().expect("trouble lock").take();
    }

    fn get(&self) -> Option<String> {
        self.0.lock().expect("trouble lock").clone()
    }

    fn health(&self, doing: &str) -> HealthDetail {
        match self.get() {
            None => HealthDetail::healthy(),
            Some(error) => HealthDetail::degraded(format!("retrying {doing}: {error}")),
        }
    }
}

/// Pauses between attempts: exponential while Redis fails, the breaker's own delay
/// while it refuses calls.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn after(&mut self, error: &CallError) -> Duration {
        match error {
            BreakerError::Open { retry_in, .. } => (*retry_in).clamp(MIN_BACKOFF, MAX_BACKOFF),
            BreakerError::Inner(_) => {
                let delay = MIN_BACKOFF.saturating_mul(1 << self.failures.min(5));
                self.failures += 1;
                delay.min(MAX_BACKOFF)
            }
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Sleeps for `delay`; `false` if shutdown was requested first.
async fn pause(shutdown: &Shutdown, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.requested() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
