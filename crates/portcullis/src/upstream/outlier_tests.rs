//! Unit tests of outlier detection with paused time: streaks, success rate, ejection time and
//! its decay, the ejection limits, and returns without traffic.

use std::net::SocketAddr;

use super::*;
use crate::config::schema::UpstreamConfig;
use crate::upstream::outcome::GatewayError;

const OK: Outcome = Outcome::Response {
    status: 200,
    grpc_status: None,
};
const NOT_FOUND: Outcome = Outcome::Response {
    status: 404,
    grpc_status: None,
};
const ERROR: Outcome = Outcome::Response {
    status: 500,
    grpc_status: None,
};
const RESET: Outcome = Outcome::Failed(GatewayError::Reset);
const CONNECT: Outcome = Outcome::Failed(GatewayError::Connect);

/// An upstream with `n` IP-literal endpoints and `outlier_detection: {<outlier>}`.
fn upstream(n: u16, outlier: &str) -> Arc<Upstream> {
    let endpoints: Vec<String> = (0..n)
        .map(|i| format!("{{address: \"127.0.0.1:{}\"}}", 8001 + i))
        .collect();
    let yaml = format!(
        "name: app\nendpoints: [{}]\noutlier_detection: {{{outlier}}}",
        endpoints.join(", ")
    );
    let config: UpstreamConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    Upstream::new(&config)
}

/// The same upstream with its timer task running until the token is cancelled.
fn running(n: u16, outlier: &str) -> (Arc<Upstream>, CancellationToken) {
    let u = upstream(n, outlier);
    let stop = CancellationToken::new();
    u.spawn_tasks(stop.clone());
    (u, stop)
}

fn record(u: &Upstream, e: &Arc<Endpoint>, outcome: Outcome, times: usize) {
    for _ in 0..times {
        u.record_outcome(e, &outcome);
    }
}

/// The addresses the balancer picks from.
fn rotation(u: &Upstream) -> Vec<SocketAddr> {
    u.balancer
        .load()
        .endpoints()
        .iter()
        .map(|e| e.addr)
        .collect()
}

