//! Reason codes: why the gateway answered a request itself. One constant each, used in the
//! `x-portcullis-reason` header, the JSON body, logs and (later) metric labels.

/// Header that carries the reason on every response the gateway generates.
pub const HEADER: &str = "x-portcullis-reason";

pub const NO_ROUTE: &str = "no_route";
pub const UPSTREAM_CONNECT_FAILED: &str = "upstream_connect_failed";
pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
pub const UPSTREAM_RESET: &str = "upstream_reset";
pub const UPSTREAM_PROTOCOL_ERROR: &str = "upstream_protocol_error";
pub const NO_HEALTHY_UPSTREAM: &str = "no_healthy_upstream";
pub const REQUEST_BODY_TOO_LARGE: &str = "request_body_too_large";
pub const BAD_REQUEST: &str = "bad_request";
pub const DOWNSTREAM_ABORTED: &str = "downstream_aborted";
pub const INTERNAL_ERROR: &str = "internal_error";
pub const DIRECT_RESPONSE: &str = "direct_response";
pub const REDIRECT: &str = "redirect";
pub const RATE_LIMITED: &str = "rate_limited";
pub const CIRCUIT_OPEN: &str = "circuit_open";
pub const UPSTREAM_OVERFLOW: &str = "upstream_overflow";
pub const SHED: &str = "shed";
pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
pub const REQUEST_TIMEOUT: &str = "request_timeout";
pub const UNSUPPORTED_TRANSFER_CODING: &str = "unsupported_transfer_coding";
pub const BAD_FRAMING: &str = "bad_framing";
pub const INVALID_HOST: &str = "invalid_host";
pub const UNDERSCORE_HEADER: &str = "underscore_header";
/// 414: the request line is longer than the listener allows.
pub const URI_TOO_LONG: &str = "uri_too_long";
/// 431: the request head (or one header line, or the number of headers) is over the limit.
pub const REQUEST_HEADER_TOO_LARGE: &str = "request_header_too_large";
/// Connection closed: no request head within the listener's `header_read_timeout`.
pub const HEADER_TIMEOUT: &str = "header_timeout";
/// Connection closed: no first request within the listener's `first_request_timeout`.
pub const FIRST_REQUEST_TIMEOUT: &str = "first_request_timeout";
/// Connection closed at accept: its client IP holds `max_connections_per_ip` already.
pub const CLIENT_CONNECTION_LIMIT: &str = "client_connection_limit";

/// Every reason, for turning a gateway-made response's header back into its constant.
pub const ALL: &[&str] = &[
    NO_ROUTE,
    UPSTREAM_CONNECT_FAILED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_RESET,
    UPSTREAM_PROTOCOL_ERROR,
    NO_HEALTHY_UPSTREAM,
    REQUEST_BODY_TOO_LARGE,
    BAD_REQUEST,
    DOWNSTREAM_ABORTED,
    INTERNAL_ERROR,
    DIRECT_RESPONSE,
    REDIRECT,
    RATE_LIMITED,
    CIRCUIT_OPEN,
    UPSTREAM_OVERFLOW,
    SHED,
    DEADLINE_EXCEEDED,
    REQUEST_TIMEOUT,
    UNSUPPORTED_TRANSFER_CODING,
    BAD_FRAMING,
    INVALID_HOST,
    UNDERSCORE_HEADER,
    URI_TOO_LONG,
    REQUEST_HEADER_TOO_LARGE,
    HEADER_TIMEOUT,
    FIRST_REQUEST_TIMEOUT,
    CLIENT_CONNECTION_LIMIT,
];

/// The constant for a reason header the gateway itself wrote (`""` when it is none of ours).
pub fn of_header(value: Option<&http::HeaderValue>) -> &'static str {
    let Some(value) = value else { return "" };
    ALL.iter()
        .find(|r| r.as_bytes() == value.as_bytes())
        .copied()
        .unwrap_or("")
}
