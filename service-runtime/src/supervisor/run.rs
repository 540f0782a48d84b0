//! One run of a supervisor, from its plan to its report: the startup (level by level,
//! the level work in [`levels`]), the running phase (failures and exits answered,
//! restarts carried out; the answers themselves are in [`restarts`], reloads in
//! [`reload`], the program's stops and restarts of one service in [`commands`], the
//! services it adds at run time in [`add`]), and the
//! shutdown (the levels in reverse, under the budget).
//!
//! [`Run`] holds everything a run changes; [`Observer`] takes the services' status
//! changes from the tally's mailbox, keeps their figures, and queues the changes the
//! running phase acts on.
//!
//! # Invariants
//!
//! 1. One task owns the run. `Supervisor::run` consumes the supervisor and keeps the
//!    `Run`, its `Observer`, the entries' states and the pending restarts in its own
//!    future, driven through `&mut self` only: by the caller's task, or by the task that
//!    `run_until_signal` and `run_until` spawn on the multi-thread runtime. Other tasks
//!    reach only `Shared` (through `SupervisorHandle`s: the caller's, the probe
//!    endpoint's, the systemd watchdog's) and the services themselves.
//!
//! 2. Every change is observed, and each phase acts on its own kind. The services post
//!    their changes, tagged with their entry index, to the tally's mailbox from
//!    `StatusTally::observe` (before the probes are served) until the `Observer` is
//!    dropped (`StatusTally::close`). `Observer::absorb` notes every one of them in the
//!    figures, whatever the phase, and queues for the running phase only those
//!    `Phase::acts_on` picks:
//!    - `Phase::Startup`: a failure (`to == error`) or an exit (`stopping -> stopped`),
//!      acted on once every service has started; dropped unanswered if the startup
//!      fails or is interrupted (the shutdown stops everything anyway);
//!    - `Phase::Running`: those, and `to == running` (the running time that resets the
//!      backoff); queued while restart work runs, acted on in order once it is done;
//!    - `Phase::Shutdown`: none.
//!
//! 3. A queued change is acted on only if it still holds. `Run::on_change` ignores the
//!    changes of an entry the supervisor does not want running (`Desired::Stopped`: it is
//!    stopped for a pending restart, or given up on; `Desired::Completed`: its run loop
//!    finished its work, and `Desired::Held`: the program stopped it, both until the
//!    program starts it again), and a failure or an exit whose
//!    service has moved on since: so the supervisor's own stop before a restart, observed
//!    after the service was started again, is not taken for an exit.
//!
//! 4. `Shared` is protected by its own locks, and the run writes little of it:
//!    - `stats` (a `Mutex`): written by the run only (`Observer::absorb`, and the restart
//!      counts in `Run::restart_work`), read by `SupervisorHandle::stats`; it grows
//!      only at the end, by one, when a service is listed (`Shared::list`: by
//!      `Supervisor::add` before the run, by `Run::add` in it), after `services`;
//!    - `services` and `subscribers` (`Mutex`es): the run's own code reads its own
//!      `entries`, and locks them only to list a service it adds (`Shared::list`, which
//!      takes them as `SupervisorHandle::subscribe` does); otherwise only through the
//!      handles it gives the probe endpoint and the systemd session, as any handle does.
//!      `entries`, `states`, the plan, `services` and `stats` have one index per
//!      service: the run appends to each in `Run::enlist`, in one synchronous stretch,
//!      and never removes;
//!    - `startup` (a `watch`) is set once, when the startup ends (started, failed or
//!      interrupted), before the running phase or the shutdown begins;
//!    - `started_at` (a `OnceLock`) is set once every service has started; `stopping` and
//!      `shutdown` are one-way `Shutdown` signals; `probe_address` is set once, when the
//!      endpoint is bound;
//!    - `tally`: its counts are atomics kept by the services' transitions, under each
//!      service's control lock; its mailbox is a `Mutex` held for one push (a service
//!      posting) or one swap (the run taking a batch, `StatusTally::take`).
//!
//! # Deadlock safety
//!
//! - No lock is held across an `.await`: every `lock(..)` here is taken and released in
//!   a synchronous stretch (`Observer::absorb`, `Run::restart_work`, the probe address,
//!   and the shutdown's list of stop errors, locked for one push once a level's stops
//!   are done).
//! - The run never holds two locks at once but in `Shared::list`: `StatusTally::take`
//!   releases the mailbox before `Observer::absorb` locks `stats`, and nothing is called
//!   on a service under either. `Shared::list` holds `subscribers` while it locks the new
//!   service's control state and `services`, in the order `SupervisorHandle::subscribe`
//!   takes them; nothing takes `subscribers` under either. A service locks its control
//!   state, then the mailbox, never the reverse.
//! - The services never wait for the run: a transition posts its change, notifies, and
//!   goes on. A change posted while the run does not wait on `StatusTally::arrived` is
//!   not lost: `Notify::notify_one` keeps the permit, and `observing` takes the mailbox
//!   after every poll of the startup's and the shutdown's work, which do not wait on it.
//! - The run never waits for a `run_until` caller that polls its future in its own
//!   task: it reads the caller's request from a channel and wakes it with
//!   `Notify::notify_one` (`Run::poke`).
//! - Every wait on the services is raced (a `biased` `select!`) against the trigger and,
//!   until the shutdown, the handle's request: a start or a restart that never completes
//!   cannot keep the run from its shutdown, whose stops are bounded by the budget and
//!   abandoned at the trigger's next request.

