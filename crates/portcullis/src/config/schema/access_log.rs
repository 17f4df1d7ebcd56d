//! The `telemetry.access_log` section: one JSON object per request (`docs/access-log.md`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Off unless `enabled: true`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `stdout`, `stderr`, or the path of a file (opened for appending, created if missing,
    /// never waited for: a named pipe without a reader fails the start).
    #[serde(default = "access_log_defaults::output")]
    pub output: String,
    /// Lines waiting for the writer, at most; a line that finds the buffer full is dropped
    /// and counted, so the request path never waits for the writer.
    #[serde(default = "access_log_defaults::buffer")]
    pub buffer: usize,
    /// Buffered lines are written out at least this often (and on shutdown).
    #[serde(
        default = "access_log_defaults::flush_interval",
        with = "humantime_serde"
    )]
    #[schemars(with = "String")]
    pub flush_interval: Duration,
    /// Share of successful requests logged, 0.0 to 1.0 (see `docs/access-log.md` for what
    /// counts as successful); every other request is always logged.
    #[serde(default = "access_log_defaults::sample_success")]
    pub sample_success: f64,
    /// Query parameters whose values are replaced by `REDACTED` (names match ignoring ASCII
    /// case, after percent-decoding).
    #[serde(default)]
    pub redact_query_params: Vec<String>,
    /// Request headers to log, in the `headers` object of each line.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Headers among `headers` whose values are replaced by `REDACTED`.
    #[serde(default = "access_log_defaults::redact_headers")]
    pub redact_headers: Vec<String>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            output: access_log_defaults::output(),
            buffer: access_log_defaults::buffer(),
            flush_interval: access_log_defaults::flush_interval(),
            sample_success: access_log_defaults::sample_success(),
            redact_query_params: Vec::new(),
            headers: Vec::new(),
            redact_headers: access_log_defaults::redact_headers(),
        }
    }
}

/// Default values of the section, one function each so serde, docs and code agree.
pub mod access_log_defaults {
    use std::time::Duration;

    pub fn output() -> String {
        "stdout".to_string()
    }
    pub fn buffer() -> usize {
        8192
    }
    pub fn flush_interval() -> Duration {
        Duration::from_millis(100)
    }
    pub fn sample_success() -> f64 {
        1.0
    }
    pub fn redact_headers() -> Vec<String> {
        [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
        ]
        .map(String::from)
        .to_vec()
    }
}
