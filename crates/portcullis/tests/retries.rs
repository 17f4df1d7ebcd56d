//! Black-box tests of retries on paused time: each retry condition (connect failure, reset,
//! listed status, gRPC code, per-try timeout), method and body rules, backoff and
//! `Retry-After`, the deadline, a retry going to another endpoint, and the retry budget
//! stopping a retry storm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_test::raw::RefusedAddr;
use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient, TestGateway};
use proxying_support::{assert_gateway_error, request, Setup};
use tokio::time::Instant;

/// An origin that answers `fail` for its first `n` requests, then 200 with the request body.
async fn fails_first(n: usize, fail: ResponseSpec) -> (Origin, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let origin = Origin::start(Behavior::scripted(move |req| {
        if seen.fetch_add(1, Ordering::SeqCst) < n {
            fail.clone()
        } else {
            ResponseSpec::new(200).body(req.body.clone())
        }
    }))
    .await;
    (origin, count)
}

fn two_endpoints(a: std::net::SocketAddr, b: std::net::SocketAddr, route: &str) -> String {
    format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{a}\" }}, {{ address: \"{b}\" }}]\n\
         routes:\n  - name: app\n    action: {{ proxy: {{ upstream: app }} }}\n    {route}\n"
    )
}

async fn get(gw: &TestGateway, path: &str) -> portcullis_test::TestResponse {
    TestClient::http1().get(&gw.url("main", path)).await
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_is_retried_on_the_other_endpoint() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let dead = RefusedAddr::new();
    let yaml = two_endpoints(dead.addr(), origin.addr(), "retry: { attempts: 2 }");
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..10 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert_eq!(origin.hits(), 10);

    // Without retry, round robin sends half of them to the dead endpoint.
    let yaml = two_endpoints(dead.addr(), origin.addr(), "timeout: 5s");
    let gw = TestGateway::start(&yaml).await;
    let mut failed = 0;
    for _ in 0..10 {
        if get(&gw, "/").await.status == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, 5);
}

#[tokio::test(start_paused = true)]
async fn a_reset_before_the_response_is_retried() {
    let dropper = Origin::start(Behavior::CloseConnection).await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = two_endpoints(dropper.addr(), origin.addr(), "retry: { attempts: 2 }");
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..6 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert_eq!(origin.hits(), 6);
}

#[tokio::test(start_paused = true)]
async fn listed_statuses_are_retried_until_attempts_run_out() {
    let (origin, count) = fails_first(2, ResponseSpec::new(503)).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 3, on: [], statuses: [503] }")
        .start()
        .await;
    assert_eq!(get(&gw, "/").await.status, 200, "third attempt succeeds");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Counted by cause on the upstream (what the admin API and metrics show).
    let runtime = gw.gateway().shared().runtime.load_full();
    let upstream = &runtime.upstreams[0];
    use portcullis::upstream::outcome::RetryCause;
    assert_eq!(upstream.retries(RetryCause::Status), 2);
    assert_eq!(upstream.retries(RetryCause::Reset), 0);

    // Exhausted: the upstream's own last answer is passed on as is.
    let (origin, count) = fails_first(9, ResponseSpec::new(503).body("busy")).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 3, on: [], statuses: [503] }")
        .start()
        .await;
    let resp = get(&gw, "/").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), "busy");
    assert!(resp.header("x-portcullis-reason").is_none());
    assert_eq!(count.load(Ordering::SeqCst), 3);

    // Not listed: not retried.
    let (origin, count) = fails_first(1, ResponseSpec::new(500)).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 3, on: [], statuses: [503] }")
        .start()
        .await;
    assert_eq!(get(&gw, "/").await.status, 500);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn listed_grpc_codes_are_retried() {
    let unavailable = ResponseSpec::new(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", "14");
    let (origin, count) = fails_first(1, unavailable).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, on: [], grpc_statuses: [14], methods: [POST] }")
        .start()
        .await;
    let resp = TestClient::http1()
        .request(request("POST", &gw.url("main", "/pkg.Svc/Call"), "msg"))
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("grpc-status").is_none(), "the successful retry");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_is_retried_within_the_route_timeout() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let origin = Origin::start(Behavior::scripted(move |_| {
        let delay = if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Duration::from_secs(60)
        } else {
            Duration::ZERO
        };
        ResponseSpec::new(200).delay(delay)
    }))
    .await;
    let gw = Setup::new(origin.addr())
        .route("timeout: 10s")
        .route("retry: { attempts: 2, per_try_timeout: 1s, on: [timeout], backoff_base: 1ms, backoff_max: 1ms }")
        .start()
        .await;
    let started = Instant::now();
    assert_eq!(get(&gw, "/").await.status, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );

    // The route timeout bounds all attempts together: 3 tries of 1 s do not fit in 2.5 s.
    let slow = Origin::start(Behavior::slow(
        Duration::from_secs(60),
        Behavior::Status(200),
    ))
    .await;
    let gw = Setup::new(slow.addr())
        .route("timeout: 2500ms")
        .route("retry: { attempts: 5, per_try_timeout: 1s, on: [timeout], backoff_base: 1ms, backoff_max: 1ms }")
        .start()
        .await;
    let started = Instant::now();
    assert_gateway_error(&get(&gw, "/").await, 504, "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(2600),
        "{took:?}"
    );
    assert_eq!(slow.hits(), 3);
}

