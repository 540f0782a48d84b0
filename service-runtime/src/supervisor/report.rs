//! [`Report`]: what a supervisor run ended with, its [`SupervisorError`]s in the order
//! they happened, the [`RestartRecord`] of each service a restart healed, and the exit
//! code they make.

use std::fmt;
use std::process::{ExitCode, Termination};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ServiceError;
use crate::managed::ComponentIncident;

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
    /// A service failed while running and was restarted.
    ///
    /// No longer in a report's [`errors`](Report::errors): a healed failure is counted in
    /// the service's [`RestartRecord`] ([`Report::restarts`]), in bounded space however
    /// often it recurs.
    #[deprecated(
        since = "0.1.0",
        note = "healed failures are counted in `Report::restarts()`, not listed in `Report::errors()`"
    )]
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
    #[allow(deprecated)] // `Restarted` is still displayed for whoever makes one
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
    /// `Start`, `Failed`, `Stop` and `Escalated`; `None` for the errors of the whole run
    /// (an abandoned shutdown names several, see [`abandoned`](Self::abandoned)).
    #[allow(deprecated)] // `Restarted` is still answered for whoever makes one
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
    #[allow(deprecated)] // `Restarted` is still answered for whoever makes one
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

/// What a supervisor run ended with: every error, in order, the failures restarts
/// healed (one [`RestartRecord`] per service), and the exit code.
///
/// `main` can return it: it prints one line per healed service and one per error to
/// stderr (unless the console reporter printed them there already), and exits with
/// [`exit_code`](Self::exit_code).
#[derive(Debug, Default)]
#[must_use = "the report says whether every service stopped cleanly"]
pub struct Report {
    pub(super) errors: Vec<SupervisorError>,
    pub(super) restarts: Vec<RestartRecord>,
}

/// The failures of one service that the supervisor answered with a restart: how many,
/// when the first and the last came, and the last one's cause.
///
/// One per service however long the run and however often it fails, so a service that
/// fails every few seconds for months keeps the report's size fixed. A failure is counted
/// when its restart is decided (a shutdown during the backoff leaves it counted, not
/// carried out). A `permanent` service's clean exit is no failure, and the failure that
/// escalates is [`SupervisorError::Escalated`]'s, not counted here.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RestartRecord {
    /// The service that failed and was restarted.
    pub service: Arc<str>,
    /// How many of its failures were answered with a restart.
    pub count: u64,
    /// When the first of them was.
    pub first: Instant,
    /// When the last of them was.
    pub last: Instant,
    /// The last one's cause.
    pub last_cause: ServiceError,
}

impl RestartRecord {
    fn new(error: ServiceError, at: Instant) -> Self {
        RestartRecord {
            service: Arc::from(error.service()),
            count: 1,
            first: at,
            last: at,
            last_cause: error,
        }
    }

    fn add(&mut self, error: ServiceError, at: Instant) {
        self.count += 1;
        self.last = at;
        self.last_cause = error;
    }
}

impl fmt::Display for RestartRecord {
    /// `strategy: restarted 811 times, last: <cause>`, the line a returned `Report` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let times = if self.count == 1 { "time" } else { "times" };
        write!(
            f,
            "{}: restarted {} {times}, last: {}",
            self.service, self.count, self.last_cause
        )
    }
}

impl Report {
    /// Counts what `parent` answered its optional components' failures with: those a
    /// restart healed as restart records (under the component's name), one it was left
    /// in as a failure of the parent's component.
    pub(super) fn count_components(
        &mut self,
        parent: &Arc<str>,
        incidents: Vec<ComponentIncident>,
    ) {
        for incident in incidents {
            if incident.restarts > 0 {
                self.restarts.push(RestartRecord {
                    service: Arc::from(incident.last_cause.service()),
                    count: incident.restarts,
                    first: incident.first,
                    last: incident.last,
                    last_cause: incident.last_cause.clone(),
                });
            }
            if incident.given_up {
                self.errors
                    .push(SupervisorError::Failed(ServiceError::Component {
                        service: parent.clone(),
                        component: incident.field,
                        source: Box::new(incident.last_cause),
                    }));
            }
        }
    }

    pub(super) fn single(error: SupervisorError) -> Self {
        Report {
            errors: vec![error],
            restarts: Vec::new(),
        }
    }

    /// Counts a failure of `error`'s service that a restart answers, in that service's
    /// record (made at its first failure); `record` is where the caller keeps the
    /// record's index for the service.
    pub(super) fn count_restart(
        &mut self,
        record: &mut Option<usize>,
        error: ServiceError,
        at: Instant,
    ) {
        match *record {
            Some(index) => self.restarts[index].add(error, at),
            None => {
                *record = Some(self.restarts.len());
                self.restarts.push(RestartRecord::new(error, at));
            }
        }
    }

    /// Every error of the run, in the order they happened. Failures a restart healed are
    /// not among them: see [`restarts`](Self::restarts).
    pub fn errors(&self) -> &[SupervisorError] {
        &self.errors
    }

