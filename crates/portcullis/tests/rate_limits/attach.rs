//! Where policies attach: a listener's limits run for every request on it before routing;
//! `defaults.rate_limits` covers routes without a list of their own and `rate_limits: []`
//! opts a route out. Unknown policy names are config errors with their path.

use portcullis_test::{Origin, TestClient};

use crate::support::{
    assert_refused, bounded, exactly_then_refused, get, has_no_ratelimit_headers, ratelimit, start,
};

/// Two listeners; `edge` carries the `edge-wide` limit, `side` none. Routes `/a` (proxied to
/// `origin`) and `/b` (direct) serve both.
fn listener_config(origin: &Origin) -> String {
    format!(
        r#"
admin: {{ enabled: false }}
server: {{ drain_timeout: 1s }}
listeners:
  - name: edge
    address: "127.0.0.1:0"
    rate_limits: [edge-wide]
  - name: side
    address: "127.0.0.1:0"
upstreams:
  - name: app
    endpoints: [{{ address: "{}" }}]
rate_limits:
  - {{ name: edge-wide, limit: 4, window: 1h }}
routes:
  - name: a
    match: {{ path: {{ exact: /a }} }}
    action: {{ proxy: {{ upstream: app }} }}
  - name: b
    match: {{ path: {{ exact: /b }} }}
    action: {{ respond: {{ body: b }} }}
"#,
        origin.addr()
    )
}

#[tokio::test]
async fn listener_limit_covers_every_route_and_runs_before_routing() {
    bounded(async {
        let origin = Origin::start(portcullis_test::Behavior::Echo).await;
        let gw = start(&listener_config(&origin)).await;
        let client = TestClient::http1();
        let edge = |path: &str| gw.url("edge", path);

        let resp = get(&client, &edge("/a"), &[]).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            ratelimit(&resp).map(|r| (r.name, r.remaining)),
            Some(("edge-wide".into(), 3))
        );
        assert_eq!(get(&client, &edge("/b"), &[]).await.status, 200);
        // A request no route matches is counted too, and carries the headers.
        let resp = get(&client, &edge("/nowhere"), &[]).await;
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
        assert_eq!(ratelimit(&resp).map(|r| r.remaining), Some(1));
        assert_eq!(get(&client, &edge("/b"), &[]).await.status, 200);

        // Out of budget: every route, and no route at all, is refused before routing.
        for path in ["/a", "/b", "/nowhere"] {
            assert_refused(&get(&client, &edge(path), &[]).await, 429, "edge-wide");
        }
        assert_eq!(origin.hits(), 1);

        // The other listener has no listener limit.
        for _ in 0..6 {
            let resp = get(&client, &gw.url("side", "/b"), &[]).await;
            assert_eq!(resp.status, 200);
            assert!(has_no_ratelimit_headers(&resp));
        }
    })
    .await;
}

#[tokio::test]
async fn listener_limit_runs_before_the_route_limits() {
    bounded(async {
        let yaml = r#"
admin: { enabled: false }
listeners:
  - name: main
    address: "127.0.0.1:0"
    rate_limits: [edge]
rate_limits:
  - { name: edge, limit: 2, window: 1h }
  - { name: route, limit: 5, window: 1h }
routes:
  - name: r
    rate_limits: [route]
    action: { respond: { body: r } }
"#;
        let gw = start(yaml).await;
        let client = TestClient::http1();
        let url = gw.url("main", "/");
        exactly_then_refused(&client, &url, &[], 2, "edge").await;
        // Refused by the listener limit, the route limit never counted those: after a reload
        // without the listener limit the route still has 5 - 2 = 3 left.
        let shared = gw.gateway().shared();
        let cfg = portcullis::config::from_str_with(
            &yaml.replace("    rate_limits: [edge]\n", ""),
            &|_| None,
        )
        .expect("valid");
        let runtime =
            portcullis::runtime::Runtime::compile(&cfg, &shared.rate_limits).expect("compiles");
        shared.runtime.store(std::sync::Arc::new(runtime));
        exactly_then_refused(&client, &url, &[], 3, "route").await;
    })
    .await;
}

