//! How much a request costs, shadow mode, delay mode, the concurrency limit, and the memory
//! bound of a policy's store.

use std::sync::Arc;
use std::time::Duration;

use portcullis_test::{Behavior, Origin, TestClient};
use tokio::time::Instant;

use crate::support::{
    assert_from_origin, assert_refused, bounded, config, exactly_then_refused, get,
    has_no_ratelimit_headers, proxied, ratelimit, send, start,
};

#[tokio::test]
async fn cost_per_method_beats_route_cost_beats_policy_default() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: budget, limit: 6, window: 1h, key: [{ header: x-user }], \
                      cost: { default: 1, methods: { POST: 3 } } }";
        let routes = "  - name: heavy\n    match: { path: { prefix: /heavy } }\n    \
                      rate_limits: [budget]\n    rate_limit_cost: 2\n    \
                      action: { proxy: { upstream: app } }\n  \
                      - name: plain\n    rate_limits: [budget]\n    \
                      action: { proxy: { upstream: app } }";
        let gw = start(&config(Some(&origin), policy, routes)).await;
        let client = TestClient::http1();
        let plain = gw.url("main", "/plain");
        let heavy = gw.url("main", "/heavy");

        // The policy default: 6 GETs of cost 1.
        exactly_then_refused(&client, &plain, &[("x-user", "a")], 6, "budget").await;

        // The per-method cost: POST costs 3, so two POSTs use the whole budget.
        let b = [("x-user", "b")];
        let resp = send(&client, "POST", &plain, &b).await;
        assert_from_origin(&resp);
        assert_eq!(ratelimit(&resp).map(|r| r.remaining), Some(3));
        assert_from_origin(&send(&client, "POST", &plain, &b).await);
        assert_refused(&send(&client, "POST", &plain, &b).await, 429, "budget");
        assert_refused(&get(&client, &plain, &b).await, 429, "budget");

        // The route's cost: a GET on /heavy costs 2, three of them use the budget.
        let c = [("x-user", "c")];
        let allowed = exactly_then_refused(&client, &heavy, &c, 3, "budget").await;
        let left: Vec<_> = allowed
            .iter()
            .map(|r| ratelimit(r).map(|r| r.remaining))
            .collect();
        assert_eq!(left, [Some(4), Some(2), Some(0)]);

        // The per-method cost wins over the route's: a POST on /heavy still costs 3.
        let d = [("x-user", "d")];
        let resp = send(&client, "POST", &heavy, &d).await;
        assert_eq!(ratelimit(&resp).map(|r| r.remaining), Some(3));
        assert_from_origin(&send(&client, "POST", &heavy, &d).await);
        assert_refused(&send(&client, "POST", &heavy, &d).await, 429, "budget");

        assert_eq!(origin.hits(), 6 + 2 + 3 + 2);
    })
    .await;
}

#[tokio::test]
async fn shadow_mode_lets_everything_through_without_headers() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: trial, limit: 2, window: 1h, enforce: false }";
        let gw = proxied(&origin, policy, "[trial]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        for _ in 0..6 {
            let resp = get(&client, &url, &[]).await;
            assert_from_origin(&resp);
            assert!(has_no_ratelimit_headers(&resp), "{:?}", resp.headers);
            assert!(resp.header("retry-after").is_none());
        }
        assert_eq!(origin.hits(), 6);
    })
    .await;
}

#[tokio::test]
async fn shadow_policy_beside_an_enforced_one_does_not_show_in_headers() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        // The shadow policy is the tighter one; only the enforced one may be described.
        let policies = "  - { name: trial, limit: 1, window: 1h, enforce: false }\n  \
                        - { name: real, limit: 3, window: 1h }";
        let gw = proxied(&origin, policies, "[trial, real]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        let allowed = exactly_then_refused(&client, &url, &[], 3, "real").await;
        for resp in &allowed {
            assert_eq!(ratelimit(resp).map(|r| r.name), Some("real".into()));
        }
        assert_eq!(origin.hits(), 3);
    })
    .await;
}

/// Delay mode is about time by nature: these two tests measure it with wall-clock bounds
/// wide enough for a loaded machine. At `limit: 10, window: 1s, burst: 1` a slot opens every
/// 100 ms, so of three requests fired at once the third can start no earlier than ~200 ms
/// after the first was decided; we ask for ≥ 150 ms (a little below, for clock rounding and
/// because the first request is decided a moment after `start` is read, never before) and
/// < 3 s (a hang or a per-request sleep of `max_delay` would break it).
#[tokio::test]
async fn delay_mode_spaces_requests_out_instead_of_refusing() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: smooth, limit: 10, window: 1s, burst: 1, max_delay: 2s }";
        let gw = proxied(&origin, policy, "[smooth]").await;
        let client = TestClient::http1();
        let url = Arc::new(gw.url("main", "/"));
        let start = Instant::now();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let resp = get(&client, &url, &[]).await;
                    (resp, start.elapsed())
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for task in tasks {
            let (resp, took) = task.await.expect("request task");
            assert_from_origin(&resp);
            slowest = slowest.max(took);
        }
        assert!(slowest >= Duration::from_millis(150), "{slowest:?}");
        assert!(slowest < Duration::from_secs(3), "{slowest:?}");
        assert_eq!(origin.hits(), 3);
    })
    .await;
}

