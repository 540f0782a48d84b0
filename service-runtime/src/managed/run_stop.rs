//! The stop of a service that owes nothing but its run loop: ended by the loop's task
//! when the loop returns, or at the stop's deadline by whichever waiter's timer fires (or
//! the process's deadline list, [`crate::deadline`]) if it does not.

use super::*;

/// The deadline of the [`OpKind::RunStop`] in flight: it began with the transition to
/// `stopping`, when `since` was set.
pub(super) fn run_stop_deadline<S: Service>(ctl: &Control, inner: &Inner<S>) -> Instant {
    ctl.since + inner.settings.get().stop_timeout
}

/// An ended [`OpKind::RunStop`]'s outcome, kept in the control until the call that began
/// it takes it (the error boxed: rare, and inline it would enlarge every service).
pub(super) type RunStopOutcome = (u64, Option<Box<ServiceError>>);

/// Takes the outcome of the ended [`OpKind::RunStop`] `id` out of `ctl`, if it is there.
pub(super) fn take_run_stop_outcome(
    ctl: &mut Control,
    id: u64,
) -> Option<Result<(), ServiceError>> {
    let outcome = match ctl.run_stop_outcome.take_if(|(of, _)| *of == id) {
        Some(outcome) => outcome,
        None => {
            let more = ctl.more_run_stop_outcomes.as_mut()?;
            let at = more.iter().position(|(of, _)| *of == id)?;
            let outcome = more.swap_remove(at);
            if more.is_empty() {
                ctl.more_run_stop_outcomes = None;
            }
            outcome
        }
    };
    Some(match outcome.1 {
        None => Ok(()),
        Some(error) => Err(*error),
    })
}

/// A call that joined another's [`OpKind::RunStop`] `id`: waits for it to end, ending it
/// at `deadline` if the loop has not returned by then. The call that began the stop waits
/// through [`CallState::RunStop`] (or a supervisor's [`Rest::RunStop`]) instead, and finds
/// its outcome in the control ([`Inner::poll_run_stop_outcome`]); both poll the same
/// [`RunStopProgress`] through [`Inner::poll_run_stop`].
pub(super) struct RunStopWait<'a, S: Service> {
    pub(super) inner: &'a Inner<S>,
    /// The shared result.
    pub(super) result: ResultWait<&'a OpShared>,
    pub(super) progress: RunStopProgress,
}

/// Where a wait for a [`OpKind::RunStop`] is.
pub(crate) struct RunStopProgress {
    pub(super) id: u64,
    pub(super) deadline: Instant,
    pub(super) stage: RunStopStage,
    /// The stop has not ended for this wait yet: dropped now, it must leave something to
    /// end the stop by its deadline should the loop never return.
    pub(super) armed: bool,
    /// The wait of the call that began the stop.
    pub(super) beginner: bool,
}

impl RunStopProgress {
    /// `stage`: [`RunStopStage::First`], or what the caller already knows: the stop has
    /// an entry in the deadline list ([`RunStopStage::Listed`]), or it runs on a
    /// current-thread runtime ([`RunStopStage::OneTurn`]).
    pub(super) fn new(id: u64, deadline: Instant, beginner: bool, stage: RunStopStage) -> Self {
        RunStopProgress {
            id,
            deadline,
            stage,
            armed: true,
            beginner,
        }
    }
}

pub(super) enum RunStopStage {
    /// Not polled yet.
    First,
    /// Not polled yet, on a current-thread runtime (the call that began the stop found
    /// out, so the first poll need not ask again).
    OneTurn,
    /// Gave the loop one turn of the scheduler (current-thread runtime).
    Yielded,
    /// Waiting with the deadline armed (boxed: a timer would enlarge every stop).
    Timed(Pin<Box<tokio::time::Sleep>>),
    /// The deadline list ends the stop at its deadline ([`crate::deadline`]): a
    /// multi-thread runtime, or none (`futures::executor::block_on`, say).
    Listed,
    /// The deadline passed and the stop was ended (by this wait or another): its result
    /// is on its way (the waker is registered).
    TimedOut,
}

impl<S: Service> Future for RunStopWait<'_, S> {
    type Output = Result<(), ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the timer is boxed).
        let this = self.get_mut();
        this.inner
            .poll_run_stop(&mut this.progress, Some(&mut this.result), cx)
    }
}

impl<S: Service> Drop for RunStopWait<'_, S> {
    fn drop(&mut self) {
        self.inner.run_stop_wait_dropped(&self.progress);
    }
}

