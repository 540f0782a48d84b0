//! Supervisor restart semantics: what each `Restart` kind restarts, backoff reset, the
//! restart intensity window, stats while running, and restarts that wait for cleanup.
//!
//! Every schedule is exact: the clock is paused and jitter is 0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::Log;
use service_runtime::ServiceStatus::{Running, Stopped};
use service_runtime::{
    Managed, Restart, RestartPolicy, Service, ServiceStats, Shutdown, Supervisor, SupervisorError,
    lifecycle,
};
use tokio::time::Instant;

/// How one incarnation's run loop ends (unless shutdown comes first).
#[derive(Clone, Copy, Debug)]
enum Exit {
    /// Runs until shutdown is requested.
    Never,
    /// Returns `Ok(())` by itself after this long.
    Ok(Duration),
    /// Returns `Err` after this long.
    Err(Duration),
}

/// A worker whose run loop follows a script, one entry per incarnation (the last entry
/// repeats), and whose hooks log themselves with the paused clock's time in ms.
#[derive(Service)]
#[service(stop_timeout = "60s")]
struct Worker {
    log: Log,
    label: &'static str,
    epoch: Instant,
    script: Vec<Exit>,
    /// Incarnations started so far (counted by the init hook).
    incarnation: usize,
    cleanup_delay: Duration,
    /// Set while a cleanup hook runs; an init seeing it logs an overlap.
    cleaning: Arc<AtomicBool>,
}

impl Worker {
    fn mark(&self, what: &str) {
        self.log.push(format!(
            "{what}:{}@{}",
            self.label,
            self.epoch.elapsed().as_millis()
        ));
    }
}

#[lifecycle]
impl Worker {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.mark("init");
        if self.cleaning.load(Ordering::SeqCst) {
            self.mark("OVERLAP");
        }
        self.incarnation += 1;
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.cleaning.store(true, Ordering::SeqCst);
        self.mark("cleanup");
        tokio::time::sleep(self.cleanup_delay).await;
        self.mark("cleaned");
        self.cleaning.store(false, Ordering::SeqCst);
        Ok(())
    }

    #[run]
    async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let index = (self.incarnation - 1).min(self.script.len() - 1);
        let (after, ok) = match self.script[index] {
            Exit::Never => {
                shutdown.requested().await;
                return Ok(());
            }
            Exit::Ok(after) => (after, true),
            Exit::Err(after) => (after, false),
        };
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = tokio::time::sleep(after) => if ok {
                self.mark("exit");
                Ok(())
            } else {
                self.mark("fail");
                Err(std::io::Error::other(format!("{} lost its feed", self.label)))
            },
        }
    }
}

fn worker(log: &Log, label: &'static str, script: &[Exit]) -> Worker {
    Worker {
        log: log.clone(),
        label,
        epoch: Instant::now(),
        script: script.to_vec(),
        incarnation: 0,
        cleanup_delay: Duration::ZERO,
        cleaning: Arc::default(),
    }
}

fn managed(worker: Worker) -> Managed<Worker> {
    let name = worker.label;
    Managed::with_config(worker, Worker::config().name(name))
}

/// 3 restarts within 10 s, backoff 100 ms doubling up to 5 s, no jitter.
fn exact(restart: Restart) -> RestartPolicy {
    RestartPolicy::new(restart)
        .max_restarts(3, Duration::from_secs(10))
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(0.0)
}

/// The log entries of one worker.
fn of(log: &Log, label: &str) -> Vec<String> {
    let suffix = format!(":{label}@");
    log.entries()
        .into_iter()
        .filter(|e| e.contains(&suffix))
        .collect()
}

