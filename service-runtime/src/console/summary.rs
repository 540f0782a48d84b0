//! The run's summary: the services restarted, the errors, and the exit code, printed as
//! the supervisor's run ends.
//!
//! The event that ends a run (`supervisor finished`) carries the counts only; the
//! report hands the console its whole content just before, through the current
//! dispatcher (as `tracing-error` finds its layer), so that the lines are printed when,
//! and only when, the event passes the console's filter. Once the summary is on stderr,
//! `main` returning the report does not print its lines again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fields::Fields;
use super::layer::ConsoleLayer;
use super::printer::{Paint, State};
use crate::supervisor::Report;

/// Set when a console printed a run's summary on the process's stderr.
static SHOWN_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// What the summary says of a report.
pub(super) struct Summary {
    restarts: Vec<(Arc<str>, u64)>,
    errors: Vec<String>,
    code: u8,
}

impl Summary {
    fn of(report: &Report) -> Self {
        Summary {
            restarts: report
                .restarts()
                .iter()
                .map(|record| (record.service.clone(), record.count))
                .collect(),
            errors: report.errors().iter().map(ToString::to_string).collect(),
            code: report.code(),
        }
    }
}

/// Runs `log` (which emits the event that ends the run) with `report`'s summary handed
/// to the console of the current dispatcher, if it has one.
pub(crate) fn with_summary(report: &Report, log: impl FnOnce()) {
    let printer = tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .downcast_ref::<ConsoleLayer>()
            .map(|layer| layer.printer.clone())
    });
    if let Some(printer) = &printer {
        printer.lock().summary = Some(Summary::of(report));
    }
    log();
    if let Some(printer) = printer {
        // Filtered out: not printed, and not kept for another run's event.
        printer.lock().summary = None;
    }
}

/// Whether a console printed a run's summary on stderr since the last call.
pub(crate) fn summary_shown_on_stderr() -> bool {
    SHOWN_ON_STDERR.swap(false, Ordering::Relaxed)
}

/// `[  10.004s] strategy       restarted 2 times`, one `error:` line per error, then
/// `[  10.004s] every service stopped cleanly; exit code 0`.
pub(super) fn print(state: &mut State, fields: &Fields) {
    let Some(summary) = state.summary.take() else {
        // Another dispatcher's report, or one made without a console: the counts.
        let code = fields.get("code").and_then(|code| code.parse().ok());
        let errors = fields.get("errors").unwrap_or("some");
        return headline(state, code.unwrap_or(1), errors);
    };
    for (service, count) in &summary.restarts {
        let times = if *count == 1 { "time" } else { "times" };
        let mut line = state.line();
        line.service(service)
            .paint(Paint::Yellow, &format!("restarted {count} {times}"));
        state.print(line);
    }
    for error in &summary.errors {
        let mut line = state.line();
        line.paint(Paint::Red, &format!("error: {error}"));
        state.print(line);
    }
    headline(state, summary.code, &summary.errors.len().to_string());
    if state.on_stderr() {
        SHOWN_ON_STDERR.store(true, Ordering::Relaxed);
    }
}

fn headline(state: &mut State, code: u8, errors: &str) {
    let (text, paint) = if code == 0 {
        (
            "every service stopped cleanly; exit code 0".to_owned(),
            Paint::Green,
        )
    } else {
        let errors = if errors == "1" {
            "1 error".to_owned()
        } else {
            format!("{errors} errors")
        };
        (
            format!("supervisor finished with {errors}; exit code {code}"),
            Paint::Red,
        )
    };
    let mut line = state.line();
    line.paint(paint, &text);
    state.print(line);
}
