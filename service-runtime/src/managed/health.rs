//! A service's health report: every check and component report run concurrently in the
//! caller's task, each under its timeout and span, panics caught; a check's set of named
//! results (`HealthChecks`) spread into one entry each, `check[name]`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::BoxFuture;
use super::control::Inner;
use super::erased::ErasedService;
use super::hooks::panic_message;
use crate::__private::CheckResult;
use crate::error::HookKind;
use crate::health::{HealthDetail, HealthReport, HealthStatus, aggregate};
use crate::service::Service;
use crate::status::ServiceStatus;

impl<S: Service> Inner<S> {
    pub(super) async fn health(&self) -> HealthReport {
        let started;
        let uptime;
        let components: Vec<(Cow<'static, str>, bool, ErasedService)> = {
            let ctl = self.lock();
            // Read under the lock, so `since` below is the start of this status.
            let status = self.status();
            if status != ServiceStatus::Running {
                let reason = match (ctl.last_error.as_deref(), status) {
                    (Some(error), ServiceStatus::Error) => {
                        format!("Service status: {status}: {error}")
                    }
                    _ => format!("Service status: {status}"),
                };
                drop(ctl);
                return self.unhealthy_report(0, reason);
            }
            // One clock read for the uptime and the checks' deadlines.
            started = Instant::now();
            uptime = started.saturating_duration_since(ctl.since).as_secs();
            if ctl.components.is_empty() {
                // Most services: skips the collection's call, a measurable share of an
                // instant check's aggregation.
                Vec::new()
            } else {
                ctl.components
                    .iter()
                    .map(|entry| (entry.field.clone(), entry.critical, entry.handle.clone()))
                    .collect()
            }
        };
        let limit = self.config().health_timeout;
        // Bounded: a stop waiting for the write lock would otherwise queue us behind it.
        let (service, started) = match self.service.try_read() {
            Ok(service) => (service, started),
            // Boxed: a rare wait, kept out of every aggregation's future.
            Err(_) => match Box::pin(tokio::time::timeout(limit, self.service.read())).await {
                // The checks' deadlines count from the end of the wait.
                Ok(service) => (service, Instant::now()),
                Err(_) => {
                    let reason = format!("Service status: {}", self.status());
                    return self.unhealthy_report(uptime, reason);
                }
            },
        };
        // A service of one check (or component) keeps it in place: no list to allocate.
        let (mut single, mut many) = (None, Vec::new());
        {
            // In a block of its own, as everything the future does not need across the
            // wait for the checks: a smaller future is cheaper to box and to move.
            let parent = self.span();
            let mut all = S::__HOOKS
                .health
                .iter()
                .enumerate()
                .map(|(index, spec)| Check {
                    work: CheckWork::Hook(service.__health(index)),
                    timeout: Some(spec.timeout.unwrap_or(limit)),
                    timer: None,
                    span: tracing::info_span!(parent: &parent, "hook", kind = HookKind::Health.as_str(), hook = spec.name),
                    result: None,
                })
                .chain(components.iter().map(|(_, _, handle)| Check {
                    work: CheckWork::Component(handle.0.health()),
                    timeout: None,
                    timer: None,
                    span: tracing::Span::none(),
                    result: None,
                }));
            if S::__HOOKS.health.len() + components.len() == 1 {
                single = all.next();
            } else {
                many.extend(all);
            }
        }
        let checks: &mut [Check<'_>] = match &mut single {
            Some(check) => std::slice::from_mut(check),
            None => &mut many,
        };
        let checks_len = checks.len();
        run_checks(checks, started).await;

        // Hook names are `&'static str` and most component names too: borrowed, not copied.
        let names = S::__HOOKS
            .health
            .iter()
            .map(|spec| (Cow::Borrowed(spec.name), spec.critical))
            .chain(
                components
                    .iter()
                    .map(|(name, critical, _)| (name.clone(), *critical)),
            );
        let all_healthy = checks.iter().all(|check| {
            matches!(&check.result, Some(CheckResult::One(detail)) if detail.status == HealthStatus::Healthy)
        });
        let (status, reason, maps) = if all_healthy {
            // What `aggregate` would say, without walking the names to say it.
            let entries = names.zip(&mut *checks).map(|((name, _), check)| {
                match check.result.take().expect("every check finished") {
                    CheckResult::One(detail) => (name, detail),
                    CheckResult::Many(_) => unreachable!("every check has one result"),
                }
            });
            (
                HealthStatus::Healthy,
                None,
                report_maps(checks_len, entries),
            )
        } else {
            let entries = flatten(names.zip(&mut *checks).map(|((name, critical), check)| {
                let result = check.result.take().expect("every check finished");
                (name, critical, result)
            }));
            let (status, reason) = aggregate(
                entries
                    .iter()
                    .map(|(name, critical, detail)| (&**name, *critical, detail)),
            );
            let maps = report_maps(
                entries.len(),
                entries.into_iter().map(|(name, _, detail)| (name, detail)),
            );
            (status, reason, maps)
        };
        // The checks borrow the service: ended before its lock is released.
        drop((single, many));
        let mut report = HealthReport {
            status,
            uptime,
            // Borrowed when configured from literals (the derive's name and version).
            service_name: self.name.clone(),
            version: self.config().version.clone(),
            dependencies: maps.dependencies,
            reason,
            details: maps.details,
            data: maps.data,
        };
        if let Some(rule) = S::__HOOKS.health_rule {
            apply_rule(&*service, rule, &mut report);
        }
        drop(service);
        report
    }

