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
    #[health]
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
    let report = Supervisor::new()
        .add(Managed::with_config(
            Worker {
                healthy: healthy.clone(),
            },
            Worker::config().name("worker"),
        ))
        .systemd(notifier)
        .run_until(async move {
            // Pings at 0 s, 1 s, 2 s while healthy; none at 3 s and 4 s while unhealthy.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            flag.store(false, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
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
        pings, 3,
        "every half interval while healthy, none while unhealthy: {messages:?}"
    );
    assert!(ready < stopping);
    assert!(
        messages[stopping..].contains(&"STATUS=worker: running -> stopping".to_owned()),
        "{messages:?}"
    );
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
