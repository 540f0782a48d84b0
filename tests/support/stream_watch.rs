//! What a Redis test reads of the pipeline's stream, from a connection of its own: the
//! effects applied, what is pending and under which consumer, the group's consumers; a
//! pause of Redis's writes; and [`Deadline`], the bound of every loop that polls them.
//!
//! Every call is bounded and panics with what it waited for: a Redis that does not answer
//! fails the test instead of stalling it.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoConsumersReply, StreamPendingCountReply, StreamPendingReply};
use tokio::time::Instant;

/// The bound of every call here, and of a [`Deadline`] unless it says otherwise.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How often a [`Deadline`]'s loop looks again: Redis state has no event to wait for.
const POLL: Duration = Duration::from_millis(10);

/// The names of the keys a watch reads.
pub struct Keys {
    pub stream: String,
    pub group: String,
    pub effects: String,
    pub processed: String,
}

/// A connection to the test's Redis, and the keys of the pipeline.
pub struct Watch {
    conn: MultiplexedConnection,
    keys: Keys,
}

impl Watch {
    pub async fn connect(url: &str, keys: Keys) -> Watch {
        let connect = async {
            redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await
        };
        let conn = bounded("a connection to Redis", connect)
            .await
            .expect("a connection to Redis");
        Watch { conn, keys }
    }

    /// How many messages have their effect (`HLEN` of the effects).
    pub async fn effects(&mut self) -> u64 {
        let query = self.conn.hlen(&self.keys.effects);
        bounded("HLEN", query).await.expect("HLEN")
    }

    /// How many IDs the commits recorded (`SCARD` of the processed IDs).
    pub async fn processed_ids(&mut self) -> u64 {
        let query = self.conn.scard(&self.keys.processed);
        bounded("SCARD", query).await.expect("SCARD")
    }

    /// The stream's length.
    pub async fn length(&mut self) -> u64 {
        let query = self.conn.xlen(&self.keys.stream);
        bounded("XLEN", query).await.expect("XLEN")
    }

    /// Entries pending in the group, under any consumer.
    pub async fn group_pending(&mut self) -> u64 {
        let query = self.conn.xpending(&self.keys.stream, &self.keys.group);
        let reply: StreamPendingReply = bounded("XPENDING", query).await.expect("XPENDING");
        reply.count() as u64
    }

    /// The IDs pending under `consumer`.
    pub async fn pending_of(&mut self, consumer: &str) -> Vec<String> {
        let (stream, group) = (&self.keys.stream, &self.keys.group);
        let query = self
            .conn
            .xpending_consumer_count(stream, group, "-", "+", 100_000, consumer);
        let reply: StreamPendingCountReply = bounded("XPENDING of a consumer", query)
            .await
            .expect("XPENDING of a consumer");
        reply.ids.into_iter().map(|entry| entry.id).collect()
    }

    /// The consumers the group lists.
    pub async fn consumers(&mut self) -> Vec<String> {
        let query = self
            .conn
            .xinfo_consumers(&self.keys.stream, &self.keys.group);
        let reply: StreamInfoConsumersReply = bounded("XINFO CONSUMERS", query)
            .await
            .expect("XINFO CONSUMERS");
        reply.consumers.into_iter().map(|c| c.name).collect()
    }

    /// `CLIENT PAUSE <for> WRITE`: every client's writes (scripts included) wait until
    /// [`resume_writes`](Self::resume_writes) or until `duration` is over; reads go on.
    pub async fn pause_writes(&mut self, duration: Duration) {
        let mut pause = redis::cmd("CLIENT");
        pause
            .arg("PAUSE")
            .arg(duration.as_millis() as u64)
            .arg("WRITE");
        let query = pause.query_async::<()>(&mut self.conn);
        bounded("CLIENT PAUSE", query).await.expect("CLIENT PAUSE");
    }

    pub async fn resume_writes(&mut self) {
        let mut unpause = redis::cmd("CLIENT");
        unpause.arg("UNPAUSE");
        let query = unpause.query_async::<()>(&mut self.conn);
        bounded("CLIENT UNPAUSE", query)
            .await
            .expect("CLIENT UNPAUSE");
    }

    /// Appends `seq` as the producer does (`<seq>-1`, field `seq`), many in one round
    /// trip: a backlog written before the consumers start.
    pub async fn append(&mut self, seqs: std::ops::RangeInclusive<u64>) {
        let mut pipe = redis::pipe();
        for seq in seqs {
            pipe.xadd(&self.keys.stream, format!("{seq}-1"), &[("seq", seq)])
                .ignore();
        }
        let query = pipe.query_async::<()>(&mut self.conn);
        bounded("XADD", query).await.expect("XADD");
    }
}

/// The end of a polling loop: `tick` panics with what the loop waited for once it is past.
pub struct Deadline {
    what: String,
    at: Instant,
    bound: Duration,
}

impl Deadline {
    pub fn new(what: impl Into<String>) -> Deadline {
        Deadline::within(PATIENCE, what)
    }

    pub fn within(bound: Duration, what: impl Into<String>) -> Deadline {
        Deadline {
            what: what.into(),
            at: Instant::now() + bound,
            bound,
        }
    }

    /// Panics if the deadline is past, else waits a little before the loop looks again.
    pub async fn tick(&self) {
        self.check();
        tokio::time::sleep(POLL).await;
    }

    /// Panics if the deadline is past.
    pub fn check(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}",
            self.bound,
            self.what
        );
    }
}

pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}