    /// The report of a service that is not running (or whose checks could not run): no
    /// dependencies, and `reason`.
    pub(super) fn unhealthy_report(&self, uptime: u64, reason: String) -> HealthReport {
        HealthReport {
            status: HealthStatus::Unhealthy,
            uptime,
            service_name: self.name.clone(),
            version: self.config().version.clone(),
            dependencies: BTreeMap::new(),
            reason: Some(reason),
            details: BTreeMap::new(),
            data: BTreeMap::new(),
        }
    }
}

/// Every check's results under their names in the report: a check's own result under
/// its name, each of a set's results (`HealthChecks`) under `check[name]`.
fn flatten(
    results: impl Iterator<Item = (Cow<'static, str>, bool, CheckResult)>,
) -> Vec<(Cow<'static, str>, bool, HealthDetail)> {
    let mut entries = Vec::with_capacity(results.size_hint().0);
    for (name, critical, result) in results {
        match result {
            CheckResult::One(detail) => entries.push((name, critical, detail)),
            CheckResult::Many(set) => entries.extend(
                set.into_iter()
                    .map(|(key, detail)| (Cow::Owned(format!("{name}[{key}]")), critical, detail)),
            ),
        }
    }
    entries
}

/// A report's `dependencies`, `details` and `data`.
struct ReportMaps {
    dependencies: BTreeMap<Cow<'static, str>, HealthStatus>,
    details: BTreeMap<Cow<'static, str>, String>,
    data: BTreeMap<Cow<'static, str>, BTreeMap<String, serde_json::Value>>,
}

/// The report's maps from its `len` entries.
fn report_maps(
    len: usize,
    entries: impl Iterator<Item = (Cow<'static, str>, HealthDetail)>,
) -> ReportMaps {
    let mut dependencies = BTreeMap::new();
    let mut details = BTreeMap::new();
    let mut data = BTreeMap::new();
    if len <= SMALL_REPORT {
        // A few checks fit one B-tree leaf: inserted in place, without the list the
        // bulk build below sorts.
        for (name, detail) in entries {
            if let Some(reason) = detail.reason {
                details.insert(name.clone(), reason);
            }
            if !detail.data.is_empty() {
                data.insert(name.clone(), detail.data);
            }
            dependencies.insert(name, detail.status);
        }
    } else {
        // Collected, then built in one go: `BTreeMap`'s bulk build from a sorted list
        // is cheaper than one insertion (and rebalancing) per check.
        let mut listed = Vec::with_capacity(len);
        let (mut failures, mut figures) = (Vec::new(), Vec::new());
        for (name, detail) in entries {
            if let Some(reason) = detail.reason {
                failures.push((name.clone(), reason));
            }
            if !detail.data.is_empty() {
                figures.push((name.clone(), detail.data));
            }
            listed.push((name, detail.status));
        }
        dependencies = listed.into_iter().collect();
        details = failures.into_iter().collect();
        data = figures.into_iter().collect();
    }
    ReportMaps {
        dependencies,
        details,
        data,
    }
}

/// Lets the service's `#[health_rule]` decide its status from the checks' report. A
/// healthy verdict needs no reason; any other keeps the default rule's, or says that the
/// rule decided. A rule that panics makes the service unhealthy, as a check that panics
/// makes its check unhealthy.
fn apply_rule<S: Service>(service: &S, rule: &str, report: &mut HealthReport) {
    let verdict = catch_unwind(AssertUnwindSafe(|| service.__health_rule(report)));
    let status = match verdict {
        Ok(Some(status)) => status,
        Ok(None) => return,
        Err(panic) => {
            report.status = HealthStatus::Unhealthy;
            report.reason = Some(format!(
                "health rule `{rule}` panicked: {}",
                panic_message(&*panic)
            ));
            return;
        }
    };
    report.status = status;
    if status == HealthStatus::Healthy {
        report.reason = None;
    } else if report.reason.is_none() {
        report.reason = Some(format!("health rule `{rule}` says {status}"));
    }
}

/// Up to this many checks, a report's maps are built by insertion: they fit one B-tree
/// leaf (11 entries), so an insertion is a short shift within it.
pub(super) const SMALL_REPORT: usize = 11;

/// One health check (or a component's report) of an aggregation in progress.
pub(super) struct Check<'a> {
    pub(super) work: CheckWork<'a>,
    /// `None` for a component: its own checks carry their timeouts.
    pub(super) timeout: Option<Duration>,
    /// Armed only when the check did not finish at its first poll.
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) span: tracing::Span,
    pub(super) result: Option<CheckResult>,
}

