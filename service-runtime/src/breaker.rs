//! [`CircuitBreaker`]: protection from cascading failures. Guards calls to a dependency,
//! fails fast while the dependency is down, and probes it with a bounded number of trial
//! calls before trusting it again.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::health::HealthDetail;

/// Where a [`CircuitBreaker`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A bounded number of trial calls go through; the others fail fast.
    HalfOpen,
}

impl BreakerState {
    /// The name used in logs and JSON (`closed`, `open`, `half_open`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error of a guarded call: the call's own error, or a refusal while open.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker refused the call without running it.
    Open {
        /// The breaker's name.
        breaker: Arc<str>,
        /// Time until the breaker lets a trial call through (zero while half-open and
        /// every trial slot is taken).
        retry_in: Duration,
    },
    /// The call ran and failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { breaker, retry_in } => {
                write!(
                    f,
                    "circuit breaker `{breaker}` is open; retry in {retry_in:?}"
                )
            }
            BreakerError::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Open { .. } => None,
            BreakerError::Inner(error) => error.source(),
        }
    }
}

impl<E> BreakerError<E> {
    /// Whether the call was refused (the breaker is open) rather than failed.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerError::Open { .. })
    }
}

/// A circuit breaker: closed → (`failure_threshold` consecutive failures) → open →
/// (`open_for` elapsed) → half-open → (`half_open_trials` successes) → closed, or (one
/// failure) → open again.
///
/// Cheap to clone: clones share one state. Its state feeds health through
/// [`health`](Self::health): open or half-open is `degraded`, never `unhealthy`, so a
/// dependency outage degrades a service instead of failing its liveness.
///
/// ```
/// use service_runtime::{BreakerState, CircuitBreaker};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let breaker = CircuitBreaker::new("redis")
///     .failure_threshold(2)
///     .open_for(Duration::from_secs(5))
///     .half_open_trials(1);
/// for _ in 0..2 {
///     let _ = breaker.call(async { Err::<(), _>("connection refused") }).await;
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.call(async { Ok::<_, &str>(()) }).await.unwrap_err().is_open());
///
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// breaker.call(async { Ok::<_, &str>(()) }).await.unwrap(); // the trial call succeeds
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// # });
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    name: Arc<str>,
    settings: Settings,
    state: Arc<Mutex<State>>,
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    failure_threshold: u32,
    open_for: Duration,
    half_open_trials: u32,
}

