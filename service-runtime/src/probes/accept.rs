//! The probe endpoint's accept loop (feature `http`): the cap on concurrent connections,
//! the backoff after a failed accept (out of file descriptors, usually), and warnings
//! that say what happened without repeating it many times a second.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The shortest pause after a failed accept; it doubles on each failure in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest: a freed descriptor is used within a second.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// One warning of a kind per this long, counting what it stands for.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until dropped, serving at most `max_connections` at once, each
/// with `serve` on a task of its own; the tasks end when the loop's future is dropped.
pub(super) async fn accept_loop<F, Fut>(listener: TcpListener, max_connections: usize, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut accept_failures = RateLimited::default();
    let mut refusals = RateLimited::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            // One connection's trouble (reset before it was accepted): the next is fine.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                let pause = backoff.failed();
                if let Some(failures) = accept_failures.event(Instant::now()) {
                    tracing::warn!(
                        %error,
                        failures,
                        pause_ms = pause.as_millis() as u64,
                        "probe endpoint could not accept connections; backing off"
                    );
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once: its descriptor is released before the next accept.
            drop(stream);
            if let Some(closed) = refusals.event(Instant::now()) {
                tracing::warn!(
                    max_connections,
                    closed,
                    "probe endpoint at its connection cap; closing new connections"
                );
            }
            continue;
        };
        let connection = serve(stream);
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The pause after each failed accept in a row: doubling from [`FIRST_PAUSE`] to
/// [`LONGEST_PAUSE`], back to the first after an accept succeeds.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_PAUSE }
    }
}

impl Backoff {
    fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(LONGEST_PAUSE);
        pause
    }

    fn succeeded(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

/// Events of one kind, reported at most once per [`WARN_EVERY`].
#[derive(Default)]
struct RateLimited {
    last_report: Option<Instant>,
    unreported: u64,
}

impl RateLimited {
    /// Counts an event at `now`; `Some(events)` when a warning is due, with how many
    /// events it stands for (this one and the ones since the last warning).
    fn event(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_to_a_second_and_resets_after_an_accept() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..9)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), FIRST_PAUSE);
    }

    #[test]
    fn one_warning_per_period_counting_the_events_it_stands_for() {
        let start = Instant::now();
        let mut limited = RateLimited::default();
        assert_eq!(
            limited.event(start),
            Some(1),
            "the first event warns at once"
        );
        // 20 failures a second (a 50 ms pause) for ten seconds: no further warning.
        let mut warnings = Vec::new();
        for i in 1..=200 {
            if let Some(events) = limited.event(start + Duration::from_millis(50 * i)) {
                warnings.push((i, events));
            }
        }
        assert_eq!(warnings, [(200, 200)], "one warning at 10 s, for all 200");
        assert_eq!(limited.event(start + Duration::from_secs(11)), None);
        assert_eq!(limited.event(start + Duration::from_secs(20)), Some(2));
    }
}
