//! The pipeline the command tests run: feed <- strategy <- orders, and an independent
//! audit, each a `Part` whose hooks log themselves and fail, crash or wait at the
//! test's word.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use service_runtime::{
    Managed, Report, Restart, RestartPolicy, Service, Shutdown, Supervisor, SupervisorHandle,
    lifecycle,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::common::Log;

/// A part of the pipeline whose hooks log themselves; the test makes its next init or
/// cleanup fail, or its run loop fail, at will.
#[derive(Service)]
pub struct Part {
    label: &'static str,
    log: Log,
    fail_init: Arc<AtomicBool>,
    fail_cleanup: Arc<AtomicBool>,
    crash: Arc<Notify>,
    hold_init: Arc<AtomicBool>,
    release: Arc<Notify>,
}

#[lifecycle]
impl Part {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("init {}", self.label));
        if self.hold_init.load(Ordering::SeqCst) {
            self.release.notified().await;
        }
        if self.fail_init.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::other("no connection"));
        }
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup {}", self.label));
        if self.fail_cleanup.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::other("flush refused"));
        }
        Ok(())
    }

    #[run]
    async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = self.crash.notified() => Err(std::io::Error::other("lost its feed")),
        }
    }
}

/// The test's levers on one part.
#[derive(Clone, Default)]
pub struct Levers {
    pub fail_init: Arc<AtomicBool>,
    pub fail_cleanup: Arc<AtomicBool>,
    pub crash: Arc<Notify>,
    /// While set, an init waits for `release` first.
    pub hold_init: Arc<AtomicBool>,
    pub release: Arc<Notify>,
}

/// The part `label`, named so in the supervisor.
pub fn part(label: &'static str, log: &Log, levers: &Levers) -> Managed<Part> {
    let part = Part {
        label,
        log: log.clone(),
        fail_init: levers.fail_init.clone(),
        fail_cleanup: levers.fail_cleanup.clone(),
        crash: levers.crash.clone(),
        hold_init: levers.hold_init.clone(),
        release: levers.release.clone(),
    };
    Managed::with_config(part, Part::config().name(label))
}

pub fn permanent() -> RestartPolicy {
    RestartPolicy::new(Restart::Permanent)
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .jitter(0.0)
}

/// feed <- strategy <- orders, and an independent audit; every one permanent.
pub fn pipeline(log: &Log, levers: &[Levers; 4]) -> Supervisor {
    Supervisor::new()
        .default_restart(permanent())
        .add(part("feed", log, &levers[0]))
        .add(part("strategy", log, &levers[1]))
        .depends_on("feed")
        .add(part("orders", log, &levers[2]))
        .depends_on("strategy")
        .add(part("audit", log, &levers[3]))
}

/// The pipeline, run in a task until its handle shuts it down, every service started.
pub struct Started {
    pub log: Log,
    pub levers: [Levers; 4],
    pub handle: SupervisorHandle,
    pub run: JoinHandle<Report>,
}

impl Started {
    pub async fn start() -> Started {
        let log = Log::default();
        let levers: [Levers; 4] = Default::default();
        let supervisor = pipeline(&log, &levers);
        let handle = supervisor.handle();
        let run = tokio::spawn(supervisor.run_until(std::future::pending()));
        handle.started().await.unwrap();
        Started {
            log,
            levers,
            handle,
            run,
        }
    }
}
