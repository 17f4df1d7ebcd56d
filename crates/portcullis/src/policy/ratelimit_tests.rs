//! Unit tests of rate-limit policies with paused time: exactness and refill per algorithm,
//! delay and shadow modes, several limits, keys, cost and the headers.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use super::*;
use crate::config::schema::RateLimitConfig;

static REQUEST_ID: http::HeaderValue = http::HeaderValue::from_static("req-1");

fn policy(yaml: &str) -> RateLimitConfig {
    serde_yaml_ng::with::singleton_map_recursive::deserialize(
        serde_yaml_ng::Deserializer::from_str(yaml),
    )
    .unwrap_or_else(|e| panic!("{e}: {yaml}"))
}

fn limiter(registry: &Registry, yaml: &str) -> Arc<RateLimiter> {
    RateLimiter::compile(&policy(yaml), registry).unwrap()
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `check` and returns the refusal status (if refused) and the state.
async fn ask(
    limiters: &[Arc<RateLimiter>],
    registry: &Registry,
    req: &Parts,
    client: &str,
) -> (Option<http::Response<crate::body::Body>>, RateLimitState) {
    let mut state = RateLimitState::default();
    let ask = Ask {
        req,
        client_ip: ip(client),
        route: "route-a",
        route_cost: None,
        request_id: &REQUEST_ID,
    };
    let verdict = check(limiters, registry, &ask, &mut state);
    let refusal = match verdict {
        Verdict::Pass => None,
        Verdict::Wait(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Verdict::Refuse(resp) => Some(resp),
    };
    (refusal, state)
}

async fn allowed(limiters: &[Arc<RateLimiter>], registry: &Registry, req: &Parts) -> bool {
    ask(limiters, registry, req, "192.0.2.1").await.0.is_none()
}

#[tokio::test(start_paused = true)]
async fn token_bucket_allows_burst_then_refills_at_the_rate() {
    let registry = Registry::new();
    // 2 per second sustained, burst 2: one token every 500 ms.
    let l = vec![limiter(&registry, "{ name: tb, limit: 2, window: 1s }")];
    let req = get("/", &[]);
    assert!(allowed(&l, &registry, &req).await);
    assert!(allowed(&l, &registry, &req).await);
    let (refusal, _) = ask(&l, &registry, &req, "192.0.2.1").await;
    let refusal = refusal.expect("third request refused");
    assert_eq!(refusal.status(), 429);
    assert_eq!(refusal.headers()["retry-after"], "1");
    assert_eq!(refusal.headers()["ratelimit-policy"], "\"tb\";q=2;w=1");
    assert_eq!(refusal.headers()["ratelimit"], "\"tb\";r=0;t=1");
    assert_eq!(refusal.headers()[crate::reason::HEADER], "rate_limited");
    let crate::body::Body::Full(Some(body)) = refusal.body() else {
        panic!("a refusal has a full JSON body");
    };
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["request_id"], "req-1", "{json}");
    assert_eq!(json["policy"], "tb", "{json}");
    assert_eq!(json["retry_after"], 1, "{json}");

    tokio::time::advance(Duration::from_millis(499)).await;
    assert!(!allowed(&l, &registry, &req).await, "1 ms too early");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(
        allowed(&l, &registry, &req).await,
        "one token back after 500 ms"
    );
    assert!(!allowed(&l, &registry, &req).await);
    assert_eq!(l[0].stats.denied.load(Ordering::Relaxed), 3);
    assert_eq!(l[0].stats.allowed.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn fixed_window_resets_at_the_window_edge() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: fw, algorithm: fixed_window, limit: 3, window: 10s }",
    )];
    let req = get("/", &[]);
    for _ in 0..3 {
        assert!(allowed(&l, &registry, &req).await);
    }
    assert!(!allowed(&l, &registry, &req).await);
    // Windows are aligned to the registry's epoch: the next one starts at 10 s.
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        assert!(allowed(&l, &registry, &req).await);
    }
    assert!(!allowed(&l, &registry, &req).await);
}

#[tokio::test(start_paused = true)]
async fn sliding_window_weighs_the_previous_window() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: sw, algorithm: sliding_window, limit: 4, window: 10s }",
    )];
    let req = get("/", &[]);
    for _ in 0..4 {
        assert!(allowed(&l, &registry, &req).await);
    }
    assert!(!allowed(&l, &registry, &req).await);
    // Halfway into the next window the previous 4 weigh 2: two more fit, not three.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(allowed(&l, &registry, &req).await);
    assert!(allowed(&l, &registry, &req).await);
    assert!(!allowed(&l, &registry, &req).await);
}

