//! The shutdown's "still waiting for" lines: once a second while a shutdown is in
//! progress, the services still stopping and how long each has been.
//!
//! The ticker is a task on the runtime that emitted the shutdown's header, timed by
//! tokio's clock (so a paused clock in tests moves it); the header's printer ends it
//! when the shutdown ends, abandoned or not. Without a runtime there is no ticker.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::printer::{Paint, Printer, State};

/// How often the console says what the shutdown is waiting for.
const PERIOD: Duration = Duration::from_secs(1);

/// Starts the ticker of a shutdown that begins now; its token ends it.
pub(super) fn start(printer: &Arc<Printer>) -> Option<CancellationToken> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let token = CancellationToken::new();
    let ended = token.clone();
    // Weak: a console dropped with its subscriber takes its ticker with it.
    let printer = Arc::downgrade(printer);
    runtime.spawn(async move {
        let mut next = Instant::now();
        loop {
            next += PERIOD;
            tokio::select! {
                () = ended.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let Some(printer) = printer.upgrade() else {
                return;
            };
            tick(&mut printer.lock());
        }
    });
    Some(token)
}

/// `[   9.000s] still waiting for risk (stopping for 1.0s)`.
fn tick(state: &mut State) {
    if state.shutdown.is_none() {
        // It ended as this tick came due.
        return;
    }
    let stopping = state.stopping(Instant::now());
    if stopping.is_empty() {
        return;
    }
    let list: Vec<String> = stopping
        .iter()
        .map(|(service, time)| format!("{service} (stopping for {:.1}s)", time.as_secs_f64()))
        .collect();
    let mut line = state.line();
    line.paint(
        Paint::Yellow,
        &format!("still waiting for {}", list.join(", ")),
    );
    state.print(line);
}
