//! Restart policies: when a supervisor restarts a service, how often, and how long it
//! waits between attempts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Whether a supervisor restarts a service that ended (OTP's child restart types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restart: after a failure, and after the run loop returned `Ok`.
    Permanent,
    /// Restart after a failure only (an `Err`, a panic, a timeout); a run loop that
    /// returns `Ok` has finished its work and stays stopped. The default.
    #[default]
    Transient,
    /// Never restart; a failure is reported and the service stays in `error`.
    Temporary,
}

impl Restart {
    /// Parses `permanent`, `transient` or `temporary`.
    pub fn parse(value: &str) -> Option<Restart> {
        match value {
            "permanent" => Some(Restart::Permanent),
            "transient" => Some(Restart::Transient),
            "temporary" => Some(Restart::Temporary),
            _ => None,
        }
    }
}

/// How a supervisor restarts one service.
///
/// At most [`max_restarts`](Self::max_restarts) restarts within
/// [`within`](Self::within) (OTP's intensity and period); one more failure escalates: the
/// supervisor stops everything and reports the service. Between attempts it waits
/// `backoff × 2^attempt`, capped at `max_backoff`, spread by ±`jitter`; the attempt
/// count resets once the service has run for `reset_after`.
///
/// ```
/// # use service_runtime::{Restart, RestartPolicy};
/// # use std::time::Duration;
/// let policy = RestartPolicy::new(Restart::Permanent)
///     .max_restarts(5, Duration::from_secs(60))
///     .backoff(Duration::from_millis(200), Duration::from_secs(5))
///     .jitter(0.0);
/// assert_eq!(policy.delay(0), Duration::from_millis(200));
/// assert_eq!(policy.delay(3), Duration::from_millis(1600));
/// assert_eq!(policy.delay(10), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// When to restart.
    pub restart: Restart,
    /// Restarts allowed within `within` before escalating.
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub within: Duration,
    /// The first delay before a restart.
    pub backoff: Duration,
    /// The largest delay before a restart.
    pub max_backoff: Duration,
    /// Random spread of each delay, as a fraction (0.1 = ±10 %).
    pub jitter: f64,
    /// Running this long without failing resets the backoff to its first delay.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::new(Restart::default())
    }
}

impl RestartPolicy {
    /// A policy of the given kind: 3 restarts within 30 s, backoff from 100 ms to 10 s
    /// with ±10 % jitter, reset after 60 s of stable running.
    pub const fn new(restart: Restart) -> Self {
        RestartPolicy {
            restart,
            max_restarts: 3,
            within: Duration::from_secs(30),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            jitter: 0.1,
            reset_after: Duration::from_secs(60),
        }
    }

    /// Sets when to restart.
    #[must_use]
    pub const fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Allows `max_restarts` restarts within `within`.
    #[must_use]
    pub const fn max_restarts(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Sets the first and the largest delay between attempts.
    #[must_use]
    pub const fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Sets the random spread of each delay (0.0 for an exact schedule), clamped to 0..=1.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Sets how long a service must run for its backoff to reset.
    #[must_use]
    pub const fn reset_after(mut self, stable: Duration) -> Self {
        self.reset_after = stable;
        self
    }

    /// The delay before restart number `attempt` (from 0), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// The delay with jitter applied, `unit` being a uniform sample in `[0, 1)`.
    pub(crate) fn jittered_delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.delay(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        let spread = 1.0 + self.jitter * (2.0 * unit - 1.0);
        base.mul_f64(spread.max(0.0))
    }
}

/// The restarts of one service under its policy, as whoever restarts it (a supervisor,
/// or a parent restarting an optional component) keeps them: the restarts within the
/// policy's window, the backoff attempt, and since when the service has been running.
#[derive(Debug, Default)]
pub(crate) struct RestartHistory {
    /// When each restart within the window happened, oldest first.
    restarts: VecDeque<Instant>,
    /// Consecutive restarts since the backoff last reset.
    attempt: u32,
    running_since: Option<Instant>,
}

impl RestartHistory {
    /// The service entered `running` at `now`.
    pub(crate) fn running(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The service failed (or exited) at `now`: the delay before its next restart, or
    /// `None` if `policy.max_restarts` restarts already happened within `policy.within`.
    /// A service that ran for `policy.reset_after` before it failed starts the backoff
    /// over.
    pub(crate) fn next_delay(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Duration> {
        while self
            .restarts
            .front()
            .is_some_and(|&at| now.duration_since(at) >= policy.within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= policy.max_restarts as usize {
            return None;
        }
        if self
            .running_since
            .take()
            .is_some_and(|since| now.duration_since(since) >= policy.reset_after)
        {
            self.attempt = 0;
        }
        let delay = policy.jittered_delay(self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// A restart happened at `now`: it counts against the window.
    pub(crate) fn restarted(&mut self, now: Instant) {
        self.restarts.push_back(now);
    }

    /// The restarts within the window, as of the last [`next_delay`](Self::next_delay).
    pub(crate) fn recent(&self) -> usize {
        self.restarts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_in_bounds() {
        let policy = RestartPolicy::new(Restart::Permanent)
            .backoff(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
        for _ in 0..1000 {
            let unit = fastrand::f64();
            assert!((0.0..1.0).contains(&unit));
            let delay = policy.jittered_delay(1, unit);
            assert!(
                delay >= Duration::from_millis(180) && delay <= Duration::from_millis(220),
                "{delay:?}"
            );
        }
        assert_eq!(
            policy.jitter(0.0).jittered_delay(2, 0.99),
            Duration::from_millis(400)
        );
        assert_eq!(Restart::parse("permanent"), Some(Restart::Permanent));
        assert_eq!(Restart::parse("always"), None);
    }

    #[test]
    fn history_backs_off_resets_after_a_stable_run_and_stops_at_the_limit() {
        let policy = RestartPolicy::new(Restart::Transient)
            .max_restarts(3, Duration::from_secs(30))
            .backoff(Duration::from_millis(100), Duration::from_secs(10))
            .jitter(0.0)
            .reset_after(Duration::from_secs(60));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut history = RestartHistory::default();
        let mut delays = Vec::new();
        for secs in [0, 1, 2] {
            delays.push(history.next_delay(&policy, at(secs)).unwrap().as_millis());
            history.restarted(at(secs));
        }
        assert_eq!(delays, [100, 200, 400]);
        assert_eq!(
            history.next_delay(&policy, at(3)),
            None,
            "three within 30 s"
        );
        assert_eq!(history.recent(), 3);
        // Once the first restarts leave the window, another is allowed; a run of 60 s
        // before the failure starts the backoff over.
        history.running(at(40));
        assert_eq!(
            history.next_delay(&policy, at(100)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(history.recent(), 0);
    }
}