#[tokio::test(start_paused = true)]
async fn delay_mode_waits_for_the_slot_up_to_max_delay() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: d, limit: 10, window: 1s, burst: 1, max_delay: 250ms }",
    )];
    let req = get("/", &[]);
    let start = tokio::time::Instant::now();
    assert!(allowed(&l, &registry, &req).await);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // The second waits one emission interval (100 ms), the third 200 ms.
    assert!(allowed(&l, &registry, &req).await);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let (a, b) = tokio::join!(allowed(&l, &registry, &req), allowed(&l, &registry, &req));
    assert!(a && b);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    // Four at once: the slots would be 100..400 ms away; only waits up to 250 ms are taken.
    let results =
        futures_util::future::join_all((0..4).map(|_| allowed(&l, &registry, &req))).await;
    assert_eq!(results, vec![true, true, false, false]);
    assert_eq!(
        l[0].stats.delayed.load(Ordering::Relaxed),
        5,
        "1 + 2 + 2 waited"
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_but_never_refuses_nor_adds_headers() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: s, limit: 1, window: 1h, enforce: false }",
    )];
    let req = get("/", &[]);
    for _ in 0..5 {
        let (refusal, state) = ask(&l, &registry, &req, "192.0.2.1").await;
        assert!(refusal.is_none());
        assert!(state.tightest.is_none());
    }
    assert_eq!(l[0].stats.shadow_denied.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn the_denying_limit_is_the_one_reported() {
    let registry = Registry::new();
    let l = vec![
        limiter(&registry, "{ name: per-second, limit: 10, window: 1s }"),
        limiter(&registry, "{ name: per-hour, limit: 2, window: 1h }"),
    ];
    let req = get("/", &[]);
    let (refusal, state) = ask(&l, &registry, &req, "192.0.2.1").await;
    assert!(refusal.is_none());
    // The tightest allowed limit is per-hour (1 left).
    assert_eq!(&*state.tightest.unwrap().limiter.name, "per-hour");
    assert!(allowed(&l, &registry, &req).await);
    let (refusal, state) = ask(&l, &registry, &req, "192.0.2.1").await;
    let refusal = refusal.unwrap();
    assert_eq!(
        refusal.headers()["ratelimit-policy"],
        "\"per-hour\";q=2;w=3600"
    );
    assert!(refusal.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per-hour\";r=0;t="));
    assert_eq!(state.denied_by(), Some("per-hour"));
}

#[tokio::test(start_paused = true)]
async fn client_ips_are_aggregated_by_prefix() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: ip, limit: 1, window: 1h, key: [client_ip], client_ip_prefix: { ipv4: 24, ipv6: 64 } }",
    )];
    let req = get("/", &[]);
    assert!(ask(&l, &registry, &req, "10.0.0.1").await.0.is_none());
    assert!(
        ask(&l, &registry, &req, "10.0.0.200").await.0.is_some(),
        "same /24"
    );
    assert!(
        ask(&l, &registry, &req, "10.0.1.1").await.0.is_none(),
        "other /24"
    );
    assert!(ask(&l, &registry, &req, "2001:db8::1").await.0.is_none());
    assert!(
        ask(&l, &registry, &req, "2001:db8::ffff").await.0.is_some(),
        "same /64"
    );
    assert!(
        ask(&l, &registry, &req, "2001:db8:0:1::1")
            .await
            .0
            .is_none(),
        "other /64"
    );
    // An IPv4-mapped IPv6 address is the IPv4 client.
    assert!(ask(&l, &registry, &req, "::ffff:10.0.0.7")
        .await
        .0
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn header_and_query_keys_with_missing_key_rules() {
    let registry = Registry::new();
    let skip = vec![limiter(
        &registry,
        "{ name: user, limit: 1, window: 1h, key: [{ header: x-user }] }",
    )];
    let alice = get("/", &[("x-user", "alice")]);
    let bob = get("/", &[("x-user", "bob")]);
    let nobody = get("/", &[]);
    assert!(allowed(&skip, &registry, &alice).await);
    assert!(!allowed(&skip, &registry, &alice).await);
    assert!(allowed(&skip, &registry, &bob).await);
    for _ in 0..3 {
        assert!(allowed(&skip, &registry, &nobody).await, "no key: skipped");
    }
    assert_eq!(skip[0].stats.skipped.load(Ordering::Relaxed), 3);

    let fallback = vec![limiter(
        &registry,
        "{ name: q, limit: 1, window: 1h, key: [{ query: api_key }], missing_key: { fallback: anon } }",
    )];
    assert!(allowed(&fallback, &registry, &get("/?api_key=k%201", &[])).await);
    assert!(
        !allowed(&fallback, &registry, &get("/?x=1&api_key=k+1", &[])).await,
        "decoded"
    );
    assert!(allowed(&fallback, &registry, &get("/", &[])).await);
    assert!(
        !allowed(&fallback, &registry, &get("/?other=1", &[])).await,
        "anon shared"
    );
    // A real value equal to the fallback is not the anonymous bucket.
    assert!(allowed(&fallback, &registry, &get("/?api_key=anon", &[])).await);
}

#[tokio::test(start_paused = true)]
async fn cost_per_method_beats_route_cost_beats_default() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: c, limit: 10, window: 1h, cost: { default: 2, methods: { POST: 5 } } }",
    )];
    let post = http::Request::post("/").body(()).unwrap().into_parts().0;
    let get_req = get("/", &[]);
    let mut state = RateLimitState::default();
    let client_ip = ip("192.0.2.1");
    let ask = |req, route_cost| Ask {
        req,
        client_ip,
        route: "r",
        route_cost,
        request_id: &REQUEST_ID,
    };
    assert!(matches!(
        check(&l, &registry, &ask(&post, Some(3)), &mut state),
        Verdict::Pass
    ));
    assert_eq!(
        state.tightest.as_ref().unwrap().decision.remaining,
        5,
        "POST costs 5"
    );
    assert!(matches!(
        check(&l, &registry, &ask(&get_req, Some(3)), &mut state),
        Verdict::Pass
    ));
    assert_eq!(
        state.tightest.as_ref().unwrap().decision.remaining,
        2,
        "route cost 3"
    );
    assert!(matches!(
        check(&l, &registry, &ask(&get_req, None), &mut state),
        Verdict::Pass
    ));
    assert_eq!(
        state.tightest.as_ref().unwrap().decision.remaining,
        0,
        "default 2"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_holds_until_the_state_is_dropped() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: inflight, algorithm: concurrency, limit: 1 }",
    )];
    let req = get("/", &[]);
    let (refusal, holding) = ask(&l, &registry, &req, "192.0.2.1").await;
    assert!(refusal.is_none());
    let (refusal, _) = ask(&l, &registry, &req, "192.0.2.1").await;
    let refusal = refusal.expect("second in flight refused");
    assert_eq!(refusal.status(), 429);
    assert!(refusal.headers().get("ratelimit").is_none());
    drop(holding);
    assert!(ask(&l, &registry, &req, "192.0.2.1").await.0.is_none());
}

