//! [`Shared`], the state a supervisor's run shares with its handles (what each lock
//! protects is in [`run`]'s invariants), and the [`Figures`] it keeps of each
//! service.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handle::{ServiceList, StartupError};
use super::{liveness, lock, run};
use crate::Shutdown;
use crate::managed::{ErasedService, StatusChange, StatusTally, Subscriber};

/// State shared between the running supervisor and its [`SupervisorHandle`](super::SupervisorHandle)s.
pub(super) struct Shared {
    /// Every service, in the order added. Copy-on-write: readers take the `Arc` and
    /// release the lock at once (a health aggregation holds it across its awaits).
    pub(super) services: Mutex<Arc<ServiceList>>,
    /// The figures of each service, indexed like `services`.
    pub(super) stats: Mutex<Vec<Figures>>,
    /// The subscribers of [`SupervisorHandle::subscribe`](super::SupervisorHandle::subscribe). Taken before `services` where
    /// both are held (adding a service, subscribing), so that neither misses the other.
    pub(super) subscribers: Mutex<Vec<mpsc::UnboundedSender<StatusChange>>>,
    /// Requested by [`SupervisorHandle::shutdown`](super::SupervisorHandle::shutdown): behaves like a signal.
    pub(super) shutdown: Shutdown,
    /// Set when the shutdown phase begins (readiness turns false).
    pub(super) stopping: Shutdown,
    pub(super) started_at: OnceLock<Instant>,
    /// How the startup ended, for [`SupervisorHandle::started`](super::SupervisorHandle::started): set once, by the run.
    pub(super) startup: tokio::sync::watch::Sender<Option<Result<(), StartupError>>>,
    /// When the loop's current turn began: what liveness reads.
    pub(super) turns: liveness::Turns,
    /// Kept by the services' own transitions: what readiness and the probes' cache read.
    pub(super) tally: Arc<StatusTally>,
    /// Where `SIGHUP` and [`SupervisorHandle::reload`](super::SupervisorHandle::reload) ask for a reload.
    pub(super) reloads: mpsc::UnboundedSender<run::reload::ReloadRequest>,
    /// Where [`SupervisorHandle::stop`](super::SupervisorHandle::stop) and `restart` ask
    /// for a command.
    pub(super) commands: mpsc::UnboundedSender<run::commands::Command>,
    #[cfg(feature = "http")]
    pub(super) probe_address: Mutex<Option<std::net::SocketAddr>>,
    /// What every probe endpoint answers from: `serve_health`'s and the mounted ones.
    #[cfg(feature = "http")]
    pub(super) probes: crate::probes::ProbeAnswers,
}

impl Shared {
    /// Lists `service` as the supervisor's service number `index` (the next one): the
    /// handles' subscribers get its changes, the tally counts and posts them, the
    /// handles' list shows it, and its figures begin. Before the run (`Supervisor::add`)
    /// or in it (`SupervisorHandle::add`).
    pub(super) fn list(&self, service: &ErasedService, index: usize) {
        // Held until the service is listed, as `SupervisorHandle::subscribe` holds it
        // while it reads the list: a subscriber is added either here or there, never
        // missed by both.
        let subscribers = lock(&self.subscribers);
        for subscriber in subscribers.iter() {
            service
                .0
                .add_subscriber(Subscriber::Public(subscriber.clone()));
        }
        service.0.join(index, &self.tally);
        Arc::make_mut(&mut *lock(&self.services)).push(service.clone());
        drop(subscribers);
        lock(&self.stats).push(Figures::default());
    }
}

/// What the supervisor keeps of each service; see [`ServiceStats`](super::ServiceStats).
#[derive(Clone, Copy, Default)]
pub(super) struct Figures {
    pub(super) restarts: u32,
    /// Why it is stopped on purpose, if it is and has not started since: then it no
    /// longer counts against readiness or health.
    pub(super) aside: Option<Aside>,
    pub(super) last_start_duration: Option<Duration>,
    pub(super) last_stop_duration: Option<Duration>,
}

/// Why a stopped service is not counted against readiness and health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Aside {
    /// Its run loop finished its work (`Ok` under `transient` or `temporary`).
    Completed,
    /// The program stopped it: [`SupervisorHandle::stop`](super::SupervisorHandle::stop).
    StoppedOnRequest,
}

impl Aside {
    /// The reason its health report gives.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Aside::Completed => super::COMPLETED_REASON,
            Aside::StoppedOnRequest => super::STOPPED_ON_REQUEST_REASON,
        }
    }
}

impl Drop for Shared {
    /// The supervisor is gone (run or not): its services forget it at their next change.
    fn drop(&mut self) {
        self.tally.close();
    }
}
