//! The producer: appends numbered messages with explicit IDs, idempotent across retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;
use redis::streams::StreamInfoStreamReply;
use redis::{Cmd, RedisError, RedisResult};
use service_runtime::{HealthDetail, Service, Shutdown, lifecycle};
use tokio::time::{Interval, MissedTickBehavior};

use super::calls::{Backoff, CallError, Trouble, pause, query};
use super::{Ledger, ProducerOptions, Settings};

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

impl Producer {
    pub fn new(settings: Settings, options: ProducerOptions, ledger: Arc<Ledger>) -> Self {
        Producer {
            settings,
            options,
            ledger,
            connection: None,
            next: AtomicU64::new(1),
            trouble: Trouble::default(),
        }
    }
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
        // No pause at all for an interval of zero: as fast as Redis confirms.
        let mut interval = (!self.options.interval.is_zero()).then(|| {
            let mut interval = tokio::time::interval(self.options.interval);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let mut backoff = Backoff::default();
        loop {
            let seq = self.next.load(Ordering::Relaxed);
            if self.options.last.is_some_and(|last| seq > last) {
                shutdown.requested().await; // all written: idle until stopped
                return Ok(());
            }
            tokio::select! {
                biased;
                () = shutdown.requested() => return Ok(()),
                () = tick(interval.as_mut()) => {}
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

/// The next tick of `interval`, or at once without one.
async fn tick(interval: Option<&mut Interval>) {
    if let Some(interval) = interval {
        interval.tick().await;
    }
}

/// Redis refuses an explicit ID not above the stream's last one: with one producer
/// writing increasing IDs, that entry is ours, written by an earlier attempt.
fn is_already_there(error: &RedisError) -> bool {
    error.code() == Some("ERR") && error.to_string().contains("equal or smaller")
}
