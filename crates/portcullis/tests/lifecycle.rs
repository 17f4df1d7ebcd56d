//! Black-box tests of the gateway's lifecycle: admin health and readiness, graceful shutdown
//! with requests in flight, the drain timeout, and prompt close of idle connections.

#![allow(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_test::raw::{self, closes_within, status_of};
use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(2);

/// A gateway with admin on an ephemeral port, listener `main`, `/hello` answered directly and
/// `/app` proxied to `origin`.
async fn gateway(origin: SocketAddr, drain_timeout: &str) -> TestGateway {
    portcullis_test::init_tracing();
    TestGateway::start(&format!(
        r#"
server: {{ drain_timeout: {drain_timeout} }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: main
    address: "127.0.0.1:0"
upstreams:
  - name: app
    endpoints: [{{ address: "{origin}" }}]
routes:
  - name: hello
    match: {{ path: {{ exact: /hello }} }}
    action: {{ respond: {{ status: 200, body: "hello" }} }}
  - name: app
    match: {{ path: {{ prefix: /app }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#
    ))
    .await
}

/// `GET path` on the admin listener, on a fresh connection; the status, if any.
async fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    status_of(&raw::send_raw(admin, req.as_bytes(), WAIT).await)
}

#[tokio::test]
async fn admin_health_readiness_and_unknown_paths() {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(origin.addr(), "1s").await;
    let client = TestClient::http1();
    let resp = client.get(&gw.admin_url("/healthz")).await;
    assert_eq!(resp.status, 200);
    let resp = client.get(&gw.admin_url("/readyz")).await;
    assert_eq!(resp.status, 200);
    let resp = client.get(&gw.admin_url("/nope")).await;
    assert_eq!(resp.status, 404);
    let resp = client.get(&gw.url("main", "/hello")).await;
    assert_eq!(resp.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(500),
        Behavior::fixed(200, "done"),
    ))
    .await;
    let gw = gateway(origin.addr(), "5s").await;
    let addr = gw.addr("main");
    let admin = gw.admin_addr();

    let url = gw.url("main", "/app/slow");
    let in_flight = tokio::spawn(async move { TestClient::http1_no_pool().try_get(&url).await });
    origin.wait_for_hits(1, WAIT).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(gw.shutdown());

    // New connections are refused soon after the shutdown began.
    let refused = timeout(WAIT, async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepts during the drain");
    // Readiness fails while draining (the admin listener stays up until the drain is over).
    assert_eq!(admin_status(admin, "/readyz").await, Some(503));
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the request"
    );

    let resp = timeout(WAIT, in_flight)
        .await
        .expect("in-flight request bounded")
        .expect("request task")
        .expect("in-flight request failed");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "done");
    timeout(WAIT, shutdown)
        .await
        .expect("shutdown returned after the request finished")
        .expect("shutdown task");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "shutdown took {took:?}"
    );
}

#[tokio::test]
async fn drain_timeout_closes_what_is_left() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(30),
        Behavior::fixed(200, "too late"),
    ))
    .await;
    let gw = gateway(origin.addr(), "300ms").await;
    let mut stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
    stream
        .write_all(b"GET /app/stall HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    origin.wait_for_hits(1, WAIT).await;

    let started = Instant::now();
    timeout(WAIT, gw.shutdown())
        .await
        .expect("shutdown bounded by the drain timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1800),
        "shutdown took {took:?}"
    );
    // The stalled client's connection was closed (without a response).
    let mut buf = Vec::new();
    let read = timeout(WAIT, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "client connection still open after the drain");
    assert!(
        status_of(&buf).is_none(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn drain_timeout_closes_websocket_tunnels() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let origin = Origin::start(Behavior::WebSocketEcho).await;
    let gw = gateway(origin.addr(), "300ms").await;
    let mut ws = portcullis_test::ws_connect(&gw.ws_url("main", "/app/ws")).await;
    ws.send(Message::text("ping")).await.expect("send");
    let echoed = timeout(WAIT, ws.next()).await.expect("echo in time");
    assert!(matches!(echoed, Some(Ok(Message::Text(ref t))) if t.as_str() == "ping"));

    let started = Instant::now();
    timeout(WAIT, gw.shutdown())
        .await
        .expect("shutdown bounded by the drain timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1800),
        "shutdown took {took:?}"
    );
    // The tunnel is gone: the stream ends or fails.
    let next = timeout(WAIT, ws.next()).await.expect("tunnel closed");
    assert!(
        !matches!(next, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{next:?}"
    );
}

#[tokio::test]
async fn idle_connections_do_not_hold_up_shutdown() {
    let origin = Origin::start(Behavior::Echo).await;
    // A drain timeout far beyond the test's bounds: only closing idle connections at once
    // lets the shutdown return in time.
    let gw = gateway(origin.addr(), "30s").await;
    // An idle HTTP/1.1 keep-alive connection...
    let mut h1 = TcpStream::connect(gw.addr("main")).await.expect("connect");
    h1.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = timeout(WAIT, h1.read(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    assert_eq!(status_of(&buf[..n]), Some(200));
    // ...and an idle HTTP/2 connection (its client keeps polling it).
    let h2 = TestClient::http2();
    assert_eq!(h2.get(&gw.url("main", "/hello")).await.status, 200);

    let started = Instant::now();
    timeout(WAIT, gw.shutdown())
        .await
        .expect("shutdown waited on idle connections");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    assert!(
        closes_within(&mut h1, WAIT).await,
        "idle h1 connection left open"
    );
}
