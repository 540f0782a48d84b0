//! Service lifecycle toolkit for tokio.
//!
//! Annotate a struct with [`#[derive(Service)]`](macro@Service) and an impl block with
//! [`#[lifecycle]`](macro@lifecycle), write only the hooks, and wrap the value in
//! [`Managed`] to get status tracking, tracing spans that name the service, timeouts,
//! panic isolation, health aggregation and status-change notifications.
//!
//! ```
//! use service_runtime::{lifecycle, HealthStatus, Managed, Service, ServiceStatus, Shutdown};
//!
//! #[derive(Service)]
//! #[service(name = "my_service", start_timeout = "10s", stop_timeout = "5s")]
//! struct MyService {
//!     connected: bool,
//! }
//!
//! #[lifecycle]
//! impl MyService {
//!     #[init]
//!     async fn initialize_resources(&mut self) -> Result<(), std::io::Error> {
//!         self.connected = true;
//!         Ok(())
//!     }
//!
//!     #[cleanup]
//!     async fn cleanup_resources(&mut self) -> Result<(), std::io::Error> {
//!         self.connected = false;
//!         Ok(())
//!     }
//!
//!     #[health(name = "database", critical)]
//!     async fn database(&self) -> HealthStatus {
//!         if self.connected { HealthStatus::Healthy } else { HealthStatus::Unhealthy }
//!     }
//!
//!     #[run]
//!     async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
//!         shutdown.requested().await;
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let service = Managed::new(MyService { connected: false });
//! service.start().await?;
//! assert_eq!(service.status(), ServiceStatus::Running);
//! assert_eq!(service.health().await.status, HealthStatus::Healthy);
//! service.stop().await?;
//! assert_eq!(service.status(), ServiceStatus::Stopped);
//! # Ok::<(), service_runtime::ServiceError>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod __private;
mod breaker;
#[cfg(feature = "console")]
pub mod console;
mod deadline;
mod error;
mod flavour;
mod health;
mod local;
mod managed;
#[cfg(feature = "http")]
mod probes;
mod ready;
mod restart;
mod service;
mod shutdown;
mod status;
mod supervisor;
#[cfg(feature = "systemd")]
mod systemd;

pub use breaker::{BreakerError, BreakerState, CircuitBreaker};
pub use error::{BoxError, HookFailure, HookKind, ServiceError};
pub use health::{HealthChecks, HealthDetail, HealthReport, HealthStatus};
pub use managed::{Component, IntoManaged, Managed, StatusChange, StatusChanges};
#[cfg(feature = "http")]
pub use probes::{DEFAULT_HEALTH_CACHE_TTL, ProbeFuture, ProbeLimits, ProbeService, ShowDetails};
/// The `prometheus-client` crate whose [`Registry`](prometheus_client::registry::Registry)
/// [`Supervisor::metrics_registry`] takes (feature `metrics`), re-exported so that the
/// program's metrics are made with the version the supervisor encodes.
#[cfg(feature = "metrics")]
pub use prometheus_client;
pub use ready::Ready;
pub use restart::{Restart, RestartPolicy};
pub use service::{
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, Lifecycle, Service,
    ServiceConfig,
};
pub use service_macros::{Service, lifecycle};
pub use shutdown::{Shutdown, ShutdownRequested};
pub use status::{ServiceStatus, TransitionError};
pub use supervisor::{
    AddService, CommandError, DEFAULT_REPEAT_WINDOW, DEFAULT_SHUTDOWN_TIMEOUT, EXIT_CONFIG,
    EXIT_FORCED, EXIT_SHUTDOWN_TIMEOUT, LookupError, ReloadError, Report, RestartRecord,
    ServiceRef, ServiceStats, StartupError, Supervisor, SupervisorError, SupervisorHandle,
    SupervisorHealth,
};
#[cfg(feature = "systemd")]
pub use systemd::SystemdNotifier;
