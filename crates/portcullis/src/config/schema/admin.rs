//! The `admin` section: where the admin listener binds and who may use it
//! (`docs/admin-api.md#security`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::defaults;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; loopback by default. Set `enabled: false` to turn it off.
    #[serde(default = "defaults::admin_address")]
    pub address: String,
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Where the bearer token of the admin API is read from at start (never the token
    /// itself): `{ env: NAME }` or `{ file: PATH }`. Required when `address` is not loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<SecretSource>,
    /// Whether the read endpoints (`GET /api/...`) need the token too; default: yes when a
    /// token is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_reads: Option<bool>,
    /// Whether `/healthz`, `/readyz` and `/metrics` need the token too (default: no, so
    /// probes and scrapers work without it).
    #[serde(default)]
    pub auth_health_and_metrics: bool,
    /// Host names (besides the address the client connected to, and `localhost` on
    /// loopback) accepted in the `Host` header, e.g. `gw-admin.internal`.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: defaults::admin_address(),
            enabled: true,
            auth_token: None,
            auth_reads: None,
            auth_health_and_metrics: false,
            hosts: Vec::new(),
        }
    }
}

/// Where a secret is read from; the config file names the source, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file, without surrounding whitespace (a trailing newline).
    File(PathBuf),
}
