//! Semantic checks on traffic protection: circuit breakers, overflow thresholds, retry
//! budgets, outlier detection and load shedding on upstreams; retries, deadlines, stream idle
//! timeouts and priority on routes. It also builds the algorithm settings the runtime runs
//! ([`breaker_config`], [`adaptive_config`]), so the runtime runs exactly what was checked.
//!
//! Every field gets its own path and message. Where `portcullis-limits` has a constructor
//! that checks its input, that check runs too, once the section's own checks pass: a config
//! that validates can always be built.

use std::time::Duration;

use portcullis_limits::{AdaptiveConfig, AdaptiveLimit, BreakerConfig, BreakerWindow, RetryBudget};

use super::route::{http_method, MANAGED_HEADERS};
use super::{at_least, header_name, positive, status_range, Problems};
use crate::config::schema::{
    defaults, AdaptiveLimitConfig, CircuitBreakerConfig, DeadlineConfig, LoadSheddingConfig,
    OutlierDetectionConfig, RetryBudgetConfig, RetryConfig, RouteAction, RouteConfig, StatusRange,
    UpstreamConfig, UpstreamLimitsConfig,
};

/// Largest count-based breaker window (`portcullis-limits` keeps one byte per call).
const MAX_WINDOW_CALLS: u32 = 1_000_000;

/// Shortest time-based breaker window. The window is kept in 10 buckets, so 100ms gives
/// buckets of 10ms — an order above timer and scheduling jitter (about 1ms), which would
/// otherwise decide which bucket a call lands in. A shorter window measures scheduling noise
/// and a handful of calls rather than the upstream's health.
const MIN_WINDOW_DURATION: Duration = Duration::from_millis(100);

/// Most attempts of one request: beyond this a retry storm outlasts any outage it rides.
const MAX_ATTEMPTS: u32 = 10;

/// Largest budget percentage: 1000% is ten retries per request, more than `MAX_ATTEMPTS`
/// can ever use.
const MAX_BUDGET_PERCENT: u32 = 1000;

/// Largest request body kept for a retry. The body is held in memory for the whole request,
/// per request in flight, so this bounds the memory retries may take.
const MAX_RETRY_BODY: u64 = 16 * 1024 * 1024;

/// The breaker the runtime runs for `cb`: an absent `slow_call_duration` never marks a call
/// slow, an absent `max_open_duration` is `open_duration` (no growth). Meant for a config
/// that passed `validate`; an invalid window falls back to `calls` or the default count.
pub fn breaker_config(cb: &CircuitBreakerConfig) -> BreakerConfig {
    let window = match (cb.window.calls, cb.window.duration) {
        (None, Some(d)) => BreakerWindow::Time(d),
        (Some(n), _) => BreakerWindow::Count(n),
        (None, None) => BreakerWindow::Count(defaults::breaker_window_calls()),
    };
    BreakerConfig {
        window,
        min_calls: cb.min_calls,
        failure_rate_threshold: cb.failure_rate,
        slow_call_threshold: cb.slow_call_duration.unwrap_or(Duration::MAX),
        slow_call_rate_threshold: cb.slow_call_rate,
        open_duration: cb.open_duration,
        max_open_duration: cb.max_open_duration.unwrap_or(cb.open_duration),
        half_open_probes: cb.half_open_probes,
        half_open_successes_to_close: cb.close_after,
    }
}

/// The adaptive concurrency limit the runtime runs for `a`.
pub fn adaptive_config(a: &AdaptiveLimitConfig) -> AdaptiveConfig {
    AdaptiveConfig {
        initial: a.initial,
        min: a.min,
        max: a.max,
        window: a.window,
    }
}

