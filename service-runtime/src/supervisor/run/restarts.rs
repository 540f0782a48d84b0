//! What the running phase answers a failure or an exit with: the restart policy applied
//! (not restarted, restarted after a backoff, or escalated past its limit), the group
//! restarted with the service (it and everything that depends on it), and the stops and
//! starts that carry a restart out.

use tokio::time::Instant;

use super::{Run, Step};
use crate::ServiceError;
use crate::managed::EntryChange;
use crate::restart::{Restart, RestartHistory};
use crate::status::ServiceStatus;
use crate::supervisor::plan::Plan;
use crate::supervisor::report::SupervisorError;
use crate::supervisor::shared::Aside;
use crate::supervisor::{Entry, lock};

#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Desired {
    /// The supervisor wants it running: a failure or exit is acted on.
    #[default]
    Running,
    /// The supervisor stopped it (for a restart) or gave up on it: changes are ignored.
    Stopped,
    /// It completed (its run loop finished its work): changes are ignored until the
    /// program starts it again, which the supervisor then supervises as before.
    Completed,
    /// The program stopped it ([`SupervisorHandle::stop`](crate::SupervisorHandle::stop)),
    /// or a service it depends on: changes are ignored, and a restart of what it depends
    /// on leaves it stopped, until the program starts it again.
    Held,
}

#[derive(Default)]
pub(super) struct EntryState {
    pub(super) desired: Desired,
    /// Its restarts under its policy: the window, the backoff, the running time.
    pub(super) history: RestartHistory,
    /// Where this service's [`RestartRecord`](crate::supervisor::report::RestartRecord) is
    /// in the report, once a restart healed a failure of it.
    record: Option<usize>,
}

pub(super) struct PendingRestart {
    pub(super) due: Instant,
    pub(super) group: Vec<usize>,
}

impl Run {
    /// Decides what an observed status change of an entry means.
    pub(super) fn on_change(&mut self, change: EntryChange) -> Step {
        let i = change.index;
        if change.to == ServiceStatus::Running {
            self.states[i].history.running(Instant::now());
            // Started again by the program, if it still runs: supervised as before.
            let set_aside = matches!(self.states[i].desired, Desired::Completed | Desired::Held);
            if set_aside && self.entries[i].service.0.status() == ServiceStatus::Running {
                self.states[i].desired = Desired::Running;
            }
        }
        if self.states[i].desired != Desired::Running {
            return Step::Continue;
        }
        let service = &self.entries[i].service.0;
        // Act on the change that reports the failure or exit, and only if the service is
        // still in that state (a later change may already have superseded it).
        match (change.from, change.to, service.status()) {
            (_, ServiceStatus::Error, ServiceStatus::Error) => {
                self.on_failure(i, change.error.map(|error| *error), false)
            }
            (ServiceStatus::Stopping, ServiceStatus::Stopped, ServiceStatus::Stopped) => {
                if self.entries[i].policy.restart == Restart::Permanent {
                    tracing::warn!(service = %self.name(i), "service stopped by itself; restarting it (permanent)");
                    self.on_failure(i, None, true)
                } else {
                    tracing::info!(service = %self.name(i), "service completed: its run loop finished its work; not restarting it");
                    self.states[i].desired = Desired::Completed;
                    if let Some(figures) = lock(&self.shared.stats).get_mut(i) {
                        figures.aside = Some(Aside::Completed);
                    }
                    self.shared.tally.touch();
                    Step::Continue
                }
            }
            _ => Step::Continue,
        }
    }

