//! The file format: serde structs for the YAML config, with `deny_unknown_fields` everywhere.
//!
//! These types describe what a user writes, not what the gateway runs: `validate` checks them
//! and `runtime::compile` turns them into the immutable `Runtime`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod access_log;
mod admin;
mod protection;
mod telemetry;
mod traces;
pub use access_log::*;
pub use admin::*;
pub use protection::*;
pub use telemetry::*;
pub use traces::*;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings: worker threads, shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (health, readiness, the JSON API of `docs/admin-api.md`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Sockets that accept downstream traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Named groups of endpoints that routes proxy to.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, matched per the precedence documented in `docs/config.md`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named rate-limit policies, attached by name to listeners, routes or `defaults`.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// What routes get when they do not say otherwise.
    #[serde(default)]
    pub defaults: DefaultsConfig,
    /// Metrics, traces and access logs (`docs/observability.md`).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings applied to every route that does not set its own.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Rate-limit policies for routes without a `rate_limits` list of their own.
    #[serde(default)]
    pub rate_limits: Vec<String>,
}

/// The algorithm of a rate-limit policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// Token bucket (GCRA): `limit` per `window` sustained, bursts up to `burst`.
    #[default]
    TokenBucket,
    /// Sliding window counter: at most about `limit` in any `window`.
    SlidingWindow,
    /// Fixed window: at most `limit` per `window`, aligned windows.
    FixedWindow,
    /// At most `limit` requests in flight at once (no window, no key).
    Concurrency,
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    /// The client IP (after trusted `X-Forwarded-For`), aggregated per `client_ip_prefix`.
    ClientIp,
    /// A request header's value.
    Header(String),
    /// A query parameter's value.
    Query(String),
    /// The matched route's name.
    Route,
}

/// What happens to a request whose key is missing (a header or query parameter absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MissingKey {
    /// The policy does not apply to the request.
    #[default]
    Skip,
    /// The missing part is replaced by this value (all such requests share one counter).
    Fallback(String),
}

/// Prefix lengths that aggregate client IPs into one key (`/24` puts a whole IPv4 /24 together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpPrefix {
    #[serde(default = "defaults::ipv4_prefix")]
    pub ipv4: u8,
    #[serde(default = "defaults::ipv6_prefix")]
    pub ipv6: u8,
}

impl Default for ClientIpPrefix {
    fn default() -> Self {
        Self {
            ipv4: defaults::ipv4_prefix(),
            ipv6: defaults::ipv6_prefix(),
        }
    }
}

/// How much of the limit one request uses.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitCost {
    /// Cost of a request whose method is not listed (a route's `rate_limit_cost` overrides it).
    #[serde(default = "defaults::cost")]
    pub default: u32,
    /// Cost per method, e.g. `{ POST: 5 }`; wins over everything else.
    #[serde(default)]
    pub methods: BTreeMap<String, u32>,
}

impl Default for RateLimitCost {
    fn default() -> Self {
        Self {
            default: defaults::cost(),
            methods: BTreeMap::new(),
        }
    }
}

/// Which rate-limit headers are sent.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeaders {
    /// Send `RateLimit-Policy`/`RateLimit` on allowed responses too (for the most restrictive
    /// limit). Refusals always carry them.
    #[serde(default = "defaults::yes")]
    pub on_allowed: bool,
    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    #[serde(default)]
    pub legacy: bool,
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        Self {
            on_allowed: true,
            legacy: false,
        }
    }
}

