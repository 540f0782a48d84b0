//! Stopping or restarting one service of a running supervisor on request:
//! [`SupervisorHandle::stop`] and [`SupervisorHandle::restart`], and the
//! [`CommandError`] they fail with.
//!
//! A command acts on the service and on everything that depends on it, directly or
//! through others (the group a failure of the service would restart): a stop stops the
//! group, dependents first; a restart stops it so, then starts it in start order.
//!
//! - **A stop on request is not a failure.** The group's members are held stopped: not
//!   restarted, whatever their policy, and not restarted with a service they depend on;
//!   they count neither against readiness nor against health (their reports say `stopped
//!   on request`), and a shutdown that finds them stopped exits 0. A failed cleanup is a
//!   failure like any other: the command returns it and the supervisor's report counts it.
//! - **A restart on request is the supervisor's restart, now.** The group starts again
//!   (members held by an earlier stop included; members that completed stay completed)
//!   and is supervised as before; a pending restart of any member is superseded. Each
//!   member's restart count goes up by one; its restart limit is not charged, as the
//!   program, not a failure, asked for it. A start that fails is answered by the
//!   service's policy, as any failure is, and the command returns the error.
//! - **One at a time, by the running phase**, as reloads are: a command made during the
//!   startup waits until every service runs; one made before the run waits for it; at
//!   the shutdown every command still waiting is answered [`CommandError::NotRunning`].
//!   A shutdown request during a command ends it ([`CommandError::Interrupted`]); the
//!   shutdown then stops what it started.

use std::fmt;

use tokio::sync::oneshot;

use super::add::NewService;
use super::restarts::{Desired, EntryState};
use super::{Phase, Run};
use crate::ServiceError;
use crate::status::ServiceStatus;
use crate::supervisor::plan::Plan;
use crate::supervisor::report::SupervisorError;
use crate::supervisor::shared::{Aside, Shared};
use crate::supervisor::signals::Trigger;
use crate::supervisor::{Entry, SupervisorHandle, lock};

