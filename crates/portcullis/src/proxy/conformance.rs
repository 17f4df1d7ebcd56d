//! Request conformance: the HTTP/1.1 framing and `Host` rules of RFC 9112 and the listener's
//! head limits (request line, header line, whole head, underscores in names), checked on the
//! head hyper hands over before anything else reads it.
//!
//! hyper's parser already refuses (400) a `Transfer-Encoding` that does not end in `chunked`,
//! any on HTTP/1.0, an invalid or comma-joined `Content-Length`, and differing repeated ones.
//! It does not refuse the rest, so this check does. What it cannot see in the head it gets:
//! hyper removes every `Content-Length` of a request that also has `Transfer-Encoding`, and
//! folds repeated identical `Content-Length` lines into one. The connection's IO scans the
//! head's bytes for both (`listener::head_scan`) and marks such a request
//! `AmbiguousFraming`, which is refused here like the same framing on HTTP/2. A pipelined
//! head read while the request before it is outstanding is not scanned (see
//! `listener::watched`): it gets hyper's handling, which never forwards it ambiguous (the
//! body is read as chunked and the connection closed after the response, RFC 9112 §6.1; the
//! one length is used, RFC 9110 §8.6).
//!
//! One pass over the header lines, no allocation unless a request is refused, a `_` header is
//! dropped or an absolute-form target's authority replaces `Host`.

use http::header::{self, GetAll, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{StatusCode, Version};

use crate::body::Body;
use crate::config::schema::{ListenerLimits, UnderscoreHeaders};
use crate::reason;

/// `" HTTP/1.1"`: the space and version that end a request line.
const VERSION_LEN: usize = 9;
/// `": "` between a header's name and value, and the `CRLF` ending a line.
const SEPARATOR_LEN: usize = 2;
const CRLF_LEN: usize = 2;

/// One listener's limits, compiled from its config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line (method, target, version), in bytes.
    pub max_request_line: usize,
    /// Longest header line (`name: value`), in bytes.
    pub max_header_line: usize,
    /// Largest HTTP/1.x head (request line and header lines with their CRLFs, and the blank
    /// line). hyper cannot hold values below its 8 KiB read buffer, so this check does; on
    /// HTTP/2 the header list limit holds at every size already.
    pub max_head: usize,
    pub underscore_headers: UnderscoreHeaders,
}

impl Limits {
    pub fn new(limits: &ListenerLimits) -> Limits {
        let bytes = |b: bytesize::ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        Limits {
            max_request_line: bytes(limits.max_request_line_bytes),
            max_header_line: bytes(limits.max_header_line_bytes),
            max_head: bytes(limits.max_header_bytes),
            underscore_headers: limits.underscore_headers,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(&ListenerLimits::default())
    }
}

/// The mark the connection puts in an HTTP/1.1 request's extensions when the head as read
/// from the socket had `Content-Length` with `Transfer-Encoding`, or `Content-Length` on more
/// than one line (which hyper hides: see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousFraming;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    /// The body's framing is in doubt: the connection must not carry another request.
    pub close: bool,
}

impl Refusal {
    const fn new(status: StatusCode, reason: &'static str, close: bool) -> Refusal {
        Refusal {
            status,
            reason,
            close,
        }
    }