/// The protection settings of upstream `path`.
pub(super) fn upstream(path: &str, u: &UpstreamConfig, p: &mut Problems) {
    if let Some(cb) = &u.circuit_breaker {
        circuit_breaker(&format!("{path}.circuit_breaker"), cb, p);
    }
    limits(&format!("{path}.limits"), &u.limits, p);
    retry_budget(&format!("{path}.retry_budget"), &u.retry_budget, p);
    if let Some(od) = &u.outlier_detection {
        outlier_detection(&format!("{path}.outlier_detection"), od, p);
    }
    if let Some(ls) = &u.load_shedding {
        load_shedding(&format!("{path}.load_shedding"), ls, p);
    }
}

/// The protection settings of route `path`.
pub(super) fn route(path: &str, r: &RouteConfig, p: &mut Problems) {
    if let Some(retry) = &r.retry {
        if !matches!(r.action, RouteAction::Proxy { .. }) {
            p.push(
                format!("{path}.retry"),
                "retry applies only to proxy routes",
            );
        }
        route_retry(&format!("{path}.retry"), retry, r.timeout, p);
    }
    deadline(&format!("{path}.deadline"), &r.deadline, p);
    // stream_idle_timeout: 0s turns the idle cut off (any other value is a bound).
    if let Some(name) = &r.priority.header {
        p.check(format!("{path}.priority.header"), header_name(name));
    }
}

fn circuit_breaker(path: &str, cb: &CircuitBreakerConfig, p: &mut Problems) {
    let before = p.0.len();
    let window = format!("{path}.window");
    match (cb.window.calls, cb.window.duration) {
        (Some(_), Some(_)) => p.push(
            window,
            "exactly one of calls, duration is required (found calls, duration)",
        ),
        (None, None) => p.push(
            window,
            "exactly one of calls, duration is required (found none)",
        ),
        (Some(n), None) if !(1..=MAX_WINDOW_CALLS).contains(&n) => p.push(
            format!("{window}.calls"),
            format!("must be 1..={MAX_WINDOW_CALLS}, got {n}"),
        ),
        (Some(n), None) if cb.min_calls > n => p.push(
            format!("{path}.min_calls"),
            format!(
                "{} exceeds window.calls ({n}): the breaker could never trip",
                cb.min_calls
            ),
        ),
        (None, Some(d)) if d < MIN_WINDOW_DURATION => p.push(
            format!("{window}.duration"),
            format!(
                "must be at least {}, got {}",
                humantime::format_duration(MIN_WINDOW_DURATION),
                humantime::format_duration(d)
            ),
        ),
        _ => {}
    }
    at_least(p, format!("{path}.min_calls"), cb.min_calls as usize, 1);
    percent(p, format!("{path}.failure_rate"), cb.failure_rate);
    if cb.slow_call_duration.is_some_and(|d| d.is_zero()) {
        p.push(
            format!("{path}.slow_call_duration"),
            "must be greater than 0 (leave it out for no slow-call rule)",
        );
    }
    percent(p, format!("{path}.slow_call_rate"), cb.slow_call_rate);
    positive(p, format!("{path}.open_duration"), cb.open_duration);
    if let Some(max) = cb.max_open_duration {
        not_below(
            p,
            format!("{path}.max_open_duration"),
            max,
            "open_duration",
            cb.open_duration,
        );
    }
    at_least(
        p,
        format!("{path}.half_open_probes"),
        cb.half_open_probes as usize,
        1,
    );
    at_least(p, format!("{path}.close_after"), cb.close_after as usize, 1);
    if cb.failure_on.is_empty()
        && cb.failure_statuses.is_empty()
        && cb.failure_grpc_statuses.is_empty()
    {
        p.push(
            format!("{path}.failure_on"),
            "nothing counts as a failure: list failure kinds here, or give failure_statuses or failure_grpc_statuses",
        );
    }
    for (k, &code) in cb.failure_statuses.iter().enumerate() {
        p.check(
            format!("{path}.failure_statuses[{k}]"),
            status_range(&StatusRange::Code(code)).map(|_| ()),
        );
    }
    for (k, &code) in cb.failure_grpc_statuses.iter().enumerate() {
        p.check(
            format!("{path}.failure_grpc_statuses[{k}]"),
            grpc_code(code),
        );
    }
    if p.0.len() == before {
        p.check(path, breaker_config(cb).validate());
    }
}

