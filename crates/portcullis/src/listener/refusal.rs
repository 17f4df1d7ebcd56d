//! What a listener says when it refuses: the gateway's own answer in place of the bare one
//! hyper writes for a request head it cannot parse (counted and logged like every refusal),
//! and the count and log line of a connection closed without serving a request.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;

use super::ListenerShared;
use crate::app::Shared;
use crate::proxy::{headers, Downstream};
use crate::reason;

/// Counts and logs (rate-limited) a connection closed for `reason` without an answer.
pub fn connection_refused(
    shared: &Shared,
    ls: &ListenerShared,
    peer: SocketAddr,
    reason: &'static str,
) {
    if let Some(m) = &ls.metrics {
        m.refused(reason);
    }
    if let Some(suppressed) = shared.telemetry.refusal_log.admit(reason) {
        tracing::info!(listener = %ls.name, %peer, reason, suppressed, "connection closed");
    }
}

/// The status of a response hyper writes by itself, from the first bytes of the write: its
/// HTTP/1.1 server answers a head it cannot parse with an empty 400 (bad method, header,
/// URI or version), 431 (head larger than its buffer, too many headers) or 414 (URI over
/// its hard limit), then closes (hyper `proto::h1::role::Server::on_error`).
pub fn automatic_status(first: &[u8]) -> Option<StatusCode> {
    let code = first.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    match code {
        b"400 " => Some(StatusCode::BAD_REQUEST),
        b"431 " => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        b"414 " => Some(StatusCode::URI_TOO_LONG),
        _ => None,
    }
}

/// The gateway's answer in place of hyper's automatic `status`, as the bytes to send: the
/// reason header, the JSON body of `proxy::gateway_response`, `cache-control: no-store` and
/// `connection: close`. Counts it in the request metrics and the access log and logs it.
///
/// `in_request_line`: the head hyper gave up on had no line feed yet, so it was still in its
/// request line. hyper says 431 for every head larger than its buffer; when the request line
/// alone fills the buffer the right answer is 414. (Request lines and header lines that fit
/// in the buffer are checked against their own limits in the pipeline.)
pub fn replacement(
    ds: &Downstream,
    ls: &ListenerShared,
    status: StatusCode,
    in_request_line: bool,
) -> Bytes {
    let (status, reason) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE if in_request_line => {
            (StatusCode::URI_TOO_LONG, reason::URI_TOO_LONG)
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (status, reason::REQUEST_HEADER_TOO_LARGE),
        StatusCode::URI_TOO_LONG => (status, reason::URI_TOO_LONG),
        _ => (StatusCode::BAD_REQUEST, reason::BAD_REQUEST),
    };
    let request_id = headers::new_request_id();
    let id = request_id.to_str().unwrap_or("");
    let body = serde_json::json!({
        "reason": reason,
        "status": status.as_u16(),
        "request_id": id,
    })
    .to_string();
    let mut out = Vec::with_capacity(256 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         {}: {reason}\r\n{}: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason::HEADER,
        headers::REQUEST_ID,
        body.len(),
    );
    let telemetry = &ds.shared.telemetry;
    telemetry.refused_early(ds, status, reason, &request_id, body.len() as u64);
    if let Some(suppressed) = telemetry.refusal_log.admit(reason) {
        tracing::info!(
            listener = %ls.name, peer = %ds.peer, status = status.as_u16(), reason,
            request_id = id, suppressed, "request refused: malformed or oversized head"
        );
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_hypers_automatic_answers() {
        let cases: [(&[u8], Option<u16>); 7] = [
            (b"HTTP/1.1 400 Bad Request\r\n", Some(400)),
            (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
                Some(431),
            ),
            (b"HTTP/1.1 414 URI Too Long\r\n", Some(414)),
            (b"HTTP/1.1 404 Not Found\r\n", None),
            (b"HTTP/1.1 4000", None),
            (b"HTTP/1.0 400 Bad Request\r\n", None),
            (b"HTTP/1.1 40", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                automatic_status(bytes).map(|s| s.as_u16()),
                want,
                "{bytes:?}"
            );
        }
    }
}
