//! An in-process gateway for black-box tests: YAML in, listeners on ephemeral ports out.

use std::collections::HashMap;
use std::net::SocketAddr;

use portcullis::app::Gateway;
use portcullis::config::Config;

use crate::origin::slash;

/// A gateway started from YAML in this process. Listener addresses in the YAML should be
/// `127.0.0.1:0`; `addr`/`url` give the ports actually bound.
pub struct TestGateway {
    gateway: Option<Gateway>,
}

impl TestGateway {
    /// Parses and validates `yaml` (no `${VAR}` is defined), then starts the gateway.
    /// Panics with every config error if the YAML is invalid, or if the gateway fails to start.
    pub async fn start(yaml: &str) -> TestGateway {
        Self::start_with_vars(yaml, HashMap::new()).await
    }

    /// Like `start`, with `${VAR}` substituted from `vars` (never the process environment).
    pub async fn start_with_vars(yaml: &str, vars: HashMap<String, String>) -> TestGateway {
        let config = parse_config(yaml, &vars);
        let gateway = Gateway::start(config)
            .await
            .unwrap_or_else(|e| panic!("gateway failed to start: {e:#}\n--- config ---\n{yaml}"));
        TestGateway {
            gateway: Some(gateway),
        }
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Gateway {
        self.gateway
            .as_ref()
            .expect("TestGateway: used after shutdown")
    }

    /// The bound address of listener `name`; panics if there is no such listener.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.gateway()
            .listener_addr(name)
            .unwrap_or_else(|| panic!("gateway has no listener named {name:?}"))
    }

    /// `http://127.0.0.1:<port><path>` for listener `name`.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(name), slash(path))
    }

    /// `ws://127.0.0.1:<port><path>` for listener `name`.
    pub fn ws_url(&self, name: &str, path: &str) -> String {
        format!("ws://{}{}", self.addr(name), slash(path))
    }

    /// The admin listener's address; panics if admin is disabled.
    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway()
            .admin_addr()
            .expect("gateway admin listener is not enabled")
    }

    /// `http://127.0.0.1:<admin port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr(), slash(path))
    }

    /// Graceful shutdown: stops accepting and drains per `server.drain_timeout`.
    pub async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}

impl std::fmt::Debug for TestGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGateway")
            .field("running", &self.gateway.is_some())
            .finish()
    }
}

/// Parses and validates `yaml` with `${VAR}` taken from `vars`; panics listing every error.
pub fn parse_config(yaml: &str, vars: &HashMap<String, String>) -> Config {
    let lookup = |name: &str| vars.get(name).cloned();
    portcullis::config::from_str_with(yaml, &lookup)
        .unwrap_or_else(|errors| panic!("invalid test config:\n{errors}\n--- config ---\n{yaml}"))
}