#[tokio::test(start_paused = true)]
async fn legacy_headers_and_status_are_configurable() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: lg, limit: 1, window: 1m, status: 503, headers: { legacy: true } }",
    )];
    let req = get("/", &[]);
    assert!(allowed(&l, &registry, &req).await);
    let refusal = ask(&l, &registry, &req, "192.0.2.1").await.0.unwrap();
    assert_eq!(refusal.status(), 503);
    let h = refusal.headers();
    assert_eq!(h["x-ratelimit-limit"], "1");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-reset"], "60");
    assert_eq!(h["retry-after"], "60");
}

#[tokio::test(start_paused = true)]
async fn counters_survive_a_recompile_of_an_unchanged_policy() {
    let registry = Registry::new();
    let yaml = "{ name: keep, limit: 2, window: 1h }";
    let first = vec![limiter(&registry, yaml)];
    let req = get("/", &[]);
    assert!(allowed(&first, &registry, &req).await);
    assert!(allowed(&first, &registry, &req).await);
    let again = vec![limiter(&registry, yaml)];
    assert!(
        !allowed(&again, &registry, &req).await,
        "same identity, same counters"
    );
    let changed = vec![limiter(&registry, "{ name: keep, limit: 3, window: 1h }")];
    assert!(
        allowed(&changed, &registry, &req).await,
        "changed limit starts afresh"
    );
}

#[tokio::test(start_paused = true)]
async fn no_key_part_value_passes_for_another_part_or_the_fallback() {
    let registry = Registry::new();
    let l = vec![limiter(
        &registry,
        "{ name: pair, limit: 1, window: 1h, key: [{ query: a }, { query: b }, route], \
         missing_key: { fallback: anon } }",
    )];
    // Each pair: different keys part by part, which the old separator-byte encoding made
    // equal (percent-decoding lets a value hold the separator and the fallback marker).
    let pairs = [
        ("/?a=x%00&b=y", "/?a=x&b=%00y"),
        ("/?b=z", "/?a=%01anon&b=z"),
        ("/?a=w", "/?a=w&b=%01anon"),
    ];
    for (first, second) in pairs {
        assert!(allowed(&l, &registry, &get(first, &[])).await, "{first}");
        assert!(
            !allowed(&l, &registry, &get(first, &[])).await,
            "{first} again"
        );
        assert!(
            allowed(&l, &registry, &get(second, &[])).await,
            "{second} after {first}"
        );
    }
}
