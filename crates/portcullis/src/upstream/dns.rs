//! DNS: resolving endpoint host names and resolving them again every `dns_refresh`.
//!
//! An endpoint address is parsed once into a [`Target`]: an IP literal is usable at once, a
//! host name is looked up by [`lookup`]. [`merge`] turns the wanted `(addr, weight)` list into
//! the endpoint list, reusing the `Arc<Endpoint>` of every address that is still there so its
//! health and in-flight count survive a refresh.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Endpoint, Upstream};

/// A single lookup gives up after this; the previous addresses are kept.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an endpoint is: an IP literal, or a host name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Why an endpoint address is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("missing port (expected host:port)")]
    MissingPort,
    #[error("invalid port {0:?} (expected 1-65535)")]
    InvalidPort(String),
    #[error("invalid host {0:?} (IPv6 needs brackets: [::1]:80)")]
    InvalidHost(String),
}

/// Why a host name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("lookup failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("lookup timed out after {0:?}")]
    Timeout(Duration),
    #[error("no addresses")]
    Empty,
}

/// One configured endpoint, parsed.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// As written in the config, for logs.
    pub address: String,
    pub target: Target,
    pub weight: u32,
}

/// Parses `host:port` or `ip:port` (`[v6]:port`). Never panics.
pub fn parse_address(address: &str) -> Result<Target, AddressError> {
    let address = address.trim();
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(AddressError::InvalidPort("0".to_string()));
        }
        return Ok(Target::Addr(addr));
    }
    let (host, port) = address.rsplit_once(':').ok_or(AddressError::MissingPort)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| AddressError::InvalidPort(port.to_string()))?;
    // An IP that did not parse as a socket address together with its port is an unbracketed
    // IPv6 address or a malformed literal.
    if host.parse::<IpAddr>().is_ok() || !is_host_name(host) {
        return Err(AddressError::InvalidHost(host.to_string()));
    }
    Ok(Target::Host {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, at most 253 bytes.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Resolves `host:port` to its addresses (deduplicated, in the resolver's order).
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))??;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(LookupError::Empty);
    }
    Ok(addrs)
}

/// Builds the endpoint list for `wanted`, sorted by address. An address already in `current`
/// keeps its `Arc` (and so its health and in-flight state); a repeated address keeps the
/// first weight given for it. New endpoints are built by `make`.
pub fn merge(
    current: &[Arc<Endpoint>],
    wanted: &[(SocketAddr, u32)],
    make: impl Fn(SocketAddr, u32) -> Endpoint,
) -> Vec<Arc<Endpoint>> {
    let existing: HashMap<SocketAddr, &Arc<Endpoint>> =
        current.iter().map(|e| (e.addr, e)).collect();
    let mut out: Vec<Arc<Endpoint>> = Vec::with_capacity(wanted.len());
    for &(addr, weight) in wanted {
        if out.iter().any(|e| e.addr == addr) {
            continue;
        }
        let endpoint = match existing.get(&addr) {
            Some(e) if e.weight == weight => Arc::clone(e),
            _ => Arc::new(make(addr, weight)),
        };
        out.push(endpoint);
    }
    out.sort_by_key(|e| e.addr);
    out
}

/// Resolves the upstream's host names again every `every` until `stop` is cancelled or the
/// upstream is dropped. Failures are logged by `Upstream::resolve` and keep the old set.
pub(super) async fn refresh_loop(
    upstream: Weak<Upstream>,
    every: Duration,
    stop: CancellationToken,
) {
    let every = every.max(Duration::from_millis(1));
    // If the first resolution failed (or never ran), try again at once rather than a full
    // period later.
    let mut immediately = upstream.upgrade().is_some_and(|u| u.has_unresolved_hosts());
    loop {
        if !immediately {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
        immediately = false;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = upstream.resolve() => {
                if let Err(err) = result {
                    tracing::debug!(upstream = %upstream.name, error = %err, "dns refresh incomplete");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_literals_and_host_names() {
        assert_eq!(
            parse_address("10.0.0.1:8080"),
            Ok(Target::Addr("10.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            parse_address("[::1]:80"),
            Ok(Target::Addr("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            parse_address("Api.Internal:443"),
            Ok(Target::Host {
                host: "api.internal".to_string(),
                port: 443
            })
        );
    }

    #[test]
    fn rejects_invalid_addresses_without_panicking() {
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            "host:http",
            ":80",
            "::1:80",
            "[::1:80",
            "bad host:80",
            "a/b:80",
            "-x.example:80",
            "1.2.3.4:0",
            "a..b:80",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[tokio::test]
    async fn refresh_starts_at_once_when_a_host_never_resolved() {
        let config: crate::config::schema::UpstreamConfig = serde_yaml_ng::from_str(
            "name: a
dns_refresh: 1h
endpoints: [{address: \"localhost:8080\"}]",
        )
        .unwrap();
        let upstream = Upstream::new(&config);
        assert!(upstream.has_unresolved_hosts());
        let stop = CancellationToken::new();
        upstream.spawn_tasks(stop.clone());
        let resolved = tokio::time::timeout(Duration::from_secs(10), async {
            while upstream.endpoints().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(resolved.is_ok(), "no immediate first resolution");
        assert!(!upstream.has_unresolved_hosts());
        stop.cancel();
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_only() {
        let addrs = lookup("localhost", 8080).await.unwrap();
        assert!(!addrs.is_empty());
        for addr in addrs {
            assert!(addr.ip().is_loopback(), "{addr} is not loopback");
            assert_eq!(addr.port(), 8080);
        }
    }

    #[test]
    fn merge_keeps_identity_of_unchanged_addresses() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let c: SocketAddr = "127.0.0.3:1".parse().unwrap();
        let first = merge(&[], &[(b, 1), (a, 1)], Endpoint::new);
        assert_eq!(first.iter().map(|e| e.addr).collect::<Vec<_>>(), vec![a, b]);
        first[1].set_healthy(false);

        let second = merge(&first, &[(c, 1), (b, 1), (b, 5)], Endpoint::new);
        assert_eq!(second.len(), 2);
        assert!(Arc::ptr_eq(&second[0], &first[1]), "b keeps its Arc");
        assert!(!second[0].is_healthy(), "and its health");
        assert_eq!(second[1].addr, c);

        let gone = merge(&second, &[], Endpoint::new);
        assert!(gone.is_empty());
    }
}
