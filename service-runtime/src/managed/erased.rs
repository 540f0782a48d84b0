//! Type-erased services: the handle a parent keeps on each component and a supervisor on
//! each of its services ([`ErasedService`]), and the object-safe trait behind it.

use std::sync::Arc;

use super::BoxFuture;
use super::components::ComponentIncident;
use super::control::Inner;
use super::decide::Request;
use super::observers::{StatusTally, Subscriber};
use crate::error::ServiceError;
use crate::health::HealthReport;
use crate::service::{Service, ServiceConfig};
use crate::status::ServiceStatus;

/// A type-erased managed service (a component, or an entry of a supervisor): a handle,
/// as a [`Managed`](super::Managed) is.
#[doc(hidden)]
pub struct ErasedService(pub(crate) Arc<dyn DynService>);

impl Clone for ErasedService {
    fn clone(&self) -> Self {
        self.0.add_handle();
        ErasedService(self.0.clone())
    }
}

impl Drop for ErasedService {
    fn drop(&mut self) {
        self.0.release_handle();
    }
}

/// What a start or stop of a type-erased service gives when it begins: its outcome when
/// it needed no waiting (most do, and allocate nothing), or the rest of it.
pub(crate) type Begun<'a> =
    Result<Result<(), ServiceError>, BoxFuture<'a, Result<(), ServiceError>>>;

pub(crate) trait DynService: Send + Sync {
    /// The name, shared (made on first use).
    fn name(&self) -> &Arc<str>;
    /// The name, without making it shared.
    fn name_str(&self) -> &str;
    fn status(&self) -> ServiceStatus;
    /// The settings (a component's restart policy, for its parent).
    fn config(&self) -> &ServiceConfig;
    /// The cause of the last move to `error`.
    fn last_error(&self) -> Option<ServiceError>;
    /// What [`Managed::start`](super::Managed::start) does up to its first wait.
    fn start_now(&self) -> Begun<'_>;
    /// What [`Managed::stop`](super::Managed::stop) does up to its first wait.
    fn stop_now(&self) -> Begun<'_>;
    /// Whether a shutdown has anything to stop: not for a service that is `stopped`, nor
    /// for one in `error` that owes nothing (a failed start undid itself), which keeps
    /// its failure visible rather than being cleared to `stopped`.
    fn needs_stop(&self) -> bool;
    /// Cancels the service when a shutdown gives up on it (see
    /// [`abandon`](super::abandon)): `budget` is the one that ran out, `None` when a
    /// second signal forced the shutdown. Returns the status it was cancelled in; `None`
    /// if it had stopped.
    fn abandon(&self, budget: Option<std::time::Duration>) -> Option<ServiceStatus>;
    fn health(&self) -> BoxFuture<'_, HealthReport>;
    /// What [`Managed::reload`](super::Managed::reload) does.
    fn reload(&self) -> BoxFuture<'_, Result<(), ServiceError>>;
    /// Whether a reload would run a hook: of the service or of a component it started.
    fn reloads_anything(&self) -> bool;
    /// How its optional components' failures were answered (see
    /// [`components`](super::components)).
    fn component_incidents(&self) -> Vec<ComponentIncident>;
    fn add_subscriber(&self, subscriber: Subscriber);
    /// Joins a supervisor as its entry `index`: counted in `tally` from its current
    /// status, and its changes posted there while the supervisor runs.
    fn join(&self, index: usize, tally: &Arc<StatusTally>);
    /// One more handle ([`ErasedService::clone`]).
    fn add_handle(&self);
    /// One handle less.
    fn release_handle(&self);
    /// The service's shared state, for a typed handle on it ([`Managed::from_erased`]).
    ///
    /// [`Managed::from_erased`]: super::Managed::from_erased
    fn as_any(&self) -> &dyn std::any::Any;
}

impl dyn DynService + '_ {
    /// Starts the service as [`Managed::start`](super::Managed::start) does.
    pub(crate) async fn start(&self) -> Result<(), ServiceError> {
        match self.start_now() {
            Ok(outcome) => outcome,
            Err(rest) => rest.await,
        }
    }

    /// Stops the service as [`Managed::stop`](super::Managed::stop) does.
    pub(crate) async fn stop(&self) -> Result<(), ServiceError> {
        match self.stop_now() {
            Ok(outcome) => outcome,
            Err(rest) => rest.await,
        }
    }
}

impl<S: Service> Inner<S> {
    /// Decides a call at once; the rest, if any, boxed.
    fn begin_call(&self, request: Request) -> Begun<'_> {
        let inner = self
            .this
            .upgrade()
            .expect("an `Inner` is only reached through a live `Arc`");
        match inner.decide(request) {
            super::call::Step::Finished(outcome) => Ok(outcome),
            step => Err(Box::pin(
                async move { inner.finish_call(request, step).await },
            )),
        }
    }
}

impl<S: Service> DynService for Inner<S> {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn name(&self) -> &Arc<str> {
        Inner::name(self)
    }

    fn name_str(&self) -> &str {
        &self.name
    }

    fn status(&self) -> ServiceStatus {
        Inner::status(self)
    }

    fn config(&self) -> &ServiceConfig {
        Inner::config(self)
    }

    fn last_error(&self) -> Option<ServiceError> {
        self.lock().last_error.as_deref().cloned()
    }

    fn start_now(&self) -> Begun<'_> {
        self.begin_call(Request::Start)
    }

    fn abandon(&self, budget: Option<std::time::Duration>) -> Option<ServiceStatus> {
        Inner::abandon(self, budget)
    }

    fn needs_stop(&self) -> bool {
        let ctl = self.lock();
        match self.status() {
            ServiceStatus::Stopped => false,
            ServiceStatus::Error => ctl.op.is_some() || !self.stop_owes_nothing(&ctl),
            _ => true,
        }
    }

    fn stop_now(&self) -> Begun<'_> {
        self.begin_call(Request::Stop)
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        Box::pin(Inner::health(self))
    }

    fn reload(&self) -> BoxFuture<'_, Result<(), ServiceError>> {
        Box::pin(Inner::reload(self))
    }

    fn reloads_anything(&self) -> bool {
        Inner::reloads_anything(self)
    }

    fn component_incidents(&self) -> Vec<ComponentIncident> {
        self.lock().incidents().to_vec()
    }

    fn add_subscriber(&self, subscriber: Subscriber) {
        self.lock().subscribers.push(subscriber);
    }

    fn add_handle(&self) {
        self.handles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn release_handle(&self) {
        Inner::release_handle(self);
    }

    fn join(&self, index: usize, tally: &Arc<StatusTally>) {
        let mut ctl = self.lock();
        // Under the lock that orders transitions: counted once, from its current status.
        tally.join(Inner::status(self));
        ctl.subscribers.push(Subscriber::Supervisor {
            index,
            tally: tally.clone(),
        });
    }
}
