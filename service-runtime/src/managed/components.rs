//! A running parent's watch over its components (its `#[service(component)]` fields).
//!
//! A component is one child service: a `Managed<S>` field, the `Some` of an
//! `Option<Managed<S>>` field (a `None` is no component: nothing to start, stop, watch or
//! report), or one element of a `Vec<Managed<S>>` field, a pool, whose element `i` is
//! named `field[i]` in errors, incidents, logs and health reports. The start reads them
//! after the init hooks and keeps them, in field order and element order, in
//! `Control::components`; everything below treats each element as a component of its
//! own, with the field's `critical` or `optional`.
//!
//! From the moment a parent becomes `running` until a stop begins, one task per parent
//! receives every status change of its components:
//!
//! - a **critical** component that fails (moves to `error`) stops its parent, which ends
//!   in `error` with a [`ServiceError::Component`] cause naming the component and, through
//!   the component's own error, its hook. A supervisor's restart policy then applies to
//!   the parent, and restarting the parent restarts its components;
//! - an **optional** component that fails is logged at `warn` and restarted by the parent
//!   under the component's own restart policy (`restart`, backoff, `max_restarts` within
//!   `restart_within`), while the parent's health shows it degraded. Past its limit, or
//!   under `temporary`, it stays in `error` until the parent stops (logged at `error`);
//! - a component that stops by itself (its run loop returned `Ok`) is restarted under
//!   `permanent` only, and otherwise left stopped: it finished its work.
//!
//! The answers to optional components' failures are kept as [`ComponentIncident`]s in
//! the parent's control state, so that a supervisor's report counts them: a failure a
//! restart healed as a restart record, one left in `error` as a failure (exit code 1).
//!
//! # Invariants
//!
//! - **One current watch.** The parent's `Control::components_watch` holds the abort
//!   handle of its current watch. Whatever takes the parent out of `running` for good (a
//!   stop beginning, a shutdown abandoning it, its last handle going, a new watch replacing
//!   it) takes the handle under the parent's lock and aborts the task. The task itself acts
//!   only under the parent's lock, after checking that it is still the current watch (by
//!   task id) and that the parent is `running`: so a watch whose abort has not landed yet
//!   (on another worker) never acts.
//! - **Restarts are ordered with the parent's stop.** An optional component's restart
//!   begins (`DynService::start_now`, which makes the component's first transition) under
//!   the parent's lock: a parent's stop, which begins under that lock too, either comes
//!   first (the watch no longer acts) or finds the restart in flight and stops the
//!   component after it, cancelling it.
//! - **Lock order: parent, then component.** The watch takes a component's lock only
//!   while holding its parent's; a component's transitions never take the parent's lock
//!   (they send to the watch's channel), and dropping the watch task releases component
//!   handles that the parent also holds, never the last one.
//! - **One name per component.** Incidents are kept by the component's name, and a
//!   pool's element names are unique within the parent (`field` is unique, and `[i]` within
//!   the field), so an element's incident is its own.
//! - **A change is acted on only while it holds**, as a supervisor does: the component
//!   must still be in the status the change reports, so the changes a restart made
//!   itself, read after it, are superseded.

use std::borrow::Cow;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Managed;
use super::control::{Control, Inner};
use super::erased::ErasedService;
use super::observers::{ComponentChange, Subscriber};
use crate::error::ServiceError;
use crate::restart::{Restart, RestartHistory, RestartPolicy};
use crate::service::Service;
use crate::status::ServiceStatus;

/// The failures of one optional component and how its parent answered them.
#[derive(Clone, Debug)]
pub(crate) struct ComponentIncident {
    /// The component's name in the parent: its field, or `field[i]` in a pool.
    pub(crate) field: Cow<'static, str>,
    /// The failures answered with a restart.
    pub(crate) restarts: u64,
    pub(crate) first: Instant,
    pub(crate) last: Instant,
    pub(crate) last_cause: ServiceError,
    /// The last failure was not restarted (`temporary`, or past the restart limit), and
    /// the component has not run since.
    pub(crate) given_up: bool,
}

/// One component as its parent's watch keeps it.
struct Watched {
    field: Cow<'static, str>,
    critical: bool,
    handle: ErasedService,
    policy: RestartPolicy,
    history: RestartHistory,
    /// When its pending restart is due.
    due: Option<Instant>,
}

