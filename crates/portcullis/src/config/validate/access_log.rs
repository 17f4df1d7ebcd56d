//! Semantic checks on `telemetry.access_log`: the output, the buffer and flush bounds, the
//! sampling ratio, and the query parameter and header names.

use std::collections::HashMap;
use std::time::Duration;

use super::{at_least, header_name, positive, Problems};
use crate::config::schema::AccessLogConfig;
use crate::config::Config;

/// Most lines the buffer may hold: each waiting line takes about half a KiB, so this bounds
/// the buffer at about half a GiB.
pub const MAX_BUFFER: usize = 1 << 20;

/// Longest flush interval: lines older than this in a quiet gateway would be no use to
/// anyone watching the log.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

const PATH: &str = "telemetry.access_log";

/// Checked whether or not the log is enabled: turning it on must not reveal old mistakes.
pub(super) fn access_log(config: &Config, p: &mut Problems) {
    let log = &config.telemetry.access_log;
    if log.output.trim().is_empty() {
        p.push(
            format!("{PATH}.output"),
            "must be stdout, stderr or a file path",
        );
    }
    at_least(p, format!("{PATH}.buffer"), log.buffer, 1);
    if log.buffer > MAX_BUFFER {
        p.push(
            format!("{PATH}.buffer"),
            format!("must be at most {MAX_BUFFER} lines, got {}", log.buffer),
        );
    }
    positive(p, format!("{PATH}.flush_interval"), log.flush_interval);
    if log.flush_interval > MAX_FLUSH_INTERVAL {
        p.push(
            format!("{PATH}.flush_interval"),
            format!(
                "must be at most {}, got {}",
                humantime::format_duration(MAX_FLUSH_INTERVAL),
                humantime::format_duration(log.flush_interval)
            ),
        );
    }
    if !(0.0..=1.0).contains(&log.sample_success) {
        p.push(
            format!("{PATH}.sample_success"),
            format!("must be between 0.0 and 1.0, got {}", log.sample_success),
        );
    }
    query_params(log, p);
    headers("headers", &log.headers, p);
    headers("redact_headers", &log.redact_headers, p);
}

fn query_params(log: &AccessLogConfig, p: &mut Problems) {
    let mut seen = HashMap::new();
    for (i, name) in log.redact_query_params.iter().enumerate() {
        let path = format!("{PATH}.redact_query_params[{i}]");
        if name.is_empty() {
            p.push(path, "must not be empty");
        } else if let Some(first) = seen.insert(name.to_ascii_lowercase(), i) {
            p.push(
                path,
                format!("\"{name}\" is listed twice (also redact_query_params[{first}])"),
            );
        }
    }
}

fn headers(field: &str, names: &[String], p: &mut Problems) {
    let mut seen = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let path = format!("{PATH}.{field}[{i}]");
        if let Err(message) = header_name(name) {
            p.push(path, message);
        } else if let Some(first) = seen.insert(name.to_ascii_lowercase(), i) {
            p.push(
                path,
                format!("\"{name}\" is listed twice (also {field}[{first}])"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_problems;

    const BASE: &str = "listeners: [{ name: main, address: \"127.0.0.1:8080\" }]\n";

    fn with(section: &str) -> String {
        format!("{BASE}telemetry:\n  access_log: {section}\n")
    }

    #[test]
    fn defaults_and_a_full_valid_section_have_no_problems() {
        assert_problems(BASE, &[]);
        assert_problems(
            &with(
                "{ enabled: true, output: /var/log/portcullis/access.log, buffer: 16, \
                 flush_interval: 1s, sample_success: 0.25, redact_query_params: [token, key], \
                 headers: [x-tenant, authorization], redact_headers: [authorization] }",
            ),
            &[],
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        assert_problems(
            &with(
                "{ output: \" \", buffer: 0, flush_interval: 0s, sample_success: 1.5, \
                 redact_query_params: [token, \"\", TOKEN], headers: [x-a, \"bad name\", X-A], \
                 redact_headers: [\"a:b\"] }",
            ),
            &[
                "telemetry.access_log.output: must be stdout, stderr or a file path",
                "telemetry.access_log.buffer: must be at least 1, got 0",
                "telemetry.access_log.flush_interval: must be greater than 0",
                "telemetry.access_log.sample_success: must be between 0.0 and 1.0, got 1.5",
                "telemetry.access_log.redact_query_params[1]: must not be empty",
                "telemetry.access_log.redact_query_params[2]: \"TOKEN\" is listed twice (also redact_query_params[0])",
                "telemetry.access_log.headers[1]: \"bad name\" is not a valid header name",
                "telemetry.access_log.headers[2]: \"X-A\" is listed twice (also headers[0])",
                "telemetry.access_log.redact_headers[0]: \"a:b\" is not a valid header name",
            ],
        );
    }

    #[test]
    fn upper_bounds() {
        assert_problems(
            &with("{ buffer: 2000000, flush_interval: 2m, sample_success: -0.1 }"),
            &[
                "telemetry.access_log.buffer: must be at most 1048576 lines, got 2000000",
                "telemetry.access_log.flush_interval: must be at most 1m, got 2m",
                "telemetry.access_log.sample_success: must be between 0.0 and 1.0, got -0.1",
            ],
        );
    }
}
