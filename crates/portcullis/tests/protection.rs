//! Black-box tests of the gateway's self-protection: malformed HTTP/1.1, oversized heads,
//! slowloris, idle keep-alive, `max_connections`, HTTP/2 stream limits and rapid reset, and a
//! seeded fuzz run. Every test ends by checking that a normal request is still served.

#![allow(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use portcullis_test::raw::{self, closes_within, status_of};
use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(2);

/// A gateway with one listener `main` (given `limits`, as YAML flow mapping entries), a
/// `/hello` direct response and `/app` proxied to `origin`.
async fn gateway(origin: SocketAddr, limits: &str) -> TestGateway {
    gateway_with_timeout(origin, limits, "30s").await
}

/// Like `gateway`, with the proxied route's `timeout`.
async fn gateway_with_timeout(
    origin: SocketAddr,
    limits: &str,
    route_timeout: &str,
) -> TestGateway {
    portcullis_test::init_tracing();
    count_panics();
    TestGateway::start(&format!(
        r#"
admin: {{ enabled: false }}
listeners:
  - name: main
    address: "127.0.0.1:0"
    limits: {{ {limits} }}
upstreams:
  - name: app
    endpoints: [{{ address: "{origin}" }}]
routes:
  - name: hello
    match: {{ path: {{ exact: /hello }} }}
    action: {{ respond: {{ status: 200, body: "hello" }} }}
  - name: app
    match: {{ path: {{ prefix: /app }} }}
    timeout: {route_timeout}
    action: {{ proxy: {{ upstream: app }} }}
"#
    ))
    .await
}

/// Panics raised outside the tests and their harness (in the gateway or a library it uses,
/// tokio tasks included), counted by a hook installed once that chains to the default hook.
/// Failed assertions of tests running in parallel are not counted.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map_or("", |l| l.file());
            if !file.contains("tests/") && !file.contains("portcullis-test") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// The gateway still answers a plain request on a fresh connection.
async fn assert_serves(gw: &TestGateway) {
    let resp = raw::send_raw(
        gw.addr("main"),
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(
        status_of(&resp),
        Some(200),
        "gateway no longer serves: {:?}",
        String::from_utf8_lossy(&resp)
    );
}

/// What the gateway did with one raw request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered with this status, then closed.
    Status(u16),
    /// Closed without a single byte.
    Closed,
    /// Closed after bytes that are not an HTTP/1 response (e.g. HTTP/2 SETTINGS + GOAWAY).
    ClosedAfter(Vec<u8>),
    /// Neither closed nor answered within the bound (never acceptable here).
    Hung(Vec<u8>),
    /// Answered, but left the connection open.
    StatusOpen(u16),
}

/// Sends `bytes` on a new connection and waits (bounded) for the gateway to close it.
async fn outcome(addr: SocketAddr, bytes: &[u8], bound: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let closed = timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    match (status_of(&out), closed) {
        (Some(code), true) => Outcome::Status(code),
        (Some(code), false) => Outcome::StatusOpen(code),
        (None, true) if out.is_empty() => Outcome::Closed,
        (None, true) => Outcome::ClosedAfter(out),
        (None, false) => Outcome::Hung(out),
    }
}

/// A GET for `/hello` that keeps the connection alive.
const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";

