//! Black-box tests of upstreams through a running gateway: load balancing, active health
//! checks, DNS names, connection pooling and endpoint failures (pooling is in `upstream_pool.rs`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

mod upstreams_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use upstreams_support::{config, count_by_origin, endpoints, get, get_with, healthz, wait_until};

// ---------------------------------------------------------------------------------------
// round_robin
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn round_robin_equal_weights_give_exactly_equal_shares() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&a, 1), (&b, 1), (&c, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let mut order = Vec::new();
    for i in 0..30 {
        let resp = get(&client, &gw, &format!("/app/{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        order.push(resp.header("x-origin").unwrap().to_owned());
    }
    let counts = count_by_origin(&order);
    assert_eq!(counts, HashMap::from([("a", 10), ("b", 10), ("c", 10)]));
    // Smooth round robin with equal weights is a strict rotation: any 3 in a row differ.
    for window in order.windows(3) {
        let distinct: HashSet<&String> = window.iter().collect();
        assert_eq!(distinct.len(), 3, "not a rotation: {order:?}");
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
    gw.shutdown().await;
}

#[tokio::test]
async fn round_robin_weights_three_to_one_give_three_to_one() {
    portcullis_test::init_tracing();
    let heavy = Origin::start_named("heavy", Behavior::Echo).await;
    let light = Origin::start_named("light", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&heavy, 3), (&light, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let mut order = Vec::new();
    for _ in 0..40 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        order.push(resp.header("x-origin").unwrap().to_owned());
    }
    assert_eq!(
        count_by_origin(&order),
        HashMap::from([("heavy", 30), ("light", 10)])
    );
    // Smooth: the light endpoint appears once in every cycle of 4, never twice in a row.
    for cycle in order.chunks(4) {
        assert_eq!(
            cycle.iter().filter(|o| *o == "light").count(),
            1,
            "{order:?}"
        );
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// least_request
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn least_request_sends_most_load_to_the_fast_endpoint() {
    portcullis_test::init_tracing();
    let slow = Origin::start_named(
        "slow",
        Behavior::slow(Duration::from_millis(250), Behavior::Echo),
    )
    .await;
    let fast = Origin::start_named("fast", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "load_balancer: {{ policy: least_request }}\n    endpoints: {}",
        endpoints(&[(&slow, 1), (&fast, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let url = gw.url("main", "/app");
    // 4 workers share a budget of 80 requests, each sending one after the other: a worker
    // held by the slow endpoint does not hold back the others.
    let budget = Arc::new(AtomicUsize::new(80));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let resp = client.get(&url).await;
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    seen.push(resp.header("x-origin").unwrap().to_owned());
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let counts = count_by_origin(&all);
    let (n_fast, n_slow) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    assert_eq!(n_fast + n_slow, 80);
    // Round robin would split 40/40; P2C keeps the busy slow endpoint out of most picks.
    assert!(n_fast >= 3 * n_slow, "fast {n_fast}, slow {n_slow}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// consistent_hash
// ---------------------------------------------------------------------------------------

fn hash_config(key: &str, origins: &[&Origin], health_check: &str) -> String {
    let eps: Vec<(&Origin, u32)> = origins.iter().map(|o| (*o, 1)).collect();
    config(&format!(
        "load_balancer: {{ policy: consistent_hash, hash_key: {key} }}\n    endpoints: {}{health_check}",
        endpoints(&eps)
    ))
}

/// Which origin each of `users` lands on (asking each `rounds` times and checking it sticks).
async fn owners(
    client: &TestClient,
    gw: &TestGateway,
    users: &[String],
    rounds: usize,
    header: impl Fn(&str) -> (&'static str, String),
) -> HashMap<String, String> {
    let mut owner: HashMap<String, String> = HashMap::new();
    for _ in 0..rounds {
        for user in users {
            let (name, value) = header(user);
            let resp = get_with(client, gw, "/app", &[(name, &value)]).await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            let origin = resp.header("x-origin").unwrap().to_owned();
            let first = owner.entry(user.clone()).or_insert_with(|| origin.clone());
            assert_eq!(*first, origin, "user {user} moved without a change");
        }
    }
    owner
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[tokio::test]
async fn consistent_hash_on_header_sticks_and_spreads() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let gw = TestGateway::start(&hash_config("{ header: x-user }", &[&a, &b, &c], "")).await;
    let client = TestClient::http1();
    let users = users(60);
    let owner = owners(&client, &gw, &users, 4, |u| ("x-user", u.to_owned())).await;
    let used: HashSet<&String> = owner.values().collect();
    assert_eq!(
        used.len(),
        3,
        "60 keys should reach all 3 endpoints: {owner:?}"
    );

    // Without the key: served, balanced by round robin (so exactly evenly).
    let mut order = Vec::new();
    for _ in 0..30 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        order.push(resp.header("x-origin").unwrap().to_owned());
    }
    assert_eq!(
        count_by_origin(&order),
        HashMap::from([("a", 10), ("b", 10), ("c", 10)])
    );
    // An empty header value counts as no key too.
    let resp = get_with(&client, &gw, "/app", &[("x-user", "")]).await;
    assert_eq!(resp.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_on_cookie_sticks_and_spreads() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let gw = TestGateway::start(&hash_config("{ cookie: sid }", &[&a, &b, &c], "")).await;
    let client = TestClient::http1();
    let users = users(60);
    let by_cookie = owners(&client, &gw, &users, 3, |u| {
        ("cookie", format!("theme=dark; sid={u}; lang=en"))
    })
    .await;
    assert_eq!(by_cookie.values().collect::<HashSet<_>>().len(), 3);
    // Other cookies around it do not matter: the key is the `sid` value alone.
    let alone = owners(&client, &gw, &users, 1, |u| ("cookie", format!("sid={u}"))).await;
    assert_eq!(by_cookie, alone);
    // A request without the cookie is still served.
    let resp = get_with(&client, &gw, "/app", &[("cookie", "theme=dark")]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_on_client_ip_sends_one_client_to_one_endpoint() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let gw = TestGateway::start(&hash_config("client_ip", &[&a, &b, &c], "")).await;
    // Fresh connections too: the key is the peer address, not the connection.
    let mut seen = HashSet::new();
    for client in [TestClient::http1(), TestClient::http1_no_pool()] {
        for _ in 0..15 {
            let resp = get(&client, &gw, "/app").await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            seen.insert(resp.header("x-origin").unwrap().to_owned());
        }
    }
    assert_eq!(seen.len(), 1, "everything comes from 127.0.0.1: {seen:?}");
    assert_eq!(a.hits() + b.hits() + c.hits(), 30);
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn consistent_hash_moves_only_the_keys_of_an_endpoint_that_leaves() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let check = "\n    health_check: { path: /healthz, interval: 50ms, timeout: 50ms, \
                 unhealthy_threshold: 1, healthy_threshold: 1 }";
    let gw = TestGateway::start(&hash_config("{ header: x-user }", &[&a, &b, &c], check)).await;
    let client = TestClient::http1();
    let users = users(90);
    let header = |u: &str| ("x-user", u.to_owned());
    let before = owners(&client, &gw, &users, 1, header).await;
    assert_eq!(before.values().collect::<HashSet<_>>().len(), 3);

    // b fails its checks and leaves; one more check after the failure means it is out.
    let n0 = healthz(&b);
    b.set_status(500);
    wait_until("b to fail a check", || healthz(&b) >= n0 + 2).await;
    let b_client_hits = b.hits() - healthz(&b);
    let during = owners(&client, &gw, &users, 2, header).await;
    assert_eq!(
        b.hits() - healthz(&b),
        b_client_hits,
        "b got client traffic"
    );
    let mut moved_from_survivors = Vec::new();
    for user in &users {
        let (was, now) = (&before[user], &during[user]);
        assert_ne!(now, "b");
        if was != "b" && was != now {
            moved_from_survivors.push(user);
        }
    }
    // Maglev keeps nearly every survivor's key in place (its tables are not perfectly
    // stable: a small share may shift); with 90 keys, at most a couple.
    let survivors = users.iter().filter(|u| before[*u] != "b").count();
    assert!(
        moved_from_survivors.len() * 20 <= survivors,
        "{} of {survivors} keys of healthy endpoints moved: {moved_from_survivors:?}",
        moved_from_survivors.len()
    );

    // b recovers: the same set of endpoints builds the same table, so every key is home.
    let n1 = healthz(&b);
    b.clear_status();
    wait_until("b to pass a check", || healthz(&b) >= n1 + 2).await;
    let after = owners(&client, &gw, &users, 1, header).await;
    assert_eq!(before, after);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// active health checks
// ---------------------------------------------------------------------------------------

const HEALTH_CHECK: &str = "\n    health_check: { path: /healthz, interval: 50ms, timeout: 50ms, \
                            unhealthy_threshold: 3, healthy_threshold: 2 }";

/// Requests to `o` that were not health checks.
fn client_hits(o: &Origin) -> usize {
    o.hits() - healthz(o)
}

// current_thread: between reading a check count and flipping the status no check can run, so
// every check counted after the flip saw the new status.
#[tokio::test(flavor = "current_thread")]
async fn failing_endpoint_leaves_rotation_after_threshold_and_returns_after_passes() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}{HEALTH_CHECK}",
        endpoints(&[(&a, 1), (&b, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let mut order = Vec::new();
    for _ in 0..4 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200);
        order.push(resp.header("x-origin").unwrap().to_owned());
    }
    assert_eq!(count_by_origin(&order), HashMap::from([("a", 2), ("b", 2)]));

    // 3 failed checks take b out; the check after the third proves the transition applied
    // (a probe starts only after the previous result was recorded).
    let n0 = healthz(&b);
    b.set_status(500);
    wait_until("3 failed checks on b and one more", || healthz(&b) > n0 + 3).await;
    let before = client_hits(&b);
    for _ in 0..20 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-origin"), Some("a"));
    }
    assert_eq!(client_hits(&b), before, "no client request reaches b");

    // 2 passes bring it back.
    let n1 = healthz(&b);
    b.clear_status();
    wait_until("2 passed checks on b and one more", || healthz(&b) > n1 + 2).await;
    let mut order = Vec::new();
    for _ in 0..10 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        order.push(resp.header("x-origin").unwrap().to_owned());
    }
    assert_eq!(count_by_origin(&order), HashMap::from([("a", 5), ("b", 5)]));
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn endpoint_stays_in_rotation_before_the_threshold() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let check = "\n    health_check: { path: /healthz, interval: 50ms, timeout: 50ms, \
                 unhealthy_threshold: 1000, healthy_threshold: 1 }";
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}{check}",
        endpoints(&[(&a, 1), (&b, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let n0 = healthz(&b);
    b.set_status(500);
    wait_until("2 failed checks on b", || healthz(&b) >= n0 + 2).await;
    // Below the threshold b is still picked and its 500 is passed through untouched.
    let mut order = Vec::new();
    for _ in 0..4 {
        let resp = get(&client, &gw, "/app").await;
        let origin = resp.header("x-origin").unwrap().to_owned();
        assert_eq!(resp.status, if origin == "b" { 500 } else { 200 });
        order.push(origin);
    }
    assert_eq!(count_by_origin(&order), HashMap::from([("a", 2), ("b", 2)]));
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn all_endpoints_unhealthy_gives_503_no_healthy_upstream() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}{HEALTH_CHECK}",
        endpoints(&[(&a, 1), (&b, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let (na, nb) = (healthz(&a), healthz(&b));
    a.set_status(500);
    b.set_status(503);
    wait_until("both out of rotation", || {
        healthz(&a) > na + 3 && healthz(&b) > nb + 3
    })
    .await;
    let (ha, hb) = (client_hits(&a), client_hits(&b));
    for _ in 0..5 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert_eq!(
            resp.header("x-portcullis-reason"),
            Some("no_healthy_upstream")
        );
        let body = resp.json();
        assert_eq!(body["reason"], "no_healthy_upstream");
        assert_eq!(body["status"], 503);
        assert_eq!(
            body["request_id"].as_str(),
            resp.header("x-request-id"),
            "{body}"
        );
    }
    assert_eq!((client_hits(&a), client_hits(&b)), (ha, hb));

    // One comes back: traffic flows again, all to it.
    let na = healthz(&a);
    a.clear_status();
    wait_until("a back", || healthz(&a) > na + 2).await;
    for _ in 0..4 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-origin"), Some("a"));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn health_checks_work_on_an_http2_upstream() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let b = Origin::start_named("b", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "protocol: http2\n    endpoints: {}{HEALTH_CHECK}",
        endpoints(&[(&a, 1), (&b, 1)])
    )))
    .await;
    let client = TestClient::http1();
    wait_until("checks on b", || healthz(&b) >= 2).await;
    assert!(b
        .requests()
        .iter()
        .all(|r| r.version == http::Version::HTTP_2));
    let n0 = healthz(&b);
    b.set_status(500);
    wait_until("b out of rotation", || healthz(&b) > n0 + 3).await;
    for _ in 0..6 {
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-origin"), Some("a"));
        assert_eq!(resp.json()["version"], "HTTP/2.0");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_endpoint_is_taken_out_by_health_checks() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let closed = portcullis_test::raw::RefusedAddr::new();
    let check = "\n    health_check: { path: /healthz, interval: 20ms, timeout: 20ms, \
                 unhealthy_threshold: 1, healthy_threshold: 1 }";
    let gw = TestGateway::start(&config(&format!(
        "endpoints: [{{ address: \"{}\" }}, {{ address: \"{closed}\" }}]{check}",
        a.addr()
    )))
    .await;
    let client = TestClient::http1();
    // The closed port fails its first check; until then requests may land on it (502).
    let served = tokio::time::timeout(Duration::from_secs(2), async {
        let mut in_a_row = 0;
        while in_a_row < 10 {
            let resp = get(&client, &gw, "/app").await;
            if resp.status == 200 {
                in_a_row += 1;
            } else {
                assert_eq!(
                    resp.header("x-portcullis-reason"),
                    Some("upstream_connect_failed")
                );
                in_a_row = 0;
            }
        }
    })
    .await;
    assert!(served.is_ok(), "the closed endpoint never left rotation");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn localhost_endpoint_is_resolved_and_served() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("local", Behavior::Echo).await;
    let port = origin.addr().port();
    let resolved: Vec<_> = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .collect();
    assert!(
        resolved.iter().all(|a| a.ip().is_loopback()),
        "{resolved:?}"
    );
    // The origin listens on 127.0.0.1 only; if `localhost` also names ::1 here, a health
    // check takes that address out of rotation.
    let check = if resolved.iter().all(|a| *a == origin.addr()) {
        ""
    } else {
        "\n    health_check: { path: /healthz, interval: 20ms, timeout: 20ms, \
         unhealthy_threshold: 1, healthy_threshold: 1 }"
    };
    let gw = TestGateway::start(&config(&format!(
        "dns_refresh: 20ms\n    endpoints: [{{ address: \"localhost:{port}\" }}]{check}"
    )))
    .await;
    let client = TestClient::http1();
    if !check.is_empty() {
        wait_until_served(&client, &gw).await;
    }
    // Keep traffic flowing across several refreshes; none of it may fail.
    let until = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut n = 0;
    while n < 20 || tokio::time::Instant::now() < until {
        let resp = get(&client, &gw, &format!("/app/{n}")).await;
        assert_eq!(resp.status, 200, "request {n}: {}", resp.text());
        assert_eq!(resp.header("x-origin"), Some("local"));
        n += 1;
    }
    let seen = origin.requests();
    let app: Vec<_> = seen
        .iter()
        .filter(|r| r.path_and_query() != "/healthz")
        .collect();
    assert_eq!(app.len(), n);
    if check.is_empty() {
        // A refresh that finds the same address keeps the endpoint and its pooled connection.
        assert!(
            origin.connections() <= 2,
            "{} connections for {n} sequential requests",
            origin.connections()
        );
    }
    gw.shutdown().await;
}

/// Until 5 requests in a row succeed (bounded).
async fn wait_until_served(client: &TestClient, gw: &TestGateway) {
    let served = tokio::time::timeout(Duration::from_secs(2), async {
        let mut in_a_row = 0;
        while in_a_row < 5 {
            let ok = get(client, gw, "/app").await.status == 200;
            in_a_row = if ok { in_a_row + 1 } else { 0 };
        }
    })
    .await;
    assert!(served.is_ok(), "never served");
}

// ---------------------------------------------------------------------------------------
// endpoint failures
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn endpoint_closing_connections_fails_only_its_share_with_502() {
    portcullis_test::init_tracing();
    let a = Origin::start_named("a", Behavior::Echo).await;
    let bad = Origin::start_named("bad", Behavior::CloseConnection).await;
    let c = Origin::start_named("c", Behavior::Echo).await;
    let gw = TestGateway::start(&config(&format!(
        "endpoints: {}",
        endpoints(&[(&a, 1), (&bad, 1), (&c, 1)])
    )))
    .await;
    let client = TestClient::http1();
    let mut ok = Vec::new();
    let mut failed = 0;
    for _ in 0..30 {
        let resp = get(&client, &gw, "/app").await;
        if resp.status == 200 {
            ok.push(resp.header("x-origin").unwrap().to_owned());
            continue;
        }
        failed += 1;
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert_eq!(resp.header("x-portcullis-reason"), Some("upstream_reset"));
        assert_eq!(resp.header("x-origin"), None);
        assert_eq!(resp.json()["reason"], "upstream_reset");
    }
    // Round robin over 3 and no retries: exactly a third fails, one connection each.
    assert_eq!(failed, 10);
    assert_eq!(count_by_origin(&ok), HashMap::from([("a", 10), ("c", 10)]));
    assert_eq!(bad.connections(), 10);
    gw.shutdown().await;
}

#[tokio::test]
async fn closed_port_gives_502_upstream_connect_failed_quickly() {
    portcullis_test::init_tracing();
    let closed = portcullis_test::raw::RefusedAddr::new();
    let gw = TestGateway::start(&config(&format!(
        "pool: {{ connect_timeout: 2s }}\n    endpoints: [{{ address: \"{closed}\" }}]"
    )))
    .await;
    let client = TestClient::http1();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let resp = get(&client, &gw, "/app").await;
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert_eq!(
            resp.header("x-portcullis-reason"),
            Some("upstream_connect_failed")
        );
        assert_eq!(resp.json()["reason"], "upstream_connect_failed");
        assert_eq!(resp.json()["status"], 502);
        // Refused at once, not after the connect timeout.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    gw.shutdown().await;
}
