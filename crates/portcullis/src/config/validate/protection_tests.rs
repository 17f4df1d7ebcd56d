//! Tests of `validate::protection`: the exact path and message of every rule, all problems
//! reported together, and agreement with the checks of `portcullis-limits`.

use std::time::Duration;

use portcullis_limits::{AdaptiveLimit, Breaker, BreakerWindow};

use super::tests::assert_problems;
use super::{adaptive_config, breaker_config, validate};
use crate::config::schema::{
    AdaptiveLimitConfig, BreakerWindowConfig, CircuitBreakerConfig, LoadSheddingConfig,
    UpstreamConfig,
};
use crate::config::Config;

#[test]
fn valid_protection_config_has_no_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: api
    endpoints: [{ address: "h:1" }]
    circuit_breaker:
      scope: endpoint
      window: { duration: 100ms }
      min_calls: 1000
      failure_rate: 100
      slow_call_duration: 1s
      slow_call_rate: 1
      open_duration: 5s
      max_open_duration: 5s
      half_open_probes: 1
      close_after: 5
      failure_on: []
      failure_statuses: [429, 503]
      failure_grpc_statuses: [14]
    limits: { max_connections: 1, max_pending_requests: 1, max_requests: 1 }
    retry_budget: { percent: 1000, min_per_second: 0, window: 10ns }
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_errors: 0
      max_ejection_percent: 100
      base_ejection_time: 30s
      max_ejection_time: 30s
      success_rate: { min_hosts: 1, min_requests: 1, stdev_factor: 0.1 }
    load_shedding:
      adaptive_limit: { min: 1, initial: 1, max: 1, window: 1ns }
      queue_size: 0
      max_wait: 0s
  - name: defaults
    endpoints: [{ address: "h:1" }]
    circuit_breaker: {}
    outlier_detection: { success_rate: {} }
    load_shedding: {}
routes:
  - name: r
    timeout: 2s
    retry:
      attempts: 1
      per_try_timeout: 2s
      on: []
      statuses: [429, 599]
      grpc_statuses: [1, 16]
      backoff_base: 1ms
      backoff_max: 1ms
      methods: [POST, PATCH]
      max_body: 16MiB
    deadline: { grpc_timeout: false, header: x-request-deadline-ms }
    stream_idle_timeout: 1s
    priority: { level: critical, header: x-priority }
    action: { proxy: { upstream: api } }
  - name: defaults
    retry: {}
    action: { proxy: { upstream: defaults } }
"#;
    assert_problems(yaml, &[]);
}

