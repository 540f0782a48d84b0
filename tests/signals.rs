//! `Supervisor::run_until_signal` under real signals sent to this test process.
//!
//! Signals are process-wide, so the scenarios run one at a time (a lock serialises them;
//! each builds its own runtime). Once a scenario installed tokio's handlers, SIGINT and
//! SIGTERM no longer kill the process: a signal sent by one scenario cannot end another.
//! These run on real time, so each body is bounded by a 30 s timeout.
#![cfg(unix)]

mod common;
mod http_client;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Log;
use service_runtime::ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
use service_runtime::{
    EXIT_FORCED, Managed, Service, ServiceStatus, StatusChange, StatusChanges, Supervisor,
    SupervisorError, lifecycle,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long "at once" may take on a loaded CI machine; every wait it bounds would
/// otherwise last until the 30 s timeout (the hooks hang forever).
const PROMPTLY: Duration = Duration::from_secs(5);
/// The repeat window of the scenario that forces the exit with a second signal.
const REPEAT_WINDOW: Duration = Duration::from_millis(200);

/// Runs one scenario on its own runtime, alone in the process, under a 30 s timeout.
fn scenario<F: Future<Output = ()>>(body: impl FnOnce() -> F) {
    static SIGNALS: Mutex<()> = Mutex::new(());
    let _alone = SIGNALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), body())
                .await
                .expect("the scenario did not finish within 30 s");
        });
}

