//! What a gRPC client gets when the gateway answers its request itself: a trailers-only gRPC
//! response (HTTP 200, `grpc-status`, `grpc-message`, no body) instead of an HTTP error,
//! which gRPC clients would report as `UNAVAILABLE` (and retry) whatever the reason. One
//! function (`code`) maps a reason to the gRPC status code.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::body::Body;
use crate::reason;

/// gRPC status codes the gateway answers with (grpc/doc/statuscodes.md).
pub mod code {
    pub const CANCELLED: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// The gRPC flavour of a request, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`, ...
    Web,
    /// `application/grpc-web-text`, `application/grpc-web-text+proto`, ...
    WebText,
}

impl Kind {
    /// The request's gRPC flavour, or `None` for any other request. One header lookup and
    /// a prefix comparison: it runs for every request.
    pub fn of(headers: &HeaderMap) -> Option<Kind> {
        let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
        const PREFIX: &[u8] = b"application/grpc";
        let (head, rest) = value.split_at_checked(PREFIX.len())?;
        if !head.eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let (kind, rest) = if let Some(rest) = strip_prefix_ignore_case(rest, b"-web-text") {
            (Kind::WebText, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(rest, b"-web") {
            (Kind::Web, rest)
        } else {
            (Kind::Grpc, rest)
        };
        matches!(rest.first(), None | Some(b'+' | b';' | b' ')).then_some(kind)
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Kind::Grpc => "application/grpc",
            Kind::Web => "application/grpc-web",
            Kind::WebText => "application/grpc-web-text",
        })
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// The gRPC status code for a response the gateway made with `reason` and would have sent
/// with HTTP `status`. Reasons not listed here follow gRPC's mapping of HTTP statuses
/// (grpc/doc/http-grpc-status-mapping.md).
pub fn code(reason: &str, status: StatusCode) -> u8 {
    match reason {
        reason::RATE_LIMITED | reason::REQUEST_BODY_TOO_LARGE => code::RESOURCE_EXHAUSTED,
        reason::DEADLINE_EXCEEDED
        | reason::UPSTREAM_TIMEOUT
        | reason::REQUEST_TIMEOUT
        | reason::HEADER_TIMEOUT
        | reason::FIRST_REQUEST_TIMEOUT => code::DEADLINE_EXCEEDED,
        reason::CLIENT_CONNECTION_LIMIT
        | reason::CIRCUIT_OPEN
        | reason::SHED
        | reason::NO_HEALTHY_UPSTREAM
        | reason::UPSTREAM_OVERFLOW
        | reason::UPSTREAM_CONNECT_FAILED
        | reason::UPSTREAM_RESET => code::UNAVAILABLE,
        reason::NO_ROUTE => code::UNIMPLEMENTED,
        // The gateway could not make sense of the request (its framing or headers, not its
        // message): gRPC maps HTTP 400 to INTERNAL, not to INVALID_ARGUMENT, which would
        // blame the application's argument.
        // Framing, `Host` and head-limit refusals are the same kind of fault.
        reason::BAD_REQUEST
        | reason::BAD_FRAMING
        | reason::INVALID_HOST
        | reason::UNDERSCORE_HEADER
        | reason::UNSUPPORTED_TRANSFER_CODING
        | reason::URI_TOO_LONG
        | reason::REQUEST_HEADER_TOO_LARGE
        | reason::INTERNAL_ERROR
        | reason::UPSTREAM_PROTOCOL_ERROR => code::INTERNAL,
        reason::DOWNSTREAM_ABORTED => code::CANCELLED,
        _ => match status.as_u16() {
            400 => code::INTERNAL,
            401 => code::UNAUTHENTICATED,
            403 => code::PERMISSION_DENIED,
            404 => code::UNIMPLEMENTED,
            408 | 504 => code::DEADLINE_EXCEEDED,
            413 | 429 => code::RESOURCE_EXHAUSTED,
            502 | 503 => code::UNAVAILABLE,
            _ => code::UNKNOWN,
        },
    }
}

/// Turns the gateway's own response `resp` (made for `reason`) into a trailers-only gRPC
/// response: status 200, the flavour's `content-type`, `grpc-status`, `grpc-message` (the
/// reason), no body. Every other header (`x-portcullis-reason`, `Retry-After`, `RateLimit`,
/// ...) stays.
pub fn refusal(resp: Response<Body>, kind: Kind, reason: &'static str) -> Response<Body> {
    let (mut head, _body) = resp.into_parts();
    let grpc_status = code(reason, head.status);
    head.status = StatusCode::OK;
    let h = &mut head.headers;
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_TYPE, kind.content_type());
    h.insert(GRPC_STATUS, HeaderValue::from(u16::from(grpc_status)));
    if let Ok(message) = HeaderValue::from_bytes(&percent_encode(reason.as_bytes())) {
        h.insert(GRPC_MESSAGE, message);
    }
    Response::from_parts(head, Body::Empty)
}

/// `grpc-message` encoding (grpc/doc/PROTOCOL-HTTP2.md): bytes outside printable ASCII
/// (0x20–0x7E) and `%` are written as `%XX`.
pub fn percent_encode(message: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(message.len());
    for &b in message {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(content_type: &str) -> Option<Kind> {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        Kind::of(&h)
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        for (ct, want) in [
            ("application/grpc", Some(Kind::Grpc)),
            ("application/grpc+proto", Some(Kind::Grpc)),
            ("Application/GRPC+json", Some(Kind::Grpc)),
            ("application/grpc; charset=utf-8", Some(Kind::Grpc)),
            ("application/grpc-web", Some(Kind::Web)),
            ("application/grpc-web+proto", Some(Kind::Web)),
            ("application/grpc-web-text", Some(Kind::WebText)),
            ("application/grpc-web-text+proto", Some(Kind::WebText)),
            ("application/grpcx", None),
            ("application/grpc-webx", None),
            ("application/grpc-other", None),
            ("application/json", None),
            ("application/grp", None),
            ("text/plain", None),
        ] {
            assert_eq!(kind(ct), want, "{ct}");
        }
        assert_eq!(Kind::of(&HeaderMap::new()), None);
    }

    #[test]
    fn every_reason_has_its_grpc_code() {
        use code::*;
        let table = [
            (reason::RATE_LIMITED, RESOURCE_EXHAUSTED),
            (reason::REQUEST_BODY_TOO_LARGE, RESOURCE_EXHAUSTED),
            (reason::DEADLINE_EXCEEDED, DEADLINE_EXCEEDED),
            (reason::UPSTREAM_TIMEOUT, DEADLINE_EXCEEDED),
            (reason::REQUEST_TIMEOUT, DEADLINE_EXCEEDED),
            (reason::CIRCUIT_OPEN, UNAVAILABLE),
            (reason::SHED, UNAVAILABLE),
            (reason::NO_HEALTHY_UPSTREAM, UNAVAILABLE),
            (reason::UPSTREAM_OVERFLOW, UNAVAILABLE),
            (reason::UPSTREAM_CONNECT_FAILED, UNAVAILABLE),
            (reason::UPSTREAM_RESET, UNAVAILABLE),
            (reason::UPSTREAM_PROTOCOL_ERROR, INTERNAL),
            (reason::NO_ROUTE, UNIMPLEMENTED),
            (reason::BAD_REQUEST, INTERNAL),
            (reason::INTERNAL_ERROR, INTERNAL),
            (reason::DOWNSTREAM_ABORTED, CANCELLED),
            (reason::BAD_FRAMING, INTERNAL),
            (reason::INVALID_HOST, INTERNAL),
            (reason::UNDERSCORE_HEADER, INTERNAL),
            (reason::UNSUPPORTED_TRANSFER_CODING, INTERNAL),
            (reason::URI_TOO_LONG, INTERNAL),
            (reason::REQUEST_HEADER_TOO_LARGE, INTERNAL),
            (reason::HEADER_TIMEOUT, DEADLINE_EXCEEDED),
            (reason::FIRST_REQUEST_TIMEOUT, DEADLINE_EXCEEDED),
            (reason::CLIENT_CONNECTION_LIMIT, UNAVAILABLE),
        ];
        for (reason, want) in table {
            assert_eq!(code(reason, StatusCode::IM_A_TEAPOT), want, "{reason}");
        }
        // Every gateway reason but the configured answers is in the table.
        for reason in reason::ALL {
            if ![reason::DIRECT_RESPONSE, reason::REDIRECT].contains(reason) {
                assert!(table.iter().any(|(r, _)| r == reason), "{reason} unmapped");
            }
        }
    }

    #[test]
    fn other_reasons_follow_the_http_status_mapping() {
        use code::*;
        for (status, want) in [
            (400, INTERNAL),
            (401, UNAUTHENTICATED),
            (403, PERMISSION_DENIED),
            (404, UNIMPLEMENTED),
            (429, RESOURCE_EXHAUSTED),
            (431, UNKNOWN),
            (502, UNAVAILABLE),
            (503, UNAVAILABLE),
            (504, DEADLINE_EXCEEDED),
            (500, UNKNOWN),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(code("some_new_reason", status), want, "{status}");
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode(b"rate_limited"), b"rate_limited");
        assert_eq!(percent_encode(b"50% off"), b"50%25 off");
        assert_eq!(percent_encode("caf\u{e9}\n".as_bytes()), b"caf%C3%A9%0A");
        assert_eq!(percent_encode(b"\x7f~ "), b"%7F~ ");
    }

    #[test]
    fn a_refusal_becomes_trailers_only() {
        let id = HeaderValue::from_static("abc");
        let mut resp = crate::proxy::gateway_response(
            StatusCode::TOO_MANY_REQUESTS,
            reason::RATE_LIMITED,
            &id,
            serde_json::Map::new(),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(3));
        let resp = refusal(resp, Kind::Grpc, reason::RATE_LIMITED);
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(h[GRPC_STATUS], "8");
        assert_eq!(h[GRPC_MESSAGE], "rate_limited");
        assert_eq!(h[reason::HEADER], "rate_limited");
        assert_eq!(h[header::RETRY_AFTER], "3");
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(matches!(resp.body(), Body::Empty));
    }
}
