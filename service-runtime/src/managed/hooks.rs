//! Running one hook: its span, its timeout, cancellation by `stop()`, a caught panic, and
//! the error that names the service and the hook.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::cancel::StartCancelled;
use super::control::Inner;
use crate::__private::HookFuture;
use crate::error::{HookFailure, HookKind, ServiceError};
use crate::service::Service;

/// How one hook call ended.
pub(super) enum HookOutcome {
    Done,
    Failed(HookFailure),
    Cancelled,
}

impl<S: Service> Inner<S> {
    /// Runs one hook under its timeout and span, catching a panic; `cancel` abandons it.
    pub(super) async fn run_hook(
        &self,
        kind: HookKind,
        hook: &'static str,
        future: HookFuture<'_>,
        timeout: Duration,
        cancel: Option<StartCancelled>,
    ) -> HookOutcome {
        let span = self.hook_span(kind, hook);
        let started = Instant::now();
        if cancel.is_some_and(|cancel| cancel.is_requested(self)) {
            tracing::info!(parent: &span, elapsed = ?Duration::ZERO, "hook cancelled by stop()");
            return HookOutcome::Cancelled;
        }
        // A panic ends the hook; its service ends in `error` and the report names the
        // panic, so no broken invariant of the user's state goes unnoticed.
        let mut future = AssertUnwindSafe(future).catch_unwind();
        // A hook that finishes at its first poll (most do) needs no timer.
        let first = {
            let _entered = span.enter();
            poll_now(&mut future).await
        };
        let result = match first {
            Some(result) => Ok(result),
            None => {
                let guarded =
                    tokio::time::timeout_at(started + timeout, future).instrument(span.clone());
                // Boxed: most hooks never get here, and their futures stay small.
                let waited = match cancel {
                    Some(cancel) => {
                        let token = cancel.token(self);
                        Box::pin(token.run_until_cancelled_owned(guarded)).await
                    }
                    None => Some(Box::pin(guarded).await),
                };
                let Some(result) = waited else {
                    tracing::info!(parent: &span, elapsed = ?started.elapsed(), "hook cancelled by stop()");
                    return HookOutcome::Cancelled;
                };
                result
            }
        };
        let outcome = match result {
            Ok(Ok(Ok(()))) => HookOutcome::Done,
            Ok(Ok(Err(error))) => HookOutcome::Failed(HookFailure::Error(Arc::from(error))),
            Ok(Err(panic)) => HookOutcome::Failed(HookFailure::Panic(panic_message(&*panic))),
            Err(_) => HookOutcome::Failed(HookFailure::Timeout(timeout)),
        };
        let elapsed = started.elapsed();
        match &outcome {
            HookOutcome::Failed(failure) => {
                let error = self.hook_error(kind, hook, failure.clone());
                tracing::error!(parent: &span, ?elapsed, %error, "hook failed");
            }
            _ => tracing::debug!(parent: &span, ?elapsed, "hook done"),
        }
        // A hook that blocks its thread cannot be timed out (the timer never gets to
        // run): its outcome stands, but the user hears that the budget did not hold.
        if elapsed > timeout && !matches!(outcome, HookOutcome::Failed(HookFailure::Timeout(_))) {
            tracing::warn!(
                parent: &span,
                ?elapsed,
                ?timeout,
                "hook overran its timeout without yielding: its timeout cannot fire while it blocks the thread; run blocking work in tokio::task::spawn_blocking"
            );
        }
        outcome
    }

    /// Logs a failure that no hook call logged itself (one error event per failure).
    pub(super) fn logged(&self, error: ServiceError) -> ServiceError {
        match error.hook() {
            Some((kind, hook)) => {
                tracing::error!(parent: &self.hook_span(kind, hook), %error, "hook failed");
            }
            None => tracing::error!(parent: &self.span(), %error, "failed"),
        }
        error
    }

    pub(super) fn hook_error(
        &self,
        kind: HookKind,
        hook: &'static str,
        failure: HookFailure,
    ) -> ServiceError {
        ServiceError::Hook {
            service: self.name().clone(),
            kind,
            hook,
            failure,
        }
    }
}

/// Polls `future` once: its output if it is ready, `None` (with a wake-up arranged) if not.
pub(super) async fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