    /// The gateway's response for this refusal; `connection: close` on HTTP/1.x when the
    /// framing is in doubt (hyper then closes the connection after the response).
    pub fn response(&self, version: Version, request_id: &HeaderValue) -> http::Response<Body> {
        let mut resp =
            super::gateway_response(self.status, self.reason, request_id, Default::default());
        if self.close && version <= Version::HTTP_11 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

const URI_TOO_LONG: Refusal = Refusal::new(StatusCode::URI_TOO_LONG, reason::URI_TOO_LONG, false);
const HEADER_TOO_LARGE: Refusal = Refusal::new(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    reason::REQUEST_HEADER_TOO_LARGE,
    false,
);
const BAD_FRAMING: Refusal = Refusal::new(StatusCode::BAD_REQUEST, reason::BAD_FRAMING, true);
const UNSUPPORTED_CODING: Refusal = Refusal::new(
    StatusCode::NOT_IMPLEMENTED,
    reason::UNSUPPORTED_TRANSFER_CODING,
    true,
);
const INVALID_HOST: Refusal = Refusal::new(StatusCode::BAD_REQUEST, reason::INVALID_HOST, false);
const UNDERSCORE: Refusal = Refusal::new(StatusCode::BAD_REQUEST, reason::UNDERSCORE_HEADER, false);

/// Checks a request head; may drop `_` headers (`underscore_headers: drop`) and replace
/// `Host` by an absolute-form target's authority (RFC 9112 §3.2.2).
pub fn check(parts: &mut Parts, limits: &Limits) -> Result<(), Refusal> {
    let h1 = parts.version <= Version::HTTP_11;
    let line = request_line_len(parts, h1);
    if line > limits.max_request_line {
        return Err(URI_TOO_LONG);
    }
    let mut head = line + CRLF_LEN;
    let mut hosts = 0usize;
    let mut codings = 0usize;
    let mut lengths = 0usize;
    let mut underscores = false;
    for (name, value) in &parts.headers {
        let name_str = name.as_str();
        let len = name_str.len() + SEPARATOR_LEN + value.len();
        if len > limits.max_header_line {
            return Err(HEADER_TOO_LARGE);
        }
        head += len + CRLF_LEN;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::TRANSFER_ENCODING {
            codings += 1;
        } else if name == header::CONTENT_LENGTH {
            lengths += 1;
        } else if name_str.as_bytes().contains(&b'_') {
            underscores = true;
        }
    }
    head += CRLF_LEN;
    if h1 && head > limits.max_head {
        return Err(HEADER_TOO_LARGE);
    }
    // hyper folds what HTTP/1 repeats (the connection marks those heads; one framing
    // header is always left); HTTP/2 hands them over as sent.
    let folded = || h1 && parts.extensions.get::<AmbiguousFraming>().is_some();
    if lengths > 1 || (lengths > 0 && codings > 0) || (lengths + codings > 0 && folded()) {
        return Err(BAD_FRAMING);
    }
    if codings > 0 {
        transfer_codings(parts.headers.get_all(header::TRANSFER_ENCODING))?;
    }
    host(parts, hosts)?;
    if underscores {
        match limits.underscore_headers {
            UnderscoreHeaders::Reject => return Err(UNDERSCORE),
            UnderscoreHeaders::Drop => drop_underscored(&mut parts.headers),
            UnderscoreHeaders::Allow => {}
        }
    }
    Ok(())
}

/// The request line's length as the client sent it (HTTP/1.x), or the method and `:path`
/// (HTTP/2), from the parsed target.
fn request_line_len(parts: &Parts, h1: bool) -> usize {
    let uri = &parts.uri;
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    let target = match (h1, uri.scheme_str(), uri.authority()) {
        (true, Some(scheme), Some(authority)) => {
            scheme.len() + "://".len() + authority.as_str().len() + path
        }
        (true, None, Some(authority)) => authority.as_str().len() + path,
        _ => path,
    };
    parts.method.as_str().len() + 1 + target + VERSION_LEN
}

/// `Transfer-Encoding` lines (joined as one list) must name `chunked` once and last, and no
/// other coding: the gateway decodes none, and forwarding a body re-chunked without its
/// codings would change it (RFC 9112 §6.1, §7).
fn transfer_codings(values: GetAll<'_, HeaderValue>) -> Result<(), Refusal> {
    let mut chunked = false;
    let mut others = false;
    for value in values {
        let Ok(list) = value.to_str() else {
            return Err(BAD_FRAMING);
        };
        for coding in list.split(',') {
            let coding = coding.trim_matches([' ', '\t']);
            if coding.is_empty() {
                // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
                continue;
            }
            if chunked {
                // Anything after `chunked`, a second `chunked` included.
                return Err(BAD_FRAMING);
            }
            if coding.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else {
                others = true;
            }
        }
    }
    if !chunked {
        return Err(BAD_FRAMING);
    }
    if others {
        return Err(UNSUPPORTED_CODING);
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` (HTTP/1.0 and HTTP/2 may have
/// none, never more than one), and its value is a valid `uri-host [":" port]` or empty. An
/// absolute-form target's (or HTTP/2 `:authority`'s) authority replaces it.
fn host(parts: &mut Parts, hosts: usize) -> Result<(), Refusal> {
    if hosts > 1 || (hosts == 0 && parts.version == Version::HTTP_11) {
        return Err(INVALID_HOST);
    }
    let Some(value) = parts.headers.get(header::HOST) else {
        return Ok(());
    };
    if !value.as_bytes().iter().all(|&b| is_host_byte(b)) {
        return Err(INVALID_HOST);
    }
    if let Some(authority) = parts.uri.authority() {
        // A target's userinfo (`http://user@host/`) is deprecated and treated as an error
        // (RFC 9110 §4.2.4); it would also make an invalid `Host`.
        if authority.as_str().contains('@') {
            return Err(INVALID_HOST);
        }
        if authority.as_str().as_bytes() != value.as_bytes() {
            let replaced = HeaderValue::from_str(authority.as_str()).map_err(|_| INVALID_HOST)?;
            parts.headers.insert(header::HOST, replaced);
        }
    }
    Ok(())
}

/// A byte that may appear in `uri-host [":" port]`: reg-name, IP literal or IPv4 address
/// (unreserved, sub-delims, percent-encoding, `:`, `[`, `]`; RFC 3986 §3.2.2).
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
                | b':'
                | b'['
                | b']'
        )
}