impl<S: Service> Inner<S> {
    /// Polls a wait for a run stop: `result` is the shared result, `None` for the call
    /// that began the stop.
    pub(super) fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        mut result: Option<&mut ResultWait<&OpShared>>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        loop {
            let outcome = match &mut result {
                Some(result) => result.poll_result(cx),
                None => self.poll_run_stop_outcome(progress.id, cx),
            };
            if let Poll::Ready(result) = outcome {
                progress.armed = false;
                return Poll::Ready(result);
            }
            // Most loops return as soon as they see the request, so most stops never arm
            // their timer: on a current-thread runtime, give the loop one turn of the
            // scheduler first. Not on a multi-thread runtime: there the self-woken task
            // waits in this worker's queue behind the loop (in the LIFO slot), and other
            // workers steal from that queue only once their own is empty; a loop that
            // blocks this thread while they are busy would hold back this task and the
            // deadline with it (`tests/operations.rs`,
            // `a_stop_with_busy_workers_returns_after_its_timeout_...`). A timer armed now
            // fires on whichever worker next looks at the clock.
            if matches!(progress.stage, RunStopStage::First) && on_current_thread_runtime() {
                progress.stage = RunStopStage::OneTurn;
            }
            match &mut progress.stage {
                RunStopStage::OneTurn => {
                    progress.stage = RunStopStage::Yielded;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                RunStopStage::First | RunStopStage::Yielded => {
                    progress.stage = match tokio::runtime::Handle::try_current() {
                        Ok(_) => RunStopStage::Timed(Box::pin(tokio::time::sleep_until(
                            progress.deadline,
                        ))),
                        // Polled outside the runtime it began on: no timer to arm.
                        Err(_) => {
                            self.list_run_stop(progress.id, progress.deadline);
                            RunStopStage::Listed
                        }
                    };
                }
                RunStopStage::Listed | RunStopStage::TimedOut => return Poll::Pending,
                RunStopStage::Timed(timer) => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Ends the stop, unless another party just did (and completes it after
                    // releasing the control lock): either way the result is coming.
                    self.time_out_run_stop(progress.id);
                    progress.stage = RunStopStage::TimedOut;
                }
            }
        }
    }

