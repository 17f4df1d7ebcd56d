//! Black-box tests of the listener: the protocol each listener speaks (`auto`, `http1`,
//! `http2`) against every kind of client, the first-request timeout against silent
//! connections, the HTTP/2 idle close, the per-IP connection cap, and the gateway's own
//! answer (reason header, JSON body, metric) for every request head hyper refuses, which must
//! never touch a proxied body.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use portcullis_test::raw::{self, closes_within, status_of};
use portcullis_test::{ws_connect, Behavior, Origin, TestClient, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(3);

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A gateway with three listeners, one per protocol (`auto`, `h1`, `h2`), each with
/// `limits` (YAML flow mapping entries), routes `/hello` (direct) and `/app` (to `origin`),
/// and `telemetry` (YAML flow mapping entries of `telemetry:`).
async fn gateway(origin: SocketAddr, limits: &str, telemetry: &str) -> TestGateway {
    portcullis_test::init_tracing();
    let admin = if telemetry.contains("enabled: false") {
        "{ enabled: false }"
    } else {
        "{ address: \"127.0.0.1:0\" }"
    };
    TestGateway::start(&format!(
        r#"
admin: {admin}
telemetry: {{ {telemetry} }}
listeners:
  - {{ name: auto, address: "127.0.0.1:0", protocol: auto, limits: {{ {limits} }} }}
  - {{ name: h1, address: "127.0.0.1:0", protocol: http1, limits: {{ {limits} }} }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: http2, limits: {{ {limits} }} }}
upstreams:
  - name: app
    endpoints: [{{ address: "{origin}" }}]
routes:
  - name: hello
    match: {{ path: {{ exact: /hello }} }}
    action: {{ respond: {{ status: 200, body: "hello" }} }}
  - name: fake
    match: {{ path: {{ exact: /fake }} }}
    action: {{ respond: {{ status: 200, body: "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n" }} }}
  - name: app
    match: {{ path: {{ prefix: / }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#
    ))
    .await
}

/// One sample of the gateway's `/metrics` (0 when absent).
async fn metric(gw: &TestGateway, family: &str, labels: &[(&str, &str)]) -> f64 {
    let text = TestClient::http1()
        .get(&gw.admin_url("/metrics"))
        .await
        .text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `metric` reaches `want` (a request is counted a moment after the
/// client has its answer).
async fn metric_reaches(gw: &TestGateway, family: &str, labels: &[(&str, &str)], want: f64) {
    let mut got = 0.0;
    for _ in 0..100 {
        got = metric(gw, family, labels).await;
        if got >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{family}{labels:?} = {got}, want {want}");
}

const HELLO_CLOSE: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// An HTTP/2 GET of `path` on a new prior-knowledge connection; its status.
async fn h2_get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = timeout(WAIT, h2::client::handshake(tcp)).await??;
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}{path}")).body(())?;
    let (resp, _) = send.send_request(req, true)?;
    let resp = timeout(WAIT, resp).await??;
    Ok(resp.status().as_u16())
}

/// Sends `bytes` and reads until the gateway closes (bounded); what it sent back.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw::send_raw(addr, bytes, WAIT).await
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ----- protocol -----

#[tokio::test]
async fn each_listener_speaks_only_its_protocol() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "", "").await;
    let garbage: &[u8] = b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n";
    for listener in ["auto", "h1", "h2"] {
        let addr = gw.addr(listener);
        let speaks_h1 = listener != "h2";
        let speaks_h2 = listener != "h1";

        // An HTTP/1.1 request.
        let got = exchange(addr, HELLO_CLOSE).await;
        if speaks_h1 {
            assert_eq!(
                status_of(&got),
                Some(200),
                "{listener}: h1 {:?}",
                lossy(&got)
            );
        } else {
            // Never an HTTP/1.1 answer: a close, or HTTP/2 frames (SETTINGS, GOAWAY).
            assert!(
                !got.starts_with(b"HTTP/"),
                "{listener}: h1 {:?}",
                lossy(&got)
            );
        }

        // HTTP/2 with prior knowledge.
        let h2 = h2_get(addr, "/hello").await;
        if speaks_h2 {
            assert_eq!(h2.ok(), Some(200), "{listener}: h2");
        } else {
            assert!(h2.is_err(), "{listener}: h2 got {h2:?}");
            // The raw preface gets a 4xx/505 in HTTP/1.1 or a close, never HTTP/2 frames.
            let got = exchange(addr, H2_PREFACE_SETTINGS).await;
            let status = status_of(&got);
            assert!(
                got.is_empty() || matches!(status, Some(400..=499 | 505)),
                "{listener}: preface {:?}",
                lossy(&got)
            );
        }

        // Bytes that are neither.
        let got = exchange(addr, garbage).await;
        if speaks_h1 {
            assert_eq!(
                status_of(&got),
                Some(400),
                "{listener}: garbage {:?}",
                lossy(&got)
            );
        } else {
            assert!(
                !got.starts_with(b"HTTP/"),
                "{listener}: garbage {:?}",
                lossy(&got)
            );
            // If anything came back, it is HTTP/2 frames: the server's SETTINGS first.
            assert!(
                got.is_empty() || got.get(3) == Some(&0x04),
                "{listener}: {got:?}"
            );
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_work_on_http1_and_auto_listeners() {
    let origin = Origin::start(Behavior::WebSocketEcho).await;
    let gw = gateway(origin.addr(), "", "").await;
    for listener in ["auto", "h1"] {
        let mut ws = ws_connect(&gw.ws_url(listener, "/chat")).await;
        for i in 0..3 {
            let text = format!("HTTP/1.1 400 Bad Request\r\n\r\n{i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let got = timeout(WAIT, ws.next()).await.expect("in time");
            assert_eq!(
                got.expect("open").expect("ok"),
                Message::text(text),
                "{listener}"
            );
        }
    }
    gw.shutdown().await;
}

// ----- silent connections -----

/// Opens a connection and sends `bytes` (maybe none).
async fn silent(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    s
}

#[tokio::test]
async fn silent_connections_are_closed_at_the_first_request_timeout() {
    let origin = Origin::start(Behavior::Echo).await;
    let first = Duration::from_millis(300);
    let gw = gateway(
        origin.addr(),
        "max_connections: 3, first_request_timeout: 300ms",
        "",
    )
    .await;
    let kinds: [(&str, &[u8]); 4] = [
        ("no bytes", b""),
        ("h2 preface and SETTINGS", H2_PREFACE_SETTINGS),
        ("partial request line", b"GET /hel"),
        ("partial head", b"GET /hello HTTP/1.1\r\nHost: t\r\n"),
    ];
    let mut want: std::collections::HashMap<&str, f64> = Default::default();
    for (listener, kind, bytes) in ["auto", "h1", "h2"]
        .iter()
        .flat_map(|l| kinds.iter().map(move |(k, b)| (*l, *k, *b)))
    {
        // The others are refused at once: the preface by the HTTP/1.1 server, anything but
        // the preface by the HTTP/2 server.
        let waits = match listener {
            "h1" => !bytes.starts_with(b"PRI"),
            "h2" => bytes.is_empty() || bytes.starts_with(b"PRI"),
            _ => true,
        };
        let addr = gw.addr(listener);
        let start = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(silent(addr, bytes).await);
        }
        // Every slot is taken: a real request waits in the backlog until the timeout frees one.
        let answered = if listener == "h2" {
            h2_get(addr, "/hello").await.ok() == Some(200)
        } else {
            status_of(&exchange(addr, HELLO_CLOSE).await) == Some(200)
        };
        let waited = start.elapsed();
        assert!(answered, "{listener}/{kind}: real request not answered");
        assert!(
            waited < first + Duration::from_millis(1500),
            "{listener}/{kind}: real request waited {waited:?}"
        );
        for (i, s) in held.iter_mut().enumerate() {
            assert!(
                closes_within(s, WAIT).await,
                "{listener}/{kind}: silent connection {i} still open"
            );
        }
        if waits {
            // Closed at the timeout, not before.
            assert!(
                waited >= first - Duration::from_millis(50),
                "{listener}/{kind}: {waited:?}"
            );
            *want.entry(listener).or_default() += 3.0;
        }
    }
    for (listener, n) in want {
        let labels = [("listener", listener), ("reason", "first_request_timeout")];
        let family = "portcullis_listener_connections_refused_total";
        metric_reaches(&gw, family, &labels, n).await;
        assert_eq!(metric(&gw, family, &labels).await, n, "{listener}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_in_time_is_served_and_not_cut_by_the_first_request_timeout() {
    let origin = Origin::start(Behavior::Slow {
        delay: Duration::from_millis(600),
        then: Box::new(Behavior::Echo),
    })
    .await;
    let gw = gateway(origin.addr(), "first_request_timeout: 300ms", "").await;
    // The head arrives in time; the answer takes longer than the timeout.
    let got = exchange(
        gw.addr("auto"),
        b"GET /app HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&got), Some(200), "{:?}", lossy(&got));
    assert_eq!(h2_get(gw.addr("h2"), "/app").await.ok(), Some(200));
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_http2_connection_is_closed_though_the_client_pings() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "keepalive_timeout: 400ms", "").await;
    for listener in ["auto", "h2"] {
        let tcp = TcpStream::connect(gw.addr(listener)).await.unwrap();
        let (mut send, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let mut pings = conn.ping_pong().expect("ping pong");
        let conn = tokio::spawn(conn);
        let req = http::Request::get("http://t/hello").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
        let start = Instant::now();
        // PINGs every 100 ms do not keep a connection without streams open.
        let pinging = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if pings.ping(h2::Ping::opaque()).await.is_err() {
                    return;
                }
            }
        });
        let ended = timeout(Duration::from_secs(4), conn).await;
        pinging.abort();
        assert!(ended.is_ok(), "{listener}: idle h2 connection still open");
        assert!(start.elapsed() >= Duration::from_millis(400), "{listener}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_stream_waiting_on_a_slow_origin_is_not_cut_by_the_idle_timeout() {
    let origin = Origin::start(Behavior::Slow {
        delay: Duration::from_millis(900),
        then: Box::new(Behavior::Echo),
    })
    .await;
    let gw = gateway(origin.addr(), "keepalive_timeout: 200ms", "").await;
    assert_eq!(h2_get(gw.addr("h2"), "/app").await.ok(), Some(200));
    gw.shutdown().await;
}

// ----- per-IP cap -----

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `/hello` on an open connection and reads the whole answer (it asks for a close).
async fn hello_on(mut s: TcpStream) -> Option<u16> {
    s.write_all(HELLO_CLOSE).await.ok()?;
    status_of(&raw::read_until_close(&mut s, WAIT).await)
}

#[tokio::test]
async fn connections_over_the_per_ip_cap_are_closed_at_accept() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "max_connections_per_ip: 2", "").await;
    let addr = gw.addr("auto");
    let a = connect_from([127, 0, 0, 1], addr).await;
    let b = connect_from([127, 0, 0, 1], addr).await;
    // Let the gateway accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..2 {
        let mut over = connect_from([127, 0, 0, 1], addr).await;
        let mut buf = [0u8; 64];
        // Closed without a byte, whatever the client sends.
        let _ = over.write_all(HELLO_CLOSE).await;
        let n = timeout(WAIT, over.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "over the cap: {n:?}");
    }
    // Another client IP has its own count.
    let other = connect_from([127, 0, 0, 2], addr).await;
    assert_eq!(hello_on(other).await, Some(200));
    // The two within the cap are served; once one has closed, a new one is accepted.
    assert_eq!(hello_on(a).await, Some(200));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = connect_from([127, 0, 0, 1], addr).await;
    assert_eq!(hello_on(c).await, Some(200));
    assert_eq!(hello_on(b).await, Some(200));
    metric_reaches(
        &gw,
        "portcullis_listener_connections_refused_total",
        &[("listener", "auto"), ("reason", "client_connection_limit")],
        2.0,
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "portcullis_listener_connections_refused_total",
            &[("listener", "auto"), ("reason", "client_connection_limit")],
        )
        .await,
        2.0
    );
    gw.shutdown().await;
}

// ----- the gateway's answer to heads hyper refuses -----

/// Splits a raw response into its lowercased head and its body.
fn split(resp: &[u8]) -> (String, Vec<u8>) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head end in {:?}", lossy(resp)));
    (
        String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase(),
        resp[end + 4..].to_vec(),
    )
}

#[tokio::test]
async fn every_head_hyper_refuses_gets_the_gateways_answer_and_is_counted() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "max_header_bytes: 8KiB, max_headers: 10", "").await;
    let many_headers = {
        let mut s = String::from("GET /hello HTTP/1.1\r\nHost: t\r\n");
        for i in 0..12 {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s + "\r\n"
    };
    let huge_head = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let huge_url = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(20 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "garbage",
            b"\x16\x03\x01\x02\x00 not http\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad method chars",
            b"G(T /hello HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad header name",
            b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad version",
            b"GET /hello HTTP/1.7\r\nHost: t\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "obs-fold",
            b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "nul in header",
            b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad uri",
            b"GET /he\x7fllo HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "too many headers",
            many_headers.into_bytes(),
            431,
            "request_header_too_large",
        ),
        (
            "huge head",
            huge_head.into_bytes(),
            431,
            "request_header_too_large",
        ),
        (
            "huge url beyond the buffer",
            huge_url.into_bytes(),
            414,
            "uri_too_long",
        ),
    ];
    let mut want: std::collections::HashMap<&str, f64> = Default::default();
    for listener in ["auto", "h1"] {
        for (name, bytes, status, reason) in &cases {
            let got = exchange(gw.addr(listener), bytes).await;
            assert_eq!(
                status_of(&got),
                Some(*status),
                "{listener}/{name}: {:?}",
                lossy(&got)
            );
            let (head, body) = split(&got);
            assert!(
                head.contains(&format!("\r\nx-portcullis-reason: {reason}")),
                "{name}: {head}"
            );
            assert!(
                head.contains("\r\ncache-control: no-store"),
                "{name}: {head}"
            );
            assert!(head.contains("\r\nconnection: close"), "{name}: {head}");
            assert!(
                head.contains("\r\ncontent-type: application/json"),
                "{name}: {head}"
            );
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{name}: body {:?}: {e}", lossy(&body)));
            assert_eq!(json["reason"], *reason, "{name}");
            assert_eq!(json["status"], *status, "{name}");
            let id = json["request_id"].as_str().expect("request_id");
            assert!(
                head.contains(&format!("\r\nx-request-id: {id}")),
                "{name}: {head}"
            );
            *want.entry(reason).or_default() += 1.0;
        }
    }
    for (reason, n) in want {
        metric_reaches(
            &gw,
            "portcullis_requests_total",
            &[("route", ""), ("reason", reason), ("status_class", "4xx")],
            n,
        )
        .await;
    }
    // The gateway still serves.
    assert_eq!(
        status_of(&exchange(gw.addr("auto"), HELLO_CLOSE).await),
        Some(200)
    );
    gw.shutdown().await;
}

