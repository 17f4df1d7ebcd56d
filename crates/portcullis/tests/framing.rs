//! Black-box tests of the HTTP/1.1 framing and `Host` rules (RFC 9112) and the per-line head
//! limits: raw requests that a lenient parser would forward are answered by the gateway
//! itself (status, reason header, connection closed where the framing is in doubt) and never
//! reach the upstream; the conforming variants still do.

#![allow(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use portcullis_test::raw::status_of;
use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(3);

/// A gateway with one listener `main` (given `limits`, as YAML flow mapping entries) and
/// every path proxied to `origin`.
async fn gateway(origin: SocketAddr, limits: &str) -> TestGateway {
    gateway_speaking(origin, "auto", limits).await
}

/// `gateway` with the listener's `protocol`.
async fn gateway_speaking(origin: SocketAddr, protocol: &str, limits: &str) -> TestGateway {
    portcullis_test::init_tracing();
    TestGateway::start(&format!(
        r#"
admin: {{ enabled: false }}
listeners:
  - name: main
    address: "127.0.0.1:0"
    protocol: {protocol}
    limits: {{ {limits} }}
upstreams:
  - name: app
    endpoints: [{{ address: "{origin}" }}]
routes:
  - name: app
    match: {{ path: {{ prefix: / }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#
    ))
    .await
}

/// What the gateway answered to one raw request.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    reason: Option<String>,
    /// The gateway closed the connection after the answer.
    closed: bool,
    raw: String,
}

/// Sends `bytes` on a new connection, reads the first response and then waits (bounded) to
/// see whether the gateway closes the connection.
async fn send(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    answer(&mut stream).await
}

/// Reads the next response on `stream` and then waits (bounded) to see whether the gateway
/// closes the connection.
async fn answer(stream: &mut TcpStream) -> Answer {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut closed = false;
    // Read until the peer closes or the bound passes; a kept-alive connection ends in the
    // timeout after its one response.
    let _ = timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    return;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if complete_response(&out) {
                // The rest of the body, then give a close a moment to follow it.
                loop {
                    match timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            closed = true;
                            return;
                        }
                        Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                        Err(_) => return,
                    }
                }
            }
        }
    })
    .await;
    let raw = String::from_utf8_lossy(&out).into_owned();
    let reason = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-portcullis-reason")
                .then(|| value.trim().to_string())
        });
    Answer {
        status: status_of(&out),
        reason,
        closed,
        raw,
    }
}