fn limits(path: &str, l: &UpstreamLimitsConfig, p: &mut Problems) {
    for (name, value) in [
        ("max_connections", l.max_connections),
        ("max_pending_requests", l.max_pending_requests),
        ("max_requests", l.max_requests),
    ] {
        if value == Some(0) {
            p.push(
                format!("{path}.{name}"),
                "must be at least 1, got 0 (leave it out for no limit)",
            );
        }
    }
}

fn retry_budget(path: &str, b: &RetryBudgetConfig, p: &mut Problems) {
    if b.percent > MAX_BUDGET_PERCENT {
        p.push(
            format!("{path}.percent"),
            format!(
                "must be at most {MAX_BUDGET_PERCENT} (ten retries per request), got {}",
                b.percent
            ),
        );
    }
    let window = format!("{path}.window");
    if b.window.is_zero() {
        p.push(window, "must be greater than 0");
    } else if let Err(e) = RetryBudget::new(b.percent, b.min_per_second, b.window) {
        p.push(window, e);
    }
}

fn outlier_detection(path: &str, od: &OutlierDetectionConfig, p: &mut Problems) {
    positive(p, format!("{path}.interval"), od.interval);
    positive(
        p,
        format!("{path}.base_ejection_time"),
        od.base_ejection_time,
    );
    not_below(
        p,
        format!("{path}.max_ejection_time"),
        od.max_ejection_time,
        "base_ejection_time",
        od.base_ejection_time,
    );
    if od.max_ejection_percent > 100 {
        p.push(
            format!("{path}.max_ejection_percent"),
            format!("must be at most 100, got {}", od.max_ejection_percent),
        );
    }
    if let Some(sr) = &od.success_rate {
        let sp = format!("{path}.success_rate");
        at_least(p, format!("{sp}.min_hosts"), sr.min_hosts as usize, 1);
        at_least(p, format!("{sp}.min_requests"), sr.min_requests as usize, 1);
        if !(sr.stdev_factor.is_finite() && sr.stdev_factor > 0.0) {
            p.push(
                format!("{sp}.stdev_factor"),
                format!(
                    "must be a finite number greater than 0, got {}",
                    sr.stdev_factor
                ),
            );
        }
    }
}

fn load_shedding(path: &str, ls: &LoadSheddingConfig, p: &mut Problems) {
    let ap = format!("{path}.adaptive_limit");
    let a = &ls.adaptive_limit;
    let before = p.0.len();
    at_least(p, format!("{ap}.min"), a.min as usize, 1);
    if !(a.min <= a.initial && a.initial <= a.max) {
        p.push(
            ap.clone(),
            format!(
                "need min <= initial <= max, got {} <= {} <= {}",
                a.min, a.initial, a.max
            ),
        );
    }
    positive(p, format!("{ap}.window"), a.window);
    if p.0.len() == before {
        if let Err(e) = AdaptiveLimit::new(adaptive_config(a)) {
            p.push(ap, e);
        }
    }
    if ls.queue_size > 0 && ls.max_wait.is_zero() {
        p.push(
            format!("{path}.max_wait"),
            "must be greater than 0 when queue_size is above 0 (set queue_size: 0 for no queue)",
        );
    }
}

