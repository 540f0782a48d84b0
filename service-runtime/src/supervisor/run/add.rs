//! Adding a service to a running supervisor: [`SupervisorHandle::add`] (OTP's
//! `start_child`), the [`AddService`] it returns, and the running phase's side of it.
//!
//! - **Checked, then started, then listed.** The new service's name must be free and
//!   its dependencies must be services of the supervisor that run now. It is started
//!   before it is listed: while it starts it is not one of the supervisor's services
//!   (readiness, health and the handles' lists do not show it), and if its start fails
//!   it is not added at all, as a failed `start_child` adds no child. The caller gets
//!   the start's error.
//! - **Once listed, a service like any other.** It is supervised under its restart
//!   policy (the supervisor's [`default_restart`](crate::Supervisor::default_restart)
//!   if none was chosen for it), restarted with what it depends on, stopped by the
//!   shutdown before them, and reachable by `stop`, `restart`, `get` and the probes. Its
//!   start's own transitions precede its listing, so subscribers see its changes from
//!   the first one after it runs.
//! - **One at a time, by the running phase**, as the other commands are (see
//!   [`commands`](super::commands)). A shutdown request while the new service starts
//!   answers [`CommandError::Interrupted`] and lists it anyway, so that the shutdown
//!   stops it with the rest.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::commands::{CommandError, Reply, Request};
use super::restarts::EntryState;
use super::{Phase, Run};
use crate::managed::{ErasedService, IntoManaged, Managed};
use crate::restart::RestartPolicy;
use crate::service::Service;
use crate::status::ServiceStatus;
use crate::supervisor::signals::Trigger;
use crate::supervisor::{Entry, ServiceRef, SupervisorHandle, lock};

/// A service on its way into a running supervisor: what the running phase needs of it.
pub(in crate::supervisor) struct NewService {
    service: ErasedService,
    depends_on: Vec<String>,
    policy: RestartPolicy,
    policy_chosen: bool,
}

/// The addition of a service to a running supervisor, made by
/// [`SupervisorHandle::add`]: say what it depends on and how it restarts, then `.await`
/// it. Resolves to the service's handle once it runs and is one of the supervisor's
/// services.
#[must_use = "an addition does nothing until it is awaited"]
pub struct AddService<S: Service> {
    handle: SupervisorHandle,
    managed: Managed<S>,
    depends_on: Vec<String>,
    policy: Option<RestartPolicy>,
}

impl<S: Service> std::fmt::Debug for AddService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddService")
            .field("service", &self.managed.name())
            .field("depends_on", &self.depends_on)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Service> AddService<S> {
    /// The new service depends on `service` (a name, or a `Managed` handle), which must
    /// run now: it is restarted with it and stopped before it, as
    /// [`Supervisor::depends_on`](crate::Supervisor::depends_on) makes it.
    pub fn depends_on(mut self, service: impl ServiceRef) -> Self {
        self.depends_on.push(service.service_name());
        self
    }

    /// The new service's restart policy, as [`Supervisor::restart`](crate::Supervisor::restart)
    /// sets it.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
}

impl<S: Service> IntoFuture for AddService<S> {
    type Output = Result<Managed<S>, CommandError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let new = NewService {
            service: self.managed.erased(),
            depends_on: self.depends_on,
            policy: self.policy.unwrap_or_else(|| self.managed.restart_policy()),
            policy_chosen: self.policy.is_some() || self.managed.restart_chosen(),
        };
        let (handle, managed) = (self.handle, self.managed);
        Box::pin(async move {
            handle.send_command(Request::Add(new)).await?;
            Ok(managed)
        })
    }
}

impl SupervisorHandle {
    /// Adds `service` (a `#[derive(Service)]` value, or a [`Managed`] handle) to the
    /// running supervisor and starts it, as OTP's `start_child` does: resolves to its
    /// handle once it runs and is supervised like the services added before the run.
    ///
    /// The name must be free ([`CommandError::NameTaken`]; give it one with
    /// [`ServiceConfig::name`](crate::ServiceConfig::name)), and what it
    /// [depends on](AddService::depends_on) must be running. If its start fails, it is
    /// not added: the result is the start's error, and a `Managed` handle passed in
    /// still has the service. The addition waits for the running phase, as
    /// [`stop`](Self::stop) does.
    ///
    /// ```
    /// # use service_runtime::{lifecycle, Service, ServiceStatus, Supervisor};
    /// # #[derive(Service)]
    /// # struct Feed;
    /// # #[lifecycle]
    /// # impl Feed {}
    /// #[derive(Service)]
    /// struct Worker {
    ///     shard: u32,
    /// }
    /// # #[lifecycle]
    /// # impl Worker {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let supervisor = Supervisor::new().add(Feed);
    /// let handle = supervisor.handle();
    /// let report = supervisor
    ///     .run_until(async {
    ///         let config = Worker::config().name("worker-7");
    ///         let worker = service_runtime::Managed::with_config(Worker { shard: 7 }, config);
    ///         let worker = handle.add(worker).depends_on("feed").await.unwrap();
    ///         assert_eq!(worker.status(), ServiceStatus::Running);
    ///         assert_eq!(handle.statuses().len(), 2);
    ///     })
    ///     .await;
    /// assert!(report.is_success());
    /// # });
    /// ```
    pub fn add<M: IntoManaged>(&self, service: M) -> AddService<M::Service> {
        AddService {
            handle: self.clone(),
            managed: service.into_managed(),
            depends_on: Vec::new(),
            policy: None,
        }
    }
}

