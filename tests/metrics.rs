//! `/metrics`: the supervisor's figures, in OpenMetrics when the scrape asks for it and
//! in the classic Prometheus text otherwise, each checked by an independent parser:
//! `promtool check metrics` (Debian's `prometheus` package) for the classic text, and
//! Python `prometheus_client`'s OpenMetrics parser. Without them the tests print a loud
//! notice and pass, except under `CI=true`, where they fail: `.ci/run` installs both.

use std::collections::BTreeMap;

use http_client::{PATIENCE, address_of, get_accepting, until};
use hyper::StatusCode;
use metric_tools::{python_parser, run_tool};
use service_runtime::{HealthDetail, Managed, Service, Supervisor, lifecycle};

mod http_client;
mod metric_tools;

#[derive(Service)]
struct Feed {
    degraded: bool,
}

#[lifecycle]
impl Feed {
    #[health(name = "exchange", optional)]
    async fn exchange(&self) -> HealthDetail {
        if self.degraded {
            HealthDetail::degraded("slow")
        } else {
            HealthDetail::healthy()
        }
    }
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the OpenMetrics text format strictly enough to reject malformed output:
/// every line is a `# HELP`, `# TYPE`, `# UNIT` or `# EOF` comment or a sample whose
/// metric was declared by a `# TYPE` line, with quoted, escaped label values and a
/// numeric value; the text ends with `# EOF`.
fn parse(text: &str) -> Vec<Sample> {
    let mut declared: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name").to_owned();
            assert!(valid_name(&name), "bad metric name in {line}");
            match kind {
                "TYPE" => {
                    let kind = parts.next().expect("a type").to_owned();
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&kind.as_str()),
                        "{line}"
                    );
                    declared.push((name, kind));
                }
                "HELP" | "UNIT" => assert!(parts.next().is_some(), "{line}"),
                other => panic!("unknown comment {other}: {line}"),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("no value: {line}"),
        };
        let family = declared
            .iter()
            .find(|(declared, kind)| {
                name == declared || (kind == "counter" && name == format!("{declared}_total"))
            })
            .unwrap_or_else(|| panic!("sample of an undeclared metric: {line}"));
        let mut labels = BTreeMap::new();
        let value = if let Some(body) = rest.strip_prefix('{') {
            let end = body.rfind('}').expect("closing brace");
            for pair in split_labels(&body[..end]) {
                let (key, value) = pair.split_once('=').expect("key=value");
                assert!(valid_name(key), "bad label name {key}");
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("unquoted label value in {line}"));
                labels.insert(key.to_owned(), value.to_owned());
            }
            body[end + 1..].trim()
        } else {
            rest.trim()
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let _ = family;
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn split_labels(body: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pairs.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        pairs.push(&body[start..]);
    }
    pairs
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .2
}

