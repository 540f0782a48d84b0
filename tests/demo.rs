//! The README's demo, `examples/trading_desk.rs`, run as a user runs it: a child process
//! stopped by a real SIGTERM.
//!
//! Every wait is bounded: stdout is read on its own thread, and a child still running at
//! the deadline (or when an assertion fails) is killed, so a hang fails the test instead
//! of stalling CI.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The line the demo prints once every service is running.
const BANNER: &str = "all services running; press Ctrl-C to stop";
/// Stop order the demo must follow: dependents before what they depend on.
const STOP_ORDER: [&str; 4] = ["order_gateway", "risk", "strategy", "market_feed"];
const SERVICES: [&str; 5] = [
    "market_feed",
    "audit_log",
    "strategy",
    "risk",
    "order_gateway",
];
/// Budget of building the demo (once per test binary), and of each run of it.
const BUILD_DEADLINE: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(120);

/// Builds the example once per test binary (with the cargo running these tests, so with
/// the same profile and target directory) and returns the path of its executable.
fn demo_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let deadline = Instant::now() + BUILD_DEADLINE;
        let mut cargo = Command::new(env!("CARGO"))
            .args([
                "build",
                "--example",
                "trading_desk",
                "--message-format=json-render-diagnostics",
            ])
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
                panic!("building the demo took more than {BUILD_DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "building the demo failed: {status}");
        messages
            .join()
            .expect("cargo's output")
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact"
                    && message["target"]["name"] == "trading_desk"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the demo's executable")
    })
}

/// The demo running as a child process; killed when dropped while still running.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
    deadline: Instant,
}

impl Demo {
    fn start() -> Demo {
        Demo::start_with(&[])
    }

