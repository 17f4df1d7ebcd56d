//! Every metric name the gateway exposes, and its help text, in one place
//! (`docs/metrics.md` lists them with their labels).
//!
//! Names are OpenMetrics family names: a counter's samples carry `_total` (added by the
//! encoder, so it is not part of the constant), an info metric's carry `_info`. The Prometheus
//! 0.0.4 text names its `TYPE` line after the sample (`format::to_prometheus_text`).

/// One metric: its family name and help text.
#[derive(Debug, Clone, Copy)]
pub struct Name {
    pub name: &'static str,
    pub help: &'static str,
}

const fn name(name: &'static str, help: &'static str) -> Name {
    Name { name, help }
}

// ----- requests (recorded per request, `Metrics::record`) -----

pub const REQUESTS: Name = name(
    "portcullis_requests",
    "Requests answered, by route, upstream, status class and reason",
);
pub const REQUEST_DURATION: Name = name(
    "portcullis_request_duration_seconds",
    "Time from the request's arrival to the end of its response body",
);
pub const REQUEST_BODY_BYTES: Name = name(
    "portcullis_request_body_bytes",
    "Request body bytes received from clients on their way to the upstream",
);
pub const RESPONSE_BODY_BYTES: Name = name(
    "portcullis_response_body_bytes",
    "Response body bytes sent to clients",
);
pub const DEADLINE_EXCEEDED: Name = name(
    "portcullis_deadline_exceeded",
    "Requests answered 504 deadline_exceeded (the caller's deadline ran out)",
);

// ----- listeners -----

pub const LISTENER_CONNECTIONS: Name = name(
    "portcullis_listener_connections",
    "Downstream connections open now",
);
pub const LISTENER_REQUESTS_IN_FLIGHT: Name = name(
    "portcullis_listener_requests_in_flight",
    "Requests (HTTP/1.1 requests and HTTP/2 streams) whose response head is not sent yet",
);
pub const LISTENER_CONNECTIONS_LIMITED: Name = name(
    "portcullis_listener_connections_limited",
    "Times the listener reached max_connections and stopped accepting until a connection closed",
);
pub const LISTENER_CONNECTIONS_REFUSED: Name = name(
    "portcullis_listener_connections_refused",
    "Connections the listener closed without serving a request, by reason",
);

// ----- upstreams and endpoints -----

pub const ENDPOINT_HEALTHY: Name = name(
    "portcullis_upstream_endpoint_healthy",
    "1 when the endpoint passes its active health checks (or has none), else 0",
);
pub const ENDPOINT_EJECTED: Name = name(
    "portcullis_upstream_endpoint_ejected",
    "1 when outlier detection has ejected the endpoint, else 0",
);
pub const ENDPOINT_REQUESTS_IN_FLIGHT: Name = name(
    "portcullis_upstream_endpoint_requests_in_flight",
    "Attempts sent to the endpoint and not finished",
);
pub const ENDPOINT_CONNECT_ERRORS: Name = name(
    "portcullis_upstream_endpoint_connect_errors",
    "Connections to the endpoint that failed to open (TCP connect, its timeout, or the HTTP handshake)",
);
pub const UPSTREAM_CONNECTIONS_ACTIVE: Name = name(
    "portcullis_upstream_connections_active",
    "Connections to the upstream's endpoints open now (in use or idle)",
);
pub const UPSTREAM_CONNECTIONS_IDLE: Name = name(
    "portcullis_upstream_connections_idle",
    "HTTP/1.1 keep-alive connections to the upstream kept idle now",
);
pub const UPSTREAM_OVERFLOWED: Name = name(
    "portcullis_upstream_overflowed",
    "Requests refused by the upstream's connection or request caps (503 upstream_overflow)",
);
pub const UPSTREAM_EJECTIONS: Name = name(
    "portcullis_upstream_ejections",
    "Endpoint ejections by outlier detection, by cause",
);
pub const UPSTREAM_EJECTIONS_SKIPPED: Name = name(
    "portcullis_upstream_ejections_skipped",
    "Ejections outlier detection wanted but max_ejection_percent forbade",
);
pub const UPSTREAM_RETRIES: Name = name(
    "portcullis_upstream_retries",
    "Retries sent to the upstream, by the cause of the attempt that was retried",
);
pub const UPSTREAM_RETRIES_REFUSED: Name = name(
    "portcullis_upstream_retries_refused",
    "Retries the upstream's retry budget refused",
);
pub const UPSTREAM_SHED: Name = name(
    "portcullis_upstream_shed",
    "Requests shed by the upstream's load shedder, by cause (503 shed)",
);
pub const UPSTREAM_CONCURRENCY_LIMIT: Name = name(
    "portcullis_upstream_concurrency_limit",
    "The load shedder's adaptive concurrency limit now",
);
pub const UPSTREAM_CONCURRENCY_IN_FLIGHT: Name = name(
    "portcullis_upstream_concurrency_in_flight",
    "Requests holding a slot of the adaptive concurrency limit now",
);
pub const UPSTREAM_QUEUED: Name = name(
    "portcullis_upstream_queued",
    "Requests waiting in the load shedder's queue now",
);

// ----- circuit breakers -----

