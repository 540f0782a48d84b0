//! The two text formats `/metrics` answers in (feature `metrics`): which one a scrape
//! asks for ([`Format::negotiate`], as Prometheus servers negotiate it), the stable order
//! of the samples within each family ([`stabilise`]), and the classic Prometheus text
//! format made from the OpenMetrics text `prometheus-client` writes ([`to_classic`]).
//!
//! `prometheus-client` encodes OpenMetrics only, and a family's samples in the order of
//! its hash map. The classic format differs from OpenMetrics in a few lines only (no
//! `# EOF` or `# UNIT`; a counter's family is named with its `_total`; no `_created`
//! samples, no exemplars, timestamps in milliseconds), so it is made line by line from
//! the OpenMetrics text, whatever the registry holds.

use std::fmt::Write as _;

/// A text format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0.0.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Classic,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it accepts
    /// `application/openmetrics-text` at least as much as the classic text (`text/plain`,
    /// or `*/*`), the classic text otherwise and when there is no header.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut classic) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let quality = parts
                .find_map(|param| param.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let best = if media.eq_ignore_ascii_case("application/openmetrics-text") {
                &mut openmetrics
            } else if ["text/plain", "text/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                &mut classic
            } else {
                continue;
            };
            *best = best.max(quality);
        }
        if openmetrics > 0.0 && openmetrics >= classic {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The `Content-Type` of a body in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A sample line in its parts: the metric name, the text inside the braces (empty
/// without them), and what follows (the value, a timestamp, an exemplar).
fn split_sample(line: &str) -> Option<(&str, &str, &str)> {
    let name_end = line.find(['{', ' '])?;
    let (name, rest) = line.split_at(name_end);
    match rest.strip_prefix('{') {
        Some(body) => {
            let close = outside_quotes(body).find(|&(_, byte)| byte == b'}')?.0;
            Some((name, &body[..close], &body[close + 1..]))
        }
        None => Some((name, "", rest)),
    }
}

/// The bytes of `text` that are outside quoted label values, with their indices.
fn outside_quotes(text: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    text.bytes().enumerate().filter(move |&(_, byte)| {
        if escaped {
            escaped = false;
            return false;
        }
        match byte {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ => return !quoted,
        }
        false
    })
}

/// The series a sample belongs to: its labels without `le` and `quantile`, which tell
/// apart the lines of one histogram or summary.
fn series_key(labels: &str) -> String {
    let mut key = String::with_capacity(labels.len());
    let mut start = 0;
    let ends = outside_quotes(labels)
        .filter(|&(_, byte)| byte == b',')
        .map(|(i, _)| i)
        .chain([labels.len()]);
    for end in ends {
        let pair = labels[start..end].trim();
        start = end + 1;
        if pair.is_empty() || pair.starts_with("le=") || pair.starts_with("quantile=") {
            continue;
        }
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(pair);
    }
    key
}

/// The text with each family's series in the order of their labels, the lines of one
/// series (a counter's `_total` and `_created`, a histogram's buckets) kept together
/// and in order, so two scrapes of the same figures are the same text.
pub(crate) fn stabilise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The current family's series: (key, its lines).
    let mut series: Vec<(String, Vec<&str>)> = Vec::new();
    let flush = |series: &mut Vec<(String, Vec<&str>)>, out: &mut String| {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, lines) in series.drain(..) {
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
    };
    for line in text.lines() {
        let sample = (!line.starts_with('#'))
            .then(|| split_sample(line))
            .flatten();
        let Some((_, labels, _)) = sample else {
            flush(&mut series, &mut out);
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let key = series_key(labels);
        match series.last_mut() {
            Some((last, lines)) if *last == key => lines.push(line),
            _ => series.push((key, vec![line])),
        }
    }
    flush(&mut series, &mut out);
    out
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics text: the same
/// families, each with its `# HELP` and `# TYPE` under the name its samples carry.
pub(crate) fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The `# HELP` line waiting for its family's `# TYPE`, which may rename it.
    let mut help: Option<(&str, &str)> = None;
    // The current family's name and OpenMetrics type.
    let mut family: (&str, &str) = ("", "");
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = (name, kind);
            let (suffix, classic_kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                "stateset" => ("", "gauge"),
                _ => ("", "untyped"),
            };
            let pending = help.take().filter(|(help_name, _)| *help_name == name);
            flush_help(&mut out, pending, Some(suffix));
            let _ = writeln!(out, "# TYPE {name}{suffix} {classic_kind}");
            continue;
        }
        flush_help(&mut out, help.take(), None);
        if line.starts_with('#') {
            continue; // `# EOF`, `# UNIT`: not in the classic format
        }
        let Some((name, labels, rest)) = split_sample(line) else {
            continue;
        };
        let (kind, suffix) = (family.1, name.strip_prefix(family.0).unwrap_or(""));
        if suffix == "_created" && matches!(kind, "counter" | "histogram" | "summary") {
            continue;
        }
        // The value and a timestamp; an exemplar (after `#`) is dropped.
        let rest = rest.split(" # ").next().unwrap_or("");
        let mut fields = rest.split_whitespace();
        let value = fields.next().unwrap_or("");
        out.push_str(name);
        if !labels.is_empty() {
            let _ = write!(out, "{{{labels}}}");
        }
        let _ = write!(out, " {value}");
        if let Some(seconds) = fields.next().and_then(|t| t.parse::<f64>().ok()) {
            // Milliseconds in the classic format, seconds in OpenMetrics.
            let _ = write!(out, " {}", (seconds * 1000.0).round() as i64);
        }
        out.push('\n');
    }
    flush_help(&mut out, help.take(), None);
    out
}