fn stats_of<'a>(stats: &'a [ServiceStats], name: &str) -> &'a ServiceStats {
    stats
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stats for `{name}`"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn transient_restarts_a_failure_but_not_a_run_loop_that_returned_ok() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(worker(&log, "steady", &[Exit::Never])))
        .add(managed(worker(&log, "batch", &[Exit::Ok(secs(1))])))
        .restart(exact(Restart::Transient))
        .add(managed(worker(
            &log,
            "crashy",
            &[Exit::Err(secs(1)), Exit::Never],
        )))
        .restart(exact(Restart::Transient));
    let handle = supervisor.handle();
    let probe = handle.clone();
    let report = supervisor
        .run_until(async move {
            tokio::time::sleep(secs(10)).await;
            let statuses: Vec<_> = probe.statuses().into_iter().map(|(_, s)| s).collect();
            assert_eq!(statuses, [Running, Stopped, Running]);
        })
        .await;

    assert_eq!(
        of(&log, "batch"),
        [
            "init:batch@0",
            "exit:batch@1000",
            "cleanup:batch@1000",
            "cleaned:batch@1000"
        ],
        "finished its work: stopped and never started again"
    );
    assert_eq!(
        of(&log, "crashy"),
        [
            "init:crashy@0",
            "fail:crashy@1000",
            "cleanup:crashy@1000",
            "cleaned:crashy@1000",
            "init:crashy@1100",
            "cleanup:crashy@10000",
            "cleaned:crashy@10000"
        ],
        "a failure is restarted after the first backoff"
    );
    let stats = handle.stats();
    assert_eq!(stats_of(&stats, "batch").restarts, 0);
    assert_eq!(stats_of(&stats, "batch").status, Stopped);
    assert_eq!(stats_of(&stats, "crashy").restarts, 1);
    assert_eq!(stats_of(&stats, "steady").restarts, 0);
    // The recovered failure is no error; it is counted in the service's restart record.
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    match report.restarts() {
        [record] => {
            assert_eq!((&*record.service, record.count), ("crashy", 1));
            assert_eq!(
                record.last_cause.to_string(),
                "service `crashy`: run hook `work` failed: crashy lost its feed"
            );
        }
        other => panic!("only the recovered failure is recorded: {other:?}"),
    }
    assert!(report.is_success());
    assert_eq!(report.code(), 0);
}

#[tokio::test(start_paused = true)]
async fn temporary_reports_a_failure_without_restarting_and_the_others_keep_running() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(worker(&log, "steady", &[Exit::Never])))
        .add(managed(worker(&log, "flaky", &[Exit::Err(secs(1))])))
        .restart(exact(Restart::Temporary))
        .add(managed(worker(&log, "oneshot", &[Exit::Ok(secs(2))])))
        .restart(exact(Restart::Temporary))
        .add(managed(worker(&log, "tail", &[Exit::Never])));
    let handle = supervisor.handle();
    let probe = handle.clone();
    let report = supervisor
        .run_until(async move {
            tokio::time::sleep(secs(5)).await;
            let mid = probe.statuses();
            tokio::time::sleep(secs(5)).await;
            assert_eq!(mid, probe.statuses(), "nothing changes from 5 s to 10 s");
            let statuses: Vec<_> = mid.into_iter().map(|(_, s)| s).collect();
            assert_eq!(statuses, [Running, Stopped, Stopped, Running]);
        })
        .await;

    assert_eq!(
        of(&log, "flaky"),
        [
            "init:flaky@0",
            "fail:flaky@1000",
            // Not restarted, but stopped at once: its cleanup releases what it held.
            "cleanup:flaky@1000",
            "cleaned:flaky@1000"
        ]
    );
    assert_eq!(
        of(&log, "oneshot"),
        [
            "init:oneshot@0",
            "exit:oneshot@2000",
            "cleanup:oneshot@2000",
            "cleaned:oneshot@2000"
        ]
    );
    for label in ["steady", "tail"] {
        assert_eq!(
            of(&log, label),
            [
                format!("init:{label}@0"),
                format!("cleanup:{label}@10000"),
                format!("cleaned:{label}@10000")
            ],
            "{label} ran until the shutdown"
        );
    }
    assert!(handle.stats().iter().all(|s| s.restarts == 0));
    assert!(handle.statuses().iter().all(|(_, s)| *s == Stopped));
    match report.errors() {
        [SupervisorError::Failed(error)] => assert_eq!(
            error.to_string(),
            "service `flaky`: run hook `work` failed: flaky lost its feed"
        ),
        other => panic!("exactly the one unrecovered failure: {other:?}"),
    }
    assert_eq!(report.code(), 1);
    assert!(!report.is_success());
}