pub(super) mod add;
pub(super) mod commands;
mod levels;
pub(super) mod reload;
mod restarts;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use self::levels::{observing, start_levels, stop_level};
use self::reload::{ReloadRequest, next_request, refuse_from_now_on};
use self::restarts::{EntryState, PendingRestart, perform};
use super::handle::StartupError;
use super::plan::Plan;
use super::report::{Report, SupervisorError};
use super::signals::Trigger;
use super::{Entry, Figures, Shared, Supervisor, lock};
use crate::managed::EntryChange;
use crate::restart::RestartPolicy;
use crate::status::ServiceStatus;

impl Supervisor {
    /// Checks the plan, serves the probes, then starts, supervises and stops every
    /// service; the report says how it went.
    pub(super) async fn run(
        mut self,
        mut trigger: Trigger<'_>,
        poke: Option<Arc<Notify>>,
    ) -> Report {
        if let Some(default) = self.default_restart {
            for entry in self.entries.iter_mut().filter(|entry| !entry.policy_chosen) {
                entry.policy = default;
            }
        }
        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(errors) => {
                for error in &errors {
                    tracing::error!(error = %error, "invalid supervisor");
                }
                let messages = errors.iter().filter_map(|error| match error {
                    SupervisorError::Config(message) => Some(message.clone()),
                    _ => None,
                });
                let outcome = Err(StartupError::Invalid(messages.collect()));
                self.shared.startup.send_replace(Some(outcome));
                return Report {
                    errors,
                    restarts: Vec::new(),
                };
            }
        };
        // Observed before the probes are served, so every change they could see is
        // observed. (Each service joined the supervisor, with its index, when added.)
        self.shared.tally.observe();
        // Made at once: its drop closes the mailbox however the run ends (a probe address
        // that cannot be bound, a `run` future dropped while the probes start).
        let observer = Observer {
            inbox: Vec::new(),
            deferred: VecDeque::new(),
            shared: self.shared.clone(),
        };
        #[cfg(feature = "http")]
        let _probes = match self
            .probes
            .as_ref()
            .filter(|probes| !probes.address.is_empty())
        {
            Some(probes) => match crate::probes::http::serve(probes, self.handle()).await {
                Ok((server, address)) => {
                    *lock(&self.shared.probe_address) = Some(address);
                    Some(server)
                }
                Err(error) => {
                    tracing::error!(address = %probes.address, %error, "could not serve the probe endpoint");
                    return Report::single(SupervisorError::Probe {
                        address: probes.address.clone(),
                        error: Arc::new(error),
                    });
                }
            },
            None => None,
        };
        #[cfg(feature = "systemd")]
        let systemd = crate::systemd::Session::begin(self.systemd.clone(), &self.handle());
        let mut run = Run {
            #[cfg(feature = "systemd")]
            systemd,
            states: self.entries.iter().map(|_| EntryState::default()).collect(),
            entries: self.entries,
            plan,
            shared: self.shared,
            shutdown_timeout: self.shutdown_timeout,
            drain_period: self.drain_period,
            repeat_window: self.repeat_window,
            default_restart: self.default_restart,
            observer,
            report: Report::default(),
            pending: Vec::new(),
            to_stop: Vec::new(),
            reload_requests: self.reload_requests,
            commands: self.commands,
            poke,
        };
        // Every poll of the loop is a turn that liveness watches.
        let shared = run.shared.clone();
        shared.turns.track(run.execute(&mut trigger)).await;
        run.report
    }
}