/// A named rate-limit policy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique name; it appears in the `RateLimit` headers, the refusal body, logs and metrics.
    pub name: String,
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
    /// Requests (cost units) per `window`; for `concurrency`, requests in flight.
    pub limit: u32,
    /// The period of the limit.
    #[serde(default = "defaults::rate_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// `token_bucket` only: requests allowed at once from a full bucket; default `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// The key: requests with equal keys share a counter. Empty: one counter for all.
    #[serde(default)]
    pub key: Vec<RateLimitKey>,
    /// Aggregation of client IPs in the key.
    #[serde(default)]
    pub client_ip_prefix: ClientIpPrefix,
    /// A request whose key is missing: `skip` the policy, or `{ fallback: VALUE }`.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// `false`: shadow mode — would-be refusals are counted and logged, the request passes.
    #[serde(default = "defaults::yes")]
    pub enforce: bool,
    /// Most keys tracked; memory is bounded by this, not by traffic.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
    /// Delay instead of refusing: a request over the rate waits up to this for its slot.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub max_delay: Option<Duration>,
    #[serde(default)]
    pub cost: RateLimitCost,
    /// Status of a refusal.
    #[serde(default = "defaults::rate_limit_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: RateLimitHeaders,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the multi-threaded runtime; 0 means one per core.
    #[serde(default)]
    pub worker_threads: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before connections close.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            drain_timeout: defaults::drain_timeout(),
        }
    }
}

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and cleartext HTTP/2 with prior knowledge, detected per connection.
    #[default]
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `host:port` to bind, e.g. `0.0.0.0:8080` or `[::]:8080`. Port 0 picks a free port.
    pub address: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Peers whose `X-Forwarded-*` headers are believed (CIDRs). Others have theirs replaced.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Protective limits; every one has a safe default.
    #[serde(default)]
    pub limits: ListenerLimits,
    /// Rate-limit policies applied to every request on this listener, before routing.
    #[serde(default)]
    pub rate_limits: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Connections served at once; further ones wait in the kernel backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    #[serde(default = "defaults::max_header_bytes")]
    #[schemars(with = "String")]
    pub max_header_bytes: ByteSize,
    /// Most request header fields; more gets 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// A request head must arrive within this (slowloris protection); HTTP/1.1 only.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    #[serde(default = "defaults::keepalive_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub keepalive_timeout: Duration,
    /// HTTP/2: streams a client may have open at once.
    #[serde(default = "defaults::h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: streams a client may reset before the server reads them, before the
    /// connection is closed (rapid reset, CVE-2023-44487).
    #[serde(default = "defaults::h2_max_pending_accept_reset_streams")]
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams the server may reset for protocol errors caused by the client before
    /// the connection is closed with GOAWAY (made-you-reset floods).
    #[serde(default = "defaults::h2_max_local_error_reset_streams")]
    pub h2_max_local_error_reset_streams: usize,
    /// Longest request line (method, target and version); longer gets 414. HTTP/2: the
    /// method and `:path`.
    #[serde(default = "defaults::max_request_line_bytes")]
    #[schemars(with = "String")]
    pub max_request_line_bytes: ByteSize,
    /// Longest single header line (`name: value`); longer gets 431.
    #[serde(default = "defaults::max_header_line_bytes")]
    #[schemars(with = "String")]
    pub max_header_line_bytes: ByteSize,
    /// What to do with request header names that contain `_`.
    #[serde(default)]
    pub underscore_headers: UnderscoreHeaders,
    /// A new connection must deliver its first request head within this (protocol detection,
    /// the HTTP/2 preface and the first request), or it is closed.
    #[serde(default = "defaults::first_request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub first_request_timeout: Duration,
    /// Connections one client IP may hold open at once; further ones are closed at accept.
    /// 0: no cap.
    #[serde(default)]
    pub max_connections_per_ip: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: defaults::max_connections(),
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            header_read_timeout: defaults::header_read_timeout(),
            keepalive_timeout: defaults::keepalive_timeout(),
            h2_max_concurrent_streams: defaults::h2_max_concurrent_streams(),
            h2_max_pending_accept_reset_streams: defaults::h2_max_pending_accept_reset_streams(),
            h2_max_local_error_reset_streams: defaults::h2_max_local_error_reset_streams(),
            max_request_line_bytes: defaults::max_request_line_bytes(),
            max_header_line_bytes: defaults::max_header_line_bytes(),
            underscore_headers: UnderscoreHeaders::default(),
            first_request_timeout: defaults::first_request_timeout(),
            max_connections_per_ip: 0,
        }
    }
}

/// What a listener does with a request header whose name contains `_` (some servers treat
/// `x_user` and `x-user` alike, so such names can smuggle a header past a filter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Answer 400 (`underscore_header`).
    Reject,
    /// Remove such headers before anything else sees the request.
    #[default]
    Drop,
    /// Keep and forward them.
    Allow,
}

/// Protocol spoken to an upstream's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool.
    #[default]
    Http1,
    /// Cleartext HTTP/2 with prior knowledge, multiplexed (use for gRPC).
    Http2,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub load_balancer: LoadBalancerConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    /// How often endpoint host names are resolved again.
    #[serde(default = "defaults::dns_refresh", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub dns_refresh: Duration,
    /// Active health checking; off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Circuit breaking; off when absent.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Connection and request thresholds (503 `upstream_overflow`); unlimited by default.
    #[serde(default)]
    pub limits: UpstreamLimitsConfig,
    /// The budget that every route's retries to this upstream draw from.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// Passive outlier detection; off when absent.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionConfig>,
    /// Adaptive concurrency limit with a priority queue; off when absent.
    #[serde(default)]
    pub load_shedding: Option<LoadSheddingConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `host:port`; a host name is resolved and re-resolved every `dns_refresh`.
    pub address: String,
    /// Relative share of traffic, 1..=1000.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    #[serde(default)]
    pub policy: LbPolicy,
    /// Where the consistent-hash key comes from; required for `consistent_hash`.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two random choices, picking the one with fewer requests in flight (weighted).
    LeastRequest,
    /// Maglev consistent hashing on `hash_key`.
    ConsistentHash,
}