#[test]
fn circuit_breaker_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: u0
    endpoints: [{ address: "h:1" }]
    circuit_breaker:
      window: { calls: 10, duration: 10s }
      min_calls: 0
      failure_rate: 0
      slow_call_duration: 0s
      slow_call_rate: 101
      open_duration: 0s
      half_open_probes: 0
      close_after: 0
      failure_on: []
      failure_statuses: [99, 429, 600]
      failure_grpc_statuses: [0, 14, 17]
  - { name: u1, endpoints: [{ address: "h:1" }], circuit_breaker: { window: {} } }
  - { name: u2, endpoints: [{ address: "h:1" }], circuit_breaker: { window: { calls: 0 } } }
  - { name: u3, endpoints: [{ address: "h:1" }], circuit_breaker: { window: { calls: 1000001 } } }
  - { name: u4, endpoints: [{ address: "h:1" }], circuit_breaker: { window: { calls: 10 }, min_calls: 20 } }
  - { name: u5, endpoints: [{ address: "h:1" }], circuit_breaker: { window: { duration: 50ms } } }
  - { name: u6, endpoints: [{ address: "h:1" }], circuit_breaker: { open_duration: 10s, max_open_duration: 5s } }
  - { name: u7, endpoints: [{ address: "h:1" }], circuit_breaker: { failure_on: [] } }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].circuit_breaker.window: exactly one of calls, duration is required (found calls, duration)",
            "upstreams[0].circuit_breaker.min_calls: must be at least 1, got 0",
            "upstreams[0].circuit_breaker.failure_rate: must be 1..=100, got 0",
            "upstreams[0].circuit_breaker.slow_call_duration: must be greater than 0 (leave it out for no slow-call rule)",
            "upstreams[0].circuit_breaker.slow_call_rate: must be 1..=100, got 101",
            "upstreams[0].circuit_breaker.open_duration: must be greater than 0",
            "upstreams[0].circuit_breaker.half_open_probes: must be at least 1, got 0",
            "upstreams[0].circuit_breaker.close_after: must be at least 1, got 0",
            "upstreams[0].circuit_breaker.failure_statuses[0]: status 99 is outside 100..=599",
            "upstreams[0].circuit_breaker.failure_statuses[2]: status 600 is outside 100..=599",
            "upstreams[0].circuit_breaker.failure_grpc_statuses[0]: gRPC status 0 is OK, not a failure",
            "upstreams[0].circuit_breaker.failure_grpc_statuses[2]: gRPC status 17 is outside 0..=16",
            "upstreams[1].circuit_breaker.window: exactly one of calls, duration is required (found none)",
            "upstreams[2].circuit_breaker.window.calls: must be 1..=1000000, got 0",
            "upstreams[3].circuit_breaker.window.calls: must be 1..=1000000, got 1000001",
            "upstreams[4].circuit_breaker.min_calls: 20 exceeds window.calls (10): the breaker could never trip",
            "upstreams[5].circuit_breaker.window.duration: must be at least 100ms, got 50ms",
            "upstreams[6].circuit_breaker.max_open_duration: 5s must not be below open_duration (10s)",
            "upstreams[7].circuit_breaker.failure_on: nothing counts as a failure: list failure kinds here, or give failure_statuses or failure_grpc_statuses",
        ],
    );
}

#[test]
fn limits_and_retry_budget_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: u0
    endpoints: [{ address: "h:1" }]
    limits: { max_connections: 0, max_pending_requests: 0, max_requests: 0 }
    retry_budget: { percent: 1001, window: 0s }
  - name: u1
    endpoints: [{ address: "h:1" }]
    retry_budget: { window: 5ns }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].limits.max_connections: must be at least 1, got 0 (leave it out for no limit)",
            "upstreams[0].limits.max_pending_requests: must be at least 1, got 0 (leave it out for no limit)",
            "upstreams[0].limits.max_requests: must be at least 1, got 0 (leave it out for no limit)",
            "upstreams[0].retry_budget.percent: must be at most 1000 (ten retries per request), got 1001",
            "upstreams[0].retry_budget.window: must be greater than 0",
            "upstreams[1].retry_budget.window: retry budget window 5ns is too short (at least 10 ns)",
        ],
    );
}

#[test]
fn outlier_detection_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: u0
    endpoints: [{ address: "h:1" }]
    outlier_detection:
      interval: 0s
      base_ejection_time: 0s
      max_ejection_percent: 101
      success_rate: { min_hosts: 0, min_requests: 0, stdev_factor: 0 }
  - name: u1
    endpoints: [{ address: "h:1" }]
    outlier_detection:
      base_ejection_time: 60s
      max_ejection_time: 30s
      success_rate: { stdev_factor: .nan }
  - { name: u2, endpoints: [{ address: "h:1" }], outlier_detection: { success_rate: { stdev_factor: -1.5 } } }
  - { name: u3, endpoints: [{ address: "h:1" }], outlier_detection: { success_rate: { stdev_factor: .inf } } }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].outlier_detection.interval: must be greater than 0",
            "upstreams[0].outlier_detection.base_ejection_time: must be greater than 0",
            "upstreams[0].outlier_detection.max_ejection_percent: must be at most 100, got 101",
            "upstreams[0].outlier_detection.success_rate.min_hosts: must be at least 1, got 0",
            "upstreams[0].outlier_detection.success_rate.min_requests: must be at least 1, got 0",
            "upstreams[0].outlier_detection.success_rate.stdev_factor: must be a finite number greater than 0, got 0",
            "upstreams[1].outlier_detection.max_ejection_time: 30s must not be below base_ejection_time (1m)",
            "upstreams[1].outlier_detection.success_rate.stdev_factor: must be a finite number greater than 0, got NaN",
            "upstreams[2].outlier_detection.success_rate.stdev_factor: must be a finite number greater than 0, got -1.5",
            "upstreams[3].outlier_detection.success_rate.stdev_factor: must be a finite number greater than 0, got inf",
        ],
    );
}

