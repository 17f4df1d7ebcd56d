//! Semantic checks on a parsed config; collects every problem, each with its path.
//!
//! Parsing (`config::parse`) guarantees types and known fields; this module checks what serde
//! cannot: names are unique and references resolve, addresses parse and do not collide,
//! regexes compile, header names/values and methods are valid HTTP, numbers are in range.
//! Routes are checked in `validate::route`, traffic protection (breakers, retries, budgets,
//! outlier detection, load shedding, deadlines) in `validate::protection`.
//!
//! Durations: every duration must be greater than zero except `server.drain_timeout`, where
//! 0 means "close connections at once on shutdown" (documented in `docs/config.md`).

mod access_log;
mod protection;
#[cfg(test)]
mod protection_tests;
mod rate_limit;
mod route;
#[cfg(test)]
mod tests;
mod traces;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::schema::{
    AdminConfig, HashKey, HealthCheckConfig, LbPolicy, ListenerLimits, SecretSource, StatusRange,
    UpstreamConfig,
};
use super::{Config, ConfigError};

pub use protection::{adaptive_config, breaker_config};
pub use rate_limit::MAX_KEYS;
pub use traces::MAX_QUEUE_SIZE;

/// Returns every problem found; empty means valid.
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut p = Problems::default();
    let listener_addrs = listeners(config, &mut p);
    admin(config, &listener_addrs, &mut p);
    upstreams(config, &mut p);
    route::routes(config, &mut p);
    rate_limit::rate_limits(config, &mut p);
    traces::tracing(config, &mut p);
    access_log::access_log(config, &mut p);
    p.0
}

/// The problems found so far, in the order of the file.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Records `path: message` when `check` fails.
    fn check(&mut self, path: impl Into<String>, check: Result<(), String>) {
        if let Err(message) = check {
            self.push(path, message);
        }
    }
}

/// Names must be non-empty and unique within a section: `routes[3].name: duplicate route
/// name "api" (also routes[1])`.
fn unique_names<'a>(
    section: &str,
    kind: &str,
    names: impl Iterator<Item = &'a str>,
    p: &mut Problems,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        let path = format!("{section}[{i}].name");
        if name.trim().is_empty() {
            p.push(path, "must not be empty");
        } else if let Some(first) = seen.get(name) {
            p.push(
                path,
                format!("duplicate {kind} name \"{name}\" (also {section}[{first}])"),
            );
        } else {
            seen.insert(name, i);
        }
    }
}

/// Checks listeners; returns the parsed addresses with their index for the admin check.
fn listeners(config: &Config, p: &mut Problems) -> Vec<(usize, SocketAddr)> {
    if config.listeners.is_empty() {
        p.push("listeners", "at least one listener is required");
    }
    unique_names(
        "listeners",
        "listener",
        config.listeners.iter().map(|l| l.name.as_str()),
        p,
    );
    let mut addrs: Vec<(usize, SocketAddr)> = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        match socket_addr(&l.address) {
            Ok(addr) => {
                if let Some((j, other)) = addrs.iter().find(|(_, other)| overlaps(addr, *other)) {
                    p.push(
                        format!("{path}.address"),
                        collision(addr, *other, &format!("listeners[{j}]")),
                    );
                }
                addrs.push((i, addr));
            }
            Err(message) => p.push(format!("{path}.address"), message),
        }
        limits(&format!("{path}.limits"), &l.limits, p);
    }
    addrs
}

fn limits(path: &str, l: &ListenerLimits, p: &mut Problems) {
    at_least(p, format!("{path}.max_connections"), l.max_connections, 1);
    at_least(p, format!("{path}.max_headers"), l.max_headers, 1);
    if l.max_header_bytes.as_u64() < 1024 {
        p.push(
            format!("{path}.max_header_bytes"),
            format!(
                "must be at least 1KiB (1024 bytes), got {} bytes",
                l.max_header_bytes.as_u64()
            ),
        );
    }
    at_least(
        p,
        format!("{path}.h2_max_concurrent_streams"),
        l.h2_max_concurrent_streams as usize,
        1,
    );
    positive(
        p,
        format!("{path}.header_read_timeout"),
        l.header_read_timeout,
    );
    positive(p, format!("{path}.keepalive_timeout"), l.keepalive_timeout);
    for (field, value) in [
        ("max_request_line_bytes", l.max_request_line_bytes),
        ("max_header_line_bytes", l.max_header_line_bytes),
    ] {
        let bytes = value.as_u64();
        if !(256..=1024 * 1024).contains(&bytes) {
            p.push(
                format!("{path}.{field}"),
                format!("must be from 256B to 1MiB, got {bytes} bytes"),
            );
        }
    }
    positive(
        p,
        format!("{path}.first_request_timeout"),
        l.first_request_timeout,
    );
}

fn admin(config: &Config, listener_addrs: &[(usize, SocketAddr)], p: &mut Problems) {
    if !config.admin.enabled {
        return;
    }
    match socket_addr(&config.admin.address) {
        Ok(addr) => {
            if let Some((j, other)) = listener_addrs.iter().find(|(_, o)| overlaps(addr, *o)) {
                p.push(
                    "admin.address",
                    collision(addr, *other, &format!("listeners[{j}]")),
                );
            }
        }
        Err(message) => p.push("admin.address", message),
    }
    admin_access(&config.admin, p);
}

