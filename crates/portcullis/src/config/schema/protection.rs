//! The file format of traffic protection II: circuit breakers, upstream overflow thresholds,
//! retry budgets, outlier detection and load shedding (on upstreams), retries, deadlines,
//! stream idle timeouts and priority (on routes). `docs/traffic-protection.md` explains the
//! behaviour; `docs/config.md` lists every field.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::defaults;

/// Which calls share one circuit breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    /// One breaker per route × upstream: a route whose calls fail stops calling the upstream
    /// without affecting other routes to it.
    #[default]
    Route,
    /// One breaker per endpoint of the upstream, shared by every route: a failing endpoint is
    /// skipped while the others keep serving.
    Endpoint,
}

/// The calls a breaker's rates are computed over. Exactly one of `calls`, `duration`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerWindowConfig {
    /// Count-based: the last N calls.
    #[serde(default)]
    pub calls: Option<u32>,
    /// Time-based: the calls of the last D (kept in 10 buckets).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
}

impl Default for BreakerWindowConfig {
    fn default() -> Self {
        Self {
            calls: Some(defaults::breaker_window_calls()),
            duration: None,
        }
    }
}

/// A kind of failed call, for breakers, retries and outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The TCP connect failed or timed out.
    ConnectFailure,
    /// The upstream closed or reset the connection before the response head.
    Reset,
    /// No response head within the (per-try) timeout.
    Timeout,
    /// Any of `connect_failure`, `reset`, `timeout`, or a malformed upstream response.
    GatewayError,
    /// Any 5xx status from the upstream.
    #[serde(rename = "5xx")]
    ServerError,
}

/// A circuit breaker on an upstream; off when absent.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    #[serde(default)]
    pub scope: BreakerScope,
    #[serde(default)]
    pub window: BreakerWindowConfig,
    /// No trip before the window holds this many calls.
    #[serde(default = "defaults::breaker_min_calls")]
    pub min_calls: u32,
    /// Trip when at least this percent of the window's calls failed (1-100).
    #[serde(default = "defaults::breaker_failure_rate")]
    pub failure_rate: u8,
    /// A call whose response head took longer than this is slow; absent: no slow-call rule.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub slow_call_duration: Option<Duration>,
    /// Trip when at least this percent of the window's calls were slow (1-100).
    #[serde(default = "defaults::breaker_slow_call_rate")]
    pub slow_call_rate: u8,
    /// How long the breaker stays open after the first trip.
    #[serde(default = "defaults::breaker_open_duration", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub open_duration: Duration,
    /// Each trip straight after a failed probe doubles the open time, up to this. Default:
    /// `open_duration` (no growth).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub max_open_duration: Option<Duration>,
    /// Probe requests let through at once while half-open.
    #[serde(default = "defaults::breaker_half_open_probes")]
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    #[serde(default = "defaults::breaker_half_open_probes")]
    pub close_after: u32,
    /// What counts as a failed call.
    #[serde(default = "defaults::breaker_failure_on")]
    pub failure_on: Vec<FailureKind>,
    /// Upstream statuses that also count as failures (e.g. 429).
    #[serde(default)]
    pub failure_statuses: Vec<u16>,
    /// gRPC status codes (from a trailers-only response's headers) that count as failures.
    #[serde(default)]
    pub failure_grpc_statuses: Vec<u32>,
}

/// Envoy-style thresholds on an upstream; each is unlimited when absent. Over one, the
/// request gets 503 `upstream_overflow` without touching the upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLimitsConfig {
    /// Open connections to all endpoints together.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection (all connections busy, new one opening).
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the upstream, retries included.
    #[serde(default)]
    pub max_requests: Option<u32>,
}

/// How many retries an upstream accepts, so that retries cannot multiply load in an outage.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a percentage of the original requests in the window.
    #[serde(default = "defaults::retry_budget_percent")]
    pub percent: u32,
    /// Retries allowed per second on top, so a quiet upstream can still be retried.
    #[serde(default = "defaults::retry_budget_min_per_second")]
    pub min_per_second: u32,
    /// The sliding window both are counted over.
    #[serde(default = "defaults::retry_budget_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            percent: defaults::retry_budget_percent(),
            min_per_second: defaults::retry_budget_min_per_second(),
            window: defaults::retry_budget_window(),
        }
    }
}

/// Success-rate outlier detection: an endpoint whose success rate over an interval is below
/// `mean - stdev_factor × stdev` of its peers is ejected.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessRateConfig {
    /// Endpoints with enough requests needed before the rule runs at all.
    #[serde(default = "defaults::success_rate_min_hosts")]
    pub min_hosts: u32,
    /// Requests an endpoint needs in the interval to be judged.
    #[serde(default = "defaults::success_rate_min_requests")]
    pub min_requests: u32,
    /// How many standard deviations below the mean is an outlier.
    #[serde(default = "defaults::success_rate_stdev_factor")]
    pub stdev_factor: f64,
}

