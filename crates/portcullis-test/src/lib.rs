//! Test harness for portcullis: in-process origins, clients, and an in-process gateway.
//!
//! Everything binds `127.0.0.1` on an ephemeral port (port 0), never a fixed port, so tests
//! run in parallel. Typical black-box test: start one or more [`origin::Origin`]s, template
//! their addresses into a YAML config, start a [`gateway::TestGateway`] from it, and drive it
//! with a [`client::TestClient`] or the [`raw`] TCP helpers.

// This is test-support code: a failed setup step should stop the test at once with a clear
// message, so panicking helpers (`unwrap`, `expect`, `panic!`) are the intended behavior.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod client;
pub mod gateway;
pub mod origin;
pub mod otlp;
pub mod raw;
pub mod tempdir;

use std::sync::Once;

pub use client::{ws_connect, TestClient, TestResponse};
pub use gateway::TestGateway;
pub use origin::{Behavior, Origin, RecordedRequest, ResponseSpec};
pub use tempdir::TempDir;

/// Boxed error used by the harness' bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs a tracing subscriber once per test binary: output goes through the test writer
/// (captured by libtest), the filter comes from `RUST_LOG`, and nothing is logged without it.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        // Another subscriber may already be installed by the test itself; keep that one.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(filter)
            .try_init();
    });
}

/// A YAML flow list of endpoints for `upstreams[].endpoints`: `{ address: "A" }, ...`
/// (without the brackets).
pub fn endpoints_yaml(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ")
}