/// With `max_delay: 50ms` the second of several simultaneous requests would have to wait
/// ~100 ms: refused. (Only if the requests arrived more than ~350 ms apart could all four
/// squeeze in, which no machine running this suite is that slow for.)
#[tokio::test]
async fn delay_mode_refuses_what_would_wait_longer_than_max_delay() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: smooth, limit: 10, window: 1s, burst: 1, max_delay: 50ms }";
        let gw = proxied(&origin, policy, "[smooth]").await;
        let client = TestClient::http1();
        let url = Arc::new(gw.url("main", "/"));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { get(&client, &url, &[]).await })
            })
            .collect();
        let mut refused = 0;
        for task in tasks {
            let resp = task.await.expect("request task");
            if resp.status == 429 {
                assert_refused(&resp, 429, "smooth");
                refused += 1;
            } else {
                assert_from_origin(&resp);
            }
        }
        assert!(refused >= 1, "nothing was refused");
        assert_eq!(origin.hits(), 4 - refused);
    })
    .await;
}

#[tokio::test]
async fn concurrency_limit_refuses_while_a_request_is_in_flight() {
    bounded(async {
        let origin =
            Origin::start(Behavior::slow(Duration::from_millis(500), Behavior::Echo)).await;
        let policy = "  - { name: one-at-a-time, algorithm: concurrency, limit: 1 }";
        let gw = proxied(&origin, policy, "[one-at-a-time]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");

        let first = {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[]).await })
        };
        origin.wait_for_hits(1, Duration::from_secs(5)).await;
        // The first is at the (slow) origin: the second is refused at once.
        let resp = get(&client, &url, &[]).await;
        assert_eq!(resp.status, 429, "{}", resp.text());
        assert_eq!(resp.header("x-portcullis-reason"), Some("rate_limited"));
        let json = resp.json();
        assert_eq!(json["reason"], "rate_limited");
        assert_eq!(json["policy"], "one-at-a-time");
        assert_eq!(json["status"], 429);
        // Nothing to wait for that a clock could tell: no Retry-After, no rate headers.
        assert!(json["retry_after"].is_null(), "{json}");
        assert!(resp.header("retry-after").is_none());
        assert!(has_no_ratelimit_headers(&resp));

        assert_from_origin(&first.await.expect("first request"));
        // The slot is free again.
        assert_from_origin(&get(&client, &url, &[]).await);
        assert_eq!(origin.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn memory_bound_holds_and_an_active_key_is_still_enforced() {
    bounded(async {
        let policy = "  - { name: per-user, limit: 3, window: 1h, key: [{ header: x-user }], \
                      max_keys: 64 }";
        let routes = "  - name: hello\n    rate_limits: [per-user]\n    \
                      action: { respond: { status: 200, body: hi } }";
        let gw = start(&config(None, policy, routes)).await;
        let client = TestClient::http1();
        let url = Arc::new(gw.url("main", "/"));

        // 2000 distinct keys, 8 at a time: far more than the store may hold.
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    for i in (w..2000).step_by(8) {
                        let user = format!("flood-{i}");
                        let resp = get(&client, &url, &[("x-user", &user)]).await;
                        assert_eq!(resp.status, 200, "{user}: {}", resp.text());
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("flood worker");
        }

        // Still enforcing exactly, for a key that is active now.
        let active = [("x-user", "active")];
        exactly_then_refused(&client, &url, &active, 3, "per-user").await;

        // The store held no more keys than it may, and had to evict to get there.
        let runtime = gw.gateway().shared().runtime.load();
        let route = runtime.router.routes().next().expect("one route");
        let limiter = route.rate_limits.first().expect("one rate limit");
        let (keys, stats) = limiter.store_stats().expect("a rate store");
        assert!(keys <= 64, "{keys} keys tracked with max_keys: 64");
        assert!(stats.evictions >= 2000 - 64, "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn counters_survive_a_recompile_of_an_unchanged_policy() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let routes = "  - name: app\n    rate_limits: [kept]\n    \
                      action: { proxy: { upstream: app } }";
        let policy = "  - { name: kept, limit: 3, window: 1h }";
        let gw = start(&config(Some(&origin), policy, routes)).await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        assert_from_origin(&get(&client, &url, &[]).await);
        assert_from_origin(&get(&client, &url, &[]).await);

        // A reload as the gateway does one: compile against the same registry, swap.
        let shared = gw.gateway().shared();
        let reload = |policy: &str| {
            let text = config(Some(&origin), policy, routes);
            let cfg = portcullis::config::from_str_with(&text, &|_| None).expect("valid");
            let runtime =
                portcullis::runtime::Runtime::compile(&cfg, &shared.rate_limits).expect("compiles");
            shared.runtime.store(Arc::new(runtime));
        };
        // Unchanged limit (other fields may change): the count goes on, 1 left.
        reload("  - { name: kept, limit: 3, window: 1h, status: 503 }");
        let resp = get(&client, &url, &[]).await;
        assert_from_origin(&resp);
        assert_eq!(ratelimit(&resp).map(|r| r.remaining), Some(0));
        assert_refused(&get(&client, &url, &[]).await, 503, "kept");
        // A changed limit starts from a fresh budget.
        reload("  - { name: kept, limit: 4, window: 1h }");
        exactly_then_refused(&client, &url, &[], 4, "kept").await;
    })
    .await;
}
