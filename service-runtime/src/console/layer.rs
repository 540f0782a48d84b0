//! [`ConsoleLayer`]: the `tracing_subscriber::Layer` that turns events into the console's
//! lines. It finds the service an event belongs to (its `service` field, or the runtime's
//! `service` span around it) and hands the event to [`events`](super::events).

use std::sync::Arc;

use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::fields::Fields;
use super::printer::Printer;

/// The console reporter as a [`Layer`]: one line per status change (with the time it
/// took), per restart decided, per hook failure, and for the shutdown's progress and the
/// run's summary; any other event as its message and fields. Made by
/// [`Console::layer`](super::Console::layer); [`init`](super::init) installs one.
///
/// It filters nothing itself: give it a filter (`with_filter`) when composed beside other
/// layers.
pub struct ConsoleLayer {
    pub(super) printer: Arc<Printer>,
}

impl std::fmt::Debug for ConsoleLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleLayer").finish_non_exhaustive()
    }
}

/// The name of the service a runtime span is about, kept in the span's extensions.
struct ServiceName(Arc<str>);

/// The hook a runtime `hook` span runs, kept in the span's extensions.
struct HookName(String);

/// One event as [`events`](super::events) reads it.
pub(super) struct Observed<'a> {
    pub(super) level: Level,
    /// The event comes from the runtime (its messages have lines of their own).
    pub(super) ours: bool,
    /// The service it belongs to, if any.
    pub(super) service: Option<Arc<str>>,
    /// The hook it happened in, for the runtime's own events.
    pub(super) hook: Option<String>,
    pub(super) fields: &'a mut Fields,
}

impl ConsoleLayer {
    pub(super) fn new(printer: Arc<Printer>) -> Self {
        ConsoleLayer { printer }
    }
}

fn is_ours(target: &str) -> bool {
    target == "service_runtime" || target.starts_with("service_runtime::")
}

impl<S> Layer<S> for ConsoleLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if !is_ours(metadata.target()) || !matches!(metadata.name(), "service" | "hook") {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut extensions = span.extensions_mut();
        if let Some(service) = fields.take("service") {
            extensions.insert(ServiceName(Arc::from(service)));
        }
        if metadata.name() == "hook" {
            if let Some(hook) = fields.take("hook") {
                extensions.insert(HookName(hook));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ours = is_ours(metadata.target());
        let mut service = fields.take("service").map(Arc::from);
        let mut hook = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let extensions = span.extensions();
                if hook.is_none() {
                    hook = extensions.get::<HookName>().map(|hook| hook.0.clone());
                }
                if service.is_none() {
                    service = extensions.get::<ServiceName>().map(|name| name.0.clone());
                }
                if service.is_some() {
                    break;
                }
            }
        }
        let observed = Observed {
            level: *metadata.level(),
            ours,
            service,
            hook: hook.filter(|_| ours),
            fields: &mut fields,
        };
        super::events::print(&self.printer, observed);
    }
}
