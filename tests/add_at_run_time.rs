//! `SupervisorHandle::add`: a service added to a running supervisor (OTP's
//! `start_child`) is checked, started, then supervised like the services added before
//! the run; one whose start fails is not added; additions before, during and after a
//! run. Readiness and `/health` are probed with a real HTTP client.
//!
//! Apart from the probe test, the clock is paused and backoff jitter is 0.

mod common;
mod http_client;
mod pipeline;

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Log;
use hyper::StatusCode;
use pipeline::{Levers, Started, part, pipeline};
use service_runtime::ServiceStatus::{Error, Running, Stopped};
use service_runtime::{CommandError, HealthStatus, Restart, RestartPolicy, ServiceStatus};

fn statuses(handle: &service_runtime::SupervisorHandle) -> Vec<(String, ServiceStatus)> {
    handle.statuses()
}

#[tokio::test(start_paused = true)]
async fn an_added_service_runs_is_listed_and_stops_before_what_it_depends_on() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;

    let extra = Levers::default();
    let risk = handle
        .add(part("risk", &log, &extra))
        .depends_on("strategy")
        .await
        .unwrap();
    assert_eq!(risk.status(), Running);
    assert_eq!(statuses(&handle).len(), 5);
    assert_eq!(statuses(&handle)[4], ("risk".to_owned(), Running));
    let stats = handle.stats();
    assert_eq!(stats[4].name, "risk");
    assert!(
        stats[4].last_start_duration.is_some(),
        "its start is on record"
    );
    assert!(handle.get_named::<pipeline::Part>("risk").is_ok());

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
    let cleanups: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("cleanup"))
        .collect();
    let at = |name: &str| cleanups.iter().position(|e| e == name).unwrap();
    assert!(at("cleanup risk") < at("cleanup strategy"), "{cleanups:?}");
    assert!(at("cleanup strategy") < at("cleanup feed"), "{cleanups:?}");
}

#[tokio::test(start_paused = true)]
async fn an_added_service_is_restarted_by_its_policy_and_with_its_dependency() {
    let Started {
        log,
        levers,
        handle,
        run,
    } = Started::start().await;
    let extra = Levers::default();
    // No policy chosen for it: the supervisor's default (permanent, 1 s) applies.
    handle
        .add(part("risk", &log, &extra))
        .depends_on("feed")
        .await
        .unwrap();

    extra.crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init risk"), 2, "{:?}", log.entries());
    assert_eq!(statuses(&handle)[4], ("risk".to_owned(), Running));

    levers[0].crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.count("init feed"), 2);
    assert_eq!(log.count("init risk"), 3, "restarted with the feed");
    assert!(
        statuses(&handle)
            .iter()
            .all(|(_, status)| *status == Running)
    );

    handle.shutdown();
    let report = run.await.unwrap();
    assert!(report.is_success(), "{report:?}");
    let risk = report
        .restarts_of("risk")
        .expect("its restart is on record");
    assert_eq!(risk.count, 1, "{risk:?}");
}

#[tokio::test(start_paused = true)]
async fn a_policy_chosen_for_the_addition_is_kept() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let extra = Levers::default();
    handle
        .add(part("report", &log, &extra))
        .restart(RestartPolicy::new(Restart::Temporary))
        .await
        .unwrap();

    extra.crash.notify_one();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.count("init report"), 1, "temporary: not restarted");
    // Given up on: stopped at once, as any service that is not restarted.
    assert_eq!(statuses(&handle)[4], ("report".to_owned(), Stopped));
    assert_eq!(log.count("cleanup report"), 1);

    handle.shutdown();
    let report = run.await.unwrap();
    assert_eq!(report.errors().len(), 1, "{report:?}");
    assert!(report.errors()[0].to_string().contains("report"));
}