/// The source of a consistent-hash key. A request without it is balanced by round robin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client IP (after trusted `X-Forwarded-For`).
    ClientIp,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle keep-alive connections kept per endpoint.
    #[serde(default = "defaults::max_idle_per_endpoint")]
    pub max_idle_per_endpoint: usize,
    /// An idle pooled connection is closed after this.
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Giving up on a TCP connect after this counts as a connect failure (502).
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: defaults::max_idle_per_endpoint(),
            idle_timeout: defaults::pool_idle_timeout(),
            connect_timeout: defaults::connect_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET on each endpoint.
    pub path: String,
    #[serde(default = "defaults::hc_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    #[serde(default = "defaults::hc_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy endpoint back.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy endpoint out of rotation.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass: single codes (`200`) or ranges (`"200-399"`). Default 200-299.
    #[serde(default = "defaults::expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// `Host` header sent with the check; default the endpoint address.
    #[serde(default)]
    pub host: Option<String>,
}

/// A status code or an inclusive range written `"200-399"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusRange {
    Code(u16),
    Range(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Listeners this route serves; all listeners when empty.
    #[serde(default)]
    pub listeners: Vec<String>,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    pub action: RouteAction,
    /// Path rewrite applied before proxying.
    #[serde(default)]
    pub rewrite: Option<PathRewrite>,
    /// What to do with the `Host` header sent upstream.
    #[serde(default)]
    pub host_header: HostHeader,
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// Largest request body accepted; larger gets 413.
    #[serde(default = "defaults::max_request_body")]
    #[schemars(with = "String")]
    pub max_request_body: ByteSize,
    /// Time allowed for the upstream's response headers to arrive; then 504.
    #[serde(default = "defaults::route_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Rate-limit policies for this route; absent: `defaults.rate_limits`; `[]`: none.
    #[serde(default)]
    pub rate_limits: Option<Vec<String>>,
    /// Cost of a request on this route for its rate limits (a policy's per-method cost wins).
    #[serde(default)]
    pub rate_limit_cost: Option<u32>,
    /// Retries; absent: no retries.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Where an incoming deadline is read from (and propagated to).
    #[serde(default)]
    pub deadline: DeadlineConfig,
    /// A streamed request or response body that moves no byte for this long is cut; 0s turns
    /// it off.
    #[serde(default = "defaults::stream_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stream_idle_timeout: Duration,
    /// The priority of the route's requests under load shedding.
    #[serde(default)]
    pub priority: PriorityConfig,
    /// Protocols a client may switch to through this route (`Upgrade` tokens); a request
    /// offering any other goes upstream as a plain request. `h2c` is refused.
    #[serde(default = "defaults::upgrades")]
    pub upgrades: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names: exact (`api.example.com`) or one leading wildcard (`*.example.com`).
    /// Empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path matcher; absent matches any path.
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Methods, upper case; empty matches any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// All must match.
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    /// Query parameters; all must match.
    #[serde(default)]
    pub query: Vec<ValueMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    /// A regular expression matched against the whole path (anchored).
    Regex(String),
}

