//! Item 1: start-all and stop-all of N no-op services, ns and bytes per service.
//!
//! Every implementation gives the same guarantee: when "start" returns, every service is
//! running; when "stop" returns, every service has stopped.
//!
//! - `hand`: a hand-written service per task: an `Arc` with an atomic status and a
//!   `Notify`; start spawns the task and waits (oneshot) until it reports running; stop
//!   notifies it and awaits its `JoinHandle`. One service after the other.
//! - `tgs`: tokio-graceful-shutdown's `Toplevel` with N subsystems that wait for
//!   `on_shutdown_requested()`; started when all N have run (a counter), stopped when
//!   `handle_shutdown_requests` returns after `request_shutdown()`.
//! - `managed*`: `Managed::new(x)`, `start().await` one after the other, then `stop().await`
//!   in reverse. `managed` has no hooks, `managed-init` one no-op `#[init]`, `managed-run`
//!   a `#[run]` loop that waits for shutdown (a task per service, like the two peers).
//! - `supervisor*`: `Supervisor::new().add(..)` N times (distinct names, as the
//!   supervisor requires), `run_until(..)`: started when `has_started()`, stopped when
//!   `run_until` returns.
//!
//! Construction counts as part of the start (the supervisor's distinct names are
//! formatted before the clock starts: user data the peers do not have). Bytes are (peak
//! RSS − RSS before the first service) / N, from `/proc/self/status`, each configuration
//! in a fresh process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use service_runtime::{Managed, Service, Supervisor};
use tokio::sync::{Notify, oneshot};
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};

use crate::services::{Noop, WithInit, WithRun, named};
use crate::{Settings, median, num, proc_status_kib, ratio, report, run_child, targets};

/// (name, description, how services start: one after the other or all at once).
const VARIANTS: [(&str, &str, Mode); 10] = [
    ("hand", "hand-written task per service", Mode::Sequential),
    (
        "hand-par",
        "hand-written task per service",
        Mode::Concurrent,
    ),
    ("tgs", "tokio-graceful-shutdown 0.20", Mode::Concurrent),
    ("managed", "ours: `Managed`, no hooks", Mode::Sequential),
    (
        "managed-init",
        "ours: `Managed`, one `#[init]`",
        Mode::Sequential,
    ),
    (
        "managed-run",
        "ours: `Managed`, a `#[run]` loop",
        Mode::Sequential,
    ),
    ("managed-par", "ours: `Managed`, no hooks", Mode::Concurrent),
    (
        "managed-run-par",
        "ours: `Managed`, a `#[run]` loop",
        Mode::Concurrent,
    ),
    (
        "supervisor",
        "ours: `Supervisor`, no hooks",
        Mode::Sequential,
    ),
    (
        "supervisor-run",
        "ours: `Supervisor`, a `#[run]` loop",
        Mode::Sequential,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each start (stop) awaited before the next: what `Supervisor` does without
    /// `depends_on`.
    Sequential,
    /// Every start (stop) at once, then wait for all.
    Concurrent,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Sequential => "one by one",
            Mode::Concurrent => "all at once",
        }
    }

    /// The hand-written baseline of the same mode.
    fn hand(self) -> &'static str {
        match self {
            Mode::Sequential => "hand",
            Mode::Concurrent => "hand-par",
        }
    }
}

/// What the counting allocator does in a child.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Heap {
    Off,
    /// Live bytes and allocations per service.
    Count,
    /// Prints every allocation's size (a diagnostic: `--child lifecycle-allocs <variant> ct 10`).
    Record,
}

/// What one child measured.
struct Phases {
    start: Duration,
    stop: Duration,
    /// VmRSS once every service runs.
    running_kib: u64,
    /// With the counting allocator: (live bytes once running, allocations of the start,
    /// allocations of the stop).
    heap: Option<(crate::alloc::Live, u64, u64)>,
}

/// The instants of one run, recorded where each implementation can see them (inside the
/// peer's or the supervisor's own task when they own the loop).
#[derive(Default)]
struct Marks {
    began: Option<(Instant, crate::alloc::Snapshot)>,
    /// Every service runs.
    started: Option<(Instant, crate::alloc::Snapshot)>,
    running_kib: u64,
    /// The stop begins (after the RSS was read).
    stopping: Option<(Instant, crate::alloc::Snapshot)>,
    ended: Option<(Instant, crate::alloc::Snapshot)>,
}

