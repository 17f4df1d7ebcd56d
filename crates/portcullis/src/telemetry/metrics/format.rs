//! The two exposition formats of `GET /metrics`: which one a scraper asked for (`Accept`),
//! and the Prometheus 0.0.4 text derived from the OpenMetrics text that prometheus-client
//! writes.
//!
//! The derivation relies on what the encoder emits (one `# HELP`, then `# TYPE`, optionally
//! `# UNIT`, then the samples, per family; no exemplars, which the gateway does not record):
//! - a counter family `x` (`# TYPE x counter`, samples `x_total`) is announced as `x_total`,
//!   because 0.0.4 names the `TYPE` line after the sample; `x_created` samples are dropped;
//! - an info family `x` (samples `x_info`) becomes the gauge `x_info`;
//! - `unknown` becomes `untyped`; gauges and histograms are unchanged;
//! - `# UNIT` lines and the `# EOF` terminator are dropped.

/// A response format of `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a quality above 0 and at least that of any range
    /// that covers `text/plain`; otherwise (no header, or a text-only one) the 0.0.4 text.
    pub fn negotiate(accept: Option<&[u8]>) -> Format {
        let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
            return Format::PrometheusText;
        };
        let mut openmetrics = 0.0f32;
        let mut text = 0.0f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// The Prometheus 0.0.4 text for the OpenMetrics text `om` (see the module docs).
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The family being copied: its name and the suffix its 0.0.4 name gets.
    let mut family: &str = "";
    let mut kind = Kind::Other;
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name;
            let (suffix, ty) = match ty {
                "counter" => {
                    kind = Kind::Counter;
                    ("_total", "counter")
                }
                "info" => {
                    kind = Kind::Other;
                    ("_info", "gauge")
                }
                "unknown" => {
                    kind = Kind::Other;
                    ("", "untyped")
                }
                other => {
                    kind = Kind::Other;
                    ("", other)
                }
            };
            if let Some(text) = help.take() {
                let text = text
                    .strip_prefix(name)
                    .and_then(|t| t.strip_prefix(' '))
                    .unwrap_or("");
                push_line(&mut out, &["# HELP ", name, suffix, " ", text]);
            }
            push_line(&mut out, &["# TYPE ", name, suffix, " ", ty]);
            continue;
        }
        // `# UNIT`, `# EOF`: not in 0.0.4.
        if line.starts_with('#') {
            continue;
        }
        if kind == Kind::Counter && is_sample_of(line, family, "_created") {
            continue;
        }
        push_line(&mut out, &[line]);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Other,
}

/// Whether `line` is a sample named `family` + `suffix`.
fn is_sample_of(line: &str, family: &str, suffix: &str) -> bool {
    line.strip_prefix(family)
        .and_then(|rest| rest.strip_prefix(suffix))
        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
}

fn push_line(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let n = |h: &str| Format::negotiate(Some(h.as_bytes()));
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(n(""), Format::PrometheusText);
        assert_eq!(n("*/*"), Format::PrometheusText);
        assert_eq!(n("text/plain; version=0.0.4"), Format::PrometheusText);
        assert_eq!(n("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus 2.30 sends (prometheus/client_java#702), and a later form.
        assert_eq!(
            n("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"),
            Format::PrometheusText
        );
        assert_eq!(
            n("Application/OpenMetrics-Text; q=0"),
            Format::PrometheusText
        );
        assert_eq!(n("application/json"), Format::PrometheusText);
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "\
# HELP portcullis_requests Requests answered.
# TYPE portcullis_requests counter
portcullis_requests_total{route=\"a\"} 3
portcullis_requests_created{route=\"a\"} 1700000000.0
# HELP portcullis_listener_connections Open.
# TYPE portcullis_listener_connections gauge
portcullis_listener_connections{listener=\"main\"} 2
# HELP portcullis_build The build.
# TYPE portcullis_build info
portcullis_build_info{version=\"0.1.0\"} 1
# HELP d Latency.
# TYPE d histogram
# UNIT d seconds
d_sum 0.5
d_count 2
d_bucket{le=\"0.1\"} 1
d_bucket{le=\"+Inf\"} 2
# HELP odd Something.
# TYPE odd unknown
odd 1
# HELP empty_counter No samples.
# TYPE empty_counter counter
# EOF
";
        let expected = "\
# HELP portcullis_requests_total Requests answered.
# TYPE portcullis_requests_total counter
portcullis_requests_total{route=\"a\"} 3
# HELP portcullis_listener_connections Open.
# TYPE portcullis_listener_connections gauge
portcullis_listener_connections{listener=\"main\"} 2
# HELP portcullis_build_info The build.
# TYPE portcullis_build_info gauge
portcullis_build_info{version=\"0.1.0\"} 1
# HELP d Latency.
# TYPE d histogram
d_sum 0.5
d_count 2
d_bucket{le=\"0.1\"} 1
d_bucket{le=\"+Inf\"} 2
# HELP odd Something.
# TYPE odd untyped
odd 1
# HELP empty_counter_total No samples.
# TYPE empty_counter_total counter
";
        assert_eq!(to_prometheus_text(om), expected);
    }

    #[test]
    fn a_gauge_named_like_a_created_sample_is_kept() {
        let om = "# HELP x_created A gauge.\n# TYPE x_created gauge\nx_created 5\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_created A gauge.\n# TYPE x_created gauge\nx_created 5\n"
        );
    }
}
