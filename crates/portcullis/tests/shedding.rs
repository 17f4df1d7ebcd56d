//! Black-box tests of load shedding on paused time: with the adaptive limit full, requests
//! wait in the priority queue; a full queue sheds sheddable requests first; freed slots go to
//! critical requests first; a wait longer than `max_wait` is shed with `Retry-After`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::time::Duration;

use http::Request;
use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
use proxying_support::{assert_gateway_error, Setup};
use tokio::task::JoinHandle;

/// One slot (adaptive limit pinned to 1), a queue of `queue` waiters.
async fn gateway(origin: &Origin, queue: u32, max_wait: &str) -> TestGateway {
    Setup::new(origin.addr())
        .upstream(&format!(
            "load_shedding: {{ adaptive_limit: {{ initial: 1, min: 1, max: 1 }}, \
             queue_size: {queue}, max_wait: {max_wait} }}"
        ))
        .route("priority: { level: normal, header: x-priority }")
        .start()
        .await
}

fn send(gw: &TestGateway, name: &str, priority: &str) -> JoinHandle<TestResponse> {
    let req = Request::get(gw.url("main", &format!("/{name}")))
        .header("x-priority", priority)
        .body(http_body_util::Full::default())
        .unwrap();
    tokio::spawn(async move { TestClient::http1_no_pool().request(req).await })
}

/// Lets spawned requests reach the gateway and queue (no time passes on the paused clock
/// while tasks can run).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn sheddable_requests_are_shed_first_and_critical_ones_served_first() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(1),
        Behavior::Status(200),
    ))
    .await;
    let gw = gateway(&origin, 2, "10s").await;

    let holder = send(&gw, "holder", "normal");
    origin.wait_for_hits(1, Duration::from_secs(5)).await;
    let sheddable = send(&gw, "sheddable", "sheddable");
    settle().await;
    let normal = send(&gw, "normal", "normal");
    settle().await;
    // The queue (2) is full: a critical arrival evicts the newest lower-priority waiter.
    let critical = send(&gw, "critical", "critical");
    settle().await;
    let shed = sheddable.await.unwrap();
    assert_gateway_error(&shed, 503, "shed");
    assert_eq!(shed.header("retry-after"), Some("10"));

    // Another sheddable arrival finds only equal or higher priorities: shed at once.
    let late = send(&gw, "late", "sheddable").await.unwrap();
    assert_gateway_error(&late, 503, "shed");

    for task in [holder, critical, normal] {
        assert_eq!(task.await.unwrap().status, 200);
    }
    let order: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.path_and_query().to_owned())
        .collect();
    assert_eq!(order, ["/holder", "/critical", "/normal"]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_wait_is_shed() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(1),
        Behavior::Status(200),
    ))
    .await;
    let gw = gateway(&origin, 10, "100ms").await;
    let holder = send(&gw, "holder", "normal");
    origin.wait_for_hits(1, Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    let waiter = send(&gw, "waiter", "critical").await.unwrap();
    assert_gateway_error(&waiter, 503, "shed");
    assert_eq!(waiter.header("retry-after"), Some("1"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(150),
        "{waited:?}"
    );
    assert_eq!(holder.await.unwrap().status, 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_max_wait_ends_the_wait_with_504() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_secs(1),
        Behavior::Status(200),
    ))
    .await;
    let gw = gateway(&origin, 10, "10s").await;
    let holder = send(&gw, "holder", "normal");
    origin.wait_for_hits(1, Duration::from_secs(5)).await;
    let req = Request::get(gw.url("main", "/waiter"))
        .header("grpc-timeout", "50m")
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = TestClient::http1_no_pool().request(req).await;
    assert_gateway_error(&resp, 504, "deadline_exceeded");
    assert_eq!(holder.await.unwrap().status, 200);
}
