//! Black-box test of passive outlier detection through a running gateway: an endpoint that
//! answers 500 leaves rotation after `consecutive_5xx` errors and comes back once
//! `base_ejection_time` has passed, without any traffic in between.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

mod upstreams_support;

use std::sync::mpsc;
use std::time::Duration;

use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use upstreams_support::{config, endpoints, get};

/// Keeps tokio's paused clock from auto-advancing while it lives: a running blocking task
/// inhibits auto-advance, so the test can wait on real sockets while time moves only through
/// `tokio::time::advance`. Dropping it ends the blocking task.
struct ClockHold {
    _release: mpsc::Sender<()>,
}

impl ClockHold {
    fn new() -> Self {
        let (release, wait) = mpsc::channel::<()>();
        // `recv` returns (with an error) once the sender is dropped.
        tokio::task::spawn_blocking(move || wait.recv().ok());
        Self { _release: release }
    }
}

/// Sends `n` GETs one after the other on a fresh client; returns the statuses.
async fn send(gw: &TestGateway, n: usize) -> Vec<u16> {
    // A fresh client each time: after a clock jump the gateway may have closed idle ones.
    let client = TestClient::http1();
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        statuses.push(get(&client, gw, &format!("/app/{i}")).await.status.as_u16());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_and_returns_after_base_ejection_time() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let bad = Origin::start_named("bad", Behavior::Status(500)).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}\n    outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 30s, \
         max_ejection_percent: 34 }}",
        endpoints(&[(&a, 1), (&b, 1), (&bad, 1)])
    )))
    .await;
    let hold = ClockHold::new();

    // Round robin over the three (in address order): `bad` gets every third request, and
    // its third 500 ejects it.
    let client = TestClient::http1();
    let mut statuses = Vec::new();
    while bad.hits() < 3 && statuses.len() < 9 {
        statuses.push(get(&client, &gw, "/app").await.status.as_u16());
    }
    assert_eq!(count(&statuses, 500), 3, "{statuses:?}");
    drop(client);

    // Out of rotation: the other two share everything, in turn.
    let (a_before, b_before) = (a.hits(), b.hits());
    let statuses = send(&gw, 12).await;
    assert_eq!(count(&statuses, 200), 12, "{statuses:?}");
    assert_eq!(bad.hits(), 3);
    assert_eq!((a.hits() - a_before, b.hits() - b_before), (6, 6));

    // Still out just before its 30 s are up.
    tokio::time::advance(Duration::from_secs(29)).await;
    let statuses = send(&gw, 6).await;
    assert_eq!(count(&statuses, 200), 6, "{statuses:?}");
    assert_eq!(bad.hits(), 3);

    // Back once they are, though no request reached it meanwhile.
    tokio::time::advance(Duration::from_secs(1)).await;
    let statuses = send(&gw, 9).await;
    assert!(bad.hits() > 3, "bad got no traffic after its ejection time");
    assert!(count(&statuses, 500) >= 1, "{statuses:?}");

    // Let the clock run again so the drain timers can fire.
    drop(hold);
    gw.shutdown().await;
}
