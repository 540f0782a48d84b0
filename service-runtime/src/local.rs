//! The `#[lifecycle(?Send)]` opt-out: hook futures that are not `Send`, made movable
//! between tasks by [`send_wrapper`], which checks at run time that they are only ever
//! touched on the thread that created them.
//!
//! On a current-thread runtime every task runs on one thread, so such hooks just work.
//! On the multi-thread runtime a task may move to another worker between two polls (a
//! `LocalSet` does not prevent that: `Managed` runs its hooks on tasks of its own); the
//! hook then fails with an error that says so, instead of touching a non-`Send` value
//! from the wrong thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use send_wrapper::SendWrapper;

use crate::__private::{CheckResult, HookResult};
use crate::health::HealthDetail;

const MISPLACED: &str = "a `#[lifecycle(?Send)]` hook was polled on another thread than the one that created it; \
                         run services whose hooks are not `Send` on a current-thread runtime \
                         (`#[tokio::main(flavor = \"current_thread\")]`)";

/// What a misplaced poll resolves to.
pub(crate) trait Misplaced {
    fn misplaced() -> Self;
}

impl Misplaced for HookResult {
    fn misplaced() -> Self {
        Err(MISPLACED.into())
    }
}

impl Misplaced for CheckResult {
    fn misplaced() -> Self {
        CheckResult::One(HealthDetail::unhealthy(MISPLACED))
    }
}

/// A non-`Send` future that may be moved across threads but is polled and dropped only
/// on the thread that created it.
///
/// Written out rather than `SendWrapper`'s own `Future` impl for two behaviours: a poll
/// on another thread resolves to an error naming the fix (where `SendWrapper` panics),
/// and a drop there leaks the future (where `SendWrapper` panics, possibly while
/// unwinding, which aborts the process).
pub(crate) struct LocalFuture<F> {
    /// `None` once dropped or finished.
    future: Option<SendWrapper<Pin<Box<F>>>>,
}

impl<F> LocalFuture<F> {
    pub(crate) fn new(future: F) -> Self {
        LocalFuture {
            future: Some(SendWrapper::new(Box::pin(future))),
        }
    }
}

impl<F> Future for LocalFuture<F>
where
    F: Future,
    F::Output: Misplaced,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match &mut self.future {
            Some(future) if future.valid() => {
                let polled = (**future).as_mut().poll(cx);
                if polled.is_ready() {
                    self.future = None;
                }
                polled
            }
            _ => Poll::Ready(F::Output::misplaced()),
        }
    }
}

impl<F> Drop for LocalFuture<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take()
            && !future.valid()
        {
            // Running its destructor off its thread could touch a non-`Send` value (an
            // `Rc` count) concurrently with its owner.
            std::mem::forget(future);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    #[test]
    fn polls_on_the_owner_thread_and_refuses_elsewhere() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let here = LocalFuture::new(async {
            let shared = Rc::new(1);
            tokio::task::yield_now().await;
            drop(shared);
            HookResult::Ok(())
        });
        assert!(runtime.block_on(here).is_ok());

        let there = LocalFuture::new(async {
            let _shared = Rc::new(1);
            HookResult::Ok(())
        });
        let error = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(there).unwrap_err().to_string()
        })
        .join()
        .unwrap();
        assert!(error.contains("current-thread runtime"), "{error}");
    }
}
