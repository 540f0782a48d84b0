//! systemd's notification protocol (`sd_notify`): `READY=1`, `STOPPING=1`, `STATUS=…` and
//! `WATCHDOG=1` datagrams to the socket named by `NOTIFY_SOCKET`.
//!
//! Written against the protocol (a unix datagram of `KEY=VALUE` lines) rather than
//! `libsystemd`, so it needs no C library and is a no-op where `NOTIFY_SOCKET` is unset.
//! It compiles everywhere: off Unix there is no such socket, so the notifier is always
//! disabled and a program that sets one up builds unchanged for every platform.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Sends service-manager notifications to systemd.
///
/// A [`Supervisor`](crate::Supervisor) built with the `systemd` feature uses
/// [`SystemdNotifier::from_env`] by itself: `READY=1` once every service runs,
/// `STATUS=` on each transition, `WATCHDOG=1` at half the watchdog interval while the
/// supervisor is live ([`SupervisorHandle::is_live`](crate::SupervisorHandle::is_live):
/// its loop answers; health is never read, so an outage of a dependency never gets the
/// process killed), `STOPPING=1` when the shutdown begins.
#[derive(Debug)]
pub struct SystemdNotifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

/// The socket notifications go to.
#[cfg(unix)]
#[derive(Debug)]
struct Target {
    socket: std::os::unix::net::UnixDatagram,
    address: Address,
}

/// Off Unix there is no notification socket: a notifier never has a target.
#[cfg(not(unix))]
#[derive(Debug)]
enum Target {}

#[cfg(unix)]
#[derive(Debug)]
enum Address {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

#[cfg(unix)]
impl Target {
    fn open(socket: PathBuf) -> io::Result<Target> {
        let bytes = socket.as_os_str().as_encoded_bytes();
        let address = match bytes.first() {
            #[cfg(target_os = "linux")]
            Some(b'@') => Address::Abstract(bytes[1..].to_vec()),
            Some(b'/') => Address::Path(socket.clone()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET must be an absolute path or @abstract name, not {socket:?}"
                    ),
                ));
            }
        };
        Ok(Target {
            socket: std::os::unix::net::UnixDatagram::unbound()?,
            address,
        })
    }

    fn send(&self, state: &str) -> io::Result<usize> {
        match &self.address {
            Address::Path(path) => self.socket.send_to(state.as_bytes(), path),
            #[cfg(target_os = "linux")]
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                self.socket.send_to_addr(state.as_bytes(), &address)
            }
        }
    }
}

#[cfg(not(unix))]
impl Target {
    fn open(socket: PathBuf) -> io::Result<Target> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "systemd's notification socket {socket:?} is a unix socket: none on this platform"
            ),
        ))
    }

    fn send(&self, _: &str) -> io::Result<usize> {
        match *self {}
    }
}

impl SystemdNotifier {
    /// The notifier systemd asks for through `NOTIFY_SOCKET` (and `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`); a no-op one when the variable is unset or unusable.
    pub fn from_env() -> Self {
        let watchdog = watchdog_from_env();
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => match Self::connect(PathBuf::from(path)) {
                Ok(notifier) => SystemdNotifier {
                    watchdog,
                    ..notifier
                },
                Err(error) => {
                    tracing::warn!(%error, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                    SystemdNotifier::disabled()
                }
            },
            _ => SystemdNotifier::disabled(),
        }
    }