pub const BREAKER_STATE: Name = name(
    "portcullis_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 open, 2 half-open",
);
pub const BREAKER_FORCED: Name = name(
    "portcullis_circuit_breaker_forced",
    "Operator override from the admin API: 0 none, 1 held open, 2 held closed",
);
pub const BREAKER_TRANSITIONS: Name = name(
    "portcullis_circuit_breaker_transitions",
    "Circuit breaker state changes, by from and to state",
);
pub const BREAKER_REJECTED: Name = name(
    "portcullis_circuit_breaker_rejected",
    "Calls the circuit breaker refused (open, or half-open with every probe slot taken)",
);

// ----- rate limits -----

pub const RATE_LIMIT_DECISIONS: Name = name(
    "portcullis_rate_limit_decisions",
    "Rate-limit decisions by policy: allowed, denied, delayed, shadow_denied, skipped (no key)",
);

// ----- the other telemetry sinks -----

pub const ACCESS_LOG_LINES: Name = name(
    "portcullis_access_log_lines",
    "Access log lines by outcome: written, dropped (buffer full), failed (write error)",
);
pub const TRACE_SPANS: Name = name(
    "portcullis_trace_spans",
    "Finished sampled spans by outcome: exported, dropped (export queue full), failed (export error)",
);

// ----- configuration and build -----

pub const BUILD: Name = name("portcullis_build", "The running portcullis build");
pub const CONFIG: Name = name(
    "portcullis_config",
    "The running configuration: a hash of its normalised form",
);
pub const CONFIG_RELOADS: Name = name(
    "portcullis_config_reloads",
    "Configuration reloads applied (reload is not implemented yet: always 0)",
);

// ----- process (the names every Prometheus client library uses) -----

pub const PROCESS_CPU_SECONDS: Name = name(
    "process_cpu_seconds",
    "User and system CPU time spent by the process, in seconds",
);
pub const PROCESS_RESIDENT_MEMORY: Name = name(
    "process_resident_memory_bytes",
    "Resident memory of the process, in bytes",
);
pub const PROCESS_OPEN_FDS: Name = name("process_open_fds", "Open file descriptors of the process");
pub const PROCESS_THREADS: Name = name("process_threads", "Threads of the process");
pub const PROCESS_START_TIME: Name = name(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch, in seconds",
);

/// Every metric above (for the docs test and uniqueness checks).
pub const ALL: &[Name] = &[
    REQUESTS,
    REQUEST_DURATION,
    REQUEST_BODY_BYTES,
    RESPONSE_BODY_BYTES,
    DEADLINE_EXCEEDED,
    LISTENER_CONNECTIONS,
    LISTENER_REQUESTS_IN_FLIGHT,
    LISTENER_CONNECTIONS_LIMITED,
    LISTENER_CONNECTIONS_REFUSED,
    ENDPOINT_HEALTHY,
    ENDPOINT_EJECTED,
    ENDPOINT_REQUESTS_IN_FLIGHT,
    ENDPOINT_CONNECT_ERRORS,
    UPSTREAM_CONNECTIONS_ACTIVE,
    UPSTREAM_CONNECTIONS_IDLE,
    UPSTREAM_OVERFLOWED,
    UPSTREAM_EJECTIONS,
    UPSTREAM_EJECTIONS_SKIPPED,
    UPSTREAM_RETRIES,
    UPSTREAM_RETRIES_REFUSED,
    UPSTREAM_SHED,
    UPSTREAM_CONCURRENCY_LIMIT,
    UPSTREAM_CONCURRENCY_IN_FLIGHT,
    UPSTREAM_QUEUED,
    BREAKER_STATE,
    BREAKER_FORCED,
    BREAKER_TRANSITIONS,
    BREAKER_REJECTED,
    RATE_LIMIT_DECISIONS,
    ACCESS_LOG_LINES,
    TRACE_SPANS,
    BUILD,
    CONFIG,
    CONFIG_RELOADS,
    PROCESS_CPU_SECONDS,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_OPEN_FDS,
    PROCESS_THREADS,
    PROCESS_START_TIME,
];

// ----- label names -----

pub const ROUTE: &str = "route";
pub const UPSTREAM: &str = "upstream";
pub const ENDPOINT: &str = "endpoint";
pub const LISTENER: &str = "listener";
pub const POLICY: &str = "policy";
pub const STATUS_CLASS: &str = "status_class";
pub const REASON: &str = "reason";
pub const CAUSE: &str = "cause";
pub const DECISION: &str = "decision";
pub const OUTCOME: &str = "outcome";
pub const FROM: &str = "from";
pub const TO: &str = "to";
pub const SCOPE: &str = "scope";
pub const VERSION: &str = "version";
pub const HASH: &str = "hash";

/// The `reason` label of a request the upstream answered (the gateway added no reason).
pub const REASON_NONE: &str = "none";
/// The `reason` label of a reason code this build does not list in `reason::ALL`.
pub const REASON_OTHER: &str = "other";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_documented_and_need_no_escaping() {
        let doc = include_str!("../../../../../docs/metrics.md");
        for (i, m) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert!(
                ["", "_total", "_info"]
                    .iter()
                    .any(|suffix| doc.contains(&format!("| `{}{suffix}` |", m.name))),
                "{} is not in docs/metrics.md",
                m.name
            );
            // HELP escaping differs between the formats for these; none is needed.
            assert!(!m.help.contains(['\\', '"', '\n']), "{}", m.name);
            assert!(m.name.starts_with("portcullis_") || m.name.starts_with("process_"));
        }
    }
}
