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
    /// The shutdown budget ran out; these services were still stopping.
    ShutdownTimeout {
        /// The budget.
        budget: Duration,
        /// The services abandoned, in stop order.
        abandoned: Vec<String>,
    },
    /// A second signal forced the exit; these services were still stopping.
    Forced {
        /// The services abandoned, in stop order.
        abandoned: Vec<String>,
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
            SupervisorError::ShutdownTimeout { budget, abandoned } => write!(
                f,
                "shutdown budget of {budget:?} ran out; abandoned: {}",
                abandoned.join(", ")
            ),
            SupervisorError::Forced { abandoned } => {
                write!(
                    f,
                    "shutdown forced by a second signal; abandoned: {}",
                    abandoned.join(", ")
                )
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
