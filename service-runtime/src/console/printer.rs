//! The console's output and memory: the writer, the clock every line is stamped with,
//! the colours, and what the console remembers of each service between events.
//!
//! One lock guards all of it, so that lines from the services' tasks, the supervisor's
//! and the shutdown's ticker never interleave, and what is remembered changes with what
//! is printed. The lock is held to format and write one event's lines and never across
//! an `.await`; nothing under it emits a tracing event or takes a lock of the runtime
//! (events arrive under a service's control lock, never the reverse).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::summary::Summary;
use crate::status::ServiceStatus;

/// Where the lines go.
pub(super) enum Target {
    Stderr,
    Stdout,
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Stderr => "stderr",
            Target::Stdout => "stdout",
            Target::Writer(_) => "writer",
        })
    }
}

/// The output and the memory of one console reporter, shared by its layer and its
/// shutdown ticker.
pub(super) struct Printer {
    state: Mutex<State>,
}

/// What the lock guards.
pub(super) struct State {
    target: Target,
    color: bool,
    /// When the console was made: lines are stamped with the time since.
    clock: Instant,
    /// Every service an event named, by name.
    services: HashMap<Arc<str>, ServiceMemory>,
    /// Why the shutdown was requested, once it was (the header names it).
    pub(super) shutdown_reason: Option<String>,
    /// A drain was announced: the header of the stops that follow says the drain is over
    /// rather than repeat the cause.
    pub(super) drained: bool,
    /// The shutdown in progress, between its header and its end.
    pub(super) shutdown: Option<ShutdownProgress>,
    /// The summary of the run that is ending, handed over by its report.
    pub(super) summary: Option<Summary>,
}

/// What the console remembers of one service.
#[derive(Default)]
pub(super) struct ServiceMemory {
    /// Its status after the last transition seen, and since when.
    pub(super) status: Option<(ServiceStatus, Instant)>,
    /// The restarts decided for it (its own and those with a dependency).
    pub(super) restarts: u64,
    /// The number of the restart its next start is, once one is decided.
    pub(super) restart_due: Option<u64>,
    /// The error texts shown for its current operation (a start, a run, a stop), so that
    /// the events that carry the same failure again show it once.
    pub(super) shown: Vec<String>,
}

/// At most this many error texts are remembered per service: a stop whose hooks all fail
/// shows more, but never a runaway list.
const SHOWN_LIMIT: usize = 32;

impl ServiceMemory {
    /// Whether `error` was shown already: itself, or as the combination of every error
    /// shown (the `Display` of a stop's several failures).
    pub(super) fn has_shown(&self, service: &str, error: &str) -> bool {
        if self.shown.iter().any(|shown| shown == error) {
            return true;
        }
        if self.shown.len() < 2 {
            return false;
        }
        let mut combined = format!("service `{service}`: {} errors: ", self.shown.len());
        for (i, shown) in self.shown.iter().enumerate() {
            if i > 0 {
                combined.push_str("; ");
            }
            let _ = write!(combined, "[{}] {shown}", i + 1);
        }
        combined == error
    }

    /// Remembers that `error` is shown.
    pub(super) fn show(&mut self, error: &str) {
        if self.shown.len() < SHOWN_LIMIT {
            self.shown.push(error.to_owned());
        }
    }
}

/// A shutdown between its header and its end.
pub(super) struct ShutdownProgress {
    /// Ends the ticker of its "still waiting" lines.
    pub(super) ticker: Option<CancellationToken>,
    pub(super) began: Instant,
}

impl ShutdownProgress {
    /// Ends the "still waiting" lines; returns how long the shutdown took.
    pub(super) fn end(self) -> Duration {
        if let Some(ticker) = self.ticker {
            ticker.cancel();
        }
        self.began.elapsed()
    }
}

