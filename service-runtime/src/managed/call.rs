//! What a `start()` or `stop()` call does: decides under the control lock
//! ([`decide`](super::decide)), carries the plan out (at once, or by beginning an
//! operation), and awaits what is left.

use std::sync::Arc;

use tokio::time::Instant;

use super::control::Inner;
use super::decide::{Plan, Request, decide};
use super::operation::{OpResult, Waiting};
use crate::service::Service;
use crate::status::ServiceStatus;

/// What is left of a call once decided.
pub(super) enum Step {
    /// The call's outcome: nothing to await.
    Finished(OpResult),
    /// Await an operation (this call's, or the one in flight) and take its outcome.
    Await(Waiting),
    /// Let the operation in flight end, then decide again.
    AfterInFlight(Waiting),
    /// Decide again: the operation in flight was ending as this call looked.
    Again,
}

impl<S: Service> Inner<S> {
    /// A whole `start()` or `stop()` call.
    pub(super) async fn call(self: &Arc<Self>, request: Request) -> OpResult {
        let step = self.decide(request);
        self.finish_call(request, step).await
    }

    /// Awaits what `step` left of a call, deciding again after an operation it only had
    /// to let end.
    pub(super) async fn finish_call(
        self: &Arc<Self>,
        request: Request,
        mut step: Step,
    ) -> OpResult {
        loop {
            match step {
                Step::Finished(result) => return result,
                Step::Await(op) => return op.outcome().await,
                Step::AfterInFlight(op) => {
                    // Its outcome is the other call's; this call decides anew.
                    let _ = op.outcome().await;
                    step = self.decide(request);
                }
                Step::Again => step = self.decide(request),
            }
        }
    }

    /// Decides a call under the control lock and carries the plan out.
    pub(super) fn decide(self: &Arc<Self>, request: Request) -> Step {
        let mut ctl = self.lock();
        // A new call after a cancellation by a shutdown: the service moves again.
        ctl.abandoned = false;
        let nothing_owed = match request {
            Request::Start => self.start_owes_nothing(&ctl),
            Request::Stop => self.stop_owes_nothing(&ctl),
        };
        let in_flight = ctl.op.as_ref().map(|op| op.kind);
        match decide(self.status(), in_flight, request, nothing_owed) {
            Plan::Done => Step::Finished(Ok(())),
            Plan::Inline => Step::Finished(match request {
                Request::Start => self.start_inline(&mut ctl),
                Request::Stop => {
                    self.stop_inline(&mut ctl);
                    Ok(())
                }
            }),
            Plan::ClearError => {
                self.transition(&mut ctl, ServiceStatus::Stopped, None, Instant::now());
                Step::Finished(Ok(()))
            }
            Plan::Begin => Step::Await(match request {
                Request::Start => self.begin_start(&mut ctl),
                Request::Stop => self.begin_stop(&mut ctl),
            }),
            Plan::Join => {
                let op = ctl.op.as_ref().expect("decided on the operation in flight");
                op.join(self).map_or(Step::Again, Step::Await)
            }
            Plan::AfterInFlight { cancel } => {
                let op = ctl.op.as_mut().expect("decided on the operation in flight");
                if cancel && let Some(start) = &mut op.cancel {
                    start.request();
                }
                op.join(self).map_or(Step::Again, Step::AfterInFlight)
            }
        }
    }
}
