//! Upstreams: named groups of endpoints, how one is picked (load balancing), which are in
//! rotation (health checks, DNS), and the connection pool that reaches them.

pub mod client;
pub mod dns;
pub mod health;
pub mod lb;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::schema::{HashKey, UpstreamConfig, UpstreamProtocol};

/// One resolved address of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `ip:port`, ready to put in an upstream request URI.
    pub authority: http::uri::Authority,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Self {
            addr,
            weight,
            authority,
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// An endpoint chosen for one attempt; counts as in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Arc<Endpoint>,
}

impl Picked {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { endpoint }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named group of endpoints with its balancer and pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub client: client::UpstreamClient,
    hash_key: Option<HashKey>,
}

impl Upstream {
    /// Builds an upstream; IP-literal endpoints are usable at once, host names after `resolve`.
    pub fn new(config: &UpstreamConfig) -> Arc<Self> {
        Arc::new(Self {
            name: config.name.as_str().into(),
            protocol: config.protocol,
            client: client::UpstreamClient::new(config.protocol, &config.pool),
            hash_key: config.load_balancer.hash_key.clone(),
        })
    }

    /// Where the consistent-hash key comes from, if the policy hashes.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// Picks an endpoint for one attempt; `hash` is the request's key hash for consistent
    /// hashing. `None` means no endpoint is in rotation (503 `no_healthy_upstream`).
    pub fn pick(&self, _hash: Option<u64>) -> Option<Picked> {
        None
    }

    /// Resolves host-name endpoints once (at start, before listeners open).
    pub async fn resolve(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Starts DNS refresh and active health checks until `stop` is cancelled.
    pub fn spawn_tasks(self: &Arc<Self>, _stop: CancellationToken) {}

    /// A snapshot of the current endpoints (admin, tests).
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        Vec::new()
    }
}