/// Passive outlier detection on an upstream; off when absent.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    /// Eject after this many 5xx in a row; 0 turns the rule off.
    #[serde(default = "defaults::outlier_consecutive")]
    pub consecutive_5xx: u32,
    /// Eject after this many gateway errors (connect failure, reset, timeout) in a row; 0
    /// turns the rule off.
    #[serde(default = "defaults::outlier_consecutive")]
    pub consecutive_gateway_errors: u32,
    /// Success-rate ejection; off when absent.
    #[serde(default)]
    pub success_rate: Option<SuccessRateConfig>,
    /// How often success rates are evaluated.
    #[serde(default = "defaults::outlier_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// An ejection lasts this × the number of times the endpoint was ejected.
    #[serde(
        default = "defaults::outlier_base_ejection_time",
        with = "humantime_serde"
    )]
    #[schemars(with = "String")]
    pub base_ejection_time: Duration,
    /// Upper bound of one ejection.
    #[serde(
        default = "defaults::outlier_max_ejection_time",
        with = "humantime_serde"
    )]
    #[schemars(with = "String")]
    pub max_ejection_time: Duration,
    /// At most this percent of the upstream's endpoints are ejected at once (at least one
    /// endpoint may always be ejected when the upstream has two or more).
    #[serde(default = "defaults::outlier_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

/// The adaptive concurrency limit of an upstream.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveLimitConfig {
    #[serde(default = "defaults::adaptive_initial")]
    pub initial: u32,
    #[serde(default = "defaults::adaptive_min")]
    pub min: u32,
    #[serde(default = "defaults::adaptive_max")]
    pub max: u32,
    /// How often the limit is recomputed from the latencies measured.
    #[serde(default = "defaults::adaptive_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
}

impl Default for AdaptiveLimitConfig {
    fn default() -> Self {
        Self {
            initial: defaults::adaptive_initial(),
            min: defaults::adaptive_min(),
            max: defaults::adaptive_max(),
            window: defaults::adaptive_window(),
        }
    }
}

/// Load shedding on an upstream; off when absent.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSheddingConfig {
    #[serde(default)]
    pub adaptive_limit: AdaptiveLimitConfig,
    /// Requests that may wait for a slot; beyond it the lowest-priority waiter is shed.
    #[serde(default = "defaults::shed_queue_size")]
    pub queue_size: u32,
    /// Longest wait for a slot before the request is shed.
    #[serde(default = "defaults::shed_max_wait", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_wait: Duration,
}

/// Request priority for load shedding.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Shed first.
    Sheddable,
    #[default]
    Normal,
    /// Shed last; served first when a slot frees.
    Critical,
}

/// Which priority a route's requests get.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// The priority of the route's requests.
    #[serde(default)]
    pub level: Priority,
    /// A request header whose value (`critical`, `normal`, `sheddable`) overrides `level`;
    /// other values are ignored. Only trusted callers should be able to set it.
    #[serde(default)]
    pub header: Option<String>,
}

/// Retries on a route; absent: no retries (only a request an idle pooled connection never
/// wrote is sent again).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included (2 = one retry).
    #[serde(default = "defaults::retry_attempts")]
    pub attempts: u32,
    /// Time allowed for one attempt's response head; default: the route's `timeout`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub per_try_timeout: Option<Duration>,
    /// Failures that are retried.
    #[serde(default = "defaults::retry_on")]
    pub on: Vec<FailureKind>,
    /// Upstream statuses that are retried as well.
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// gRPC status codes (trailers-only responses) that are retried.
    #[serde(default)]
    pub grpc_statuses: Vec<u32>,
    /// Delay before retry n (0-based): uniform in `[0, min(max, base × 2^n)]`.
    #[serde(default = "defaults::retry_backoff_base", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff_base: Duration,
    #[serde(default = "defaults::retry_backoff_max", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff_max: Duration,
    /// An upstream `Retry-After` longer than this cancels the retry (the response is passed on).
    #[serde(default = "defaults::retry_max_retry_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_retry_after: Duration,
    /// Methods retried; default the idempotent ones (RFC 9110 §9.2.2).
    #[serde(default = "defaults::retry_methods")]
    pub methods: Vec<String>,
    /// A request body up to this size is kept so it can be sent again; a larger body is
    /// streamed and the request is not retried.
    #[serde(default = "defaults::retry_max_body")]
    #[schemars(with = "String")]
    pub max_body: bytesize::ByteSize,
}

/// Deadline propagation on a route.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Accept and propagate gRPC's `grpc-timeout` header.
    #[serde(default = "defaults::yes")]
    pub grpc_timeout: bool,
    /// A header carrying the caller's remaining time in milliseconds; absent: none.
    #[serde(default)]
    pub header: Option<String>,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            grpc_timeout: true,
            header: None,
        }
    }
}