#[tokio::test]
async fn metrics_are_valid_openmetrics_with_every_figure() {
    let supervisor = Supervisor::new()
        .add(Managed::with_config(
            Feed { degraded: false },
            Feed::config().name("feed"),
        ))
        .add(Managed::with_config(
            Feed { degraded: true },
            Feed::config().name("quotes"),
        ))
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;

    let (reply, _) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let samples = parse(&reply.body);
    assert_eq!(value(&samples, "service_up", &[("service", "feed")]), 1.0);
    assert_eq!(
        value(
            &samples,
            "service_status",
            &[("service", "feed"), ("status", "running")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "service_status",
            &[("service", "feed"), ("status", "stopped")]
        ),
        0.0
    );
    assert_eq!(
        value(&samples, "service_restarts_total", &[("service", "quotes")]),
        0.0
    );
    assert!(
        value(
            &samples,
            "service_last_start_duration_seconds",
            &[("service", "feed")]
        ) >= 0.0
    );
    assert_eq!(
        value(
            &samples,
            "service_health",
            &[("service", "quotes"), ("status", "degraded")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "service_health",
            &[("service", "feed"), ("status", "healthy")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "service_dependency_health",
            &[
                ("service", "quotes"),
                ("dependency", "exchange"),
                ("status", "degraded")
            ]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "service_health_check_duration_seconds",
            &[("service", "feed")]
        ) >= 0.0
    );
    assert!(value(&samples, "service_uptime_seconds", &[("service", "feed")]) >= 0.0);

    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success());
}

/// What Prometheus servers send when scraping.
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A supervisor of two services serving probes, its health computed once per hour (so two
/// scrapes see the same figures); the caller shuts it down.
async fn serving() -> (
    service_runtime::SupervisorHandle,
    std::net::SocketAddr,
    tokio::task::JoinHandle<service_runtime::Report>,
) {
    let supervisor = Supervisor::new()
        .add(Managed::with_config(
            Feed { degraded: false },
            Feed::config().name("feed"),
        ))
        .add(Managed::with_config(
            Feed { degraded: true },
            Feed::config().name("quotes"),
        ))
        .serve_health("127.0.0.1:0")
        .health_cache_ttl(std::time::Duration::from_secs(3600));
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;
    (handle, address, run)
}

#[tokio::test]
async fn without_an_openmetrics_accept_the_classic_text_passes_promtool() {
    let (handle, address, run) = serving().await;
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (reply, headers) = get_accepting(address, "/metrics", accept).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        assert_eq!(headers["cache-control"], "no-store");
        let text = &reply.body;
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Every family has its HELP and TYPE under the name its samples carry.
        for family in ["service_restarts_total", "service_up", "service_health"] {
            assert!(
                text.contains(&format!("\n# HELP {family} ")),
                "{family}: {text}"
            );
            assert!(
                text.contains(&format!("\n# TYPE {family} ")),
                "{family}: {text}"
            );
        }
        assert!(text.contains("# TYPE service_restarts_total counter\n"));
        if let Some((ok, output)) = run_tool(
            "promtool",
            &["check", "metrics"],
            text,
            "`apt-get install prometheus`",
        ) {
            assert!(ok, "promtool check metrics failed:\n{output}\n{text}");
        }
    }
    // The check discriminates: the OpenMetrics text (all `/metrics` used to answer) fails it.
    let (openmetrics, _) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
    if let Some((ok, output)) = run_tool(
        "promtool",
        &["check", "metrics"],
        &openmetrics.body,
        "`apt-get install prometheus`",
    ) {
        assert!(
            !ok,
            "promtool accepted OpenMetrics as classic text:\n{output}"
        );
        assert!(output.contains("no help text"), "{output}");
    }
    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success());
}

#[tokio::test]
async fn openmetrics_when_asked_passes_the_python_parser_in_a_stable_order() {
    let (handle, address, run) = serving().await;
    let (first, headers) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(first.body.ends_with("# EOF\n"));
    // The same figures make the same text, each family's samples in the order of their
    // labels.
    for _ in 0..5 {
        let (again, _) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
        assert_eq!(again.body, first.body);
    }
    let statuses: Vec<&str> = first
        .body
        .lines()
        .filter(|line| line.starts_with("service_status{"))
        .collect();
    assert_eq!(statuses.len(), 10, "{}", first.body);
    assert!(statuses.is_sorted(), "{statuses:#?}");
    if let Some((ok, output)) = python_parser(&first.body) {
        assert!(
            ok,
            "the OpenMetrics parser failed:\n{output}\n{}",
            first.body
        );
        assert!(output.contains("service_restarts counter 2\n"), "{output}");
        assert!(output.contains("service_status gauge 10\n"), "{output}");
    }
    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success());
}

#[test]
fn the_parser_rejects_malformed_text() {
    for bad in [
        "service_up 1\n# EOF\n",                                        // undeclared
        "# TYPE service_up gauge\nservice_up{service=feed} 1\n# EOF\n", // unquoted
        "# TYPE service_up gauge\nservice_up one\n# EOF\n",             // not a number
        "# TYPE service_up gauge\nservice_up 1\n",                      // no EOF
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted: {bad}"
        );
    }
    assert_eq!(
        parse("# TYPE a counter\na_total{x=\"a,\\\"b\"} 3\n# EOF\n")[0].2,
        3.0
    );
}
