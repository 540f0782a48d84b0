//! The lifecycle state machine: [`ServiceStatus`] and its legal transitions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a service is in its lifecycle.
///
/// ```text
/// Stopped ──► Starting ──► Running ──► Stopping ──► Stopped
///    any ──► Error ──► Starting (restart) | Stopping | Stopped
/// ```
///
/// Statuses display and serialise in lower case (`running`), as in the health report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum ServiceStatus {
    /// Not running: the initial state, and the state after a clean stop.
    Stopped = 0,
    /// Init hooks and components are starting.
    Starting = 1,
    /// Fully operational: started, and the run loop (if any) is running.
    Running = 2,
    /// The run loop, components and cleanup hooks are stopping.
    Stopping = 3,
    /// A hook failed, panicked or timed out; the service is not operational.
    Error = 4,
}

impl ServiceStatus {
    /// Every status, in declaration order.
    pub const ALL: [ServiceStatus; 5] = [
        ServiceStatus::Stopped,
        ServiceStatus::Starting,
        ServiceStatus::Running,
        ServiceStatus::Stopping,
        ServiceStatus::Error,
    ];

    /// The lower-case name used in logs, JSON and `Display`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Stopped => "stopped",
            ServiceStatus::Starting => "starting",
            ServiceStatus::Running => "running",
            ServiceStatus::Stopping => "stopping",
            ServiceStatus::Error => "error",
        }
    }

    /// Whether the state machine allows `self → to`.
    ///
    /// Legal: `stopped → starting → running → stopping → stopped`, `starting → stopping`
    /// (a start cancelled by `stop()`), any state `→ error`, and from `error` a restart
    /// (`→ starting`) or a stop (`→ stopping`, `→ stopped`).
    pub const fn can_transition_to(self, to: ServiceStatus) -> bool {
        use ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
        matches!(
            (self, to),
            (Stopped, Starting)
                | (Starting, Running)
                | (Starting, Stopping)
                | (Running, Stopping)
                | (Stopping, Stopped)
                | (Error, Starting)
                | (Error, Stopping)
                | (Error, Stopped)
                | (Stopped | Starting | Running | Stopping, Error)
        )
    }

    /// Checks `self → to`, returning the typed refusal when it is illegal.
    pub fn transition_to(self, to: ServiceStatus) -> Result<ServiceStatus, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// Whether the service is fully operational.
    pub const fn is_running(self) -> bool {
        matches!(self, ServiceStatus::Running)
    }

    pub(crate) const fn from_u8(value: u8) -> ServiceStatus {
        match value {
            0 => ServiceStatus::Stopped,
            1 => ServiceStatus::Starting,
            2 => ServiceStatus::Running,
            3 => ServiceStatus::Stopping,
            _ => ServiceStatus::Error,
        }
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A transition the state machine refuses, such as `stopped → running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionError {
    /// The status the service was in.
    pub from: ServiceStatus,
    /// The status that was asked for.
    pub to: ServiceStatus,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "illegal status transition {} -> {}", self.from, self.to)
    }
}

impl std::error::Error for TransitionError {}

#[cfg(test)]
mod tests {
    use super::ServiceStatus::{self, Error, Running, Starting, Stopped, Stopping};

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        let legal = [
            (Stopped, Starting),
            (Starting, Running),
            (Starting, Stopping),
            (Running, Stopping),
            (Stopping, Stopped),
            (Error, Starting),
            (Error, Stopping),
            (Error, Stopped),
            (Stopped, Error),
            (Starting, Error),
            (Running, Error),
            (Stopping, Error),
        ];
        for from in ServiceStatus::ALL {
            for to in ServiceStatus::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                assert_eq!(from.transition_to(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn displays_and_serialises_in_lower_case() {
        for status in ServiceStatus::ALL {
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(ServiceStatus::from_u8(status as u8), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(
                serde_json::from_str::<ServiceStatus>(&json).unwrap(),
                status
            );
        }
        assert_eq!(Running.to_string(), "running");
        let refused = Stopped.transition_to(Running).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "illegal status transition stopped -> running"
        );
    }
}
