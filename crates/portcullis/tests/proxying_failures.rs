//! Black-box tests of proxying failures: each maps to the documented status with the
//! `x-portcullis-reason` header and JSON body, a broken response body reaches the client as
//! a broken body (never a hang), and request bodies over `max_request_body` get 413.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use portcullis_test::{Behavior, Origin, TestClient};
use proxying_support::{assert_gateway_error, bounded, request, wait_until, Setup};

#[tokio::test]
async fn closed_port_is_502_upstream_connect_failed() {
    bounded(async {
        let closed = portcullis_test::raw::RefusedAddr::new();
        let gw = Setup::new(closed.addr()).start().await;
        for client in [TestClient::http1(), TestClient::http2()] {
            let resp = client.get(&gw.url("main", "/x")).await;
            assert_gateway_error(&resp, 502, "upstream_connect_failed");
        }
    })
    .await;
}

#[tokio::test]
async fn slow_upstream_is_504_upstream_timeout_at_the_route_timeout() {
    bounded(async {
        let origin = Origin::start(Behavior::slow(
            Duration::from_secs(2),
            Behavior::Status(200),
        ))
        .await;
        let gw = Setup::new(origin.addr())
            .route("timeout: 200ms")
            .start()
            .await;
        let started = tokio::time::Instant::now();
        let resp = TestClient::http1().get(&gw.url("main", "/slow")).await;
        let took = started.elapsed();
        assert_gateway_error(&resp, 504, "upstream_timeout");
        assert!(
            took >= Duration::from_millis(200),
            "answered after {took:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn upstream_closing_without_an_answer_is_502_upstream_reset() {
    bounded(async {
        let origin = Origin::start(Behavior::CloseConnection).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                let resp = client.get(&gw.url("main", "/x")).await;
                assert_gateway_error(&resp, 502, "upstream_reset");
            }
        }
    })
    .await;
}

/// Reads the response body to its end; `Err` if it broke.
async fn body_outcome(client: &TestClient, url: &str) -> (Vec<Bytes>, anyhow::Result<()>) {
    let mut resp = client.send(request("GET", url, "")).await.unwrap();
    assert_eq!(resp.status, 200, "the head was sent before the failure");
    let mut chunks = Vec::new();
    loop {
        match resp.next_chunk().await {
            Ok(Some(chunk)) => chunks.push(chunk),
            Ok(None) => return (chunks, Ok(())),
            Err(e) => return (chunks, Err(e)),
        }
    }
}

#[tokio::test]
async fn reset_after_headers_breaks_the_client_body_instead_of_hanging() {
    bounded(async {
        let origin = Origin::start(Behavior::ResetAfterHeaders).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                let (chunks, end) = body_outcome(&client, &gw.url("main", "/r")).await;
                assert!(chunks.is_empty(), "{chunks:?}");
                assert!(end.is_err(), "a broken body must not look complete");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn abort_mid_body_gives_at_most_the_prefix_then_a_broken_body() {
    bounded(async {
        let origin = Origin::start(Behavior::AbortMidBody {
            prefix: Bytes::from_static(b"partial"),
        })
        .await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for (client, h2_client) in [(TestClient::http1(), false), (TestClient::http2(), true)] {
                let (chunks, end) = body_outcome(&client, &gw.url("main", "/r")).await;
                // The prefix and the upstream's abort may reach the gateway in the same read
                // (an origin's small DATA held back by Nagle until its RST_STREAM or FIN
                // follows). hyper then fails the client stream before flushing what it just
                // buffered (HTTP/1.1: connection closed; HTTP/2: the reset discards queued
                // DATA), so the client may get less of the prefix, never more, and always a
                // broken body.
                let got = chunks.concat();
                assert!(
                    b"partial".starts_with(&got),
                    "h2 upstream: {h2_upstream}, h2 client: {h2_client}, got {got:?}"
                );
                assert!(end.is_err(), "a truncated body must not look complete");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn no_endpoint_passing_health_checks_is_503_no_healthy_upstream() {
    bounded(async {
        let origin = Origin::start(Behavior::Status(500)).await;
        let gw = Setup::new(origin.addr())
            .upstream(
                "health_check: { path: /health, interval: 20ms, timeout: 20ms, \
                 unhealthy_threshold: 1, healthy_threshold: 1 }",
            )
            .start()
            .await;
        let client = TestClient::http1();
        let url = gw.url("main", "/x");
        // Until the first check fails the endpoint is in rotation and answers 500 itself.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let resp = loop {
            let resp = client.get(&url).await;
            if resp.status != 500 {
                break resp;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never left rotation"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_gateway_error(&resp, 503, "no_healthy_upstream");
        assert!(origin
            .requests()
            .iter()
            .any(|r| r.path_and_query() == "/health"));
        let before = origin
            .requests()
            .iter()
            .filter(|r| r.path_and_query() == "/x")
            .count();
        let resp = TestClient::http2().get(&url).await;
        assert_gateway_error(&resp, 503, "no_healthy_upstream");
        let after = origin
            .requests()
            .iter()
            .filter(|r| r.path_and_query() == "/x")
            .count();
        assert_eq!(before, after, "an out-of-rotation endpoint got traffic");

        // Back in rotation once a check passes again.
        origin.set_status(200);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while client.get(&url).await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never came back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_and_never_reaches_the_origin() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr())
            .route("max_request_body: 1KiB")
            .start()
            .await;
        for client in [TestClient::http1(), TestClient::http2()] {
            let resp = client
                .request(request("POST", &gw.url("main", "/up"), vec![b'x'; 1025]))
                .await;
            assert_gateway_error(&resp, 413, "request_body_too_large");
            assert_eq!(origin.hits(), 0);
        }
        // Exactly the limit is fine.
        let resp = TestClient::http1()
            .request(request("POST", &gw.url("main", "/up"), vec![b'x'; 1024]))
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["body_len"], 1024);
    })
    .await;
}

/// Streams 512-byte chunks without a length until 4 KiB are sent or the gateway stops
/// reading; returns the outcome.
async fn stream_oversized(
    client: &TestClient,
    url: &str,
) -> anyhow::Result<portcullis_test::TestResponse> {
    let (mut body, response) = client.request_streaming(Request::post(url).body(()).unwrap());
    for _ in 0..8 {
        if !body.try_send(vec![b'x'; 512]).await {
            break;
        }
    }
    body.finish();
    response.await.unwrap()
}

#[tokio::test]
async fn streamed_body_over_the_limit_is_413_and_the_origin_never_gets_it_whole() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr()).route("max_request_body: 1KiB");
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for (client, h2_client) in [
                (TestClient::http1_no_pool(), false),
                (TestClient::http2(), true),
            ] {
                origin.clear_requests();
                let outcome = stream_oversized(&client, &gw.url("main", "/up")).await;
                // The origin answers only after the whole body, so nothing was answered yet
                // when the limit was crossed: the gateway can and must say 413. (An HTTP/1.1
                // client may instead see the connection close while it still writes.)
                match outcome {
                    Ok(resp) => assert_gateway_error(&resp, 413, "request_body_too_large"),
                    Err(e) => assert!(!h2_client, "h2 client got no answer: {e:#}"),
                }
                for seen in origin.requests() {
                    assert!(!seen.complete, "the origin got a whole oversized body");
                    assert!(seen.body.len() <= 1024, "{} bytes passed", seen.body.len());
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn streamed_body_under_the_limit_passes() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr())
            .route("max_request_body: 1KiB")
            .start()
            .await;
        let (mut body, response) = TestClient::http1()
            .request_streaming(Request::post(gw.url("main", "/up")).body(()).unwrap());
        body.send(vec![b'x'; 512]).await;
        body.send(vec![b'y'; 512]).await;
        body.finish();
        let resp = response.await.unwrap().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["body_len"], 1024);
        wait_until("the origin to record the whole body", || {
            origin.requests()[0].complete
        })
        .await;
    })
    .await;
}