    /// A notifier that sends to `socket` (a path, or `@name` for an abstract socket on
    /// Linux), without a watchdog.
    ///
    /// Off Unix it fails with [`io::ErrorKind::Unsupported`]: there is no such socket.
    pub fn connect(socket: impl Into<PathBuf>) -> io::Result<Self> {
        Ok(SystemdNotifier {
            target: Some(Target::open(socket.into())?),
            watchdog: None,
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        SystemdNotifier {
            target: None,
            watchdog: None,
        }
    }

    /// Sets the watchdog interval (`WATCHDOG_USEC`); `WATCHDOG=1` is sent at half of it.
    #[must_use]
    pub fn with_watchdog(mut self, interval: Duration) -> Self {
        self.watchdog = Some(interval);
        self
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog interval systemd expects pings within, if any.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.target.is_some())
    }

    /// Sends one notification (`KEY=VALUE` lines). A no-op when disabled.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sent = target.send(state)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ));
        }
        Ok(())
    }

    /// Sends a notification, logging a failure instead of returning it (systemd being
    /// unreachable must not stop the services).
    pub(crate) fn send(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            tracing::warn!(%error, state, "could not notify systemd");
        }
    }

    /// `STATUS=` with the line made safe (one line, as the protocol requires).
    pub(crate) fn status(&self, message: &str) {
        if self.is_enabled() {
            self.send(&format!("STATUS={}", message.replace('\n', " ")));
        }
    }
}

/// `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or names this process.
fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd compares a reload's
/// `MONOTONIC_USEC=` with.
#[cfg(unix)]
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let micros = u64::try_from(now.tv_nsec).ok()? / 1_000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Off Unix no notification is ever sent.
#[cfg(not(unix))]
fn monotonic_usec() -> Option<u64> {
    None
}

/// The notifications of one supervisor run: `STATUS=` for every change, `READY=1` and the
/// watchdog once every service runs, `STOPPING=1` when the shutdown begins. Changes are
/// sent by [`flush`](Session::flush), which the supervisor calls as it handles them and
/// before each phase notification, so systemd sees them in order.
pub(crate) struct Session {
    notifier: std::sync::Arc<SystemdNotifier>,
    changes: crate::StatusChanges,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    pub(crate) fn begin(
        notifier: std::sync::Arc<SystemdNotifier>,
        handle: &crate::SupervisorHandle,
    ) -> Option<Self> {
        notifier.is_enabled().then(|| Session {
            notifier,
            changes: handle.subscribe(),
            watchdog: None,
        })
    }

    /// Sends a `STATUS=` line for every change not sent yet.
    pub(crate) fn flush(&mut self) {
        while let Some(change) = self.changes.try_recv() {
            self.notifier.status(&format!(
                "{}: {} -> {}",
                change.service, change.from, change.to
            ));
        }
    }

    pub(crate) fn ready(&mut self, handle: &crate::SupervisorHandle, services: usize) {
        self.flush();
        self.notifier
            .send(&format!("READY=1\nSTATUS=all {services} services running"));
        if let Some(interval) = self.notifier.watchdog_interval() {
            let notifier = self.notifier.clone();
            let handle = handle.clone();
            self.watchdog = Some(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval / 2);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    // Liveness, not health: an outage of a dependency never gets the
                    // process killed.
                    if handle.is_live(interval / 2) {
                        notifier.send("WATCHDOG=1");
                    } else {
                        tracing::warn!(
                            stalled = ?handle.loop_stalled_for(),
                            "the supervisor's loop is not answering: withholding the systemd watchdog ping"
                        );
                    }
                }
            }));
        }
    }

    /// `RELOADING=1`, with the `MONOTONIC_USEC=` that `Type=notify-reload` requires.
    pub(crate) fn reloading(&mut self) {
        self.flush();
        let mut state = String::from("RELOADING=1\nSTATUS=reloading");
        if let Some(usec) = monotonic_usec() {
            state.push_str(&format!("\nMONOTONIC_USEC={usec}"));
        }
        self.notifier.send(&state);
    }

    /// `READY=1` once a reload is over, with its outcome as the status line.
    pub(crate) fn reloaded(&mut self, error: Option<&crate::ReloadError>) {
        self.flush();
        let status = match error {
            None => "reloaded".to_owned(),
            Some(error) => error.to_string().replace('\n', " "),
        };
        self.notifier.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub(crate) fn stopping(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        self.flush();
        self.notifier.send("STOPPING=1");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        self.flush();
    }
}
