//! Black-box tests of deadline propagation on paused time: the caller's budget
//! (`grpc-timeout` or the route's milliseconds header) caps the route timeout, what is left
//! is sent upstream in the same format, a spent budget never reaches the upstream, and a
//! retry that cannot start before the caller's deadline is not started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::time::Duration;

use http::Request;
use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient, TestGateway};
use proxying_support::{assert_gateway_error, Setup};
use tokio::time::Instant;

/// An origin that answers after `delay` and echoes the deadline headers it received.
async fn echo_deadline(delay: Duration) -> Origin {
    Origin::start(Behavior::scripted(move |req| {
        let mut spec = ResponseSpec::new(200).delay(delay);
        for name in ["grpc-timeout", "x-timeout-ms"] {
            if let Some(v) = req.header(name) {
                spec = spec.header(&format!("seen-{name}"), v);
            }
        }
        spec
    }))
    .await
}

async fn get_with(gw: &TestGateway, headers: &[(&str, &str)]) -> portcullis_test::TestResponse {
    let mut req = Request::get(gw.url("main", "/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::default()).unwrap();
    TestClient::http1().request(req).await
}

#[tokio::test(start_paused = true)]
async fn the_remaining_budget_goes_upstream_in_the_callers_format() {
    let origin = echo_deadline(Duration::ZERO).await;
    let gw = Setup::new(origin.addr())
        .route("deadline: { header: x-timeout-ms }")
        .start()
        .await;
    // Paused time: no time passes inside the gateway, so the whole budget is left.
    let resp = get_with(&gw, &[("grpc-timeout", "1500m")]).await;
    assert_eq!(resp.status, 200);
    let seen = resp.header("seen-grpc-timeout").unwrap();
    assert_eq!(seen, "1500000u", "1.5 s in the finest unit that fits");
    assert!(resp.header("seen-x-timeout-ms").is_none());

    let resp = get_with(&gw, &[("x-timeout-ms", "2500")]).await;
    assert_eq!(resp.header("seen-x-timeout-ms"), Some("2500"));
    assert!(resp.header("seen-grpc-timeout").is_none());

    // No budget from the caller: none is invented.
    let resp = get_with(&gw, &[]).await;
    assert!(resp.header("seen-grpc-timeout").is_none());
    assert!(resp.header("seen-x-timeout-ms").is_none());
}

#[tokio::test(start_paused = true)]
async fn time_spent_in_the_gateway_is_taken_off_the_budget() {
    // A rate limit in delay mode holds the second request 1 s before it is forwarded.
    let origin = echo_deadline(Duration::ZERO).await;
    let gw = Setup::new(origin.addr())
        .route("rate_limits: [slow]")
        .start_with_extra(
            "rate_limits:\n  - { name: slow, algorithm: token_bucket, limit: 1, window: 1s, \
             burst: 1, max_delay: 5s }\n",
        )
        .await;
    let first = get_with(&gw, &[("grpc-timeout", "3S")]).await;
    assert_eq!(first.header("seen-grpc-timeout"), Some("3000000u"));
    let second = get_with(&gw, &[("grpc-timeout", "3S")]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("seen-grpc-timeout"), Some("2000000u"));
}

#[tokio::test(start_paused = true)]
async fn the_earlier_deadline_wins_and_names_the_reason() {
    let origin = echo_deadline(Duration::from_secs(10)).await;
    let gw = Setup::new(origin.addr()).route("timeout: 2s").start().await;
    // The caller's 500 ms ends first: 504 deadline_exceeded at 500 ms.
    let started = Instant::now();
    let resp = get_with(&gw, &[("grpc-timeout", "500m")]).await;
    assert_gateway_error(&resp, 504, "deadline_exceeded");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(550),
        "{took:?}"
    );
    // The route's 2 s end first: 504 upstream_timeout at 2 s.
    let started = Instant::now();
    let resp = get_with(&gw, &[("grpc-timeout", "5S")]).await;
    assert_gateway_error(&resp, 504, "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2050),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_upstream_is_told_only_what_its_attempt_has_left() {
    let origin = echo_deadline(Duration::ZERO).await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 2, per_try_timeout: 300ms }")
        .start()
        .await;
    let resp = get_with(&gw, &[("grpc-timeout", "10S")]).await;
    assert_eq!(resp.header("seen-grpc-timeout"), Some("300000u"));
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_never_reaches_the_upstream() {
    let origin = echo_deadline(Duration::ZERO).await;
    let gw = Setup::new(origin.addr())
        .route("deadline: { header: x-timeout-ms }")
        .start()
        .await;
    for headers in [[("grpc-timeout", "0m")], [("x-timeout-ms", "0")]] {
        assert_gateway_error(&get_with(&gw, &headers).await, 504, "deadline_exceeded");
    }
    assert_eq!(origin.hits(), 0);
    // Malformed: 400, not forwarded.
    for headers in [[("grpc-timeout", "soon")], [("x-timeout-ms", "-5")]] {
        assert_gateway_error(&get_with(&gw, &headers).await, 400, "bad_request");
    }
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_ignored_when_the_route_turns_it_off() {
    let origin = echo_deadline(Duration::from_secs(1)).await;
    let gw = Setup::new(origin.addr())
        .route("deadline: { grpc_timeout: false }")
        .start()
        .await;
    let resp = get_with(&gw, &[("grpc-timeout", "10m")]).await;
    assert_eq!(resp.status, 200, "the caller's 10 ms is not enforced");
    assert_eq!(
        resp.header("seen-grpc-timeout"),
        Some("10m"),
        "passed through as is"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_start_before_the_callers_deadline_is_not_started() {
    let origin = Origin::start(Behavior::scripted(|_| {
        ResponseSpec::new(503).header("retry-after", "1")
    }))
    .await;
    let gw = Setup::new(origin.addr())
        .route("retry: { attempts: 3, on: [], statuses: [503], max_retry_after: 5s }")
        .start()
        .await;
    // The upstream asks for a 1 s pause; the caller has 100 ms: no retry, its 503 goes back.
    let started = Instant::now();
    let resp = get_with(&gw, &[("grpc-timeout", "100m")]).await;
    assert_eq!(resp.status, 503);
    assert!(started.elapsed() < Duration::from_millis(10));
    assert_eq!(origin.hits(), 1);
    // With 3 s it waits the second and retries (twice, then passes the last 503 on).
    let resp = get_with(&gw, &[("grpc-timeout", "3S")]).await;
    assert_eq!(resp.status, 503);
    assert_eq!(origin.hits(), 4);
}

/// A repeated deadline header (or several values on one line) cannot stretch the deadline:
/// the smallest valid value of all is the budget, for the milliseconds header and for
/// `grpc-timeout`; a value that does not parse among valid ones is ignored.
#[tokio::test(start_paused = true)]
async fn a_repeated_deadline_header_times_out_at_its_smallest_value() {
    let slow = echo_deadline(Duration::from_secs(10)).await;
    let gw = Setup::new(slow.addr())
        .route("deadline: { header: x-request-timeout-ms }")
        .start()
        .await;
    let cases: [(&[(&str, &str)], u64); 8] = [
        (
            &[
                ("x-request-timeout-ms", "1000"),
                ("x-request-timeout-ms", "100"),
            ],
            100,
        ),
        (
            &[
                ("x-request-timeout-ms", "100"),
                ("x-request-timeout-ms", "1000"),
            ],
            100,
        ),
        (&[("x-request-timeout-ms", "1000, 150")], 150),
        (
            &[
                ("x-request-timeout-ms", "2000"),
                ("x-request-timeout-ms", "soon"),
                ("x-request-timeout-ms", "1500,200"),
            ],
            200,
        ),
        (&[("grpc-timeout", "1S"), ("grpc-timeout", "100m")], 100),
        (&[("grpc-timeout", "1S, 250m")], 250),
        (&[("grpc-timeout", "2S"), ("grpc-timeout", "bad")], 2000),
        (
            &[
                ("grpc-timeout", "1S"),
                ("x-request-timeout-ms", "1000"),
                ("x-request-timeout-ms", "120"),
            ],
            120,
        ),
    ];
    for (headers, want_ms) in cases {
        let started = Instant::now();
        let resp = get_with(&gw, headers).await;
        assert_gateway_error(&resp, 504, "deadline_exceeded");
        let took = started.elapsed();
        let want = Duration::from_millis(want_ms);
        assert!(
            took >= want && took < want + Duration::from_millis(50),
            "{headers:?}: timed out after {took:?}, not {want:?}"
        );
    }

    // The upstream is told the smallest budget, once.
    let fast = echo_deadline(Duration::ZERO).await;
    let gw = Setup::new(fast.addr())
        .route("deadline: { header: x-timeout-ms }")
        .start()
        .await;
    let resp = get_with(
        &gw,
        &[
            ("x-timeout-ms", "5000"),
            ("x-timeout-ms", "300"),
            ("grpc-timeout", "9S, 4S"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("seen-x-timeout-ms"), Some("300"));
    assert_eq!(resp.header("seen-grpc-timeout"), Some("300000u"));
}
