//! The README's demo, `examples/trading_desk.rs`, run as a user runs it: a child process
//! stopped by a real SIGTERM (every wait bounded, see `example_binary`).
#![cfg(unix)]

use std::net::SocketAddr;

use example_binary::Example;
use hyper::StatusCode;

mod example_binary;
mod http_client;
mod metric_tools;

/// What the console prints once every service is running.
const BANNER: &str = "] all services running";
/// What the console prints when the shutdown begins: why, and how many services it waits for.
const SHUTDOWN_HEADER: &str = "shutting down (SIGTERM), waiting for 5 services (budget 10s)";
/// Stop order the demo must follow: dependents before what they depend on.
const STOP_ORDER: [&str; 4] = ["order_gateway", "risk", "strategy", "market_feed"];
const SERVICES: [&str; 5] = [
    "market_feed",
    "audit_log",
    "strategy",
    "risk",
    "order_gateway",
];

/// Starts the demo, its probes on any free port (a fixed one could be taken on the test
/// machine), to run until signalled.
fn start_demo() -> Example {
    Example::start("trading_desk", |demo| {
        demo.env_remove("DEMO_RUN_FOR")
            .env_remove("RISK_LIMIT_FILE")
            .env("PROBES_ADDR", "127.0.0.1:0");
    })
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
        .position(|line| line.contains(SHUTDOWN_HEADER))
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
    let mut demo = start_demo();
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
    assert_stopped_in_reverse_order(demo.lines());
    assert!(
        output.contains("every service stopped cleanly; exit code 0"),
        "{output}"
    );
    // stdout is a pipe, not a terminal: no colours.
    assert!(!output.contains('\x1b'), "{output}");
}

#[test]
fn rust_log_filters_the_console() {
    // Warnings and errors only: a clean run that stops by itself prints nothing.
    let mut demo = Example::start("trading_desk", |demo| {
        demo.env("RUST_LOG", "warn")
            .env("DEMO_RUN_FOR", "1.5")
            .env_remove("RISK_LIMIT_FILE")
            .env("PROBES_ADDR", "127.0.0.1:0");
    });
    let status = demo.wait_exit();
    let stderr = demo.stderr();
    let output = demo.output();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    assert!(
        output.is_empty() && stderr.is_empty(),
        "stdout:\n{output}\nstderr:\n{stderr}"
    );
}

#[test]
fn sigterm_after_a_restart_still_stops_everything_in_order() {
    let mut demo = start_demo();
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

    assert_stopped_in_reverse_order(demo.lines());
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
    let mut demo = Example::start("trading_desk", |demo| {
        demo.env_remove("DEMO_RUN_FOR")
            .env("RISK_LIMIT_FILE", &limit_file)
            .env("PROBES_ADDR", "127.0.0.1:0");
    });
    demo.wait_for("the banner", |line| line.contains(BANNER));
    let started = demo.lines().len();

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
    let changes: Vec<(&str, &str, &str)> = demo.lines()[started..]
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
    assert_stopped_in_reverse_order(demo.lines());
}

#[test]
fn the_demo_s_metrics_pass_promtool_and_the_probes_answer() {
    let mut demo = start_demo();
    let serving = demo.wait_for("the probe endpoint", |line| {
        line.contains("] probes on http://")
            && line.ends_with(" (/livez /readyz /startupz /health /metrics)")
    });
    let address: SocketAddr = serving
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in {serving}"));
    demo.wait_for("the banner", |line| line.contains(BANNER));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ready = http_client::get(address, "/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        let (metrics, _) = http_client::get_accepting(address, "/metrics", None).await;
        assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.body);
        let text = &metrics.body;
        for service in SERVICES {
            assert!(
                text.contains(&format!("service=\"{service}\"")),
                "{service}:\n{text}"
            );
        }
        if let Some((ok, output)) = metric_tools::promtool(text) {
            assert!(ok, "promtool check metrics failed:\n{output}\n{text}");
        }
    });

    demo.signal("TERM");
    let status = demo.wait_exit();
    let output = demo.output();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}"
    );
}
