//! The application: binds listeners and the admin listener, starts background tasks, and
//! shuts everything down gracefully.

use std::net::SocketAddr;

use crate::config::Config;

/// A running gateway (in this process).
#[derive(Debug)]
pub struct Gateway {}

impl Gateway {
    /// Compiles `config`, binds every listener and the admin listener, and starts serving on
    /// the current tokio runtime. Port 0 in an address binds a free port (see `listener_addr`).
    pub async fn start(_config: Config) -> anyhow::Result<Gateway> {
        anyhow::bail!("not yet")
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, _name: &str) -> Option<SocketAddr> {
        None
    }

    /// The bound address of the admin listener, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Stops accepting, lets in-flight requests finish up to the drain timeout, then closes.
    pub async fn shutdown(self) {}
}

/// Starts the gateway and serves until SIGTERM or SIGINT, then drains and returns.
/// Used by `portcullis run`; the caller builds the tokio runtime (see `runtime_builder`).
pub async fn run_until_signal(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

/// A tokio multi-thread runtime builder with `worker_threads` workers (0 = one per core).
pub fn runtime_builder(worker_threads: usize) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if worker_threads > 0 {
        b.worker_threads(worker_threads);
    }
    b
}
