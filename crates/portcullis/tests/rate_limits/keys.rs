//! Keys: requests with equal keys share a budget. Header and query keys, the client IP (from
//! a trusted `X-Forwarded-For`) aggregated by prefix, a combination key, and what happens to
//! a request whose key is missing.

use portcullis_test::{Behavior, Origin, TestClient};

use crate::support::{
    assert_from_origin, assert_refused, bounded, config, exactly_then_refused, get,
    has_no_ratelimit_headers, proxied, start,
};

#[tokio::test]
async fn header_key_gives_each_value_its_own_budget() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        // Header names are case-insensitive, in the config as on the wire.
        let policy = "  - { name: per-user, limit: 2, window: 1h, key: [{ header: X-User }] }";
        let gw = proxied(&origin, policy, "[per-user]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        exactly_then_refused(&client, &url, &[("x-user", "alice")], 2, "per-user").await;
        // Alice being out of budget does not touch Bob's.
        exactly_then_refused(&client, &url, &[("x-user", "bob")], 2, "per-user").await;
        assert_refused(
            &get(&client, &url, &[("x-user", "alice")]).await,
            429,
            "per-user",
        );
        assert_eq!(origin.hits(), 4);
    })
    .await;
}

#[tokio::test]
async fn query_key_gives_each_value_its_own_budget() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-key, limit: 2, window: 1h, key: [{ query: api_key }] }";
        let gw = proxied(&origin, policy, "[per-key]").await;
        let client = TestClient::http1();
        let k1 = gw.url("main", "/search?q=x&api_key=k1");
        exactly_then_refused(&client, &k1, &[], 2, "per-key").await;
        // Same value percent-encoded and elsewhere in the query: the same key.
        let k1_again = gw.url("main", "/other?api_key=%6B1");
        assert_refused(&get(&client, &k1_again, &[]).await, 429, "per-key");
        let k2 = gw.url("main", "/search?api_key=k2&q=x");
        exactly_then_refused(&client, &k2, &[], 2, "per-key").await;
    })
    .await;
}

#[tokio::test]
async fn client_ip_key_aggregates_ipv4_by_prefix() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-net, limit: 2, window: 1h, key: [client_ip], \
                      client_ip_prefix: { ipv4: 24 } }";
        let gw = proxied(&origin, policy, "[per-net]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        // 10.0.0.1 and 10.0.0.2 are in one /24: one budget between them.
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.0.0.1")]).await);
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.0.0.2")]).await);
        assert_refused(
            &get(&client, &url, &[("x-forwarded-for", "10.0.0.1")]).await,
            429,
            "per-net",
        );
        assert_refused(
            &get(&client, &url, &[("x-forwarded-for", "10.0.0.200")]).await,
            429,
            "per-net",
        );
        // 10.0.1.1 is in another /24.
        let other = [("x-forwarded-for", "10.0.1.1")];
        exactly_then_refused(&client, &url, &other, 2, "per-net").await;
        // The loopback peer itself (no X-Forwarded-For) is yet another client.
        exactly_then_refused(&client, &url, &[], 2, "per-net").await;
    })
    .await;
}

#[tokio::test]
async fn client_ip_key_aggregates_ipv6_by_prefix() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-net6, limit: 2, window: 1h, key: [client_ip], \
                      client_ip_prefix: { ipv6: 64 } }";
        let gw = proxied(&origin, policy, "[per-net6]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "2001:db8::1")]).await);
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "2001:db8::2")]).await);
        assert_refused(
            &get(&client, &url, &[("x-forwarded-for", "2001:db8::ffff:1")]).await,
            429,
            "per-net6",
        );
        let other = [("x-forwarded-for", "2001:db8:0:1::1")];
        exactly_then_refused(&client, &url, &other, 2, "per-net6").await;
    })
    .await;
}

#[tokio::test]
async fn client_ip_defaults_to_one_budget_per_address() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-ip, limit: 1, window: 1h, key: [client_ip] }";
        let gw = proxied(&origin, policy, "[per-ip]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        for ip in ["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"] {
            exactly_then_refused(&client, &url, &[("x-forwarded-for", ip)], 1, "per-ip").await;
        }
    })
    .await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_budget() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let yaml = config(
            Some(&origin),
            "  - { name: per-ip, limit: 2, window: 1h, key: [client_ip] }",
            "  - name: app\n    rate_limits: [per-ip]\n    action: { proxy: { upstream: app } }",
        )
        // Trust nobody: the peer (127.0.0.1) is the client, whatever it claims.
        .replace("trusted_proxies: [127.0.0.0/8]", "trusted_proxies: []");
        let gw = start(&yaml).await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.0.0.1")]).await);
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.0.0.2")]).await);
        assert_refused(
            &get(&client, &url, &[("x-forwarded-for", "10.0.0.3")]).await,
            429,
            "per-ip",
        );
    })
    .await;
}

