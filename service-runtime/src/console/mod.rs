//! The console reporter (feature `console`): what a person running the program reads, made
//! from the runtime's own tracing events.
//!
//! [`init`] is the one call: it installs [`ConsoleLayer`] as the global subscriber, on
//! stderr, filtered by `RUST_LOG` (`info` when it is unset). [`Console`] chooses another
//! writer or forces colours, and gives the layer to compose with the program's own
//! subscriber instead (`tracing_subscriber::registry().with(..)`).
//!
//! ```text
//! [   0.000s] starting 3 services in dependency order
//! [   0.301s] feed           starting -> running  (started in 300ms)
//! [   6.402s] strategy       run hook `trade` failed: model drifted
//! [   6.402s] strategy       running -> error
//! [   6.402s] strategy       restarting in 250ms (restart #1, with risk)
//! [   8.000s] shutting down (SIGTERM), waiting for 3 services (budget 25s)
//! [   9.000s] still waiting for risk (stopping for 1.0s)
//! [  10.004s] every service stopped cleanly; exit code 0
//! ```
//!
//! Here: the builder and the installation. The rest lives in
//!
//! - `layer`: the `Layer`, which finds the service each event belongs to;
//! - `events`: the line each of the runtime's events becomes (any other event is printed
//!   as its message and fields);
//! - `printer`: the writer, the clock, the colours, and what the console remembers of
//!   each service (its status, its restarts, the errors already shown);
//! - `fields`: an event's fields as text, and durations read back from their `Debug` form;
//! - `waiting`: the shutdown's "still waiting for" lines, once a second;
//! - `summary`: the run's summary, handed from the [`Report`](crate::Report) to the layer.

mod events;
mod fields;
mod layer;
mod printer;
mod summary;
mod waiting;

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

pub use layer::ConsoleLayer;
pub(crate) use summary::{summary_shown_on_stderr, with_summary};

use printer::{Printer, Target};

/// Installs the console reporter as the global subscriber: [`Console::new`] (stderr,
/// colours on a terminal) filtered by `RUST_LOG`, `info` when it is unset.
///
/// ```no_run
/// # use service_runtime::{lifecycle, Report, Service, Supervisor};
/// # #[derive(Service)] struct MarketFeed;
/// # #[lifecycle] impl MarketFeed {}
/// #[tokio::main]
/// async fn main() -> Report {
///     service_runtime::console::init();
///     Supervisor::new().add(MarketFeed).run_until_signal().await
/// }
/// ```
///
/// # Panics
///
/// If a global subscriber is installed already; [`Console::try_init`] returns the error
/// instead.
pub fn init() {
    Console::new().init();
}

/// The console reporter's settings: where it writes and whether in colour.
///
/// ```
/// use service_runtime::console::Console;
/// use tracing_subscriber::prelude::*;
///
/// // Beside the program's own layers, on stdout, never in colour.
/// let subscriber = tracing_subscriber::registry()
///     .with(Console::new().stdout().color(false).layer().with_filter(
///         tracing_subscriber::filter::LevelFilter::INFO,
///     ));
/// # drop(subscriber);
/// ```
pub struct Console {
    target: Target,
    color: Option<bool>,
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("target", &self.target)
            .field("color", &self.color)
            .finish()
    }
}

impl Console {
    /// Writes to stderr, in colour when stderr is a terminal and `NO_COLOR` is unset.
    pub fn new() -> Self {
        Console {
            target: Target::Stderr,
            color: None,
        }
    }

    /// Writes to stdout instead (in colour when stdout is a terminal and `NO_COLOR` is
    /// unset): for a program whose own output the lines should interleave with.
    pub fn stdout(mut self) -> Self {
        self.target = Target::Stdout;
        self
    }

    /// Writes to `writer` instead, without colour unless [`color`](Self::color) asks
    /// for it. Each line is written whole, with one `write_all`.
    pub fn writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.target = Target::Writer(Box::new(writer));
        self
    }

    /// Colours on or off, whatever the writer is.
    pub fn color(mut self, on: bool) -> Self {
        self.color = Some(on);
        self
    }

    /// The layer, to add to a subscriber of the program's own. Its clock starts now:
    /// each line is stamped with the time since.
    pub fn layer(self) -> ConsoleLayer {
        let color = self.color.unwrap_or_else(|| {
            std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
                && match &self.target {
                    Target::Stderr => std::io::stderr().is_terminal(),
                    Target::Stdout => std::io::stdout().is_terminal(),
                    Target::Writer(_) => false,
                }
        });
        ConsoleLayer::new(Printer::new(self.target, color))
    }

    /// Installs the layer as the global subscriber, filtered by `RUST_LOG` (`info` when
    /// it is unset; an invalid directive is ignored, and said so on stderr).
    ///
    /// # Errors
    ///
    /// If a global subscriber is installed already.
    pub fn try_init(self) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
        let filter = EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .from_env_lossy();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(self.layer());
        tracing::subscriber::set_global_default(subscriber)
    }

    /// Installs the layer as the global subscriber, as [`try_init`](Self::try_init) does.
    ///
    /// # Panics
    ///
    /// If a global subscriber is installed already.
    pub fn init(self) {
        if let Err(error) = self.try_init() {
            panic!("the console reporter could not be installed: {error}");
        }
    }
}
