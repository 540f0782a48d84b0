//! systemd notifications, received on a real unix datagram socket the test binds.
#![cfg(unix)]

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use service_runtime::{HealthStatus, Managed, Service, Supervisor, SystemdNotifier, lifecycle};

#[derive(Service)]
struct Worker {
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Worker {
    #[health(name = "upstream", critical)]
    async fn ok(&self) -> HealthStatus {
        if self.healthy.load(std::sync::atomic::Ordering::SeqCst) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }
}

fn bind() -> (tempdir::Dir, UnixDatagram, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    (dir, socket, path)
}

fn received(socket: &UnixDatagram) -> Vec<String> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer) {
        out.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn ready_status_watchdog_and_stopping_arrive_in_order() {
    let (_dir, socket, path) = bind();
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let notifier = SystemdNotifier::connect(&path)
        .unwrap()
        .with_watchdog(Duration::from_secs(2));
    let flag = healthy.clone();
    let supervisor = Supervisor::new()
        .add(Managed::with_config(
            Worker {
                healthy: healthy.clone(),
            },
            Worker::config().name("worker"),
        ))
        .systemd(notifier);
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(async move {
            // Pings at 0 s, 1 s, 2 s while healthy, and at 3 s and 4 s while the critical
            // check fails: the watchdog follows liveness, not health.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            flag.store(false, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(handle.health().await.status, HealthStatus::Unhealthy);
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(handle.health().await.status, HealthStatus::Unhealthy);
        })
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    tokio::task::yield_now().await;
    let messages = received(&socket);
    let ready = messages
        .iter()
        .position(|m| m.starts_with("READY=1"))
        .expect("READY=1");
    let stopping = messages
        .iter()
        .position(|m| m == "STOPPING=1")
        .expect("STOPPING=1");
    assert_eq!(messages[ready], "READY=1\nSTATUS=all 1 services running");
    assert!(
        messages[..ready].contains(&"STATUS=worker: stopped -> starting".to_owned()),
        "{messages:?}"
    );
    assert!(
        messages[..ready].contains(&"STATUS=worker: starting -> running".to_owned()),
        "{messages:?}"
    );
    let pings = messages[ready..stopping]
        .iter()
        .filter(|m| *m == "WATCHDOG=1")
        .count();
    assert_eq!(
        pings, 5,
        "every half interval, healthy or not: {messages:?}"
    );
    assert!(ready < stopping);
    assert!(
        messages[stopping..].contains(&"STATUS=worker: running -> stopping".to_owned()),
        "{messages:?}"
    );
}

/// Fails its first run at once; the init of its restart blocks the thread (as a hook
/// doing blocking I/O without `spawn_blocking` would), marking the block on the socket.
#[derive(Service)]
#[service(name = "blocker", start_timeout = "30s")]
struct Blocker {
    marks: std::path::PathBuf,
    incarnation: u32,
}

#[lifecycle]
impl Blocker {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.incarnation += 1;
        if self.incarnation == 2 {
            let marks = UnixDatagram::unbound()?;
            marks.send_to(b"BLOCKING", &self.marks)?;
            std::thread::sleep(Duration::from_millis(1500));
            marks.send_to(b"UNBLOCKED", &self.marks)?;
        }
        Ok(())
    }

    #[run]
    async fn work(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        if self.incarnation == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(std::io::Error::other("first incarnation fails"));
        }
        shutdown.requested().await;
        Ok(())
    }
}

