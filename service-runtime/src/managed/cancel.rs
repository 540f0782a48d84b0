//! A start's cancellation by `stop()`.
//!
//! `stop()` requests it, under the control lock, on the start in flight
//! ([`StartCancel::request`]); the start's steps read it under the same lock, by the
//! start's id ([`StartCancelled::is_requested_in`]). A step that waits (a hook that
//! does not finish at its first poll, the wait for a `read()` guard, a component's
//! start, the run loop's ready signal) waits on a token as well, made on the first such
//! wait: most starts end at their first poll and never need one.
//!
//! Invariants, all under the control lock: once requested, a start stays cancelled, and
//! its token, made before or after the request, is cancelled. A step of a start that is
//! no longer in flight (a shutdown abandoned it) reads "not requested" and gets a token
//! that nothing cancels: the abandoned work is dropped at its next poll, and its own
//! transitions are refused ([`Control::abandoned`](super::control::Control)), so no
//! cleanup runs on its behalf.

use tokio_util::sync::CancellationToken;

use super::control::{Control, Inner};
use crate::service::Service;

/// A start's cancellation, as its operation keeps it.
#[derive(Default)]
pub(super) struct StartCancel {
    requested: bool,
    token: Option<CancellationToken>,
}

impl StartCancel {
    /// Cancels the start: its next step undoes what it did and ends in `stopped`.
    pub(super) fn request(&mut self) {
        self.requested = true;
        if let Some(token) = &self.token {
            token.cancel();
        }
    }

    fn token(&mut self) -> CancellationToken {
        let requested = self.requested;
        self.token
            .get_or_insert_with(|| {
                let token = CancellationToken::new();
                if requested {
                    token.cancel();
                }
                token
            })
            .clone()
    }
}

/// The start `id`'s cancellation, as its steps read it.
#[derive(Clone, Copy)]
pub(super) struct StartCancelled {
    pub(super) id: u64,
}

impl StartCancelled {
    /// Whether `stop()` cancelled the start; `ctl` is the control, locked.
    pub(super) fn is_requested_in(self, ctl: &Control) -> bool {
        self.find(ctl).is_some_and(|cancel| cancel.requested)
    }

    /// Whether `stop()` cancelled the start, taking the control lock.
    pub(super) fn is_requested<S: Service>(self, inner: &Inner<S>) -> bool {
        self.is_requested_in(&inner.lock())
    }

    /// The token a waiting step of the start waits on (see the module's doc).
    pub(super) fn token<S: Service>(self, inner: &Inner<S>) -> CancellationToken {
        let mut ctl = inner.lock();
        let op = ctl.op.as_mut().filter(|op| op.id == self.id);
        op.and_then(|op| op.cancel.as_mut())
            .map_or_else(CancellationToken::new, StartCancel::token)
    }

    fn find(self, ctl: &Control) -> Option<&StartCancel> {
        ctl.op
            .as_ref()
            .filter(|op| op.id == self.id)?
            .cancel
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::StartCancel;

    #[test]
    fn a_token_made_after_the_request_is_cancelled() {
        let mut cancel = StartCancel::default();
        cancel.request();
        assert!(cancel.requested);
        assert!(cancel.token().is_cancelled());
    }

    #[test]
    fn a_token_made_before_the_request_is_cancelled_by_it() {
        let mut cancel = StartCancel::default();
        let token = cancel.token();
        assert!(!token.is_cancelled());
        cancel.request();
        assert!(token.is_cancelled());
        assert!(cancel.token().is_cancelled(), "one token per start");
    }

    #[test]
    fn no_token_is_made_until_a_step_waits() {
        let mut cancel = StartCancel::default();
        cancel.request();
        assert!(cancel.token.is_none());
    }
}