impl Printer {
    pub(super) fn new(target: Target, color: bool) -> Arc<Printer> {
        Arc::new(Printer {
            state: Mutex::new(State {
                target,
                color,
                clock: Instant::now(),
                services: HashMap::new(),
                shutdown_reason: None,
                drained: false,
                shutdown: None,
                summary: None,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// What the console remembers of `service`, made at the runtime's first event about it.
    pub(super) fn memory(&mut self, service: &str) -> &mut ServiceMemory {
        if !self.services.contains_key(service) {
            self.services
                .insert(Arc::from(service), ServiceMemory::default());
        }
        self.services.get_mut(service).expect("inserted above")
    }

    /// What the console remembers of `service`, if an event of the runtime named it: the
    /// program's own events never add to the memory (their `service` fields could name
    /// anything).
    pub(super) fn known(&mut self, service: &str) -> Option<&mut ServiceMemory> {
        self.services.get_mut(service)
    }

    /// What the console remembers of every service.
    pub(super) fn memories(&mut self) -> impl Iterator<Item = &mut ServiceMemory> {
        self.services.values_mut()
    }

    /// The services stopping now, the longest first, with how long they have been.
    pub(super) fn stopping(&self, now: Instant) -> Vec<(Arc<str>, Duration)> {
        let mut stopping: Vec<(Arc<str>, Duration)> = self
            .services
            .iter()
            .filter_map(|(name, seen)| match seen.status {
                Some((ServiceStatus::Stopping, since)) => Some((name.clone(), now - since)),
                _ => None,
            })
            .collect();
        stopping.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        stopping
    }

    /// Whether the lines go to the process's stderr.
    pub(super) fn on_stderr(&self) -> bool {
        matches!(self.target, Target::Stderr)
    }

    /// A line stamped with the time since the console was made.
    pub(super) fn line(&self) -> Line {
        let mut line = Line {
            text: String::new(),
            color: self.color,
        };
        let elapsed = self.clock.elapsed().as_secs_f64();
        line.paint(Paint::Dim, &format!("[{elapsed:>8.3}s]"));
        line.text.push(' ');
        line
    }

    /// Writes `line` whole. A writer that fails (a closed pipe) loses the line: the
    /// program goes on.
    pub(super) fn print(&mut self, line: Line) {
        let mut text = line.text;
        text.push('\n');
        let _ = match &mut self.target {
            Target::Stderr => std::io::stderr().write_all(text.as_bytes()),
            Target::Stdout => std::io::stdout().write_all(text.as_bytes()),
            Target::Writer(writer) => writer
                .write_all(text.as_bytes())
                .and_then(|()| writer.flush()),
        };
    }
}

/// How a piece of a line is shown in colour.
#[derive(Clone, Copy)]
pub(super) enum Paint {
    Plain,
    Dim,
    Bold,
    Green,
    Yellow,
    Red,
}

impl Paint {
    /// The ANSI SGR parameters of this paint.
    fn code(self) -> Option<&'static str> {
        match self {
            Paint::Plain => None,
            Paint::Dim => Some("2"),
            Paint::Bold => Some("1"),
            Paint::Green => Some("32"),
            Paint::Yellow => Some("33"),
            Paint::Red => Some("31"),
        }
    }

    /// The paint of an event's level: errors red, warnings yellow, debugging dim.
    pub(super) fn of_level(level: tracing::Level) -> Paint {
        match level {
            tracing::Level::ERROR => Paint::Red,
            tracing::Level::WARN => Paint::Yellow,
            tracing::Level::INFO => Paint::Plain,
            _ => Paint::Dim,
        }
    }

    /// The paint of a status: where a service ended up, at a glance.
    pub(super) fn of(status: Option<ServiceStatus>) -> Paint {
        match status {
            Some(ServiceStatus::Running) => Paint::Green,
            Some(ServiceStatus::Error) => Paint::Red,
            Some(ServiceStatus::Starting | ServiceStatus::Stopping) => Paint::Yellow,
            _ => Paint::Plain,
        }
    }
}

/// One line being made.
pub(super) struct Line {
    text: String,
    color: bool,
}

impl Line {
    /// Appends `text` in `paint` (plain without colours).
    pub(super) fn paint(&mut self, paint: Paint, text: &str) -> &mut Line {
        match paint.code().filter(|_| self.color) {
            Some(code) => {
                let _ = write!(self.text, "\x1b[{code}m{text}\x1b[0m");
            }
            None => self.text.push_str(text),
        }
        self
    }

    /// Appends `text` as it is.
    pub(super) fn push(&mut self, text: &str) -> &mut Line {
        self.text.push_str(text);
        self
    }

    /// Appends the service column: the name, padded so that what follows lines up.
    pub(super) fn service(&mut self, name: &str) -> &mut Line {
        self.paint(Paint::Bold, name);
        let width = name.chars().count();
        self.text.extend(std::iter::repeat_n(
            ' ',
            15usize.saturating_sub(width).max(1),
        ));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{Paint, Printer, ServiceMemory, Target};

    #[test]
    fn a_stop_s_combined_failures_count_as_shown_once_each_was() {
        let mut seen = ServiceMemory::default();
        let first = "service `db`: cleanup hook `flush` failed: disk full";
        let second = "service `db`: cleanup hook `close` failed: broken pipe";
        seen.show(first);
        assert!(seen.has_shown("db", first));
        assert!(!seen.has_shown("db", second));
        seen.show(second);
        let combined = format!("service `db`: 2 errors: [1] {first}; [2] {second}");
        assert!(seen.has_shown("db", &combined));
        let other = format!("service `db`: 2 errors: [1] {first}; [2] something else");
        assert!(!seen.has_shown("db", &other));
    }

    #[test]
    fn colours_only_when_asked_for() {
        for color in [false, true] {
            let printer = Printer::new(Target::Writer(Box::new(std::io::sink())), color);
            let state = printer.lock();
            let mut line = state.line();
            line.service("feed").paint(Paint::Green, "running");
            assert_eq!(line.text.contains('\x1b'), color, "{:?}", line.text);
            assert!(line.text.contains("feed"), "{:?}", line.text);
        }
    }
}