/// Matches a named header or query parameter. Exactly one of `exact`, `present`, `regex`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteAction {
    /// Forward to an upstream.
    Proxy { upstream: String },
    /// Answer directly from the gateway.
    Respond {
        #[serde(default = "defaults::status_ok")]
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
        /// Whether the answer carries `x-portcullis-reason: direct_response` (default yes).
        /// `false` for a route that plays an origin, whose answers are proxied elsewhere.
        #[serde(default = "defaults::yes")]
        reason_header: bool,
    },
    /// Redirect; parts left out are kept from the request.
    Redirect {
        #[serde(default)]
        scheme: Option<String>,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        path: Option<String>,
        #[serde(default = "defaults::redirect_status")]
        status: u16,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathRewrite {
    /// Remove the route's path prefix (requires a `prefix` path match).
    StripPrefix,
    /// Replace the route's path prefix with this one (requires a `prefix` path match).
    ReplacePrefix(String),
    /// Regex substitution on the path; `$1`/`${name}` refer to capture groups.
    Regex {
        pattern: String,
        replacement: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HostHeader {
    /// Send the client's `Host` as it came.
    #[default]
    PassThrough,
    /// Send the chosen endpoint's address.
    Endpoint,
    /// Send this value.
    Rewrite(String),
}

/// Header edits: `remove` first, then `set` (replace), then `add` (append).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Default values, one function each so serde, docs and code agree.
pub mod defaults {
    use std::time::Duration;

    use bytesize::ByteSize;

    use super::StatusRange;

    pub fn yes() -> bool {
        true
    }
    pub fn admin_address() -> String {
        "127.0.0.1:9901".to_string()
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_header_bytes() -> ByteSize {
        ByteSize::kib(64)
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn keepalive_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn h2_max_concurrent_streams() -> u32 {
        100
    }
    pub fn h2_max_pending_accept_reset_streams() -> usize {
        20
    }
    pub fn h2_max_local_error_reset_streams() -> usize {
        1024
    }
    pub fn max_request_line_bytes() -> ByteSize {
        ByteSize::kib(8)
    }
    pub fn max_header_line_bytes() -> ByteSize {
        ByteSize::kib(16)
    }
    pub fn first_request_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn dns_refresh() -> Duration {
        Duration::from_secs(30)
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn max_idle_per_endpoint() -> usize {
        64
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn healthy_threshold() -> u32 {
        2
    }
    pub fn unhealthy_threshold() -> u32 {
        3
    }
    pub fn expected_statuses() -> Vec<StatusRange> {
        vec![StatusRange::Range("200-299".to_string())]
    }
    pub fn max_request_body() -> ByteSize {
        ByteSize::mib(10)
    }
    pub fn route_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn status_ok() -> u16 {
        200
    }
    pub fn redirect_status() -> u16 {
        302
    }
    pub fn ipv4_prefix() -> u8 {
        32
    }
    pub fn ipv6_prefix() -> u8 {
        128
    }
    pub fn cost() -> u32 {
        1
    }
    pub fn rate_window() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_keys() -> usize {
        100_000
    }
    pub fn rate_limit_status() -> u16 {
        429
    }
    pub fn stream_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn upgrades() -> Vec<String> {
        vec!["websocket".to_string()]
    }
    pub fn breaker_window_calls() -> u32 {
        100
    }
    pub fn breaker_min_calls() -> u32 {
        20
    }
    pub fn breaker_failure_rate() -> u8 {
        50
    }
    pub fn breaker_slow_call_rate() -> u8 {
        100
    }
    pub fn breaker_open_duration() -> Duration {
        Duration::from_secs(5)
    }
    pub fn breaker_half_open_probes() -> u32 {
        1
    }
    pub fn breaker_failure_on() -> Vec<super::FailureKind> {
        use super::FailureKind::{GatewayError, ServerError};
        vec![GatewayError, ServerError]
    }
    pub fn retry_budget_percent() -> u32 {
        20
    }
    pub fn retry_budget_min_per_second() -> u32 {
        3
    }
    pub fn retry_budget_window() -> Duration {
        Duration::from_secs(10)
    }
    pub fn success_rate_min_hosts() -> u32 {
        5
    }
    pub fn success_rate_min_requests() -> u32 {
        100
    }
    pub fn success_rate_stdev_factor() -> f64 {
        1.9
    }
    pub fn outlier_consecutive() -> u32 {
        5
    }
    pub fn outlier_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn outlier_base_ejection_time() -> Duration {
        Duration::from_secs(30)
    }
    pub fn outlier_max_ejection_time() -> Duration {
        Duration::from_secs(300)
    }
    pub fn outlier_max_ejection_percent() -> u32 {
        10
    }
    pub fn adaptive_initial() -> u32 {
        100
    }
    pub fn adaptive_min() -> u32 {
        5
    }
    pub fn adaptive_max() -> u32 {
        1000
    }
    pub fn adaptive_window() -> Duration {
        Duration::from_secs(1)
    }
    pub fn shed_queue_size() -> u32 {
        100
    }
    pub fn shed_max_wait() -> Duration {
        Duration::from_millis(50)
    }
    pub fn retry_attempts() -> u32 {
        2
    }
    pub fn retry_on() -> Vec<super::FailureKind> {
        use super::FailureKind::{ConnectFailure, Reset};
        vec![ConnectFailure, Reset]
    }
    pub fn retry_backoff_base() -> Duration {
        Duration::from_millis(25)
    }
    pub fn retry_backoff_max() -> Duration {
        Duration::from_millis(250)
    }
    pub fn retry_max_retry_after() -> Duration {
        Duration::from_secs(1)
    }
    pub fn retry_methods() -> Vec<String> {
        ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
            .map(String::from)
            .to_vec()
    }
    pub fn retry_max_body() -> ByteSize {
        ByteSize::kib(64)
    }
}