/// The phase a change is observed in, which decides whether the running phase must act
/// on it later.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Starting the services: failures and exits are acted on once all started (their
    /// running time is reset then anyway).
    Startup,
    /// Running, during a restart: every change the running phase acts on is kept.
    Running,
    /// Stopping every service: nothing is acted on.
    Shutdown,
}

impl Phase {
    fn acts_on(self, change: &EntryChange) -> bool {
        let failed_or_exited = change.to == ServiceStatus::Error
            || (change.from, change.to) == (ServiceStatus::Stopping, ServiceStatus::Stopped);
        match self {
            Phase::Startup => failed_or_exited,
            Phase::Running => failed_or_exited || change.to == ServiceStatus::Running,
            Phase::Shutdown => false,
        }
    }
}

/// Receives the status changes of the supervisor's services in every phase: keeps their
/// figures (readiness and the probes' cache read the services' own tally instead), and
/// queues the changes the running phase acts on when it cannot act at once. Each change
/// carries the index of its entry (each service joined with it in `Supervisor::add`), so
/// nothing is looked up.
struct Observer {
    /// The batch taken from the mailbox (`StatusTally::take`), kept for its capacity.
    inbox: Vec<EntryChange>,
    /// Changes observed but not acted on yet, in order.
    deferred: VecDeque<EntryChange>,
    shared: Arc<Shared>,
}

impl Observer {
    /// Records one change in its entry's figures.
    fn note(stats: &mut [Figures], change: &EntryChange) {
        let Some(figures) = stats.get_mut(change.index) else {
            return;
        };
        match (change.from, change.to) {
            (_, ServiceStatus::Starting) => figures.aside = None,
            (ServiceStatus::Starting, ServiceStatus::Running) => {
                figures.last_start_duration = Some(change.duration());
            }
            (ServiceStatus::Stopping, ServiceStatus::Stopped) => {
                figures.last_stop_duration = Some(change.duration());
            }
            _ => {}
        }
    }

    /// Observes every change posted so far, in one lock of the figures; queues the ones
    /// the running phase will act on.
    fn absorb(&mut self, phase: Phase) {
        self.shared.tally.take(&mut self.inbox);
        if self.inbox.is_empty() {
            return;
        }
        let mut stats = lock(&self.shared.stats);
        for change in self.inbox.drain(..) {
            Self::note(&mut stats, &change);
            if phase.acts_on(&change) {
                self.deferred.push_back(change);
            }
        }
    }
}

impl Drop for Observer {
    /// The run is over: the services stop posting changes and forget the supervisor.
    fn drop(&mut self) {
        self.shared.tally.close();
    }
}

struct Run {
    entries: Vec<Entry>,
    plan: Plan,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    /// How long the shutdown waits, not ready, before the first stop.
    drain_period: Duration,
    repeat_window: Duration,
    /// The policy of a service added at run time whose policy was not chosen for it.
    default_restart: Option<RestartPolicy>,
    observer: Observer,
    report: Report,
    states: Vec<EntryState>,
    pending: Vec<PendingRestart>,
    /// Failed services that will not be restarted: stopped at once to release what they hold.
    to_stop: Vec<usize>,
    /// Reloads asked for (`SIGHUP`, `SupervisorHandle::reload`), carried out one at a
    /// time by the running phase.
    reload_requests: tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>,
    /// Stops and restarts of one service asked for (`SupervisorHandle::stop`,
    /// `restart`), carried out one at a time by the running phase.
    commands: tokio::sync::mpsc::UnboundedReceiver<commands::Command>,
    /// Wakes a `run_until` caller that polls its future in its own task.
    poke: Option<Arc<Notify>>,
    #[cfg(feature = "systemd")]
    systemd: Option<crate::systemd::Session>,
}