#[test]
fn load_shedding_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: u0
    endpoints: [{ address: "h:1" }]
    load_shedding:
      adaptive_limit: { min: 0, window: 0s }
      queue_size: 10
      max_wait: 0s
  - { name: u1, endpoints: [{ address: "h:1" }], load_shedding: { adaptive_limit: { min: 10, initial: 5 } } }
  - { name: u2, endpoints: [{ address: "h:1" }], load_shedding: { adaptive_limit: { initial: 2000 } } }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].load_shedding.adaptive_limit.min: must be at least 1, got 0",
            "upstreams[0].load_shedding.adaptive_limit.window: must be greater than 0",
            "upstreams[0].load_shedding.max_wait: must be greater than 0 when queue_size is above 0 (set queue_size: 0 for no queue)",
            "upstreams[1].load_shedding.adaptive_limit: need min <= initial <= max, got 10 <= 5 <= 1000",
            "upstreams[2].load_shedding.adaptive_limit: need min <= initial <= max, got 5 <= 2000 <= 1000",
        ],
    );
}

#[test]
fn route_retry_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams: [{ name: api, endpoints: [{ address: "h:1" }] }]
routes:
  - name: r0
    retry:
      attempts: 0
      per_try_timeout: 0s
      on: []
      statuses: [200, 304, 700, 503]
      grpc_statuses: [0, 17, 14]
      backoff_base: 0s
      methods: [GET, get, "G T", POST]
      max_body: 32MiB
    action: { proxy: { upstream: api } }
  - name: r1
    timeout: 2s
    retry: { attempts: 11, per_try_timeout: 3s, on: [], backoff_base: 1s, backoff_max: 100ms, methods: [] }
    action: { proxy: { upstream: api } }
  - { name: r2, retry: {}, action: { respond: {} } }
"#;
    assert_problems(
        yaml,
        &[
            "routes[0].retry.attempts: must be 1..=10, got 0",
            "routes[0].retry.per_try_timeout: must be greater than 0",
            "routes[0].retry.statuses[0]: status 200 is not an error: only 4xx and 5xx responses are retried",
            "routes[0].retry.statuses[1]: status 304 is not an error: only 4xx and 5xx responses are retried",
            "routes[0].retry.statuses[2]: status 700 is outside 100..=599",
            "routes[0].retry.grpc_statuses[0]: gRPC status 0 is OK, not a failure",
            "routes[0].retry.grpc_statuses[1]: gRPC status 17 is outside 0..=16",
            "routes[0].retry.backoff_base: must be greater than 0",
            "routes[0].retry.methods[1]: \"get\" must be upper case (\"GET\"); methods are case-sensitive",
            "routes[0].retry.methods[2]: \"G T\" is not a valid HTTP method",
            "routes[0].retry.max_body: must be at most 16MiB (16777216 bytes), got 33554432 bytes: a kept body stays in memory for the whole request",
            "routes[1].retry.attempts: must be 1..=10, got 11",
            "routes[1].retry.per_try_timeout: 3s must not exceed the route's timeout (2s): the request ends before a try could",
            "routes[1].retry.on: nothing is retried: list failure kinds here, or give statuses or grpc_statuses",
            "routes[1].retry.backoff_max: 100ms must not be below backoff_base (1s)",
            "routes[1].retry.methods: at least one method is required (an empty list retries nothing)",
            "routes[2].retry: retry applies only to proxy routes",
        ],
    );
}