impl<S: Service> Inner<S> {
    /// Begins the watch of a parent that has just become `running` with the components
    /// in `ctl` (nothing to watch without them, or without a runtime to watch on).
    pub(super) fn watch_components(self: &Arc<Self>, ctl: &mut Control) {
        ctl.end_components_watch();
        if ctl.components.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sender, changes) = mpsc::unbounded_channel();
        // Started again with the parent: a failure a component was left in is healed.
        let running: Vec<Cow<'static, str>> = ctl
            .components
            .iter()
            .filter(|entry| entry.handle.0.status() == ServiceStatus::Running)
            .map(|entry| entry.field.clone())
            .collect();
        for field in running {
            Self::healed(ctl, &field);
        }
        let watched = ctl
            .components
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let component = &entry.handle.0;
                component.add_subscriber(Subscriber::Parent {
                    index,
                    sender: sender.clone(),
                });
                // A component that failed or finished between its start and this
                // subscription: its change is read as if it came now.
                let status = component.status();
                if matches!(status, ServiceStatus::Error | ServiceStatus::Stopped) {
                    let _ = sender.send(ComponentChange {
                        index,
                        from: ServiceStatus::Running,
                        to: status,
                        error: component.last_error(),
                    });
                }
                Watched {
                    field: entry.field.clone(),
                    critical: entry.critical,
                    handle: entry.handle.clone(),
                    policy: component.config().restart,
                    history: RestartHistory::default(),
                    due: None,
                }
            })
            .collect();
        let task = runtime.spawn(watch(Arc::downgrade(self), changes, watched));
        ctl.components_watch = Some(task.abort_handle());
    }

    /// Whether the task calling this is the current watch of a `running` parent: the
    /// only state a watch acts in. (The start that made the parent `running` may still
    /// be in flight, ending: a stop begun now waits for it.)
    fn watch_may_act(&self, ctl: &Control) -> bool {
        let current = ctl
            .components_watch
            .as_ref()
            .is_some_and(|task| tokio::task::try_id() == Some(task.id()));
        current && self.status() == ServiceStatus::Running
    }

    /// Acts on one change; `false` once the watch is over.
    fn on_component_change(
        self: &Arc<Self>,
        watched: &mut [Watched],
        change: ComponentChange,
    ) -> bool {
        let Some(component) = watched.get_mut(change.index) else {
            return true;
        };
        if component.handle.0.status() != change.to {
            return true;
        }
        let now = Instant::now();
        match (change.from, change.to) {
            (_, ServiceStatus::Running) => {
                component.history.running(now);
                Self::healed(&mut self.lock(), &component.field);
            }
            (_, ServiceStatus::Error) => {
                let Some(error) = change.error.or_else(|| component.handle.0.last_error()) else {
                    debug_assert!(false, "every move to `error` carries its cause");
                    return true;
                };
                if component.critical {
                    self.critical_component_failed(component.field.clone(), error);
                    return false;
                }
                self.schedule_restart(component, Some(&error), now);
            }
            (ServiceStatus::Stopping, ServiceStatus::Stopped) => {
                if component.policy.restart == Restart::Permanent {
                    self.schedule_restart(component, None, now);
                } else {
                    tracing::info!(parent: &self.span(), component = &*component.field, "component finished its work; not restarting it");
                }
            }
            _ => {}
        }
        true
    }

    /// A critical component failed: the parent stops (in a task of its own, as a loop
    /// that returns `Ok` stops its service) and ends in `error` with the cause.
    fn critical_component_failed(self: &Arc<Self>, field: Cow<'static, str>, error: ServiceError) {
        let cause = ServiceError::Component {
            service: self.name().clone(),
            component: field,
            source: Box::new(error),
        };
        let mut ctl = self.lock();
        if !self.watch_may_act(&ctl) {
            return;
        }
        // Its own handle: this task ends now, and the stop ends the watch anyway.
        ctl.components_watch = None;
        ctl.set_stop_cause(cause.clone());
        drop(ctl);
        tracing::error!(parent: &self.span(), error = %cause, "critical component failed; stopping the service");
        let parent = Managed::counted(self.clone());
        tokio::spawn(async move {
            let _ = parent.stop().await;
        });
    }

    /// An optional component failed (`error` is its cause), or a `permanent` one
    /// stopped by itself: its restart after a backoff, unless its policy says otherwise.
    fn schedule_restart(
        &self,
        component: &mut Watched,
        error: Option<&ServiceError>,
        now: Instant,
    ) {
        let field = &component.field;
        if let (Some(error), Restart::Temporary) = (error, component.policy.restart) {
            tracing::warn!(parent: &self.span(), component = &**field, %error, "optional component failed; not restarting it (temporary): it stays in error until the service stops");
            self.record_incident(field.clone(), error, false, now);
            return;
        }
        let delay = component.history.next_delay(&component.policy, now);
        if let Some(error) = error {
            self.record_incident(field.clone(), error, delay.is_some(), now);
        }
        match delay {
            Some(delay) => {
                match error {
                    Some(error) => {
                        tracing::warn!(parent: &self.span(), component = &**field, %error, ?delay, "optional component failed; restarting it after backoff")
                    }
                    None => {
                        tracing::warn!(parent: &self.span(), component = &**field, ?delay, "component stopped by itself; restarting it after backoff (permanent)")
                    }
                }
                component.due = Some(now + delay);
            }
            None => {
                tracing::error!(
                    parent: &self.span(),
                    component = &**field,
                    error = error.map(ToString::to_string),
                    restarts = component.history.recent(),
                    within = ?component.policy.within,
                    "component restart limit exceeded; leaving it as it is until the service stops"
                );
            }
        }
    }

    /// Records an optional component's failure and whether it is restarted.
    fn record_incident(
        &self,
        field: Cow<'static, str>,
        error: &ServiceError,
        restarted: bool,
        at: Instant,
    ) {
        let mut ctl = self.lock();
        let incidents = ctl.incidents_mut();
        match incidents
            .iter_mut()
            .find(|incident| incident.field == field)
        {
            Some(incident) => {
                incident.restarts += u64::from(restarted);
                incident.last = at;
                incident.last_cause = error.clone();
                incident.given_up = !restarted;
            }
            None => incidents.push(ComponentIncident {
                field,
                restarts: u64::from(restarted),
                first: at,
                last: at,
                last_cause: error.clone(),
                given_up: !restarted,
            }),
        }
    }

    /// The component `field` runs again: a failure it was left in is healed.
    fn healed(ctl: &mut Control, field: &str) {
        if ctl
            .incidents()
            .iter()
            .any(|incident| incident.field == field)
        {
            for incident in ctl.incidents_mut() {
                if incident.field == field {
                    incident.given_up = false;
                }
            }
        }
    }

    /// Restarts the components whose restart is due; `false` once the watch is over.
    async fn restart_due(&self, watched: &mut [Watched]) -> bool {
        let now = Instant::now();
        for component in watched.iter_mut() {
            if component.due.is_none_or(|due| due > now) {
                continue;
            }
            component.due = None;
            let begun = {
                let ctl = self.lock();
                if !self.watch_may_act(&ctl) {
                    return false;
                }
                component.history.restarted(now);
                component.handle.0.start_now()
            };
            let outcome = match begun {
                Ok(outcome) => outcome,
                Err(rest) => rest.await,
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(parent: &self.span(), component = &*component.field, "component restarted");
                }
                // Its failure arrives as a change and is answered there.
                Err(error) => {
                    tracing::debug!(parent: &self.span(), component = &*component.field, %error, "component restart failed");
                }
            }
        }
        true
    }
}

impl Control {
    /// Ends the parent's watch over its components, if one runs.
    pub(super) fn end_components_watch(&mut self) {
        if let Some(task) = self.components_watch.take() {
            task.abort();
        }
    }
}

/// The watch's task: answers the components' changes and carries out their restarts
/// when due, until the parent stops or goes.
async fn watch<S: Service>(
    parent: Weak<Inner<S>>,
    mut changes: mpsc::UnboundedReceiver<ComponentChange>,
    mut watched: Vec<Watched>,
) {
    loop {
        let due = watched.iter().filter_map(|component| component.due).min();
        let change = tokio::select! {
            biased;
            change = changes.recv() => match change {
                Some(change) => Some(change),
                None => return,
            },
            () = sleep_until(due) => None,
        };
        let Some(parent) = parent.upgrade() else {
            return;
        };
        let go_on = match change {
            Some(change) => parent.on_component_change(&mut watched, change),
            None => parent.restart_due(&mut watched).await,
        };
        if !go_on {
            return;
        }
    }
}

/// Sleeps until `due`; forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