/// What the running phase decided while handling one status change.
enum Step {
    Continue,
    Escalate,
    Reload(ReloadRequest),
    Command(commands::Command),
}

impl Run {
    fn name(&self, i: usize) -> &Arc<str> {
        self.entries[i].service.0.name()
    }

    async fn execute(&mut self, trigger: &mut Trigger<'_>) {
        tracing::info!(
            services = self.entries.len(),
            levels = self.plan.level_ends.len(),
            "supervisor starting"
        );
        let shutdown = self.shared.shutdown.clone();
        let started = tokio::select! {
            biased;
            reason = trigger.next() => {
                tracing::warn!(reason, "shutdown requested during startup");
                false
            }
            () = shutdown.requested() => {
                tracing::warn!("shutdown requested during startup");
                false
            }
            ok = start_levels(&self.entries, &self.plan, &mut self.report, &mut self.observer) => ok,
        };
        let outcome = if started {
            Ok(())
        } else {
            Err(self
                .report
                .errors
                .iter()
                .find_map(|error| match error {
                    SupervisorError::Start(error) => Some(StartupError::Failed(error.clone())),
                    _ => None,
                })
                .unwrap_or(StartupError::Interrupted))
        };
        if started {
            let now = Instant::now();
            let _ = self.shared.started_at.set(now);
            for state in &mut self.states {
                state.history.running(now);
            }
            tracing::info!("all services running");
            self.shared.startup.send_replace(Some(outcome));
            #[cfg(feature = "systemd")]
            if let Some(systemd) = &mut self.systemd {
                let handle = super::SupervisorHandle {
                    shared: self.shared.clone(),
                };
                systemd.ready(&handle, self.entries.len());
            }
            self.poke();
            self.supervise(trigger).await;
        } else {
            self.shared.startup.send_replace(Some(outcome));
        }
        self.shutdown(trigger).await;
        for entry in &self.entries {
            let parent = entry.service.0.name();
            let incidents = entry.service.0.component_incidents();
            self.report.count_components(parent, incidents);
        }
    }

    /// The running phase: act on failures and exits until a shutdown request.
    async fn supervise(&mut self, trigger: &mut Trigger<'_>) {
        let shutdown = self.shared.shutdown.clone();
        let tally = self.shared.tally.clone();
        loop {
            let next_due = self.pending.iter().map(|p| p.due).min();
            let step = tokio::select! {
                biased;
                reason = trigger.next() => {
                    tracing::info!(reason, "shutdown requested");
                    return;
                }
                () = shutdown.requested() => {
                    tracing::info!("shutdown requested through the handle");
                    return;
                }
                // Changes observed while a restart or the startup ran, in order.
                () = std::future::ready(()), if !self.observer.deferred.is_empty() => {
                    match self.observer.deferred.pop_front() {
                        Some(change) => self.on_change(change),
                        None => Step::Continue,
                    }
                }
                // Observed, then acted on in order through `deferred` above.
                () = tally.arrived() => {
                    self.observer.absorb(Phase::Running);
                    Step::Continue
                }
                () = sleep_until_opt(next_due), if next_due.is_some() => {
                    Step::Continue
                }
                request = next_request(&mut self.reload_requests) => Step::Reload(request),
                command = next_request(&mut self.commands) => Step::Command(command),
            };
            #[cfg(feature = "systemd")]
            if let Some(systemd) = &mut self.systemd {
                systemd.flush();
            }
            self.poke();
            match step {
                Step::Continue => {}
                Step::Escalate => return,
                Step::Reload(request) => {
                    if !self.reload(request, trigger).await {
                        return;
                    }
                    continue;
                }
                Step::Command(command) => {
                    if !self.command(command, trigger).await {
                        return;
                    }
                    continue;
                }
            }
            // Restarts and their preparation run here, raced against shutdown requests:
            // a request abandons them at once (the shutdown stops whatever they began).
            // Changes meanwhile are observed, and acted on once the work is done.
            let work = self.restart_work();
            if work.is_empty() {
                continue;
            }
            let observer = &mut self.observer;
            let mut work =
                std::pin::pin!(perform(&self.entries, &self.plan, &mut self.states, work));
            let done = loop {
                tokio::select! {
                    biased;
                    reason = trigger.next() => {
                        tracing::info!(reason, "shutdown requested during a restart");
                        return;
                    }
                    () = shutdown.requested() => return,
                    errors = &mut work => break errors,
                    () = tally.arrived() => observer.absorb(Phase::Running),
                }
            };
            self.report.errors.extend(done);
        }
    }

