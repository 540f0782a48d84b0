//! Independent checkers of `/metrics` texts for the integration tests: `promtool check
//! metrics` (Debian's `prometheus` package) for the classic text format, and Python
//! `prometheus_client`'s parser for OpenMetrics. Without them a check prints a loud
//! notice and passes, except under `CI=true`, where it fails: `.ci/run` installs both.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Feeds `input` to `program` on stdin; its status, stdout and stderr. `None` when the
/// program is missing, outside CI: inside CI a missing tool fails the test.
pub fn run_tool(
    program: &str,
    args: &[&str],
    input: &str,
    install: &str,
) -> Option<(bool, String)> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "{program} is not available ({error}) and CI is set: install it ({install}; \
                 `.ci/run` does); this test never skips in CI"
            );
            let bar = "=".repeat(78);
            eprintln!(
                "\n{bar}\nSKIPPED a check of /metrics: {program} is not on the PATH ({error}).\n\
                 Install it ({install}) to validate /metrics with an independent parser.\n{bar}\n"
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), text))
}

/// Whether `python3` can import `prometheus_client`; under CI a failure to is an error.
pub fn python_parser(openmetrics: &str) -> Option<(bool, String)> {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   print(family.name, family.type, len(family.samples))\n";
    let install = "`pip install prometheus_client`";
    let probe = run_tool("python3", &["-c", "import prometheus_client"], "", install)?;
    if !probe.0 {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "python3 cannot import prometheus_client under CI: {}",
            probe.1
        );
        eprintln!("SKIPPED the OpenMetrics parser check: {}", probe.1);
        return None;
    }
    run_tool("python3", &["-c", SCRIPT], openmetrics, install)
}

/// `promtool check metrics` of a classic text: `None` when promtool is missing outside CI.
pub fn promtool(text: &str) -> Option<(bool, String)> {
    run_tool(
        "promtool",
        &["check", "metrics"],
        text,
        "`apt-get install prometheus`",
    )
}
