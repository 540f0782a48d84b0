//! [`Ready`]: how a `#[run]` hook tells its service's start that the service is ready.

use std::fmt;

use tokio::sync::oneshot;

/// The ready signal of a `#[run]` hook that takes it.
///
/// A run hook that takes a `Ready` is spawned while the service is still `starting`, and
/// the start waits (under the service's `start_timeout`) until the hook calls
/// [`notify`](Self::notify): only then is the service `running`, `start()` returns, the
/// services that depend on it start, and `/readyz`, `/startupz` and systemd's `READY=1`
/// count it. So a loop that must subscribe, bind or catch up before anyone relies on it
/// says when it has. A run hook without a `Ready` argument is `running` as soon as it is
/// spawned.
///
/// If the hook returns before notifying, the start ends with its outcome: an `Err` fails
/// the start (cleanup runs, the service ends `error`); `Ok` means it did its work before
/// anyone needed it (a one-shot job): the start succeeds and the service then stops as
/// any loop that returns `Ok`. A hook that neither notifies nor returns within
/// `start_timeout` (or drops its `Ready` unnotified) fails the start with an error that
/// says so, and is stopped like any run loop.
///
/// ```
/// use service_runtime::{lifecycle, Managed, Ready, Service, Shutdown};
/// use tokio::sync::broadcast;
///
/// #[derive(Service)]
/// struct Strategy { ticks: broadcast::Sender<u64> }
///
/// #[lifecycle]
/// impl Strategy {
///     #[run]
///     async fn trade(&self, ready: Ready, shutdown: Shutdown) -> Result<(), std::io::Error> {
///         let mut ticks = self.ticks.subscribe();
///         ready.notify(); // subscribed: no tick sent from now on is missed
///         loop {
///             tokio::select! {
///                 () = shutdown.requested() => return Ok(()),
///                 tick = ticks.recv() => { let _ = tick; }
///             }
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let ticks = broadcast::channel(16).0;
/// let strategy = Managed::new(Strategy { ticks: ticks.clone() });
/// strategy.start().await?;
/// assert_eq!(ticks.receiver_count(), 1); // the loop subscribed before start() returned
/// strategy.stop().await?;
/// # Ok::<(), service_runtime::ServiceError>(())
/// # }).unwrap();
/// ```
pub struct Ready {
    sender: Option<oneshot::Sender<()>>,
}

impl Ready {
    /// A signal and the receiver a start waits on.
    pub(crate) fn channel() -> (Ready, oneshot::Receiver<()>) {
        let (sender, receiver) = oneshot::channel();
        (
            Ready {
                sender: Some(sender),
            },
            receiver,
        )
    }

    /// The signal of a run hook that does not take one: nobody waits for it.
    pub(crate) fn unused() -> Ready {
        Ready { sender: None }
    }

    /// Tells the start that the service is ready: it becomes `running` now.
    pub fn notify(mut self) {
        if let Some(sender) = self.sender.take() {
            // A start that gave up (cancelled, timed out) no longer listens.
            let _ = sender.send(());
        }
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("awaited", &self.sender.is_some())
            .finish()
    }
}