pub(super) enum CheckWork<'a> {
    Hook(crate::__private::CheckFuture<'a>),
    Component(BoxFuture<'a, HealthReport>),
    Done,
}

/// Runs every check concurrently in the calling task, each under its timeout and span,
/// catching panics. Rather than a `join_all` of wrapped futures, the checks are polled
/// in place: a check that is ready at its first poll (the common case) costs no timer,
/// no clock read and no allocation beyond its own future. Timeouts count from `started`
/// (the caller's clock read).
pub(super) async fn run_checks(checks: &mut [Check<'_>], started: Instant) {
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for check in checks.iter_mut() {
            if check.result.is_some() {
                continue;
            }
            let _entered = check.span.enter();
            let polled = match &mut check.work {
                CheckWork::Hook(future) => {
                    catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))).unwrap_or_else(
                        |panic| {
                            Poll::Ready(CheckResult::One(HealthDetail::unhealthy(format!(
                                "check panicked: {}",
                                panic_message(&*panic)
                            ))))
                        },
                    )
                }
                CheckWork::Component(future) => {
                    // A component's checks' data stays under their names, within the
                    // component's entry.
                    future.as_mut().poll(cx).map(|child| {
                        CheckResult::One(HealthDetail {
                            status: child.status,
                            reason: child.reason,
                            data: child
                                .data
                                .into_iter()
                                .map(|(check, data)| {
                                    (check.into_owned(), data.into_iter().collect())
                                })
                                .collect(),
                        })
                    })
                }
                CheckWork::Done => unreachable!("a finished check has its result"),
            };
            let detail = match polled {
                Poll::Ready(detail) => detail,
                Poll::Pending => match check.timeout {
                    None => {
                        pending = true;
                        continue;
                    }
                    Some(timeout) => {
                        let timer = check.timer.get_or_insert_with(|| {
                            Box::pin(tokio::time::sleep_until(started + timeout))
                        });
                        if timer.as_mut().poll(cx).is_pending() {
                            pending = true;
                            continue;
                        }
                        CheckResult::One(HealthDetail::unhealthy(format!(
                            "check timed out after {timeout:?}"
                        )))
                    }
                },
            };
            // Drop the check's future (and timer) as soon as it is decided.
            check.work = CheckWork::Done;
            check.timer = None;
            check.result = Some(detail);
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
