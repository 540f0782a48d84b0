//! The end of a start whose `#[run]` hook takes a [`Ready`]: the loop is spawned while the
//! service is still `starting`, and the start waits, under the start timeout, for the
//! loop's signal, its end, or a `stop()`.
//!
//! # Invariants
//!
//! - **Who owns the loop while the start waits.** The loop is in `Control::run` (so that
//!   an abandon or the last handle's drop ends it as any loop), but the start owns it:
//!   the loop's end is handed to the start through the loop's `early_exit` channel, never
//!   made a transition (only the start moves the service out of `starting`).
//! - **Adoption is one critical section.** The start adopts the loop under the control
//!   lock: it closes its receiver and moves to `running` together. The loop's task checks
//!   the receiver under the same lock as it ends: open, it hands its end to the start;
//!   closed, it ends as a `running` loop ([`run_loop`](super::run_loop)). So each end is
//!   reported exactly once.
//! - **A start that gives up stops the loop.** Cancelled by `stop()` or past its timeout,
//!   the start takes the loop out of `Control::run`, asks it to return and waits for it
//!   up to the stop timeout (then aborts its task) before it undoes the rest: the cleanup
//!   hooks never run beside the loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Managed;
use super::cancel::StartCancelled;
use super::control::{Inner, run_hook_name};
use super::operation::OpResult;
use super::run_loop::{EarlyExit, LoopStart};
use crate::__private::ComponentEntry;
use crate::Ready;
use crate::error::{BoxError, HookFailure, HookKind};
use crate::service::Service;

/// How the wait for the ready signal ended.
enum Waited {
    Ready,
    /// The loop ended first; `None`: its task was dropped before it returned.
    Exited(Option<EarlyExit>),
    Cancelled,
    /// `dropped`: the hook dropped its `Ready` without notifying.
    TimedOut {
        dropped: bool,
    },
}

impl<S: Service> Inner<S> {
    /// Spawns the loop, waits for its ready signal, then `running`; see the module's doc.
    pub(super) async fn start_awaiting_ready(
        self: &Arc<Self>,
        mut started: Vec<ComponentEntry>,
        state: Option<S::__RunState>,
        cancel: StartCancelled,
    ) -> OpResult {
        let cancel = &cancel.token(self);
        let (ready, notified) = Ready::channel();
        let (early_exit, mut exited) = oneshot::channel();
        let spawned = {
            let mut ctl = self.lock();
            if cancel.is_cancelled() {
                None
            } else {
                let start = LoopStart {
                    ready: Some((ready, early_exit)),
                    state,
                };
                Some(self.spawn_run_loop(&mut ctl, start).map(|run| {
                    let run = run.expect("a ready signal implies a run hook");
                    let id = run.id;
                    ctl.run = Some(run);
                    id
                }))
            }
        };
        let id = match spawned {
            None => return Err(self.abandon_start(started, true).await),
            Some(Err(error)) => return Err(self.fail_start(error, started).await),
            Some(Ok(id)) => id,
        };
        let timeout = self.config().start_timeout;
        let mut waited = wait(notified, &mut exited, cancel, Instant::now() + timeout).await;
        if let Waited::Ready = waited {
            let adopted = {
                let mut ctl = self.lock();
                if cancel.is_cancelled() {
                    waited = Waited::Cancelled;
                    false
                } else if ctl.run.as_ref().is_some_and(|run| run.id == id) {
                    // Closed: from now on the loop's end is a running loop's.
                    exited.close();
                    self.enter_running(&mut ctl, std::mem::take(&mut started), Instant::now());
                    self.watch_components(&mut ctl);
                    true
                } else {
                    false
                }
            };
            if adopted {
                // This start may end in a task after every handle went: nothing could
                // stop the loop, so it ends now.
                if self.handles.load(Ordering::Acquire) == 0 {
                    self.last_handle_gone();
                }
                return Ok(());
            }
            if let Waited::Ready = waited {
                // It ended right after its signal: its end is on its way to `exited`.
                waited = Waited::Exited((&mut exited).await.ok());
            }
        }
        let hook = run_hook_name::<S>();
        match waited {
            Waited::Ready => unreachable!("handled above"),
            Waited::Exited(Some(None)) => self.done_before_ready(started, cancel).await,
            Waited::Exited(Some(Some(failure))) => {
                let error = self.logged(self.hook_error(HookKind::Run, hook, failure));
                Err(self.fail_start(error, started).await)
            }
            Waited::Exited(None) => {
                // Its task is gone; its guard may not have told the control yet.
                drop(self.lock().run.take_if(|run| run.id == id));
                let error = self.hook_error(HookKind::Run, hook, message(
                    "its task was dropped before it signalled ready (its tokio runtime shut down)",
                ));
                Err(self.fail_start(error, started).await)
            }
            Waited::Cancelled => {
                self.stop_unready_loop(id, exited).await;
                Err(self.abandon_start(started, true).await)
            }
            Waited::TimedOut { dropped } => {
                let what = if dropped {
                    format!(
                        "dropped its `Ready` without calling `notify()`, and had not returned after the start timeout of {timeout:?}"
                    )
                } else {
                    format!(
                        "did not signal ready (`ready.notify()`) within the start timeout of {timeout:?}"
                    )
                };
                let error = self.logged(self.hook_error(HookKind::Run, hook, message(&what)));
                self.stop_unready_loop(id, exited).await;
                Err(self.fail_start(error, started).await)
            }
        }
    }

