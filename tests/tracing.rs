//! The runtime's tracing contract: every hook runs in `service{service, version}` ›
//! `hook{kind, hook}`; each transition is one `info` event "status changed" with `from`,
//! `to` and `duration` (the time spent in `from`); each failure is reported at `error`
//! level with the whole cause chain.
//!
//! Each test installs its own capturing subscriber for its thread only
//! (`tracing::subscriber::set_default`): the tests of this binary run on several
//! threads, and the paused-clock runtime of `#[tokio::test]` runs every task of a test
//! on that test's thread. No global subscriber is ever set.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::history;
use service_runtime::ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
use service_runtime::{HealthStatus, Managed, Service, Shutdown, lifecycle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

// ---------------------------------------------------------------------------------------
// A capturing layer.

/// Field values by name, as text: strings as they are, everything else by `Debug`
/// (a `%value` field arrives as a `Debug` that prints its `Display`).
type Fields = BTreeMap<String, String>;

#[derive(Default)]
struct FieldVisitor(Fields);

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A span as an event saw it: its name and its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpanInfo {
    name: &'static str,
    fields: Fields,
}

/// Kept in each span's extensions from `on_new_span` on.
struct SpanFields(Fields);

/// One event with the spans of its scope, from the root.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    message: String,
    fields: Fields,
    scope: Vec<SpanInfo>,
}

impl Captured {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("event {self:?} has no field `{name}`"))
    }

    /// The scope as `name{k=v, ...}` strings, for compact assertions.
    fn scope(&self) -> Vec<String> {
        self.scope
            .iter()
            .map(|span| {
                let fields: Vec<String> = span
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{}{{{}}}", span.name, fields.join(", "))
            })
            .collect()
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    fn with_message(&self, message: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|e| e.message == message)
            .collect()
    }

    fn at(&self, level: Level) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|e| e.level == level)
            .collect()
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        let span = ctx.span(id).expect("a new span is in the registry");
        span.extensions_mut().insert(SpanFields(visitor.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span is in the registry");
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            let mut visitor = FieldVisitor(std::mem::take(fields));
            values.record(&mut visitor);
            *fields = visitor.0;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let mut fields = visitor.0;
        let message = fields.remove("message").unwrap_or_default();
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| SpanInfo {
                        name: span.name(),
                        fields: span
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            message,
            fields,
            scope,
        });
    }
}

/// Installs a capturing subscriber for the current thread until the guard drops.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

// ---------------------------------------------------------------------------------------
// The service under observation.

/// What an init hook does, attempt by attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Ok,
    Err,
    Panic,
}

/// A user error with a cause: the chain is `could not open the books` ›
/// `ledger.db is read-only`.
#[derive(Debug)]
struct BooksError {
    source: std::io::Error,
}

impl fmt::Display for BooksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("could not open the books")
    }
}

impl std::error::Error for BooksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[derive(Service, Default)]
#[service(name = "ledger", version = "1.2.3", stop_timeout = "5s")]
struct Ledger {
    /// The init hook's behaviour per attempt; `Ok` once the list runs out.
    init_modes: Vec<Mode>,
    attempts: usize,
    run_mode: Mode,
}

#[lifecycle]
impl Ledger {
    #[init]
    async fn open_books(&mut self) -> Result<(), BooksError> {
        tracing::info!(attempt = self.attempts, "opening the books");
        let mode = self
            .init_modes
            .get(self.attempts)
            .copied()
            .unwrap_or_default();
        self.attempts += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        match mode {
            Mode::Ok => Ok(()),
            Mode::Err => Err(BooksError {
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "ledger.db is read-only",
                ),
            }),
            Mode::Panic => panic!("the ledger caught fire"),
        }
    }

    #[cleanup]
    async fn close_books(&mut self) -> Result<(), std::io::Error> {
        tracing::info!("closing the books");
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    #[health(name = "balance")]
    async fn balance(&self) -> HealthStatus {
        tracing::info!("checking the balance");
        HealthStatus::Healthy
    }

    #[run]
    async fn post_entries(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        tracing::info!("posting entries");
        tokio::time::sleep(Duration::from_secs(1)).await;
        match self.run_mode {
            Mode::Ok => {}
            Mode::Err => return Err(std::io::Error::other("the journal is corrupt")),
            Mode::Panic => panic!("the pen broke"),
        }
        shutdown.requested().await;
        Ok(())
    }
}

const SERVICE_SPAN: &str = "service{service=ledger, version=1.2.3}";

fn hook_span(kind: &str, hook: &str) -> String {
    format!("hook{{hook={hook}, kind={kind}}}")
}

// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn user_events_inside_every_hook_carry_the_service_and_hook_spans() {
    let (capture, _guard) = capture();
    let ledger = Managed::new(Ledger::default());
    ledger.start().await.unwrap();
    // Lets the run loop log its first line.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(ledger.health().await.status, HealthStatus::Healthy);
    ledger.stop().await.unwrap();

    let scope_of = |message: &str| {
        let events = capture.with_message(message);
        assert_eq!(events.len(), 1, "one `{message}` event: {events:?}");
        assert_eq!(events[0].level, Level::INFO);
        events[0].scope()
    };
    assert_eq!(
        scope_of("opening the books"),
        [SERVICE_SPAN.to_owned(), hook_span("init", "open_books")]
    );
    assert_eq!(
        scope_of("posting entries"),
        [SERVICE_SPAN.to_owned(), hook_span("run", "post_entries")]
    );
    assert_eq!(
        scope_of("checking the balance"),
        [SERVICE_SPAN.to_owned(), hook_span("health", "balance")]
    );
    assert_eq!(
        scope_of("closing the books"),
        [SERVICE_SPAN.to_owned(), hook_span("cleanup", "close_books")]
    );
    // The user's own field is kept as written.
    assert_eq!(
        capture.with_message("opening the books")[0].field("attempt"),
        "0"
    );
}

