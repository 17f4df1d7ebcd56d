//! The `telemetry.tracing` section: OpenTelemetry spans exported over OTLP.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Off unless configured.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {}
