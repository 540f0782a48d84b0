//! Taking over the entries of consumers that are gone: a sweep of the group's pending
//! list with `XAUTOCLAIM`, which moves to this consumer every entry idle (delivered and
//! not acknowledged) for longer than the claim bound.
//!
//! Redis cannot tell a dead consumer from a slow one; the idle time is the only sign.
//! So the bound has to be longer than a batch takes to process and commit, and an entry
//! taken from a consumer that was only slow is processed twice: its commit script
//! applies the effect once whichever commit comes first (`scripts.rs`).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId};
use redis::{Cmd, RedisResult};
use tokio::time::Instant;

use super::Settings;
use super::calls::query_once;

/// The shortest pause between two sweeps, for a claim bound of a few milliseconds.
const MIN_SWEEP_EVERY: Duration = Duration::from_millis(50);

/// When the next sweep is due and where the current one is.
///
/// A sweep runs every quarter of the claim bound, so an entry whose consumer died is
/// claimed at most 1.25 times the bound after its last delivery, plus the time the
/// sweep takes. A sweep is paged (`COUNT`, one batch a page), each page one step of the
/// consumer's loop, so a large take-over does not hold up the consumer's own reads.
pub(super) struct Sweep {
    idle: Duration,
    every: Duration,
    /// Where the sweep in progress continues; `0-0` begins a new one.
    cursor: String,
    due: Instant,
}

impl Sweep {
    /// The first sweep is due at once: a replica that starts after another died takes
    /// over its entries as soon as they are idle enough.
    pub(super) fn new(idle: Duration) -> Self {
        Sweep {
            idle,
            every: (idle / 4).max(MIN_SWEEP_EVERY),
            cursor: "0-0".into(),
            due: Instant::now(),
        }
    }

    pub(super) fn is_due(&self) -> bool {
        Instant::now() >= self.due
    }

    /// One page of the sweep: up to `count` entries idle for the claim bound or longer,
    /// now delivered to this consumer. Sent once: a claim whose reply was lost leaves
    /// its entries in this consumer's pending list, where the loop's catch-up after the
    /// error reads them.
    pub(super) async fn claim(
        &mut self,
        conn: &ConnectionManager,
        settings: &Settings,
        count: usize,
    ) -> RedisResult<Vec<StreamId>> {
        let claim = Cmd::xautoclaim_options(
            &settings.stream,
            &settings.group,
            &settings.consumer,
            self.idle.as_millis() as u64,
            &self.cursor,
            StreamAutoClaimOptions::default().count(count),
        );
        let reply: StreamAutoClaimReply = query_once(conn, &claim).await?;
        // Entries deleted from the stream meanwhile (`reply.deleted_ids`) are dropped
        // from the pending list by the claim itself.
        self.cursor = reply.next_stream_id;
        if self.cursor == "0-0" {
            self.due = Instant::now() + self.every;
        }
        Ok(reply.claimed)
    }
}