#[tokio::test(start_paused = true)]
async fn permanent_restarts_a_run_loop_that_returned_ok() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(worker(
            &log,
            "cron",
            &[Exit::Ok(secs(1)), Exit::Ok(secs(1)), Exit::Never],
        )))
        .restart(exact(Restart::Permanent));
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(10))).await;
    let inits: Vec<_> = of(&log, "cron")
        .into_iter()
        .filter(|e| e.starts_with("init") || e.starts_with("exit"))
        .collect();
    // Returns 1 s after each start; backoff 100 ms, then 200 ms.
    assert_eq!(
        inits,
        [
            "init:cron@0",
            "exit:cron@1000",
            "init:cron@1100",
            "exit:cron@2100",
            "init:cron@2300"
        ]
    );
    assert_eq!(handle.stats()[0].restarts, 2);
    assert!(
        report.errors().is_empty(),
        "an exit is no error: {:?}",
        report.errors()
    );
    assert!(report.is_success());
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_after_a_stable_run_and_keeps_doubling_otherwise() {
    let log = Log::default();
    let policy = exact(Restart::Transient)
        .max_restarts(10, secs(60))
        .backoff(secs(1), secs(60))
        .reset_after(secs(30));
    let supervisor = Supervisor::new()
        .add(managed(worker(
            &log,
            "stable",
            &[
                Exit::Err(secs(1)),
                Exit::Err(secs(40)),
                Exit::Err(secs(1)),
                Exit::Never,
            ],
        )))
        .restart(policy)
        .add(managed(worker(
            &log,
            "quick",
            &[
                Exit::Err(secs(1)),
                Exit::Err(secs(5)),
                Exit::Err(secs(5)),
                Exit::Never,
            ],
        )))
        .restart(policy);
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(60))).await;
    let starts = |label| -> Vec<String> {
        of(&log, label)
            .into_iter()
            .filter(|e| e.starts_with("init") || e.starts_with("fail"))
            .collect()
    };
    assert_eq!(
        starts("stable"),
        [
            "init:stable@0",
            "fail:stable@1000",
            "init:stable@2000", // first delay: 1 s
            "fail:stable@42000",
            "init:stable@43000", // ran 40 s >= 30 s: the first delay again
            "fail:stable@44000",
            "init:stable@46000", // ran 1 s: doubled from the reset, 2 s
        ]
    );
    assert_eq!(
        starts("quick"),
        [
            "init:quick@0",
            "fail:quick@1000",
            "init:quick@2000", // 1 s
            "fail:quick@7000",
            "init:quick@9000", // ran 5 s < 30 s: 2 s
            "fail:quick@14000",
            "init:quick@18000", // 4 s
        ]
    );
    let stats = handle.stats();
    assert_eq!(stats_of(&stats, "stable").restarts, 3);
    assert_eq!(stats_of(&stats, "quick").restarts, 3);
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(report.restarts_of("stable").map(|r| r.count), Some(3));
    assert_eq!(report.restarts_of("quick").map(|r| r.count), Some(3));
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test(start_paused = true)]
async fn failures_spaced_wider_than_the_window_never_escalate() {
    // At most 1 restart within 10 s, a constant 100 ms backoff.
    let policy = exact(Restart::Transient)
        .max_restarts(1, secs(10))
        .backoff(Duration::from_millis(100), Duration::from_millis(100));

    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(worker(&log, "periodic", &[Exit::Err(secs(15))])))
        .restart(policy);
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(70))).await;
    let inits: Vec<_> = of(&log, "periodic")
        .into_iter()
        .filter(|e| e.starts_with("init"))
        .collect();
    assert_eq!(
        inits,
        [
            "init:periodic@0",
            "init:periodic@15100",
            "init:periodic@30200",
            "init:periodic@45300",
            "init:periodic@60400"
        ],
        "every failure comes 15 s after the last restart, outside the 10 s window"
    );
    assert_eq!(handle.stats()[0].restarts, 4);
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    let record = report.restarts_of("periodic").expect("periodic's record");
    assert_eq!(record.count, 4);
    assert_eq!(record.last - record.first, Duration::from_millis(45_300));
    assert!(report.is_success());

    // The same policy escalates failures 5 s apart: the second comes 5 s after the
    // first restart, inside the window.
    let log = Log::default();
    let report = Supervisor::new()
        .add(managed(worker(&log, "hasty", &[Exit::Err(secs(5))])))
        .restart(policy)
        .run_until(tokio::time::sleep(secs(70)))
        .await;
    let inits: Vec<_> = of(&log, "hasty")
        .into_iter()
        .filter(|e| e.starts_with("init"))
        .collect();
    assert_eq!(inits, ["init:hasty@0", "init:hasty@5100"]);
    assert!(matches!(
        report.errors().last(),
        Some(SupervisorError::Escalated { service, restarts: 1, within, .. })
            if &**service == "hasty" && *within == secs(10)
    ));
    assert_eq!(report.code(), 1);
}

