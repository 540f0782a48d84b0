//! [`Report`]: what a supervisor run ended with, its [`SupervisorError`]s in the order
//! they happened, and the exit code they make.

use std::fmt;
use std::process::{ExitCode, Termination};
use std::sync::Arc;
use std::time::Duration;

use crate::ServiceError;

/// Exit code after a second signal forced the shutdown (128 + SIGINT, as shells report).
pub const EXIT_FORCED: u8 = 130;
/// Exit code when the shutdown budget ran out with services still stopping.
pub const EXIT_SHUTDOWN_TIMEOUT: u8 = 124;
/// Exit code of an invalid supervisor (unknown dependency, cycle, duplicate name).
pub const EXIT_CONFIG: u8 = 78;

/// An error of a supervisor run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor is invalid: an unknown or cyclic dependency, a duplicate name.
    /// Nothing was started.
    Config(String),
    /// A service failed to start; the ones started before it were stopped.
    Start(ServiceError),
    /// A service failed while running and was not restarted (its policy is
    /// `temporary`, or its restarts ran out).
    Failed(ServiceError),
    /// A service failed while running and was restarted: kept for the record, it does
    /// not make the run unsuccessful.
    Restarted(ServiceError),
    /// A service failed more often than its policy allows; everything was stopped.
    Escalated {
        /// The service that failed too often.
        service: Arc<str>,
        /// The restarts its policy allows…
        restarts: u32,
        /// …within this window.
        within: Duration,
        /// Its last error, if it failed (rather than exited).
        last_error: Option<ServiceError>,
    },
    /// A service failed to stop cleanly.
    Stop(ServiceError),
    /// The shutdown budget ran out. Every service not stopped by then was cancelled (its
    /// run loop and its hooks in flight dropped) and ends in `error` with a
    /// [`ServiceError::ShutdownCancelled`] cause.
    #[non_exhaustive]
    ShutdownTimeout {
        /// The budget.
        budget: Duration,
        /// The services that were still stopping, in stop order.
        abandoned: Vec<String>,
        /// The services the shutdown never asked to stop (those before them in stop order
        /// were still stopping), in stop order.
        never_reached: Vec<String>,
    },
    /// A second signal forced the exit; every service not stopped was cancelled, as for
    /// [`ShutdownTimeout`](Self::ShutdownTimeout).
    #[non_exhaustive]
    Forced {
        /// The services that were still stopping, in stop order.
        abandoned: Vec<String>,
        /// The services the shutdown never asked to stop, in stop order.
        never_reached: Vec<String>,
    },
    /// The signal handlers could not be installed.
    Signal(Arc<std::io::Error>),
    /// The probe endpoint could not listen on its address; nothing was started.
    Probe {
        /// The address asked for.
        address: String,
        /// Why it failed.
        error: Arc<std::io::Error>,
    },
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Config(message) => write!(f, "invalid supervisor: {message}"),
            SupervisorError::Start(error) => write!(f, "start failed: {error}"),
            SupervisorError::Failed(error) => write!(f, "failed while running: {error}"),
            SupervisorError::Restarted(error) => {
                write!(f, "failed while running and restarted: {error}")
            }
            SupervisorError::Escalated {
                service,
                restarts,
                within,
                last_error,
            } => {
                write!(
                    f,
                    "service `{service}` failed more than {restarts} restarts within {within:?} allow"
                )?;
                if let Some(error) = last_error {
                    write!(f, "; last error: {error}")?;
                }
                Ok(())
            }
            SupervisorError::Stop(error) => write!(f, "stop failed: {error}"),
            SupervisorError::ShutdownTimeout {
                budget,
                abandoned,
                never_reached,
            } => {
                write!(f, "shutdown budget of {budget:?} ran out")?;
                write_cancelled(f, abandoned, never_reached)
            }
            SupervisorError::Forced {
                abandoned,
                never_reached,
            } => {
                write!(f, "shutdown forced by a second signal")?;
                write_cancelled(f, abandoned, never_reached)
            }
            SupervisorError::Signal(error) => write!(f, "could not listen for signals: {error}"),
            SupervisorError::Probe { address, error } => {
                write!(
                    f,
                    "could not serve the probe endpoint on {address}: {error}"
                )
            }
        }
    }
}

