//! Black-box tests of the upstream connection pool through a running gateway: keep-alive
//! reuse, the idle cap, the idle timeout, HTTP/2 multiplexing, and connections whose request
//! body was still being written when the response ended (never reused).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

mod upstreams_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_test::raw::{send_raw, status_of};
use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use upstreams_support::{config, endpoints, get};

/// `n` concurrent GETs of `/app` through `main`.
async fn burst(client: &TestClient, gw: &TestGateway, n: usize) -> Vec<TestResponse> {
    let url = gw.url("main", "/app");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        out.push(resp);
    }
    out
}

#[tokio::test]
async fn sequential_http1_requests_reuse_one_upstream_connection() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("a", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    // A new downstream connection per request: reuse is the gateway's, not the client's.
    let client = TestClient::http1_no_pool();
    for i in 0..50 {
        let resp = get(&client, &gw, &format!("/app/{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["version"], "HTTP/1.1");
    }
    assert_eq!(origin.hits(), 50);
    assert_eq!(origin.connections(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_idle_zero_keeps_no_connection() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("a", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "pool: {{ max_idle_per_endpoint: 0 }}\n    endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let client = TestClient::http1();
    for _ in 0..10 {
        assert_eq!(get(&client, &gw, "/app").await.status, 200);
    }
    assert_eq!(origin.connections(), 10);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_idle_per_endpoint_caps_the_idle_connections_kept() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named(
        "a",
        Behavior::slow(Duration::from_millis(100), Behavior::Echo),
    )
    .await;
    let gw = TestGateway::start(&config(&format!(
        "pool: {{ max_idle_per_endpoint: 1 }}\n    endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let client = TestClient::http1();
    // 4 at once need 4 connections; afterwards at most 1 of them is kept.
    burst(&client, &gw, 4).await;
    assert_eq!(origin.connections(), 4);
    burst(&client, &gw, 4).await;
    let opened = origin.connections() - 4;
    assert!(
        opened >= 3,
        "only {opened} new connections: more than 1 idle connection was kept"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_kept_by_default_for_concurrent_bursts() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named(
        "a",
        Behavior::slow(Duration::from_millis(100), Behavior::Echo),
    )
    .await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let client = TestClient::http1();
    burst(&client, &gw, 4).await;
    assert_eq!(origin.connections(), 4);
    // The 4 are all kept idle; a second burst reuses them.
    burst(&client, &gw, 4).await;
    assert!(origin.connections() <= 5, "{}", origin.connections());
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_closes_pooled_connections() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("a", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "pool: {{ idle_timeout: 100ms }}\n    endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let client = TestClient::http1();
    assert_eq!(get(&client, &gw, "/app").await.status, 200);
    assert_eq!(origin.connections(), 1);
    // Not waiting for a state: letting the pooled connection sit idle past its timeout is
    // the scenario itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&client, &gw, "/app").await.status, 200);
    assert_eq!(origin.connections(), 2, "the expired connection was reused");
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_upstream_multiplexes_concurrent_requests_on_one_connection() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named(
        "a",
        Behavior::slow(Duration::from_millis(100), Behavior::Echo),
    )
    .await;
    let gw = TestGateway::start(&config(&format!(
        "protocol: http2\n    endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let started = tokio::time::Instant::now();
    let responses = burst(&client, &gw, 20).await;
    for resp in &responses {
        assert_eq!(resp.json()["version"], "HTTP/2.0");
    }
    assert_eq!(origin.hits(), 20);
    assert_eq!(origin.connections(), 1);
    // Concurrently, not one after the other (20 × 100 ms).
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}

/// An HTTP/1.1 origin on raw sockets that answers every request `200 ok` as soon as its head
/// has arrived and only then reads its body, keeping the connection open (servers may answer
/// early, e.g. to refuse an upload). Counts the connections it accepted.
struct EarlyAnswerOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl EarlyAnswerOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(early_answers(stream));
            }
        });
        Self {
            addr,
            connections,
            accept,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for EarlyAnswerOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more of `stream` into `buf`; false at EOF or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// One connection of `EarlyAnswerOrigin`: per request, answer on its head, then consume its
/// body (a `content-length` body, or a chunked one up to its last chunk).
async fn early_answers(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        buf.drain(..head_end);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let length = head.lines().find_map(|l| {
            let value = l.strip_prefix("content-length:")?;
            value.trim().parse::<usize>().ok()
        });
        let body_end = loop {
            let end = match length {
                Some(len) => (buf.len() >= len).then_some(len),
                None if head.contains("transfer-encoding: chunked") => {
                    find(&buf, b"0\r\n\r\n").map(|i| i + 5)
                }
                None => Some(0),
            };
            if let Some(end) = end {
                break end;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        buf.drain(..body_end);
    }
}

/// Sends `head_and_partial_body` to the gateway and reads until the `200 ok` response is in;
/// the returned socket is the client that goes on stalling.
async fn stalled_client(gw: SocketAddr, head_and_partial_body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gw).await.unwrap();
    stream
        .write_all(head_and_partial_body.as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while !(find(&buf, b"200 OK").is_some() && buf.ends_with(b"\r\n\r\nok")) {
            if !read_more(&mut stream, &mut buf).await {
                break;
            }
        }
    })
    .await;
    assert!(
        answered.is_ok() && buf.ends_with(b"ok"),
        "the stalling client got no answer: {}",
        String::from_utf8_lossy(&buf)
    );
    stream
}

#[tokio::test]
async fn a_stalled_request_body_never_holds_up_the_next_request() {
    portcullis_test::init_tracing();
    // Each: a request whose head the origin answers at once, with the body left incomplete.
    let cases = [
        (
            "content-length body stalled after 10 of 1000 bytes",
            "POST /app/a HTTP/1.1\r\nhost: gw\r\ncontent-length: 1000\r\n\r\n0123456789",
        ),
        (
            "chunked body never terminated",
            "POST /app/a HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        ),
        (
            "expect: 100-continue, then no body",
            "POST /app/a HTTP/1.1\r\nhost: gw\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n\r\n",
        ),
    ];
    let mut failed = Vec::new();
    for (case, stalled) in cases {
        let origin = EarlyAnswerOrigin::start().await;
        let gw = TestGateway::start(&config(&format!(
            "endpoints: [{{ address: \"{}\" }}]",
            origin.addr
        )))
        .await;
        let a = stalled_client(gw.addr("main"), stalled).await;
        // While A stalls, B is answered at once (on another upstream connection).
        let b = tokio::time::timeout(
            Duration::from_millis(100),
            TestClient::http1_no_pool().get(&gw.url("main", "/app/b")),
        )
        .await;
        match b {
            Ok(resp) if resp.status == 200 => {}
            Ok(resp) => failed.push(format!("{case}: {} {}", resp.status, resp.text())),
            Err(_) => failed.push(format!(
                "{case}: the next request waited on the stalled one"
            )),
        }
        if origin.connections() != 2 {
            failed.push(format!("{case}: {} connections", origin.connections()));
        }
        drop(a);
        gw.shutdown().await;
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test]
async fn complete_requests_with_bodies_reuse_one_upstream_connection() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("a", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&origin, 1)])
    )))
    .await;
    let requests = [
        "GET /app/get HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        "POST /app/length HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: 10\r\n\r\n0123456789",
        "POST /app/chunked HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        "POST /app/expect HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n0123456789",
    ];
    for round in 0..3 {
        for request in requests {
            // A new downstream connection each time: reuse is the gateway's.
            let resp = send_raw(gw.addr("main"), request.as_bytes(), Duration::from_secs(5)).await;
            let text = String::from_utf8_lossy(&resp);
            let last = text.rsplit("HTTP/1.1 ").next().unwrap_or_default();
            assert_eq!(
                status_of(format!("HTTP/1.1 {last}").as_bytes()),
                Some(200),
                "round {round}: {request:?} -> {text}"
            );
        }
    }
    assert_eq!(origin.hits(), 12);
    assert_eq!(origin.connections(), 1);
    gw.shutdown().await;
}