/// Who may use the admin listener: a token source that can hold one, settings that need a
/// token only with one, and never a non-loopback address without a token.
fn admin_access(admin: &AdminConfig, p: &mut Problems) {
    match &admin.auth_token {
        Some(SecretSource::Env(name)) => {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                p.push(
                    "admin.auth_token.env",
                    format!("{name:?} is not an environment variable name (letters, digits and _, not starting with a digit)"),
                );
            }
        }
        Some(SecretSource::File(path)) => {
            if path.as_os_str().is_empty() {
                p.push("admin.auth_token.file", "must not be empty");
            }
        }
        None => {
            if let Ok(addr) = socket_addr(&admin.address) {
                if !addr.ip().is_loopback() {
                    p.push(
                        "admin.auth_token",
                        format!(
                            "required when the admin listener binds to {addr}, which is not a loopback address (set auth_token: {{ env: NAME }} or {{ file: PATH }}, or bind to 127.0.0.1)"
                        ),
                    );
                }
            }
            if admin.auth_reads == Some(true) {
                p.push("admin.auth_reads", "needs admin.auth_token");
            }
            if admin.auth_health_and_metrics {
                p.push("admin.auth_health_and_metrics", "needs admin.auth_token");
            }
        }
    }
    for (i, host) in admin.hosts.iter().enumerate() {
        if !is_host_name(host) && host.parse::<std::net::IpAddr>().is_err() {
            p.push(
                format!("admin.hosts[{i}]"),
                format!("{host:?} is not a host name or IP address (leave out the port)"),
            );
        }
    }
}

/// A bind address: `ip:port` (`[v6]:port`); host names are not resolved for binding.
fn socket_addr(address: &str) -> Result<SocketAddr, String> {
    address.trim().parse::<SocketAddr>().map_err(|_| {
        port_out_of_range(address.trim(), 0).unwrap_or_else(|| {
            format!("\"{address}\" is not an ip:port address (e.g. 0.0.0.0:8080 or [::]:8080)")
        })
    })
}

/// `"host:99999": port 99999 is out of range 0–65535` when the part after the last `:` is a
/// number too large for a port (the problem is then the port, not the shape).
fn port_out_of_range(address: &str, min: u16) -> Option<String> {
    let (_, port) = address.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let too_large = port.parse::<u16>().is_err();
    too_large.then(|| {
        format!(
            "\"{address}\": port {} is out of range {min}–65535",
            port.trim_start_matches('0')
        )
    })
}

/// Two bind addresses that cannot both be bound: same port and family, and the same IP or
/// either one the unspecified address. Port 0 asks for a free port and never collides.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn collision(addr: SocketAddr, other: SocketAddr, other_path: &str) -> String {
    if addr == other {
        format!("address {addr} is already used by {other_path}")
    } else {
        format!("address {addr} overlaps {other_path} ({other})")
    }
}

fn upstreams(config: &Config, p: &mut Problems) {
    unique_names(
        "upstreams",
        "upstream",
        config.upstreams.iter().map(|u| u.name.as_str()),
        p,
    );
    for (i, u) in config.upstreams.iter().enumerate() {
        upstream(&format!("upstreams[{i}]"), u, p);
    }
}

fn upstream(path: &str, u: &UpstreamConfig, p: &mut Problems) {
    if u.endpoints.is_empty() {
        p.push(
            format!("{path}.endpoints"),
            "at least one endpoint is required",
        );
    }
    for (j, e) in u.endpoints.iter().enumerate() {
        let ep = format!("{path}.endpoints[{j}]");
        p.check(format!("{ep}.address"), endpoint_address(&e.address));
        if !(1..=1000).contains(&e.weight) {
            p.push(
                format!("{ep}.weight"),
                format!("must be between 1 and 1000, got {}", e.weight),
            );
        }
    }
    let lb = format!("{path}.load_balancer");
    match (u.load_balancer.policy, &u.load_balancer.hash_key) {
        (LbPolicy::ConsistentHash, None) => p.push(
            format!("{lb}.hash_key"),
            "required when policy is consistent_hash",
        ),
        (LbPolicy::ConsistentHash, Some(key)) => hash_key(&format!("{lb}.hash_key"), key, p),
        (policy, Some(_)) => p.push(
            format!("{lb}.hash_key"),
            format!(
                "only used by policy consistent_hash, but policy is {}",
                lb_policy_name(policy)
            ),
        ),
        (_, None) => {}
    }
    positive(
        p,
        format!("{path}.pool.connect_timeout"),
        u.pool.connect_timeout,
    );
    positive(p, format!("{path}.pool.idle_timeout"), u.pool.idle_timeout);
    positive(p, format!("{path}.dns_refresh"), u.dns_refresh);
    if let Some(hc) = &u.health_check {
        health_check(&format!("{path}.health_check"), hc, p);
    }
    protection::upstream(path, u, p);
}