fn route_retry(path: &str, r: &RetryConfig, route_timeout: Duration, p: &mut Problems) {
    if !(1..=MAX_ATTEMPTS).contains(&r.attempts) {
        p.push(
            format!("{path}.attempts"),
            format!("must be 1..={MAX_ATTEMPTS}, got {}", r.attempts),
        );
    }
    if let Some(t) = r.per_try_timeout {
        let at = format!("{path}.per_try_timeout");
        if t.is_zero() {
            p.push(at, "must be greater than 0");
        } else if !route_timeout.is_zero() && t > route_timeout {
            p.push(
                at,
                format!(
                    "{} must not exceed the route's timeout ({}): the request ends before a try could",
                    humantime::format_duration(t),
                    humantime::format_duration(route_timeout)
                ),
            );
        }
    }
    if r.on.is_empty() && r.statuses.is_empty() && r.grpc_statuses.is_empty() {
        p.push(
            format!("{path}.on"),
            "nothing is retried: list failure kinds here, or give statuses or grpc_statuses",
        );
    }
    for (k, &code) in r.statuses.iter().enumerate() {
        p.check(format!("{path}.statuses[{k}]"), retry_status(code));
    }
    for (k, &code) in r.grpc_statuses.iter().enumerate() {
        p.check(format!("{path}.grpc_statuses[{k}]"), grpc_code(code));
    }
    positive(p, format!("{path}.backoff_base"), r.backoff_base);
    not_below(
        p,
        format!("{path}.backoff_max"),
        r.backoff_max,
        "backoff_base",
        r.backoff_base,
    );
    if r.methods.is_empty() {
        p.push(
            format!("{path}.methods"),
            "at least one method is required (an empty list retries nothing)",
        );
    }
    for (k, method) in r.methods.iter().enumerate() {
        p.check(format!("{path}.methods[{k}]"), http_method(method));
    }
    let body = r.max_body.as_u64();
    if body > MAX_RETRY_BODY {
        p.push(
            format!("{path}.max_body"),
            format!(
                "must be at most 16MiB ({MAX_RETRY_BODY} bytes), got {body} bytes: a kept body stays in memory for the whole request"
            ),
        );
    }
}

fn deadline(path: &str, d: &DeadlineConfig, p: &mut Problems) {
    if let Some(name) = &d.header {
        p.check(format!("{path}.header"), deadline_header(name));
    }
}

/// A header that can carry a caller's remaining time: a regular end-to-end header.
fn deadline_header(name: &str) -> Result<(), String> {
    if name.starts_with(':') {
        return Err(format!(
            "\"{name}\" is a pseudo-header; a deadline travels in a regular header"
        ));
    }
    header_name(name)?;
    let lower = name.to_ascii_lowercase();
    if lower == "grpc-timeout" {
        return Err(
            "grpc-timeout is read by deadline.grpc_timeout; name a different header here"
                .to_string(),
        );
    }
    if MANAGED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "\"{name}\" is a connection/framing header managed by the gateway and cannot carry a deadline"
        ));
    }
    Ok(())
}

/// A status that may be retried: a valid status that is an error (4xx or 5xx).
fn retry_status(code: u16) -> Result<(), String> {
    status_range(&StatusRange::Code(code))?;
    if code < 400 {
        return Err(format!(
            "status {code} is not an error: only 4xx and 5xx responses are retried"
        ));
    }
    Ok(())
}

/// A gRPC status code that can mean failure: 1..=16 (0 is OK).
fn grpc_code(code: u32) -> Result<(), String> {
    match code {
        0 => Err("gRPC status 0 is OK, not a failure".to_string()),
        1..=16 => Ok(()),
        _ => Err(format!("gRPC status {code} is outside 0..=16")),
    }
}

fn percent(p: &mut Problems, path: String, value: u8) {
    if !(1..=100).contains(&value) {
        p.push(path, format!("must be 1..=100, got {value}"));
    }
}

/// `value` of `path` is at least the value of the sibling field `floor_name`.
fn not_below(p: &mut Problems, path: String, value: Duration, floor_name: &str, floor: Duration) {
    if value < floor {
        p.push(
            path,
            format!(
                "{} must not be below {floor_name} ({})",
                humantime::format_duration(value),
                humantime::format_duration(floor)
            ),
        );
    }
}