/// Reads one response with a `Content-Length` body from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let done = timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no complete response within {WAIT:?}");
    out
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_close() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    // What hyper (and the gateway) do: every one of these is answered 400 and the connection
    // is closed. The chunked-body cases reach the proxy and fail while the body is forwarded;
    // the gateway maps that to 400 `bad_request` as well.
    let cases: &[(&str, &[u8])] = &[
        ("garbage", b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
        ("missing version", b"GET /hello\r\nHost: t\r\n\r\n"),
        ("bad method chars", b"G(T /hello HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("bad uri", b"GET /he\x7fllo HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("bad absolute uri", b"GET http://[::1/ HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("http/0.9 style", b"GET /hello\r\n\r\n"),
        ("invalid header name", b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n"),
        ("header without colon", b"GET /hello HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n"),
        ("nul in header value", b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n"),
        ("nul in request line", b"GET /he\0llo HTTP/1.1\r\nHost: t\r\n\r\n"),
        (
            "conflicting content-length",
            b"POST /app HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST /app HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        ),
        (
            "bad chunk size",
            b"POST /app HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "overflowing chunk size",
            b"POST /app HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let got = outcome(gw.addr("main"), bytes, WAIT).await;
        assert_eq!(got, Outcome::Status(400), "{name}");
    }
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_not_smuggled() {
    // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, and the server must close the
    // connection after answering. hyper does exactly that (it does not answer 400), so what
    // protects the upstream is that only the chunked framing goes on, and the bytes after the
    // chunked body are never read as a second request.
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "").await;
    let got = outcome(
        gw.addr("main"),
        b"POST /app HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        matches!(got, Outcome::Status(200) | Outcome::Status(400)),
        "{got:?}"
    );
    let seen = origin.requests();
    assert!(
        seen.iter().all(|r| r.uri.path() == "/app"),
        "a smuggled request reached the origin: {seen:?}"
    );
    for r in &seen {
        assert!(!r.headers.contains_key("content-length"), "{r:?}");
        assert_eq!(r.body, Bytes::from_static(b"hello"));
    }
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn chunked_body_over_the_route_limit_gets_413() {
    // A body without Content-Length is only found too large while it streams; the failure is
    // the client's (413), not an aborted client (499).
    let origin = Origin::start(Behavior::Echo).await;
    portcullis_test::init_tracing();
    let gw = TestGateway::start(&format!(
        r#"
admin: {{ enabled: false }}
listeners:
  - name: main
    address: "127.0.0.1:0"
upstreams:
  - name: app
    endpoints: [{{ address: "{}" }}]
routes:
  - name: hello
    match: {{ path: {{ exact: /hello }} }}
    action: {{ respond: {{ status: 200, body: "hello" }} }}
  - name: app
    match: {{ path: {{ prefix: /app }} }}
    max_request_body: 10B
    action: {{ proxy: {{ upstream: app }} }}
"#,
        origin.addr()
    ))
    .await;
    let resp = raw::send_raw(
        gw.addr("main"),
        b"POST /app HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nhellohellohellohello\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status_of(&resp), Some(413), "{text}");
    assert!(text.contains("request_body_too_large"), "{text}");
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_head_and_too_many_headers_get_431() {
    let origin = Origin::start(Behavior::Echo).await;
    // 8KiB is hyper's smallest read buffer, so the configured limit is honoured exactly here.
    let gw = gateway(origin.addr(), "max_header_bytes: 8KiB, max_headers: 10").await;

    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let got = outcome(gw.addr("main"), big.as_bytes(), WAIT).await;
    assert_eq!(got, Outcome::Status(431), "20KiB head");

    let mut many = String::from("GET /hello HTTP/1.1\r\nHost: t\r\n");
    for i in 0..12 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let got = outcome(gw.addr("main"), many.as_bytes(), WAIT).await;
    assert_eq!(got, Outcome::Status(431), "13 headers");

    // Within both limits: served.
    let ok = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Mid: {}\r\n\r\n",
        "a".repeat(4 * 1024)
    );
    let resp = raw::send_raw(gw.addr("main"), ok.as_bytes(), WAIT).await;
    assert_eq!(status_of(&resp), Some(200));
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn slowloris_is_disconnected_after_the_header_read_timeout() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "header_read_timeout: 300ms").await;
    // 2 bytes every 50 ms: the ~60-byte head would take ~1.5 s to arrive.
    let request = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: dribbling-along\r\n\r\n";
    let started = Instant::now();
    let res = timeout(
        Duration::from_secs(3),
        raw::slow_write(gw.addr("main"), request, 2, Duration::from_millis(50), WAIT),
    )
    .await
    .expect("slow_write bounded");
    let elapsed = started.elapsed();
    assert!(res.closed_early, "the whole head was accepted: {res:?}");
    assert!(res.written < request.len(), "{res:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1200),
        "closed after {elapsed:?}"
    );
    // hyper closes without answering (no 408), or answers a 4xx.
    let status = status_of(&res.response);
    assert!(
        res.response.is_empty() || status.is_some_and(|s| (400..500).contains(&s)),
        "{:?}",
        String::from_utf8_lossy(&res.response)
    );
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(
        origin.addr(),
        "keepalive_timeout: 300ms, header_read_timeout: 10s",
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
    stream.write_all(HELLO).await.expect("write");
    let resp = read_response(&mut stream).await;
    assert_eq!(status_of(&resp), Some(200));
    let idle_since = Instant::now();
    assert!(
        closes_within(&mut stream, WAIT).await,
        "idle connection still open after {WAIT:?}"
    );
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(200) && idle < Duration::from_millis(1500),
        "closed after {idle:?} idle"
    );
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn request_waiting_on_a_slow_origin_is_not_cut_by_the_idle_timeout() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(900),
        Behavior::fixed(200, "slow"),
    ))
    .await;
    let gw = gateway(
        origin.addr(),
        "keepalive_timeout: 300ms, header_read_timeout: 10s",
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
    stream
        .write_all(b"GET /app HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let resp = read_response(&mut stream).await;
    assert_eq!(
        status_of(&resp),
        Some(200),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    assert!(resp.ends_with(b"slow"));
    // And once idle again, the idle timeout applies.
    assert!(closes_within(&mut stream, WAIT).await);
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn max_connections_makes_the_next_connection_wait() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "max_connections: 2").await;
    let addr = gw.addr("main");
    // Two served, kept-alive connections hold both slots.
    let mut first = TcpStream::connect(addr).await.expect("connect");
    first.write_all(HELLO).await.expect("write");
    assert_eq!(status_of(&read_response(&mut first).await), Some(200));
    let mut second = TcpStream::connect(addr).await.expect("connect");
    second.write_all(HELLO).await.expect("write");
    assert_eq!(status_of(&read_response(&mut second).await), Some(200));

    // The third connects (kernel backlog) but is not served while both slots are taken.
    let third = tokio::spawn(raw::send_raw(
        addr,
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!third.is_finished(), "third connection served too early");
    // The second is still served meanwhile.
    second.write_all(HELLO).await.expect("write");
    assert_eq!(status_of(&read_response(&mut second).await), Some(200));
    assert!(!third.is_finished(), "third connection served too early");

    // A slot frees: the third is served.
    drop(first);
    let resp = timeout(WAIT, third)
        .await
        .expect("third not served after a slot freed")
        .expect("third task");
    assert_eq!(
        status_of(&resp),
        Some(200),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    drop(second);
    assert_serves(&gw).await;
    gw.shutdown().await;
}

/// An HTTP/2 (prior knowledge) connection made with the `h2` crate; the connection is driven
/// by a spawned task that yields its result.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = timeout(WAIT, h2::client::handshake(tcp))
        .await
        .expect("h2 handshake in time")
        .expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn h2_get(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .expect("request")
}

#[tokio::test]
async fn h2_advertises_max_concurrent_streams() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "h2_max_concurrent_streams: 7").await;
    let addr = gw.addr("main");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, mut conn) = h2::client::handshake(tcp).await.expect("handshake");
    // Drive the connection until one response arrived: the server's SETTINGS came first.
    let status = timeout(WAIT, async {
        let (resp, _) = send
            .send_request(h2_get(addr, "/hello"), true)
            .expect("send");
        tokio::select! {
            r = resp => r.expect("response").status(),
            r = &mut conn => panic!("connection ended first: {r:?}"),
        }
    })
    .await
    .expect("response in time");
    assert_eq!(status, 200);
    assert_eq!(conn.max_concurrent_send_streams(), 7);
    // Nobody polls this connection any more: close it, or the drain would wait for it.
    drop(send);
    drop(conn);
    assert_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_rapid_reset_gets_goaway_and_others_are_served() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(200),
        Behavior::fixed(200, "ok"),
    ))
    .await;
    let gw = gateway(origin.addr(), "h2_max_pending_accept_reset_streams: 5").await;
    let addr = gw.addr("main");
    let (mut send, conn) = h2_connect(addr).await;

    // Open and at once reset many streams (CVE-2023-44487), as fast as the client goes.
    let mut opened = 0;
    let flood = timeout(WAIT, async {
        for _ in 0..500 {
            if send.clone().ready().await.is_err() {
                break;
            }
            match send.send_request(h2_get(addr, "/app"), false) {
                Ok((resp, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    drop(resp);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(flood.is_ok(), "the flood itself hung");
    let ended = timeout(WAIT, conn)
        .await
        .expect("the gateway kept the flooding connection open")
        .expect("connection task");
    let err = ended.expect_err("connection ended without an error");
    assert!(
        err.is_go_away() && err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM),
        "expected GOAWAY(ENHANCE_YOUR_CALM), got {err:?} after {opened} streams"
    );

    // Another connection is served normally.
    let resp = TestClient::http2().get(&gw.url("main", "/hello")).await;
    assert_eq!(resp.status, 200);
    assert_serves(&gw).await;
    gw.shutdown().await;
}

/// Seeded mutations of valid requests, and plain random bytes.
fn fuzz_inputs(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let seeds: [&[u8]; 4] = [
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"POST /app/x?y=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        b"POST /app HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ];
    let interesting: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b":",
        b" ",
        b"\0",
        b"\xff",
        b"%",
        b"HTTP/1.1",
        b"chunked",
        b"-1",
        b"\t",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            if rng.random_ratio(1, 8) {
                let len = rng.random_range(0..256);
                return (0..len).map(|_| rng.random()).collect();
            }
            let mut bytes = seeds[rng.random_range(0..seeds.len())].to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..=bytes.len());
                match rng.random_range(0..5) {
                    0 if at < bytes.len() => bytes[at] = rng.random(),
                    1 if at < bytes.len() => {
                        let end = rng.random_range(at..=bytes.len().min(at + 8));
                        bytes.drain(at..end);
                    }
                    2 => {
                        let piece = interesting[rng.random_range(0..interesting.len())];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    3 if at < bytes.len() => {
                        let end = rng.random_range(at..=bytes.len().min(at + 16));
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
        .collect()
}

#[tokio::test]
async fn fuzzed_requests_never_break_the_gateway() {
    let origin = Origin::start(Behavior::Echo).await;
    // A request whose body stops short (say a cut chunked body) holds its connection until the
    // route timeout: there is no body read timeout. Keep that short here.
    let gw = gateway_with_timeout(
        origin.addr(),
        "header_read_timeout: 300ms, keepalive_timeout: 300ms",
        "500ms",
    )
    .await;
    let addr = gw.addr("main");
    let panics_before = PANICS.load(Ordering::SeqCst);
    let inputs = fuzz_inputs(0x5EED_CAFE, 300);
    let outcomes = futures_util::future::join_all(inputs.iter().map(|bytes| {
        // A truncated request is neither answered nor closed until the header read or idle
        // timeout; 1.5 s covers both.
        outcome(addr, bytes, Duration::from_millis(1500))
    }))
    .await;
    for (bytes, got) in inputs.iter().zip(&outcomes) {
        let acceptable = match got {
            // 504: the body never completed, so the origin never answered within the timeout.
            Outcome::Status(code) | Outcome::StatusOpen(code) => *code < 500 || *code == 504,
            Outcome::Closed | Outcome::ClosedAfter(_) => true,
            Outcome::Hung(_) => false,
        };
        assert!(
            acceptable,
            "input {:?} → {got:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(PANICS.load(Ordering::SeqCst) - panics_before, 0, "panics");
    assert_serves(&gw).await;
    gw.shutdown().await;
}