fn lb_policy_name(policy: LbPolicy) -> &'static str {
    match policy {
        LbPolicy::RoundRobin => "round_robin",
        LbPolicy::LeastRequest => "least_request",
        LbPolicy::ConsistentHash => "consistent_hash",
    }
}

fn hash_key(path: &str, key: &HashKey, p: &mut Problems) {
    match key {
        HashKey::Header(name) => p.check(format!("{path}.header"), header_name(name)),
        HashKey::Cookie(name) => {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !valid {
                p.push(
                    format!("{path}.cookie"),
                    format!("\"{name}\" is not a valid cookie name"),
                );
            }
        }
        HashKey::ClientIp => {}
    }
}

/// An upstream endpoint: `host:port` or `[v6]:port`, port 1..=65535.
fn endpoint_address(address: &str) -> Result<(), String> {
    let usage = || {
        format!(
            "\"{address}\" must be host:port (e.g. 10.0.0.1:8080, [::1]:8080 or api.internal:80)"
        )
    };
    let (host, port) = match address.parse::<SocketAddr>() {
        Ok(addr) => (None, addr.port()),
        Err(_) => {
            let (host, port) = address.rsplit_once(':').ok_or_else(usage)?;
            let port = port
                .parse::<u16>()
                .map_err(|_| port_out_of_range(address, 1).unwrap_or_else(usage))?;
            (Some(host), port)
        }
    };
    if port == 0 {
        return Err(format!("\"{address}\": port 0 is out of range 1–65535"));
    }
    match host {
        Some(host) if !is_host_name(host) => Err(usage()),
        _ => Ok(()),
    }
}

/// A DNS name or IPv4 literal: dot-separated non-empty labels of letters, digits, `-`, `_`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn health_check(path: &str, hc: &HealthCheckConfig, p: &mut Problems) {
    p.check(format!("{path}.path"), uri_path(&hc.path));
    positive(p, format!("{path}.interval"), hc.interval);
    if hc.timeout.is_zero() {
        p.push(format!("{path}.timeout"), "must be greater than 0");
    } else if hc.timeout > hc.interval {
        p.push(
            format!("{path}.timeout"),
            format!(
                "{} must not exceed interval ({})",
                humantime::format_duration(hc.timeout),
                humantime::format_duration(hc.interval)
            ),
        );
    }
    at_least(
        p,
        format!("{path}.healthy_threshold"),
        hc.healthy_threshold as usize,
        1,
    );
    at_least(
        p,
        format!("{path}.unhealthy_threshold"),
        hc.unhealthy_threshold as usize,
        1,
    );
    if hc.expected_statuses.is_empty() {
        p.push(
            format!("{path}.expected_statuses"),
            "at least one status or range is required",
        );
    }
    for (k, range) in hc.expected_statuses.iter().enumerate() {
        p.check(
            format!("{path}.expected_statuses[{k}]"),
            status_range(range).map(|_| ()),
        );
    }
    if let Some(host) = &hc.host {
        let check = if host.is_empty() {
            Err("must not be empty (leave it out to send the endpoint address)".to_string())
        } else {
            header_value(host)
        };
        p.check(format!("{path}.host"), check);
    }
}

/// The inclusive range of a `StatusRange`, checked: codes 100..=599, start ≤ end.
pub fn status_range(range: &StatusRange) -> Result<(u16, u16), String> {
    let code = |c: u16| {
        if (100..=599).contains(&c) {
            Ok(c)
        } else {
            Err(format!("status {c} is outside 100..=599"))
        }
    };
    match range {
        StatusRange::Code(c) => code(*c).map(|c| (c, c)),
        StatusRange::Range(text) => {
            let usage = || format!("\"{text}\" is not a status code or a range like \"200-399\"");
            let (a, b) = text.split_once('-').ok_or_else(usage)?;
            let a = a.trim().parse::<u16>().map_err(|_| usage())?;
            let b = b.trim().parse::<u16>().map_err(|_| usage())?;
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(format!(
                    "range \"{text}\" is empty: {a} is greater than {b}"
                ));
            }
            Ok((a, b))
        }
    }
}

/// A request path (optionally with a query): starts with `/` and is valid in a URI.
fn uri_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("\"{path}\" must start with '/'"));
    }
    path.parse::<http::uri::PathAndQuery>()
        .map(|_| ())
        .map_err(|e| format!("\"{path}\" is not a valid URI path: {e}"))
}

fn header_name(name: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("\"{name}\" is not a valid header name"))
}

fn header_value(value: &str) -> Result<(), String> {
    http::HeaderValue::from_str(value).map(|_| ()).map_err(|_| {
        format!("{value:?} is not a valid header value (control characters are not allowed)")
    })
}

/// A regex's compile error on one line (the regex crate's message spans several).
fn compile_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let detail = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
        format!("invalid regex \"{pattern}\": {detail}")
    })
}

fn positive(p: &mut Problems, path: String, d: Duration) {
    if d.is_zero() {
        p.push(path, "must be greater than 0");
    }
}

fn at_least(p: &mut Problems, path: String, value: usize, min: usize) {
    if value < min {
        p.push(path, format!("must be at least {min}, got {value}"));
    }
}