    /// A service failed (or exited, under `permanent`): schedule its restart with the
    /// services that depend on it, or escalate.
    fn on_failure(&mut self, i: usize, error: Option<ServiceError>, exited: bool) -> Step {
        let name = self.name(i).clone();
        let policy = self.entries[i].policy;
        if policy.restart == Restart::Temporary && !exited {
            tracing::warn!(service = %name, "service failed; not restarting it (temporary)");
            self.to_stop.push(i);
            self.states[i].desired = Desired::Stopped;
            if let Some(error) = error {
                self.report.errors.push(SupervisorError::Failed(error));
            }
            return Step::Continue;
        }
        let now = Instant::now();
        let state = &mut self.states[i];
        let Some(delay) = state.history.next_delay(&policy, now) else {
            tracing::error!(
                service = %name,
                restarts = state.history.recent(),
                within = ?policy.within,
                "restart limit exceeded; stopping every service"
            );
            self.report.errors.push(SupervisorError::Escalated {
                service: name,
                restarts: policy.max_restarts,
                within: policy.within,
                last_error: error,
            });
            return Step::Escalate;
        };
        if let Some(error) = error {
            self.report.count_restart(&mut state.record, error, now);
        }
        let mut group = self.plan.rest_for_one(i);
        // A dependent that completed did its work, and one the program stopped stays
        // stopped: neither is run again.
        group.retain(|&member| {
            member == i
                || !matches!(
                    self.states[member].desired,
                    Desired::Completed | Desired::Held
                )
        });
        for &member in &group {
            self.states[member].desired = Desired::Stopped;
        }
        tracing::warn!(
            service = %name,
            ?delay,
            with = ?group.iter().skip(1).map(|&m| self.name(m).to_string()).collect::<Vec<_>>(),
            "restarting after backoff"
        );
        self.pending.push(PendingRestart {
            due: now + delay,
            group,
        });
        Step::Continue
    }

    /// Collects the work now owed: stopping groups of pending restarts (at once, so
    /// resources are released during the backoff) and starting the ones that are due.
    pub(super) fn restart_work(&mut self) -> Vec<Work> {
        let now = Instant::now();
        let mut work = Vec::new();
        for i in std::mem::take(&mut self.to_stop) {
            work.push(Work::Stop(vec![i]));
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = waiting;
        for pending in &self.pending {
            if pending
                .group
                .iter()
                .any(|&m| stoppable(self.entries[m].service.0.status()))
            {
                work.push(Work::Stop(pending.group.clone()));
            }
        }
        for pending in due {
            {
                let mut stats = lock(&self.shared.stats);
                for &m in &pending.group {
                    if let Some(figures) = stats.get_mut(m) {
                        figures.restarts += 1;
                    }
                }
            }
            self.states[pending.group[0]].history.restarted(now);
            work.push(Work::Restart(pending.group));
        }
        work
    }
}

fn stoppable(status: ServiceStatus) -> bool {
    matches!(
        status,
        ServiceStatus::Running | ServiceStatus::Starting | ServiceStatus::Error
    )
}

pub(super) enum Work {
    /// Stop these services, dependents first (a restart is pending).
    Stop(Vec<usize>),
    /// Start these services in order (the restart is due).
    Restart(Vec<usize>),
}

/// Carries out restart work; returns the errors of the stops it made (start failures
/// arrive as status changes and are handled there).
pub(super) async fn perform(
    entries: &[Entry],
    plan: &Plan,
    states: &mut [EntryState],
    work: Vec<Work>,
) -> Vec<SupervisorError> {
    let mut errors = Vec::new();
    for item in work {
        match item {
            Work::Stop(group) => {
                for &i in group.iter().rev() {
                    let service = &entries[i].service.0;
                    // A failed start undid itself: it stays `error` until restarted.
                    if !service.needs_stop() {
                        continue;
                    }
                    if let Err(error) = service.stop().await {
                        tracing::error!(service = %service.name(), %error, "stopping before a restart failed");
                        errors.push(SupervisorError::Stop(error));
                    }
                }
            }
            Work::Restart(group) => {
                let mut failed: Vec<usize> = Vec::new();
                for &i in &group {
                    if failed.iter().any(|&f| plan.depends_transitively(i, f)) {
                        // Restarted with the failed dependency's own restart.
                        continue;
                    }
                    let service = &entries[i].service.0;
                    // Stop first: a restart never overlaps the old incarnation's cleanup.
                    if let Err(error) = service.stop().await {
                        errors.push(SupervisorError::Stop(error));
                    }
                    states[i].desired = Desired::Running;
                    if service.start().await.is_err() {
                        // The failure arrives as a status change and is handled there.
                        failed.push(i);
                    }
                }
            }
        }
    }
    errors
}
