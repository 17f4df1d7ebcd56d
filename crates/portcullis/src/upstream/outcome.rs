//! `Outcome`: what one attempt to an endpoint came to, as breakers, retries and outlier
//! detection see it. One classification, so the three never disagree about a failure.

use http::HeaderMap;

use crate::config::schema::FailureKind;
use crate::error::{ErrorKind, ProxyError};

/// How an attempt failed before a response head arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// The TCP connect failed or timed out.
    Connect,
    /// The connection was closed or reset before the response head.
    Reset,
    /// No response head in time.
    Timeout,
    /// The upstream answered something that is not HTTP.
    Protocol,
}

/// The result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived; `grpc_status` is set for trailers-only gRPC responses
    /// (`grpc-status` in the headers).
    Response {
        status: u16,
        grpc_status: Option<u32>,
    },
    /// No response head.
    Failed(GatewayError),
}

impl Outcome {
    /// The outcome of a response head.
    pub fn response(status: http::StatusCode, headers: &HeaderMap) -> Outcome {
        let grpc_status = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Outcome::Response {
            status: status.as_u16(),
            grpc_status,
        }
    }

    /// The outcome of a failed send; `None` for failures that say nothing about the endpoint
    /// (the client's body was too large, the client went away).
    pub fn from_error(err: &ProxyError) -> Option<Outcome> {
        let failure = match err.kind {
            ErrorKind::UpstreamConnect => GatewayError::Connect,
            ErrorKind::UpstreamReset => GatewayError::Reset,
            ErrorKind::UpstreamTimeout => GatewayError::Timeout,
            ErrorKind::UpstreamProtocol => GatewayError::Protocol,
            _ => return None,
        };
        Some(Outcome::Failed(failure))
    }

    /// Whether the outcome is of `kind`.
    pub fn is(&self, kind: FailureKind) -> bool {
        match (self, kind) {
            (Outcome::Failed(GatewayError::Connect), FailureKind::ConnectFailure)
            | (Outcome::Failed(GatewayError::Reset), FailureKind::Reset)
            | (Outcome::Failed(GatewayError::Timeout), FailureKind::Timeout)
            | (Outcome::Failed(_), FailureKind::GatewayError) => true,
            (Outcome::Response { status, .. }, FailureKind::ServerError) => *status >= 500,
            _ => false,
        }
    }

    /// Whether the outcome matches any of `kinds`, a listed status or a listed gRPC status.
    pub fn matches(&self, kinds: &[FailureKind], statuses: &[u16], grpc: &[u32]) -> bool {
        if kinds.iter().any(|k| self.is(*k)) {
            return true;
        }
        match self {
            Outcome::Response {
                status,
                grpc_status,
            } => statuses.contains(status) || grpc_status.is_some_and(|g| grpc.contains(&g)),
            Outcome::Failed(_) => false,
        }
    }

    /// A gateway error (connect failure, reset, timeout, protocol error).
    pub fn is_gateway_error(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }

    /// A 5xx response.
    pub fn is_server_error(&self) -> bool {
        matches!(self, Outcome::Response { status, .. } if *status >= 500)
    }
}

/// Why an attempt was retried, for counting (a closed set: metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    ConnectFailure,
    Reset,
    Timeout,
    ProtocolError,
    Status,
    GrpcStatus,
}

impl RetryCause {
    pub const ALL: [RetryCause; 6] = [
        RetryCause::ConnectFailure,
        RetryCause::Reset,
        RetryCause::Timeout,
        RetryCause::ProtocolError,
        RetryCause::Status,
        RetryCause::GrpcStatus,
    ];

    /// The cause of retrying `outcome`: a gRPC status when the response carried one that
    /// is not OK, else the status or the gateway error.
    pub fn of(outcome: &Outcome) -> RetryCause {
        match outcome {
            Outcome::Failed(GatewayError::Connect) => RetryCause::ConnectFailure,
            Outcome::Failed(GatewayError::Reset) => RetryCause::Reset,
            Outcome::Failed(GatewayError::Timeout) => RetryCause::Timeout,
            Outcome::Failed(GatewayError::Protocol) => RetryCause::ProtocolError,
            Outcome::Response {
                grpc_status: Some(code),
                ..
            } if *code != 0 => RetryCause::GrpcStatus,
            Outcome::Response { .. } => RetryCause::Status,
        }
    }

    /// The label: `connect_failure`, `reset`, `timeout`, `protocol_error`, `status`,
    /// `grpc_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::ConnectFailure => "connect_failure",
            RetryCause::Reset => "reset",
            RetryCause::Timeout => "timeout",
            RetryCause::ProtocolError => "protocol_error",
            RetryCause::Status => "status",
            RetryCause::GrpcStatus => "grpc_status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_statuses_and_grpc_codes_classify() {
        let reset = Outcome::Failed(GatewayError::Reset);
        assert!(reset.is(FailureKind::Reset) && reset.is(FailureKind::GatewayError));
        assert!(!reset.is(FailureKind::ConnectFailure) && !reset.is(FailureKind::ServerError));
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let unavailable = Outcome::response(http::StatusCode::OK, &headers);
        assert!(unavailable.matches(&[], &[], &[14]));
        assert!(!unavailable.matches(&[FailureKind::ServerError], &[503], &[4]));
        let busy = Outcome::response(http::StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new());
        assert!(busy.is(FailureKind::ServerError) && busy.matches(&[], &[503], &[]));
        assert!(busy.is_server_error() && !busy.is_gateway_error());
        assert_eq!(RetryCause::of(&busy), RetryCause::Status);
        assert_eq!(RetryCause::of(&unavailable), RetryCause::GrpcStatus);
        assert_eq!(RetryCause::of(&reset).as_str(), "reset");
    }
}