/// Sends `signal` to this process, as a user's `kill` or Ctrl-C would.
async fn raise(signal: &str) {
    let status = tokio::process::Command::new("kill")
        .args([format!("-{signal}"), std::process::id().to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed: {status}");
}

/// A service whose init or cleanup can hang (until the test's runtime ends).
#[derive(Service)]
#[service(start_timeout = "60s", stop_timeout = "60s")]
struct Stage {
    log: Log,
    label: String,
    hang_in_init: bool,
    hang_in_cleanup: bool,
    /// Notified when a hanging hook has begun.
    hanging: Arc<Notify>,
}

#[lifecycle]
impl Stage {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("init:{}", self.label));
        if self.hang_in_init {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup:{}", self.label));
        if self.hang_in_cleanup {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn stage(log: &Log, label: &str, hanging: &Arc<Notify>) -> Stage {
    Stage {
        log: log.clone(),
        label: label.to_owned(),
        hang_in_init: false,
        hang_in_cleanup: false,
        hanging: hanging.clone(),
    }
}

fn named(stage: Stage) -> Managed<Stage> {
    let config = Stage::config().name(stage.label.clone());
    Managed::with_config(stage, config)
}

/// Every change received so far.
fn drain(changes: &mut StatusChanges) -> Vec<StatusChange> {
    std::iter::from_fn(|| changes.try_recv()).collect()
}

/// The `(from, to)` transitions of one service, in order.
fn of(changes: &[StatusChange], service: &str) -> Vec<(ServiceStatus, ServiceStatus)> {
    changes
        .iter()
        .filter(|c| &*c.service == service)
        .map(|c| (c.from, c.to))
        .collect()
}

/// Waits for the change that `wanted` describes (bounded by the scenario's timeout).
async fn wait_for(
    changes: &mut StatusChanges,
    seen: &mut Vec<StatusChange>,
    wanted: impl Fn(&StatusChange) -> bool,
) {
    loop {
        let change = changes
            .recv()
            .await
            .expect("the services outlive the scenario");
        let found = wanted(&change);
        seen.push(change);
        if found {
            return;
        }
    }
}

#[test]
fn sigterm_during_the_init_of_service_2_of_5_stops_startup_at_once() {
    scenario(|| async {
        let log = Log::default();
        let hanging = Arc::new(Notify::new());
        let mut supervisor = Supervisor::new();
        for i in 1..=5 {
            let mut stage = stage(&log, &format!("s{i}"), &hanging);
            stage.hang_in_init = i == 2;
            // No dependencies: one at a time, in the order added.
            supervisor = supervisor.add(named(stage));
        }
        let handle = supervisor.handle();
        let mut changes = handle.subscribe();

        let signalled = async {
            // s2's init has begun (and would never end).
            hanging.notified().await;
            raise("TERM").await;
            Instant::now()
        };
        let (report, sent) = tokio::join!(supervisor.run_until_signal(), signalled);
        let elapsed = sent.elapsed();

        assert!(
            elapsed < PROMPTLY,
            "startup took {elapsed:?} to stop after SIGTERM"
        );
        // A signal during startup is a normal shutdown: nothing failed, nothing to report.
        assert!(report.is_success(), "{:?}", report.errors());
        assert_eq!(report.code(), 0);

        let changes = drain(&mut changes);
        assert_eq!(
            of(&changes, "s1"),
            [
                (Stopped, Starting),
                (Starting, Running),
                (Running, Stopping),
                (Stopping, Stopped)
            ]
        );
        // The cancelled start never reports `running`.
        assert_eq!(
            of(&changes, "s2"),
            [
                (Stopped, Starting),
                (Starting, Stopping),
                (Stopping, Stopped)
            ]
        );
        for never in ["s3", "s4", "s5"] {
            assert!(
                of(&changes, never).is_empty(),
                "{never} must never start: {:?}",
                of(&changes, never)
            );
        }
        // Reverse order: s2's cancelled start is over before s1 begins to stop.
        let position = |service: &str, to: ServiceStatus| {
            changes
                .iter()
                .position(|c| &*c.service == service && c.to == to)
                .unwrap_or_else(|| panic!("{service} never went to {to}"))
        };
        assert!(position("s2", Stopped) < position("s1", Stopping));

        // s2's init was cancelled: its cleanup is not owed and never runs.
        assert_eq!(log.entries(), ["init:s1", "init:s2", "cleanup:s1"]);
        let statuses: Vec<ServiceStatus> = handle.statuses().into_iter().map(|(_, s)| s).collect();
        assert_eq!(statuses, [Stopped; 5]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            log.entries(),
            ["init:s1", "init:s2", "cleanup:s1"],
            "nothing runs after the report"
        );
    });
}

#[test]
fn a_second_sigint_during_a_hung_cleanup_forces_the_exit() {
    scenario(|| async {
        let log = Log::default();
        let hanging = Arc::new(Notify::new());
        let mut link = stage(&log, "exchange_link", &hanging);
        link.hang_in_cleanup = true;
        let supervisor = Supervisor::new()
            .add(named(stage(&log, "ledger", &hanging)))
            .add(named(link))
            .depends_on("ledger")
            .add(named(stage(&log, "reporter", &hanging)))
            .depends_on("exchange_link")
            // Only the second signal can end this shutdown, once past the repeat window.
            .shutdown_timeout(Duration::from_secs(60))
            .repeat_window(REPEAT_WINDOW);
        let handle = supervisor.handle();
        let mut changes = handle.subscribe();

        let signalled = async {
            let mut seen = Vec::new();
            wait_for(&mut changes, &mut seen, |c| {
                &*c.service == "reporter" && c.to == Running
            })
            .await;
            raise("INT").await;
            let first = Instant::now();
            wait_for(&mut changes, &mut seen, |c| {
                &*c.service == "exchange_link" && c.to == Stopping
            })
            .await;
            hanging.notified().await; // its cleanup has begun, and hangs
            tokio::time::sleep_until(first + REPEAT_WINDOW).await;
            raise("INT").await;
            (Instant::now(), seen)
        };
        let (report, (sent, mut seen)) = tokio::join!(supervisor.run_until_signal(), signalled);
        let elapsed = sent.elapsed();

        assert!(
            elapsed < PROMPTLY,
            "run took {elapsed:?} to return after the second SIGINT"
        );
        assert_eq!(report.code(), EXIT_FORCED, "{:?}", report.errors());
        let (abandoned, never_reached) = report
            .errors()
            .iter()
            .find_map(|e| match e {
                SupervisorError::Forced {
                    abandoned,
                    never_reached,
                    ..
                } => Some((abandoned.clone(), never_reached.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Forced error in {:?}", report.errors()));
        // The hung service, and apart the one that was never asked to stop.
        assert_eq!(abandoned, ["exchange_link"]);
        assert_eq!(never_reached, ["ledger"]);
        assert_eq!(report.errors().len(), 1, "{:?}", report.errors());

        seen.extend(drain(&mut changes));
        assert_eq!(
            of(&seen, "reporter")[2..],
            [(Running, Stopping), (Stopping, Stopped)]
        );
        // The forced shutdown cancels what it abandons: the hung one while stopping, the
        // one it never got to straight from `running` (no stop, so no cleanup).
        assert_eq!(
            of(&seen, "exchange_link")[2..],
            [(Running, Stopping), (Stopping, Error)]
        );
        assert_eq!(
            of(&seen, "ledger")[2..],
            [(Running, Error)],
            "ledger is cancelled, not stopped"
        );
        assert_eq!(handle.statuses()[1], ("exchange_link".to_owned(), Error));

        // Every cleanup ran at most once, and nothing ran after the report.
        let expected = [
            "init:ledger",
            "init:exchange_link",
            "init:reporter",
            "cleanup:reporter",
            "cleanup:exchange_link",
        ];
        assert_eq!(log.entries(), expected);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(log.entries(), expected);
    });
}

/// A service whose cleanup takes a while: a shutdown is still running 10 ms after it began.
#[derive(Service)]
#[service(name = "flusher")]
struct Flusher {
    flushed: Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Flusher {
    #[cleanup]
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.flushed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn two_sigterms_10_ms_apart_are_one_request_and_stop_cleanly() {
    scenario(|| async {
        let flushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = Supervisor::new().add(Flusher {
            flushed: flushed.clone(),
        });
        let handle = supervisor.handle();
        let mut changes = handle.subscribe();
        let signalled = async {
            let mut seen = Vec::new();
            wait_for(&mut changes, &mut seen, |c| c.to == Running).await;
            raise("TERM").await;
            wait_for(&mut changes, &mut seen, |c| c.to == Stopping).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            raise("TERM").await;
        };
        let (report, ()) = tokio::join!(supervisor.run_until_signal(), signalled);
        assert!(report.is_success(), "{:?}", report.errors());
        assert_eq!(report.code(), 0);
        assert!(
            flushed.load(std::sync::atomic::Ordering::SeqCst),
            "the cleanup ran to its end"
        );
        assert_eq!(handle.statuses()[0].1, Stopped);
    });
}

/// A service whose reload hook tells the test it ran.
#[derive(Service)]
#[service(name = "quoter")]
struct Quoter {
    reloaded: Arc<Notify>,
    reloads: Arc<std::sync::atomic::AtomicU32>,
}

#[lifecycle]
impl Quoter {
    #[reload]
    async fn reread_spreads(&self) -> Result<(), std::io::Error> {
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.reloaded.notify_one();
        Ok(())
    }
}

#[test]
fn sighup_runs_the_reload_hooks_and_every_service_keeps_running() {
    scenario(|| async {
        let reloaded = Arc::new(Notify::new());
        let reloads = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let supervisor = Supervisor::new().add(Quoter {
            reloaded: reloaded.clone(),
            reloads: reloads.clone(),
        });
        let handle = supervisor.handle();
        let mut changes = handle.subscribe();
        let signalled = async {
            let mut seen = Vec::new();
            wait_for(&mut changes, &mut seen, |c| c.to == Running).await;
            for _ in 0..2 {
                raise("HUP").await;
                reloaded.notified().await;
            }
            assert_eq!(handle.statuses()[0].1, Running);
            assert!(drain(&mut changes).is_empty(), "a reload changes no status");
            raise("TERM").await;
        };
        let (report, ()) = tokio::join!(supervisor.run_until_signal(), signalled);
        assert!(report.is_success(), "{:?}", report.errors());
        assert_eq!(reloads.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(handle.statuses()[0].1, Stopped);
    });
}

/// What the runtime logs, captured for the scenario that waits for a log line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Waits until the log holds `text` (bounded by the scenario's timeout).
    async fn wait_for(&self, text: &str) {
        while !String::from_utf8_lossy(&self.0.lock().unwrap()).contains(text) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[test]
fn sighup_without_reload_hooks_and_sigusr1_are_ignored_and_sigquit_stops_cleanly() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    scenario(|| async {
        let flushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = Supervisor::new().add(Flusher {
            flushed: flushed.clone(),
        });
        let handle = supervisor.handle();
        let mut changes = handle.subscribe();
        let signalled = async {
            let mut seen = Vec::new();
            wait_for(&mut changes, &mut seen, |c| c.to == Running).await;
            raise("HUP").await;
            captured
                .wait_for("reload requested, but no service has a `#[reload]` hook: ignored")
                .await;
            raise("USR1").await;
            captured.wait_for("signal=\"SIGUSR1\"").await;
            // Still alive and running: neither signal ended the process or a service.
            assert_eq!(handle.statuses()[0].1, Running);
            assert!(drain(&mut changes).is_empty());
            raise("QUIT").await;
        };
        let (report, ()) = tokio::join!(supervisor.run_until_signal(), signalled);
        assert!(report.is_success(), "{:?}", report.errors());
        assert!(
            flushed.load(std::sync::atomic::Ordering::SeqCst),
            "SIGQUIT stopped the service with its cleanup"
        );
    });
}

#[test]
fn under_a_drain_period_sigterm_makes_readyz_503_while_every_service_runs_and_a_second_ends_the_drain()
 {
    scenario(|| async {
        let log = Log::default();
        let hanging = Arc::new(Notify::new());
        // The drain outlasts the scenario's timeout: only the second SIGTERM ends it.
        let supervisor = Supervisor::new()
            .drain_period(Duration::from_secs(600))
            .repeat_window(Duration::ZERO)
            .serve_health("127.0.0.1:0")
            .add(named(stage(&log, "feed", &hanging)))
            .add(named(stage(&log, "gateway", &hanging)))
            .depends_on("feed");
        let handle = supervisor.handle();
        let signalled = async {
            let address = http_client::address_of(&handle).await;
            handle.started().await.expect("every service starts");
            assert_eq!(http_client::get(address, "/readyz").await.status, 200);
            raise("TERM").await;
            http_client::until("readiness to turn false", || handle.is_stopping()).await;
            // Not ready, over HTTP, while every service still runs and serves.
            assert_eq!(http_client::get(address, "/readyz").await.status, 503);
            assert!(
                handle
                    .statuses()
                    .iter()
                    .all(|(_, status)| *status == Running),
                "{:?}",
                handle.statuses()
            );
            assert_eq!(log.count("cleanup:gateway"), 0);
            raise("TERM").await;
        };
        let (report, ()) = tokio::join!(supervisor.run_until_signal(), signalled);
        assert!(report.is_success(), "{:?}", report.errors());
        assert_eq!(
            report.code(),
            0,
            "the second signal ends the drain; it forces nothing"
        );
        let cleanups: Vec<String> = log
            .entries()
            .into_iter()
            .filter(|entry| entry.starts_with("cleanup:"))
            .collect();
        assert_eq!(cleanups, ["cleanup:gateway", "cleanup:feed"]);
    });
}