impl Run {
    /// Checks, starts and lists a new service, raced against the shutdown requests;
    /// `false` when a shutdown request came first (the running phase ends).
    pub(super) async fn add(
        &mut self,
        new: NewService,
        reply: Reply,
        trigger: &mut Trigger<'_>,
    ) -> bool {
        let deps = match self.check_new(&new) {
            Ok(deps) => deps,
            Err(error) => {
                tracing::warn!(service = %new.service.0.name(), %error, "could not add a service");
                reply.answer(Err(error));
                return true;
            }
        };
        let name = new.service.0.name().clone();
        tracing::info!(service = %name, after = ?new.depends_on, "adding a service");
        let shutdown = self.shared.shutdown.clone();
        let tally = self.shared.tally.clone();
        let began = Instant::now();
        let started = {
            let observer = &mut self.observer;
            let mut start = std::pin::pin!(new.service.0.start());
            loop {
                tokio::select! {
                    biased;
                    reason = trigger.next() => {
                        tracing::info!(reason, "shutdown requested while a service was added");
                        break None;
                    }
                    () = shutdown.requested() => break None,
                    result = &mut start => break Some(result),
                    () = tally.arrived() => observer.absorb(Phase::Running),
                }
            }
        };
        match started {
            // Listed all the same: the shutdown that follows stops it.
            None => {
                self.enlist(new, &deps, None);
                reply.answer(Err(CommandError::Interrupted));
                false
            }
            Some(Err(error)) => {
                tracing::warn!(service = %name, %error, "could not add a service");
                reply.answer(Err(CommandError::Failed(vec![error])));
                true
            }
            Some(Ok(())) => {
                let took = began.elapsed();
                self.enlist(new, &deps, Some(took));
                tracing::info!(service = %name, ?took, "added a service");
                reply.answer(Ok(()));
                true
            }
        }
    }

    /// The indices of the new service's dependencies, once its name and they are
    /// checked.
    fn check_new(&self, new: &NewService) -> Result<Vec<usize>, CommandError> {
        let name = new.service.0.name();
        if self.entries.iter().any(|e| e.service.0.name() == name) {
            return Err(CommandError::NameTaken {
                name: name.to_string(),
            });
        }
        let mut deps = Vec::with_capacity(new.depends_on.len());
        for dependency in &new.depends_on {
            let found = self
                .entries
                .iter()
                .position(|e| **e.service.0.name() == **dependency);
            let Some(d) = found else {
                return Err(CommandError::UnknownDependency {
                    service: name.to_string(),
                    dependency: dependency.clone(),
                    known: self.names(),
                });
            };
            let status = self.entries[d].service.0.status();
            if status != ServiceStatus::Running {
                return Err(CommandError::DependencyNotRunning {
                    service: name.to_string(),
                    dependency: dependency.clone(),
                    status,
                });
            }
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
        Ok(deps)
    }

    /// Makes `new` the supervisor's next service, `took` the time its start took if it
    /// runs.
    fn enlist(&mut self, new: NewService, deps: &[usize], took: Option<Duration>) {
        let index = self.plan.add(deps);
        debug_assert_eq!(index, self.entries.len(), "the plan and the entries agree");
        self.shared.list(&new.service, index);
        let mut state = EntryState::default();
        if let Some(took) = took {
            // Its start's changes came before its listing: noted here instead.
            if let Some(figures) = lock(&self.shared.stats).get_mut(index) {
                figures.last_start_duration = Some(took);
            }
            state.history.running(Instant::now());
        }
        self.states.push(state);
        let policy = match (new.policy_chosen, self.default_restart) {
            (false, Some(default)) => default,
            _ => new.policy,
        };
        self.entries.push(Entry {
            service: new.service,
            depends_on: new.depends_on,
            policy,
            policy_chosen: new.policy_chosen,
        });
        // Readiness and the probes' cache read the list anew.
        self.shared.tally.touch();
    }
}
