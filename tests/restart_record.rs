//! A supervisor's report of healed failures stays one record per service however often a
//! service fails: the count, the first and last time, and the last cause.
//!
//! On paused time: a thousand restarts take a few seconds of the clock's time each and
//! none of the wall clock's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use service_runtime::{Restart, RestartPolicy, Service, Shutdown, Supervisor, lifecycle};
use tokio::time::Instant;

/// Fails one second after each start ("drifts"), with its incarnation in the error.
#[derive(Service)]
#[service(name = "strategy")]
struct Drifting {
    incarnations: Arc<AtomicU64>,
}

#[lifecycle]
impl Drifting {
    #[run]
    async fn trade(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let incarnation = self.incarnations.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                Err(std::io::Error::other(format!("model drifted (incarnation {incarnation})")))
            }
        }
    }
}

/// Never fails.
#[derive(Service)]
#[service(name = "feed")]
struct Steady;

#[lifecycle]
impl Steady {}

#[tokio::test(start_paused = true)]
async fn a_thousand_healed_failures_make_one_record() {
    const FAILURES: u64 = 1_000;
    let incarnations = Arc::new(AtomicU64::new(0));
    // A constant 10 ms backoff, and a window no failure every 1.01 s ever fills.
    let policy = RestartPolicy::new(Restart::Permanent)
        .max_restarts(5, Duration::from_secs(1))
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .jitter(0.0);
    let supervisor = Supervisor::new()
        .add(Steady)
        .add(Drifting {
            incarnations: incarnations.clone(),
        })
        .depends_on("feed")
        .restart(policy);
    let handle = supervisor.handle();
    let began = Instant::now();
    let counted = incarnations.clone();
    let report = supervisor
        .run_until(async move {
            // Stops in the middle of incarnation FAILURES + 1, which has not failed yet.
            while counted.load(Ordering::SeqCst) <= FAILURES {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;

    assert!(report.is_success(), "{:?}", report.errors());
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(report.restarts().len(), 1, "{:?}", report.restarts());
    let record = report
        .restarts_of("strategy")
        .expect("the strategy's record");
    assert!(report.restarts_of("feed").is_none());
    assert_eq!(record.count, FAILURES);
    assert_eq!(handle.stats()[1].restarts, u32::try_from(FAILURES).unwrap());
    // The first failure 1 s in; each next one 1 s after a 10 ms backoff.
    assert_eq!(record.first - began, Duration::from_secs(1));
    assert_eq!(
        record.last - record.first,
        Duration::from_millis(1_010) * u32::try_from(FAILURES - 1).unwrap()
    );
    assert_eq!(
        record.last_cause.to_string(),
        format!(
            "service `strategy`: run hook `trade` failed: model drifted (incarnation {FAILURES})"
        )
    );
    assert_eq!(
        record.to_string(),
        format!(
            "strategy: restarted {FAILURES} times, last: service `strategy`: run hook `trade` failed: model drifted (incarnation {FAILURES})"
        )
    );
}
