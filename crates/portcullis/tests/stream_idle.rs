//! Black-box tests of the stream idle timeout on paused time: a response body the upstream
//! stops sending and a request body the client stops sending are cut once they have moved
//! nothing for `stream_idle_timeout` (not before), and a slow but steady body is not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Request;
use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use tokio::time::Instant;

/// The route's stream idle timeout in these tests.
const IDLE: Duration = Duration::from_secs(10);

/// A gateway whose route `/` goes to `origin` with `stream_idle_timeout` = `IDLE` and a
/// response-head timeout long enough never to matter.
async fn gateway(origin: &Origin, protocol: &str) -> TestGateway {
    portcullis_test::init_tracing();
    TestGateway::start(&format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    protocol: {protocol}\n    endpoints: [{{ address: \"{}\" }}]\n\
         routes:\n  - name: app\n    timeout: 1h\n    stream_idle_timeout: 10s\n    action: {{ proxy: {{ upstream: app }} }}\n",
        origin.addr()
    ))
    .await
}

fn client(h2: bool) -> TestClient {
    if h2 {
        TestClient::http2()
    } else {
        TestClient::http1()
    }
}

/// An origin sends the head and one chunk, then stalls for an hour: the client gets the
/// chunk, nothing until `IDLE` has passed, then a broken body.
async fn stalled_response_is_cut(h2_client: bool) {
    let origin = Origin::start(Behavior::Stream {
        chunks: 2,
        interval: Duration::from_secs(3600),
    })
    .await;
    let gw = gateway(&origin, "http1").await;
    let client = client(h2_client);
    let req = Request::get(gw.url("main", "/stall"))
        .body(Default::default())
        .unwrap();
    let mut resp = client.send(req).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.next_chunk().await.unwrap().unwrap(), "chunk 0\n");

    let start = Instant::now();
    let early = resp.next_chunk_within(IDLE - Duration::from_secs(1)).await;
    let err = early.expect_err("no chunk, no end").to_string();
    assert!(err.contains("no response chunk within"), "{err}");
    let cut = resp.next_chunk_within(Duration::from_secs(2)).await;
    let err = cut.expect_err("the body is cut").to_string();
    assert!(err.contains("response body"), "{err}");
    assert!(start.elapsed() <= IDLE + Duration::from_millis(10));

    // The cut connection is not used again: the next request opens a new one.
    let req = Request::get(gw.url("main", "/again"))
        .body(Default::default())
        .unwrap();
    let mut resp = client.send(req).await.unwrap();
    assert_eq!(resp.next_chunk().await.unwrap().unwrap(), "chunk 0\n");
    assert_eq!(origin.connections(), 2);
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_response_body_is_cut_http1() {
    stalled_response_is_cut(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_response_body_is_cut_http2() {
    stalled_response_is_cut(true).await;
}

/// A client sends the request head and part of its body, then stalls: the upstream sees its
/// request body broken off once `IDLE` has passed, not before, and the client gets an error.
async fn stalled_request_is_cut(protocol: &str) {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = gateway(&origin, protocol).await;
    let req = Request::post(gw.url("main", "/upload")).body(()).unwrap();
    let (mut body, response) = TestClient::http1().request_streaming(req);
    body.send("part").await;
    origin.wait_for_hits(1, Duration::from_secs(1)).await;
    let start = Instant::now();
    while origin.requests()[0].body.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    tokio::time::sleep(IDLE - Duration::from_secs(1) - start.elapsed()).await;
    let seen = &origin.requests()[0];
    assert!(!seen.aborted && !seen.complete, "cut too early");
    assert!(!response.is_finished());

    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = &origin.requests()[0];
    assert!(seen.aborted, "the upstream saw no cut");
    assert!(!seen.complete);
    assert_eq!(seen.body, "part");
    // The client is told its request failed, and that it was its own fault: 408
    // request_timeout, whichever protocol the upstream speaks.
    let resp = response.await.unwrap().expect("the gateway answers");
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.header("x-portcullis-reason"), Some("request_timeout"));
    drop(body);
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_cut_http1_upstream() {
    stalled_request_is_cut("http1").await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_cut_http2_upstream() {
    stalled_request_is_cut("http2").await;
}

/// Bodies that move a frame every `IDLE / 2`, both ways, are never cut.
#[tokio::test(start_paused = true)]
async fn slow_but_steady_bodies_are_not_cut() {
    let origin = Origin::start(Behavior::Stream {
        chunks: 6,
        interval: IDLE / 2,
    })
    .await;
    let gw = gateway(&origin, "http1").await;
    let start = Instant::now();
    let resp = TestClient::http1()
        .try_get(&gw.url("main", "/slow"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().lines().count(), 6);
    assert_eq!(start.elapsed().as_secs(), (IDLE / 2 * 5).as_secs());

    let echo = Origin::start(Behavior::Echo).await;
    let gw = gateway(&echo, "http1").await;
    let req = Request::post(gw.url("main", "/upload")).body(()).unwrap();
    let (mut body, response) = TestClient::http1().request_streaming(req);
    for _ in 0..6 {
        body.send("tick").await;
        tokio::time::sleep(IDLE / 2).await;
    }
    body.finish();
    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["body_len"], 24);
    let seen = &echo.requests()[0];
    assert!(seen.complete && !seen.aborted);
}
