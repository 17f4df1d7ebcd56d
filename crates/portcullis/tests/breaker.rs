//! Black-box tests of circuit breakers and upstream thresholds, on paused time: every breaker
//! transition (closed → open on failure rate and on slow-call rate, open → half-open when the
//! open time is up, half-open → closed on good probes, half-open → open with a doubled open
//! time on a bad probe), what counts as a failure (statuses, gRPC codes), both scopes, and
//! 503 `upstream_overflow` from `limits`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient, TestGateway};
use proxying_support::{assert_gateway_error, Setup};

const BREAKER: &str = "circuit_breaker: { window: { calls: 4 }, min_calls: 4, failure_rate: 50, \
                       open_duration: 10s, max_open_duration: 40s }";

async fn get(gw: &TestGateway, path: &str) -> portcullis_test::TestResponse {
    TestClient::http1().get(&gw.url("main", path)).await
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_fails_fast_then_probes_and_closes() {
    let origin = Origin::start(Behavior::Status(500)).await;
    let gw = Setup::new(origin.addr()).upstream(BREAKER).start().await;

    // Closed: failures pass through until the window holds min_calls calls at >= 50%.
    for _ in 0..4 {
        assert_eq!(get(&gw, "/").await.status, 500);
    }
    // Open: fail fast, the upstream is not touched.
    let resp = get(&gw, "/").await;
    assert_gateway_error(&resp, 503, "circuit_open");
    assert_eq!(resp.header("retry-after"), Some("10"));
    assert_eq!(origin.hits(), 4);

    // Still open after 9 s; half-open at 10 s: one probe goes through.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");
    assert_eq!(origin.hits(), 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    origin.set_status(200);
    assert_eq!(get(&gw, "/").await.status, 200, "the probe");
    assert_eq!(origin.hits(), 5);
    // Closed again (close_after: 1), with a fresh window: one failure does not reopen it.
    origin.set_status(500);
    assert_eq!(get(&gw, "/").await.status, 500);
    origin.set_status(200);
    for _ in 0..5 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert_eq!(origin.hits(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_maximum() {
    let origin = Origin::start(Behavior::Status(502)).await;
    let gw = Setup::new(origin.addr()).upstream(BREAKER).start().await;
    for _ in 0..4 {
        get(&gw, "/").await;
    }
    for expected in ["10", "20", "40", "40"] {
        let resp = get(&gw, "/").await;
        assert_gateway_error(&resp, 503, "circuit_open");
        assert_eq!(resp.header("retry-after"), Some(expected));
        let open_for: u64 = expected.parse().unwrap();
        tokio::time::sleep(Duration::from_secs(open_for)).await;
        assert_eq!(get(&gw, "/").await.status, 502, "the failing probe");
    }
    assert_eq!(origin.hits(), 8);
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_call_rate() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(300),
        Behavior::Status(200),
    ))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream(
            "circuit_breaker: { window: { duration: 60s }, min_calls: 3, \
             slow_call_duration: 200ms, slow_call_rate: 60, open_duration: 5s }",
        )
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/").await.status, 200, "slow but successful");
    }
    let resp = get(&gw, "/").await;
    assert_gateway_error(&resp, 503, "circuit_open");
    assert_eq!(resp.header("retry-after"), Some("5"));
}

#[tokio::test(start_paused = true)]
async fn listed_statuses_and_grpc_codes_count_as_failures_others_do_not() {
    // 404s are the client's business: not failures by default.
    let origin = Origin::start(Behavior::Status(404)).await;
    let gw = Setup::new(origin.addr()).upstream(BREAKER).start().await;
    for _ in 0..8 {
        assert_eq!(get(&gw, "/").await.status, 404);
    }

    // 429 listed.
    let origin = Origin::start(Behavior::Status(429)).await;
    let gw = Setup::new(origin.addr())
        .upstream(
            "circuit_breaker: { window: { calls: 2 }, min_calls: 2, failure_rate: 100, \
             failure_statuses: [429] }",
        )
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(get(&gw, "/").await.status, 429);
    }
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");

    // A trailers-only gRPC response with grpc-status 14 (UNAVAILABLE) listed.
    let origin = Origin::start(Behavior::scripted(|_| {
        ResponseSpec::new(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
    }))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream(
            "circuit_breaker: { window: { calls: 2 }, min_calls: 2, failure_rate: 100, \
             failure_on: [gateway_error], failure_grpc_statuses: [14] }",
        )
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");
}

#[tokio::test(start_paused = true)]
async fn connect_failures_trip_the_breaker() {
    let closed = portcullis_test::raw::RefusedAddr::new();
    let gw = Setup::new(closed.addr()).upstream(BREAKER).start().await;
    for _ in 0..4 {
        assert_gateway_error(&get(&gw, "/").await, 502, "upstream_connect_failed");
    }
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");
}

#[tokio::test(start_paused = true)]
async fn route_scope_isolates_routes_endpoint_scope_isolates_endpoints() {
    // Route scope: /bad trips its own breaker; /good to the same upstream keeps flowing.
    let origin = Origin::start(Behavior::scripted(|req| {
        let status = if req.path_and_query().starts_with("/bad") {
            500
        } else {
            200
        };
        ResponseSpec::new(status)
    }))
    .await;
    let yaml = format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n    {BREAKER}\n\
         routes:\n\
         \x20 - {{ name: bad, match: {{ path: {{ prefix: /bad }} }}, action: {{ proxy: {{ upstream: app }} }} }}\n\
         \x20 - {{ name: good, action: {{ proxy: {{ upstream: app }} }} }}\n",
        origin.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..4 {
        assert_eq!(get(&gw, "/bad").await.status, 500);
    }
    assert_gateway_error(&get(&gw, "/bad").await, 503, "circuit_open");
    assert_eq!(get(&gw, "/good").await.status, 200);

    // Endpoint scope: the failing endpoint is skipped, the healthy one serves everything.
    let failing = Origin::start(Behavior::Status(500)).await;
    let healthy = Origin::start(Behavior::Status(200)).await;
    let yaml = format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n\
         \x20   circuit_breaker: {{ scope: endpoint, window: {{ calls: 2 }}, min_calls: 2, failure_rate: 100 }}\n\
         routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]\n",
        failing.addr(),
        healthy.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..4 {
        get(&gw, "/").await; // round robin: two failures trip the failing endpoint
    }
    assert_eq!(failing.hits(), 2);
    for _ in 0..10 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert_eq!(failing.hits(), 2, "an open endpoint gets no traffic");
    assert_eq!(healthy.hits(), 12);
}

#[tokio::test(start_paused = true)]
async fn over_max_requests_is_503_upstream_overflow() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(1),
        Behavior::Status(200),
    ))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream("limits: { max_requests: 2 }")
        .start()
        .await;
    let url = gw.url("main", "/");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { TestClient::http1_no_pool().get(&url).await })
        })
        .collect();
    origin.wait_for_hits(2, Duration::from_secs(5)).await;
    assert_gateway_error(&get(&gw, "/").await, 503, "upstream_overflow");
    for task in slow {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(get(&gw, "/").await.status, 200, "slots came back");
}