#[test]
fn deadline_priority_and_stream_idle_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
routes:
  - name: d0
    deadline: { header: ":authority" }
    stream_idle_timeout: 0s
    priority: { header: "bad name" }
    action: { respond: {} }
  - { name: d1, deadline: { header: GRPC-Timeout }, action: { respond: {} } }
  - { name: d2, deadline: { header: TE }, action: { respond: {} } }
  - { name: d3, deadline: { header: "bad name" }, action: { respond: {} } }
  - { name: d4, deadline: { header: "" }, priority: { header: "" }, action: { respond: {} } }
"#;
    assert_problems(
        yaml,
        &[
            "routes[0].deadline.header: \":authority\" is a pseudo-header; a deadline travels in a regular header",
            "routes[0].priority.header: \"bad name\" is not a valid header name",
            "routes[1].deadline.header: grpc-timeout is read by deadline.grpc_timeout; name a different header here",
            "routes[2].deadline.header: \"TE\" is a connection/framing header managed by the gateway and cannot carry a deadline",
            "routes[3].deadline.header: \"bad name\" is not a valid header name",
            "routes[4].deadline.header: \"\" is not a valid header name",
            "routes[4].priority.header: \"\" is not a valid header name",
        ],
    );
}

#[test]
fn protection_problems_are_all_reported_with_the_others() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: api
    endpoints: [{ address: "h:1", weight: 0 }]
    circuit_breaker: { failure_rate: 0, window: { calls: 0 } }
    limits: { max_requests: 0 }
    outlier_detection: { interval: 0s }
    load_shedding: { adaptive_limit: { min: 0 } }
routes:
  - name: r
    timeout: 1s
    retry: { attempts: 0, per_try_timeout: 2s }
    deadline: { header: te }
    action: { proxy: { upstream: billing } }
rate_limits:
  - { name: rl, limit: 0 }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].endpoints[0].weight: must be between 1 and 1000, got 0",
            "upstreams[0].circuit_breaker.window.calls: must be 1..=1000000, got 0",
            "upstreams[0].circuit_breaker.failure_rate: must be 1..=100, got 0",
            "upstreams[0].limits.max_requests: must be at least 1, got 0 (leave it out for no limit)",
            "upstreams[0].outlier_detection.interval: must be greater than 0",
            "upstreams[0].load_shedding.adaptive_limit.min: must be at least 1, got 0",
            "routes[0].action.proxy.upstream: unknown upstream \"billing\"",
            "routes[0].retry.attempts: must be 1..=10, got 0",
            "routes[0].retry.per_try_timeout: 2s must not exceed the route's timeout (1s): the request ends before a try could",
            "routes[0].deadline.header: \"te\" is a connection/framing header managed by the gateway and cannot carry a deadline",
            "rate_limits[0].limit: must be at least 1",
        ],
    );
}

#[test]
fn breaker_config_is_what_the_runtime_runs() {
    let config = crate::config::parse(
        r#"
upstreams:
  - { name: a, endpoints: [], circuit_breaker: {} }
  - name: b
    endpoints: []
    circuit_breaker:
      window: { duration: 30s }
      slow_call_duration: 2s
      open_duration: 1s
      max_open_duration: 1m
      half_open_probes: 3
      close_after: 2
"#,
    )
    .unwrap();
    let defaults = config.upstreams[0].circuit_breaker.as_ref().unwrap();
    let cfg = breaker_config(defaults);
    assert_eq!(cfg.window, BreakerWindow::Count(100));
    assert_eq!(cfg.min_calls, 20);
    assert_eq!(cfg.failure_rate_threshold, 50);
    assert_eq!(cfg.slow_call_threshold, Duration::MAX);
    assert_eq!(cfg.slow_call_rate_threshold, 100);
    assert_eq!(cfg.open_duration, Duration::from_secs(5));
    assert_eq!(cfg.max_open_duration, Duration::from_secs(5));
    assert_eq!(cfg.half_open_probes, 1);
    assert_eq!(cfg.half_open_successes_to_close, 1);

    let cfg = breaker_config(config.upstreams[1].circuit_breaker.as_ref().unwrap());
    assert_eq!(cfg.window, BreakerWindow::Time(Duration::from_secs(30)));
    assert_eq!(cfg.slow_call_threshold, Duration::from_secs(2));
    assert_eq!(cfg.open_duration, Duration::from_secs(1));
    assert_eq!(cfg.max_open_duration, Duration::from_secs(60));
    assert_eq!(cfg.half_open_probes, 3);
    assert_eq!(cfg.half_open_successes_to_close, 2);
}

