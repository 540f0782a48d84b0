//! Running one hook: its span, its timeout, cancellation by `stop()`, a caught panic, and
//! the error that names the service and the hook.

use super::*;

/// How one hook call ended.
pub(super) enum Outcome {
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
        cancel: Option<&Shutdown>,
    ) -> Outcome {
        let span = self.hook_span(kind, hook);
        let started = Instant::now();
        if cancel.is_some_and(Shutdown::is_requested) {
            tracing::info!(parent: &span, elapsed = ?Duration::ZERO, "hook cancelled by stop()");
            return Outcome::Cancelled;
        }
        let mut future = catch_unwind_future(future);
        // A hook that finishes at its first poll (most do) needs no timer and no watch
        // for cancellation: poll it once before setting them up.
        let first = {
            let _entered = span.enter();
            poll_now(&mut future).await
        };
        let result = match first {
            Some(result) => Ok(result),
            // Boxed: the timer and the cancellation watch would otherwise make every
            // operation's future larger, hooks that finish at once included.
            None => {
                let guarded =
                    tokio::time::timeout_at(started + timeout, future).instrument(span.clone());
                let waited = match cancel {
                    Some(cancel) => {
                        Box::pin(async {
                            tokio::select! {
                                biased;
                                () = cancel.requested() => None,
                                result = guarded => Some(result),
                            }
                        })
                        .await
                    }
                    None => Some(Box::pin(guarded).await),
                };
                match waited {
                    Some(result) => result,
                    None => {
                        tracing::info!(parent: &span, elapsed = ?started.elapsed(), "hook cancelled by stop()");
                        return Outcome::Cancelled;
                    }
                }
            }
        };
        let outcome = match result {
            Ok(Ok(Ok(()))) => Outcome::Done,
            Ok(Ok(Err(error))) => Outcome::Failed(HookFailure::Error(Arc::from(error))),
            Ok(Err(panic)) => Outcome::Failed(HookFailure::Panic(panic)),
            Err(_) => Outcome::Failed(HookFailure::Timeout(timeout)),
        };
        let elapsed = started.elapsed();
        match &outcome {
            Outcome::Failed(failure) => {
                let error = self.hook_error(kind, hook, failure.clone());
                tracing::error!(parent: &span, ?elapsed, %error, "hook failed");
            }
            _ => tracing::debug!(parent: &span, ?elapsed, "hook done"),
        }
        outcome
    }

    /// Logs a failure that no hook call logged itself (one error event per failure).
    pub(super) fn logged(&self, error: ServiceError) -> ServiceError {
        match error.hook() {
            Some((kind, hook)) => {
                tracing::error!(parent: &self.hook_span(kind, hook), %error, "hook failed")
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