/// What the stats scenario saw: stats read while running, the final stats, the report.
struct StatsOutcome {
    reads_in_runtime: usize,
    reads_on_thread: usize,
    during: Vec<Vec<ServiceStats>>,
    after: Vec<ServiceStats>,
    report_ok: bool,
}

/// `steady` (cleanup 3 s) runs throughout; `flaky` fails 1 s after each start and is
/// restarted after 100 ms, 9 times in 10 s. `stats()` is read from the run's own future
/// every 250 ms and, all along, from another OS thread.
async fn stats_scenario() -> StatsOutcome {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(Worker {
            cleanup_delay: secs(3),
            ..worker(&log, "steady", &[Exit::Never])
        }))
        .add(managed(worker(&log, "flaky", &[Exit::Err(secs(1))])))
        .restart(
            exact(Restart::Transient)
                .max_restarts(100, secs(10))
                .backoff(Duration::from_millis(100), Duration::from_millis(100)),
        );
    let handle = supervisor.handle();

    let stop = Arc::new(AtomicBool::new(false));
    let thread_reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let handle = handle.clone();
        let stop = stop.clone();
        let reads = thread_reads.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let stats = handle.stats();
                assert_eq!(stats.len(), 2);
                reads.fetch_add(1, Ordering::SeqCst);
                std::thread::yield_now();
            }
        })
    };

    let probe = handle.clone();
    let mut during = Vec::new();
    let report = supervisor
        .run_until(async {
            let began = Instant::now();
            while began.elapsed() < secs(10) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                during.push(probe.stats());
                // The paused clock runs the whole scenario in milliseconds: let the
                // other thread read at least once per tick, so its reads really overlap
                // the run (bounded in real time; the caller's watchdog catches a hang).
                let seen = thread_reads.load(Ordering::SeqCst);
                let waiting = std::time::Instant::now();
                while thread_reads.load(Ordering::SeqCst) == seen
                    && waiting.elapsed() < Duration::from_secs(5)
                {
                    std::thread::yield_now();
                }
            }
        })
        .await;
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("the reader thread did not panic");
    StatsOutcome {
        reads_in_runtime: during.len(),
        reads_on_thread: thread_reads.load(Ordering::SeqCst),
        during,
        after: handle.stats(),
        report_ok: report.is_success(),
    }
}

