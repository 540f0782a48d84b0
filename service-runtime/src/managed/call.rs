//! The futures of [`Managed::start`] and [`Managed::stop`]: each decides under the
//! control lock what the call does (return at once, run the transitions inline, begin an
//! operation, join the one in flight, or let it end and decide again), then awaits it.

use super::*;

/// The op in flight and how another call waits for it, if there is one.
pub(super) fn join_op<S: Service>(ctl: &mut Control, inner: &Inner<S>) -> Option<(OpKind, OpWait)> {
    let deadline = run_stop_deadline(ctl, inner);
    let op = ctl.op.as_mut()?;
    Some((op.kind, op.waiter(deadline)))
}

/// How a call waits for an operation another call began (the call that began a
/// [`OpKind::RunStop`] waits through [`Wait::RunStop`] instead).
pub(super) enum OpWait {
    /// Another call's start or stop.
    Op(Arc<OpShared>),
    /// Another call's run stop, ended by its deadline at the latest; its result reaches
    /// this call through `shared` (made when the first such call joined).
    RunStop {
        progress: RunStopProgress,
        shared: Arc<OpShared>,
    },
}

impl OpWait {
    pub(super) async fn wait<S: Service>(self, inner: &Arc<Inner<S>>) -> Result<(), ServiceError> {
        match self {
            OpWait::Op(shared) => shared.join().await,
            OpWait::RunStop { progress, shared } => {
                RunStopWait {
                    inner,
                    result: shared.wait(),
                    progress,
                }
                .await
            }
        }
    }
}

/// The future of [`Managed::start`] (`KIND` = [`START`]) and [`Managed::stop`]
/// ([`STOP`]): decides at its first poll, as an `async fn` would, then awaits what the
/// decision left, deciding again after another call's operation it only had to let
/// finish.
pub(super) struct Call<'a, S: Service, const KIND: bool> {
    pub(super) managed: &'a Managed<S>,
    pub(super) state: CallState<'a>,
}

/// [`Call`]'s kind: a start.
pub(super) const START: bool = false;

/// [`Call`]'s kind: a stop.
pub(super) const STOP: bool = true;

pub(super) enum CallState<'a> {
    /// Not polled yet, or deciding again after another call's operation ended.
    Decide,
    /// Runs the operation this call began.
    Drive(crate::op::Drive),
    /// Another call's operation (boxed: rare, concurrent calls); `retry`: decide again
    /// once it ended, rather than taking its outcome.
    Other {
        // `Sync` too, so that the whole future stays `Sync` (as the `async fn` was).
        wait: Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + Sync + 'a>>,
        retry: bool,
    },
    /// The [`OpKind::RunStop`] this call began (see [`RunStopWait`]).
    RunStop(RunStopProgress),
    Done,
}

impl<'a> CallState<'a> {
    pub(super) fn from_wait<S: Service>(wait: Wait, inner: &'a Arc<Inner<S>>) -> Self {
        match wait {
            Wait::Drive(op) => CallState::Drive(op.drive()),
            Wait::Join(op) => CallState::Other {
                wait: Box::pin(op.wait(inner)),
                retry: false,
            },
            Wait::ThenRetry(op) => CallState::Other {
                wait: Box::pin(op.wait(inner)),
                retry: true,
            },
            Wait::RunStop(progress) => CallState::RunStop(progress),
        }
    }
}

impl<S: Service, const KIND: bool> Call<'_, S, KIND> {
    pub(super) fn decide(&self) -> Decided {
        match KIND {
            START => self.managed.start_now(),
            STOP => self.managed.stop_now(),
        }
    }

    /// Decides (at the first poll, and again after another call's operation it only had
    /// to let finish) and polls what the decision left.
    pub(super) fn poll_wait(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        loop {
            let outcome = match &mut self.state {
                CallState::Decide => match self.decide() {
                    Ok(outcome) => outcome,
                    Err(wait) => {
                        self.state = CallState::from_wait(wait, &self.managed.inner);
                        continue;
                    }
                },
                CallState::Drive(drive) => std::task::ready!(Pin::new(drive).poll(cx)),
                CallState::Other { wait, retry } => {
                    let outcome = std::task::ready!(wait.as_mut().poll(cx));
                    if *retry {
                        self.state = CallState::Decide;
                        continue;
                    }
                    outcome
                }
                CallState::RunStop(progress) => {
                    std::task::ready!(self.managed.inner.poll_run_stop(progress, None, cx))
                }
                CallState::Done => panic!("a start or stop future polled after it completed"),
            };
            self.state = CallState::Done;
            return Poll::Ready(outcome);
        }
    }
}