static MARKS: Mutex<Marks> = Mutex::new(Marks {
    began: None,
    started: None,
    running_kib: 0,
    stopping: None,
    ended: None,
});

fn marks() -> std::sync::MutexGuard<'static, Marks> {
    MARKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> (Instant, crate::alloc::Snapshot) {
    (Instant::now(), crate::alloc::snapshot())
}

fn mark_began() {
    marks().began = Some(now());
}

/// Every service runs: read the RSS outside of both timed phases.
fn mark_started() {
    let started = now();
    let running_kib = proc_status_kib("VmRSS");
    let mut guard = marks();
    guard.started = Some(started);
    guard.running_kib = running_kib;
    guard.stopping = Some(now());
}

fn mark_ended() -> Phases {
    let ended = now();
    let mut marks = marks();
    marks.ended = Some(ended);
    let (began, began_heap) = marks.began.expect("began");
    let (started, started_heap) = marks.started.expect("started");
    let (stopping, stopping_heap) = marks.stopping.expect("stopping");
    let (ended, ended_heap) = marks.ended.expect("ended");
    Phases {
        start: started - began,
        stop: ended - stopping,
        running_kib: marks.running_kib,
        heap: crate::alloc::enabled().then(|| {
            (
                started_heap.live - began_heap.live,
                started_heap.allocs - began_heap.allocs,
                ended_heap.allocs - stopping_heap.allocs,
            )
        }),
    }
}

/// Measures one configuration. The driver runs in a task, as a program's own code does
/// once it runs on the runtime. With `heap`, the counting allocator reports live heap
/// bytes and allocations per service instead of the RSS (and the times are not reported).
pub fn child(variant: &str, runtime: &str, n: usize, heap: Heap) {
    let variant = variant.to_owned();
    let rt = crate::runtime(runtime);
    let (base_kib, phases) = rt.block_on(async move {
        // Warm the runtime (timer, worker threads) before the baseline.
        tokio::task::yield_now().await;
        tokio::spawn(async {}).await.expect("warm-up task");
        tokio::time::sleep(Duration::from_millis(1)).await;
        // One service started and stopped first, so that the pages of the binary's code
        // it runs are resident before the baseline: faulted in once per process (by 64 KiB
        // of fault-around), they are not memory per service.
        let warm = variant.clone();
        tokio::spawn(async move { drive(&warm, 1).await })
            .await
            .expect("the warm-up task");
        let base_kib = proc_status_kib("VmRSS");
        match heap {
            Heap::Off => {}
            Heap::Count => crate::alloc::enable(),
            Heap::Record => crate::alloc::record(),
        }
        let driver = tokio::spawn(async move { drive(&variant, n).await });
        (base_kib, driver.await.expect("the driver task"))
    });
    drop(rt);
    if heap == Heap::Record {
        let marks = marks();
        let index = |mark: Option<(Instant, crate::alloc::Snapshot)>| mark.expect("mark").1.allocs;
        let phases = [
            ("start", index(marks.began), index(marks.started)),
            ("stop", index(marks.stopping), index(marks.ended)),
        ];
        for (phase, from, to) in phases {
            let sizes = crate::alloc::recorded(from, to);
            println!("{phase}: {} allocations for {n} services", sizes.len());
            let mut histogram: BTreeMap<(u64, u64), usize> = BTreeMap::new();
            for size in sizes {
                *histogram.entry(size).or_default() += 1;
            }
            for ((size, align), count) in histogram {
                println!("  {count:>5} × {size:>6} B (align {align})");
            }
        }
        return;
    }
    if heap == Heap::Count {
        let per = n as f64;
        let (running, start_allocs, stop_allocs) = phases.heap.expect("heap figures");
        report(
            "heap",
            &[
                ("live_bytes", running as f64 / per),
                ("start_allocs", start_allocs as f64 / per),
                ("stop_allocs", stop_allocs as f64 / per),
            ],
        );
        return;
    }
    let hwm_kib = proc_status_kib("VmHWM");
    report(
        "lifecycle",
        &[
            ("start_ns", phases.start.as_nanos() as f64),
            ("stop_ns", phases.stop.as_nanos() as f64),
            ("base_kib", base_kib as f64),
            ("running_kib", phases.running_kib as f64),
            ("hwm_kib", hwm_kib as f64),
        ],
    );
}