#[tokio::test]
async fn defaults_cover_routes_without_a_list_and_an_empty_list_opts_out() {
    bounded(async {
        let yaml = r#"
admin: { enabled: false }
listeners:
  - name: main
    address: "127.0.0.1:0"
rate_limits:
  - { name: default-limit, limit: 2, window: 1h, key: [route] }
  - { name: own, limit: 3, window: 1h }
defaults:
  rate_limits: [default-limit]
routes:
  - name: inherits
    match: { path: { exact: /inherits } }
    action: { respond: { body: inherits } }
  - name: opts-out
    match: { path: { exact: /opts-out } }
    rate_limits: []
    action: { respond: { body: opts-out } }
  - name: own-list
    match: { path: { exact: /own-list } }
    rate_limits: [own]
    action: { respond: { body: own-list } }
"#;
        let gw = start(yaml).await;
        let client = TestClient::http1();
        exactly_then_refused(
            &client,
            &gw.url("main", "/inherits"),
            &[],
            2,
            "default-limit",
        )
        .await;
        for _ in 0..5 {
            let resp = get(&client, &gw.url("main", "/opts-out"), &[]).await;
            assert_eq!(resp.status, 200);
            assert!(has_no_ratelimit_headers(&resp));
        }
        // Its own list replaces the defaults (does not add to them).
        let allowed =
            exactly_then_refused(&client, &gw.url("main", "/own-list"), &[], 3, "own").await;
        assert_eq!(ratelimit(&allowed[0]).map(|r| r.name), Some("own".into()));
    })
    .await;
}

/// A config whose only fault is a reference to the policy `ghost`, placed by `where_`.
fn unknown_name_config(where_: &str) -> String {
    let (listener, route, defaults) = match where_ {
        "listener" => ("    rate_limits: [real, ghost]\n", "", ""),
        "route" => ("", "    rate_limits: [real, ghost]\n", ""),
        "defaults" => ("", "", "defaults:\n  rate_limits: [real, ghost]\n"),
        other => panic!("unknown place {other}"),
    };
    format!(
        "admin: {{ enabled: false }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n{listener}\
         rate_limits:\n  - {{ name: real, limit: 1, window: 1h }}\n\
         {defaults}\
         routes:\n  - name: r\n{route}    action: {{ respond: {{ body: r }} }}\n"
    )
}

const UNKNOWN_NAME_CASES: [(&str, &str); 3] = [
    ("listener", "listeners[0].rate_limits[1]"),
    ("route", "routes[0].rate_limits[1]"),
    ("defaults", "defaults.rate_limits[1]"),
];

/// `portcullis check` (config validation) reports an unknown policy name with its path.
#[tokio::test]
async fn unknown_rate_limit_name_is_a_config_error_with_its_path() {
    for (place, path) in UNKNOWN_NAME_CASES {
        let text = unknown_name_config(place);
        let errors = portcullis::config::from_str_with(&text, &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{place}: an unknown rate limit was accepted"));
        let shown = errors.to_string();
        assert!(
            errors
                .0
                .iter()
                .any(|e| e.path.starts_with(path) && e.to_string().contains("ghost")),
            "{place}: no error at {path} naming \"ghost\":\n{shown}"
        );
        assert!(
            !shown.contains("\"real\""),
            "{place}: the known name reported:\n{shown}"
        );
    }
}

/// Whatever validation catches, compiling the runtime refuses an unknown policy name, so a
/// gateway never starts with a limit silently missing.
#[tokio::test]
async fn unknown_rate_limit_name_stops_the_gateway_from_starting() {
    for (place, _) in UNKNOWN_NAME_CASES {
        let text = unknown_name_config(place);
        let parsed = portcullis::config::parse(&text).expect("parses");
        let err = match portcullis::app::Gateway::start(parsed).await {
            Ok(gw) => {
                gw.shutdown().await;
                panic!("{place}: started with an unknown rate limit");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("ghost"), "{place}: {err}");
    }
}
