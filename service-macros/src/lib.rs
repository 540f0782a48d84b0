//! Procedural macros of [`service-runtime`]: `#[derive(Service)]` and `#[lifecycle]`.
//!
//! Do not depend on this crate directly: depend on `service-runtime`, which re-exports
//! both macros and holds everything their generated code names. The macros and the
//! runtime move together; `service-runtime` pins this crate's exact version.
//!
//! [`service-runtime`]: https://docs.rs/service-runtime
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ast;
mod attr;
mod ctxt;
mod duration;
mod expand;
mod keys;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Makes a struct a service: its name, version and time budgets, and its child services.
///
/// A service is a struct with `#[derive(Service)]` and an inherent impl block with
/// [`#[lifecycle]`](macro@lifecycle) that declares its hooks. Wrap a value in
/// `Managed::new(value)` to start, stop and observe it.
///
/// ```
/// use service_runtime::{lifecycle, HealthStatus, Managed, Service};
///
/// #[derive(Service)]
/// #[service(name = "market_feed", start_timeout = "10s", stop_timeout = "5s")]
/// struct MarketFeed {
///     url: String,
///     #[service(component)]             // started after init, stopped before cleanup
///     consumer: Managed<StreamConsumer>,
///     #[service(component, optional)]   // its failure only degrades the feed
///     cache: Managed<Cache>,
/// }
///
/// #[lifecycle]
/// impl MarketFeed {
///     #[health]
///     async fn upstream(&self) -> HealthStatus {
///         HealthStatus::Healthy
///     }
/// }
///
/// #[derive(Service)]
/// struct StreamConsumer;
///
/// #[lifecycle]
/// impl StreamConsumer {}
///
/// #[derive(Service)]
/// struct Cache {}
///
/// #[lifecycle]
/// impl Cache {}
///
/// let config = MarketFeed::config();
/// assert_eq!(config.name, "market_feed");
/// assert_eq!(config.start_timeout, std::time::Duration::from_secs(10));
/// assert_eq!(StreamConsumer::config().name, "stream_consumer");
///
/// let feed = Managed::new(MarketFeed {
///     url: "wss://feed.example".to_owned(),
///     consumer: Managed::new(StreamConsumer),
///     cache: Managed::new(Cache {}),
/// });
/// ```
///
/// # The struct
///
/// A struct with named fields, or a unit struct. It must be `Send + Sync + 'static`:
/// hooks run on tokio's multi-threaded runtime and health checks run while other hooks
/// hold `&self`, so keep interior mutability in atomics, `std::sync` or `tokio::sync`
/// types rather than `Cell`/`RefCell` (`#[lifecycle(?Send)]` relaxes what a hook may hold
/// across `.await`, not this). A generic struct is a service for each
/// instantiation that satisfies this and its `#[lifecycle]` block's bounds.
///
/// # `#[service(...)]` on the struct
///
/// Every key is optional, and the keys may be split over several `#[service(...)]`
/// attributes. Each may be given once.
///
/// | key | value | default |
/// |---|---|---|
/// | `name = "…"` | the name in every log line, error, event and health report; not empty | the type's name in snake case: `MarketFeed` → `market_feed`, `HTTPServer` → `http_server` |
/// | `version = "…"` | the version in health reports | the version of the crate that derives (`CARGO_PKG_VERSION`) |
/// | `start_timeout = "…"` | how long **each** `#[init]` hook may take | 30 s |
/// | `stop_timeout = "…"` | how long **each** `#[cleanup]` hook may take, and the `#[run]` hook to return once shutdown is requested | 10 s |
/// | `health_timeout = "…"` | how long **each** `#[health]` check may take before it counts as unhealthy | 2 s |
/// | `restart = "…"` | when a `Supervisor` restarts the service: `"permanent"` (always, even after the `#[run]` hook returned `Ok`), `"transient"` (after a failure only) or `"temporary"` (never) | `"transient"` |
/// | `max_restarts = 3` | how many restarts are allowed within `restart_within` before the supervisor escalates (stops everything and reports the service); an integer literal, a `u32` | 3 |
/// | `restart_within = "…"` | the window `max_restarts` counts in | 30 s |
/// | `backoff = "…"` | the first delay before a restart; each further attempt doubles it | 100 ms |
/// | `max_backoff = "…"` | the longest delay before a restart; not shorter than `backoff` | 10 s |
/// | `crate = path` | where the runtime is, if the dependency is renamed (`crate = rt`); `crate = "rt"` works too | `::service_runtime` |
///
/// A duration is an integer immediately followed by a unit, `ms`, `s`, `m` or `h`:
/// `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
///
/// The restart keys fill `ServiceConfig::restart`, the `RestartPolicy` a `Supervisor`
/// applies to the service; a key left out keeps the default above, and a service
/// without any keeps `RestartPolicy::new(Restart::Transient)`:
///
/// ```
/// use std::time::Duration;
///
/// use service_runtime::{lifecycle, Restart, Service};
///
/// #[derive(Service)]
/// #[service(restart = "permanent", max_restarts = 5, restart_within = "1m")]
/// #[service(backoff = "200ms", max_backoff = "30s")]
/// struct Pump;
///
/// #[lifecycle]
/// impl Pump {}
///
/// let policy = Pump::config().restart;
/// assert_eq!(policy.restart, Restart::Permanent);
/// assert_eq!(policy.max_restarts, 5);
/// assert_eq!(policy.within, Duration::from_secs(60));
/// assert_eq!(policy.backoff, Duration::from_millis(200));
/// assert_eq!(policy.max_backoff, Duration::from_secs(30));
/// ```
///
/// A program can still override any of these at run time:
/// `Managed::with_config(value, MyService::config().stop_timeout(...))`, or
/// `Supervisor::restart(policy)` for the service added last.
///
/// # `#[service(...)]` on a field
///
/// | key | meaning |
/// |---|---|
/// | `component` | the field is a child service, a `Managed<S>`: started after the parent's init hooks (in field order), stopped before its cleanup hooks (in reverse), its health nested under the parent's `dependencies`; its failure makes the parent unhealthy |
/// | `component, optional` | the same, but the child's failure only degrades the parent |
///
/// A component field may also be an `Option<Managed<S>>`, whose `None` is skipped
/// everywhere (start, stop, health, the watch over failures), or a `Vec<Managed<S>>`, a
/// pool: each element is a component of its own named `field[i]` (in errors and health
/// reports), started in element order and stopped in reverse, critical or optional as
/// the field is. The children are read after the init hooks, so an init hook may fill
/// them.
///
/// Other fields are plain data: the runtime never looks at them.
///
/// # What it generates
///
/// An `impl Service`, whose `Service::config()` returns the configuration above. A type
/// without a [`#[lifecycle]`](macro@lifecycle) block does not compile, with an error
/// that says so: write `#[lifecycle] impl MyService {}` for a service without hooks.
///
/// # Errors
///
/// Every mistake is reported at once, each at the token at fault: enums, unions and tuple
/// structs; unknown or duplicate keys (with the list of accepted keys); malformed or
/// too large durations; an empty name; a `restart` other than the three kinds; a
/// `max_restarts` that is not an integer literal fitting a `u32`; a `max_backoff`
/// shorter than `backoff`; `optional` without `component`; a component field whose
/// type is not a `Managed<S>`, `Option<Managed<S>>` or `Vec<Managed<S>>`.
#[proc_macro_derive(Service, attributes(service))]
pub fn derive_service(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// Declares the hooks of a service on its inherent impl block.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// use service_runtime::{lifecycle, HealthStatus, Service, Shutdown};
///
/// #[derive(Service)]
/// struct MarketFeed {
///     connected: AtomicBool,
/// }
///
/// #[derive(Debug)]
/// struct FeedError;
///
/// impl std::fmt::Display for FeedError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("the feed is down")
///     }
/// }
///
/// impl std::error::Error for FeedError {}
///
/// #[lifecycle]
/// impl MarketFeed {
///     #[init]                                   // any number, run in source order
///     async fn connect(&mut self) -> Result<(), FeedError> {
///         self.connected.store(true, Ordering::Release);
///         Ok(())
///     }
///
///     #[init(timeout = "1m")]                   // its own time budget
///     async fn load_history(&mut self) -> anyhow::Result<()> {
///         Ok(())
///     }
///
///     #[cleanup]                                // any number, run in reverse source order
///     async fn disconnect(&mut self) -> Result<(), std::io::Error> {
///         self.connected.store(false, Ordering::Release);
///         Ok(())
///     }
///
///     #[health(name = "upstream", critical)]    // failure => unhealthy
///     async fn upstream(&self) -> HealthStatus {
///         if self.connected.load(Ordering::Acquire) {
///             HealthStatus::Healthy
///         } else {
///             HealthStatus::Unhealthy
///         }
///     }
///
///     #[health(optional, timeout = "100ms")]    // failure => degraded
///     async fn latency(&self) -> Result<(), FeedError> {
///         Ok(())
///     }
///
///     #[run]                                    // at most one: the main loop while running
///     async fn pump(&self, shutdown: Shutdown) -> Result<(), FeedError> {
///         shutdown.requested().await;
///         Ok(())
///     }
///
///     // Methods without a hook attribute are ordinary methods.
///     fn is_connected(&self) -> bool {
///         self.connected.load(Ordering::Acquire)
///     }
/// }
/// ```
///
/// # Hooks
///
/// A hook is an `async fn` of the block marked with one hook attribute. Its body is
/// emitted exactly as written; `#[lifecycle]` adds a separate trait impl that calls it.
///
/// | attribute | signature | how many |
/// |---|---|---|
/// | `#[init]` | `async fn name(&mut self) -> Result<(), E>` | any; run in source order by `start()` |
/// | `#[cleanup]` | `async fn name(&mut self) -> Result<(), E>` | any; run in reverse source order by `stop()`, each one even if another failed |
/// | `#[health]` | `async fn name(&self) -> T`, `T` one of `HealthStatus`, `HealthDetail`, `HealthChecks`, or a `Result<_, E>` of them or of `()` | any; run concurrently by `health()` |
/// | `#[run]` | `async fn name(&self, shutdown: Shutdown) -> Result<(), E>` or `async fn name(&self) -> Result<(), E>`; it may also take a `Ready` and the value of the `#[init(state)]` hook, in any order | at most one; runs while the service is running |
/// | `#[reload]` | `async fn name(&self) -> Result<(), E>` | any; run in source order by `reload()` (a supervisor's on `SIGHUP`) while the service keeps running |
/// | `#[health_rule]` | `fn name(&self, report: &HealthReport) -> HealthStatus` (not `async`) | at most one; decides the service's status from its checks' report while it runs |
///
/// `E` is any type that converts into `Box<dyn Error + Send + Sync>`: your own error
/// type, `std::io::Error`, `anyhow::Error`, `String`. A `#[health]` check returns
/// `HealthStatus`, `HealthDetail` or `HealthChecks`, or a `Result` of one of them or of
/// `()` (with `E: Display`; an `Err` is a failed check and its message the check's
/// detail). A check that returns `HealthChecks` (results named at run time, one per shard
/// say) reports each result as a check of its own, named `check[name]`; its `Err`,
/// timeout or panic makes its own entry, `check`, unhealthy.
///
/// A `#[run]` hook should return once its `Shutdown` is requested; it gets the service's
/// `stop_timeout` to do so before its future is dropped. A `#[run]` hook without the
/// `Shutdown` argument cannot hear a stop, so its future is dropped as soon as a stop
/// begins, and the stop is clean: write it that way when dropping the loop at any
/// `.await` loses nothing. Returning `Ok` earlier stops the service; returning `Err` puts
/// it in the `error` status.
///
/// A `#[run]` hook that takes a `Ready` is spawned while the service is `starting`, and the
/// start waits (under `start_timeout`) until it calls `ready.notify()`: only then is the
/// service `running`. A `#[run]` argument that is neither a `Shutdown` nor a `Ready` (told
/// by the last segment of its type's path) is the `Ok` value of the init hook marked
/// `#[init(state)]`, handed over by value: how a loop owns a receiver or a stream without
/// a `Mutex<Option<_>>`.
///
/// A `#[reload]` hook re-reads what may change while the service runs (a configuration
/// file, a certificate): `&self`, like a health check, so the state it replaces sits
/// behind interior mutability (an atomic, a `RwLock`, an `ArcSwap`). A reload changes no
/// status; a failed hook is reported to the caller of `reload()` and logged, and the
/// service keeps running with what it had.
///
/// Hooks must not be generic (lifetimes aside) or `unsafe`, and their futures must be
/// `Send`: a hook that holds an `Rc`, a `RefCell` borrow or a `std::sync::MutexGuard`
/// across an `.await` is a compile error on that hook, unless the block opts out with
/// `#[lifecycle(?Send)]` (below).
///
/// # Hook arguments
///
/// | attribute | keys |
/// |---|---|
/// | `#[init(...)]`, `#[cleanup(...)]`, `#[reload(...)]` | `timeout = "5s"`: this hook's budget instead of the service's `start_timeout` (init, reload) / `stop_timeout` (cleanup) |
/// | `#[init(state)]` | its `Ok` value is handed to the `#[run]` hook, which takes it as an argument (one such hook per service) |
/// | `#[health(...)]` | `name = "…"`: the check's name in the health report (default: the method's name; unique per service). `critical` (the default): its failure makes the service unhealthy; or `optional`: its failure only degrades it. `timeout = "250ms"`: instead of the service's `health_timeout` |
/// | `#[run]` | none |
///
/// Durations are written as in `#[service(...)]`: `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
///
/// # `#[lifecycle(...)]`
///
/// Both arguments are optional and may come in any order: `#[lifecycle(crate = rt, ?Send)]`.
///
/// | argument | meaning |
/// |---|---|
/// | `crate = path` | names the runtime if the dependency is renamed, as `#[service(crate = path)]` does for the derive |
/// | `?Send` | the hooks' futures need not be `Send` (as in `async-trait`) |
///
/// With `?Send`, hooks may hold values that are not `Send` across an `.await`: an `Rc`,
/// a `RefCell` borrow, a handle of a `!Send` client library. The service itself must
/// still be `Send + Sync`; only what a hook creates while it runs is exempt. Such a
/// service must run where a task never changes thread: on a current-thread runtime
/// (`#[tokio::main(flavor = "current_thread")]`, or the default `#[tokio::test]`). A
/// `LocalSet` on the multi-thread runtime is not enough, because `Managed` runs hooks in
/// tasks of its own, which the runtime may move between workers. A hook polled on
/// another thread than the one it started on fails with an error that says so instead
/// of touching its non-`Send` values from the wrong thread: an init, cleanup or run hook
/// returns that error, a health check reports unhealthy.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// use service_runtime::{lifecycle, HealthStatus, Service};
///
/// #[derive(Service)]
/// struct Session;
///
/// async fn handshake() {}
///
/// #[lifecycle(?Send)]
/// impl Session {
///     #[init]
///     async fn connect(&mut self) -> Result<(), std::io::Error> {
///         let transcript = Rc::new(RefCell::new(Vec::new()));
///         handshake().await;                    // `transcript` is held across `.await`
///         transcript.borrow_mut().push("hello");
///         Ok(())
///     }
///
///     #[health]
///     async fn alive(&self) -> HealthStatus {
///         let probes = Rc::new(1);
///         handshake().await;
///         if *probes == 1 { HealthStatus::Healthy } else { HealthStatus::Unhealthy }
///     }
/// }
/// ```
///
/// # Errors
///
/// Every mistake is reported at once, each at the token at fault: `#[lifecycle]` on
/// anything but an inherent impl block; a hook that is not `async`, takes the wrong
/// receiver or extra arguments, lacks a return type, is generic or `unsafe`; two hook
/// attributes on one method; a second `#[run]`; duplicate health check names; unknown
/// or duplicate keys (with the accepted ones listed), a relaxed bound other than
/// `?Send`, and malformed durations. A return type the runtime cannot accept is reported
/// at that type, and a hook whose future is not `Send` (without `?Send`) at the hook's name.
#[proc_macro_attribute]
pub fn lifecycle(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::lifecycle(args.into(), input.into()).into()
}
