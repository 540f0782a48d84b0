//! How the pipeline's services call Redis: one send or a resend after a dropped
//! connection, a bounded call for the health checks and the PING check itself, the last
//! error a retrying loop keeps for its health check, and the pause between attempts.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};
use service_runtime::{BreakerError, CircuitBreaker, HealthDetail, Shutdown};

use super::CHECK_TIMEOUT;

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

/// `call`, or a timeout error after `limit`. A health check's calls are bounded below the
/// check's own timeout, so a hung call counts as a failure for the breaker instead of
/// being dropped with the check.
pub(super) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(reply) => reply,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply within {limit:?}"),
        ))),
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

/// PING through the breaker: healthy when it answers, unhealthy when it fails, degraded
/// (the breaker's own report) while the breaker is open and refuses calls.
pub(super) async fn redis_health(
    connection: Option<&ConnectionManager>,
    breaker: &CircuitBreaker,
) -> HealthDetail {
    let Some(conn) = connection else {
        return HealthDetail::unhealthy("not connected");
    };
    let ping = redis::cmd("PING");
    let ping = within(CHECK_TIMEOUT, query::<String>(conn, &ping));
    match breaker.call(ping).await {
        Ok(_) => breaker.health(),
        Err(refused @ BreakerError::Open { .. }) => {
            let detail = breaker.health();
            if detail.reason.is_some() {
                detail
            } else {
                HealthDetail::degraded(refused.to_string())
            }
        }
        Err(BreakerError::Inner(error)) => HealthDetail::unhealthy(format!("PING failed: {error}")),
    }
}