/// How long `e` stays ejected from now, to 10 ms (polled 5 ms off the 10 ms marks, so a
/// return due on a mark is never polled at the same instant).
async fn ejected_for(e: &Endpoint) -> Duration {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    while e.is_ejected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed() - Duration::from_millis(5)
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_eject_at_the_threshold() {
    let u = upstream(3, "consecutive_5xx: 3");
    let eps = u.endpoints();
    record(&u, &eps[0], ERROR, 2);
    assert!(!eps[0].is_ejected());
    record(&u, &eps[0], ERROR, 1);
    assert!(eps[0].is_ejected());
    assert_eq!(eps[0].ejections(), 1);
    assert_eq!(rotation(&u), vec![eps[1].addr, eps[2].addr]);
    for _ in 0..20 {
        assert_ne!(u.pick(None).unwrap().endpoint.addr, eps[0].addr);
    }
    assert_eq!(u.ejections_total(EjectionCause::Consecutive5xx), 1);
    assert_eq!(
        u.ejections_total(EjectionCause::ConsecutiveGatewayErrors),
        0
    );
    assert_eq!(u.ejected_endpoints(), 1);
}

#[tokio::test(start_paused = true)]
async fn consecutive_gateway_errors_eject_and_also_count_as_5xx() {
    let u = upstream(3, "consecutive_5xx: 0, consecutive_gateway_errors: 2");
    let eps = u.endpoints();
    record(&u, &eps[0], RESET, 1);
    assert!(!eps[0].is_ejected());
    record(&u, &eps[0], CONNECT, 1);
    assert!(eps[0].is_ejected());
    assert_eq!(
        u.ejections_total(EjectionCause::ConsecutiveGatewayErrors),
        1
    );

    // With the gateway-error rule off, gateway errors still make a 5xx streak.
    let u = upstream(3, "consecutive_5xx: 3, consecutive_gateway_errors: 0");
    let eps = u.endpoints();
    record(&u, &eps[1], RESET, 1);
    record(&u, &eps[1], ERROR, 1);
    record(&u, &eps[1], CONNECT, 1);
    assert!(eps[1].is_ejected());
    assert_eq!(u.ejections_total(EjectionCause::Consecutive5xx), 1);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_streaks_and_a_5xx_the_gateway_streak() {
    let u = upstream(3, "consecutive_5xx: 3, consecutive_gateway_errors: 2");
    let eps = u.endpoints();
    record(&u, &eps[0], ERROR, 2);
    record(&u, &eps[0], OK, 1);
    record(&u, &eps[0], ERROR, 2);
    record(&u, &eps[0], NOT_FOUND, 1);
    record(&u, &eps[0], ERROR, 2);
    assert!(!eps[0].is_ejected(), "a 2xx or 4xx ends the 5xx streak");
    assert_eq!(rotation(&u).len(), 3);
    // The endpoint answering a 5xx is reachable: its gateway-error streak ends.
    let u = upstream(3, "consecutive_5xx: 0, consecutive_gateway_errors: 2");
    let eps = u.endpoints();
    record(&u, &eps[1], RESET, 1);
    record(&u, &eps[1], ERROR, 1);
    record(&u, &eps[1], RESET, 1);
    assert!(!eps[1].is_ejected());
    record(&u, &eps[1], RESET, 1);
    assert!(eps[1].is_ejected());
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_outlier_at_the_interval() {
    let (u, stop) = running(
        5,
        "consecutive_5xx: 0, consecutive_gateway_errors: 0, interval: 10s, \
         max_ejection_percent: 20, success_rate: {min_hosts: 5, min_requests: 10}",
    );
    let eps = u.endpoints();
    for e in &eps[..4] {
        record(&u, e, OK, 20);
    }
    for _ in 0..10 {
        record(&u, &eps[4], OK, 1);
        record(&u, &eps[4], ERROR, 1);
    }
    // Rates 1, 1, 1, 1, 0.5: mean 0.9, stdev 0.2, threshold 0.9 - 1.9 × 0.2 = 0.52.
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    assert!(!eps[4].is_ejected(), "judged only at the interval");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(eps[4].is_ejected());
    assert!(eps[..4].iter().all(|e| !e.is_ejected()));
    assert_eq!(u.ejections_total(EjectionCause::SuccessRate), 1);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn uniform_rates_or_too_few_requests_eject_nobody() {
    let (u, stop) = running(
        5,
        "consecutive_5xx: 0, interval: 10s, max_ejection_percent: 100, \
         success_rate: {min_hosts: 5, min_requests: 10}",
    );
    let eps = u.endpoints();
    for e in &eps {
        record(&u, e, OK, 9);
        record(&u, e, ERROR, 1);
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(u.ejected_endpoints(), 0, "stdev 0: nobody below the mean");

    // eps[4] fails everything but has too few requests: only 4 endpoints are judged.
    for e in &eps[..4] {
        record(&u, e, OK, 20);
    }
    record(&u, &eps[4], ERROR, 9);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(u.ejected_endpoints(), 0);
    // The counts started again: one more failure is 1 request in this interval, not 10.
    for e in &eps[..4] {
        record(&u, e, OK, 20);
    }
    record(&u, &eps[4], ERROR, 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(u.ejected_endpoints(), 0);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_the_count_and_is_capped() {
    let (u, stop) = running(
        2,
        "consecutive_5xx: 3, interval: 1h, base_ejection_time: 10s, max_ejection_time: 25s",
    );
    let e = &u.endpoints()[0];
    let mut seen = Vec::new();
    for _ in 0..4 {
        record(&u, e, ERROR, 3);
        assert!(e.is_ejected());
        let count = e.ejections();
        seen.push((count, ejected_for(e).await.as_millis()));
    }
    // Each time: (count, time out to 10 ms). The count stops at 3: 3 × 10 s is over the cap.
    assert_eq!(
        seen,
        vec![(1, 10_000), (2, 20_000), (3, 25_000), (3, 25_000)]
    );
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_ejection_count_decays_after_a_whole_interval_in_rotation() {
    let (u, stop) = running(
        2,
        "consecutive_5xx: 3, interval: 10s, base_ejection_time: 10s",
    );
    let e = &u.endpoints()[0];
    tokio::time::sleep(Duration::from_secs(1)).await;
    record(&u, e, ERROR, 3);
    assert_eq!(e.ejections(), 1);
    // Back at t=11; the evaluation at t=20 does not count the interval it came back in.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert!(!e.is_ejected(), "t=11.5");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        e.ejections(),
        1,
        "t=21.5: returned during the last interval"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(e.ejections(), 0, "t=31.5: a whole interval in rotation");
    record(&u, e, ERROR, 3);
    assert_eq!(e.ejections(), 1);
    assert_eq!(ejected_for(e).await, Duration::from_secs(10));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_bounds_ejections_but_one_is_always_allowed() {
    let u = upstream(4, "consecutive_5xx: 3, max_ejection_percent: 50");
    let eps = u.endpoints();
    for e in &eps {
        record(&u, e, ERROR, 3);
    }
    assert_eq!(u.ejected_endpoints(), 2);
    assert_eq!(u.ejections_skipped(), 2);
    assert_eq!(rotation(&u), vec![eps[2].addr, eps[3].addr]);

    // 10% of 3 is 0 endpoints, but one may always go.
    let u = upstream(3, "consecutive_5xx: 3, max_ejection_percent: 10");
    for e in &u.endpoints() {
        record(&u, e, ERROR, 3);
    }
    assert_eq!(u.ejected_endpoints(), 1);

    // 100% of 2 still keeps one.
    let u = upstream(2, "consecutive_5xx: 3, max_ejection_percent: 100");
    for e in &u.endpoints() {
        record(&u, e, ERROR, 3);
    }
    assert_eq!(u.ejected_endpoints(), 1);
    assert_eq!(rotation(&u).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_single_or_last_endpoint_in_rotation_is_never_ejected() {
    let u = upstream(1, "consecutive_5xx: 3, max_ejection_percent: 100");
    let e = &u.endpoints()[0];
    record(&u, e, ERROR, 30);
    assert!(!e.is_ejected());
    assert!(u.pick(None).is_some());

    let u = upstream(2, "consecutive_5xx: 3, max_ejection_percent: 100");
    let eps = u.endpoints();
    eps[0].set_healthy(false);
    u.rebuild_balancer();
    record(&u, &eps[1], ERROR, 3);
    assert!(!eps[1].is_ejected(), "the other endpoint is unhealthy");
    assert_eq!(u.ejections_skipped(), 1);
    assert_eq!(rotation(&u), vec![eps[1].addr]);
}

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_returns_after_its_time_without_traffic() {
    let (u, stop) = running(
        3,
        "consecutive_5xx: 3, interval: 1h, base_ejection_time: 30s",
    );
    let eps = u.endpoints();
    record(&u, &eps[1], ERROR, 3);
    assert_eq!(rotation(&u).len(), 2);
    tokio::time::sleep(Duration::from_millis(29_999)).await;
    assert!(eps[1].is_ejected());
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(!eps[1].is_ejected());
    assert_eq!(rotation(&u).len(), 3);
    assert_eq!(u.ejected_endpoints(), 0);
    // It starts afresh: two failures do not complete a streak begun before the ejection.
    record(&u, &eps[1], ERROR, 2);
    assert!(!eps[1].is_ejected());
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn nothing_happens_without_outlier_detection() {
    let config: UpstreamConfig = serde_yaml_ng::from_str(
        "name: app\nendpoints: [{address: \"127.0.0.1:8001\"}, {address: \"127.0.0.1:8002\"}]",
    )
    .unwrap();
    let u = Upstream::new(&config);
    let eps = u.endpoints();
    record(&u, &eps[0], ERROR, 100);
    record(&u, &eps[0], RESET, 100);
    assert!(!eps[0].is_ejected());
    assert_eq!(u.ejections_total(EjectionCause::Consecutive5xx), 0);
    assert_eq!(rotation(&u).len(), 2);
}

#[test]
fn the_ejection_limit_by_endpoint_count() {
    let cases = [
        (0, 50, 0),
        (1, 100, 0),
        (2, 10, 1),
        (2, 100, 1),
        (10, 10, 1),
        (10, 35, 3),
        (10, 250, 9),
    ];
    for (total, percent, allowed) in cases {
        assert_eq!(max_ejected(total, percent), allowed, "{total} × {percent}%");
    }
}
