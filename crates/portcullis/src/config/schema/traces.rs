//! The `telemetry.tracing` section: OpenTelemetry spans exported over OTLP (HTTP/protobuf).
//! `docs/tracing.md` describes every field, the spans and their attributes.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tracing is off unless `otlp` is set: without an exporter no span is started and no trace
/// context is read or written.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP collector spans are sent to. Tracing is on when this is set.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
    /// Share of new traces (requests without a sampled `traceparent`) that are recorded,
    /// 0.0 to 1.0. Requests whose `traceparent` carries a sampling decision follow it
    /// (parent-based sampling). Default 1.0, the OpenTelemetry SDK default; lower it for
    /// high traffic (e.g. 0.01).
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// More resource attributes (e.g. `deployment.environment.name: prod`).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// How spans are queued and batched before export.
    #[serde(default)]
    pub batch: BatchConfig,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp: None,
            sampling_ratio: default_sampling_ratio(),
            service_name: default_service_name(),
            resource: BTreeMap::new(),
            batch: BatchConfig::default(),
        }
    }
}

/// OTLP over HTTP with protobuf payloads (`POST <endpoint>/v1/traces`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's base URL, e.g. `http://otel-collector:4318`; `/v1/traces` is
    /// appended. Only `http` for now.
    pub endpoint: String,
    /// Bound on one export request (connect, send, response).
    #[serde(default = "default_export_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Headers sent with every export request (e.g. an API key). Treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The span queue between the request path and the exporter.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Finished spans waiting for export; when full, new spans are dropped and counted.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Most spans in one export request.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Longest a finished span waits before its batch is sent.
    #[serde(default = "default_schedule_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub schedule_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_queue_size: default_max_queue_size(),
            max_batch_size: default_max_batch_size(),
            schedule_delay: default_schedule_delay(),
        }
    }
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "portcullis".to_string()
}

// Queue, batch and delay defaults are the OpenTelemetry SDK's batch span processor defaults
// (OTEL_BSP_*); the export timeout is the OTLP exporter's default (OTEL_EXPORTER_OTLP_TIMEOUT).
fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_queue_size() -> usize {
    2048
}

fn default_max_batch_size() -> usize {
    512
}

fn default_schedule_delay() -> Duration {
    Duration::from_secs(5)
}
