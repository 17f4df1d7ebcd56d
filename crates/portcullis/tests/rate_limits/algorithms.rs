//! The algorithms allow exactly their limit; the refusal's status, headers and body; the
//! `RateLimit` headers on allowed responses; several limits on one route.

use portcullis_test::{Behavior, Origin, TestClient};

use crate::support::{
    assert_from_origin, assert_refused, bounded, exactly_then_refused, get,
    has_no_ratelimit_headers, proxied, ratelimit, ratelimit_policy,
};

/// `algorithm` with `limit: 3, window: 1h` on a proxied route: three pass and reach the
/// origin with `r` counting down 2, 1, 0; the fourth is refused without reaching it.
/// `max_reset` bounds `t`: the time until the full quota is back, which for the sliding
/// window is the end of the next window (this window's requests weigh on it until then).
async fn allows_exactly_the_limit(algorithm: &str, max_reset: u64) {
    let origin = Origin::start(Behavior::Echo).await;
    let policy = format!("  - {{ name: three, algorithm: {algorithm}, limit: 3, window: 1h }}");
    let gw = proxied(&origin, &policy, "[three]").await;
    let client = TestClient::http1();
    let url = gw.url("main", "/x");
    let allowed = exactly_then_refused(&client, &url, &[], 3, "three").await;
    for (resp, want) in allowed.iter().zip([2, 1, 0]) {
        assert_from_origin(resp);
        let rl = ratelimit(resp).expect("RateLimit on an allowed response");
        assert_eq!((rl.name.as_str(), rl.remaining), ("three", want));
        assert!(rl.reset > 0 && rl.reset <= max_reset, "{rl:?}");
        let (name, q, w) = ratelimit_policy(resp).expect("RateLimit-Policy");
        assert_eq!((name.as_str(), q, w), ("three", 3, 3600));
    }
    // Refused again, and the origin only ever saw the allowed three.
    assert_refused(&get(&client, &url, &[]).await, 429, "three");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn token_bucket_allows_exactly_the_limit_then_refuses() {
    bounded(allows_exactly_the_limit("token_bucket", 3600)).await;
}

#[tokio::test]
async fn sliding_window_allows_exactly_the_limit_then_refuses() {
    bounded(allows_exactly_the_limit("sliding_window", 7200)).await;
}

#[tokio::test]
async fn fixed_window_allows_exactly_the_limit_then_refuses() {
    bounded(allows_exactly_the_limit("fixed_window", 3600)).await;
}

#[tokio::test]
async fn refusal_has_reason_retry_after_ratelimit_headers_and_json_body() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = proxied(
            &origin,
            "  - { name: hourly, limit: 3, window: 1h }",
            "[hourly]",
        )
        .await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        exactly_then_refused(&client, &url, &[], 3, "hourly").await;
        let resp = get(&client, &url, &[]).await;
        let retry_after = assert_refused(&resp, 429, "hourly");
        // 3 per hour from a full bucket: one token comes back every 20 minutes, the bucket is
        // full again an hour after the first request. (Seconds round up; the slack is for a
        // slow machine, not for the algorithm.)
        assert!((1190..=1200).contains(&retry_after), "{retry_after}");
        assert_eq!(ratelimit_policy(&resp), Some(("hourly".into(), 3, 3600)));
        let rl = ratelimit(&resp).expect("RateLimit");
        assert!((3590..=3600).contains(&rl.reset), "{rl:?}");
        // No legacy headers unless asked for.
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(resp.header(h).is_none(), "{h} without headers.legacy");
        }
        assert!(resp.header("x-request-id").is_some());
        assert_eq!(origin.hits(), 3);
    })
    .await;
}

