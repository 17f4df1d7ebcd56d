//! Black-box tests of the admin JSON API (`docs/admin-api.md`): routes and upstreams with
//! their live state, breakers tripping and being forced open / released from the API (and the
//! data plane obeying), rate-limit counters, the redacted config, and the error answers
//! (400 with the problems, 404, 405, 413).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::net::SocketAddr;

use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
use proxying_support::{assert_gateway_error, request};
use serde_json::Value;

/// Admin on an ephemeral port, listener `main`, and `rest` (upstreams, routes, ...) appended.
async fn start(rest: &str) -> TestGateway {
    TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n{rest}"
    ))
    .await
}

/// A gateway with route `all` to upstream `app` (`origin`), whose breaker opens at half of
/// ten calls failing.
async fn start_with_breaker(origin: &Origin) -> TestGateway {
    start(&format!(
        "upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n\
         \x20   circuit_breaker: {{ window: {{ calls: 10 }}, min_calls: 10, failure_rate: 50 }}\n\
         routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]\n",
        origin.addr()
    ))
    .await
}

async fn admin_get(gw: &TestGateway, path: &str) -> TestResponse {
    TestClient::http1().get(&gw.admin_url(path)).await
}

/// `GET path` on the admin API: asserts a 200 JSON answer that is not cached.
async fn api(gw: &TestGateway, path: &str) -> Value {
    let resp = admin_get(gw, path).await;
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    resp.json()
}

async fn force(gw: &TestGateway, id: &str, body: &str) -> TestResponse {
    let url = gw.admin_url(&format!("/api/breakers/{id}/force"));
    let mut req = request("POST", &url, body.to_string());
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    TestClient::http1().request(req).await
}

async fn get(gw: &TestGateway, path: &str) -> TestResponse {
    TestClient::http1().get(&gw.url("main", path)).await
}

/// The element of `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|v| v[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list}"))
}

fn two_endpoints_yaml(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        "upstreams:\n  - name: app\n    endpoints: [{{ address: \"{a}\", weight: 2 }}, {{ address: \"{b}\" }}]\n\
         \x20   limits: {{ max_requests: 50 }}\n\
         \x20   load_shedding: {{ adaptive_limit: {{ initial: 4, min: 1, max: 8 }}, queue_size: 3, max_wait: 1s }}\n\
         \x20   outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 30s }}\n\
         \x20   circuit_breaker: {{ scope: endpoint, window: {{ calls: 2 }}, min_calls: 2, failure_rate: 100 }}\n\
         rate_limits:\n  - {{ name: per-client, limit: 100, window: 1h }}\n  - {{ name: unused, limit: 1, window: 1h }}\n\
         routes:\n\
         \x20 - name: api\n    match: {{ path: {{ prefix: /api }} }}\n    action: {{ proxy: {{ upstream: app }} }}\n\
         \x20   timeout: 7s\n    retry: {{ attempts: 3, per_try_timeout: 2s }}\n    rate_limits: [per-client]\n\
         \x20   priority: {{ level: critical, header: x-priority }}\n\
         \x20 - name: hello\n    match: {{ path: {{ exact: /hello }} }}\n    action: {{ respond: {{ status: 201, body: hi }} }}\n\
         \x20 - name: moved\n    action: {{ redirect: {{ path: /hello, status: 308 }} }}\n"
    )
}

