//! A private `redis-server` for the Redis integration tests: a child process on a free
//! loopback port, persisting (AOF, fsync at every write) to a directory of its own,
//! killed with SIGKILL on demand and on drop.
//!
//! Without `redis-server` on the PATH, [`RedisServer::start`] prints a loud notice and
//! returns `None` (the test passes without running), except under `CI=true`, where it
//! panics: `.ci/run` installs it, so CI never skips these tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;
use tokio::time::Instant;

/// The bound of every wait here: a server that does not answer fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `redis-server` child process on a loopback port, persisting to a directory of its
/// own; killed and the directory removed on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// What Redis holds for a stream and its consumer group.
pub struct StreamState {
    pub length: u64,
    pub pending: u64,
}

impl RedisServer {
    /// Starts one and waits until it answers, or returns `None` (after a loud notice)
    /// when `redis-server` is not installed and this is not CI.
    pub async fn start(name: &str) -> Option<RedisServer> {
        if let Err(error) = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .output()
        {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "redis-server is not available ({error}) and CI is set: install it \
                 (`apt-get install redis-server`; `.ci/run` does); this test never skips in CI"
            );
            // Straight to the process's stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\nSKIPPED the Redis test `{name}`: redis-server is not on the PATH ({error}).\n\
                 Install it (`apt-get install redis-server`) to run the Redis integration tests.\n{bar}\n",
                bar = "!".repeat(78),
            );
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("service-suite-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
        };
        // Another process may take the port between our pick and the server's bind.
        for _ in 0..3 {
            server.spawn();
            match server.ready().await {
                Ok(()) => return Some(server),
                Err(_) => server.port = free_port(),
            }
        }
        server.spawn();
        server.ready().await.unwrap_or_else(|log| panic!("{log}"));
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("redis-server's log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis-server's log file"))
            .stderr(log)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// Waits until the server answers PING (bounded); `Err` with its log if it exited.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!(
                    "redis-server exited ({status}) on port {}:\n{log}",
                    self.port
                ));
            }
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within {PATIENCE:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no last save; what survives is what was fsynced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The same port and directory, so the stream comes back from the AOF.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.ready().await.unwrap_or_else(|log| panic!("{log}"));
    }

    /// The stream's length and the group's pending count, from a connection of our own.
    pub async fn inspect(&self, stream: &str, group: &str) -> StreamState {
        let query = async {
            let client = redis::Client::open(self.url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let length: u64 = conn.xlen(stream).await?;
            let pending: redis::streams::StreamPendingReply = conn.xpending(stream, group).await?;
            Ok::<_, redis::RedisError>(StreamState {
                length,
                pending: pending.count() as u64,
            })
        };
        bounded("Redis to answer XLEN and XPENDING", query)
            .await
            .expect("XLEN and XPENDING")
    }
}

impl RedisServer {
    /// A hash of counters by number (`HGETALL`), from a connection of our own.
    pub async fn counters(&self, key: &str) -> BTreeMap<u64, u64> {
        let query = async {
            let client = redis::Client::open(self.url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            conn.hgetall::<_, BTreeMap<u64, u64>>(key).await
        };
        bounded("Redis to answer HGETALL", query)
            .await
            .expect("HGETALL")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}