#[derive(Debug)]
struct State {
    state: BreakerState,
    /// Bumped at each transition: a call's result counts only in the generation it began.
    generation: u64,
    consecutive_failures: u32,
    open_until: Instant,
    trials_started: u32,
    trials_succeeded: u32,
    last_failure: Option<String>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What a call may do, decided when it begins.
enum Admission {
    Run { generation: u64, trial: bool },
    Refuse(Duration),
}

impl CircuitBreaker {
    /// A closed breaker: 5 consecutive failures open it for 30 s, then 1 trial call.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CircuitBreaker {
            name: name.into(),
            settings: Settings {
                failure_threshold: 5,
                open_for: Duration::from_secs(30),
                half_open_trials: 1,
            },
            state: Arc::new(Mutex::new(State {
                state: BreakerState::Closed,
                generation: 0,
                consecutive_failures: 0,
                open_until: Instant::now(),
                trials_started: 0,
                trials_succeeded: 0,
                last_failure: None,
            })),
        }
    }

    /// Consecutive failures that open the breaker (at least 1).
    #[must_use]
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.settings.failure_threshold = failures.max(1);
        self
    }

    /// How long the breaker stays open before it lets trial calls through.
    #[must_use]
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.settings.open_for = duration;
        self
    }

    /// Trial calls let through while half-open, all of which must succeed to close the
    /// breaker (at least 1).
    #[must_use]
    pub fn half_open_trials(mut self, trials: u32) -> Self {
        self.settings.half_open_trials = trials.max(1);
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state (an open breaker whose period ended reports `half_open`).
    pub fn state(&self) -> BreakerState {
        let mut state = self.lock();
        self.refresh(&mut state);
        state.state
    }

    /// The breaker as a health check result: `healthy` while closed, `degraded` with a
    /// reason while open or half-open.
    pub fn health(&self) -> HealthDetail {
        let mut state = self.lock();
        self.refresh(&mut state);
        let last = state.last_failure.as_deref().unwrap_or("unknown");
        match state.state {
            BreakerState::Closed => HealthDetail::healthy(),
            BreakerState::Open => HealthDetail::degraded(format!(
                "circuit breaker `{}` is open for {:?} more; last failure: {last}",
                self.name,
                state.open_until.saturating_duration_since(Instant::now())
            )),
            BreakerState::HalfOpen => HealthDetail::degraded(format!(
                "circuit breaker `{}` is half-open, probing; last failure: {last}",
                self.name
            )),
        }
    }

    /// Runs `call` if the breaker allows it, and records its outcome. Fails fast with
    /// [`BreakerError::Open`] while open, and while half-open with every trial taken.
    ///
    /// A call dropped before it finishes counts neither as a success nor as a failure.
    pub async fn call<F, T, E>(&self, call: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let (generation, trial) = match self.admit() {
            Admission::Run { generation, trial } => (generation, trial),
            Admission::Refuse(retry_in) => {
                return Err(BreakerError::Open {
                    breaker: self.name.clone(),
                    retry_in,
                });
            }
        };
        let mut slot = TrialSlot {
            breaker: self,
            generation,
            held: trial,
        };
        let result = call.await;
        slot.held = false;
        match &result {
            Ok(_) => self.on_success(generation),
            Err(error) => self.on_failure(generation, error.to_string()),
        }
        result.map_err(BreakerError::Inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves an open breaker whose period ended to half-open.
    fn refresh(&self, state: &mut State) {
        if state.state == BreakerState::Open && Instant::now() >= state.open_until {
            self.transition(state, BreakerState::HalfOpen);
        }
    }

    fn transition(&self, state: &mut State, to: BreakerState) {
        let from = state.state;
        state.state = to;
        state.generation += 1;
        state.consecutive_failures = 0;
        state.trials_started = 0;
        state.trials_succeeded = 0;
        if to == BreakerState::Open {
            state.open_until = Instant::now() + self.settings.open_for;
        }
        match to {
            BreakerState::Open => tracing::warn!(
                breaker = %self.name,
                %from,
                %to,
                open_for = ?self.settings.open_for,
                last_failure = state.last_failure.as_deref().unwrap_or(""),
                "circuit breaker state changed"
            ),
            _ => tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state changed"),
        }
    }

    fn admit(&self) -> Admission {
        let mut state = self.lock();
        self.refresh(&mut state);
        match state.state {
            BreakerState::Closed => Admission::Run {
                generation: state.generation,
                trial: false,
            },
            BreakerState::Open => {
                Admission::Refuse(state.open_until.saturating_duration_since(Instant::now()))
            }
            BreakerState::HalfOpen if state.trials_started < self.settings.half_open_trials => {
                state.trials_started += 1;
                Admission::Run {
                    generation: state.generation,
                    trial: true,
                }
            }
            BreakerState::HalfOpen => Admission::Refuse(Duration::ZERO),
        }
    }

    fn on_success(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        match state.state {
            BreakerState::Closed => state.consecutive_failures = 0,
            BreakerState::HalfOpen => {
                state.trials_succeeded += 1;
                if state.trials_succeeded >= self.settings.half_open_trials {
                    self.transition(&mut state, BreakerState::Closed);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn on_failure(&self, generation: u64, error: String) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        state.last_failure = Some(error);
        match state.state {
            BreakerState::Closed => {
                state.consecutive_failures += 1;
                if state.consecutive_failures >= self.settings.failure_threshold {
                    self.transition(&mut state, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => self.transition(&mut state, BreakerState::Open),
            BreakerState::Open => {}
        }
    }
}

/// Gives a half-open trial slot back when its call is dropped before it finishes.
struct TrialSlot<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    held: bool,
}

impl Drop for TrialSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.breaker.lock();
            if state.generation == self.generation && state.state == BreakerState::HalfOpen {
                state.trials_started = state.trials_started.saturating_sub(1);
            }
        }
    }
}