#[tokio::test(start_paused = true)]
async fn each_transition_of_a_clean_start_and_stop_is_one_info_event() {
    let (capture, _guard) = capture();
    let ledger = Managed::new(Ledger::default());
    let mut changes = ledger.subscribe();
    ledger.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ledger.stop().await.unwrap();

    let transitions = history(&mut changes);
    assert_eq!(
        transitions,
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    let events = capture.with_message("status changed");
    assert_eq!(
        events.len(),
        transitions.len(),
        "one event per transition: {events:?}"
    );
    let seen: Vec<(Level, String, String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.scope(), [SERVICE_SPAN], "{e:?}");
            assert_eq!(
                e.fields.keys().map(String::as_str).collect::<Vec<_>>(),
                ["duration", "from", "to"],
                "{e:?}"
            );
            (
                e.level,
                e.field("from").to_owned(),
                e.field("to").to_owned(),
                e.field("duration").to_owned(),
            )
        })
        .collect();
    // `duration` is the time spent in `from`: init sleeps 250 ms, the service runs 5 s,
    // cleanup sleeps 100 ms (paused clock, so exact).
    let expected = [
        ("stopped", "starting", "0ns"),
        ("starting", "running", "250ms"),
        ("running", "stopping", "5s"),
        ("stopping", "stopped", "100ms"),
    ]
    .map(|(from, to, duration)| (Level::INFO, from.into(), to.into(), duration.into()));
    assert_eq!(seen, expected);
    assert!(
        capture.at(Level::ERROR).is_empty() && capture.at(Level::WARN).is_empty(),
        "a clean cycle reports no problem: {:?}",
        capture.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_init_hook_is_reported_at_error_level_with_its_whole_chain() {
    let (capture, _guard) = capture();
    let ledger = Managed::new(Ledger {
        init_modes: vec![Mode::Err],
        ..Ledger::default()
    });
    let error = ledger.start().await.unwrap_err();
    let chain = "could not open the books: ledger.db is read-only";
    assert_eq!(
        error.to_string(),
        format!("service `ledger`: init hook `open_books` failed: {chain}")
    );

    // One failure, one error event: the hook's, in the hook span, naming the service,
    // the hook and the whole chain.
    let errors = capture.at(Level::ERROR);
    let summary: Vec<(&str, Vec<String>)> = errors
        .iter()
        .map(|e| (e.message.as_str(), e.scope()))
        .collect();
    assert_eq!(
        summary,
        [(
            "hook failed",
            vec![SERVICE_SPAN.to_owned(), hook_span("init", "open_books")]
        )]
    );
    let hook_failed = &errors[0];
    assert_eq!(hook_failed.field("error"), error.to_string());
    assert_eq!(hook_failed.field("elapsed"), "250ms");
    assert!(
        hook_failed
            .field("error")
            .contains("could not open the books")
            && hook_failed
                .field("error")
                .contains("ledger.db is read-only"),
        "both messages of the chain: {hook_failed:?}"
    );
    assert_eq!(ledger.status(), Error);

    // Every transition, the one to `error` included, is one info event; that one
    // carries the error too.
    let transitions: Vec<(Level, String, String, String)> = capture
        .with_message("status changed")
        .iter()
        .map(|e| {
            (
                e.level,
                e.field("from").to_owned(),
                e.field("to").to_owned(),
                e.fields.get("error").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            (
                Level::INFO,
                "stopped".into(),
                "starting".into(),
                String::new()
            ),
            (
                Level::INFO,
                "starting".into(),
                "error".into(),
                error.to_string()
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_init_hook_is_an_error_event_and_the_program_goes_on() {
    let (capture, _guard) = capture();
    let ledger = Managed::new(Ledger {
        init_modes: vec![Mode::Panic],
        ..Ledger::default()
    });
    let error = ledger.start().await.unwrap_err();
    assert!(error.is_panic());

    let errors = capture.at(Level::ERROR);
    assert_eq!(errors.len(), 1, "one failure, one error event: {errors:?}");
    assert_eq!(errors[0].message, "hook failed");
    assert_eq!(
        errors[0].scope(),
        [SERVICE_SPAN.to_owned(), hook_span("init", "open_books")]
    );
    assert_eq!(
        errors[0].field("error"),
        "service `ledger`: init hook `open_books` panicked: the ledger caught fire"
    );

    // The panic was contained: the same service starts again (the second attempt
    // succeeds), and its transitions are logged as before.
    capture.clear();
    ledger.start().await.unwrap();
    assert_eq!(ledger.status(), Running);
    ledger.stop().await.unwrap();
    let transitions: Vec<(Level, String, String)> = capture
        .with_message("status changed")
        .iter()
        .map(|e| {
            (
                e.level,
                e.field("from").to_owned(),
                e.field("to").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("error", "starting"),
        ("starting", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
    ]
    .map(|(from, to)| (Level::INFO, from.to_owned(), to.to_owned()));
    assert_eq!(transitions, expected);
    assert!(capture.at(Level::ERROR).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_panicking_run_loop_is_one_error_event_in_the_hook_span() {
    for (mode, cause) in [
        (Mode::Err, "failed: the journal is corrupt"),
        (Mode::Panic, "panicked: the pen broke"),
    ] {
        let (capture, _guard) = capture();
        let ledger = Managed::new(Ledger {
            run_mode: mode,
            ..Ledger::default()
        });
        ledger.start().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ledger.status(), Error);

        let errors = capture.at(Level::ERROR);
        assert_eq!(errors.len(), 1, "{mode:?}: {errors:?}");
        let event = &errors[0];
        assert_eq!(event.message, "hook failed");
        assert_eq!(
            event.scope(),
            [SERVICE_SPAN.to_owned(), hook_span("run", "post_entries")],
            "{mode:?}"
        );
        let expected = format!("service `ledger`: run hook `post_entries` {cause}");
        assert_eq!(event.field("error"), expected);
        let transition = capture
            .with_message("status changed")
            .into_iter()
            .find(|e| e.field("to") == "error")
            .expect("the transition to error");
        assert_eq!(transition.level, Level::INFO);
        assert_eq!(transition.field("from"), "running");
        assert_eq!(transition.field("duration"), "1s");
        assert_eq!(transition.field("error"), expected);

        // The owed cleanup runs on stop, and the program goes on.
        ledger.stop().await.unwrap();
        assert_eq!(ledger.status(), Stopped);
        assert_eq!(capture.with_message("closing the books").len(), 1);
    }
}

/// An init hook that blocks its thread past its start timeout.
#[derive(Service, Default)]
#[service(name = "blocker", start_timeout = "20ms")]
struct Blocker;

#[lifecycle]
impl Blocker {
    #[init]
    async fn load(&mut self) -> Result<(), std::io::Error> {
        // The user's bug: synchronous work in an async hook.
        std::thread::sleep(Duration::from_millis(60));
        Ok(())
    }
}

#[test]
fn a_hook_that_blocks_past_its_timeout_is_warned_about_by_name() {
    let (capture, _guard) = capture();
    // Real time: a paused clock does not move while a thread blocks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let blocker = Managed::new(Blocker);
    runtime
        .block_on(blocker.start())
        .expect("the timeout cannot fire on a blocked thread: the start stands");
    let warnings = capture.at(Level::WARN);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    assert!(
        warning
            .message
            .starts_with("hook overran its timeout without yielding")
            && warning.message.contains("spawn_blocking"),
        "{warning:?}"
    );
    assert_eq!(warning.field("timeout"), "20ms");
    assert_eq!(
        warning.scope(),
        [
            "service{service=blocker, version=0.1.0}".to_owned(),
            hook_span("init", "load")
        ]
    );
    runtime.block_on(blocker.stop()).unwrap();
}
