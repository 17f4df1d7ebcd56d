//! The proxy's error type: it knows whose fault a failure was and whether a retry may help,
//! and one function (`ProxyError::status_and_reason`) maps it to a status code and a reason.

use std::fmt;

use http::StatusCode;

use crate::reason;

/// Whose fault a failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// What went wrong, closed set; each maps to exactly one status and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NoRoute,
    NoHealthyUpstream,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamReset,
    UpstreamProtocol,
    RequestBodyTooLarge,
    BadRequest,
    DownstreamAborted,
    Internal,
    /// A circuit breaker is open (503, with `Retry-After`).
    CircuitOpen,
    /// An upstream threshold (connections, pending or active requests) is full (503).
    UpstreamOverflow,
    /// Load shedding refused the request (503, with `Retry-After`).
    Shed,
    /// The request's deadline passed before an upstream answered (504).
    DeadlineExceeded,
    /// The client did not send its request body in time (408).
    RequestTimeout,
}

#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// When the client may try again (sent as `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            source: None,
            retry_after: None,
        }
    }

    /// A refusal the client may retry after `retry_after`.
    pub fn retry_after(kind: ErrorKind, retry_after: std::time::Duration) -> Self {
        Self {
            kind,
            source: None,
            retry_after: Some(retry_after),
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: Some(source.into()),
            retry_after: None,
        }
    }

    pub fn side(&self) -> Side {
        match self.kind {
            ErrorKind::NoRoute
            | ErrorKind::RequestBodyTooLarge
            | ErrorKind::BadRequest
            | ErrorKind::DownstreamAborted => Side::Downstream,
            ErrorKind::NoHealthyUpstream
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamProtocol
            | ErrorKind::CircuitOpen
            | ErrorKind::UpstreamOverflow
            | ErrorKind::Shed => Side::Upstream,
            ErrorKind::DeadlineExceeded | ErrorKind::RequestTimeout => Side::Downstream,
            ErrorKind::Internal => Side::Internal,
        }
    }

    /// Whether trying again (possibly on another endpoint) may succeed. Whether the request
    /// may be replayed at all is the caller's question, not the error's.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset | ErrorKind::NoHealthyUpstream
        )
    }

    /// The one place that maps failures to what the client sees.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self.kind {
            ErrorKind::NoRoute => (StatusCode::NOT_FOUND, reason::NO_ROUTE),
            ErrorKind::NoHealthyUpstream => {
                (StatusCode::SERVICE_UNAVAILABLE, reason::NO_HEALTHY_UPSTREAM)
            }
            ErrorKind::UpstreamConnect => {
                (StatusCode::BAD_GATEWAY, reason::UPSTREAM_CONNECT_FAILED)
            }
            ErrorKind::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, reason::UPSTREAM_TIMEOUT),
            ErrorKind::UpstreamReset => (StatusCode::BAD_GATEWAY, reason::UPSTREAM_RESET),
            ErrorKind::UpstreamProtocol => {
                (StatusCode::BAD_GATEWAY, reason::UPSTREAM_PROTOCOL_ERROR)
            }
            ErrorKind::RequestBodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                reason::REQUEST_BODY_TOO_LARGE,
            ),
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, reason::BAD_REQUEST),
            // Nobody reads this answer; 499 as nginx logs it.
            ErrorKind::DownstreamAborted => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                reason::DOWNSTREAM_ABORTED,
            ),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, reason::INTERNAL_ERROR),
            ErrorKind::CircuitOpen => (StatusCode::SERVICE_UNAVAILABLE, reason::CIRCUIT_OPEN),
            ErrorKind::UpstreamOverflow => {
                (StatusCode::SERVICE_UNAVAILABLE, reason::UPSTREAM_OVERFLOW)
            }
            ErrorKind::Shed => (StatusCode::SERVICE_UNAVAILABLE, reason::SHED),
            ErrorKind::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, reason::DEADLINE_EXCEEDED),
            ErrorKind::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, reason::REQUEST_TIMEOUT),
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, reason) = self.status_and_reason();
        match &self.source {
            Some(src) => write!(f, "{reason}: {src}"),
            None => f.write_str(reason),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_table() {
        let cases = [
            (ErrorKind::NoRoute, 404, "no_route"),
            (ErrorKind::UpstreamConnect, 502, "upstream_connect_failed"),
            (ErrorKind::UpstreamTimeout, 504, "upstream_timeout"),
            (ErrorKind::NoHealthyUpstream, 503, "no_healthy_upstream"),
            (
                ErrorKind::RequestBodyTooLarge,
                413,
                "request_body_too_large",
            ),
        ];
        for (kind, status, reason) in cases {
            let (s, r) = ProxyError::new(kind).status_and_reason();
            assert_eq!((s.as_u16(), r), (status, reason), "{kind:?}");
        }
    }

    #[test]
    fn every_reason_is_listed_for_telemetry() {
        use ErrorKind::*;
        let kinds = [
            NoRoute,
            NoHealthyUpstream,
            UpstreamConnect,
            UpstreamTimeout,
            UpstreamReset,
            UpstreamProtocol,
            RequestBodyTooLarge,
            BadRequest,
            DownstreamAborted,
            Internal,
            CircuitOpen,
            UpstreamOverflow,
            Shed,
            DeadlineExceeded,
            RequestTimeout,
        ];
        for kind in kinds {
            // A new kind must be added above: the match fails to compile otherwise.
            match kind {
                NoRoute | NoHealthyUpstream | UpstreamConnect | UpstreamTimeout | UpstreamReset
                | UpstreamProtocol | RequestBodyTooLarge | BadRequest | DownstreamAborted
                | Internal | CircuitOpen | UpstreamOverflow | Shed | DeadlineExceeded
                | RequestTimeout => {}
            }
            let (_, reason) = ProxyError::new(kind).status_and_reason();
            assert!(
                crate::reason::ALL.contains(&reason),
                "{reason} missing from reason::ALL"
            );
            let header = http::HeaderValue::from_static(reason);
            assert_eq!(crate::reason::of_header(Some(&header)), reason);
        }
        let foreign = http::HeaderValue::from_static("made_up_by_an_upstream");
        assert_eq!(crate::reason::of_header(Some(&foreign)), "");
        assert_eq!(crate::reason::of_header(None), "");
    }

    #[test]
    fn only_upstream_transport_failures_are_retryable() {
        assert!(ProxyError::new(ErrorKind::UpstreamConnect).is_retryable());
        assert!(!ProxyError::new(ErrorKind::UpstreamTimeout).is_retryable());
        assert!(!ProxyError::new(ErrorKind::BadRequest).is_retryable());
        assert_eq!(ProxyError::new(ErrorKind::NoRoute).side(), Side::Downstream);
    }
}