/// A config whose one upstream `u` has every protection section at its defaults.
fn base() -> Config {
    crate::config::parse(
        r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - { name: u, endpoints: [{ address: "h:1" }], circuit_breaker: {}, load_shedding: {} }
"#,
    )
    .unwrap()
}

/// The problems of `config` with its first upstream edited by `edit`.
fn upstream_problems(config: &Config, edit: impl FnOnce(&mut UpstreamConfig)) -> Vec<String> {
    let mut config = config.clone();
    edit(&mut config.upstreams[0]);
    validate(&config).iter().map(ToString::to_string).collect()
}

/// Over a grid of edge values, a breaker section that validates always builds a `Breaker`,
/// and every one the algorithm refuses is reported on its own field (the library's check,
/// reported on the section as a whole, never has to speak).
#[test]
fn breaker_checks_agree_with_the_algorithm() {
    let config = base();
    let defaults = config.upstreams[0].circuit_breaker.clone().unwrap();
    let secs = Duration::from_secs;
    let windows = [
        (Some(0), None),
        (Some(1), None),
        (Some(10), None),
        (Some(1_000_000), None),
        (Some(1_000_001), None),
        (None, Some(Duration::ZERO)),
        (None, Some(Duration::from_nanos(5))),
        (None, Some(Duration::from_millis(100))),
        (None, None),
        (Some(10), Some(secs(1))),
    ];
    let (mut valid, mut invalid) = (0, 0);
    for (calls, duration) in windows {
        for min_calls in [0, 1, 10, 11] {
            for (failure_rate, slow_call_rate) in [(0, 50), (1, 0), (100, 101), (50, 100)] {
                for open_duration in [Duration::ZERO, secs(1)] {
                    for max_open_duration in [None, Some(Duration::ZERO), Some(secs(1))] {
                        for (half_open_probes, close_after) in [(0, 1), (1, 0), (1, 1), (1, 5)] {
                            let cb = CircuitBreakerConfig {
                                window: BreakerWindowConfig { calls, duration },
                                min_calls,
                                failure_rate,
                                slow_call_rate,
                                open_duration,
                                max_open_duration,
                                half_open_probes,
                                close_after,
                                ..defaults.clone()
                            };
                            let built = Breaker::new(breaker_config(&cb));
                            let found =
                                upstream_problems(&config, |u| u.circuit_breaker = Some(cb));
                            assert!(
                                !found
                                    .iter()
                                    .any(|f| f.starts_with("upstreams[0].circuit_breaker: ")),
                                "{found:?}"
                            );
                            if found.is_empty() {
                                assert!(built.is_ok(), "{:?}", built.err());
                                valid += 1;
                            } else {
                                invalid += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "{valid} valid, {invalid} invalid");
}

/// As above, for the adaptive limit of load shedding: valid exactly when it builds.
#[test]
fn adaptive_limit_checks_agree_with_the_algorithm() {
    let config = base();
    for min in [0, 1, 5] {
        for initial in [0, 1, 5, 10] {
            for max in [0, 1, 5, 10] {
                for window in [
                    Duration::ZERO,
                    Duration::from_nanos(1),
                    Duration::from_secs(1),
                ] {
                    let a = AdaptiveLimitConfig {
                        initial,
                        min,
                        max,
                        window,
                    };
                    let built = AdaptiveLimit::new(adaptive_config(&a));
                    let found = upstream_problems(&config, |u| {
                        u.load_shedding = Some(LoadSheddingConfig {
                            adaptive_limit: a,
                            ..LoadSheddingConfig::default()
                        });
                    });
                    assert_eq!(found.is_empty(), built.is_ok(), "{found:?}");
                    assert!(
                        !found.iter().any(|f| f.contains(": adaptive limit: ")),
                        "{found:?}"
                    );
                }
            }
        }
    }
}
