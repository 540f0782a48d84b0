//! The example `stream_pipeline` as child processes of a test, run as a user runs it: the
//! binary built once per test binary (with the cargo running the tests, so with the same
//! profile and target directory, by `example_binary`), started in a role,
//! its stdout read line by line, stopped by real signals, killed when dropped.
//!
//! Every wait is bounded by [`PATIENCE`] and panics with what it waited for and what the
//! process printed.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The bound of every wait on a child.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The example's executable, built on first use (see `example_binary`). Blocking: call
/// it from `spawn_blocking`.
pub fn binary() -> PathBuf {
    crate::example_binary::binary("stream_pipeline").clone()
}

/// One process of the example.
pub struct Process {
    /// What the test calls it (a replica's consumer name).
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line of stdout read so far.
    pub stdout: Vec<String>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    /// Its probe endpoint, once [`running`](Self::running) saw it.
    pub probes: Option<SocketAddr>,
}

impl Process {
    /// Starts `binary` with `args` against `redis_url`, its probes on any free port.
    pub fn start(binary: &PathBuf, name: &str, redis_url: &str, args: &[&str]) -> Process {
        let mut child = Command::new(binary)
            .args(args)
            .env("REDIS_URL", redis_url)
            .env("PROBES_ADDR", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .env_remove("DEMO_RUN_FOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{name} starts: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        });
        Process {
            name: name.to_owned(),
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            probes: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process has not been reaped")
    }

    /// Reads stdout until a line satisfies `wanted`, and returns it.
    pub async fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.stdout.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "{} exited before {what}; output:\n{}",
                    self.name,
                    self.output()
                ),
                Err(_) => panic!(
                    "timed out after {PATIENCE:?} waiting for {} to print {what}; output so far:\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Waits until its probe endpoint listens and its top service runs.
    pub async fn running(&mut self) {
        let line = self
            .wait_for("its probe address", |line| {
                line.contains(" probes on http://")
            })
            .await;
        // `[   0.007s] probes on http://127.0.0.1:46881: /livez /readyz /health`
        let address = line
            .split_once("http://")
            .and_then(|(_, rest)| rest.split_once(": "))
            .and_then(|(address, _)| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        self.probes = Some(address);
        if !self
            .stdout
            .iter()
            .any(|line| line.contains(" running; press Ctrl-C"))
        {
            self.wait_for("its banner", |line| line.contains(" running; press Ctrl-C"))
                .await;
        }
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(
            status.success(),
            "kill -{signal} {} failed: {status}",
            self.name
        );
    }

    /// SIGSTOP, then waits until every thread has stopped: from then on it sends Redis
    /// nothing.
    pub async fn freeze(&self) {
        self.signal("STOP");
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stopped = std::fs::read_dir(&tasks).is_ok_and(|threads| {
                threads.flatten().all(|thread| {
                    std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
                        // The state follows the command, which is in parentheses.
                        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.as_bytes()[0]);
                        matches!(state, Some(b'T' | b't'))
                    })
                })
            });
            if stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {PATIENCE:?} of SIGSTOP",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits for it to exit, then reads the rest of its output.
    pub async fn exit(&mut self) -> ExitStatus {
        let status = match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "{} did not exit within {PATIENCE:?}; output so far:\n{}",
                self.name,
                self.output()
            ),
        };
        // The pipe closes once the process is gone: the reader task ends promptly.
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.lines.recv()).await {
            self.stdout.push(line);
        }
        status
    }

    /// Everything it wrote to stderr (after it exited).
    pub async fn stderr(&mut self) -> String {
        match self.stderr.take() {
            Some(reader) => tokio::time::timeout(PATIENCE, reader)
                .await
                .expect("stderr closes once the process exited")
                .expect("stderr reader"),
            None => String::new(),
        }
    }

    pub fn output(&self) -> String {
        self.stdout.join("\n")
    }

    /// The number before `label` in the last line that has `label` (`"12 claimed"`).
    pub fn figure(&self, label: &str) -> Option<u64> {
        let line = self.stdout.iter().rev().find(|line| line.contains(label))?;
        let before = &line[..line.find(label)?];
        before.split_whitespace().last()?.parse().ok()
    }
}
