//! The line each of the runtime's events becomes; any other event (the program's own, a
//! library's) is printed as its message and fields.
//!
//! The runtime's events are known by their messages, as the runtime emits them; a
//! message that changes falls back to the plain form, which `tests/console.rs` (the
//! whole transcript of runs) shows at once.
//!
//! The runtime often reports one failure twice: the hook's `hook failed` event, then the
//! status change (or the reload's outcome) that carries the same error. The console
//! shows an error text once per service and operation: the later events print what
//! happened without it (see [`ServiceMemory::has_shown`]). A service's operation begins
//! with its transition to `starting`, `running` or `stopping`, and a reload's ends with
//! its outcome.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Level;

use super::fields::{parse_names, short};
use super::layer::Observed;
use super::printer::{Paint, Printer, ServiceMemory, ShutdownProgress, State};
use super::{summary, waiting};
use crate::status::ServiceStatus;

/// Prints the lines of one event.
pub(super) fn print(printer: &Arc<Printer>, event: Observed<'_>) {
    let message = std::mem::take(&mut event.fields.message);
    if !event.ours {
        return other(&mut printer.lock(), &message, event);
    }
    if message == "stopping every service" {
        // Spawned before the lock is taken: the ticker locks the printer as it ticks.
        let ticker = waiting::start(printer);
        return shutdown_began(&mut printer.lock(), event, ticker);
    }
    let state = &mut printer.lock();
    match message.as_str() {
        "status changed" => transition(state, &message, event),
        "hook failed" | "failed" => failure(state, &message, event),
        "restarting after backoff" => restart(state, &message, event),
        "stopping a service on request"
        | "restarting a service on request"
        | "stopped on request"
        | "restarted on request"
        | "adding a service"
        | "added a service" => on_request(state, &message, event),
        "serving /livez /readyz /startupz /health"
        | "serving /livez /readyz /startupz /health /metrics" => {
            let paths = message.trim_start_matches("serving ");
            match event.fields.get("address") {
                Some(address) => plain(state, &format!("probes on http://{address} ({paths})")),
                None => other(state, &message, event),
            }
        }
        "supervisor starting" => {
            let services = event.fields.get("services").unwrap_or("the");
            let text = format!(
                "starting {} in dependency order",
                count(services, "service")
            );
            plain(state, &text);
        }
        "all services running" => plain(state, "all services running"),
        "draining before the stops" => {
            let mut text = "shutting down".to_owned();
            if let Some(cause) = state.shutdown_reason.take().filter(|c| !c.is_empty()) {
                text.push_str(&format!(" ({cause})"));
            }
            state.drained = true;
            text.push_str(": not ready; draining");
            if let Some(drain) = event.fields.duration("drain") {
                text.push_str(&format!(" for {}", short(drain)));
            }
            text.push_str(" before the stops");
            let mut line = state.line();
            line.paint(Paint::Bold, &text);
            state.print(line);
        }
        "every service stopped" => {
            let text = match state.shutdown.take() {
                Some(progress) => format!("every service stopped in {}", short(progress.end())),
                None => "every service stopped".to_owned(),
            };
            plain(state, &text);
        }
        "shutdown abandoned: every service not stopped was cancelled" => abandoned(state, event),
        "supervisor finished" => summary::print(state, event.fields),
        "reloading every running service" => {
            let reason = event.fields.get("reason").unwrap_or("requested");
            plain(
                state,
                &format!("reloading every running service ({reason})"),
            );
        }
        "reload done" | "reload done with failures" => {
            let elapsed = event.fields.duration("elapsed").map(short);
            let mut text = format!("reload done in {}", elapsed.as_deref().unwrap_or("?"));
            if message.ends_with("with failures") {
                // Each failure is on its service's line.
                text.push_str(", with failures");
            }
            let mut line = state.line();
            line.paint(Paint::of_level(event.level), &text);
            state.print(line);
        }
        "reloaded" | "reload failed; the service keeps running" | "service cancelled" => {
            outcome(state, &message, event);
        }
        _ => {
            if let Some(cause) = shutdown_cause(&message, event.fields.get("reason")) {
                // Printed with the header that follows it.
                state.shutdown_reason = Some(cause);
            } else {
                other(state, &message, event);
            }
        }
    }
}

/// A line of the supervisor's own, without a service.
fn plain(state: &mut State, text: &str) {
    let mut line = state.line();
    line.push(text);
    state.print(line);
}

/// `3 services`, `1 service`; `count` as it was recorded.
fn count(count: &str, noun: &str) -> String {
    if count == "1" {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// An error's text without the service's name in front, for a line that names it in its
/// service column.
fn without_service<'a>(service: &str, error: &'a str) -> &'a str {
    error
        .strip_prefix("service `")
        .and_then(|rest| rest.strip_prefix(service))
        .and_then(|rest| rest.strip_prefix("`: "))
        .unwrap_or(error)
}