/// Reads exactly `n` bytes (bounded).
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    timeout(WAIT, s.read_exact(&mut out))
        .await
        .expect("in time")
        .expect("read");
    out
}

#[tokio::test]
async fn bodies_that_look_like_hypers_bare_400_are_passed_on_untouched() {
    let fake: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let origin = Origin::start(Behavior::Fixed {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(fake),
    })
    .await;
    let streaming = Origin::start(Behavior::SlowBody {
        chunk: Bytes::from_static(fake),
        chunks: 3,
        delay: Duration::from_millis(20),
    })
    .await;
    for telemetry in ["", "metrics: { enabled: false }"] {
        for (origin, chunks) in [(origin.addr(), 1), (streaming.addr(), 3)] {
            let gw = gateway(origin, "", telemetry).await;
            for listener in ["auto", "h1"] {
                for path in ["/app", "/fake"] {
                    let want = if path == "/fake" { 1 } else { chunks };
                    // Keep-alive: several exchanges on one connection, then two pipelined.
                    let mut s = TcpStream::connect(gw.addr(listener)).await.unwrap();
                    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                    for round in 0..3 {
                        s.write_all(req.as_bytes()).await.unwrap();
                        let body = read_body(&mut s).await;
                        assert_eq!(
                            body,
                            fake.repeat(want),
                            "{telemetry}/{listener}{path} #{round}"
                        );
                    }
                    s.write_all(format!("{req}{req}").as_bytes()).await.unwrap();
                    for round in 0..2 {
                        let body = read_body(&mut s).await;
                        assert_eq!(
                            body,
                            fake.repeat(want),
                            "{telemetry}/{listener}{path} pipelined #{round}"
                        );
                    }
                }
            }
            gw.shutdown().await;
        }
    }
}

