//! The start or stop in flight (`Op`) and its work: built around the operation's
//! sequence, with a guard that ends an operation dropped before its end in `error`.

use super::*;

pub(super) struct Op {
    pub(super) kind: OpKind,
    /// Tells the op apart from later ones (its abandonment guard checks it).
    pub(super) id: u64,
    /// Where the result reaches the calls that wait for it. A start or stop has one from
    /// its beginning (its work lives there). A [`OpKind::RunStop`] gets one only when
    /// another call joins it: the call that began it waits through `beginner` and
    /// [`Control::run_stop_outcome`], so a stop of a run-loop service allocates nothing.
    pub(super) shared: Option<Arc<OpShared>>,
    /// [`OpKind::RunStop`] only: the call that began the stop still waits for it (with its
    /// waker once it polled); `None` once that call went away.
    pub(super) beginner: Option<Option<Waker>>,
    /// Requested by `stop()` to cancel a start in flight; starts only.
    pub(super) cancel: Option<Shutdown>,
    /// [`OpKind::RunStop`] only: its entry in the process's deadline list
    /// ([`crate::deadline`]), which ends the stop at its deadline whoever waits; `None`
    /// where its waiters arm tokio timers instead (a current-thread runtime).
    pub(super) deadline: Option<deadline::Key>,
    /// A start or stop whose work waits for a run loop to return with an entry in the
    /// deadline list ([`Inner::join_listed`]). Boxed: only that wait needs it.
    pub(super) run_join: Option<Box<RunJoin>>,
}

/// See [`Op::run_join`].
pub(super) struct RunJoin {
    /// The list entry's id, drawn from the op ids: an entry that fires late (its `cancel`
    /// lost the race with the list's thread) finds a later join of the same operation
    /// (a failed start's second cleanup) under another id and leaves it alone.
    pub(super) id: u64,
    pub(super) state: RunJoinState,
}

pub(super) enum RunJoinState {
    /// The loop to abort at the deadline, and the waker of the work waiting for it.
    Waiting {
        abort: tokio::task::AbortHandle,
        waker: Option<Waker>,
    },
    /// The deadline passed: the loop was aborted, the work stops waiting for it.
    Expired,
}

impl Op {
    /// How another call waits for this operation (`deadline`: see [`run_stop_deadline`]).
    pub(super) fn waiter(&mut self, deadline: Instant) -> OpWait {
        match self.kind {
            OpKind::Start | OpKind::Stop => OpWait::Op(
                self.shared
                    .clone()
                    .expect("a start or stop has its shared state from its beginning"),
            ),
            OpKind::RunStop => OpWait::RunStop {
                progress: RunStopProgress::new(
                    self.id,
                    deadline,
                    false,
                    if self.deadline.is_some() {
                        RunStopStage::Listed
                    } else {
                        RunStopStage::First
                    },
                ),
                shared: self
                    .shared
                    .get_or_insert_with(OpShared::ended_elsewhere)
                    .clone(),
            },
        }
    }
}

/// Inside an operation's work: if the work is dropped before its end (its runtime shut
/// down, or it panicked outside a hook), the operation ends in `error` rather than
/// leaving `starting`/`stopping` behind, and its waiters get an error.
pub(super) struct OpGuard<S: Service> {
    pub(super) inner: Arc<Inner<S>>,
    pub(super) id: u64,
    pub(super) finished: bool,
}

impl<S: Service> OpGuard<S> {
    /// The work's final transition has happened: clear the op. A caller that sees the op
    /// in between joins it and gets its result, so the order is safe.
    pub(super) fn finish(mut self) {
        self.finished = true;
        let id = self.id;
        self.inner.lock().op.take_if(|op| op.id == id);
    }
}

impl<S: Service> Drop for OpGuard<S> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut ctl = self.inner.lock();
        let Some(op) = ctl.op.take_if(|op| op.id == self.id) else {
            return;
        };
        let error = ServiceError::Abandoned {
            service: self.inner.name().clone(),
            operation: match op.kind {
                OpKind::Start => "start",
                OpKind::Stop | OpKind::RunStop => "stop",
            },
        };
        self.inner
            .transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
        drop(ctl);
        if let Some(shared) = op.shared {
            shared.complete(Err(error));
        }
    }
}

impl<S: Service> Inner<S> {
    /// Builds an operation's work around `sequence` (which ends with the final
    /// transition) and records the operation in `ctl`.
    pub(super) fn begin<F, Fut>(
        self: Arc<Self>,
        ctl: &mut Control,
        kind: OpKind,
        cancel: Option<Shutdown>,
        sequence: F,
    ) -> Arc<OpShared>
    where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        let id = ctl.next_op;
        ctl.next_op += 1;
        let span = self.span();
        // Created outside the work so that it also runs if the work is dropped unpolled.
        let guard = OpGuard {
            inner: self,
            id,
            finished: false,
        };
        // The span wraps the sequence only: its exit (a subscriber's code) runs before
        // `finish`, so a panic there still finds the guard armed and ends the operation
        // with an error for its waiters, rather than leaving them waiting for a result
        // that the unwound work can no longer publish.
        let shared = OpShared::new(Box::pin(async move {
            let guard = guard;
            let result = sequence(guard.inner.clone()).instrument(span).await;
            guard.finish();
            result
        }));
        ctl.op = Some(Op {
            kind,
            id,
            shared: Some(shared.clone()),
            beginner: None,
            cancel,
            deadline: None,
            run_join: None,
        });
        shared
    }
}
