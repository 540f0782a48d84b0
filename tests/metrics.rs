//! `/metrics`: valid OpenMetrics text with the supervisor's figures.

use std::collections::BTreeMap;

use http_client::{PATIENCE, address_of, get, until};
use hyper::StatusCode;
use service_runtime::{HealthDetail, Managed, Service, Supervisor, lifecycle};

mod http_client;

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

    let reply = get(address, "/metrics").await;
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
