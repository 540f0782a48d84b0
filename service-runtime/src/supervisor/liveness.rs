//! Liveness: whether the supervisor's loop answers. The one rule that liveness answers
//! follow ([`SupervisorHandle::is_live`]), for the systemd watchdog and for `/livez`.
//!
//! The loop runs in one task and acts in turns: each poll of its future handles what
//! woke it (a status change, a due restart, a request) and drives the starts and stops
//! it waits on, whose hooks run in that same task (see `managed::operation`). Every wait
//! in it is raced against its deadline, so a turn that lasts is a turn that does not
//! yield: a hook blocking the thread, past any timeout, since a timeout cannot fire
//! while the thread is blocked. [`Turns`] stamps when the current turn began, so
//! another task can tell such a loop from an idle one. Health checks never enter it: a
//! dependency's outage makes services unhealthy, never the process not live.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::SupervisorHandle;

/// When the loop's current turn began: nanoseconds after `base`, plus one (zero while
/// the loop waits between turns). Written by the loop's task only, read by any.
pub(super) struct Turns {
    base: Instant,
    began: AtomicU64,
}

impl Turns {
    pub(super) fn new() -> Self {
        Turns {
            base: Instant::now(),
            began: AtomicU64::new(0),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// How long the current turn has lasted, if the loop is in one.
    fn current(&self) -> Option<Duration> {
        let began = self.began.load(Ordering::Acquire);
        (began != 0).then(|| {
            let now = self.stamp(Instant::now());
            Duration::from_nanos(now.saturating_sub(began))
        })
    }

    /// Polls `run` (the loop), stamping each poll as a turn.
    pub(super) async fn track<F: Future>(&self, run: F) -> F::Output {
        let mut run = std::pin::pin!(run);
        std::future::poll_fn(|cx| {
            self.began
                .store(self.stamp(Instant::now()), Ordering::Release);
            let poll = run.as_mut().poll(cx);
            self.began.store(0, Ordering::Release);
            poll
        })
        .await
    }
}

impl SupervisorHandle {
    /// Liveness: whether the supervisor's loop answers. True while it waits for its next
    /// event, and while its current turn (acting on a change, or driving a start or stop
    /// whose hooks run in the loop's task) began less than `patience` ago; false only when
    /// a turn has run longer without yielding, which a hook that blocks the thread does
    /// (no timeout fires while the thread is blocked).
    ///
    /// It never reads a health check: a dependency's outage makes services unhealthy
    /// (`/health`, `/readyz`), never the process not live, so a liveness probe or the
    /// systemd watchdog never restarts a process for what a restart cannot cure. The
    /// systemd watchdog pings while this holds (with `patience` its ping period).
    pub fn is_live(&self, patience: Duration) -> bool {
        self.loop_stalled_for()
            .is_none_or(|stalled| stalled < patience)
    }

    /// How long the loop's current turn has run, if it is in one.
    pub(crate) fn loop_stalled_for(&self) -> Option<Duration> {
        self.shared.turns.current()
    }
}