/// Reads one response (content-length or chunked) from a kept-alive connection; its body.
async fn read_body(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(s, 1).await);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("x-portcullis-reason: bad_request"), "{head}");
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return read_n(s, len).await;
    }
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.extend(read_n(s, 1).await);
        }
        let size = usize::from_str_radix(lossy(&line).trim(), 16).expect("chunk size");
        let chunk = read_n(s, size + 2).await;
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

#[tokio::test]
async fn a_head_that_stalls_is_cut_at_the_header_read_timeout_and_counted() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "header_read_timeout: 300ms", "").await;
    for listener in ["auto", "h1"] {
        // A first request, then the start of a second one that never ends.
        let mut s = TcpStream::connect(gw.addr(listener)).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let got = raw::read_until_close(&mut s, WAIT).await;
        assert_eq!(status_of(&got), Some(200), "{listener}: {:?}", lossy(&got));
        // Closed without a second answer.
        assert_eq!(lossy(&got).matches("HTTP/1.1 ").count(), 1, "{listener}");
        metric_reaches(
            &gw,
            "portcullis_listener_connections_refused_total",
            &[("listener", listener), ("reason", "header_timeout")],
            1.0,
        )
        .await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_malformed_head_pipelined_after_a_good_request_gets_the_gateways_answer() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "", "").await;
    for listener in ["auto", "h1"] {
        let got = exchange(
            gw.addr(listener),
            b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nG(T /hello HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await;
        let text = lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 "), "{listener}: {text:?}");
        let second = text
            .find("\r\n\r\nhello")
            .map(|i| &text[i + 9..])
            .unwrap_or("");
        assert!(second.starts_with("HTTP/1.1 400 "), "{listener}: {text:?}");
        assert!(
            second.contains("x-portcullis-reason: bad_request"),
            "{listener}: {text:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_websocket_tunnel_keeps_its_place_under_the_per_ip_cap() {
    let origin = Origin::start(Behavior::WebSocketEcho).await;
    let gw = gateway(origin.addr(), "max_connections_per_ip: 1", "").await;
    for listener in ["auto", "h1"] {
        let addr = gw.addr(listener);
        let mut ws = ws_connect(&gw.ws_url(listener, "/chat")).await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(
            timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
            Message::text("hi")
        );
        // The tunnel holds the IP's one connection.
        let mut over = connect_from([127, 0, 0, 1], addr).await;
        let mut buf = [0u8; 64];
        let n = timeout(WAIT, over.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "{listener}: over the cap: {n:?}"
        );
        drop(ws);
        // Once the tunnel has ended, the IP may connect again.
        let mut served = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            served = hello_on(connect_from([127, 0, 0, 1], addr).await).await;
            if served.is_some() {
                break;
            }
        }
        assert_eq!(served, Some(200), "{listener}");
    }
    gw.shutdown().await;
}

/// An origin that answers every GET with a `Content-Length` body sent in two writes, the
/// second (after a pause, so it leaves the gateway in a write of its own) looking exactly
/// like hyper's bare 400.
async fn split_body_origin() -> (SocketAddr, Vec<u8>) {
    let first: &[u8] = b"first part;";
    let last: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                            first.len() + last.len()
                        );
                        let ok = s.write_all(head.as_bytes()).await.is_ok()
                            && s.write_all(first).await.is_ok();
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        if !ok || s.write_all(last).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, [first, last].concat())
}

#[tokio::test]
async fn a_last_body_write_that_looks_like_hypers_bare_400_is_passed_on_untouched() {
    let (origin, want) = split_body_origin().await;
    for telemetry in ["", "metrics: { enabled: false }"] {
        let gw = gateway(origin, "", telemetry).await;
        for listener in ["auto", "h1"] {
            let mut s = TcpStream::connect(gw.addr(listener)).await.unwrap();
            for round in 0..3 {
                s.write_all(b"GET /app HTTP/1.1\r\nHost: t\r\n\r\n")
                    .await
                    .unwrap();
                let body = read_body(&mut s).await;
                assert_eq!(
                    lossy(&body),
                    lossy(&want),
                    "{telemetry}/{listener} #{round}"
                );
            }
        }
        gw.shutdown().await;
    }
}
