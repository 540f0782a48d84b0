//! Restart policies: when a supervisor restarts a service, how often, and how long it
//! waits between attempts.

use std::time::Duration;

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
}