    /// A wait for a run stop is dropped: if the stop has not ended for it, something
    /// must still end the stop at its deadline should the loop never return; and the
    /// call that began it no longer waits.
    pub(super) fn run_stop_wait_dropped(&self, progress: &RunStopProgress) {
        if !progress.armed {
            return;
        }
        let id = progress.id;
        let mut waker = None;
        let deadline = {
            let mut ctl = self.lock();
            let deadline = run_stop_deadline(&ctl, self);
            match ctl.op.as_mut().filter(|op| op.id == id) {
                Some(op) => {
                    if progress.beginner {
                        // Dropped once the control lock is released.
                        waker = op.beginner.take();
                    }
                    if op.deadline.is_some() {
                        // The deadline list ends it: nothing to leave behind.
                        drop(ctl);
                        drop(waker);
                        return;
                    }
                }
                None => {
                    // Ended, its outcome not taken: nobody will.
                    if progress.beginner {
                        take_run_stop_outcome(&mut ctl, id);
                    }
                    return;
                }
            }
            deadline
        };
        drop(waker);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = self.this.clone();
                drop(runtime.spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    if let Some(inner) = inner.upgrade() {
                        inner.time_out_run_stop(id);
                    }
                }));
            }
            Err(_) => self.list_run_stop(id, deadline),
        }
    }

    /// Gives the [`OpKind::RunStop`] `id` an entry in the deadline list, if it is still in
    /// flight and has none: for a stop waited for outside the runtime it began on.
    pub(super) fn list_run_stop(&self, id: u64, deadline: Instant) {
        let mut ctl = self.lock();
        if let Some(op) = ctl
            .op
            .as_mut()
            .filter(|op| op.id == id && op.deadline.is_none())
        {
            op.deadline = self.list_deadline(id, deadline);
        }
    }

    /// An entry in the deadline list for the operation `id` at `deadline` (see
    /// [`deadline::Expire`] for what it does then).
    pub(super) fn list_deadline(&self, id: u64, deadline: Instant) -> Option<deadline::Key> {
        let target: Weak<dyn deadline::Expire> = self.this.clone();
        deadline::register(deadline.into_std(), target, id)
    }

    /// For the start or stop in flight (whose work calls this) waiting for its run loop
    /// to return: except on a current-thread runtime (see [`Inner::begin_run_stop`]), an
    /// entry in the deadline list that aborts the loop through `abort` at `deadline`.
    /// `None`: arm a tokio timer instead.
    pub(super) fn list_run_join(
        &self,
        abort: tokio::task::AbortHandle,
        deadline: Instant,
    ) -> Option<Listed> {
        if on_current_thread_runtime() {
            return None;
        }
        let mut ctl = self.lock();
        let id = ctl.next_op;
        let op = ctl.op.as_mut()?;
        let key = self.list_deadline(id, deadline)?;
        op.run_join = Some(Box::new(RunJoin {
            id,
            state: RunJoinState::Waiting { abort, waker: None },
        }));
        ctl.next_op += 1;
        Some(Listed(key))
    }

    /// Waits for the run loop's end (`joining`) until `listed` expires: `None` if it did
    /// first (it aborted the loop; one that blocks its thread ends later, unwaited).
    pub(super) async fn join_listed<F>(&self, listed: Listed, mut joining: F) -> Option<F::Output>
    where
        F: Future<Output = Result<Option<ServiceError>, tokio::task::JoinError>> + Unpin,
    {
        let joined = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut joining).poll(cx);
            // A loop that returned (or panicked) ended on its own. One cancelled may have
            // been aborted by the list, which marks the join expired before it aborts:
            // the mark decides, so that a timeout is reported as one.
            if let Poll::Ready(joined) = &polled
                && !joined
                    .as_ref()
                    .is_err_and(tokio::task::JoinError::is_cancelled)
            {
                return polled.map(Some);
            }
            let mut ctl = self.lock();
            let join = ctl.op.as_mut().and_then(|op| op.run_join.as_deref_mut());
            let replaced = match join.map(|join| &mut join.state) {
                Some(RunJoinState::Expired) => return Poll::Ready(None),
                _ if polled.is_ready() => return polled.map(Some),
                Some(RunJoinState::Waiting { waker, .. }) => match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => None,
                    waker => waker.replace(cx.waker().clone()),
                },
                // Unreachable (the operation whose work this is stays in flight until it
                // ends); the join alone would still end the wait.
                None => {
                    debug_assert!(false, "the operation waiting for its loop is gone");
                    None
                }
            };
            drop(ctl);
            // A waker's drop runs the executor's code: not under the control lock.
            drop(replaced);
            Poll::Pending
        })
        .await;
        drop(listed);
        joined
    }

    /// Begins a [`OpKind::RunStop`] when the run loop is all the service owes: `running`, the
    /// loop not returned yet, no component, no cleanup hook owed. Returns the stop's id and
    /// deadline, and the loop's signal to request once `ctl` is released.
    ///
    /// Except on a current-thread runtime (where the waiters arm tokio timers, on a clock
    /// that may be paused), the stop's deadline goes to the deadline list now: a tokio
    /// timer per stop would wake a parked worker every time ([`crate::deadline`]).
    pub(super) fn begin_run_stop(&self, ctl: &mut Control) -> Option<(RunStopProgress, Shutdown)> {
        let cleanup = ctl.cleanup_owed && !S::__HOOKS.cleanup.is_empty();
        if self.status() != ServiceStatus::Running || cleanup || !ctl.components.is_empty() {
            return None;
        }
        let shutdown = ctl.run.as_ref()?.shutdown.clone();
        self.transition(ctl, ServiceStatus::Stopping, None);
        let id = ctl.next_op;
        ctl.next_op += 1;
        let deadline = run_stop_deadline(ctl, self);
        let (listed, stage) = if on_current_thread_runtime() {
            (None, RunStopStage::OneTurn)
        } else {
            match self.list_deadline(id, deadline) {
                Some(key) => (Some(key), RunStopStage::Listed),
                // No thread for the list: the waiters arm tokio timers.
                None => (None, RunStopStage::First),
            }
        };
        let progress = RunStopProgress::new(id, deadline, true, stage);
        ctl.op = Some(Op {
            kind: OpKind::RunStop,
            id,
            shared: None,
            beginner: Some(None),
            cancel: None,
            deadline: listed,
            run_join: None,
        });
        Some((progress, shutdown))
    }

    /// The deadline of [`OpKind::RunStop`] `id` passed: if it is still in flight, abort the loop
    /// and end the stop in `error`.
    pub(super) fn time_out_run_stop(&self, id: u64) {
        let mut ctl = self.lock();
        if ctl.op.as_ref().is_none_or(|op| op.id != id) {
            return;
        }
        let limit = self.settings.get().stop_timeout;
        // Logged before the op is taken: should a subscriber panic here, the stop is
        // still in flight for the next attempt (the deadline list retries).
        let error = self.logged(self.hook_error(
            HookKind::Run,
            run_hook_name::<S>(),
            HookFailure::Timeout(limit),
        ));
        let op = ctl.op.take().expect("checked above, under the same lock");
        let run = ctl.run.take();
        self.end_run_stop(ctl, op, Some(error));
        // After the lock is released: the abort may drop the run task in this very call,
        // and its guard takes the lock.
        if let Some(run) = run {
            run.handle.abort();
        }
    }

    /// Ends a [`OpKind::RunStop`] (taken out of `ctl`): `stopped`, or `error` with `error`; its
    /// waiters get the outcome.
    pub(super) fn end_run_stop(
        &self,
        mut ctl: MutexGuard<'_, Control>,
        op: Op,
        error: Option<ServiceError>,
    ) {
        // Taken by a timeout; otherwise the loop's task is ending (or gone): detach it.
        ctl.run = None;
        let result = self.end_stop(&mut ctl, error);
        // The call that began the stop finds its outcome in the control.
        if op.beginner.is_some() {
            let outcome = (op.id, result.as_ref().err().cloned().map(Box::new));
            if let Some(older) = ctl.run_stop_outcome.replace(outcome) {
                ctl.more_run_stop_outcomes
                    .get_or_insert_default()
                    .push(older);
            }
        }
        drop(ctl);
        if let Some(key) = op.deadline {
            deadline::cancel(key);
        }
        if let Some(waker) = op.beginner.flatten() {
            waker.wake();
        }
        if let Some(shared) = op.shared {
            shared.complete(result);
        }
    }

    /// For the call that began the [`OpKind::RunStop`] `id`: its outcome once it ended
    /// (taken out of the control), otherwise `cx` is woken when it does.
    pub(super) fn poll_run_stop_outcome(
        &self,
        id: u64,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        let mut ctl = self.lock();
        if let Some(op) = ctl.op.as_mut().filter(|op| op.id == id) {
            let replaced = match &mut op.beginner {
                Some(Some(waker)) if waker.will_wake(cx.waker()) => None,
                beginner => beginner.replace(Some(cx.waker().clone())),
            };
            // A waker's drop runs the executor's code: not under the control lock.
            drop(ctl);
            drop(replaced);
            return Poll::Pending;
        }
        Poll::Ready(take_run_stop_outcome(&mut ctl, id).unwrap_or_else(|| {
            // Unreachable: the outcome stays until this call takes it (or goes away).
            debug_assert!(false, "the outcome of run stop {id} is missing");
            Err(ServiceError::Abandoned {
                service: self.name().clone(),
                operation: "stop",
            })
        }))
    }
}

