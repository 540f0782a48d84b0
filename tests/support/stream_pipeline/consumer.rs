//! The consumer: reads the stream through the consumer group, processes each message, and
//! commits its effect with its acknowledgement; as one of several replicas, it also
//! claims the entries of replicas that are gone, reports its lag, and leaves the group
//! when it stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{Cmd, RedisResult};
use service_runtime::{BreakerError, HealthDetail, Service, Shutdown, lifecycle};

use super::calls::{Backoff, CallError, Trouble, is_dropped, pause, query_once, within};
use super::claim::Sweep;
use super::lag::Lag;
use super::scripts::{self, Done};
use super::{BLOCK, CHECK_TIMEOUT, ConsumerOptions, Ledger, Settings};

/// How long a stopping consumer tries to leave its group: within its stop timeout, after
/// the last commit. A consumer that could not leave stays listed, with nothing pending.
const LEAVE_BUDGET: Duration = Duration::from_secs(1);

/// Reads the stream through the consumer group, processes each message, and commits its
/// effect with its acknowledgement.
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
    /// For the lag check alone: the loop's blocking reads would delay it.
    probe: Option<ConnectionManager>,
    trouble: Trouble,
}

impl Consumer {
    pub fn new(settings: Settings, options: ConsumerOptions, ledger: Arc<Ledger>) -> Self {
        Consumer {
            settings,
            options,
            ledger,
            connection: None,
            probe: None,
            trouble: Trouble::default(),
        }
    }
}

#[lifecycle]
impl Consumer {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        self.probe = Some(self.settings.connect().await?);
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> RedisResult<()> {
        self.connection = None;
        self.probe = None;
        Ok(())
    }

    /// Optional: while the loop retries, the consumer is degraded, not failed.
    #[health(name = "stream", optional)]
    async fn stream(&self) -> HealthDetail {
        self.trouble.health("reading")
    }

    /// Optional: a consumer behind by more than the threshold is degraded, not failed.
    /// The figures are in the reason whatever the status.
    #[health(name = "lag", optional)]
    async fn lag_check(&self) -> HealthDetail {
        let Some(conn) = &self.probe else {
            return HealthDetail::unhealthy("not connected");
        };
        let measure = within(CHECK_TIMEOUT, Lag::measure(conn, &self.settings));
        match self.settings.breaker.call(measure).await {
            Ok(lag) => lag.health(self.options.lag_threshold),
            Err(error) => HealthDetail::degraded(format!("lag unknown: {error}")),
        }
    }

    #[run]
    async fn consume(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        let mut reader = Reader {
            owed: Vec::new(),
            // Start with the pending list: entries an earlier run was delivered.
            catch_up: true,
            sweep: self.options.claim_idle.map(Sweep::new),
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
        // Stopping: every processed message gets its commit, if Redis allows; then,
        // holding nothing, the consumer leaves the group.
        self.settle(conn, &mut reader.owed).await?;
        self.leave(conn).await;
        Ok(())
    }
}

/// Where the consumer is.
struct Reader {
    /// Processed, not committed yet: committed before anything is read again.
    owed: Vec<Done>,
    /// Read the consumer's own pending list (ID `0`) rather than new entries (`>`).
    catch_up: bool,
    /// The claims of other consumers' idle entries, if this consumer makes them.
    sweep: Option<Sweep>,
}

impl Consumer {
    /// One batch: commit what is owed; take a batch (own pending entries first, then a
    /// page of claims when a sweep is due, else new entries); process it; commit it.
    async fn step(&self, conn: &ConnectionManager, reader: &mut Reader) -> Result<(), CallError> {
        self.commit(conn, &mut reader.owed).await?;
        let entries = match &mut reader.sweep {
            Some(sweep) if !reader.catch_up && sweep.is_due() => {
                let batch = self.options.batch;
                let claim = sweep.claim(conn, &self.settings, batch);
                let claimed = self.settings.breaker.call(claim).await?;
                self.ledger
                    .claimed
                    .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                claimed
            }
            _ => self.read(conn, reader).await?,
        };
        for entry in entries {
            self.process(&entry).await;
            reader.owed.push(Done::of(&entry));
        }
        self.commit(conn, &mut reader.owed).await
    }

    /// Reads a batch: the consumer's own pending entries while catching up, else new
    /// ones (waiting up to `BLOCK` for them).
    async fn read(
        &self,
        conn: &ConnectionManager,
        reader: &mut Reader,
    ) -> Result<Vec<StreamId>, CallError> {
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
        Ok(entries)
    }

    /// The work, whose effect the commit writes. An entry without a sequence (written by
    /// someone else) has no effect: it is acknowledged and skipped.
    async fn process(&self, entry: &StreamId) {
        if !self.options.work.is_zero() {
            tokio::time::sleep(self.options.work).await;
        }
        if let Some(seq) = entry.get::<u64>("seq") {
            self.ledger.processed.lock().expect("ledger lock").push(seq);
        }
    }

    /// The effects and acknowledgements of `owed`, in one script. Resending it is
    /// harmless: an entry applied before gets no second effect and is not counted.
    async fn commit(
        &self,
        conn: &ConnectionManager,
        owed: &mut Vec<Done>,
    ) -> Result<(), CallError> {
        if owed.is_empty() {
            return Ok(());
        }
        let committed = self
            .settings
            .breaker
            .call(scripts::commit(conn, &self.settings, owed))
            .await?;
        let ledger = &self.ledger;
        ledger
            .applied
            .fetch_add(committed.applied, Ordering::Relaxed);
        let before = owed.len() as u64 - committed.applied;
        ledger.already_applied.fetch_add(before, Ordering::Relaxed);
        ledger.acked.fetch_add(committed.acked, Ordering::Relaxed);
        owed.clear();
        Ok(())
    }

    /// The last commit, retried for a while (within the stop timeout) if Redis is down;
    /// what cannot be committed stays pending, and the next run reads it again from the
    /// pending list.
    async fn settle(&self, conn: &ConnectionManager, owed: &mut Vec<Done>) -> anyhow::Result<()> {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            match self.commit(conn, owed).await {
                Ok(()) => return Ok(()),
                Err(error) => tokio::time::sleep(backoff.after(&error)).await,
            }
        }
        anyhow::bail!(
            "{} processed entries left uncommitted: {}",
            owed.len(),
            self.trouble.get().unwrap_or_default()
        )
    }

    /// Deletes this consumer from the group once nothing is pending under its name, so
    /// the group lists the consumers that exist (a replica's name is often its pod's,
    /// never used again). Best effort, within [`LEAVE_BUDGET`].
    async fn leave(&self, conn: &ConnectionManager) {
        let leave = self
            .settings
            .breaker
            .call(scripts::leave(conn, &self.settings));
        match tokio::time::timeout(LEAVE_BUDGET, leave).await {
            Ok(Ok(left)) => self.ledger.left_group.store(left, Ordering::Relaxed),
            Ok(Err(error)) => {
                tracing::warn!(consumer = %self.settings.consumer, %error, "could not leave the group")
            }
            Err(_) => {
                tracing::warn!(consumer = %self.settings.consumer, "could not leave the group within {LEAVE_BUDGET:?}")
            }
        }
    }
}