/// Starts and stops `n` services of `variant`.
async fn drive(variant: &str, n: usize) -> Phases {
    match variant {
        "hand" => hand(n).await,
        "hand-par" => hand_concurrent(n).await,
        "tgs" => tgs(n).await,
        "managed" => managed(n, || Noop).await,
        "managed-init" => managed(n, || WithInit).await,
        "managed-run" => managed(n, || WithRun).await,
        "managed-par" => managed_concurrent(n, || Noop).await,
        "managed-run-par" => managed_concurrent(n, || WithRun).await,
        "supervisor" => supervisor(n, || Noop).await,
        "supervisor-run" => supervisor(n, || WithRun).await,
        other => panic!("unknown variant {other}"),
    }
}

struct Hand {
    status: AtomicU8,
    shutdown: Notify,
}

const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const STOPPED: u8 = 3;

/// One by one: spawn a task, wait until it reports running; stop: notify, await its end.
async fn hand(n: usize) -> Phases {
    mark_began();
    let mut services = Vec::with_capacity(n);
    for _ in 0..n {
        let service = Arc::new(Hand {
            status: AtomicU8::new(STARTING),
            shutdown: Notify::new(),
        });
        let (running_tx, running) = oneshot::channel();
        let task_service = service.clone();
        let task = tokio::spawn(async move {
            task_service.status.store(RUNNING, Ordering::Release);
            let _ = running_tx.send(());
            task_service.shutdown.notified().await;
            task_service.status.store(STOPPED, Ordering::Release);
        });
        running.await.expect("the task reports running");
        services.push((service, task));
    }
    mark_started();
    // Each `JoinHandle` is awaited by value, as a program that is done with its task
    // does: the task's cell is freed during the stop, as ours (and
    // tokio-graceful-shutdown's) are. The service handles are kept until the clock stops.
    let mut stopped = Vec::with_capacity(n);
    for (service, task) in services.into_iter().rev() {
        // `notify_one` keeps a permit: a task not yet waiting still sees it.
        service.shutdown.notify_one();
        task.await.expect("the task ends");
        stopped.push(service);
    }
    let phases = mark_ended();
    assert!(
        stopped
            .iter()
            .all(|s| s.status.load(Ordering::Acquire) == STOPPED)
    );
    phases
}

/// All at once: spawn every task, wait until the last reports running; stop: notify
/// every task, then await every end.
async fn hand_concurrent(n: usize) -> Phases {
    mark_began();
    let counter = Arc::new(AtomicUsize::new(0));
    let all_running = Arc::new(Notify::new());
    let mut services = Vec::with_capacity(n);
    for _ in 0..n {
        let service = Arc::new(Hand {
            status: AtomicU8::new(STARTING),
            shutdown: Notify::new(),
        });
        let task_service = service.clone();
        let counter = counter.clone();
        let all_running = all_running.clone();
        let task = tokio::spawn(async move {
            task_service.status.store(RUNNING, Ordering::Release);
            if counter.fetch_add(1, Ordering::AcqRel) + 1 == n {
                all_running.notify_one();
            }
            task_service.shutdown.notified().await;
            task_service.status.store(STOPPED, Ordering::Release);
        });
        services.push((service, task));
    }
    all_running.notified().await;
    mark_started();
    for (service, _) in services.iter().rev() {
        service.shutdown.notify_one();
    }
    // Awaited by value (see `hand`).
    let mut stopped = Vec::with_capacity(n);
    for (service, task) in services.into_iter().rev() {
        task.await.expect("the task ends");
        stopped.push(service);
    }
    let phases = mark_ended();
    assert!(
        stopped
            .iter()
            .all(|s| s.status.load(Ordering::Acquire) == STOPPED)
    );
    phases
}

async fn tgs(n: usize) -> Phases {
    let counter = Arc::new(AtomicUsize::new(0));
    let all_running = Arc::new(Notify::new());
    mark_began();
    let result = Toplevel::new(async move |s: &mut SubsystemHandle| {
        for _ in 0..n {
            let counter = counter.clone();
            let all_running = all_running.clone();
            s.start(SubsystemBuilder::new(
                "noop",
                async move |subsystem: &mut SubsystemHandle| {
                    if counter.fetch_add(1, Ordering::AcqRel) + 1 == n {
                        all_running.notify_one();
                    }
                    subsystem.on_shutdown_requested().await;
                    Ok::<(), Infallible>(())
                },
            ));
        }
        all_running.notified().await;
        mark_started();
        s.request_shutdown();
    })
    .handle_shutdown_requests(Duration::from_secs(60))
    .await;
    let phases = mark_ended();
    result.expect("tokio-graceful-shutdown stops cleanly");
    phases
}

