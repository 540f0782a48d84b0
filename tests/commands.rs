//! `SupervisorHandle::stop(name)` and `restart(name)`: one service and its dependents
//! stopped or restarted by the program while the supervisor runs, in dependency order;
//! a stop on request that is not a failure; commands before, during and after a run.
//! Readiness and `/health` are probed with a real HTTP client.
//!
//! Apart from the probe test, the clock is paused and backoff jitter is 0.

mod common;
mod http_client;
mod pipeline;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Log;
use hyper::StatusCode;
use pipeline::{Levers, Started, part, pipeline};
use service_runtime::ServiceStatus::{Error, Running, Stopped};
use service_runtime::{
    CommandError, HealthStatus, Restart, RestartPolicy, Supervisor, SupervisorError,
    SupervisorHandle,
};

fn statuses(handle: &SupervisorHandle) -> Vec<(String, service_runtime::ServiceStatus)> {
    handle.statuses()
}

fn named(
    pairs: &[(&str, service_runtime::ServiceStatus)],
) -> Vec<(String, service_runtime::ServiceStatus)> {
    pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
}

#[tokio::test(start_paused = true)]
async fn stop_stops_the_service_and_its_dependents_first_and_keeps_them_stopped() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let before = log.entries().len();

    handle.stop("strategy").await.unwrap();
    assert_eq!(
        log.entries()[before..],
        ["cleanup orders", "cleanup strategy"]
    );
    assert_eq!(
        statuses(&handle),
        named(&[
            ("feed", Running),
            ("strategy", Stopped),
            ("orders", Stopped),
            ("audit", Running)
        ])
    );
    let stats = handle.stats();
    let held: Vec<bool> = stats.iter().map(|s| s.stopped_on_request).collect();
    assert_eq!(held, [false, true, true, false]);
    assert!(stats.iter().all(|s| !s.completed && s.restarts == 0));

    // Not restarted, permanent as they are; healthy, as they were stopped on purpose.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.entries().len(), before + 2, "{:?}", log.entries());
    let health = handle.health().await;
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(
        health.services["strategy"].reason.as_deref(),
        Some("stopped on request")
    );
    // Stopping it again does nothing.
    handle.stop("orders").await.unwrap();
    assert_eq!(log.entries().len(), before + 2);

    handle.shutdown();
    let report = run.await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.code(), 0);
}