    /// Starts the demo with extra environment variables.
    fn start_with(env: &[(&str, &std::ffi::OsStr)]) -> Demo {
        let binary = demo_binary();
        let deadline = Instant::now() + DEADLINE;
        let mut child = Command::new(binary)
            .env_remove("RUST_LOG")
            .env_remove("DEMO_RUN_FOR")
            .env_remove("RISK_LIMIT_FILE")
            .envs(env.iter().copied())
            // Any free port: a fixed one could be taken on the test machine.
            .env("PROBES_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the demo starts");
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
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            deadline,
        }
    }

    /// Reads stdout until a line satisfies `wanted`; panics at the deadline or at EOF.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = wanted(&line);
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what}; output so far:\n{}",
                    self.output()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the demo exited before {what}; output:\n{}", self.output())
                }
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the child to exit, then reads the rest of its output.
    fn wait_exit(&mut self) -> ExitStatus {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= self.deadline {
                panic!(
                    "the demo did not exit after SIGTERM; output so far:\n{}",
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
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    fn output(&self) -> String {
        self.stdout.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `[   8.055s] strategy       stopping -> stopped  (stopped in 0ns)` → `("strategy", "stopping", "stopped")`.
fn transition(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix('[')?.split_once("s] ")?.1;
    let mut words = rest.split_whitespace();
    let (service, from, arrow, to) = (words.next()?, words.next()?, words.next()?, words.next()?);
    (arrow == "->" && SERVICES.contains(&service)).then_some((service, from, to))
}

/// Checks what the demo printed after its shutdown: reverse dependency order, every
/// service stopped.
fn assert_stopped_in_reverse_order(lines: &[String]) {
    let output = lines.join("\n");
    let header = lines
        .iter()
        .position(|line| line.contains("shutdown requested: stopping in reverse dependency order"))
        .unwrap_or_else(|| panic!("no shutdown header in:\n{output}"));
    let shutdown: Vec<(&str, &str, &str)> = lines[header..]
        .iter()
        .filter_map(|line| transition(line))
        .collect();

    for service in SERVICES {
        let last = lines
            .iter()
            .rev()
            .filter_map(|line| transition(line))
            .find(|t| t.0 == service);
        assert_eq!(
            last.map(|t| t.2),
            Some("stopped"),
            "`{service}` did not end stopped:\n{output}"
        );
        assert!(
            shutdown
                .iter()
                .any(|&(s, _, to)| s == service && to == "stopped"),
            "`{service}` was not stopped by the shutdown:\n{output}"
        );
    }
    let stopped_at = |service: &str| {
        shutdown
            .iter()
            .position(|&(s, from, to)| s == service && from == "stopping" && to == "stopped")
            .unwrap_or_else(|| {
                panic!("`{service}` never went stopping -> stopped in the shutdown:\n{output}")
            })
    };
    let started_stopping_at = |service: &str| {
        shutdown
            .iter()
            .position(|&(s, _, to)| s == service && to == "stopping")
            .unwrap_or_else(|| {
                panic!("`{service}` never went to stopping in the shutdown:\n{output}")
            })
    };
    for pair in STOP_ORDER.windows(2) {
        let (dependent, dependency) = (pair[0], pair[1]);
        assert!(
            stopped_at(dependent) < started_stopping_at(dependency),
            "`{dependent}` must be stopped before `{dependency}` begins to stop:\n{output}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("audit_log      journal flushed")),
        "audit_log's cleanup did not run:\n{output}"
    );
}

#[test]
fn sigterm_stops_every_service_in_reverse_dependency_order_and_exits_0() {
    let mut demo = Demo::start();
    demo.wait_for("the banner", |line| line.contains(BANNER));
    demo.signal("TERM");
    let status = demo.wait_exit();
    let stderr = demo.stderr();
    let output = demo.output();

    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "unexpected stderr:\n{stderr}");
    assert_stopped_in_reverse_order(&demo.stdout);
    assert!(
        output.contains("every service stopped cleanly; exit code 0"),
        "{output}"
    );
}

#[test]
fn sigterm_after_a_restart_still_stops_everything_in_order() {
    let mut demo = Demo::start();
    demo.wait_for("the banner", |line| line.contains(BANNER));
    // The strategy fails after 60 ticks (about 6 s); the supervisor restarts it and the
    // services that depend on it.
    demo.wait_for("the strategy's failure", |line| {
        transition(line).is_some_and(|t| t == ("strategy", "running", "error"))
    });
    demo.wait_for("the strategy's restart", |line| {
        line.contains("restart #1")
            && transition(line).is_some_and(|t| t == ("strategy", "stopped", "starting"))
    });
    demo.wait_for("the order gateway back up", |line| {
        transition(line).is_some_and(|t| t == ("order_gateway", "starting", "running"))
    });
    demo.signal("TERM");
    let status = demo.wait_exit();
    let stderr = demo.stderr();
    let output = demo.output();

    assert_stopped_in_reverse_order(&demo.stdout);
    // The run loop's failure was recovered by the restart: the report counts it (one
    // warning line per restarted service) and the exit code is still 0.
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    assert!(!stderr.is_empty(), "the recovered failure is reported");
    // One line for the strategy, however often it drifted.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{stderr}\nstdout:\n{output}");
    assert!(
        lines[0].starts_with("warning: strategy: restarted ")
            && lines[0]
                .contains(", last: service `strategy`: run hook `trade` failed: model drifted"),
        "unexpected line on stderr: {}\nstdout:\n{output}",
        lines[0]
    );
}

#[test]
fn sighup_reloads_the_risk_limit_and_every_service_keeps_running() {
    let dir = std::env::temp_dir().join(format!("trading-desk-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let limit_file = dir.join("risk-limit");
    std::fs::write(&limit_file, "200\n").expect("the limit file");
    let mut demo = Demo::start_with(&[("RISK_LIMIT_FILE", limit_file.as_os_str())]);
    demo.wait_for("the banner", |line| line.contains(BANNER));
    let started = demo.stdout.len();

    std::fs::write(&limit_file, "350\n").expect("the new limit");
    demo.signal("HUP");
    demo.wait_for("the reloaded limit", |line| {
        line.contains("risk           limit reloaded: 200 -> 350 shares per symbol")
    });
    // A second reload: the process handles SIGHUP every time, not once.
    std::fs::write(&limit_file, "400\n").expect("the newer limit");
    demo.signal("HUP");
    demo.wait_for("the second reload", |line| {
        line.contains("limit reloaded: 350 -> 400 shares per symbol")
    });
    // No service stopped or restarted for the reloads.
    let changes: Vec<(&str, &str, &str)> = demo.stdout[started..]
        .iter()
        .filter_map(|line| transition(line))
        .filter(|t| t.0 != "strategy" && t.0 != "risk" && t.0 != "order_gateway")
        .collect();
    assert!(
        changes.is_empty(),
        "reloads moved services: {changes:?}\n{}",
        demo.output()
    );

    demo.signal("TERM");
    let status = demo.wait_exit();
    let stderr = demo.stderr();
    let output = demo.output();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    assert_stopped_in_reverse_order(&demo.stdout);
}
