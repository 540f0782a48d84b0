//! What ends a supervisor's running phase: SIGINT or SIGTERM (Ctrl-C off Unix), the
//! caller's future, or the request of a caller that polls its future in its own task.
//!
//! The signal listener is installed as early as a runtime allows: by `Supervisor::new()`
//! inside one (as in `#[tokio::main]`), else by `run_until_signal`. From then on tokio's
//! handler replaces the default action (ending the process), so a signal that arrives
//! before the run is held for it; one that arrives once nobody listens any more (the
//! supervisor dropped, or run by `run_until` instead) ends the process as the default
//! action would, with the status a shell reports for it (128 + the signal's number).

use tokio::sync::mpsc;

use super::BoxFuture;

/// What ends the running phase.
pub(super) enum Trigger<'a> {
    /// The caller's future, polled by the supervisor itself.
    Future(Option<BoxFuture<'a, ()>>),
    /// Signals, or the request of a caller that polls its future in its own task.
    Channel(mpsc::UnboundedReceiver<&'static str>),
}

impl Trigger<'_> {
    /// The next shutdown request: the future (once), or the next signal or request.
    pub(super) async fn next(&mut self) -> &'static str {
        match self {
            Trigger::Future(slot) => match slot {
                Some(future) => {
                    future.await;
                    *slot = None;
                    "the shutdown future completed"
                }
                None => std::future::pending().await,
            },
            Trigger::Channel(requests) => match requests.recv().await {
                Some(name) => name,
                None => std::future::pending().await,
            },
        }
    }
}

/// Listens for SIGINT and SIGTERM from now on (on the current runtime, which must exist),
/// so none arriving before or during startup is lost.
pub(super) fn signals() -> std::io::Result<mpsc::UnboundedReceiver<&'static str>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, name, number) in [
            (SignalKind::interrupt(), "SIGINT", 2),
            (SignalKind::terminate(), "SIGTERM", 15),
        ] {
            let mut stream = signal(kind)?;
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(name).is_err() {
                        unheard(name, number);
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if sender.send("Ctrl-C").is_err() {
                    unheard("Ctrl-C", 2);
                }
            }
        });
    }
    Ok(receiver)
}

/// A signal nobody listens for any more: the default action, which tokio's handler
/// replaced, would have ended the process; end it, as a shell reports that.
fn unheard(name: &str, number: i32) -> ! {
    tracing::warn!(
        signal = name,
        "signal received with no supervisor listening; exiting as its default action would"
    );
    std::process::exit(128 + number)
}