impl std::error::Error for SupervisorError {}

/// The tail of an abandoned shutdown's message: which services were cancelled.
fn write_cancelled(
    f: &mut fmt::Formatter<'_>,
    abandoned: &[String],
    never_reached: &[String],
) -> fmt::Result {
    if !abandoned.is_empty() {
        write!(f, "; cancelled while stopping: {}", abandoned.join(", "))?;
    }
    if !never_reached.is_empty() {
        write!(
            f,
            "; cancelled, never asked to stop: {}",
            never_reached.join(", ")
        )?;
    }
    Ok(())
}

impl SupervisorError {
    /// The service this error is about, if it is about one: the failing service of
    /// `Start`, `Failed`, `Restarted`, `Stop` and `Escalated`; `None` for the errors of the
    /// whole run (an abandoned shutdown names several, see [`abandoned`](Self::abandoned)).
    pub fn service(&self) -> Option<&str> {
        match self {
            SupervisorError::Start(error)
            | SupervisorError::Failed(error)
            | SupervisorError::Restarted(error)
            | SupervisorError::Stop(error) => Some(error.service()),
            SupervisorError::Escalated { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The service's own error behind this one, if there is one (for `Escalated`, its
    /// last error, when it failed rather than exited).
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            SupervisorError::Start(error)
            | SupervisorError::Failed(error)
            | SupervisorError::Restarted(error)
            | SupervisorError::Stop(error) => Some(error),
            SupervisorError::Escalated { last_error, .. } => last_error.as_ref(),
            _ => None,
        }
    }

    /// The services an abandoned shutdown (`ShutdownTimeout`, `Forced`) cancelled while
    /// they were stopping, in stop order; empty for every other error.
    pub fn abandoned(&self) -> &[String] {
        match self {
            SupervisorError::ShutdownTimeout { abandoned, .. }
            | SupervisorError::Forced { abandoned, .. } => abandoned,
            _ => &[],
        }
    }

    /// The services an abandoned shutdown cancelled before it asked them to stop, in
    /// stop order; empty for every other error.
    pub fn never_reached(&self) -> &[String] {
        match self {
            SupervisorError::ShutdownTimeout { never_reached, .. }
            | SupervisorError::Forced { never_reached, .. } => never_reached,
            _ => &[],
        }
    }

    /// Whether this error concerns the service `name`: it is about it, or a shutdown
    /// cancelled it.
    fn concerns(&self, name: &str) -> bool {
        self.service() == Some(name)
            || self.abandoned().iter().any(|s| s == name)
            || self.never_reached().iter().any(|s| s == name)
    }
}

/// What a supervisor run ended with: every error, in order, and the exit code.
///
/// `main` can return it: it prints the errors to stderr and exits with
/// [`exit_code`](Self::exit_code).
#[derive(Debug, Default)]
#[must_use = "the report says whether every service stopped cleanly"]
pub struct Report {
    pub(super) errors: Vec<SupervisorError>,
}

impl Report {
    pub(super) fn single(error: SupervisorError) -> Self {
        Report {
            errors: vec![error],
        }
    }

    /// Every error of the run, in the order they happened, including failures that a
    /// restart recovered from ([`SupervisorError::Restarted`]).
    pub fn errors(&self) -> &[SupervisorError] {
        &self.errors
    }

    /// The errors that concern the service `name`, in the order they happened: those
    /// about it ([`SupervisorError::service`]) and the abandoned shutdown that names it.
    pub fn errors_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SupervisorError> {
        self.errors.iter().filter(move |error| error.concerns(name))
    }

