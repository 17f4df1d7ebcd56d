//! Every file in `examples/configs/` parses and validates, and is started and exercised here:
//! what its comments promise is what the running gateway does. A new example fails until it
//! gets an exercise in `exercise`.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_test::{TestClient, TestGateway, TestResponse};
use tokio::time::Instant;

/// Upper bound for one exchange with a started example.
const WAIT: Duration = Duration::from_secs(5);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs")
}

/// Every `*.yaml` / `*.yml` file of `examples/configs/`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let dir = example_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_example_config_is_valid_and_exercised() {
    portcullis_test::init_tracing();
    let files = example_files();
    assert!(!files.is_empty(), "no example configs found");
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_owned();
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        // As `portcullis check` sees it with nothing set in the environment: defaults apply.
        if let Err(errors) = portcullis::config::from_str_with(&text, &|_| None) {
            panic!("examples/configs/{name} is not a valid config:\n{errors}");
        }
        exercise(&name, &text).await;
    }
}

/// Starts the example `name` and checks what it promises.
async fn exercise(name: &str, text: &str) {
    match name {
        "quickstart.yaml" => quickstart(text).await,
        "rate-limits.yaml" => rate_limits(text).await,
        "protection.yaml" => protection(text).await,
        "observability.yaml" => observability(text).await,
        other => panic!(
            "examples/configs/{other} has no exercise: add an arm for it to `exercise` in \
             crates/portcullis/tests/examples.rs that starts it (on free loopback ports: make \
             its addresses ${{VAR:-default}} references) and checks what its comments promise"
        ),
    }
}

/// A loopback address with a port that was free a moment ago. The listener is released on
/// return, right before the gateway binds the port.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// Starts the example `text` with each variable set to its address.
async fn start_example(text: &str, vars: &[(&str, SocketAddr)]) -> TestGateway {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_string()))
        .collect();
    TestGateway::start_with_vars(text, vars).await
}

async fn get(client: &TestClient, url: &str) -> TestResponse {
    tokio::time::timeout(WAIT, client.get(url))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no response within {WAIT:?}"))
}

/// Starts an example whose public listener, `demo-origin` listener and admin listener take
/// their addresses from `PORTCULLIS_PUBLIC_ADDR`, `PORTCULLIS_DEMO_ADDR` and
/// `PORTCULLIS_ADMIN_ADDR`, and checks each came up where it was told.
async fn start_with_demo_origin(text: &str) -> TestGateway {
    let (public, demo, admin) = (free_addr(), free_addr(), free_addr());
    let gw = start_example(
        text,
        &[
            ("PORTCULLIS_PUBLIC_ADDR", public),
            ("PORTCULLIS_DEMO_ADDR", demo),
            ("PORTCULLIS_ADMIN_ADDR", admin),
        ],
    )
    .await;
    assert_eq!(gw.addr("public"), public);
    assert_eq!(gw.addr("demo-origin"), demo);
    assert_eq!(gw.admin_addr(), admin);
    gw
}

/// The curl lines at the top of `quickstart.yaml`, and the comments on its routes.
async fn quickstart(text: &str) {
    let gw = start_with_demo_origin(text).await;
    let public = gw.addr("public");
    let client = TestClient::http1();
    let url = |path: &str| gw.url("public", path);

    // /api/users: proxied to the demo origin as /users.
    let resp = get(&client, &url("/api/users")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        serde_json::json!([{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}])
    );
    assert_eq!(resp.header("x-served-by"), Some("portcullis-quickstart"));
    // The demo origin's answer, passed through the proxy: like any upstream's answer, it has
    // no x-portcullis-reason (the demo routes set `reason_header: false`).
    assert_eq!(resp.header("x-demo-origin"), Some("true"));
    assert_eq!(resp.header("x-portcullis-reason"), None);
    // The demo origin only answers /whoami when the `api` route's x-gateway header arrived.
    let resp = get(&client, &url("/api/whoami")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(resp.text(), "you came through the gateway\n");
    assert_eq!(resp.header("x-demo-origin"), Some("true"));
    assert_eq!(resp.header("x-portcullis-reason"), None);
    // Anything else under /api reaches the demo origin's fallback, not the gateway's 404.
    let resp = get(&client, &url("/api/nothing-here")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-demo-origin"), Some("true"));
    assert_eq!(resp.header("x-portcullis-reason"), None);
    assert_eq!(resp.json()["error"], "not found on the demo origin");
    assert_eq!(resp.header("x-served-by"), Some("portcullis-quickstart"));

    // /healthz: answered by the gateway itself.
    let resp = get(&client, &url("/healthz")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok\n");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));

    // /docs: a permanent redirect to /api/users keeping scheme, host and port (and query).
    let resp = get(&client, &url("/docs")).await;
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{public}/api/users").as_str())
    );
    let resp = get(&client, &url("/docs?page=2")).await;
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{public}/api/users?page=2").as_str())
    );

    // /nope: the gateway's own 404.
    let resp = get(&client, &url("/nope")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
    assert_eq!(resp.json()["reason"], "no_route");

    // The demo origin's routes are scoped to its own listener.
    let resp = get(&client, &gw.url("public", "/users")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));

    // Admin readiness.
    let resp = get(&client, &gw.admin_url("/readyz")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ready\n");

    // Metrics (README): on by default, and the 404 above is among them.
    let resp = get(&client, &gw.admin_url("/metrics")).await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.text()
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("reason=\"no_route\"")),
        "{}",
        resp.text()
    );

    drop(client);
    tokio::time::timeout(Duration::from_secs(15), gw.shutdown())
        .await
        .expect("quickstart gateway shut down in time");
}