/// Real time on the multi-thread runtime: the watchdog's task runs on another worker
/// while the loop's is blocked. Bounded in count (pings between the marks), not time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_blocked_past_the_ping_period_withholds_the_watchdog() {
    let (_dir, socket, path) = bind();
    // Pings every 200 ms; a turn of the loop may last up to 200 ms.
    let notifier = SystemdNotifier::connect(&path)
        .unwrap()
        .with_watchdog(Duration::from_millis(400));
    let report = Supervisor::new()
        .add(Blocker {
            marks: path.clone(),
            incarnation: 0,
        })
        .restart(
            service_runtime::RestartPolicy::new(service_runtime::Restart::Permanent)
                .backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .systemd(notifier)
        .run_until(async {
            let mut seen = Vec::new();
            while !seen.iter().any(|m| m == "UNBLOCKED") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen.extend(received(&socket));
            }
            // Long enough for pings to resume.
            tokio::time::sleep(Duration::from_millis(800)).await;
            seen.extend(received(&socket));
            let blocking = seen.iter().position(|m| m == "BLOCKING").unwrap();
            let unblocked = seen.iter().position(|m| m == "UNBLOCKED").unwrap();
            let pings =
                |messages: &[String]| messages.iter().filter(|m| *m == "WATCHDOG=1").count();
            // Without the rule, about 7 pings in the 1.5 s block; with it, those of
            // its first 200 ms at most (and one more for a late tick).
            assert!(
                pings(&seen[blocking..unblocked]) <= 3,
                "pings while the loop was blocked: {seen:?}"
            );
            assert!(
                pings(&seen[unblocked..]) >= 1,
                "pings resume once the loop answers: {seen:?}"
            );
        })
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test]
async fn without_a_socket_nothing_is_sent_and_nothing_fails() {
    let notifier = SystemdNotifier::disabled();
    assert!(!notifier.is_enabled());
    notifier.notify("READY=1").unwrap();
    assert!(SystemdNotifier::connect("relative/path").is_err());
    let report = Supervisor::new()
        .systemd(SystemdNotifier::disabled())
        .run_until(async {})
        .await;
    assert!(report.is_success());
}

#[tokio::test]
async fn abstract_sockets_are_supported() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let name = format!("service-runtime-test-{}", std::process::id());
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_nonblocking(true).unwrap();
        SystemdNotifier::connect(format!("@{name}"))
            .unwrap()
            .notify("READY=1")
            .unwrap();
        assert_eq!(received(&socket), ["READY=1"]);
    }
}

/// A directory removed on drop (std has no temp-dir helper; this avoids a dependency).
mod tempdir {
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "service-runtime-systemd-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A service with a reload hook that fails on demand.
#[derive(Service)]
#[service(name = "quoter")]
struct Quoter {
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Quoter {
    #[reload]
    async fn reread(&self) -> Result<(), std::io::Error> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("spreads.toml: no such file"));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_is_framed_by_reloading_with_monotonic_usec_and_ready() {
    let (_dir, socket, path) = bind();
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let supervisor = Supervisor::new()
        .add(Quoter { fail: fail.clone() })
        .systemd(SystemdNotifier::connect(&path).unwrap());
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            handle.reload().await.unwrap();
            fail.store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(handle.reload().await.is_err());
        })
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    let messages = received(&socket);
    let reloading: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.starts_with("RELOADING=1"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(reloading.len(), 2, "{messages:?}");
    let boot_ready = messages
        .iter()
        .position(|m| m.starts_with("READY=1"))
        .expect("READY=1");
    assert!(boot_ready < reloading[0], "{messages:?}");
    for &i in &reloading {
        let lines: Vec<&str> = messages[i].lines().collect();
        assert_eq!(
            lines[..2],
            ["RELOADING=1", "STATUS=reloading"],
            "{messages:?}"
        );
        let usec: u64 = lines[2]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|usec| usec.parse().ok())
            .unwrap_or_else(|| panic!("MONOTONIC_USEC= in {:?}", messages[i]));
        assert!(usec > 0);
    }
    assert_eq!(messages[reloading[0] + 1], "READY=1\nSTATUS=reloaded");
    assert!(
        messages[reloading[1] + 1].starts_with("READY=1\nSTATUS=reload failed for 1 service(s): service `quoter`: reload hook `reread` failed: spreads.toml: no such file"),
        "{messages:?}"
    );
}