    /// What went wrong with the service `name`, if anything left the run unsuccessful:
    /// its first error other than a failure a restart healed (a failed start, a failure
    /// while running, its last error before an escalation, a failed stop). `None` if the
    /// service only ever failed and recovered, or never failed.
    pub fn error_of(&self, name: &str) -> Option<&ServiceError> {
        self.errors
            .iter()
            .filter(|error| error.concerns(name))
            .filter(|error| !matches!(error, SupervisorError::Restarted(_)))
            .find_map(SupervisorError::service_error)
    }

    /// Whether every service started (or was never asked to) and stopped cleanly, and no
    /// failure was left unrecovered. Failures healed by a restart do not count.
    pub fn is_success(&self) -> bool {
        self.code() == 0
    }

    /// The numeric exit code: 0 on success, [`EXIT_FORCED`] after a second signal,
    /// [`EXIT_SHUTDOWN_TIMEOUT`] when the budget ran out, [`EXIT_CONFIG`] for an invalid
    /// supervisor, 1 for any other error.
    pub fn code(&self) -> u8 {
        let has = |f: fn(&SupervisorError) -> bool| self.errors.iter().any(f);
        if self
            .errors
            .iter()
            .all(|e| matches!(e, SupervisorError::Restarted(_)))
        {
            0
        } else if has(|e| matches!(e, SupervisorError::Forced { .. })) {
            EXIT_FORCED
        } else if has(|e| matches!(e, SupervisorError::ShutdownTimeout { .. })) {
            EXIT_SHUTDOWN_TIMEOUT
        } else if has(|e| matches!(e, SupervisorError::Config(_))) {
            EXIT_CONFIG
        } else {
            1
        }
    }

    /// The process exit code; see [`code`](Self::code).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<Report> for ExitCode {
    fn from(report: Report) -> Self {
        report.exit_code()
    }
}

impl Termination for Report {
    fn report(self) -> ExitCode {
        for error in &self.errors {
            match error {
                SupervisorError::Restarted(_) => eprintln!("warning: {error}"),
                _ => eprintln!("error: {error}"),
            }
        }
        self.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Report, SupervisorError};
    use crate::ServiceError;

    fn failure(service: &str) -> ServiceError {
        ServiceError::Abandoned {
            service: Arc::from(service),
            operation: "start",
        }
    }

    #[test]
    fn errors_are_read_per_service() {
        let report = Report {
            errors: vec![
                SupervisorError::Restarted(failure("feed")),
                SupervisorError::Start(failure("risk")),
                SupervisorError::Escalated {
                    service: Arc::from("feed"),
                    restarts: 3,
                    within: Duration::from_secs(60),
                    last_error: Some(failure("feed")),
                },
                SupervisorError::ShutdownTimeout {
                    budget: Duration::from_secs(2),
                    abandoned: vec!["gateway".to_owned()],
                    never_reached: vec!["risk".to_owned()],
                },
                SupervisorError::Restarted(failure("audit")),
            ],
        };
        assert_eq!(report.errors()[1].service(), Some("risk"));
        assert_eq!(report.errors()[3].service(), None);
        assert_eq!(report.errors()[3].abandoned(), ["gateway"]);
        assert_eq!(report.errors()[3].never_reached(), ["risk"]);
        assert_eq!(report.errors_of("risk").count(), 2);
        assert_eq!(report.errors_of("gateway").count(), 1);
        assert_eq!(report.errors_of("feed").count(), 2);
        assert_eq!(report.errors_of("nobody").count(), 0);
        // The healed restart is skipped: the escalation's last error is feed's error.
        assert!(matches!(
            report.errors_of("feed").nth(1),
            Some(SupervisorError::Escalated { .. })
        ));
        assert_eq!(
            report.error_of("feed").map(ServiceError::service),
            Some("feed")
        );
        assert_eq!(
            report.error_of("risk").map(ToString::to_string),
            Some(failure("risk").to_string())
        );
        // Only a healed failure, or an abandonment without an error of its own: none.
        assert!(report.error_of("audit").is_none());
        assert!(report.error_of("gateway").is_none());
    }
}