impl<S: Service> deadline::Expire for Inner<S> {
    /// A [`OpKind::RunStop`] ends in `error` ([`Inner::time_out_run_stop`]); a start or
    /// stop waiting for its run loop in [`Inner::join_listed`] has the loop aborted.
    fn expire(&self, id: u64) {
        let mut ctl = self.lock();
        let Some(op) = ctl.op.as_mut() else {
            return;
        };
        if op.kind == OpKind::RunStop {
            if op.id == id {
                drop(ctl);
                self.time_out_run_stop(id);
            }
        } else if let Some(join) = op.run_join.as_deref_mut().filter(|join| join.id == id) {
            let RunJoinState::Waiting { abort, waker } =
                std::mem::replace(&mut join.state, RunJoinState::Expired)
            else {
                return;
            };
            drop(ctl);
            abort.abort();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Removes a deadline list entry when dropped (the wait it bounds ended, or was dropped).
pub(super) struct Listed(deadline::Key);

impl Drop for Listed {
    fn drop(&mut self) {
        deadline::cancel(self.0);
    }
}

/// Waits for `loop_end` (the end of a run loop that was asked to return) only as long as
/// it takes no timer: its output if it is ready now or, on a current-thread runtime,
/// after one turn of the scheduler. Not on a multi-thread runtime: a loop that blocks
/// the worker's thread would hold back this task (and the deadline) with it (`yield_now`
/// defers the wake-up until the worker parks; see [`RunStopWait`] for a self-wake).
pub(super) async fn returned_soon<F: Future + Unpin>(loop_end: &mut F) -> Option<F::Output> {
    if let Some(output) = poll_now(loop_end).await {
        return Some(output);
    }
    if !on_current_thread_runtime() {
        return None;
    }
    tokio::task::yield_now().await;
    poll_now(loop_end).await
}

pub(super) fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
    })
}
