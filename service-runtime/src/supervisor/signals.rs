//! What ends a supervisor's running phase: SIGINT or SIGTERM (Ctrl-C off Unix), the
//! caller's future, or the request of a caller that polls its future in its own task.

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

    /// The next shutdown request that arrives at or after `from`: one before it repeats
    /// the request that began the shutdown (see
    /// [`DEFAULT_REPEAT_WINDOW`](super::DEFAULT_REPEAT_WINDOW)).
    pub(super) async fn next_from(&mut self, from: tokio::time::Instant) -> &'static str {
        loop {
            let reason = self.next().await;
            if tokio::time::Instant::now() >= from {
                return reason;
            }
            tracing::info!(
                reason,
                "shutdown requested again within the repeat window: the same request"
            );
        }
    }
}

/// Listens for SIGINT and SIGTERM from now on, so none arriving during startup is lost.
pub(super) fn signals() -> std::io::Result<mpsc::UnboundedReceiver<&'static str>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            let mut stream = signal(kind)?;
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(name).is_err() {
                        break;
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
                    break;
                }
            }
        });
    }
    Ok(receiver)
}
