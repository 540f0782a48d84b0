//! How far behind a consumer is, as Redis sees it: how many entries are pending (delivered,
//! not acknowledged) under its name, how long the oldest of them has waited, and how many
//! the whole group has pending; and the health that follows from it.

use std::fmt;
use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionManager;
use redis::streams::{StreamPendingCountReply, StreamPendingReply};
use service_runtime::{HealthDetail, HealthStatus};

use super::Settings;
use super::calls::is_dropped;

/// How many of the consumer's pending entries are read for their ages: more than it holds
/// (a batch in hand and a page of claims) unless it is far behind, when it is degraded
/// anyway.
const SAMPLE: usize = 100;

/// A consumer's lag, read from the group's pending list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// Entries pending under this consumer's name.
    pub pending: u64,
    /// The longest any of them has waited since it was delivered (`XPENDING`'s idle
    /// time), among the first [`SAMPLE`] by ID; `None` when nothing is pending.
    pub oldest: Option<Duration>,
    /// Entries pending in the whole group, under every consumer's name.
    pub group_pending: u64,
}

impl Lag {
    /// Reads it: `XPENDING` for the group's summary and for this consumer's entries, in
    /// one transaction so that both see the same pending list.
    pub(super) async fn measure(conn: &ConnectionManager, settings: &Settings) -> RedisResult<Lag> {
        let mut both = redis::pipe();
        both.atomic()
            .xpending(&settings.stream, &settings.group)
            .xpending_consumer_count(
                &settings.stream,
                &settings.group,
                "-",
                "+",
                SAMPLE,
                &settings.consumer,
            );
        // Read-only: sent again if its connection had died, as `calls::query` does.
        let reply = match both.query_async(&mut conn.clone()).await {
            Err(error) if is_dropped(&error) => both.query_async(&mut conn.clone()).await,
            other => other,
        };
        let (summary, own): (StreamPendingReply, StreamPendingCountReply) = reply?;
        let (group_pending, pending) = match &summary {
            StreamPendingReply::Empty => (0, 0),
            StreamPendingReply::Data(data) => {
                let own = data
                    .consumers
                    .iter()
                    .find(|consumer| consumer.name == settings.consumer)
                    .map_or(0, |consumer| consumer.pending);
                (data.count, own)
            }
        };
        let oldest = own
            .ids
            .iter()
            .map(|entry| Duration::from_millis(entry.last_delivered_ms as u64))
            .max();
        Ok(Lag {
            pending: pending as u64,
            oldest,
            group_pending: group_pending as u64,
        })
    }

    /// Degraded once the oldest entry has waited longer than `threshold`. The figures
    /// are the reason at every status, so a healthy report shows them too (in its
    /// `details`).
    pub fn health(&self, threshold: Duration) -> HealthDetail {
        let behind = self.oldest.is_some_and(|oldest| oldest > threshold);
        HealthDetail {
            status: if behind {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            },
            reason: Some(if behind {
                format!("{self}: behind by more than {} ms", threshold.as_millis())
            } else {
                self.to_string()
            }),
            data: Default::default(),
        }
    }
}

/// `16 pending (oldest 32 ms), 48 in the group`.
impl fmt::Display for Lag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pending", self.pending)?;
        if let Some(oldest) = self.oldest {
            write!(f, " (oldest {} ms)", oldest.as_millis())?;
        }
        write!(f, ", {} in the group", self.group_pending)
    }
}
