//! The consumer: reads the stream through the consumer group, processes each message, and
//! commits its effect with its acknowledgement.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{Cmd, RedisResult};
use service_runtime::{BreakerError, HealthDetail, Service, Shutdown, lifecycle};

use super::calls::{Backoff, CallError, Trouble, is_dropped, pause, query_once};
use super::scripts::{self, Done};
use super::{BLOCK, ConsumerOptions, Ledger, Settings};

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
    trouble: Trouble,
}

impl Consumer {
    pub(super) fn new(settings: Settings, options: ConsumerOptions, ledger: Arc<Ledger>) -> Self {
        Consumer {
            settings,
            options,
            ledger,
            connection: None,
            trouble: Trouble::default(),
        }
    }
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
        // Stopping: every processed message gets its commit, if Redis allows.
        self.settle(conn, &mut reader.owed).await
    }
}

/// Where the consumer is.
struct Reader {
    /// Processed, not committed yet: committed before anything is read again.
    owed: Vec<Done>,
    /// Read the consumer's own pending list (ID `0`) rather than new entries (`>`).
    catch_up: bool,
}

impl Consumer {
    /// One batch: commit what is owed, read (own pending entries first, then new ones),
    /// process, commit.
    async fn step(&self, conn: &ConnectionManager, reader: &mut Reader) -> Result<(), CallError> {
        self.commit(conn, &mut reader.owed).await?;
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
            reader.owed.push(Done::of(&entry));
        }
        self.commit(conn, &mut reader.owed).await
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
}
