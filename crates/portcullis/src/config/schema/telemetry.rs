//! The `telemetry` section: metrics, tracing and access logs. Each signal has its own
//! struct (tracing and access logs in their own files).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{defaults, AccessLogConfig, TracingConfig};

/// The three signals; each can be turned off on its own.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Prometheus / OpenMetrics at `GET /metrics` on the admin listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry traces exported over OTLP.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// One JSON object per request.
    #[serde(default)]
    pub access_log: AccessLogConfig,
}

/// Metrics are on by default: counting costs little and an operator expects them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}