#[tokio::test(start_paused = true)]
async fn restart_stops_dependents_first_then_starts_in_order() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;
    let before = log.entries().len();

    handle.restart("feed").await.unwrap();
    assert_eq!(
        log.entries()[before..],
        [
            "cleanup orders",
            "cleanup strategy",
            "cleanup feed",
            "init feed",
            "init strategy",
            "init orders"
        ]
    );
    assert!(statuses(&handle).iter().all(|(_, s)| *s == Running));
    let restarts: Vec<u32> = handle.stats().iter().map(|s| s.restarts).collect();
    assert_eq!(restarts, [1, 1, 1, 0]);

    // Supervised as before: a crash of the feed is restarted with its dependents.
    levers[0].crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init feed"), 3, "{:?}", log.entries());
    assert_eq!(log.count("init orders"), 3);
    assert!(statuses(&handle).iter().all(|(_, s)| *s == Running));

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn restart_starts_what_stop_held_and_it_counts_again() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;

    handle.stop("feed").await.unwrap();
    assert!(handle.stats()[..3].iter().all(|s| s.stopped_on_request));
    handle.restart("feed").await.unwrap();
    assert!(statuses(&handle).iter().all(|(_, s)| *s == Running));
    assert!(handle.stats().iter().all(|s| !s.stopped_on_request));

    // Running again, it is supervised again: a crash of the strategy is restarted.
    levers[1].crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init strategy"), 3, "{:?}", log.entries());
    assert!(statuses(&handle).iter().all(|(_, s)| *s == Running));
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn a_held_dependent_stays_stopped_when_its_dependency_restarts() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;

    handle.stop("orders").await.unwrap();
    levers[0].crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init feed"), 2, "{:?}", log.entries());
    assert_eq!(log.count("init strategy"), 2);
    assert_eq!(
        log.count("init orders"),
        1,
        "held: not restarted with the feed"
    );
    assert_eq!(
        statuses(&handle),
        named(&[
            ("feed", Running),
            ("strategy", Running),
            ("orders", Stopped),
            ("audit", Running)
        ])
    );
    handle.shutdown();
    let report = run.await.unwrap();
    // The feed's crash, healed by a restart, is on record; the held orders are not.
    assert_eq!(report.restarts().len(), 1, "{report:?}");
    assert!(report.errors().is_empty(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn restart_supersedes_a_pending_restart() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = Supervisor::new()
        .add(part("feed", &log, &levers[0]))
        .restart(
            RestartPolicy::new(Restart::Permanent)
                .backoff(Duration::from_secs(30), Duration::from_secs(30))
                .jitter(0.0),
        );
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    handle.started().await.unwrap();

    levers[0].crash.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        statuses(&handle),
        named(&[("feed", Stopped)]),
        "waiting out its backoff"
    );
    handle.restart("feed").await.unwrap();
    assert_eq!(statuses(&handle), named(&[("feed", Running)]));
    // The backoff's restart does not come on top of it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.count("init feed"), 2, "{:?}", log.entries());
    assert_eq!(log.count("cleanup feed"), 1);
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn a_failed_cleanup_is_returned_and_reported() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;

    levers[3].fail_cleanup.store(true, Ordering::SeqCst);
    let error = handle.stop("audit").await.unwrap_err();
    let CommandError::Failed(errors) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(errors.len(), 1);
    let text = error.to_string();
    assert!(
        text.contains("audit") && text.contains("close") && text.contains("flush refused"),
        "{text}"
    );
    assert_eq!(statuses(&handle)[3], ("audit".to_owned(), Error));
    // Not restarted: it was stopped on request.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.count("init audit"), 1);

    handle.shutdown();
    let report = run.await.unwrap();
    assert!(!report.is_success());
    assert!(
        matches!(report.errors(), [SupervisorError::Stop(e)] if e.to_string().contains("flush refused")),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_returned_and_answered_by_the_policy() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;

    levers[1].fail_init.store(true, Ordering::SeqCst);
    let error = handle.restart("strategy").await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("strategy") && text.contains("no connection"),
        "{text}"
    );
    // Its dependent was not started over it; the policy restarts both after the backoff.
    assert_eq!(log.count("init orders"), 1, "{:?}", log.entries());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init strategy"), 3, "{:?}", log.entries());
    assert_eq!(log.count("init orders"), 2);
    assert!(statuses(&handle).iter().all(|(_, s)| *s == Running));
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_name_is_refused_with_the_names_known() {
    let Started {
        log: _,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let error = handle.restart("fed").await.unwrap_err();
    assert!(matches!(&error, CommandError::UnknownService { name, .. } if name == "fed"));
    assert_eq!(
        error.to_string(),
        "no service is named `fed`; the services are: feed, strategy, orders, audit"
    );
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn a_command_before_the_run_waits_for_it_and_one_after_is_refused() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = pipeline(&log, &levers);
    let handle = supervisor.handle();
    let early = tokio::spawn({
        let handle = handle.clone();
        async move { handle.stop("audit").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!early.is_finished(), "waits for the run");
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    early.await.unwrap().unwrap();
    assert!(handle.stats()[3].stopped_on_request);
    assert_eq!(log.count("init audit"), 1, "started, then stopped");

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
    let late = handle.restart("audit").await.unwrap_err();
    assert!(matches!(late, CommandError::NotRunning), "{late:?}");
}

#[tokio::test]
async fn a_service_stopped_on_request_leaves_the_process_ready() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = pipeline(&log, &levers).serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = http_client::address_of(&handle).await;
    handle.started().await.unwrap();

    handle.stop("orders").await.unwrap();
    let ready = http_client::get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let health = http_client::get(address, "/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let health = health.json();
    assert_eq!(health["services"]["orders"]["status"], "healthy");
    assert_eq!(health["services"]["orders"]["reason"], "stopped on request");

    handle.restart("orders").await.unwrap();
    let health = http_client::get(address, "/health").await.json();
    assert_eq!(
        health["services"]["orders"]["reason"],
        serde_json::Value::Null
    );
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}