fn drop_underscored(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder()
            .method("GET")
            .uri(target)
            .version(version);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn h11(headers: &[(&str, &str)]) -> Parts {
        parts(Version::HTTP_11, "/a", headers)
    }

    #[test]
    fn transfer_coding_lists() {
        let refusal = |te: &[&str]| {
            let mut h: Vec<(&str, &str)> = vec![("host", "t")];
            h.extend(te.iter().map(|v| ("transfer-encoding", *v)));
            check(&mut h11(&h), &Limits::default())
                .err()
                .map(|r| r.reason)
        };
        assert_eq!(refusal(&["chunked"]), None);
        assert_eq!(refusal(&["CHUNKED"]), None);
        assert_eq!(refusal(&[" , chunked,"]), None);
        let unsupported = Some(reason::UNSUPPORTED_TRANSFER_CODING);
        assert_eq!(refusal(&["gzip, chunked"]), unsupported);
        assert_eq!(refusal(&["gzip", "chunked"]), unsupported);
        assert_eq!(refusal(&["x-custom;q=1, chunked"]), unsupported);
        let bad = Some(reason::BAD_FRAMING);
        assert_eq!(refusal(&["chunked, chunked"]), bad);
        assert_eq!(refusal(&["chunked", "chunked"]), bad);
        assert_eq!(refusal(&["chunked, gzip"]), bad);
        assert_eq!(refusal(&["gzip"]), bad);
        assert_eq!(refusal(&[""]), bad);
    }

    #[test]
    fn repeated_content_length_and_with_transfer_encoding() {
        let limits = Limits::default();
        let mut p = h11(&[("host", "t"), ("content-length", "5")]);
        assert_eq!(check(&mut p, &limits), Ok(()));
        let mut p = h11(&[
            ("host", "t"),
            ("content-length", "5"),
            ("content-length", "5"),
        ]);
        assert_eq!(check(&mut p, &limits), Err(BAD_FRAMING));
        let mut p = h11(&[
            ("host", "t"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(check(&mut p, &limits), Err(BAD_FRAMING));
    }

    #[test]
    fn marked_http1_heads_are_refused() {
        let limits = Limits::default();
        let marked = |version, headers: &[(&str, &str)]| {
            let mut p = parts(version, "/a", headers);
            p.extensions.insert(AmbiguousFraming);
            check(&mut p, &limits)
        };
        let cl = [("host", "t"), ("content-length", "5")];
        let te = [("host", "t"), ("transfer-encoding", "chunked")];
        assert_eq!(marked(Version::HTTP_11, &cl), Err(BAD_FRAMING));
        assert_eq!(marked(Version::HTTP_11, &te), Err(BAD_FRAMING));
        assert_eq!(marked(Version::HTTP_10, &cl[1..]), Err(BAD_FRAMING));
        // Not a mark the connection puts on HTTP/2 requests, nor on heads without framing.
        assert_eq!(marked(Version::HTTP_2, &cl), Ok(()));
        assert_eq!(marked(Version::HTTP_11, &[("host", "t")]), Ok(()));
    }

    #[test]
    fn host_rules() {
        let limits = Limits::default();
        let ok = |mut p: Parts| check(&mut p, &limits);
        assert_eq!(ok(h11(&[("host", "t")])), Ok(()));
        assert_eq!(ok(h11(&[("host", "")])), Ok(()));
        assert_eq!(ok(h11(&[("host", "[::1]:80")])), Ok(()));
        assert_eq!(ok(h11(&[])), Err(INVALID_HOST));
        assert_eq!(ok(h11(&[("host", "a"), ("host", "a")])), Err(INVALID_HOST));
        assert_eq!(ok(h11(&[("host", "a b")])), Err(INVALID_HOST));
        assert_eq!(ok(h11(&[("host", "a/b")])), Err(INVALID_HOST));
        assert_eq!(ok(parts(Version::HTTP_10, "/a", &[])), Ok(()));
        assert_eq!(ok(parts(Version::HTTP_2, "http://t/a", &[])), Ok(()));
        let two = [("host", "a"), ("host", "b")];
        assert_eq!(
            ok(parts(Version::HTTP_2, "http://t/a", &two)),
            Err(INVALID_HOST)
        );
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let mut p = parts(Version::HTTP_11, "http://t.example:81/a", &[("host", "o")]);
        assert_eq!(check(&mut p, &Limits::default()), Ok(()));
        assert_eq!(p.headers.get_all("host").iter().count(), 1);
        assert_eq!(p.headers["host"], "t.example:81");
        let mut p = parts(Version::HTTP_11, "http://t.example/a", &[]);
        assert_eq!(check(&mut p, &Limits::default()), Err(INVALID_HOST));
        let mut p = parts(Version::HTTP_11, "http://u@t.example/a", &[("host", "t")]);
        assert_eq!(check(&mut p, &Limits::default()), Err(INVALID_HOST));
    }

    #[test]
    fn line_limits_are_exact() {
        let limits = Limits {
            max_request_line: 100,
            max_header_line: 50,
            max_head: 1000,
            underscore_headers: UnderscoreHeaders::Drop,
        };
        // "GET " + target + " HTTP/1.1" = 13 + target.
        let target = |n: usize| format!("/{}", "a".repeat(n - 1));
        let mut p = parts(Version::HTTP_11, &target(87), &[("host", "t")]);
        assert_eq!(check(&mut p, &limits), Ok(()));
        let mut p = parts(Version::HTTP_11, &target(88), &[("host", "t")]);
        assert_eq!(check(&mut p, &limits), Err(URI_TOO_LONG));
        // "x-a: " + value = 5 + value.
        let value = |n: usize| "v".repeat(n);
        let mut p = h11(&[("host", "t"), ("x-a", &value(45))]);
        assert_eq!(check(&mut p, &limits), Ok(()));
        let mut p = h11(&[("host", "t"), ("x-a", &value(46))]);
        assert_eq!(check(&mut p, &limits), Err(HEADER_TOO_LARGE));
    }

    #[test]
    fn whole_head_limit_is_exact_on_http1_only() {
        // "GET /a HTTP/1.1" (15) + CRLF, "host: t" (7) + CRLF, "x-a: ..." + CRLF, CRLF.
        let head = |value: usize| 15 + 2 + 7 + 2 + 5 + value + 2 + 2;
        let limits = Limits {
            max_head: head(100),
            ..Limits::default()
        };
        let v = "v".repeat(100);
        assert_eq!(
            check(&mut h11(&[("host", "t"), ("x-a", &v)]), &limits),
            Ok(())
        );
        let v = "v".repeat(101);
        assert_eq!(
            check(&mut h11(&[("host", "t"), ("x-a", &v)]), &limits),
            Err(HEADER_TOO_LARGE)
        );
        let mut p = parts(Version::HTTP_2, "http://t/a", &[("x-a", &v)]);
        assert_eq!(check(&mut p, &limits), Ok(()));
    }

    #[test]
    fn underscore_modes() {
        let with = |mode| Limits {
            underscore_headers: mode,
            ..Limits::default()
        };
        let headers = [("host", "t"), ("x_a", "1"), ("x-b", "2"), ("_", "3")];
        let mut p = h11(&headers);
        assert_eq!(check(&mut p, &with(UnderscoreHeaders::Drop)), Ok(()));
        let names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-b"]);
        let mut p = h11(&headers);
        assert_eq!(
            check(&mut p, &with(UnderscoreHeaders::Reject)),
            Err(UNDERSCORE)
        );
        let mut p = h11(&headers);
        assert_eq!(check(&mut p, &with(UnderscoreHeaders::Allow)), Ok(()));
        assert_eq!(p.headers.len(), 4);
    }
}
