//! Small future combinators the runtime needs, written here rather than pulling in
//! `futures-util` for two of its functions.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls a future, turning a panic into `Err(message)`.
///
/// `AssertUnwindSafe` is sound here: a panicking hook's future is dropped at once and
/// its service ends in `Error`, so no broken invariant is observed afterwards except
/// through the user's own state, which the error report tells them about.
pub(crate) struct CatchUnwind<F> {
    future: F,
}

pub(crate) fn catch_unwind_future<F: Future + Unpin>(future: F) -> CatchUnwind<F> {
    CatchUnwind { future }
}

// `Unpin` (every hook future is boxed) keeps this free of unsafe pin projection.
impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = Pin::new(&mut self.get_mut().future);
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Runs boxed futures concurrently on the current task and collects their outputs in order.
pub(crate) async fn join_all<T>(
    futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>,
) -> Vec<T> {
    let mut slots: Vec<Slot<'_, T>> = futures.into_iter().map(Slot::Pending).collect();
    std::future::poll_fn(move |cx| {
        let mut done = true;
        for slot in &mut slots {
            if let Slot::Pending(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Slot::Done(Some(output)),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(
                slots
                    .iter_mut()
                    .map(|slot| match slot {
                        Slot::Done(output) => output.take().expect("each output is taken once"),
                        Slot::Pending(_) => unreachable!("all futures are done"),
                    })
                    .collect(),
            )
        } else {
            Poll::Pending
        }
    })
    .await
}

enum Slot<'a, T> {
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
    Done(Option<T>),
}
