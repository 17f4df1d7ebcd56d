//! The `telemetry.access_log` section: one JSON object per request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Off unless configured.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {}