#[tokio::test]
async fn refusal_uses_the_configured_status() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: soft, limit: 1, window: 1h, status: 503 }";
        let gw = proxied(&origin, policy, "[soft]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        assert_from_origin(&get(&client, &url, &[]).await);
        assert_refused(&get(&client, &url, &[]).await, 503, "soft");
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn legacy_headers_only_when_enabled() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policies = "  - { name: legacy, limit: 2, window: 1h, key: [{ header: x-user }], \
                        headers: { legacy: true } }\n  \
                        - { name: modern, limit: 2, window: 1h, key: [{ header: x-user }] }";
        let routes = "  - name: legacy\n    match: { path: { prefix: /legacy } }\n    \
                      rate_limits: [legacy]\n    action: { proxy: { upstream: app } }\n  \
                      - name: modern\n    rate_limits: [modern]\n    \
                      action: { proxy: { upstream: app } }";
        let gw =
            crate::support::start(&crate::support::config(Some(&origin), policies, routes)).await;
        let client = TestClient::http1();
        let user = [("x-user", "u")];

        let legacy = gw.url("main", "/legacy");
        let resp = get(&client, &legacy, &user).await;
        assert_from_origin(&resp);
        assert_eq!(resp.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(resp.header("x-ratelimit-remaining"), Some("1"));
        let reset: u64 = resp.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert_eq!(Some(reset), ratelimit(&resp).map(|r| r.reset));
        get(&client, &legacy, &user).await;
        let refused = get(&client, &legacy, &user).await;
        assert_refused(&refused, 429, "legacy");
        assert_eq!(refused.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
        assert!(refused.header("x-ratelimit-reset").is_some());

        let modern = gw.url("main", "/other");
        let resp = get(&client, &modern, &user).await;
        assert_from_origin(&resp);
        assert!(ratelimit(&resp).is_some());
        assert!(resp.header("x-ratelimit-limit").is_none());
        get(&client, &modern, &user).await;
        let refused = get(&client, &modern, &user).await;
        assert_refused(&refused, 429, "modern");
        assert!(refused.header("x-ratelimit-remaining").is_none());
    })
    .await;
}

#[tokio::test]
async fn allowed_responses_describe_the_most_restrictive_limit() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        // The wide limit comes first, so the tighter one must win on its merits, not order.
        let policies = "  - { name: wide, limit: 100, window: 1h }\n  \
                        - { name: narrow, limit: 4, window: 1h }";
        let gw = proxied(&origin, policies, "[wide, narrow]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        let allowed = exactly_then_refused(&client, &url, &[], 4, "narrow").await;
        for (resp, want) in allowed.iter().zip([3, 2, 1, 0]) {
            let rl = ratelimit(resp).expect("RateLimit");
            assert_eq!((rl.name.as_str(), rl.remaining), ("narrow", want), "{rl:?}");
            assert_eq!(ratelimit_policy(resp), Some(("narrow".into(), 4, 3600)));
        }
    })
    .await;
}

#[tokio::test]
async fn on_allowed_false_keeps_headers_off_allowed_responses_but_not_refusals() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: quiet, limit: 2, window: 1h, headers: { on_allowed: false } }";
        let gw = proxied(&origin, policy, "[quiet]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        let allowed = exactly_then_refused(&client, &url, &[], 2, "quiet").await;
        for resp in &allowed {
            assert!(has_no_ratelimit_headers(resp), "{:?}", resp.headers);
        }
    })
    .await;
}

#[tokio::test]
async fn several_limits_on_a_route_the_refusal_names_the_one_that_refused() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        // The route-wide limit is asked first: it has already allowed a request when the
        // per-user limit refuses it, and must not leak into that refusal.
        let policies = "  - { name: route-wide, limit: 5, window: 1h }\n  \
                        - { name: per-user, limit: 2, window: 1h, key: [{ header: x-user }] }";
        let gw = proxied(&origin, policies, "[route-wide, per-user]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");

        // a: 2 pass, the third is refused by per-user (route-wide has counted 3 by then).
        let allowed = exactly_then_refused(&client, &url, &[("x-user", "a")], 2, "per-user").await;
        assert_eq!(
            ratelimit(&allowed[1]).map(|r| r.name),
            Some("per-user".into())
        );
        // b: 2 pass (route-wide: 5); c's first is refused by route-wide.
        for _ in 0..2 {
            assert_from_origin(&get(&client, &url, &[("x-user", "b")]).await);
        }
        let resp = get(&client, &url, &[("x-user", "c")]).await;
        assert_refused(&resp, 429, "route-wide");
        assert_eq!(origin.hits(), 4);
    })
    .await;
}