    /// Wakes a `run_until` caller polling its future in its own task, so it polls it
    /// again (as it is polled with the supervisor when they share a task).
    fn poke(&self) {
        if let Some(poke) = &self.poke {
            poke.notify_one();
        }
    }

    /// Stops every service in reverse levels (each level in parallel) under the budget;
    /// a second shutdown request abandons what is left.
    async fn shutdown(&mut self, trigger: &mut Trigger<'_>) {
        self.shared.stopping.request();
        refuse_from_now_on(&mut self.reload_requests, ReloadRequest::refuse);
        refuse_from_now_on(&mut self.commands, commands::Command::refuse);
        #[cfg(feature = "systemd")]
        if let Some(systemd) = &mut self.systemd {
            systemd.stopping();
        }
        self.pending.clear();
        let began = Instant::now();
        if !self.drain_period.is_zero() && self.shared.started_at.get().is_some() {
            self.drain(trigger, began).await;
        }
        tracing::info!(budget = ?self.shutdown_timeout, services = self.entries.iter().filter(|e| e.service.0.needs_stop()).count(), "stopping every service");
        let errors = Mutex::new(Vec::new());
        let outcome = {
            let (entries, plan, errors) = (&self.entries, &self.plan, &errors);
            let stop_all = async move {
                for level in plan.levels().rev() {
                    for error in stop_level(entries, level).await {
                        lock(errors).push(SupervisorError::Stop(error));
                    }
                }
            };
            let stop = tokio::time::timeout(self.shutdown_timeout, stop_all);
            // Changes are observed as the services stop (for the figures and the probes).
            tokio::select! {
                biased;
                reason = trigger.next_from(began + self.repeat_window) => Some((reason, true)),
                finished = observing(&mut self.observer, Phase::Shutdown, stop) => {
                    finished.err().map(|_| ("the shutdown budget ran out", false))
                }
            }
        };
        self.report.errors.extend(
            errors
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.observer.absorb(Phase::Shutdown);
        if let Some((reason, forced)) = outcome {
            // Everything not stopped is cancelled, in stop order: the services still
            // stopping, and those the shutdown never got to.
            let budget = (!forced).then_some(self.shutdown_timeout);
            let (mut abandoned, mut never_reached) = (Vec::new(), Vec::new());
            for &i in self.plan.order.iter().rev() {
                let Some(status) = self.entries[i].service.0.abandon(budget) else {
                    continue;
                };
                let name = self.name(i).to_string();
                match status {
                    ServiceStatus::Stopping => abandoned.push(name),
                    _ => never_reached.push(name),
                }
            }
            self.observer.absorb(Phase::Shutdown);
            tracing::error!(
                reason,
                ?abandoned,
                ?never_reached,
                "shutdown abandoned: every service not stopped was cancelled"
            );
            self.report.errors.push(if forced {
                SupervisorError::Forced {
                    abandoned,
                    never_reached,
                }
            } else {
                SupervisorError::ShutdownTimeout {
                    budget: self.shutdown_timeout,
                    abandoned,
                    never_reached,
                }
            });
        } else {
            tracing::info!("every service stopped");
        }
    }
}

impl Run {
    /// Readiness already reports not ready: waits the drain period before the first stop,
    /// observing the services' changes meanwhile. A second shutdown request ends it.
    async fn drain(&mut self, trigger: &mut Trigger<'_>, began: Instant) {
        tracing::info!(drain = ?self.drain_period, "draining before the stops");
        let tally = self.shared.tally.clone();
        let mut wait = std::pin::pin!(tokio::time::sleep(self.drain_period));
        loop {
            tokio::select! {
                biased;
                reason = trigger.next_from(began + self.repeat_window) => {
                    tracing::info!(reason, "shutdown requested again during the drain: stopping now");
                    return;
                }
                () = &mut wait => return,
                () = tally.arrived() => self.observer.absorb(Phase::Shutdown),
            }
        }
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
