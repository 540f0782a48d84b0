//! How the pipeline's services call Redis: one send or a resend after a dropped
//! connection, the last error a retrying loop keeps for its health check, and the pause
//! between attempts.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};
use service_runtime::{BreakerError, HealthDetail, Shutdown};

/// The first and the longest pause between attempts while Redis fails.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A client error: Redis's own, or the breaker's refusal while it is open.
pub type CallError = BreakerError<RedisError>;

/// Sends `cmd` once.
pub(super) async fn query_once<T: FromRedisValue>(
    conn: &ConnectionManager,
    cmd: &Cmd,
) -> RedisResult<T> {
    cmd.query_async(&mut conn.clone()).await
}

/// Sends `cmd`, and once more if its connection had died. After an outage the first
/// request on each connection fails even when Redis is back (the manager replaces a
/// dead connection when a request finds it); without the second attempt that failure
/// would count for the breaker and reopen it. For idempotent commands alone: PING, XADD
/// with an explicit ID, XACK, XGROUP CREATE, XINFO.
pub(super) async fn query<T: FromRedisValue>(
    conn: &ConnectionManager,
    cmd: &Cmd,
) -> RedisResult<T> {
    match query_once(conn, cmd).await {
        Err(error) if is_dropped(&error) => query_once(conn, cmd).await,
        other => other,
    }
}

/// The connection is gone; the manager has begun to replace it.
pub(super) fn is_dropped(error: &RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// The last error of a loop that is retrying, for its health check.
#[derive(Default)]
pub(super) struct Trouble(Mutex<Option<String>>);

impl Trouble {
    pub(super) fn set(&self, error: &CallError) {
        *self.0.lock().expect("trouble lock") = Some(error.to_string());
    }

    pub(super) fn clear(&self) {
        self.0.lock().expect("trouble lock").take();
    }

    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().expect("trouble lock").clone()
    }

    pub(super) fn health(&self, doing: &str) -> HealthDetail {
        match self.get() {
            None => HealthDetail::healthy(),
            Some(error) => HealthDetail::degraded(format!("retrying {doing}: {error}")),
        }
    }
}

/// Pauses between attempts: exponential while Redis fails, the breaker's own delay
/// while it refuses calls.
#[derive(Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(super) fn after(&mut self, error: &CallError) -> Duration {
        match error {
            BreakerError::Open { retry_in, .. } => (*retry_in).clamp(MIN_BACKOFF, MAX_BACKOFF),
            BreakerError::Inner(_) => {
                let delay = MIN_BACKOFF.saturating_mul(1 << self.failures.min(5));
                self.failures += 1;
                delay.min(MAX_BACKOFF)
            }
        }
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Sleeps for `delay`; `false` if shutdown was requested first.
pub(super) async fn pause(shutdown: &Shutdown, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.requested() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
