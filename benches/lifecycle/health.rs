//! Item 3: health aggregation, against a bare `join_all` of the same check futures.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use service_runtime::{HealthStatus, Managed, Service, Supervisor, SupervisorHandle};

use crate::services::{CHECK_DELAY, Instant100, OneCheck, OneSlowCheck, Slow100, named};
use crate::{Settings, median, num, ratio, report, run_child};

/// The bare baseline: `count` check futures joined, then the worst status.
async fn bare(count: usize, slow: bool) -> HealthStatus {
    let checks = (0..count).map(|_| async move {
        if slow {
            tokio::time::sleep(CHECK_DELAY).await;
        }
        HealthStatus::Healthy
    });
    join_all(checks)
        .await
        .into_iter()
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

/// Median ns of `ours` and of `baseline`, alternated `iterations` times.
async fn compare<A, B>(
    iterations: usize,
    mut ours: impl FnMut() -> A,
    mut baseline: impl FnMut() -> B,
) -> (f64, f64)
where
    A: Future<Output = usize>,
    B: Future<Output = HealthStatus>,
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let began = Instant::now();
        let checks = ours().await;
        a.push(began.elapsed().as_nanos() as f64);
        assert!(checks > 0);
        let began = Instant::now();
        assert_eq!(baseline().await, HealthStatus::Healthy);
        b.push(began.elapsed().as_nanos() as f64);
    }
    (median(&mut a), median(&mut b))
}

/// Runs `bench` against a supervisor of `services` once they all run, then stops them.
async fn with_supervisor<S: Service, T>(
    services: impl Iterator<Item = Managed<S>>,
    bench: impl AsyncFnOnce(SupervisorHandle) -> T,
) -> T {
    let mut supervisor = Supervisor::new();
    for service in services {
        supervisor = supervisor.add(service);
    }
    let handle = supervisor.handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = supervisor.run_until(async move {
        let _ = stop_rx.await;
    });
    let measure = async {
        while !handle.has_started() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let result = bench(handle).await;
        let _ = stop_tx.send(());
        result
    };
    let (report, result) = tokio::join!(run, measure);
    assert!(report.is_success(), "{:?}", report.errors());
    result
}

/// The number of checks a supervisor report aggregated (one per dependency of each service).
fn supervisor_checks(health: &service_runtime::SupervisorHealth) -> usize {
    assert_eq!(health.status, HealthStatus::Healthy);
    health
        .services
        .values()
        .map(|report| report.dependencies.len())
        .sum()
}

/// Whether to run the case `label`: all of them, or only the one named by the
/// `HEALTH_CASE` environment variable (to profile one case alone, e.g. under callgrind).
fn wanted(label: &str) -> bool {
    std::env::var("HEALTH_CASE").map_or(true, |only| only == label)
}

/// The case `label`, unless excluded: `Managed::health` of one `service` against a bare
/// `join_all` of `checks` futures (10 ms each when `slow`).
async fn one_service<S: Service>(
    label: &str,
    service: S,
    iterations: usize,
    checks: usize,
    slow: bool,
) {
    if !wanted(label) {
        return;
    }
    let service = Managed::new(service);
    service.start().await.expect("start");
    let (ours, base) = compare(
        iterations,
        || async {
            let health = service.health().await;
            assert_eq!(health.status, HealthStatus::Healthy);
            health.dependencies.len()
        },
        || bare(checks, slow),
    )
    .await;
    report(label, &[("ours", ours), ("base", base)]);
    service.stop().await.expect("stop");
}

/// The case `label`, unless excluded: `SupervisorHandle::health` of `services` against a
/// bare `join_all` of `checks` futures (10 ms each when `slow`).
async fn through_supervisor<S: Service>(
    label: &str,
    services: impl Iterator<Item = Managed<S>>,
    iterations: usize,
    checks: usize,
    slow: bool,
) {
    if !wanted(label) {
        return;
    }
    let (ours, base) = with_supervisor(services, async |handle: SupervisorHandle| {
        compare(
            iterations,
            || async { supervisor_checks(&handle.health().await) },
            || bare(checks, slow),
        )
        .await
    })
    .await;
    report(label, &[("ours", ours), ("base", base)]);
}