async fn managed<S: Service>(n: usize, make: impl Fn() -> S) -> Phases {
    mark_began();
    let mut services = Vec::with_capacity(n);
    for _ in 0..n {
        let service = Managed::new(make());
        service.start().await.expect("start");
        services.push(service);
    }
    mark_started();
    for service in services.iter().rev() {
        service.stop().await.expect("stop");
    }
    mark_ended()
}

async fn managed_concurrent<S: Service>(n: usize, make: impl Fn() -> S) -> Phases {
    mark_began();
    let services: Vec<Managed<S>> = (0..n).map(|_| Managed::new(make())).collect();
    for result in join_all(services.iter().map(Managed::start)).await {
        result.expect("start");
    }
    mark_started();
    for result in join_all(services.iter().rev().map(Managed::stop)).await {
        result.expect("stop");
    }
    mark_ended()
}

async fn supervisor<S: Service>(n: usize, make: impl Fn() -> S) -> Phases {
    // The names are the user's data, made before the clock starts: the peers name
    // nothing, and formatting 10,000 strings (~780 instructions each) is not lifecycle
    // work. Moving each into its service, and the supervisor's own copy, still count.
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    mark_began();
    let mut supervisor = Supervisor::new();
    for name in names {
        supervisor = supervisor.add(named(make(), name));
    }
    let handle = supervisor.handle();
    // Polled with the startup and again right after it (the supervisor polls its
    // shutdown trigger first): it completes as soon as every service has started.
    let until = std::future::poll_fn(move |_| {
        if handle.has_started() {
            mark_started();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let report = supervisor.run_until(until).await;
    let phases = mark_ended();
    assert!(report.is_success(), "{:?}", report.errors());
    phases
}

/// Medians of one configuration, per service.
#[derive(Clone, Copy)]
struct Row {
    start: f64,
    stop: f64,
    peak_bytes: f64,
    running_bytes: f64,
}

impl Row {
    fn total(&self) -> f64 {
        self.start + self.stop
    }
}

pub fn run(settings: &Settings) -> String {
    let sizes: &[usize] = if settings.quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    let runtimes = [("ct", "current-thread"), ("mt", "multi-thread (2 workers)")];
    // (runtime, n, variant) -> samples [start, stop, peak, running] per service
    let mut samples: BTreeMap<(&str, usize, &str), Vec<[f64; 4]>> = BTreeMap::new();
    // Repetitions outermost, so a drift of the machine spreads over every configuration.
    for _ in 0..settings.reps {
        for (rt, _) in runtimes {
            for &n in sizes {
                for (variant, _, _) in VARIANTS {
                    let results = run_child(
                        &["lifecycle", variant, rt, &n.to_string()],
                        Duration::from_secs(120),
                    );
                    let values = &results
                        .iter()
                        .find(|(label, _)| label == "lifecycle")
                        .expect("a lifecycle result")
                        .1;
                    let per = n as f64;
                    let base = values["base_kib"];
                    samples.entry((rt, n, variant)).or_default().push([
                        values["start_ns"] / per,
                        values["stop_ns"] / per,
                        (values["hwm_kib"] - base) * 1024.0 / per,
                        (values["running_kib"] - base) * 1024.0 / per,
                    ]);
                }
            }
        }
    }
    let rows: BTreeMap<(&str, usize, &str), Row> = samples
        .into_iter()
        .map(|(key, samples)| {
            let column = |i: usize| median(&mut samples.iter().map(|s| s[i]).collect::<Vec<_>>());
            (
                key,
                Row {
                    start: column(0),
                    stop: column(1),
                    peak_bytes: column(2),
                    running_bytes: column(3),
                },
            )
        })
        .collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 1. Start-all and stop-all of N no-op services\n\n\
         Per service: medians of {} fresh processes. \"÷ hand\" compares start + stop with the \
         hand-written baseline started the same way (one by one, or all at once), \"÷ tgs\" with \
         tokio-graceful-shutdown (targets for ours, one by one: a `#[run]` loop ≤ 2.0 × \
         hand-written and ≤ 0.35 × tokio-graceful-shutdown, no hooks or one `#[init]` \
         ≤ 1.0 × hand-written and ≤ 0.25 × tokio-graceful-shutdown; every other row ≤ 1.5 × \
         and ≤ 0.25 ×). Bytes: peak RSS over the baseline, per service (target ≤ 1 KiB per \
         managed service); \"running B\" is the RSS once every service runs.\n",
        settings.reps
    );
    for (rt, rt_name) in runtimes {
        let _ = writeln!(out, "### {rt_name} runtime\n");
        let _ = writeln!(
            out,
            "| N | implementation | started | start ns | stop ns | start+stop ns | ÷ hand | ÷ tgs | peak B | running B |"
        );
        let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for &n in sizes {
            let tgs = rows[&(rt, n, "tgs")];
            for (variant, name, mode) in VARIANTS {
                let row = rows[&(rt, n, variant)];
                let hand = rows[&(rt, n, mode.hand())];
                let ours = !variant.starts_with("hand") && variant != "tgs";
                let (vs_hand, vs_tgs) = if ours {
                    let (to_hand, to_tgs) = targets(variant);
                    (
                        ratio(row.total() / hand.total(), Some(to_hand)),
                        ratio(row.total() / tgs.total(), Some(to_tgs)),
                    )
                } else {
                    (String::new(), String::new())
                };
                let bytes = if variant.starts_with("managed") {
                    let mark = if row.peak_bytes <= 1024.0 {
                        " ✓"
                    } else {
                        " ✗"
                    };
                    format!("{}{mark}", num(row.peak_bytes, 0))
                } else {
                    num(row.peak_bytes, 0)
                };
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {} | {} | {} | {vs_hand} | {vs_tgs} | {bytes} | {} |",
                    num(n as f64, 0),
                    mode.as_str(),
                    num(row.start, 0),
                    num(row.stop, 0),
                    num(row.total(), 0),
                    num(row.running_bytes, 0),
                );
            }
        }
        let _ = writeln!(out);
    }

    // Linear growth: ns per service at the largest N over N = 1,000.
    let (small, large) = (1_000, *sizes.last().expect("sizes"));
    if large > small {
        let _ = writeln!(
            out,
            "### Growth in N\n\nStart+stop ns per service at N = {} ÷ at N = {} (1.00× is linear), \
             and the same for peak bytes per service.\n",
            num(large as f64, 0),
            num(small as f64, 0)
        );
        let _ = writeln!(
            out,
            "| implementation | started | ns, current-thread | ns, multi-thread | bytes, current-thread | bytes, multi-thread |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
        for (variant, name, mode) in VARIANTS {
            let growth = |rt: &str, f: fn(&Row) -> f64| {
                f(&rows[&(rt, large, variant)]) / f(&rows[&(rt, small, variant)])
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                mode.as_str(),
                ratio(growth("ct", Row::total), None),
                ratio(growth("mt", Row::total), None),
                ratio(growth("ct", |r| r.peak_bytes), None),
                ratio(growth("mt", |r| r.peak_bytes), None),
            );
        }
        let _ = writeln!(out);
    }

    // Heap bytes and allocations per service, from the counting allocator (one process
    // per variant, current-thread runtime, N = 1,000): exact where RSS is page-grained.
    let _ = writeln!(
        out,
        "### Heap per service (counting allocator, current-thread, N = 1,000)\n\n\
         Live heap bytes per service once every service runs (the allocator's own overhead \
         and fragmentation excluded), and allocations per service during the start and the stop.\n"
    );
    let _ = writeln!(
        out,
        "| implementation | started | live heap B | allocations (start) | allocations (stop) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for (variant, name, mode) in VARIANTS {
        let results = run_child(
            &["lifecycle-heap", variant, "ct", "1000"],
            Duration::from_secs(120),
        );
        let values = &results
            .iter()
            .find(|(label, _)| label == "heap")
            .expect("a heap result")
            .1;
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            mode.as_str(),
            num(values["live_bytes"], 0),
            num(values["start_allocs"], 1),
            num(values["stop_allocs"], 1),
        );
    }
    let _ = writeln!(out);
    out
}