#[tokio::test(start_paused = true)]
async fn only_listed_methods_are_retried_and_kept_bodies_are_replayed() {
    let route = "retry: { attempts: 2, on: [], statuses: [503] }";
    // POST is not idempotent: not retried by default.
    let (origin, count) = fails_first(1, ResponseSpec::new(503)).await;
    let gw = Setup::new(origin.addr()).route(route).start().await;
    let resp = TestClient::http1()
        .request(request("POST", &gw.url("main", "/"), "payload"))
        .await;
    assert_eq!(resp.status, 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // PUT is: the body is kept and sent again, byte for byte.
    let (origin, count) = fails_first(1, ResponseSpec::new(503)).await;
    let gw = Setup::new(origin.addr()).route(route).start().await;
    let resp = TestClient::http1()
        .request(request("PUT", &gw.url("main", "/"), "payload"))
        .await;
    assert_eq!(
        (resp.status.as_u16(), resp.text().as_str()),
        (200, "payload")
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let bodies: Vec<_> = origin.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, vec!["payload", "payload"]);

    // A route may opt POST in.
    let (origin, count) = fails_first(1, ResponseSpec::new(503)).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, on: [], statuses: [503], methods: [POST] }")
        .start()
        .await;
    let resp = TestClient::http1()
        .request(request("POST", &gw.url("main", "/"), "payload"))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_max_body_is_streamed_and_not_retried() {
    let (origin, count) = fails_first(1, ResponseSpec::new(503)).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, on: [], statuses: [503], max_body: 4B }")
        .start()
        .await;
    let resp = TestClient::http1()
        .request(request("PUT", &gw.url("main", "/"), "too long"))
        .await;
    assert_eq!(resp.status, 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(origin.requests()[0].body, "too long");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_max_retry_after() {
    let fail = ResponseSpec::new(503).header("retry-after", "2");
    let (origin, count) = fails_first(1, fail.clone()).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, on: [], statuses: [503], max_retry_after: 5s }")
        .start()
        .await;
    let started = Instant::now();
    assert_eq!(get(&gw, "/").await.status, 200);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // Asking for more than max_retry_after cancels the retry: the 503 is passed on at once.
    let (origin, count) = fails_first(1, fail).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, on: [], statuses: [503], max_retry_after: 1s }")
        .start()
        .await;
    let started = Instant::now();
    let resp = get(&gw, "/").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("2"));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_start_before_the_deadline_is_not_started() {
    let fail = ResponseSpec::new(503).header("retry-after", "2");
    let (origin, count) = fails_first(1, fail).await;
    let gw = Setup::new(origin.addr())
        .route("timeout: 1s")
        .route("retry: { attempts: 2, on: [], statuses: [503], max_retry_after: 5s }")
        .start()
        .await;
    let started = Instant::now();
    assert_eq!(get(&gw, "/").await.status, 503);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_a_retry_storm() {
    // Everything fails. Without a budget 100 requests x 3 attempts would be 300 calls; the
    // budget (10% of requests + 1/s over 10 s = 10 + 10) allows at most 20 retries.
    let origin = Origin::start(Behavior::Status(503)).await;
    let gw = Setup::new(origin.addr())
        .upstream("retry_budget: { percent: 10, min_per_second: 1, window: 10s }")
        .route(
            "retry: { attempts: 3, on: [], statuses: [503], backoff_base: 1ms, backoff_max: 1ms }",
        )
        .start()
        .await;
    for _ in 0..100 {
        assert_eq!(get(&gw, "/").await.status, 503);
    }
    let calls = origin.hits();
    assert_eq!(calls, 120, "100 requests + 20 budgeted retries");

    // A healthy upstream with rare failures gets all its retries: one failure in 20.
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let origin = Origin::start(Behavior::scripted(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) % 20 == 19 {
            ResponseSpec::new(503)
        } else {
            ResponseSpec::new(200)
        }
    }))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream("retry_budget: { percent: 10, min_per_second: 0, window: 10s }")
        .route(
            "retry: { attempts: 3, on: [], statuses: [503], backoff_base: 1ms, backoff_max: 1ms }",
        )
        .start()
        .await;
    for _ in 0..200 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_the_now_open_breaker_would_refuse_passes_on_the_last_answer() {
    let origin = Origin::start(Behavior::Status(500)).await;
    let gw = Setup::new(origin.addr())
        .upstream("circuit_breaker: { window: { calls: 2 }, min_calls: 2, failure_rate: 100 }")
        .route(
            "retry: { attempts: 3, on: [], statuses: [500], backoff_base: 1ms, backoff_max: 1ms }",
        )
        .start()
        .await;
    // Attempt two trips the breaker; a third attempt would be refused, so the upstream's
    // own 500 goes back instead of a 503 circuit_open.
    let resp = get(&gw, "/").await;
    assert_eq!(resp.status, 500);
    assert!(resp.header("x-portcullis-reason").is_none());
    assert_eq!(origin.hits(), 2);
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_per_try_timeout_bounds_requests_that_are_never_retried_too() {
    let slow = Origin::start(Behavior::slow(
        Duration::from_secs(60),
        Behavior::Status(200),
    ))
    .await;
    let gw = Setup::new(slow.addr())
        .route("timeout: 10s")
        .route("retry: { attempts: 2, per_try_timeout: 1s, on: [timeout] }")
        .start()
        .await;
    let started = Instant::now();
    let resp = TestClient::http1()
        .request(request("POST", &gw.url("main", "/"), "x"))
        .await;
    assert_gateway_error(&resp, 504, "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );
    assert_eq!(slow.hits(), 1, "POST is not retried");
}

// Real time: on a paused clock, tokio may jump to the route timeout while the HTTP/2 body is
// still in flight between sockets (nothing is runnable for a moment), and time plays no part
// in this test.
#[tokio::test]
async fn grpc_over_http2_is_retried_with_its_message_replayed() {
    let unavailable = ResponseSpec::new(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", "14");
    let (origin, count) = fails_first(1, unavailable).await;
    let gw = Setup::new(origin.addr())
        .h2_upstream()
        .route("retry: { attempts: 2, on: [], grpc_statuses: [14], methods: [POST] }")
        .start()
        .await;
    // A length-prefixed gRPC message: flag 0, length 5, "hello".
    let message = bytes::Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let req = http::Request::post(gw.url("main", "/pkg.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(message.clone()))
        .unwrap();
    let resp = TestClient::http2().request(req).await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("grpc-status").is_none(), "the retry's answer");
    assert_eq!(resp.body, message, "the retry carried the same message");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let versions: Vec<_> = origin.requests().iter().map(|r| r.version).collect();
    assert_eq!(versions, [http::Version::HTTP_2, http::Version::HTTP_2]);
}
