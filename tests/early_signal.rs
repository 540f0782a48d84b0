//! A SIGTERM that arrives before `run_until_signal()`, between `Supervisor::new()` and
//! the run, as a real signal to a child process: it is held for the run, which stops
//! cleanly, instead of killing the process before any handler exists. And a supervisor
//! run by `run_until` leaves SIGTERM its default effect: the process ends (143).
//!
//! The child is this test binary again, run with `EARLY_SIGNAL_CHILD` naming its role;
//! the parent sends the signal once the child has built its supervisor, then tells it to
//! go on through its stdin, so no step waits on a timer.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use service_runtime::{Service, Supervisor, lifecycle};

const ROLE: &str = "EARLY_SIGNAL_CHILD";

#[derive(Service)]
#[service(name = "feed")]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        println!("child: feed starting");
        Ok(())
    }
}

/// Waits for the parent's go-ahead on stdin (sent once its `kill` has returned).
fn wait_for_parent() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// What the child does, by role; then it exits with the report's code.
fn child(role: &str) -> ! {
    // The runtime `#[tokio::main]` makes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let code = runtime.block_on(async {
        let supervisor = Supervisor::new().add(Feed);
        println!("child: built");
        std::io::stdout().flush().unwrap();
        match role {
            "before_run" => {
                wait_for_parent();
                supervisor.run_until_signal().await
            }
            _ => {
                supervisor
                    .run_until(async {
                        println!("child: running");
                        std::io::stdout().flush().unwrap();
                        // SIGTERM comes while this waits: it ends the process.
                        tokio::task::spawn_blocking(wait_for_parent).await.unwrap();
                        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    })
                    .await
            }
        }
        .code()
    });
    println!("child: report code {code}");
    std::io::stdout().flush().unwrap();
    std::process::exit(i32::from(code))
}

/// Runs this test as the child in `role`, sends it SIGTERM once it printed `ready`, lets
/// it go on, and returns its exit status and output.
fn run_child(test: &str, role: &str, ready: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounds the test: a child stuck for a minute is killed, and the test fails.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut output = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the child ended before `{ready}`:\n{output}"
        );
        output.push_str(&line);
        // libtest may print the test's name on the same line first.
        if line.trim_end().ends_with(ready) {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Closed after one line: the child reads its go-ahead, or EOF if it is gone already.
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    output.push_str(&rest);
    (child.wait().unwrap(), output)
}

#[test]
fn a_sigterm_before_run_until_signal_is_held_for_the_run() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
    }
    let (status, output) = run_child(
        "a_sigterm_before_run_until_signal_is_held_for_the_run",
        "before_run",
        "child: built",
    );
    assert_eq!(
        status.signal(),
        None,
        "killed by the signal before the run:\n{output}"
    );
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("child: report code 0"), "{output}");
}

#[test]
fn a_sigterm_during_run_until_ends_the_process_as_by_default() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
    }
    let (status, output) = run_child(
        "a_sigterm_during_run_until_ends_the_process_as_by_default",
        "run_until",
        "child: running",
    );
    // 128 + SIGTERM, as a shell reports a process the signal ended.
    assert_eq!(status.code(), Some(143), "{status}\n{output}");
    assert!(!output.contains("child: report code"), "{output}");
}
