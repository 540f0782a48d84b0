//! Item 2: the cost of reading a service's status, against a bare atomic load.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use service_runtime::{Managed, ServiceStatus};

use crate::services::Noop;
use crate::{Settings, median, ratio, report, run_child};

/// Nanoseconds per call of `read`: the best of several batches (the floor is the cost;
/// anything above it is interference).
fn per_read(iterations: u64, mut read: impl FnMut() -> u8) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let began = Instant::now();
        let mut sum = 0u64;
        for _ in 0..iterations {
            sum = sum.wrapping_add(u64::from(read()));
        }
        black_box(sum);
        best = best.min(began.elapsed().as_nanos() as f64 / iterations as f64);
    }
    best
}

pub fn child(iterations: u64) {
    let rt = crate::runtime("ct");
    rt.block_on(async {
        let service = Managed::new(Noop);
        service.start().await.expect("start");
        assert_eq!(service.status(), ServiceStatus::Running);
        let watch = service.watch();
        let atomic = AtomicU8::new(ServiceStatus::Running as u8);
        let shared = Arc::new(AtomicU8::new(ServiceStatus::Running as u8));

        // `black_box` on the reference: the load cannot be hoisted out of the loop.
        let bare = per_read(iterations, || black_box(&atomic).load(Ordering::Acquire));
        let arc = per_read(iterations, || black_box(&shared).load(Ordering::Acquire));
        let ours = per_read(iterations, || black_box(&service).status() as u8);
        let watched = per_read(iterations, || *black_box(&watch).borrow() as u8);
        // Writes: what each transition pays to publish a status (a `watch` send with one
        // receiver alive, as `Managed` keeps none but users may), against an atomic store.
        let writes = iterations / 20;
        let sender = tokio::sync::watch::Sender::new(ServiceStatus::Stopped);
        let unobserved = per_read(writes, || {
            black_box(&sender).send_replace(ServiceStatus::Running);
            0
        });
        let _receiver = sender.subscribe();
        let send = per_read(writes, || {
            black_box(&sender).send_replace(ServiceStatus::Running);
            0
        });
        let store = per_read(writes, || {
            black_box(&atomic).store(ServiceStatus::Running as u8, Ordering::Release);
            0
        });
        report(
            "status",
            &[
                ("atomic", bare),
                ("arc_atomic", arc),
                ("managed", ours),
                ("watch", watched),
                ("watch_send", send),
                ("watch_send_unobserved", unobserved),
                ("atomic_store", store),
            ],
        );
        service.stop().await.expect("stop");
    });
}

const KEYS: [&str; 7] = [
    "atomic",
    "arc_atomic",
    "managed",
    "watch",
    "watch_send",
    "watch_send_unobserved",
    "atomic_store",
];

pub fn run(settings: &Settings) -> String {
    let iterations: u64 = if settings.quick {
        10_000_000
    } else {
        20_000_000
    };
    // A handful of processes is plenty: each already takes the best of 5 batches.
    let reps = settings.reps.min(5);
    let mut samples: [Vec<f64>; KEYS.len()] = Default::default();
    for _ in 0..reps {
        let results = run_child(
            &["status", &iterations.to_string()],
            Duration::from_secs(120),
        );
        let values = &results[0].1;
        for (i, key) in KEYS.iter().enumerate() {
            samples[i].push(values[*key]);
        }
    }
    let [atomic, arc, managed, watch, watch_send, unobserved, store] =
        samples.map(|mut s| median(&mut s));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 2. Status read\n\n\
         ns per read, best of 5 batches of {iterations} reads, median of {reps} processes \
         (current-thread runtime, service running). Target: `Managed::status()` ≤ 1.5 × a bare atomic load.\n"
    );
    let _ = writeln!(out, "| read | ns/read | ÷ bare atomic |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| bare `AtomicU8::load(Acquire)` | {atomic:.3} | 1.00× |"
    );
    let _ = writeln!(
        out,
        "| `Arc<AtomicU8>` load (a hand-written handle) | {arc:.3} | {} |",
        ratio(arc / atomic, None)
    );
    let _ = writeln!(
        out,
        "| ours: `Managed::status()` | {managed:.3} | {} |",
        ratio(managed / atomic, Some(1.5))
    );
    let _ = writeln!(
        out,
        "| `watch::Receiver::borrow()` (`Managed::watch()`) | {watch:.3} | {} |",
        ratio(watch / atomic, None)
    );
    let _ = writeln!(
        out,
        "\nFor the write side: each transition stores the atomic, `AtomicU8::store` {store:.2} ns, \
         and sends to the status `watch` only once `Managed::watch()` has created it: \
         `watch::Sender::send_replace` {unobserved:.2} ns with no receiver, {watch_send:.2} ns with one."
    );
    out
}