#[tokio::test(start_paused = true)]
async fn a_taken_name_or_a_missing_dependency_is_refused_with_what_to_do() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let extra = Levers::default();

    let taken = handle.add(part("audit", &log, &extra)).await.unwrap_err();
    assert!(matches!(&taken, CommandError::NameTaken { name } if name == "audit"));
    assert_eq!(
        taken.to_string(),
        "a service is named `audit` already; give the new one another name with \
         `ServiceConfig::name`"
    );

    let unknown = handle
        .add(part("risk", &log, &extra))
        .depends_on("fed")
        .await
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "service `risk` depends on `fed`, which is not a service of the supervisor; the \
         services are: feed, strategy, orders, audit"
    );

    handle.stop("orders").await.unwrap();
    let held = handle
        .add(part("risk", &log, &extra))
        .depends_on("orders")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &held,
            CommandError::DependencyNotRunning {
                status: Stopped,
                ..
            }
        ),
        "{held:?}"
    );
    assert_eq!(
        held.to_string(),
        "service `risk` depends on `orders`, which is stopped, not running; add it once \
         `orders` runs"
    );
    assert_eq!(log.count("init risk"), 0, "nothing was started");
    assert_eq!(statuses(&handle).len(), 4, "nothing was added");

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn a_service_whose_start_fails_is_not_added_and_can_be_added_again() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let extra = Levers::default();
    extra.fail_init.store(true, Ordering::SeqCst);
    let risk = part("risk", &log, &extra);

    let failed = handle.add(risk.clone()).await.unwrap_err();
    let CommandError::Failed(errors) = &failed else {
        panic!("not Failed: {failed:?}");
    };
    assert_eq!(errors.len(), 1);
    assert!(failed.to_string().contains("risk"), "{failed}");
    assert!(failed.to_string().contains("no connection"), "{failed}");
    assert_eq!(statuses(&handle).len(), 4, "not added");
    assert_eq!(
        risk.status(),
        Error,
        "the handle passed in keeps the service"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        log.count("init risk"),
        1,
        "no policy answers a failed addition"
    );

    // The lever is one-shot: the second start succeeds.
    handle.add(risk.clone()).await.unwrap();
    assert_eq!(statuses(&handle).len(), 5);
    assert_eq!(risk.status(), Running);

    handle.shutdown();
    let report = run.await.unwrap();
    assert!(
        report.is_success(),
        "a refused addition is not the run's failure"
    );
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_an_added_service_from_its_listing_on() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = pipeline(&log, &levers);
    let handle = supervisor.handle();
    let mut changes = handle.subscribe();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    handle.started().await.unwrap();
    while changes.try_recv().is_some() {}

    let extra = Levers::default();
    handle.add(part("risk", &log, &extra)).await.unwrap();
    extra.crash.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen = Vec::new();
    while let Some(change) = changes.try_recv() {
        seen.push((change.service.to_string(), change.from, change.to));
    }
    assert!(
        seen.iter().all(|(service, _, _)| service == "risk"),
        "{seen:?}"
    );
    assert_eq!(
        seen.first().map(|c| c.2),
        Some(Error),
        "the crash: {seen:?}"
    );
    assert_eq!(
        seen.last().map(|c| c.2),
        Some(Running),
        "the restart: {seen:?}"
    );

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn an_addition_before_the_run_waits_and_one_after_is_refused() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = pipeline(&log, &levers);
    let handle = supervisor.handle();
    let extra = Levers::default();
    let early = tokio::spawn(
        handle
            .add(part("risk", &log, &extra))
            .depends_on("orders")
            .into_future(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!early.is_finished(), "waits for the run");
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let risk = early.await.unwrap().unwrap();
    assert_eq!(risk.status(), Running);
    assert_eq!(log.count("init orders"), 1);

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
    assert_eq!(risk.status(), Stopped, "stopped by the shutdown");
    let late = handle.add(part("late", &log, &extra)).await.unwrap_err();
    assert!(matches!(late, CommandError::NotRunning), "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_the_start_of_an_addition_stops_it_too() {
    let Started {
        log,
        levers: _,
        handle,
        run,
    } = Started::start().await;
    let extra = Levers::default();
    extra.hold_init.store(true, Ordering::SeqCst);
    let risk = part("risk", &log, &extra);
    let adding = tokio::spawn(handle.add(risk.clone()).into_future());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(risk.status(), ServiceStatus::Starting);

    handle.shutdown();
    let interrupted = adding.await.unwrap().unwrap_err();
    assert!(
        matches!(interrupted, CommandError::Interrupted),
        "{interrupted:?}"
    );
    extra.release.notify_one();
    let report = run.await.unwrap();
    assert_eq!(
        risk.status(),
        Stopped,
        "the shutdown stopped it: {report:?}"
    );
    assert!(report.errors().is_empty(), "{report:?}");
    assert_eq!(
        log.count("cleanup risk"),
        0,
        "its init never finished: nothing to undo"
    );
}

#[tokio::test]
async fn an_added_service_counts_in_readiness_and_health() {
    let log = Log::default();
    let levers: [Levers; 4] = Default::default();
    let supervisor = pipeline(&log, &levers).serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = http_client::address_of(&handle).await;
    handle.started().await.unwrap();

    let extra = Levers::default();
    handle
        .add(part("risk", &log, &extra))
        .depends_on("feed")
        .await
        .unwrap();
    let health = http_client::get(address, "/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let services = &health.json()["services"];
    assert_eq!(services["risk"]["status"], "healthy", "{}", health.body);

    // Permanent with a 1 s backoff: stopped, then starting, for a moment.
    extra.crash.notify_one();
    http_client::until("risk is not running", || handle.statuses()[4].1 != Running).await;
    let ready = http_client::get(address, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(ready.body.contains("risk"), "{}", ready.body);
    http_client::until("risk runs again", || handle.statuses()[4].1 == Running).await;
    let ready = http_client::get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(
        handle.health().await.services["risk"].status,
        HealthStatus::Healthy
    );

    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}
