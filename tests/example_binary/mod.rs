//! An example binary run as a user runs it, for the integration tests: built once per
//! test binary with the cargo running the tests, started as a child process, its stdout
//! read line by line, stopped by a real signal.
//!
//! Every wait is bounded: stdout is read on its own thread, and a child still running at
//! the deadline (or when an assertion fails) is killed, so a hang fails the test instead
//! of stalling CI.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Budget of building an example (once per test binary; a fresh build of a release
/// profile takes minutes on a loaded machine), and of each run of it.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);
const DEADLINE: Duration = Duration::from_secs(120);

/// Builds the example `name` once per test binary (with the cargo running these tests,
/// so with the same profile and target directory) and returns the path of its
/// executable. A test binary runs one example: the first name asked for is built.
/// Blocking: from async code, call it in `spawn_blocking`.
pub fn binary(name: &str) -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    let binary = BINARY.get_or_init(|| {
        let deadline = Instant::now() + BUILD_DEADLINE;
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args([
            "build",
            "--example",
            name,
            "--message-format=json-render-diagnostics",
        ]);
        // The profile of the tests: a release test measures a release example.
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let mut cargo = cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cargo runs");
        let mut stdout = cargo.stdout.take().expect("piped stdout");
        let messages = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let status = loop {
            if let Some(status) = cargo.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = cargo.kill();
                let _ = cargo.wait();
                panic!("building the example {name} took more than {BUILD_DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "building the example {name} failed: {status}"
        );
        messages
            .join()
            .expect("cargo's output")
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == name
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the example's executable")
    });
    assert!(
        binary.file_stem().is_some_and(|stem| stem == name),
        "this test binary runs {} already",
        binary.display()
    );
    binary
}

/// An example running as a child process; killed when dropped while still running.
pub struct Example {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
    deadline: Instant,
}

impl Example {
    /// Builds (once) and starts the example `name`, without `RUST_LOG` and with what
    /// `configure` sets (its environment, usually).
    pub fn start(name: &str, configure: impl FnOnce(&mut Command)) -> Example {
        let binary = binary(name);
        let deadline = Instant::now() + DEADLINE;
        let mut command = Command::new(binary);
        command.env_remove("RUST_LOG");
        configure(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Example {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            deadline,
        }
    }

    /// Reads stdout until a line satisfies `wanted` and returns it; panics at the
    /// deadline or at EOF.
    pub fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = wanted(&line);
                    self.stdout.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what}; output so far:\n{}",
                    self.output()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the example exited before {what}; output:\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    /// Sends `signal` (`TERM`, `INT`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the child to exit, then reads the rest of its output.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= self.deadline {
                panic!(
                    "the example did not exit; output so far:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The pipe is closed once the child exited: the reader thread ends promptly.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.stdout.push(line);
        }
        status
    }

    /// Everything the child wrote to stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    /// The lines read from stdout so far.
    pub fn lines(&self) -> &[String] {
        &self.stdout
    }

    /// Every line read from stdout so far.
    pub fn output(&self) -> String {
        self.stdout.join("\n")
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
