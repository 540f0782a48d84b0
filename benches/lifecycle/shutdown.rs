//! Item 6: SIGTERM to process exit, for the demo's shape scaled to 1,000 services.
//!
//! The child builds the services on a multi-thread runtime (as `#[tokio::main]` does),
//! runs `Supervisor::run_until_signal()`, prints `READY` once every service runs, and
//! returns the supervisor's exit code from `main`. The parent waits for `READY`, lets the
//! child settle, sends SIGTERM with `kill(2)` and times until `waitpid` returns.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use service_runtime::Supervisor;
use tokio::sync::Notify;

use crate::services::{Worker, named};
use crate::{Settings, median, num};

const MODES: [(&str, &str); 4] = [
    (
        "pipeline",
        "ours: the demo's shape, 200 pipelines of 5 (4 levels of `depends_on` + 1 independent), probes served",
    ),
    (
        "flat",
        "ours: 1,000 independent services (stopped one by one)",
    ),
    (
        "flat-task",
        "ours: the same, with `run_until_signal()` in a spawned task instead of `main`'s `block_on`",
    ),
    (
        "hand",
        "hand-written: 1,000 tasks, `tokio::signal`, `Notify::notify_waiters`, join every task",
    ),
];

pub fn child(n: usize, mode: &str) {
    let rt = crate::runtime("mt");
    let code = rt.block_on(async {
        if mode == "hand" {
            return hand(n).await;
        }
        let mut supervisor = Supervisor::new();
        if mode == "pipeline" {
            // market_feed <- strategy <- risk <- order_gateway, and audit_log alone.
            for chain in 0..n / 5 {
                let stage = |name: &str| format!("{name}{chain}");
                supervisor = supervisor
                    .add(named(Worker, stage("market_feed")))
                    .add(named(Worker, stage("strategy")))
                    .depends_on(stage("market_feed"))
                    .add(named(Worker, stage("risk")))
                    .depends_on(stage("strategy"))
                    .add(named(Worker, stage("order_gateway")))
                    .depends_on(stage("risk"))
                    .add(named(Worker, stage("audit_log")));
            }
            supervisor = supervisor.serve_health("127.0.0.1:0");
        } else {
            for i in 0..n {
                supervisor = supervisor.add(named(Worker, format!("worker{i}")));
            }
        }
        let handle = supervisor.handle();
        tokio::spawn(async move {
            while !handle.has_started() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            println!("READY");
        });
        if mode == "flat-task" {
            // On a worker thread, the supervisor's spawns go to the local queue.
            tokio::spawn(supervisor.run_until_signal())
                .await
                .expect("the supervisor task")
                .code()
        } else {
            supervisor.run_until_signal().await.code()
        }
    });
    drop(rt);
    std::process::exit(i32::from(code));
}

/// The baseline: the same number of tasks, stopped by hand on SIGTERM.
async fn hand(n: usize) -> u8 {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let shutdown = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let shutdown = shutdown.clone();
            // `notified()` is created before the task is spawned: no notification is missed.
            let notified = Box::pin(shutdown.notified_owned());
            tokio::spawn(async move {
                notified.await;
            })
        })
        .collect();
    println!("READY");
    sigterm.recv().await;
    shutdown.notify_waiters();
    for task in tasks {
        task.await.expect("task");
    }
    0
}

/// One run: ms from SIGTERM to exit, and ms from spawn to READY.
fn measure(n: usize, mode: &str) -> (f64, f64) {
    let exe = std::env::current_exe().expect("current_exe");
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args(["--child", "demo", &n.to_string(), mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.map(|l| l == "READY").unwrap_or(false) {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the demo ({mode}) did not start within 60 s");
    }
    let startup = spawned.elapsed().as_secs_f64() * 1e3;
    // Let every run loop reach its wait before the signal.
    std::thread::sleep(Duration::from_millis(100));
    let pid = i32::try_from(child.id()).expect("pid");
    let (exit_tx, exit_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = exit_tx.send((Instant::now(), status));
    });
    let signalled = Instant::now();
    // SAFETY: `kill(2)` on our own child's pid; no memory is involved.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill(SIGTERM) failed");
    let (exited, status) = exit_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo exits within 60 s of SIGTERM");
    waiter.join().expect("waiter thread");
    let status = status.expect("wait for the demo");
    assert!(status.success(), "the demo ({mode}) exited with {status}");
    ((exited - signalled).as_secs_f64() * 1e3, startup)
}

pub fn run(settings: &Settings) -> String {
    let n = 1_000;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); MODES.len()];
    for _ in 0..settings.reps {
        for (i, (mode, _)) in MODES.iter().enumerate() {
            let (exit, startup) = measure(n, mode);
            samples[i].0.push(exit);
            samples[i].1.push(startup);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 6. Shutdown latency: SIGTERM to process exit\n\n\
         {n} services with a `#[run]` loop waiting for shutdown, a no-op `#[cleanup]` and one \
         health check; multi-thread runtime; `Supervisor::run_until_signal()`, `main` returns the \
         `Report`. Medians of {} processes (min–max in brackets); the startup column is spawn to \
         READY, for scale.\n",
        settings.reps
    );
    let _ = writeln!(out, "| program | SIGTERM → exit | spawn → all running |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (i, (_, name)) in MODES.iter().enumerate() {
        let (exits, startups) = &mut samples[i];
        let (lo, hi) = (
            exits.iter().copied().fold(f64::INFINITY, f64::min),
            exits.iter().copied().fold(0.0, f64::max),
        );
        let _ = writeln!(
            out,
            "| {name} | {} ms [{}–{}] | {} ms |",
            num(median(exits), 2),
            num(lo, 2),
            num(hi, 2),
            num(median(startups), 1)
        );
    }
    out
}