#[tokio::test(start_paused = true)]
async fn over_max_connections_is_503_upstream_overflow() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(1),
        Behavior::Status(200),
    ))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream("limits: { max_connections: 1 }")
        .start()
        .await;
    let url = gw.url("main", "/");
    let first = tokio::spawn(async move { TestClient::http1_no_pool().get(&url).await });
    origin.wait_for_hits(1, Duration::from_secs(5)).await;
    // The only connection is busy; a second one would exceed the cap.
    assert_gateway_error(&get(&gw, "/").await, 503, "upstream_overflow");
    assert_eq!(first.await.unwrap().status, 200);
    // Reused, not a new connection.
    assert_eq!(get(&gw, "/").await.status, 200);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_probes_are_limited_in_half_open() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    let origin = Origin::start(Behavior::scripted(move |_| {
        // The first four fail (trip), later ones are slow successes (probes in flight).
        if seen.fetch_add(1, Ordering::SeqCst) < 4 {
            ResponseSpec::new(500)
        } else {
            ResponseSpec::new(200).delay(Duration::from_secs(1))
        }
    }))
    .await;
    let gw = Setup::new(origin.addr())
        .upstream(
            "circuit_breaker: { window: { calls: 4 }, min_calls: 4, open_duration: 10s, \
             half_open_probes: 2, close_after: 2 }",
        )
        .start()
        .await;
    for _ in 0..4 {
        get(&gw, "/").await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let url = gw.url("main", "/");
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { TestClient::http1_no_pool().get(&url).await })
        })
        .collect();
    origin.wait_for_hits(6, Duration::from_secs(5)).await;
    assert_gateway_error(&get(&gw, "/").await, 503, "circuit_open");
    for probe in probes {
        assert_eq!(probe.await.unwrap().status, 200);
    }
    assert_eq!(
        get(&gw, "/").await.status,
        200,
        "closed after two good probes"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 7);
}

#[tokio::test(start_paused = true)]
async fn endpoint_scope_sends_elsewhere_while_a_half_open_endpoint_is_probing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    // Fails twice (trips), then answers slowly: its probe stays in flight for 5 s.
    let flaky = Origin::start(Behavior::scripted(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
            ResponseSpec::new(500)
        } else {
            ResponseSpec::new(200).delay(Duration::from_secs(5))
        }
    }))
    .await;
    let healthy = Origin::start(Behavior::Status(200)).await;
    let yaml = format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n\
         \x20   circuit_breaker: {{ scope: endpoint, window: {{ calls: 2 }}, min_calls: 2, \
                 failure_rate: 100, open_duration: 10s }}\n\
         routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]\n",
        flaky.addr(),
        healthy.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    while calls.load(Ordering::SeqCst) < 2 {
        get(&gw, "/").await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Half-open now: the next request to pick it becomes its probe, and stays in flight.
    let url = gw.url("main", "/");
    let mut probe = None;
    while calls.load(Ordering::SeqCst) < 3 {
        let url = url.clone();
        let task = tokio::spawn(async move { TestClient::http1_no_pool().get(&url).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        if calls.load(Ordering::SeqCst) == 3 {
            probe = Some(task);
        } else {
            assert_eq!(task.await.unwrap().status, 200);
        }
    }
    // Its only probe slot is taken: requests that pick it go to the healthy endpoint.
    for _ in 0..6 {
        let resp = get(&gw, "/").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(probe.unwrap().await.unwrap().status, 200);
}