    /// The loop returned `Ok` before it signalled ready: it did its work before anyone
    /// needed it. The start succeeds, and the service stops as after any loop that
    /// returns `Ok`.
    async fn done_before_ready(
        self: &Arc<Self>,
        started: Vec<ComponentEntry>,
        cancel: &CancellationToken,
    ) -> OpResult {
        let mut ctl = self.lock();
        if cancel.is_cancelled() {
            drop(ctl);
            return Err(self.abandon_start(started, true).await);
        }
        self.enter_running(&mut ctl, started, Instant::now());
        drop(ctl);
        tracing::info!(parent: &self.span(), hook = run_hook_name::<S>(), "run hook returned before it signalled ready; stopping the service");
        let inner = self.clone();
        tokio::spawn(async move {
            let _ = Managed::counted(inner).stop().await;
        });
        Ok(())
    }

    /// Takes the loop `id` from the control, asks it to return and waits for its end up
    /// to the stop timeout, then aborts its task. A loop gone already (it ended, or an
    /// abandon took it) is not waited for.
    async fn stop_unready_loop(&self, id: u64, exited: oneshot::Receiver<EarlyExit>) {
        let Some(run) = self.lock().run.take_if(|run| run.id == id) else {
            return;
        };
        run.shutdown.request();
        let limit = self.config().stop_timeout;
        let hook = run_hook_name::<S>();
        match tokio::time::timeout(limit, exited).await {
            Ok(Ok(Some(failure))) => {
                // Not the start's outcome (it failed or was cancelled already): logged.
                self.logged(self.hook_error(HookKind::Run, hook, failure));
            }
            Ok(_) => {}
            Err(_) => {
                run.task.abort();
                tracing::warn!(parent: &self.hook_span(HookKind::Run, hook), ?limit, "run hook did not return within the stop timeout after its start ended; its task was aborted");
            }
        }
    }

    /// The loop `id` ended with `failure` while a start may still wait for its signal:
    /// unless the start adopted the loop (closed its receiver), the loop leaves the
    /// control and its end goes to the start (`Ok`); otherwise it is a `running` loop's
    /// end (`Err`, with the failure back).
    pub(super) fn hand_to_start(
        &self,
        id: u64,
        early_exit: oneshot::Sender<EarlyExit>,
        failure: EarlyExit,
    ) -> Result<(), EarlyExit> {
        let mut ctl = self.lock();
        if early_exit.is_closed() {
            return Err(failure);
        }
        if ctl.run.as_ref().is_some_and(|run| run.id == id) {
            ctl.run = None;
        }
        let _ = early_exit.send(failure);
        Ok(())
    }
}

/// Waits for the ready signal, the loop's end, a cancellation or the deadline.
async fn wait(
    mut notified: oneshot::Receiver<()>,
    exited: &mut oneshot::Receiver<EarlyExit>,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Waited {
    let mut dropped = false;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Waited::Cancelled,
            exit = &mut *exited => return Waited::Exited(exit.ok()),
            signal = &mut notified, if !dropped => match signal {
                Ok(()) => return Waited::Ready,
                // Dropped unnotified: the loop's end or the deadline decides.
                Err(_) => dropped = true,
            },
            () = tokio::time::sleep_until(deadline) => return Waited::TimedOut { dropped },
        }
    }
}

fn message(text: &str) -> HookFailure {
    HookFailure::Error(Arc::from(BoxError::from(text)))
}