#[tokio::test]
async fn combination_key_needs_every_part_equal() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: user-ip, limit: 1, window: 1h, \
                      key: [{ header: x-user }, client_ip] }";
        let gw = proxied(&origin, policy, "[user-ip]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        let a1 = [("x-user", "a"), ("x-forwarded-for", "10.0.0.1")];
        exactly_then_refused(&client, &url, &a1, 1, "user-ip").await;
        // Same user from another IP, another user from the same IP: both fresh.
        let a2 = [("x-user", "a"), ("x-forwarded-for", "10.0.0.2")];
        exactly_then_refused(&client, &url, &a2, 1, "user-ip").await;
        let b1 = [("x-user", "b"), ("x-forwarded-for", "10.0.0.1")];
        exactly_then_refused(&client, &url, &b1, 1, "user-ip").await;
        // Missing the header part: skipped (the default), so unlimited.
        for _ in 0..3 {
            let resp = get(&client, &url, &[("x-forwarded-for", "10.0.0.1")]).await;
            assert_from_origin(&resp);
        }
    })
    .await;
}

#[tokio::test]
async fn missing_key_skip_leaves_the_request_unlimited() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-key, limit: 1, window: 1h, key: [{ header: x-api-key }], \
                      missing_key: skip }";
        let gw = proxied(&origin, policy, "[per-key]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        for _ in 0..5 {
            let resp = get(&client, &url, &[]).await;
            assert_from_origin(&resp);
            // The policy did not apply: nothing to describe.
            assert!(has_no_ratelimit_headers(&resp), "{:?}", resp.headers);
        }
        // Requests with the key are still limited.
        exactly_then_refused(&client, &url, &[("x-api-key", "k")], 1, "per-key").await;
        assert_eq!(origin.hits(), 6);
    })
    .await;
}

#[tokio::test]
async fn missing_key_fallback_puts_every_anonymous_request_in_one_budget() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: per-key, limit: 2, window: 1h, key: [{ header: x-api-key }], \
                      missing_key: { fallback: anon } }";
        let gw = proxied(&origin, policy, "[per-key]").await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        // Anonymous requests, whoever sends them, share one budget of 2.
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.0.0.1")]).await);
        assert_from_origin(&get(&client, &url, &[("x-forwarded-for", "10.9.9.9")]).await);
        assert_refused(&get(&client, &url, &[]).await, 429, "per-key");
        // A client whose key is literally the fallback value is not the anonymous budget.
        exactly_then_refused(&client, &url, &[("x-api-key", "anon")], 2, "per-key").await;
        exactly_then_refused(&client, &url, &[("x-api-key", "k1")], 2, "per-key").await;
    })
    .await;
}

/// A key part can hold any byte (query values are percent-decoded, `%00` and `%01`
/// included), so no value may pass for the next part or for a missing part's fallback: each
/// request below is the first of its key and gets a budget of its own. Found by the
/// `rate_limit_key` fuzz target.
#[tokio::test]
async fn key_parts_holding_any_byte_never_pass_for_another_part_or_the_fallback() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let policy = "  - { name: pair, limit: 1, window: 1h, key: [{ query: a }, { query: b }], \
                      missing_key: { fallback: anon } }";
        let gw = proxied(&origin, policy, "[pair]").await;
        let client = TestClient::http1();
        let pairs = [
            // The end of one part and the start of the next.
            ("/?a=x%00&b=y", "/?a=x&b=%00y"),
            ("/?a=x%00%00&b=y", "/?a=x&b=%00%00y"),
            // A missing part (the fallback) and a value made to look like it.
            ("/?b=z", "/?a=%01anon&b=z"),
            ("/?a=w", "/?a=w&b=%01anon"),
        ];
        for (first, second) in pairs {
            exactly_then_refused(&client, &gw.url("main", first), &[], 1, "pair").await;
            exactly_then_refused(&client, &gw.url("main", second), &[], 1, "pair").await;
        }
    })
    .await;
}
