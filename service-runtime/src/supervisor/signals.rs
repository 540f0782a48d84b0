//! What ends a supervisor's running phase: SIGINT, SIGTERM or SIGQUIT (on Windows:
//! Ctrl-C, Ctrl-Break, the console's closing and the system's shutdown),
//! the caller's future, or the request of a caller that polls its future in its own
//! task; and the other signals `run_until_signal` takes so that none ends the process
//! unannounced: SIGHUP asks for a reload, SIGUSR1 and SIGUSR2 are logged and ignored.

use tokio::sync::mpsc;

use super::BoxFuture;
use super::run::reload::ReloadRequest;

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

/// Listens for the signals from now on, so none arriving during startup is lost: the
/// shutdown requests come out of the returned channel, the reloads go to `reloads`.
pub(super) fn signals(
    reloads: &mpsc::UnboundedSender<ReloadRequest>,
) -> std::io::Result<mpsc::UnboundedReceiver<&'static str>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::quit(), "SIGQUIT"),
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
        let mut hangups = signal(SignalKind::hangup())?;
        let reloads = reloads.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let request = ReloadRequest {
                    reason: "SIGHUP",
                    reply: None,
                };
                if reloads.send(request).is_err() {
                    // The run is over: a late SIGHUP is still not a silent death.
                    tracing::warn!("SIGHUP received after the supervisor's run: ignored");
                }
            }
        });
        for (kind, name) in [
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ] {
            let mut stream = signal(kind)?;
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    tracing::warn!(
                        signal = name,
                        "signal received and ignored: the supervisor stops on SIGINT, SIGTERM or SIGQUIT and reloads on SIGHUP"
                    );
                }
            });
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows;
        let _ = reloads;
        // Each kind is a type of its own: one forwarding task per kind.
        macro_rules! forward {
            ($listener:expr, $name:literal) => {{
                let mut events = $listener?;
                let sender = sender.clone();
                tokio::spawn(async move {
                    while events.recv().await.is_some() {
                        if sender.send($name).is_err() {
                            break;
                        }
                    }
                });
            }};
        }
        forward!(windows::ctrl_c(), "Ctrl-C");
        forward!(windows::ctrl_break(), "Ctrl-Break");
        // Windows ends the process a few seconds after these: a shutdown at once is
        // the most of a clean stop it allows.
        forward!(windows::ctrl_close(), "console closed");
        forward!(windows::ctrl_shutdown(), "system shutdown");
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = reloads;
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