/// GET `url` with `headers`, within `WAIT`.
async fn get_with(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("valid request");
    tokio::time::timeout(WAIT, client.request(req))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no response within {WAIT:?}"))
}

/// The `RateLimit: "NAME";r=R;t=T` header as `(NAME, R)`.
fn ratelimit(resp: &TestResponse) -> Option<(String, u64)> {
    let value = resp.header("ratelimit")?;
    let (name, rest) = value.split_once(';')?;
    let r = rest.split(';').find_map(|p| p.strip_prefix("r="))?;
    Some((name.trim_matches('"').to_owned(), r.parse().ok()?))
}

/// Asserts `resp` is a 429 refusal by `policy` with a `Retry-After`; returns its seconds.
fn assert_refused_by(resp: &TestResponse, policy: &str) -> u64 {
    assert_eq!(resp.status, 429, "{:?}", resp.text());
    assert_eq!(resp.header("x-portcullis-reason"), Some("rate_limited"));
    assert_eq!(resp.json()["policy"], policy);
    assert_eq!(ratelimit(resp), Some((policy.into(), 0)));
    let retry_after: u64 = resp
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);
    retry_after
}

/// What the comments of `rate-limits.yaml` promise.
async fn rate_limits(text: &str) {
    let gw = start_with_demo_origin(text).await;
    let client = TestClient::http1();
    let url = |path: &str| gw.url("public", path);
    // Each step plays clients of its own networks, and sends an API key of its own except
    // where it tests the anonymous budget, so the steps do not share budgets.
    let from = |ip: &str| ("x-forwarded-for", ip.to_owned());

    // Allowed responses come from the origin and say how much is left.
    let resp = get_with(&client, &url("/api/users"), &[("x-api-key", "demo")]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(resp.json()["served_by"], "demo origin");
    assert!(resp.header("ratelimit-policy").is_some());
    assert!(ratelimit(&resp).is_some());

    // per-client-ip, on the whole listener and before routing: 404s use the budget of
    // 10.1.2.0/24 (a burst of 20, then 10 a second) until a 429...
    let client_a = from("10.1.2.3");
    let mut not_found = 0;
    let refusal = loop {
        let resp = get_with(&client, &url("/nope"), &[(client_a.0, &client_a.1)]).await;
        if resp.status != 404 {
            break resp;
        }
        assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
        not_found += 1;
        assert!(not_found <= 200, "never refused");
    };
    assert_refused_by(&refusal, "per-client-ip");
    assert_eq!(
        refusal.header("ratelimit-policy"),
        Some("\"per-client-ip\";q=20;w=2")
    );
    assert!(not_found >= 20, "refused after {not_found}");
    // ...which another address of the same /24 shares, on any route, /healthz included:
    // refused, or let in on a token that refilled just now (then nothing is left).
    for path in ["/api/users", "/healthz"] {
        let headers = [(client_a.0, "10.1.2.99"), ("x-api-key", "neighbour")];
        let resp = get_with(&client, &url(path), &headers).await;
        if resp.status == 429 {
            assert_refused_by(&resp, "per-client-ip");
        } else {
            assert_eq!(
                ratelimit(&resp),
                Some(("per-client-ip".into(), 0)),
                "{path}"
            );
        }
    }
    // A client of the next /24 starts with a full bucket.
    let headers = [(client_a.0, "10.1.3.1"), ("x-api-key", "neighbour")];
    let resp = get_with(&client, &url("/api/users"), &headers).await;
    assert_eq!(resp.status, 200);
    assert_eq!(ratelimit(&resp), Some(("per-client-ip".into(), 19)));

    // api-key-hourly: 100 per key per hour (each request from its own /24 here, so that
    // per-client-ip stays out of the way), with the legacy headers too.
    let key_req = |i: usize, key: Option<&'static str>| {
        let ip = format!("10.2.{}.{}", i % 256, 1 + i / 256);
        (ip, key)
    };
    for key in [Some("quota-test"), None] {
        for i in 0..100 {
            let (ip, key) = key_req(i + if key.is_none() { 100 } else { 0 }, key);
            let mut headers = vec![("x-forwarded-for", ip.as_str())];
            headers.extend(key.map(|k| ("x-api-key", k)));
            let resp = get_with(&client, &url("/api/users"), &headers).await;
            assert_eq!(resp.status, 200, "{key:?} request {i}: {:?}", resp.text());
        }
        // The 101st: refused for up to the rest of the hour. Without a key, every anonymous
        // client shares the one budget: a new address is refused as well.
        let (ip, key) = key_req(250, key);
        let mut headers = vec![("x-forwarded-for", ip.as_str())];
        headers.extend(key.map(|k| ("x-api-key", k)));
        let resp = get_with(&client, &url("/api/users"), &headers).await;
        let retry_after = assert_refused_by(&resp, "api-key-hourly");
        assert!(retry_after <= 3600, "{retry_after}");
        assert_eq!(resp.header("x-ratelimit-limit"), Some("100"));
        assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
        assert!(resp.header("x-ratelimit-reset").is_some());
    }
    // Another key has its own quota.
    let resp = get_with(
        &client,
        &url("/api/users"),
        &[("x-api-key", "other"), ("x-forwarded-for", "10.3.0.1")],
    )
    .await;
    assert_eq!(resp.status, 200);

    // search-trial is shadow mode: 8 searches from one client in a minute (over its 5)
    // all pass, and no header mentions it.
    for i in 0..8 {
        let resp = get_with(
            &client,
            &url("/api/search?q=x"),
            &[("x-api-key", "searcher"), ("x-forwarded-for", "10.4.0.1")],
        )
        .await;
        assert_eq!(resp.status, 200, "search {i}: {:?}", resp.text());
        let named = ratelimit(&resp).map(|(name, _)| name);
        assert_ne!(named.as_deref(), Some("search-trial"));
        assert_ne!(
            resp.header("ratelimit-policy")
                .map(|p| p.contains("search-trial")),
            Some(true)
        );
    }

    // reports-smoothing is delay mode: three reports at once all pass, spaced out by the
    // gateway (one slot every 200 ms, so the third waits ~400 ms). Wall-clock bounds,
    // generous for a loaded machine.
    let started = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            let url = url("/api/reports/monthly");
            tokio::spawn(async move {
                let ip = format!("10.5.{i}.1");
                let resp = get_with(
                    &client,
                    &url,
                    &[("x-api-key", "reporter"), ("x-forwarded-for", &ip)],
                )
                .await;
                (resp.status, started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (status, took) = task.await.expect("report request");
        assert_eq!(status, 200);
        slowest = slowest.max(took);
    }
    assert!(slowest >= Duration::from_millis(300), "{slowest:?}");
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");

    drop(client);
    tokio::time::timeout(Duration::from_secs(15), gw.shutdown())
        .await
        .expect("rate-limits gateway shut down in time");
}

/// What the comments of `protection.yaml` promise.
async fn protection(text: &str) {
    let (public, demo_a, demo_b, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let gw = start_example(
        text,
        &[
            ("PORTCULLIS_PUBLIC_ADDR", public),
            ("PORTCULLIS_DEMO_ADDR", demo_a),
            ("PORTCULLIS_DEMO_B_ADDR", demo_b),
            ("PORTCULLIS_ADMIN_ADDR", admin),
        ],
    )
    .await;
    assert_eq!(gw.addr("public"), public);
    let client = TestClient::http1();
    let url = |path: &str| gw.url("public", path);
    let served_by = |resp: &TestResponse| resp.json()["served_by"].as_str().map(str::to_owned);

    // Round robin over a and b.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = get(&client, &url("/api/users")).await;
        assert_eq!(resp.status, 200, "{:?}", resp.text());
        seen.extend(served_by(&resp));
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);

    // Two POSTs to /api/flaky: never retried, so the one on b gets b's 503 as it is.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = Request::post(url("/api/flaky"))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let resp = tokio::time::timeout(WAIT, client.request(req))
            .await
            .expect("POST answered");
        if resp.status == 503 {
            assert_eq!(served_by(&resp).as_deref(), Some("b"));
            assert_eq!(resp.json()["error"], "flaky");
            // b's own answer, passed through as an upstream's: no reason header.
            assert_eq!(resp.header("x-demo-origin"), Some("true"));
            assert_eq!(resp.header("x-portcullis-reason"), None);
        }
        statuses.push(resp.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503]);

    // GETs are retried on the endpoint not tried yet: all end with a's 200.
    for i in 0..8 {
        let resp = get(&client, &url("/api/flaky")).await;
        assert_eq!(resp.status, 200, "GET {i}: {:?}", resp.text());
        assert_eq!(served_by(&resp).as_deref(), Some("a"));
    }
    // By now b answered 5 503s in a row and is ejected: everything goes to a.
    for _ in 0..4 {
        let resp = get(&client, &url("/api/users")).await;
        assert_eq!(served_by(&resp).as_deref(), Some("a"));
    }

    // The caller's deadline: spent means no upstream call; not a number is a 400.
    let resp = get_with(
        &client,
        &url("/api/users"),
        &[("x-request-timeout-ms", "0")],
    )
    .await;
    assert_eq!(resp.status, 504);
    assert_eq!(
        resp.header("x-portcullis-reason"),
        Some("deadline_exceeded")
    );
    let resp = get_with(
        &client,
        &url("/api/users"),
        &[("x-request-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("x-portcullis-reason"), Some("bad_request"));

    drop(client);
    tokio::time::timeout(Duration::from_secs(15), gw.shutdown())
        .await
        .expect("protection gateway shut down in time");
}

/// The curl lines of `observability.yaml`: a proxied request and a rate-limit refusal, each
/// seen in the metrics, the access log and the traces.
async fn observability(text: &str) {
    let (public, demo, admin) = (free_addr(), free_addr(), free_addr());
    let collector = portcullis_test::otlp::OtlpReceiver::start().await;
    let dir = std::env::temp_dir().join(format!(
        "portcullis-example-observability-{}-{}",
        std::process::id(),
        public.port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("access.log");
    let mut vars: HashMap<String, String> = [
        ("PORTCULLIS_PUBLIC_ADDR", public),
        ("PORTCULLIS_DEMO_ADDR", demo),
        ("PORTCULLIS_ADMIN_ADDR", admin),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_string()))
    .collect();
    vars.insert("PORTCULLIS_ACCESS_LOG".into(), log.display().to_string());
    vars.insert("PORTCULLIS_OTLP_ENDPOINT".into(), collector.endpoint());
    let gw = TestGateway::start_with_vars(text, vars).await;
    let client = TestClient::http1();
    let url = |path: &str| gw.url("public", path);

    let resp = get(&client, &url("/api/users?token=s3cret")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()[0]["name"], "ada");
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get(&client, &url("/api/search")).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Metrics: the refusal by reason and by policy.
    let metrics = get(&client, &gw.admin_url("/metrics")).await.text();
    let has = |needle: &str| {
        metrics
            .lines()
            .any(|l| l.contains(needle) && l.ends_with(" 1"))
    };
    assert!(
        has("reason=\"rate_limited\"") && has("decision=\"denied\""),
        "{metrics}"
    );
    let openmetrics = Request::get(gw.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let om = client.request(openmetrics).await;
    assert!(om.text().ends_with("# EOF\n"));

    // Traces: a server span per request (5) and a client span per attempt (4: the refusal
    // never reached the origin); the refusal's server span says why.
    let spans = collector.wait_for_spans(9, WAIT).await;
    assert!(
        spans
            .iter()
            .any(|s| s.attr("portcullis.reason") == Some("rate_limited")
                && s.attr("portcullis.rate_limit.policy") == Some("search")),
        "{spans:#?}"
    );

    // Access log: one line per request on the public listener (the origin's own requests on
    // `demo-origin` are logged too), the secret query value redacted.
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .filter(|l: &serde_json::Value| l["listener"] == "public")
            .collect();
        if lines.len() >= 5 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[0]["path"], "/api/users?token=REDACTED");
    assert_eq!(lines[0]["route"], "api");
    let refused = &lines[4];
    assert_eq!(refused["status"], 429);
    assert_eq!(refused["reason"], "rate_limited");
    assert_eq!(refused["rate_limit_policy"], "search");
    assert_eq!(refused["rate_limit_action"], "denied");
    assert!(!std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("s3cret"));
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