#[tokio::test]
async fn routes_upstreams_and_rate_limits_are_listed_with_their_state() {
    let a = Origin::start(Behavior::Status(200)).await;
    let b = Origin::start(Behavior::Status(200)).await;
    let gw = start(&two_endpoints_yaml(a.addr(), b.addr())).await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/api/x").await.status, 200);
    }

    let routes = &api(&gw, "/api/routes").await["routes"];
    let names: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "hello", "moved"], "config order");
    let route = find(routes, "name", "api");
    assert_eq!(
        route["action"],
        serde_json::json!({"kind": "proxy", "upstream": "app"})
    );
    assert_eq!(route["timeout_ms"], 7000);
    assert_eq!(
        route["retry"],
        serde_json::json!({"attempts": 3, "per_try_timeout_ms": 2000})
    );
    assert_eq!(route["rate_limits"], serde_json::json!(["per-client"]));
    assert_eq!(route["priority"]["level"], "critical");
    assert_eq!(route["priority"]["header"], "x-priority");
    assert!(
        route["breaker"].is_null(),
        "endpoint-scope breakers are not the route's"
    );
    let hello = find(routes, "name", "hello");
    assert_eq!(
        hello["action"],
        serde_json::json!({"kind": "respond", "status": 201})
    );
    assert!(hello["retry"].is_null());
    assert_eq!(find(routes, "name", "moved")["action"]["kind"], "redirect");
    assert_eq!(find(routes, "name", "moved")["action"]["status"], 308);

    let upstreams = &api(&gw, "/api/upstreams").await["upstreams"];
    let app = find(upstreams, "name", "app");
    assert_eq!(app["protocol"], "http1");
    assert_eq!(app["thresholds"]["requests"]["max"], 50);
    assert_eq!(app["thresholds"]["requests"]["current"], 0);
    assert!(app["thresholds"]["connections"]["max"].is_null());
    assert_eq!(app["thresholds"]["overflowed"], 0);
    assert_eq!(app["retry_budget"]["deposits"], 3);
    assert_eq!(app["retry_budget"]["refused"], 0);
    assert_eq!(app["load_shedding"]["limit"], 4);
    assert_eq!(app["load_shedding"]["in_flight"], 0);
    assert_eq!(app["load_shedding"]["queued"], 0);
    assert_eq!(app["load_shedding"]["shed"]["queue_full"], 0);
    assert_eq!(app["load_shedding"]["shed"]["timeout"], 0);
    assert_eq!(app["outlier_detection"]["ejections"]["consecutive_5xx"], 0);
    assert_eq!(app["outlier_detection"]["ejected_endpoints"], 0);
    let ep = find(&app["endpoints"], "address", &a.addr().to_string());
    assert_eq!(ep["weight"], 2);
    assert_eq!(ep["healthy"], true);
    assert_eq!(ep["ejected"], false);
    assert_eq!(ep["ejections"], 0);
    assert_eq!(ep["in_flight"], 0);
    assert_eq!(
        ep["breaker"],
        serde_json::json!({"id": format!("endpoint/app/{}", a.addr()), "state": "closed", "forced": "none"})
    );
    assert_eq!(app["endpoints"].as_array().unwrap().len(), 2);

    let limits = &api(&gw, "/api/rate_limits").await["rate_limits"];
    let names: Vec<&str> = limits
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["per-client", "unused"],
        "every policy, in config order"
    );
    let per_client = find(limits, "name", "per-client");
    assert_eq!(per_client["allowed"], 3);
    assert_eq!(per_client["denied"], 0);
    assert_eq!(per_client["shadow_denied"], 0);
    assert_eq!(per_client["store"]["keys"], 1);
    assert_eq!(find(limits, "name", "unused")["allowed"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_tripped_endpoint_breaker_shows_open() {
    let failing = Origin::start(Behavior::Status(500)).await;
    let healthy = Origin::start(Behavior::Status(200)).await;
    let gw = start(&two_endpoints_yaml(failing.addr(), healthy.addr())).await;
    while failing.hits() < 2 {
        get(&gw, "/api/x").await;
    }
    let breakers = &api(&gw, "/api/breakers").await["breakers"];
    let open = find(breakers, "id", &format!("endpoint/app/{}", failing.addr()));
    assert_eq!(open["state"], "open");
    assert_eq!(open["forced"], "none");
    assert_eq!(open["scope"], "endpoint");
    assert_eq!(open["upstream"], "app");
    assert_eq!(open["endpoint"], failing.addr().to_string());
    assert!(open["route"].is_null());
    assert_eq!(open["stats"]["opened"], 1);
    let closed = find(breakers, "id", &format!("endpoint/app/{}", healthy.addr()));
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["stats"]["opened"], 0);
}

#[tokio::test(start_paused = true)]
async fn forcing_a_route_breaker_open_fails_fast_and_none_restores() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start_with_breaker(&origin).await;
    assert_eq!(get(&gw, "/").await.status, 200);
    let routes = api(&gw, "/api/routes").await;
    assert_eq!(routes["routes"][0]["breaker"]["id"], "route/all");
    assert_eq!(routes["routes"][0]["breaker"]["state"], "closed");

    let resp = force(&gw, "route/all", r#"{"state": "open"}"#).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["forced"], "open");
    let refused = get(&gw, "/").await;
    assert_gateway_error(&refused, 503, "circuit_open");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(origin.hits(), 1);
    let breakers = api(&gw, "/api/breakers").await;
    let b = find(&breakers["breakers"], "id", "route/all");
    assert_eq!(b["forced"], "open");
    assert_eq!(b["scope"], "route");
    assert_eq!(b["route"], "all");
    assert_eq!(b["upstream"], "app");
    assert_eq!(b["stats"]["rejected"], 1);

    // Ids may be percent-encoded; forced closed, calls go through.
    let resp = force(&gw, "route%2Fall", r#"{"state":"closed"}"#).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["forced"], "closed");
    assert_eq!(get(&gw, "/").await.status, 200);
    let resp = force(&gw, "route/all", r#"{"state":"none"}"#).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["forced"], "none");
    assert_eq!(get(&gw, "/").await.status, 200);
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start_with_breaker(&origin).await;

    let resp = force(&gw, "route/all", "{not json").await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let json = resp.json();
    assert_eq!(json["error"], "bad_request");
    assert!(json["problems"][0]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));

    let json = force(&gw, "route/all", r#"{"state": "ajar", "why": 1}"#)
        .await
        .json();
    assert_eq!(
        json["problems"],
        serde_json::json!([
            "unknown field \"why\"",
            "state: \"ajar\" is not one of \"open\", \"closed\", \"none\""
        ])
    );

    let resp = force(&gw, "route/nope", r#"{"state": "open"}"#).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "not_found");

    let resp = force(
        &gw,
        "route/all",
        &format!("{{\"state\": \"{}\"}}", "x".repeat(5000)),
    )
    .await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"], "payload_too_large");

    let resp = admin_get(&gw, "/api/breakers/route/all/force").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));
    let url = gw.admin_url("/api/routes");
    let resp = TestClient::http1().request(request("POST", &url, "")).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD"));
    let resp = admin_get(&gw, "/api/nothing").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "not_found");

    // Nothing was forced by any of that.
    assert_eq!(get(&gw, "/").await.status, 200);
    let breakers = api(&gw, "/api/breakers").await;
    assert_eq!(breakers["breakers"][0]["forced"], "none");
}

#[tokio::test]
async fn config_is_served_with_secrets_redacted() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start(&format!(
        "upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n\
         routes:\n  - name: all\n    match: {{ headers: [{{ name: x-api-key, exact: k-123 }}] }}\n\
         \x20   action: {{ proxy: {{ upstream: app }} }}\n\
         \x20   request_headers: {{ set: {{ Authorization: \"Bearer s3cr3t\", x-tenant: blue }} }}\n",
        origin.addr()
    ))
    .await;
    let resp = admin_get(&gw, "/api/config").await;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(
        !text.contains("s3cr3t") && !text.contains("k-123"),
        "{text}"
    );
    let config = resp.json();
    let route = &config["routes"][0];
    assert_eq!(
        route["request_headers"]["set"]["Authorization"],
        "<redacted>"
    );
    assert_eq!(route["request_headers"]["set"]["x-tenant"], "blue");
    assert_eq!(route["match"]["headers"][0]["exact"], "<redacted>");
    assert_eq!(config["upstreams"][0]["name"], "app");
    assert_eq!(config["listeners"][0]["name"], "main");

    // The data plane still sends the real value.
    let resp = TestClient::http1()
        .request(
            http::Request::get(gw.url("main", "/"))
                .header("x-api-key", "k-123")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        origin.requests()[0].header("authorization"),
        Some("Bearer s3cr3t")
    );
}
