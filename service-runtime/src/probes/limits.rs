//! The bounds of each probe connection (feature `http`): [`ProbeLimits`], what a user
//! configures, and `Watched`, the connection wrapper that closes a connection on which
//! no byte moves for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How much a client may hold of `serve_health`'s probe endpoint (feature `http`); see
/// [`Supervisor::probe_limits`](crate::Supervisor::probe_limits). A
/// [`ProbeService`](crate::ProbeService) mounted in the program's server is bounded by
/// that server instead.
///
/// The defaults suit Kubernetes probes and a Prometheus scraper: a probe sends a small
/// request at once and reads its small answer, so anything slower is a client to drop.
///
/// ```
/// use std::time::Duration;
/// use service_runtime::ProbeLimits;
///
/// let limits = ProbeLimits::new()
///     .header_timeout(Duration::from_secs(2))
///     .max_connections(64);
/// # let _ = limits;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl ProbeLimits {
    /// The default [`header_timeout`](Self::header_timeout): 5 s.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default [`idle_timeout`](Self::idle_timeout): 5 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default [`max_connections`](Self::max_connections): 256.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

    /// The defaults.
    pub const fn new() -> Self {
        ProbeLimits {
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// How long a client has to send a request's head (its request line and headers),
    /// counted from when the connection is ready for it: accepted, or its previous
    /// response sent. A connection that has not sent a whole head by then is closed, so
    /// this also ends keep-alive connections that stay silent that long.
    #[must_use]
    pub const fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long a connection may go without a byte read or written while no request is
    /// being answered (a keep-alive connection between requests, a client that stops
    /// reading its response) before it is closed.
    #[must_use]
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many probe connections are served at once (at least 1). A connection beyond
    /// them is closed as soon as it is accepted; the ones already served keep answering.
    #[must_use]
    pub const fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = if connections == 0 { 1 } else { connections };
        self
    }
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits::new()
    }
}

/// The requests a connection is answering: while there is one, a silent connection
/// is waiting for the server (a health check), not idle.
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one request until the guard is dropped.
    pub(super) fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// See [`InFlight::enter`].
pub(super) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that fails its pending read or write once no byte has moved for the
/// idle timeout and no request is in flight; hyper then closes it. The timer is reset
/// by progress, not re-armed per call: one timer entry per connection.
pub(super) struct Watched<T> {
    io: T,
    idle_timeout: Duration,
    /// Boxed: the wrapper stays `Unpin`, as hyper's connection wants its I/O.
    deadline: Pin<Box<Sleep>>,
    in_flight: InFlight,
}

impl<T> Watched<T> {
    pub(super) fn new(io: T, idle_timeout: Duration, in_flight: InFlight) -> Self {
        Watched {
            io,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
            in_flight,
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }

    /// Called when the inner I/O is pending: whether the connection is now idle past
    /// its timeout (registering the timer's wake-up otherwise).
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deadline.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.in_flight.any() {
            self.moved();
            let _ = self.deadline.as_mut().poll(cx);
            return false;
        }
        true
    }

    fn pending_or_idle<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.idle_too_long(cx) {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "probe connection idle past its timeout",
            )))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_idle(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_idle(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.pending_or_idle(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_after_the_idle_timeout_unless_a_request_is_in_flight() {
        let (near, mut far) = tokio::io::duplex(64);
        let in_flight = InFlight::default();
        let mut watched = Watched::new(near, Duration::from_secs(5), in_flight.clone());
        let mut byte = [0u8; 1];

        // Traffic keeps it open past the timeout.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            far.write_all(b"x").await.unwrap();
            watched.read_exact(&mut byte).await.unwrap();
        }
        // A request in flight keeps a silent connection open.
        let guard = in_flight.enter();
        let read = tokio::time::timeout(Duration::from_secs(60), watched.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "still waiting after 60 s with a request in flight"
        );
        drop(guard);
        // Silent and nothing in flight: the pending read fails at the timeout.
        let error = watched.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn zero_connections_means_one() {
        assert_eq!(ProbeLimits::new().max_connections(0).max_connections, 1);
        assert_eq!(ProbeLimits::default(), ProbeLimits::new());
    }
}