/// Why [`SupervisorHandle::stop`], [`SupervisorHandle::restart`] or
/// [`SupervisorHandle::add`] did not do what it was asked.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CommandError {
    /// No service of the supervisor has this name.
    UnknownService {
        /// The name asked for.
        name: String,
        /// The names of the supervisor's services, in the order added.
        known: Vec<String>,
    },
    /// [`SupervisorHandle::add`]: a service of the supervisor has the new service's
    /// name already.
    NameTaken {
        /// The name.
        name: String,
    },
    /// [`SupervisorHandle::add`]: the new service depends on a service the supervisor
    /// does not have.
    UnknownDependency {
        /// The new service's name.
        service: String,
        /// The name it depends on.
        dependency: String,
        /// The names of the supervisor's services, in the order added.
        known: Vec<String>,
    },
    /// [`SupervisorHandle::add`]: the new service depends on a service that is not
    /// running (it is stopped, held by [`SupervisorHandle::stop`], restarting, or failed).
    DependencyNotRunning {
        /// The new service's name.
        service: String,
        /// The name it depends on.
        dependency: String,
        /// The dependency's status at the time.
        status: ServiceStatus,
    },
    /// The supervisor is not running its services: it has not been run, it is shutting
    /// down, or its run is over.
    NotRunning,
    /// A shutdown began while the command ran; the shutdown stops every service.
    Interrupted,
    /// A hook failed: a cleanup hook of a stop (the service ends in `error`), a start
    /// of a restart (the service's restart policy answers it, as any failure), or the
    /// start of a service added (it is not added). One error per service, each naming
    /// the service and its hook.
    Failed(Vec<ServiceError>),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::UnknownService { name, known } => {
                write!(f, "no service is named `{name}`; the services are: ")?;
                f.write_str(&known.join(", "))
            }
            CommandError::NameTaken { name } => write!(
                f,
                "a service is named `{name}` already; give the new one another name with \
                 `ServiceConfig::name`"
            ),
            CommandError::UnknownDependency {
                service,
                dependency,
                known,
            } => write!(
                f,
                "service `{service}` depends on `{dependency}`, which is not a service of the \
                 supervisor; the services are: {}",
                known.join(", ")
            ),
            CommandError::DependencyNotRunning {
                service,
                dependency,
                status,
            } => write!(
                f,
                "service `{service}` depends on `{dependency}`, which is {status}, not \
                 running; add it once `{dependency}` runs"
            ),
            CommandError::NotRunning => f.write_str(
                "the supervisor is not running its services (not run yet, shutting down, or done)",
            ),
            CommandError::Interrupted => f.write_str("a shutdown began while the command ran"),
            CommandError::Failed(errors) => {
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Failed(errors) => errors
                .first()
                .map(|error| error as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

/// What a command asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::supervisor) enum Action {
    Stop,
    Restart,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// One command, and who waits for its outcome.
pub(in crate::supervisor) struct Command {
    pub(super) request: Request,
    pub(super) reply: Reply,
}

/// What a command asks the running phase to do.
pub(in crate::supervisor) enum Request {
    /// Stop or restart the service `name` and its dependents.
    Service { action: Action, name: String },
    /// Add a service and start it ([`SupervisorHandle::add`]).
    Add(NewService),
}

/// Where a command's outcome goes.
pub(in crate::supervisor) struct Reply(oneshot::Sender<Result<(), CommandError>>);

impl Reply {
    pub(super) fn answer(self, outcome: Result<(), CommandError>) {
        // A caller that stopped waiting does not want it.
        let _ = self.0.send(outcome);
    }
}

impl Command {
    /// Answers the command `NotRunning`: the running phase is over.
    pub(super) fn refuse(self) {
        self.reply.answer(Err(CommandError::NotRunning));
    }
}

impl SupervisorHandle {
    /// Sends `request` to the running phase and waits for its outcome.
    pub(super) async fn send_command(&self, request: Request) -> Result<(), CommandError> {
        let (reply, outcome) = oneshot::channel();
        let command = Command {
            request,
            reply: Reply(reply),
        };
        if self.shared.commands.send(command).is_err() {
            return Err(CommandError::NotRunning);
        }
        outcome.await.unwrap_or(Err(CommandError::NotRunning))
    }
}

impl SupervisorHandle {
    /// Stops the service named `name` and every service that depends on it (dependents
    /// first), and keeps them stopped: they are not restarted, and they count neither
    /// against readiness nor against health, until [`restart`](Self::restart) (or the
    /// program, through a handle) starts them again. Resolves once they are stopped;
    /// stopping a service that is stopped already does nothing.
    ///
    /// Commands are carried out one at a time by the supervisor's loop: one made during
    /// the startup waits until every service runs, and one made before the supervisor
    /// is run waits for its run.
    ///
    /// ```
    /// # use service_runtime::{lifecycle, Service, Supervisor};
    /// # #[derive(Service)]
    /// # struct Feed;
    /// # #[lifecycle]
    /// # impl Feed {}
    /// # #[derive(Service)]
    /// # struct Strategy;
    /// # #[lifecycle]
    /// # impl Strategy {}
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let supervisor = Supervisor::new().add(Feed).add(Strategy).depends_on("feed");
    /// let handle = supervisor.handle();
    /// let report = supervisor
    ///     .run_until(async {
    ///         handle.stop("feed").await.unwrap(); // the strategy stops first
    ///         assert!(handle.stats().iter().all(|s| s.stopped_on_request));
    ///         handle.restart("feed").await.unwrap(); // then the feed, then the strategy
    ///     })
    ///     .await;
    /// assert!(report.is_success());
    /// # });
    /// ```
    pub async fn stop(&self, name: &str) -> Result<(), CommandError> {
        self.command(Action::Stop, name).await
    }

    /// Restarts the service named `name` and every service that depends on it: stops
    /// them (dependents first), then starts them in start order, as the supervisor
    /// restarts a failed service, but at once and without charging its restart limit.
    /// Starts a service that is stopped (by [`stop`](Self::stop), or given up on).
    /// Resolves once they run again, or with the failures.
    ///
    /// See [`stop`](Self::stop) for when commands are carried out.
    pub async fn restart(&self, name: &str) -> Result<(), CommandError> {
        self.command(Action::Restart, name).await
    }

    async fn command(&self, action: Action, name: &str) -> Result<(), CommandError> {
        let name = name.to_owned();
        self.send_command(Request::Service { action, name }).await
    }
}

impl Run {
    /// Carries out one command, raced against the shutdown requests as a restart is;
    /// `false` when a shutdown request came first (the running phase ends).
    pub(super) async fn command(&mut self, command: Command, trigger: &mut Trigger<'_>) -> bool {
        let Command { request, reply } = command;
        match request {
            Request::Service { action, name } => {
                self.on_service(action, name, reply, trigger).await
            }
            Request::Add(new) => self.add(new, reply, trigger).await,
        }
    }

    /// The names of the services, in the order added.
    pub(super) fn names(&self) -> Vec<String> {
        let names = self.entries.iter().map(|e| e.service.0.name().to_string());
        names.collect()
    }

    /// Stops or restarts the service `name` and its dependents.
    async fn on_service(
        &mut self,
        action: Action,
        name: String,
        reply: Reply,
        trigger: &mut Trigger<'_>,
    ) -> bool {
        let found = self
            .entries
            .iter()
            .position(|e| **e.service.0.name() == *name);
        let Some(i) = found else {
            let known = self.names();
            reply.answer(Err(CommandError::UnknownService { name, known }));
            return true;
        };
        let group = self.plan.rest_for_one(i);
        let with: Vec<String> = group[1..]
            .iter()
            .map(|&m| self.name(m).to_string())
            .collect();
        match action {
            Action::Stop => {
                tracing::info!(service = %self.name(i), ?with, "stopping a service on request")
            }
            Action::Restart => {
                tracing::info!(service = %self.name(i), ?with, "restarting a service on request")
            }
        }
        // Held from now on, but for dependents that completed: the group's own stops are
        // not taken for exits or failures, and no pending restart starts a member again.
        for &m in &group {
            if m == i || self.states[m].desired != Desired::Completed {
                self.states[m].desired = Desired::Held;
            }
        }
        for pending in &mut self.pending {
            pending.group.retain(|m| !group.contains(m));
        }
        self.pending.retain(|pending| !pending.group.is_empty());
        let shutdown = self.shared.shutdown.clone();
        let tally = self.shared.tally.clone();
        let (stop_errors, start_errors) = {
            let observer = &mut self.observer;
            let mut work = std::pin::pin!(carry_out(
                &self.entries,
                &self.plan,
                &mut self.states,
                &self.shared,
                action,
                &group
            ));
            loop {
                tokio::select! {
                    biased;
                    reason = trigger.next() => {
                        tracing::info!(reason, "shutdown requested during a command");
                        reply.answer(Err(CommandError::Interrupted));
                        return false;
                    }
                    () = shutdown.requested() => {
                        reply.answer(Err(CommandError::Interrupted));
                        return false;
                    }
                    errors = &mut work => break errors,
                    () = tally.arrived() => observer.absorb(Phase::Running),
                }
            }
        };
        // Noted before the figures are marked: a start observed later would unmark them.
        self.observer.absorb(Phase::Running);
        if action == Action::Stop {
            let mut stats = lock(&self.shared.stats);
            for &m in &group {
                let held = self.states[m].desired == Desired::Held;
                let stopped = self.entries[m].service.0.status() == ServiceStatus::Stopped;
                if let (true, true, Some(figures)) = (held, stopped, stats.get_mut(m)) {
                    figures.aside = Some(Aside::StoppedOnRequest);
                }
            }
            drop(stats);
            // Readiness and the probes' cache read the figures anew.
            self.shared.tally.touch();
        }
        let errors: Vec<ServiceError> = stop_errors.iter().chain(&start_errors).cloned().collect();
        self.report
            .errors
            .extend(stop_errors.into_iter().map(SupervisorError::Stop));
        let name = self.name(i);
        let outcome = if errors.is_empty() {
            match action {
                Action::Stop => tracing::info!(service = %name, "stopped on request"),
                Action::Restart => tracing::info!(service = %name, "restarted on request"),
            }
            Ok(())
        } else {
            let error = CommandError::Failed(errors);
            tracing::warn!(service = %name, action = action.as_str(), %error, "command failed");
            Err(error)
        };
        reply.answer(outcome);
        true
    }
}

/// Stops `group` (dependents first), then for a restart starts it in start order;
/// returns the failures of the stops and of the starts. (A start failure also arrives
/// as a status change, which the running phase answers with the service's policy.)
async fn carry_out(
    entries: &[Entry],
    plan: &Plan,
    states: &mut [EntryState],
    shared: &Shared,
    action: Action,
    group: &[usize],
) -> (Vec<ServiceError>, Vec<ServiceError>) {
    let (mut stop_errors, mut start_errors) = (Vec::new(), Vec::new());
    for &m in group.iter().rev() {
        let service = &entries[m].service.0;
        if !service.needs_stop() {
            continue;
        }
        if let Err(error) = service.stop().await {
            stop_errors.push(error);
        }
    }
    if action == Action::Stop {
        return (stop_errors, start_errors);
    }
    let mut failed: Vec<usize> = Vec::new();
    for &m in group {
        if states[m].desired != Desired::Held {
            // A dependent that completed did its work.
            continue;
        }
        if failed.iter().any(|&f| plan.depends_transitively(m, f)) {
            // Left for the failed dependency's own restart, which its policy decides.
            states[m].desired = Desired::Stopped;
            continue;
        }
        if let Some(figures) = lock(&shared.stats).get_mut(m) {
            figures.restarts += 1;
        }
        states[m].desired = Desired::Running;
        if let Err(error) = entries[m].service.0.start().await {
            start_errors.push(error);
            failed.push(m);
        }
    }
    (stop_errors, start_errors)
}
