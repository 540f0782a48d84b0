//! The work of a level: its services started or stopped concurrently, the changes they
//! make observed as the work goes (`observing`), and the startup's walk over the levels.

use std::future::Future;

use futures_util::future::join_all;

use super::{Observer, Phase};
use crate::ServiceError;
use crate::managed::{Begun, DynService};
use crate::supervisor::Entry;
use crate::supervisor::plan::Plan;
use crate::supervisor::report::{Report, SupervisorError};

/// Starts each level in parallel, the levels in order, observing the changes as they
/// come. On a failure, stops nothing itself (the shutdown phase stops everything in
/// reverse) and records every error.
pub(super) async fn start_levels(
    entries: &[Entry],
    plan: &Plan,
    report: &mut Report,
    observer: &mut Observer,
) -> bool {
    for level in plan.levels() {
        // The level's changes are observed whenever the start makes progress (without a
        // wake-up of its own per change), and all of them once it is done: before the next
        // level starts and before `has_started`, so they never pile up.
        let errors = observing(observer, Phase::Startup, start_level(entries, level)).await;
        if !errors.is_empty() {
            for error in errors {
                tracing::warn!(service = %error.service(), "start failed; stopping what started");
                report.errors.push(SupervisorError::Start(error));
            }
            return false;
        }
    }
    true
}

/// Polls `work`, and after each poll observes every change waiting. Observing on the
/// work's own wake-ups (rather than waking for each change) keeps a level of many
/// services from being polled again for every change of each of them.
pub(super) async fn observing<F: Future>(
    observer: &mut Observer,
    phase: Phase,
    work: F,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        let poll = work.as_mut().poll(cx);
        observer.absorb(phase);
        poll
    })
    .await
}

/// Starts one level's services concurrently; returns their errors.
async fn start_level(entries: &[Entry], level: &[usize]) -> Vec<ServiceError> {
    on_level(entries, level, |service| service.start_now()).await
}

/// Stops one level's services concurrently; returns their errors. A service that needs no
/// stop is left as it is: a failed start stays `error`, its cause readable.
pub(super) async fn stop_level(entries: &[Entry], level: &[usize]) -> Vec<ServiceError> {
    on_level(entries, level, |service| {
        if service.needs_stop() {
            service.stop_now()
        } else {
            Ok(Ok(()))
        }
    })
    .await
}

/// Begins the operation `begin` on each of a level's services in order and awaits the
/// ones that did not finish at once, concurrently; returns their errors, in level order.
async fn on_level<'a>(
    entries: &'a [Entry],
    level: &[usize],
    begin: impl Fn(&'a dyn DynService) -> Begun<'a>,
) -> Vec<ServiceError> {
    if let [i] = *level {
        // One service (every level when nothing depends): no list, no join.
        let outcome = match begin(&*entries[i].service.0) {
            Ok(outcome) => outcome,
            Err(rest) => rest.await,
        };
        return outcome.err().into_iter().collect();
    }
    let ops = level.iter().map(|&i| begin(&*entries[i].service.0));
    let mut outcomes = Vec::new();
    let mut waiting = Vec::new();
    for op in ops {
        outcomes.push(match op {
            Ok(outcome) => Some(outcome),
            Err(rest) => {
                waiting.push(rest);
                None
            }
        });
    }
    let mut waited = join_all(waiting).await.into_iter();
    outcomes
        .into_iter()
        .filter_map(|outcome| outcome.or_else(|| waited.next())?.err())
        .collect()
}