    /// The failures restarts healed: one record per service that had any, in the order of
    /// their first failure.
    pub fn restarts(&self) -> &[RestartRecord] {
        &self.restarts
    }

    /// The record of the failures of the service `name` that restarts healed, if it had
    /// any.
    pub fn restarts_of(&self, name: &str) -> Option<&RestartRecord> {
        self.restarts.iter().find(|record| &*record.service == name)
    }

    /// The errors that concern the service `name`, in the order they happened: those
    /// about it ([`SupervisorError::service`]) and the abandoned shutdown that names it.
    pub fn errors_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SupervisorError> {
        self.errors.iter().filter(move |error| error.concerns(name))
    }

    /// What went wrong with the service `name`, if anything left the run unsuccessful:
    /// its first error (a failed start, a failure while running, its last error before an
    /// escalation, a failed stop). `None` if the service only ever failed and recovered
    /// (see [`restarts_of`](Self::restarts_of)), or never failed.
    pub fn error_of(&self, name: &str) -> Option<&ServiceError> {
        self.errors
            .iter()
            .filter(|error| error.concerns(name))
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
        if self.errors.is_empty() {
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

    /// Logs the end of the run (`supervisor finished`, with the exit code and the counts
    /// of errors and of services restarted): `info` after a clean run, `warn` when
    /// restarts healed failures, `error` otherwise. A console reporter prints the whole
    /// summary from it.
    pub(super) fn logged(self) -> Self {
        let (code, errors, restarted) = (self.code(), self.errors.len(), self.restarts.len());
        let log = || {
            if errors > 0 {
                tracing::error!(code, errors, restarted, "supervisor finished");
            } else if restarted > 0 {
                tracing::warn!(code, errors, restarted, "supervisor finished");
            } else {
                tracing::info!(code, errors, restarted, "supervisor finished");
            }
        };
        #[cfg(feature = "console")]
        crate::console::with_summary(&self, log);
        #[cfg(not(feature = "console"))]
        log();
        self
    }
}

impl From<Report> for ExitCode {
    fn from(report: Report) -> Self {
        report.exit_code()
    }
}

impl Termination for Report {
    /// One `warning:` line per service that restarts healed, then one `error:` line per
    /// error, on stderr; nothing when the console reporter (feature `console`) printed
    /// the run's summary on stderr already.
    fn report(self) -> ExitCode {
        #[cfg(feature = "console")]
        if crate::console::summary_shown_on_stderr() {
            return self.exit_code();
        }
        for record in &self.restarts {
            eprintln!("warning: {record}");
        }
        for error in &self.errors {
            eprintln!("error: {error}");
        }
        self.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

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
        let mut report = Report {
            errors: vec![
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
            ],
            restarts: Vec::new(),
        };
        let mut audit = None;
        report.count_restart(&mut audit, failure("audit"), Instant::now());
        assert_eq!(report.errors()[0].service(), Some("risk"));
        assert_eq!(report.errors()[2].service(), None);
        assert_eq!(report.errors()[2].abandoned(), ["gateway"]);
        assert_eq!(report.errors()[2].never_reached(), ["risk"]);
        assert_eq!(report.errors_of("risk").count(), 2);
        assert_eq!(report.errors_of("gateway").count(), 1);
        assert_eq!(report.errors_of("feed").count(), 1);
        assert_eq!(report.errors_of("nobody").count(), 0);
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
        assert_eq!(report.errors_of("audit").count(), 0);
        assert_eq!(report.restarts_of("audit").map(|r| r.count), Some(1));
        assert!(report.error_of("gateway").is_none());
        assert_eq!(report.code(), super::EXIT_SHUTDOWN_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn healed_failures_are_one_record_per_service() {
        let mut report = Report::default();
        let (mut feed, mut audit) = (None, None);
        let began = Instant::now();
        for round in 0..1_000u64 {
            tokio::time::advance(Duration::from_secs(6)).await;
            report.count_restart(&mut feed, failure("feed"), Instant::now());
            if round % 10 == 0 {
                report.count_restart(&mut audit, failure("audit"), Instant::now());
            }
        }
        assert_eq!(report.restarts().len(), 2);
        assert!(report.errors().is_empty() && report.is_success());
        let feed = report.restarts_of("feed").expect("feed's record");
        assert_eq!(feed.count, 1_000);
        assert_eq!(feed.first - began, Duration::from_secs(6));
        assert_eq!(feed.last - began, Duration::from_secs(6_000));
        assert_eq!(
            feed.to_string(),
            format!("feed: restarted 1000 times, last: {}", failure("feed"))
        );
        let audit = &report.restarts()[1];
        assert_eq!((&*audit.service, audit.count), ("audit", 100));
        assert_eq!(
            report.restarts_of("feed").map(|r| r.service.clone()),
            Some(Arc::from("feed"))
        );
        let mut once = Report::default();
        once.count_restart(&mut None, failure("risk"), Instant::now());
        assert!(
            once.restarts()[0]
                .to_string()
                .starts_with("risk: restarted 1 time, last: ")
        );
    }
}