impl<S: Service, const KIND: bool> Future for Call<'_, S, KIND> {
    type Output = Result<(), ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the other call's wait is boxed, the timer too).
        self.get_mut().poll_wait(cx)
    }
}

impl<S: Service, const KIND: bool> Drop for Call<'_, S, KIND> {
    fn drop(&mut self) {
        // A run stop's wait left before its end (a `Drive` hands its work over itself).
        if let CallState::RunStop(progress) = &self.state {
            self.managed.inner.run_stop_wait_dropped(progress);
        }
    }
}

/// What `start_now`/`stop_now` decide: the outcome, or the operation still to await.
pub(super) type Decided = Result<Result<(), ServiceError>, Wait>;

pub(super) enum Wait {
    /// Run this operation, begun by this call, and return its outcome.
    Drive(Arc<OpShared>),
    /// Return the outcome of this operation, begun by another call.
    Join(OpWait),
    /// Let this operation finish, then decide again.
    ThenRetry(OpWait),
    /// This call began a [`OpKind::RunStop`] (and requested the loop's shutdown): wait
    /// for the run task to end the stop, or end it at its deadline.
    RunStop(RunStopProgress),
}

impl<S: Service> Managed<S> {
    /// Decides a start under the lock: its outcome when it needs no waiting (running
    /// already, or started inline), otherwise the operation to await.
    pub(super) fn start_now(&self) -> Decided {
        loop {
            let mut ctl = self.inner.lock();
            if let Some((kind, wait)) = join_op(&mut ctl, &self.inner) {
                return Err(match kind {
                    OpKind::Start => Wait::Join(wait),
                    OpKind::Stop | OpKind::RunStop => Wait::ThenRetry(wait),
                });
            }
            match self.inner.status() {
                ServiceStatus::Running => return Ok(Ok(())),
                ServiceStatus::Stopped | ServiceStatus::Error => {
                    if self.inner.start_inline(&mut ctl) {
                        return Ok(Ok(()));
                    }
                    return Err(Wait::Drive(self.inner.clone().begin_start(&mut ctl)));
                }
                // Without an op these states cannot last; look again.
                ServiceStatus::Starting | ServiceStatus::Stopping => {}
            }
        }
    }

    /// Decides a stop under the lock: its outcome when it needs no waiting (stopped
    /// already, or stopped inline), otherwise the operation to await (a run stop begun
    /// here has its loop's shutdown requested already).
    pub(super) fn stop_now(&self) -> Decided {
        loop {
            let mut ctl = self.inner.lock();
            if let Some((kind, wait)) = join_op(&mut ctl, &self.inner) {
                return Err(match kind {
                    OpKind::Stop | OpKind::RunStop => Wait::Join(wait),
                    OpKind::Start => {
                        if let Some(cancel) = ctl.op.as_ref().and_then(|op| op.cancel.as_ref()) {
                            cancel.request();
                        }
                        Wait::ThenRetry(wait)
                    }
                });
            }
            match self.inner.status() {
                ServiceStatus::Stopped => return Ok(Ok(())),
                ServiceStatus::Error if !ctl.cleanup_owed && ctl.components.is_empty() => {
                    self.inner
                        .transition(&mut ctl, ServiceStatus::Stopped, None);
                    return Ok(Ok(()));
                }
                ServiceStatus::Running | ServiceStatus::Error => {
                    if self.inner.stop_inline(&mut ctl) {
                        return Ok(Ok(()));
                    }
                    if let Some((progress, shutdown)) = self.inner.begin_run_stop(&mut ctl) {
                        // Requested once the lock is released: the woken loop may end
                        // the stop at once, on another thread, and take the lock.
                        drop(ctl);
                        shutdown.request();
                        return Err(Wait::RunStop(progress));
                    }
                    return Err(Wait::Drive(self.inner.clone().begin_stop(&mut ctl)));
                }
                // Without an op these states cannot last; look again.
                ServiceStatus::Starting | ServiceStatus::Stopping => {}
            }
        }
    }

    /// The rest of a start or stop that `decide` ([`start_now`](Self::start_now) or
    /// [`stop_now`](Self::stop_now)) could not finish: awaits the operation, and decides
    /// again after one it only had to let finish.
    pub(super) fn awaiting<const KIND: bool>(&self, wait: Wait) -> Call<'_, S, KIND> {
        Call {
            managed: self,
            state: CallState::from_wait(wait, &self.inner),
        }
    }
}