/// Regression: `SupervisorHandle::stats()` once deadlocked. The scenario runs on its own
/// thread so a deadlock fails this test after a real-time limit instead of hanging it.
#[test]
fn stats_are_readable_while_the_supervisor_runs_and_record_the_final_shutdown() {
    let (done, outcome) = std::sync::mpsc::channel();
    let scenario = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let _ = done.send(runtime.block_on(stats_scenario()));
    });
    let outcome = match outcome.recv_timeout(Duration::from_secs(30)) {
        Ok(outcome) => outcome,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(scenario.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the supervisor or a stats() reader is deadlocked")
        }
    };
    scenario.join().unwrap();

    assert_eq!(outcome.reads_in_runtime, 40);
    assert!(outcome.reads_on_thread >= 40, "{}", outcome.reads_on_thread);
    assert!(outcome.report_ok);
    // While running: restarts only grow, and nothing has stopped `steady` yet.
    let mut last = 0;
    for stats in &outcome.during {
        let names: Vec<_> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["steady", "flaky"]);
        assert!(stats[1].restarts >= last);
        last = stats[1].restarts;
        assert_eq!(stats[0].status, Running);
        assert_eq!(stats[0].last_stop_duration, None);
        assert_eq!(stats[0].last_start_duration, Some(Duration::ZERO));
    }
    assert_eq!(last, 9, "restarted at 1.1 s, 2.2 s, ... 9.9 s");

    let steady = stats_of(&outcome.after, "steady");
    assert_eq!(steady.status, Stopped);
    assert_eq!(steady.restarts, 0);
    assert_eq!(
        steady.last_stop_duration,
        Some(secs(3)),
        "the final shutdown's stop (its 3 s cleanup) is recorded"
    );
    let flaky = stats_of(&outcome.after, "flaky");
    assert_eq!(flaky.status, Stopped);
    assert_eq!(flaky.restarts, 9);
    assert_eq!(flaky.last_stop_duration, Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_failure_waits_for_the_old_cleanup() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(Worker {
            cleanup_delay: secs(2),
            ..worker(&log, "slow", &[Exit::Err(secs(1)), Exit::Never])
        }))
        .restart(exact(Restart::Transient));
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(10))).await;
    assert_eq!(
        of(&log, "slow"),
        [
            "init:slow@0",
            "fail:slow@1000",
            // Stopped at once (resources released during the backoff)...
            "cleanup:slow@1000",
            "cleaned:slow@3000",
            // ...and restarted when the cleanup is done, though the 100 ms backoff
            // was due at 1100.
            "init:slow@3000",
            "cleanup:slow@10000",
            "cleaned:slow@12000"
        ]
    );
    assert_eq!(handle.stats()[0].restarts, 1);
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_an_exit_waits_for_the_old_cleanup() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(Worker {
            cleanup_delay: secs(2),
            ..worker(&log, "cycler", &[Exit::Ok(secs(1)), Exit::Never])
        }))
        .restart(exact(Restart::Permanent));
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(10))).await;
    assert_eq!(
        of(&log, "cycler"),
        [
            "init:cycler@0",
            "exit:cycler@1000",
            // The service stops itself; the supervisor sees `stopped` only when the
            // cleanup is done and counts the backoff from there.
            "cleanup:cycler@1000",
            "cleaned:cycler@3000",
            "init:cycler@3100",
            "cleanup:cycler@10000",
            "cleaned:cycler@12000"
        ]
    );
    assert_eq!(handle.stats()[0].restarts, 1);
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test(start_paused = true)]
async fn a_default_restart_applies_to_every_service_whose_policy_was_not_chosen() {
    let log = Log::default();
    let script = [Exit::Ok(secs(1)), Exit::Never];
    let chosen_in_config = Managed::with_config(
        worker(&log, "configured", &script),
        Worker::config()
            .name("configured")
            .restart(exact(Restart::Transient)),
    );
    // Set before the services are added, and still applies to them.
    let supervisor = Supervisor::new()
        .default_restart(exact(Restart::Permanent))
        .add(managed(worker(&log, "plain", &script)))
        .add(managed(worker(&log, "chosen", &script)))
        .restart(exact(Restart::Transient))
        .add(chosen_in_config);
    let handle = supervisor.handle();
    let report = supervisor.run_until(tokio::time::sleep(secs(5))).await;
    assert!(report.is_success(), "{:?}", report.errors());
    let inits = |label| {
        of(&log, label)
            .into_iter()
            .filter(|e| e.starts_with("init"))
            .count()
    };
    // `permanent` restarts a loop that returned `Ok`; `transient` does not.
    assert_eq!(inits("plain"), 2, "the default applies");
    assert_eq!(inits("chosen"), 1, "`restart()` after `add` wins");
    assert_eq!(
        inits("configured"),
        1,
        "the service's own configuration wins"
    );
    assert_eq!(stats_of(&handle.stats(), "plain").restarts, 1);
}
