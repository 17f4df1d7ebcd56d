//! Black-box tests of the upstream connection pool through a running gateway: keep-alive
//! reuse, the idle cap, the idle timeout, and HTTP/2 multiplexing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

mod upstreams_support;

use std::time::Duration;

use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
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