/// Writes a waiting `# HELP` line, its name with `suffix` appended.
fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: Option<&str>) {
    if let Some((name, text)) = help {
        let _ = writeln!(out, "# HELP {name}{} {text}", suffix.unwrap_or(""));
    }
}

#[cfg(test)]
mod tests {
    use super::{Format, series_key, stabilise, to_classic};

    #[test]
    fn the_format_follows_the_accept_header_as_prometheus_servers_send_it() {
        // What Prometheus 2.x and 3.x send, then the classic-only scrapers, then none.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; version=1.0.0")),
            Format::OpenMetrics
        );
        for classic in [
            "text/plain;version=0.0.4",
            "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5",
            "application/openmetrics-text;q=0",
            "*/*",
            "application/json",
            "",
        ] {
            assert_eq!(
                Format::negotiate(Some(classic)),
                Format::Classic,
                "{classic}"
            );
        }
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(
            Format::Classic.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }

    #[test]
    fn series_are_sorted_within_their_family_and_kept_whole() {
        let text = "# HELP a A.\n# TYPE a gauge\n\
            a{s=\"q\"} 1\na{s=\"b,}\\\"\"} 2\n\
            # HELP h H.\n# TYPE h histogram\n\
            h_bucket{s=\"z\",le=\"1\"} 1\nh_bucket{s=\"z\",le=\"+Inf\"} 2\nh_sum{s=\"z\"} 3\nh_count{s=\"z\"} 2\n\
            h_bucket{s=\"a\",le=\"1\"} 0\nh_bucket{s=\"a\",le=\"+Inf\"} 1\nh_sum{s=\"a\"} 1\nh_count{s=\"a\"} 1\n\
            # EOF\n";
        assert_eq!(
            stabilise(text),
            "# HELP a A.\n# TYPE a gauge\n\
            a{s=\"b,}\\\"\"} 2\na{s=\"q\"} 1\n\
            # HELP h H.\n# TYPE h histogram\n\
            h_bucket{s=\"a\",le=\"1\"} 0\nh_bucket{s=\"a\",le=\"+Inf\"} 1\nh_sum{s=\"a\"} 1\nh_count{s=\"a\"} 1\n\
            h_bucket{s=\"z\",le=\"1\"} 1\nh_bucket{s=\"z\",le=\"+Inf\"} 2\nh_sum{s=\"z\"} 3\nh_count{s=\"z\"} 2\n\
            # EOF\n"
        );
        assert_eq!(
            series_key("a=\"1\",le=\"0.5\",b=\"x,y\""),
            "a=\"1\",b=\"x,y\""
        );
    }

    #[test]
    fn the_classic_text_names_each_family_as_its_samples() {
        let openmetrics = "# HELP service_restarts Restarts.\n# TYPE service_restarts counter\n\
            service_restarts_total{service=\"feed\"} 3\nservice_restarts_created{service=\"feed\"} 1.5\n\
            # HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n\
            # HELP up Up.\n# TYPE up gauge\n# UNIT up seconds\nup 1 2.5\n\
            # HELP odd Odd.\n# TYPE odd unknown\nodd 4 # {trace=\"x\"} 1\n\
            # EOF\n";
        assert_eq!(
            to_classic(openmetrics),
            "# HELP service_restarts_total Restarts.\n# TYPE service_restarts_total counter\n\
            service_restarts_total{service=\"feed\"} 3\n\
            # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n\
            # HELP up Up.\n# TYPE up gauge\nup 1 2500\n\
            # HELP odd Odd.\n# TYPE odd untyped\nodd 4\n"
        );
    }
}
