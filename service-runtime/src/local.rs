//! The `#[lifecycle(?Send)]` opt-out: hook futures that are not `Send`, made movable
//! between tasks by checking at run time that they are only ever touched on the thread
//! that created them (the technique of the `send_wrapper` crate).
//!
//! On a current-thread runtime every task runs on one thread, so such hooks just work.
//! On the multi-thread runtime a task may move to another worker between two polls (a
//! `LocalSet` does not prevent that: `Managed` runs its hooks on tasks of its own); the
//! hook then fails with an error that says so, instead of touching a non-`Send` value
//! from the wrong thread.
#![allow(unsafe_code)] // the one unsafe impl of the crate; see `SAFETY` below

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::{self, ThreadId};

use crate::__private::HookResult;
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

impl Misplaced for HealthDetail {
    fn misplaced() -> Self {
        HealthDetail::unhealthy(MISPLACED)
    }
}

/// A non-`Send` future that may be moved across threads but is polled and dropped only
/// on the thread that created it.
pub(crate) struct LocalFuture<F> {
    future: ManuallyDrop<Pin<Box<F>>>,
    owner: ThreadId,
}

impl<F> LocalFuture<F> {
    pub(crate) fn new(future: F) -> Self {
        LocalFuture {
            future: ManuallyDrop::new(Box::pin(future)),
            owner: thread::current().id(),
        }
    }

    fn on_owner_thread(&self) -> bool {
        thread::current().id() == self.owner
    }
}

// SAFETY: the inner future is only polled (`poll`) and dropped (`Drop`) after checking
// that the current thread is the one that created it; on any other thread it is neither
// touched nor dropped (it is leaked instead). Moving the `LocalFuture` itself only moves
// the box pointer, which is sound for any `F`.
unsafe impl<F> Send for LocalFuture<F> {}

impl<F> Future for LocalFuture<F>
where
    F: Future,
    F::Output: Misplaced,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.on_owner_thread() {
            return Poll::Ready(F::Output::misplaced());
        }
        self.future.as_mut().poll(cx)
    }
}

impl<F> Drop for LocalFuture<F> {
    fn drop(&mut self) {
        if self.on_owner_thread() {
            // SAFETY: dropped exactly once, here, on the owner thread.
            unsafe { ManuallyDrop::drop(&mut self.future) }
        }
        // Elsewhere the future is leaked: running its destructor off its thread could
        // touch a non-`Send` value (an `Rc` count) concurrently with its owner.
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