pub fn child(quick: bool) {
    let slow = if quick { 5 } else { 21 };
    let instant = if quick { 101 } else { 1001 };
    let rt = crate::runtime("ct");
    rt.block_on(async {
        // 100 checks of 10 ms: in one service, and in 100 services through the supervisor.
        one_service("slow100_one_service", Slow100, slow, 100, true).await;
        let services = (0..100).map(|i| named(OneSlowCheck, format!("slow{i}")));
        through_supervisor("slow100_supervisor", services, slow, 100, true).await;
        // 100 instant checks in one service.
        one_service("instant100_one_service", Instant100, instant, 100, false).await;
        // 1,000 instant checks through the supervisor: 10 services of 100 checks, and
        // 1,000 services of one.
        let services = (0..10).map(|i| named(Instant100, format!("hundred{i}")));
        through_supervisor("instant1000_10_services", services, instant, 1_000, false).await;
        let services = (0..1_000).map(|i| named(OneCheck, format!("one{i}")));
        through_supervisor("instant1000_1000_services", services, instant, 1_000, false).await;

        if !quick {
            // The reference the issue quotes: the same 100 checks one after another.
            let began = Instant::now();
            for _ in 0..100 {
                tokio::time::sleep(CHECK_DELAY).await;
            }
            let sequential = began.elapsed().as_nanos() as f64;
            report("slow100_sequential", &[("base", sequential)]);
        }
    });
}

const CASES: [(&str, &str, Option<f64>); 5] = [
    (
        "slow100_one_service",
        "100 checks of 10 ms, one service (`Managed::health`)",
        Some(1.05),
    ),
    (
        "slow100_supervisor",
        "100 checks of 10 ms, 100 services (`SupervisorHandle::health`)",
        Some(1.05),
    ),
    (
        "instant100_one_service",
        "100 instant checks, one service (`Managed::health`)",
        Some(1.05),
    ),
    (
        "instant1000_10_services",
        "1,000 instant checks, 10 services of 100 (`SupervisorHandle::health`)",
        Some(1.05),
    ),
    (
        "instant1000_1000_services",
        "1,000 instant checks, 1,000 services of 1 (`SupervisorHandle::health`)",
        Some(1.05),
    ),
];

pub fn run(settings: &Settings) -> String {
    let mode = if settings.quick { "quick" } else { "full" };
    let runs = settings.reps.min(3);
    let mut samples: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)> = Default::default();
    for _ in 0..runs {
        for (label, values) in run_child(&["health", mode], Duration::from_secs(300)) {
            let entry = samples.entry(label).or_default();
            if let Some(ours) = values.get("ours") {
                entry.0.push(*ours);
            }
            entry.1.push(values["base"]);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 3. Health aggregation\n\n\
         One aggregation, median over {} iterations (ours and the baseline alternated) and {runs} \
         processes; current-thread runtime. The baseline is `futures::future::join_all` of the same \
         check futures followed by the worst status. Target: ≤ 1.05 × `join_all`.\n",
        if settings.quick {
            "5 (10 ms) / 101 (instant)"
        } else {
            "21 (10 ms) / 1,001 (instant)"
        }
    );
    let _ = writeln!(
        out,
        "| checks | ours | bare `join_all` | ours ÷ `join_all` |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let show = |ns: f64| {
        if ns >= 1e6 {
            format!("{} ms", num(ns / 1e6, 2))
        } else {
            format!("{} µs", num(ns / 1e3, 1))
        }
    };
    for (label, name, target) in CASES {
        let Some((ours, base)) = samples.get_mut(label) else {
            continue;
        };
        let (ours, base) = (median(ours), median(base));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            show(ours),
            show(base),
            ratio(ours / base, target)
        );
    }
    if let Some((_, sequential)) = samples.get_mut("slow100_sequential") {
        let _ = writeln!(
            out,
            "| 100 checks of 10 ms one after another (reference) | | {} | |",
            show(median(sequential))
        );
    }
    out
}