/// True once `out` holds a whole response with a `Content-Length` body (or none), or a
/// chunked one.
fn complete_response(out: &[u8]) -> bool {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding: chunked") {
        return out[end..].ends_with(b"\r\n0\r\n\r\n");
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    out.len() >= end + 4 + len
}

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answered by the gateway: status, reason (`None`: refused inside the HTTP parser,
    /// which has no reason of its own yet), and whether the connection must be closed.
    Refused(u16, Option<&'static str>, bool),
    /// Forwarded to the upstream, answered 200.
    Forwarded,
}

use Expect::{Forwarded, Refused};

/// Runs a table of raw requests against `gw`. Each request's target is `/case/<index>` (its
/// `{p}` placeholder), so the origin's log tells which cases reached it.
async fn run_table(gw: &TestGateway, origin: &Origin, cases: &[(&str, String, Expect)]) {
    let mut failures = Vec::new();
    for (i, (name, template, expect)) in cases.iter().enumerate() {
        let path = format!("/case/{i}");
        let bytes = template.replace("{p}", &path);
        let answer = send(gw.addr("main"), bytes.as_bytes()).await;
        let reached = origin.requests().iter().any(|r| r.uri.path() == path);
        let ok = match *expect {
            Refused(status, reason, close) => {
                answer.status == Some(status)
                    && (reason.is_none() || answer.reason.as_deref() == reason)
                    && (!close || answer.closed)
                    && !reached
            }
            Forwarded => answer.status == Some(200) && answer.reason.is_none() && reached,
        };
        if !ok {
            let head: String = answer.raw.chars().take(300).collect();
            failures.push(format!(
                "{name}: expected {expect:?}, got status {:?} reason {:?} closed {} \
                 reached upstream {reached}: {head:?}",
                answer.status, answer.reason, answer.closed
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A request with `headers` (each `Name: value\r\n`) and `body`, to `{p}`.
fn req(headers: &str, body: &str) -> String {
    format!("POST {{p}} HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}")
}

const CHUNKED_BODY: &str = "5\r\nhello\r\n0\r\n\r\n";

#[tokio::test]
async fn transfer_codings_other_than_one_final_chunked_are_refused() {
    let origin = Origin::start(Behavior::EchoBody).await;
    let gw = gateway(origin.addr(), "").await;
    let te = |v: &str| req(&format!("Transfer-Encoding: {v}\r\n"), CHUNKED_BODY);
    let unsupported = Refused(501, Some("unsupported_transfer_coding"), true);
    let malformed = Refused(400, Some("bad_framing"), true);
    let cases = [
        ("gzip, chunked", te("gzip, chunked"), unsupported),
        ("upper case", te("GZIP, Chunked"), unsupported),
        ("no space", te("gzip,chunked"), unsupported),
        ("extra whitespace", te("gzip ,  chunked"), unsupported),
        ("deflate, chunked", te("deflate, chunked"), unsupported),
        ("identity, chunked", te("identity, chunked"), unsupported),
        (
            "two lines gzip + chunked",
            req(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED_BODY,
            ),
            unsupported,
        ),
        ("chunked, chunked", te("chunked, chunked"), malformed),
        ("chunked,chunked upper", te("CHUNKED,chunked"), malformed),
        (
            "two lines chunked + chunked",
            req(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED_BODY,
            ),
            malformed,
        ),
        (
            "chunked, gzip, chunked",
            te("chunked, gzip, chunked"),
            malformed,
        ),
        // Not ending in chunked: the HTTP parser refuses these itself.
        ("identity", te("identity"), Refused(400, None, true)),
        ("gzip alone", te("gzip"), Refused(400, None, true)),
        (
            "chunked, gzip",
            te("chunked, gzip"),
            Refused(400, None, true),
        ),
        (
            "HTTP/1.0 with chunked",
            format!("POST {{p}} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_BODY}"),
            Refused(400, None, true),
        ),
        // The good cases.
        ("single chunked", te("chunked"), Forwarded),
        ("single Chunked, any case", te("Chunked"), Forwarded),
        ("empty list element", te(", chunked"), Forwarded),
        (
            "single content-length",
            req("Content-Length: 5\r\n", "hello"),
            Forwarded,
        ),
    ];
    run_table(&gw, &origin, &cases).await;
}

#[tokio::test]
async fn content_length_must_be_alone_and_single() {
    let origin = Origin::start(Behavior::EchoBody).await;
    let gw = gateway(origin.addr(), "").await;
    let cases = [
        // Repeated Content-Length, even with one value: the HTTP parser refuses the
        // comma-joined and the differing forms itself.
        (
            "5, 5 in one line",
            req("Content-Length: 5, 5\r\n", "hello"),
            Refused(400, None, true),
        ),
        (
            "5,5 in one line",
            req("Content-Length: 5,5\r\n", "hello"),
            Refused(400, None, true),
        ),
        (
            "two lines 5 + 6",
            req("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            Refused(400, None, true),
        ),
        // The parser folds identical lines into one: the gateway refuses them itself.
        (
            "two lines 5 + 5",
            req("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Refused(400, Some("bad_framing"), true),
        ),
        (
            "two lines 5 + 5, other case",
            req("content-length: 5\r\nCONTENT-LENGTH: 5\r\n", "hello"),
            Refused(400, Some("bad_framing"), true),
        ),
        (
            "two lines 5 + 5 apart",
            req(
                "Content-Length: 5\r\nX-A: 1\r\nContent-Length: 5\r\n",
                "hello",
            ),
            Refused(400, Some("bad_framing"), true),
        ),
        (
            "three lines 0",
            req(&"Content-Length: 0\r\n".repeat(3), ""),
            Refused(400, Some("bad_framing"), true),
        ),
        ("single", req("Content-Length: 5\r\n", "hello"), Forwarded),
        ("zero", req("Content-Length: 0\r\n", ""), Forwarded),
    ];
    run_table(&gw, &origin, &cases).await;
}

/// `Content-Length` with `Transfer-Encoding`, and `Content-Length` repeated with one value:
/// the ambiguous framings the HTTP parser would fold (RFC 9112 §6.1, §6.3).
fn ambiguous_framings() -> Vec<(&'static str, String, Expect)> {
    let bad = Refused(400, Some("bad_framing"), true);
    vec![
        (
            "CL then TE",
            req(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "TE then CL",
            req(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "CL then TE, other case",
            req(
                "content-length: 5\r\nTRANSFER-ENCODING: chunked\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "TE then CL, mixed case",
            req(
                "TrAnSfEr-EnCoDiNg: chunked\r\ncOnTeNt-LeNgTh: 5\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "CL on two lines + TE",
            req(
                "Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "TE then CL 5, 5",
            req(
                "Transfer-Encoding: chunked\r\nContent-Length: 5, 5\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "TE then CL 0",
            req(
                "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "TE gzip, chunked then CL",
            req(
                "Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n",
                CHUNKED_BODY,
            ),
            bad,
        ),
        (
            "two lines CL 5 + 5",
            req("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            bad,
        ),
        // The parser refuses an invalid length it reads before a Transfer-Encoding itself.
        (
            "CL 5, 5 then TE",
            req(
                "Content-Length: 5, 5\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED_BODY,
            ),
            Refused(400, None, true),
        ),
        // The good cases.
        (
            "single CL",
            req("Content-Length: 5\r\nConnection: close\r\n", "hello"),
            Forwarded,
        ),
        (
            "single chunked",
            req(
                "Transfer-Encoding: chunked\r\nConnection: close\r\n",
                CHUNKED_BODY,
            ),
            Forwarded,
        ),
        (
            "a CL in a value",
            req(
                "Content-Length: 5\r\nX-A: Content-Length: 5\r\nConnection: close\r\n",
                "hello",
            ),
            Forwarded,
        ),
    ]
}

#[tokio::test]
async fn content_length_with_transfer_encoding_or_repeated_is_refused() {
    for protocol in ["auto", "http1"] {
        let origin = Origin::start(Behavior::EchoBody).await;
        let gw = gateway_speaking(origin.addr(), protocol, "").await;
        run_table(&gw, &origin, &ambiguous_framings()).await;
        for seen in origin.requests() {
            assert_eq!(
                seen.body,
                Bytes::from_static(b"hello"),
                "{protocol}: {}",
                seen.uri
            );
        }
    }
}

/// How a case's request is sent.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// In one write.
    Whole,
    /// The head in writes of this many bytes with a pause after each, then the body.
    Pieces(usize),
    /// The head up to its blank line, a pause, then the blank line and the body.
    BlankLineApart,
}

/// Sends `bytes` on `stream` as `delivery` says.
async fn deliver(stream: &mut TcpStream, bytes: &[u8], delivery: Delivery) {
    let pause = || tokio::time::sleep(Duration::from_millis(2));
    let blank = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| i + 2);
    let (head, body) = bytes.split_at(blank);
    match delivery {
        Delivery::Whole => {
            let _ = stream.write_all(bytes).await;
        }
        Delivery::Pieces(n) => {
            let (blank_line, body) = body.split_at(2.min(body.len()));
            for piece in head.chunks(n).chain([blank_line]) {
                let _ = stream.write_all(piece).await;
                pause().await;
            }
            let _ = stream.write_all(body).await;
        }
        Delivery::BlankLineApart => {
            let _ = stream.write_all(head).await;
            pause().await;
            let _ = stream.write_all(body).await;
        }
    }
}

/// The ambiguous framings are refused however the head arrives, on a new connection and as
/// the second request of a kept-alive one (after a complete exchange with a body); the
/// unambiguous ones are still forwarded.
#[tokio::test]
async fn ambiguous_framings_are_refused_in_pieces_and_on_kept_alive_connections() {
    let origin = Origin::start(Behavior::EchoBody).await;
    let gw = gateway(origin.addr(), "").await;
    let cases = ambiguous_framings();
    let deliveries = [
        Delivery::Whole,
        Delivery::Pieces(3),
        Delivery::Pieces(8),
        Delivery::BlankLineApart,
    ];
    let mut failures = Vec::new();
    for (i, (name, template, expect)) in cases.iter().enumerate() {
        for (d, delivery) in deliveries.iter().enumerate() {
            for kept_alive in [false, true] {
                let path = format!("/case/{i}/{d}/{kept_alive}");
                let mut stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
                let _ = stream.set_nodelay(true);
                if kept_alive {
                    let first = req("Content-Length: 5\r\n", "hello")
                        .replace("{p}", &format!("{path}/first"));
                    let _ = stream.write_all(first.as_bytes()).await;
                    let first = read_response(&mut stream).await;
                    assert_eq!(status_of(&first), Some(200), "{name}: first exchange");
                }
                let bytes = template.replace("{p}", &path);
                deliver(&mut stream, bytes.as_bytes(), *delivery).await;
                let answer = answer(&mut stream).await;
                let reached = origin.requests().iter().any(|r| r.uri.path() == path);
                let ok = match *expect {
                    Refused(status, reason, close) => {
                        answer.status == Some(status)
                            && (reason.is_none() || answer.reason.as_deref() == reason)
                            && (!close || answer.closed)
                            && !reached
                    }
                    Forwarded => answer.status == Some(200) && answer.reason.is_none() && reached,
                };
                if !ok {
                    let head: String = answer.raw.chars().take(300).collect();
                    failures.push(format!(
                        "{name} ({delivery:?}, kept alive {kept_alive}): expected {expect:?}, \
                         got status {:?} reason {:?} closed {} reached upstream {reached}: \
                         {head:?}",
                        answer.status, answer.reason, answer.closed
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A pipelined request whose head arrives with the request before it is not scanned (see
/// `docs/config.md`): it is refused, or the HTTP parser's handling applies and the upstream
/// gets it with one framing header and the chunked body. Never ambiguous.
#[tokio::test]
async fn pipelined_ambiguous_framings_never_reach_the_upstream_ambiguous() {
    let origin = Origin::start(Behavior::EchoBody).await;
    let gw = gateway(origin.addr(), "").await;
    let cases = ambiguous_framings();
    let ambiguous = cases
        .iter()
        .enumerate()
        .filter(|(_, (_, _, expect))| matches!(expect, Refused(_, Some("bad_framing"), _)));
    for (i, (name, template, _)) in ambiguous {
        let path = format!("/case/{i}");
        let first = req("Content-Length: 5\r\n", "hello").replace("{p}", &format!("{path}/first"));
        let bytes = format!("{first}{}", template.replace("{p}", &path));
        let answer = send(gw.addr("main"), bytes.as_bytes()).await;
        assert_eq!(
            answer.status,
            Some(200),
            "{name}: first request: {answer:?}"
        );
        for seen in origin.requests().iter().filter(|r| r.uri.path() == path) {
            let lengths = seen.header_all("content-length");
            let codings = seen.header_all("transfer-encoding");
            assert!(
                lengths.len() + codings.len() <= 1,
                "{name}: upstream saw an ambiguous framing: {lengths:?} {codings:?}"
            );
            assert_eq!(seen.body, Bytes::from_static(b"hello"), "{name}");
        }
    }
}

/// Reads one whole response from `stream` (bounded), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = timeout(WAIT, async {
        while !complete_response(&out) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test]
async fn http11_needs_exactly_one_valid_host() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    let bad = Refused(400, Some("invalid_host"), false);
    let get = |headers: &str| format!("GET {{p}} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    let cases = [
        ("no Host", get(""), bad),
        ("two Host lines", get("Host: a\r\nHost: b\r\n"), bad),
        (
            "two identical Host lines",
            get("Host: t\r\nHost: t\r\n"),
            bad,
        ),
        (
            "two Host lines, other case",
            get("Host: t\r\nHOST: t\r\n"),
            bad,
        ),
        ("comma-joined hosts", get("Host: a, b\r\n"), bad),
        ("space in Host", get("Host: a b\r\n"), bad),
        ("slash in Host", get("Host: a/b\r\n"), bad),
        ("at sign in Host", get("Host: user@a\r\n"), bad),
        (
            "absolute form, no Host",
            "GET http://t{p} HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
            bad,
        ),
        (
            "absolute form with userinfo",
            "GET http://user@t{p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
            bad,
        ),
        (
            "absolute form, invalid Host",
            "GET http://t{p} HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_string(),
            bad,
        ),
        ("one Host", get("Host: t\r\n"), Forwarded),
        ("Host with port", get("Host: t:8080\r\n"), Forwarded),
        ("IPv6 Host", get("Host: [::1]:8080\r\n"), Forwarded),
        ("empty Host", get("Host:\r\n"), Forwarded),
        (
            "HTTP/1.0 without Host",
            "GET {p} HTTP/1.0\r\n\r\n".to_string(),
            Forwarded,
        ),
    ];
    run_table(&gw, &origin, &cases).await;
}

/// RFC 9112 §3.2.2: with an absolute-form target, the target's authority replaces `Host`.
#[tokio::test]
async fn absolute_form_authority_replaces_host() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    for (target, host, want) in [
        ("http://target.example/x", "other.example", "target.example"),
        (
            "http://target.example:81/x",
            "other.example",
            "target.example:81",
        ),
        ("http://Same.example/x", "same.example", "Same.example"),
    ] {
        let answer = send(
            gw.addr("main"),
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(answer.status, Some(200), "{target}: {answer:?}");
        let seen = origin.requests().pop().expect("a request");
        assert_eq!(seen.header_all("host"), vec![want], "{target}");
    }
}

/// Requests with the line sizes given, from `{p}`: `line` bytes of request line, one
/// `x-big` header line of `header` bytes (0: none).
fn sized(line: usize, header: usize) -> String {
    // "GET " + target + " HTTP/1.1"; the target starts with "{p}" (the placeholder is
    // replaced by a path of the same length or not: pad after a `?`).
    let fixed = "GET ".len() + " HTTP/1.1".len();
    let mut out = String::from("GET {p}?");
    let pad = line.saturating_sub(fixed + out.len() - "GET ".len());
    out.push_str(&"a".repeat(pad));
    out.push_str(" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    if header > 0 {
        let value = header - "x-big: ".len();
        out.push_str(&format!("x-big: {}\r\n", "b".repeat(value)));
    }
    out.push_str("\r\n");
    out
}

/// `sized` with the `{p}` placeholder's length accounted for: `{p}` becomes `/case/N`.
fn sized_for(index: usize, line: usize, header: usize) -> String {
    let placeholder = "{p}".len();
    let path = format!("/case/{index}").len();
    // Shift the request line's padding by the difference the replacement makes.
    sized(line + placeholder - path, header)
}

#[tokio::test]
async fn request_line_and_header_line_limits_hold() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    let long_uri = Refused(414, Some("uri_too_long"), false);
    let long_header = Refused(431, Some("request_header_too_large"), false);
    let specs: [(&str, usize, usize, Expect); 6] = [
        ("60 KiB URL", 60 * 1024, 0, long_uri),
        ("request line 8 KiB + 1", 8 * 1024 + 1, 0, long_uri),
        ("request line exactly 8 KiB", 8 * 1024, 0, Forwarded),
        ("63 KiB header line", 100, 63 * 1024, long_header),
        ("header line 16 KiB + 1", 100, 16 * 1024 + 1, long_header),
        ("header line exactly 16 KiB", 100, 16 * 1024, Forwarded),
    ];
    let cases: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (name, line, header, expect))| (*name, sized_for(i, *line, *header), *expect))
        .collect();
    run_table(&gw, &origin, &cases).await;
}

#[tokio::test]
async fn configured_line_limits_hold_exactly() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(
        origin.addr(),
        "max_request_line_bytes: 1KiB, max_header_line_bytes: 1500B",
    )
    .await;
    let long_uri = Refused(414, Some("uri_too_long"), false);
    let long_header = Refused(431, Some("request_header_too_large"), false);
    let specs: [(&str, usize, usize, Expect); 4] = [
        ("request line 1 KiB + 1", 1025, 0, long_uri),
        ("request line exactly 1 KiB", 1024, 0, Forwarded),
        ("header line 1501", 100, 1501, long_header),
        ("header line exactly 1500", 100, 1500, Forwarded),
    ];
    let cases: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (name, line, header, expect))| (*name, sized_for(i, *line, *header), *expect))
        .collect();
    run_table(&gw, &origin, &cases).await;
}

/// `max_header_bytes` below the HTTP/1 parser's 8 KiB read buffer holds to the byte.
#[tokio::test]
async fn small_max_header_bytes_holds_exactly() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "max_header_bytes: 2KiB").await;
    let too_large = Refused(431, Some("request_header_too_large"), false);
    // The head around the request line and the `x-big` line: "Host: t" and
    // "Connection: close" lines, the CRLFs and the blank line.
    let rest = "\r\nHost: t\r\nConnection: close\r\n".len() + "\r\n".len() + "\r\n".len();
    let whole = |line: usize| 2048 - rest - line;
    let specs: [(&str, usize, usize, Expect); 4] = [
        ("head 2 KiB + 1", 600, whole(600) + 1, too_large),
        ("head exactly 2 KiB", 600, whole(600), Forwarded),
        (
            "head 2 KiB + 1, long line",
            1800,
            whole(1800) + 1,
            too_large,
        ),
        (
            "head exactly 2 KiB, long line",
            1800,
            whole(1800),
            Forwarded,
        ),
    ];
    let cases: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (name, line, header, expect))| (*name, sized_for(i, *line, *header), *expect))
        .collect();
    run_table(&gw, &origin, &cases).await;
}

/// A GET to `{p}` with header lines `headers` (each `Name: value\r\n`).
fn with_headers(headers: &str) -> String {
    format!("GET {{p}} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn underscore_headers_are_dropped_by_default() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    for (i, line) in ["X_Api_Key: 1", "x_api_key: 1", "_: 1", "a_: 1", "Host_: x"]
        .iter()
        .enumerate()
    {
        let path = format!("/case/{i}");
        let bytes = with_headers(&format!("{line}\r\nx-kept: yes\r\n")).replace("{p}", &path);
        let answer = send(gw.addr("main"), bytes.as_bytes()).await;
        assert_eq!(answer.status, Some(200), "{line}: {answer:?}");
        let seen = origin
            .requests()
            .into_iter()
            .find(|r| r.uri.path() == path)
            .expect("forwarded");
        assert!(
            seen.headers.keys().all(|k| !k.as_str().contains('_')),
            "{line}: forwarded {:?}",
            seen.headers
        );
        assert_eq!(seen.header("x-kept"), Some("yes"), "{line}");
    }
}

#[tokio::test]
async fn underscore_headers_reject_and_allow() {
    let origin = Origin::start(Behavior::Echo).await;
    let reject = gateway(origin.addr(), "underscore_headers: reject").await;
    let cases = [
        (
            "underscore name",
            with_headers("X_Api_Key: 1\r\n"),
            Refused(400, Some("underscore_header"), false),
        ),
        (
            "lone underscore",
            with_headers("_: 1\r\n"),
            Refused(400, Some("underscore_header"), false),
        ),
        ("dashes only", with_headers("X-Api-Key: 1\r\n"), Forwarded),
    ];
    run_table(&reject, &origin, &cases).await;

    let allow = gateway(origin.addr(), "underscore_headers: allow").await;
    let answer = send(
        allow.addr("main"),
        with_headers("X_Api_Key: 1\r\n")
            .replace("{p}", "/allowed")
            .as_bytes(),
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    let seen = origin.requests().pop().expect("forwarded");
    assert_eq!(seen.header("x_api_key"), Some("1"));
}

/// The rules that apply to HTTP/2 too: one header line, the target's length, underscores,
/// repeated `Host`/`Content-Length`, and `Host` against `:authority`.
#[tokio::test]
async fn http2_requests_follow_the_applicable_rules() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(
        origin.addr(),
        "max_request_line_bytes: 1KiB, max_header_line_bytes: 1KiB",
    )
    .await;
    let client = TestClient::http2();
    let url = |path: &str| gw.url("main", path);
    let build = |path: &str| {
        Request::get(url(path))
            .version(Version::HTTP_2)
            .header("x-kept", "yes")
    };
    let send = |req: Request<Full<Bytes>>| {
        let client = &client;
        async move { client.request(req).await }
    };

    let long_header = build("/h2/big")
        .header("x-big", "b".repeat(1100))
        .body(Full::default())
        .expect("request");
    let resp = send(long_header).await;
    assert_eq!(resp.status, 431);
    assert_eq!(
        resp.header("x-portcullis-reason"),
        Some("request_header_too_large")
    );

    let long_path = format!("/h2/{}", "a".repeat(1100));
    let resp = send(build(&long_path).body(Full::default()).expect("request")).await;
    assert_eq!(resp.status, 414);
    assert_eq!(resp.header("x-portcullis-reason"), Some("uri_too_long"));

    let two_hosts = build("/h2/hosts")
        .header("host", "a")
        .header("host", "b")
        .body(Full::default())
        .expect("request");
    let resp = send(two_hosts).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("x-portcullis-reason"), Some("invalid_host"));

    let underscore = build("/h2/underscore")
        .header("x_api_key", "1")
        .body(Full::default())
        .expect("request");
    let resp = send(underscore).await;
    assert_eq!(resp.status, 200);

    let resp = send(build("/h2/ok").body(Full::default()).expect("request")).await;
    assert_eq!(resp.status, 200);

    let paths: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.uri.path().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/h2/underscore", "/h2/ok"],
        "what reached the upstream"
    );
    let seen = origin.requests();
    assert!(seen[0].headers.keys().all(|k| !k.as_str().contains('_')));
    assert_eq!(seen[0].header("x-kept"), Some("yes"));
}

/// Refusals of the conformance check are counted by reason like every other refusal.
#[tokio::test]
async fn refusals_are_counted_by_reason() {
    portcullis_test::init_tracing();
    let origin = Origin::start(Behavior::Echo).await;
    let gw = TestGateway::start(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
upstreams: [{{ name: app, endpoints: [{{ address: "{}" }}] }}]
routes: [{{ name: app, match: {{ path: {{ prefix: / }} }}, action: {{ proxy: {{ upstream: app }} }} }}]
"#,
        origin.addr()
    ))
    .await;
    let refused = [
        (
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "invalid_host",
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
    ];
    for (bytes, reason) in refused {
        let answer = send(gw.addr("main"), bytes.as_bytes()).await;
        assert_eq!(answer.reason.as_deref(), Some(reason), "{answer:?}");
    }
    let client = TestClient::http1();
    let counted = |text: &str, reason: &str| {
        text.lines().any(|l| {
            l.starts_with("portcullis_requests_total{")
                && l.contains(&format!("reason=\"{reason}\""))
                && l.ends_with(" 1")
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = client.get(&gw.admin_url("/metrics")).await.text();
        if refused.iter().all(|(_, reason)| counted(&text, reason)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals not counted by reason:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits(), 0);
}