/// The error of `event` for `service`'s line, unless it was shown already; remembered
/// as shown from now on.
fn new_error(memory: &mut ServiceMemory, service: &str, error: Option<&str>) -> Option<String> {
    let error = error?;
    if memory.has_shown(service, error) {
        return None;
    }
    memory.show(error);
    Some(without_service(service, error).to_owned())
}

fn parse_status(text: &str) -> Option<ServiceStatus> {
    ServiceStatus::ALL
        .into_iter()
        .find(|status| status.as_str() == text)
}

/// `[   1.204s] strategy       starting -> running  (started in 103ms)`.
fn transition(state: &mut State, message: &str, event: Observed<'_>) {
    let fields = &*event.fields;
    let statuses = (
        fields.get("from").and_then(parse_status),
        fields.get("to").and_then(parse_status),
    );
    let (Some(service), (Some(from), Some(to))) = (event.service.clone(), statuses) else {
        return other(state, message, event);
    };
    let memory = state.memory(&service);
    if matches!(
        to,
        ServiceStatus::Starting | ServiceStatus::Running | ServiceStatus::Stopping
    ) {
        memory.shown.clear();
    }
    let note = match (from, to, fields.duration("duration")) {
        (ServiceStatus::Starting, ServiceStatus::Running, Some(took)) => {
            format!("  (started in {})", short(took))
        }
        (ServiceStatus::Stopping, ServiceStatus::Stopped, Some(took)) => {
            format!("  (stopped in {})", short(took))
        }
        (_, ServiceStatus::Starting, _) => memory
            .restart_due
            .take()
            .map(|number| format!("  (restart #{number})"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let error = new_error(memory, &service, fields.get("error"));
    memory.status = Some((to, Instant::now()));
    let mut line = state.line();
    line.service(&service)
        .push(from.as_str())
        .push(" -> ")
        .paint(Paint::of(Some(to)), to.as_str())
        .push(&note);
    if let Some(error) = error {
        line.push("  ").paint(Paint::Red, &error);
    }
    state.print(line);
}

/// `[   6.402s] strategy       run hook `trade` failed: model drifted`.
fn failure(state: &mut State, message: &str, event: Observed<'_>) {
    let (Some(service), Some(error)) = (event.service.clone(), event.fields.get("error")) else {
        return other(state, message, event);
    };
    let memory = state.memory(&service);
    memory.show(error);
    let text = without_service(&service, error).to_owned();
    let mut line = state.line();
    line.service(&service).paint(Paint::Red, &text);
    state.print(line);
}

/// `strategy  stopping on request (with orders)`, then `strategy  stopped on request`:
/// a command of the program's (`SupervisorHandle::stop`, `restart`) and its end;
/// `worker-7  adding (after feed)`, then `worker-7  added in 3ms` (`SupervisorHandle::add`).
fn on_request(state: &mut State, message: &str, event: Observed<'_>) {
    let Some(service) = event.service.clone() else {
        return other(state, message, event);
    };
    let mut text = message.replace(" a service", "");
    for field in ["with", "after"] {
        let names = event.fields.get(field).map(parse_names).unwrap_or_default();
        if !names.is_empty() {
            text.push_str(&format!(" ({field} {})", names.join(", ")));
        }
    }
    if let Some(took) = event.fields.duration("took") {
        text.push_str(&format!(" in {}", short(took)));
    }
    let mut line = state.line();
    line.service(&service).paint(Paint::Bold, &text);
    state.print(line);
}

/// `[   6.402s] strategy       restarting in 250ms (restart #1, with risk, order_gateway)`.
fn restart(state: &mut State, message: &str, event: Observed<'_>) {
    let (Some(service), Some(delay)) = (event.service.clone(), event.fields.duration("delay"))
    else {
        return other(state, message, event);
    };
    let with = event
        .fields
        .get("with")
        .map(parse_names)
        .unwrap_or_default();
    let mut decide = |name: &str| {
        let memory = state.memory(name);
        memory.restarts += 1;
        memory.restart_due = Some(memory.restarts);
        memory.restarts
    };
    let number = decide(&service);
    for member in &with {
        decide(member);
    }
    let mut text = format!("restarting in {} (restart #{number}", short(delay));
    if !with.is_empty() {
        text.push_str(", with ");
        text.push_str(&with.join(", "));
    }
    text.push(')');
    let mut line = state.line();
    line.service(&service).paint(Paint::Yellow, &text);
    state.print(line);
}

/// The end of a service's reload, or its cancellation by an abandoned shutdown.
fn outcome(state: &mut State, message: &str, event: Observed<'_>) {
    let Some(service) = event.service.clone() else {
        return other(state, message, event);
    };
    let elapsed = event.fields.duration("elapsed").map(short);
    let (text, paint) = match message {
        "reloaded" => (
            format!("reloaded in {}", elapsed.as_deref().unwrap_or("?")),
            Paint::Plain,
        ),
        "service cancelled" => ("cancelled".to_owned(), Paint::Red),
        _ => ("reload failed; it keeps running".to_owned(), Paint::Yellow),
    };
    let memory = state.memory(&service);
    let error = new_error(memory, &service, event.fields.get("error"));
    if message != "service cancelled" {
        // The reload is over: its failures are not the next one's.
        memory.shown.clear();
    }
    let mut line = state.line();
    line.service(&service).paint(paint, &text);
    if let Some(error) = error {
        line.push(": ").paint(Paint::Red, &error);
    }
    state.print(line);
}

/// What a `shutdown requested…` message says about why, for the shutdown's header.
fn shutdown_cause(message: &str, reason: Option<&str>) -> Option<String> {
    let during = match message {
        "shutdown requested" => None,
        "shutdown requested through the handle" => Some("SupervisorHandle::shutdown"),
        "shutdown requested during startup" => Some("during startup"),
        "shutdown requested during a restart" => Some("during a restart"),
        "shutdown requested during a reload" => Some("during a reload"),
        _ => return None,
    };
    let cause: Vec<&str> = reason.into_iter().chain(during).collect();
    Some(cause.join(", "))
}

/// `[   8.000s] shutting down (SIGTERM), waiting for 3 services (budget 25s)` (after a
/// drain: `drain over: stopping, waiting for …`); the "still waiting" ticker begins.
fn shutdown_began(
    state: &mut State,
    event: Observed<'_>,
    ticker: Option<tokio_util::sync::CancellationToken>,
) {
    if let Some(previous) = state.shutdown.take() {
        previous.end();
    }
    for memory in state.memories() {
        // A restart in its backoff is never carried out now.
        memory.restart_due = None;
    }
    let mut text = if std::mem::take(&mut state.drained) {
        "drain over: stopping".to_owned()
    } else {
        "shutting down".to_owned()
    };
    if let Some(cause) = state
        .shutdown_reason
        .take()
        .filter(|cause| !cause.is_empty())
    {
        text.push_str(&format!(" ({cause})"));
    }
    let waiting_for = match event.fields.get("services") {
        Some(services) => count(services, "service"),
        None => "every service".to_owned(),
    };
    text.push_str(&format!(", waiting for {waiting_for}"));
    if let Some(budget) = event.fields.duration("budget") {
        text.push_str(&format!(" (budget {})", short(budget)));
    }
    state.shutdown = Some(ShutdownProgress {
        ticker,
        began: Instant::now(),
    });
    let mut line = state.line();
    line.paint(Paint::Bold, &text);
    state.print(line);
}

/// `[  33.000s] shutdown abandoned: the shutdown budget ran out`. The services it
/// cancelled are on their own lines, and in the summary.
fn abandoned(state: &mut State, event: Observed<'_>) {
    if let Some(progress) = state.shutdown.take() {
        progress.end();
    }
    let mut text = "shutdown abandoned".to_owned();
    if let Some(reason) = event.fields.get("reason") {
        text.push_str(": ");
        text.push_str(reason);
    }
    let mut line = state.line();
    line.paint(Paint::Red, &text);
    state.print(line);
}

/// Any other event: its service, its level (but `info`), its message and its fields.
fn other(state: &mut State, message: &str, event: Observed<'_>) {
    // An error already shown on the service's lines is not repeated in its fields.
    let error = event.fields.get("error");
    let memory = match &event.service {
        Some(service) if event.ours => Some(state.memory(service)),
        Some(service) => state.known(service),
        None => None,
    };
    let error = match (memory, &event.service) {
        (Some(memory), Some(service)) => new_error(memory, service, error),
        _ => error.map(str::to_owned),
    };
    let mut line = state.line();
    if let Some(service) = &event.service {
        line.service(service);
    }
    let paint = Paint::of_level(event.level);
    match event.level {
        Level::ERROR => line.paint(paint, "error: "),
        Level::WARN => line.paint(paint, "warning: "),
        Level::DEBUG => line.paint(paint, "debug: "),
        Level::TRACE => line.paint(paint, "trace: "),
        _ => &mut line,
    };
    line.paint(paint, message);
    for (field, value) in event.fields.rest() {
        if field == "error" {
            continue;
        }
        line.push(&format!(" {field}={value}"));
    }
    if let Some(hook) = &event.hook {
        line.push(&format!(" hook={hook}"));
    }
    if let Some(error) = error {
        line.push(" error=").paint(Paint::Red, &error);
    }
    state.print(line);
}
