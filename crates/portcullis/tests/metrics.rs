//! Black-box tests of `GET /metrics` (`docs/metrics.md`): traffic of every kind (success,
//! 404 no_route, 502 connect failure, 429 rate_limited, a tripped breaker, a retry, a shed
//! request, a caller's deadline) scraped in both formats with exact values; the 0.0.4 text
//! and the OpenMetrics text checked for well-formedness; content negotiation; metrics turned
//! off; and a flood of distinct paths and hosts that adds no series.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient, TestGateway, TestResponse};

// ----- a scrape, parsed -----

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }

    /// The sum of every sample named `name`.
    fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// Parses the text format strictly enough to catch malformed output: every line is a
/// comment of a known kind or `name{label="value",...} value`.
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "family {name} announced twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        samples.push(parse_sample(line));
    }
    Scrape {
        text: text.to_string(),
        samples,
        types,
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line}"
    );
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            let (start, c) = chars.next().expect("unterminated labels");
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=').expect("label =") + start;
            let key = &body[start..eq];
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name {key:?} in {line}"
            );
            assert_eq!(&body[eq + 1..eq + 2], "\"", "label value quoted in {line}");
            let mut value = String::new();
            let mut i = eq + 2;
            loop {
                let c = body[i..].chars().next().expect("unterminated value");
                i += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let e = body[i..].chars().next().expect("escape");
                        i += e.len_utf8();
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                    other => value.push(other),
                }
            }
            labels.insert(key.to_string(), value);
            while chars.peek().is_some_and(|(j, _)| *j < i) {
                chars.next();
            }
            if chars.peek().is_some_and(|(_, c)| *c == ',') {
                chars.next();
            }
        }
    }
    let value = rest.strip_prefix(' ').expect("space before value");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// The family a sample belongs to under `types` (0.0.4: counters are named with `_total`).
fn family_of<'a>(sample: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((name, _)) = types.get_key_value(sample) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count", "_total", "_info"]
        .iter()
        .filter_map(|suffix| sample.strip_suffix(suffix))
        .find_map(|base| types.get_key_value(base).map(|(k, _)| k.as_str()))
}

/// The 0.0.4 rules: TYPE names the sample (a counter's ends in `_total`), histogram samples
/// are `_bucket`/`_sum`/`_count` of a histogram, and no OpenMetrics-only syntax is left.
fn assert_prometheus_text(s: &Scrape) {
    assert!(!s.text.contains("# EOF"));
    assert!(!s.text.contains("# UNIT"));
    for (name, ty) in &s.types {
        assert!(
            ["counter", "gauge", "histogram", "untyped", "summary"].contains(&ty.as_str()),
            "{name}: type {ty} is not a 0.0.4 type"
        );
        if ty == "counter" {
            assert!(
                name.ends_with("_total"),
                "0.0.4 counter {name} without _total"
            );
        }
    }
    for sample in &s.samples {
        let family = family_of(&sample.name, &s.types)
            .unwrap_or_else(|| panic!("sample {} has no TYPE", sample.name));
        let ty = &s.types[family];
        match ty.as_str() {
            "histogram" => assert!(
                sample.name != family,
                "histogram sample {} without suffix",
                sample.name
            ),
            _ => assert_eq!(sample.name, family, "sample named after its TYPE line"),
        }
        assert!(!sample.name.ends_with("_created"));
    }
}

/// The OpenMetrics rules the encoder must keep: `# EOF` last, counters announced without
/// `_total` and sampled with it.
fn assert_openmetrics(s: &Scrape) {
    assert!(s.text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for sample in &s.samples {
        let family = family_of(&sample.name, &s.types)
            .unwrap_or_else(|| panic!("sample {} has no TYPE", sample.name));
        if s.types[family] == "counter" {
            assert_eq!(sample.name, format!("{family}_total"));
        }
    }
}

// ----- the gateway -----

async fn scrape_with(gw: &TestGateway, accept: Option<&str>) -> TestResponse {
    let mut req = Request::builder().uri(gw.admin_url("/metrics"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = TestClient::http1()
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp
}

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Both formats, checked, once `requests` requests have been recorded (a request is counted
/// when its response body has been sent, a moment after the client has it).
async fn scrape_both(gw: &TestGateway, requests: f64) -> (Scrape, Scrape) {
    for _ in 0..200 {
        let text = parse(&scrape_with(gw, None).await.text());
        if text.total("portcullis_requests_total") >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text_resp = scrape_with(gw, None).await;
    assert_eq!(
        text_resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let om_resp = scrape_with(gw, Some(OPENMETRICS)).await;
    assert_eq!(
        om_resp.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let (text, om) = (parse(&text_resp.text()), parse(&om_resp.text()));
    assert_prometheus_text(&text);
    assert_openmetrics(&om);
    assert_eq!(text.total("portcullis_requests_total"), requests);
    (text, om)
}

async fn get(gw: &TestGateway, path: &str) -> TestResponse {
    TestClient::http1().get(&gw.url("main", path)).await
}

async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(gw.url("main", path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    TestClient::http1()
        .request(
            req.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
}

// ----- tests -----

#[tokio::test]
async fn every_kind_of_answer_is_counted_with_its_labels() {
    let ok = Origin::start(Behavior::fixed(200, "hello")).await;
    let failing = Origin::start(Behavior::Status(500)).await;
    let slow = Origin::start(Behavior::slow(
        Duration::from_millis(600),
        Behavior::Status(200),
    ))
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let first_503 = {
        let calls = calls.clone();
        Origin::start(Behavior::scripted(move |_| {
            let status = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                503
            } else {
                200
            };
            ResponseSpec::new(status)
        }))
        .await
    };
    let down = portcullis_test::raw::RefusedAddr::new();
    let (ok_addr, failing, first_503, slow_addr) =
        (ok.addr(), failing.addr(), first_503.addr(), slow.addr());
    let gw = TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}
listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]
upstreams:
  - {{ name: app, endpoints: [{{ address: \"{ok_addr}\" }}] }}
  - {{ name: down, endpoints: [{{ address: \"{down}\" }}] }}
  - name: flaky
    endpoints: [{{ address: \"{failing}\" }}]
    circuit_breaker: {{ window: {{ calls: 2 }}, min_calls: 2, failure_rate: 100, open_duration: 60s }}
  - {{ name: again, endpoints: [{{ address: \"{first_503}\" }}] }}
  - name: narrow
    endpoints: [{{ address: \"{slow_addr}\" }}]
    load_shedding: {{ adaptive_limit: {{ initial: 1, min: 1, max: 1 }}, queue_size: 0, max_wait: 1s }}
  - {{ name: slow, endpoints: [{{ address: \"{slow_addr}\" }}] }}
rate_limits:
  - {{ name: tight, limit: 1, window: 1h }}
routes:
  - {{ name: ok, match: {{ path: {{ prefix: /ok }} }}, action: {{ proxy: {{ upstream: app }} }} }}
  - {{ name: limited, match: {{ path: {{ prefix: /limited }} }}, action: {{ proxy: {{ upstream: app }} }}, rate_limits: [tight] }}
  - {{ name: down, match: {{ path: {{ prefix: /down }} }}, action: {{ proxy: {{ upstream: down }} }} }}
  - {{ name: flaky, match: {{ path: {{ prefix: /flaky }} }}, action: {{ proxy: {{ upstream: flaky }} }} }}
  - name: again
    match: {{ path: {{ prefix: /again }} }}
    action: {{ proxy: {{ upstream: again }} }}
    retry: {{ attempts: 2, on: [], statuses: [503] }}
  - {{ name: narrow, match: {{ path: {{ prefix: /narrow }} }}, action: {{ proxy: {{ upstream: narrow }} }} }}
  - {{ name: slow, match: {{ path: {{ prefix: /slow }} }}, action: {{ proxy: {{ upstream: slow }} }} }}
  - {{ name: hello, match: {{ path: {{ exact: /hello }} }}, action: {{ respond: {{ status: 204 }} }} }}
"
    ))
    .await;

    // 2 × 200 with a body each way, 1 × 404, 1 × 502, 1 × 200 + 1 × 429, 2 × 500 then 503
    // circuit_open, 1 × 200 after a retry, a shed 503 beside a 200, a 504 deadline, a 204.
    for _ in 0..2 {
        let resp = send(&gw, "POST", "/ok/x", &[], "abc").await;
        assert_eq!((resp.status.as_u16(), resp.text().as_str()), (200, "hello"));
    }
    assert_eq!(get(&gw, "/nowhere").await.status, 404);
    assert_eq!(get(&gw, "/down").await.status, 502);
    assert_eq!(get(&gw, "/limited").await.status, 200);
    assert_eq!(get(&gw, "/limited").await.status, 429);
    assert_eq!(get(&gw, "/flaky").await.status, 500);
    assert_eq!(get(&gw, "/flaky").await.status, 500);
    assert_eq!(get(&gw, "/flaky").await.status, 503);
    assert_eq!(get(&gw, "/again").await.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "retried once");
    let held = tokio::spawn({
        let url = gw.url("main", "/narrow");
        async move { TestClient::http1().get(&url).await }
    });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        get(&gw, "/narrow").await.status,
        503,
        "shed: the one slot is taken"
    );
    assert_eq!(held.await.unwrap().status, 200);
    let late = send(&gw, "GET", "/slow", &[("grpc-timeout", "50m")], "").await;
    assert_eq!(late.status, 504);
    assert_eq!(
        late.header("x-portcullis-reason"),
        Some("deadline_exceeded")
    );
    assert_eq!(get(&gw, "/hello").await.status, 204);

    let (text, om) = scrape_both(&gw, 14.0).await;
    for s in [&text, &om] {
        let req = |route, upstream, class, reason| {
            s.value(
                "portcullis_requests_total",
                &[
                    ("route", route),
                    ("upstream", upstream),
                    ("status_class", class),
                    ("reason", reason),
                ],
            )
        };
        assert_eq!(req("ok", "app", "2xx", "none"), 2.0);
        assert_eq!(req("", "", "4xx", "no_route"), 1.0);
        assert_eq!(req("down", "down", "5xx", "upstream_connect_failed"), 1.0);
        assert_eq!(req("limited", "app", "2xx", "none"), 1.0);
        assert_eq!(req("limited", "app", "4xx", "rate_limited"), 1.0);
        assert_eq!(req("flaky", "flaky", "5xx", "none"), 2.0);
        assert_eq!(req("flaky", "flaky", "5xx", "circuit_open"), 1.0);
        assert_eq!(req("again", "again", "2xx", "none"), 1.0);
        assert_eq!(req("narrow", "narrow", "5xx", "shed"), 1.0);
        assert_eq!(req("narrow", "narrow", "2xx", "none"), 1.0);
        assert_eq!(req("slow", "slow", "5xx", "deadline_exceeded"), 1.0);
        assert_eq!(req("hello", "", "2xx", "direct_response"), 1.0);

        let ok = [
            ("route", "ok"),
            ("upstream", "app"),
            ("status_class", "2xx"),
            ("reason", "none"),
        ];
        assert_eq!(
            s.value("portcullis_request_duration_seconds_count", &ok),
            2.0
        );
        let inf: Vec<(&str, &str)> = ok.iter().copied().chain([("le", "+Inf")]).collect();
        assert_eq!(
            s.value("portcullis_request_duration_seconds_bucket", &inf),
            2.0
        );
        let held: Vec<(&str, &str)> = [
            ("route", "narrow"),
            ("upstream", "narrow"),
            ("status_class", "2xx"),
            ("reason", "none"),
            ("le", "0.5"),
        ]
        .to_vec();
        assert_eq!(
            s.value("portcullis_request_duration_seconds_bucket", &held),
            0.0,
            "the held request took the origin's 600 ms"
        );
        let route_ok = [("route", "ok"), ("upstream", "app")];
        assert_eq!(
            s.value("portcullis_request_body_bytes_total", &route_ok),
            6.0
        );
        assert_eq!(
            s.value("portcullis_response_body_bytes_total", &route_ok),
            10.0
        );
        let slow_route = [("route", "slow"), ("upstream", "slow")];
        assert_eq!(
            s.value("portcullis_deadline_exceeded_total", &slow_route),
            1.0
        );
        assert_eq!(
            s.value("portcullis_deadline_exceeded_total", &route_ok),
            0.0
        );

        // Upstream state read at scrape time.
        let down_ep = [("upstream", "down"), ("endpoint", &*down.to_string())];
        assert_eq!(
            s.value(
                "portcullis_upstream_endpoint_connect_errors_total",
                &down_ep
            ),
            1.0
        );
        assert_eq!(
            s.value("portcullis_upstream_endpoint_healthy", &down_ep),
            1.0
        );
        assert_eq!(
            s.value("portcullis_upstream_endpoint_ejected", &down_ep),
            0.0
        );
        let again = [("upstream", "again"), ("cause", "status")];
        assert_eq!(s.value("portcullis_upstream_retries_total", &again), 1.0);
        assert_eq!(
            s.value(
                "portcullis_upstream_retries_refused_total",
                &[("upstream", "again")]
            ),
            0.0
        );
        assert_eq!(
            s.value(
                "portcullis_upstream_shed_total",
                &[("upstream", "narrow"), ("cause", "queue_full")]
            ),
            1.0
        );
        assert_eq!(
            s.value(
                "portcullis_upstream_concurrency_limit",
                &[("upstream", "narrow")]
            ),
            1.0
        );
        assert_eq!(
            s.value(
                "portcullis_upstream_connections_active",
                &[("upstream", "app")]
            ),
            1.0
        );
        assert_eq!(
            s.value(
                "portcullis_upstream_connections_idle",
                &[("upstream", "app")]
            ),
            1.0
        );

        let breaker = [
            ("scope", "route"),
            ("route", "flaky"),
            ("upstream", "flaky"),
            ("endpoint", ""),
        ];
        assert_eq!(
            s.value("portcullis_circuit_breaker_state", &breaker),
            1.0,
            "open"
        );
        assert_eq!(
            s.value("portcullis_circuit_breaker_rejected_total", &breaker),
            1.0
        );
        let trip: Vec<(&str, &str)> = breaker
            .iter()
            .copied()
            .chain([("from", "closed"), ("to", "open")])
            .collect();
        assert_eq!(
            s.value("portcullis_circuit_breaker_transitions_total", &trip),
            1.0
        );

        let decision = |d| {
            s.value(
                "portcullis_rate_limit_decisions_total",
                &[("policy", "tight"), ("decision", d)],
            )
        };
        assert_eq!(
            (
                decision("allowed"),
                decision("denied"),
                decision("shadow_denied")
            ),
            (1.0, 1.0, 0.0)
        );

        assert_eq!(
            s.value(
                "portcullis_listener_connections_limited_total",
                &[("listener", "main")]
            ),
            0.0
        );
        assert_eq!(s.value("portcullis_config_reloads_total", &[]), 0.0);
        assert!(s.value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(s.value("process_threads", &[]) >= 1.0);
        assert!(s.value("process_open_fds", &[]) > 0.0);
        assert!(s.get("process_cpu_seconds_total", &[]).is_some());
    }
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(om.value("portcullis_build_info", &version), 1.0);
    assert_eq!(om.types["portcullis_build"], "info");
    assert_eq!(text.value("portcullis_build_info", &version), 1.0);
    assert_eq!(text.types["portcullis_build_info"], "gauge");
    assert_eq!(text.types["portcullis_requests_total"], "counter");
    assert_eq!(om.types["portcullis_requests"], "counter");
    let hash = &text
        .samples
        .iter()
        .find(|s| s.name == "portcullis_config_info")
        .unwrap()
        .labels["hash"];
    assert_eq!(hash.len(), 32);
    let hash_om = &om
        .samples
        .iter()
        .find(|s| s.name == "portcullis_config_info")
        .unwrap()
        .labels["hash"];
    assert_eq!(hash, hash_om, "stable");
}

#[tokio::test]
async fn a_flood_of_distinct_paths_and_hosts_adds_no_series() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}
listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]
upstreams: [{{ name: app, endpoints: [{{ address: \"{}\" }}] }}]
routes: [{{ name: api, match: {{ path: {{ prefix: /api }} }}, action: {{ proxy: {{ upstream: app }} }} }}]
",
        origin.addr()
    ))
    .await;
    assert_eq!(get(&gw, "/api/first").await.status, 200);
    assert_eq!(get(&gw, "/first").await.status, 404);
    let (before, _) = scrape_both(&gw, 2.0).await;

    for i in 0..100 {
        let host = format!("h{i}.example");
        let path = format!("/api/p{i}?user=u{i}");
        assert_eq!(send_host(&gw, &path, &host).await.status, 200);
        assert_eq!(
            send_host(&gw, &format!("/nothing/{i}"), &host).await.status,
            404
        );
    }
    let (after, _) = scrape_both(&gw, 202.0).await;

    let series = |s: &Scrape| -> Vec<(String, BTreeMap<String, String>)> {
        s.samples
            .iter()
            .map(|x| (x.name.clone(), x.labels.clone()))
            .collect()
    };
    let (mut a, mut b) = (series(&before), series(&after));
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same series before and after the flood");
    assert!(!after.text.contains("h7.example") && !after.text.contains("p7"));
    let api = [
        ("route", "api"),
        ("upstream", "app"),
        ("status_class", "2xx"),
        ("reason", "none"),
    ];
    assert_eq!(after.value("portcullis_requests_total", &api), 101.0);
}

async fn send_host(gw: &TestGateway, path: &str, host: &str) -> TestResponse {
    let req = Request::builder()
        .uri(gw.url("main", path))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    TestClient::http1().request(req).await
}

#[tokio::test]
async fn content_negotiation_picks_the_format() {
    let gw = TestGateway::start(
        "admin: { address: \"127.0.0.1:0\" }\nlisteners: [{ name: main, address: \"127.0.0.1:0\" }]\n",
    )
    .await;
    let text = "text/plain; version=0.0.4; charset=utf-8";
    let om = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    for (accept, expected) in [
        (None, text),
        (Some("*/*"), text),
        (Some("text/plain"), text),
        (Some("application/openmetrics-text"), om),
        (Some("application/openmetrics-text; version=1.0.0"), om),
        (
            Some("text/plain;q=0.9, application/openmetrics-text;q=0.2"),
            text,
        ),
        (Some("application/openmetrics-text;q=0"), text),
    ] {
        let resp = scrape_with(&gw, accept).await;
        assert_eq!(
            resp.header("content-type"),
            Some(expected),
            "Accept: {accept:?}"
        );
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        assert_eq!(resp.text().ends_with("# EOF\n"), expected == om);
    }
    let post = TestClient::http1()
        .request(
            Request::builder()
                .method("POST")
                .uri(gw.admin_url("/metrics"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn turned_off_there_is_no_endpoint() {
    let gw = TestGateway::start(
        "admin: { address: \"127.0.0.1:0\" }
listeners: [{ name: main, address: \"127.0.0.1:0\" }]
telemetry: { metrics: { enabled: false } }
",
    )
    .await;
    assert!(gw.gateway().shared().telemetry.metrics.is_none());
    let resp = TestClient::http1().get(&gw.admin_url("/metrics")).await;
    assert_eq!(resp.status, 404);
    assert!(resp.text().contains("telemetry.metrics.enabled: false"));
}

#[tokio::test]
async fn listener_gauges_follow_open_connections_and_requests() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(400),
        Behavior::Status(200),
    ))
    .await;
    let gw = TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}
listeners: [{{ name: main, address: \"127.0.0.1:0\", limits: {{ max_connections: 1 }} }}]
upstreams: [{{ name: app, endpoints: [{{ address: \"{}\" }}] }}]
routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]
",
        origin.addr()
    ))
    .await;
    let url = gw.url("main", "/");
    let first = tokio::spawn({
        let url = url.clone();
        async move { TestClient::http1_no_pool().get(&url).await }
    });
    while origin.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A second connection waits in the backlog: the accept loop is at the limit.
    let second = tokio::spawn(async move { TestClient::http1_no_pool().get(&url).await });
    let main = [("listener", "main")];
    let mut seen = None;
    for _ in 0..100 {
        let s = parse(&scrape_with(&gw, None).await.text());
        if s.value("portcullis_listener_connections_limited_total", &main) >= 1.0 {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = seen.expect("the accept loop reached max_connections");
    assert_eq!(s.value("portcullis_listener_connections", &main), 1.0);
    assert_eq!(
        s.value("portcullis_listener_requests_in_flight", &main),
        1.0
    );
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    for _ in 0..100 {
        let s = parse(&scrape_with(&gw, None).await.text());
        if s.value("portcullis_listener_connections", &main) == 0.0 {
            assert_eq!(
                s.value("portcullis_listener_requests_in_flight", &main),
                0.0
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = parse(&scrape_with(&gw, None).await.text());
    panic!(
        "connections never went back to 0: {}",
        s.text
            .lines()
            .filter(|l| l.contains("listener"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn access_log_and_span_deliveries_are_counted() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let collector = portcullis_test::otlp::OtlpReceiver::start().await;
    let dir = std::env::temp_dir().join(format!(
        "portcullis-metrics-sinks-{}-{}",
        std::process::id(),
        origin.addr().port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let gw = TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}
listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]
upstreams: [{{ name: app, endpoints: [{{ address: \"{}\" }}] }}]
routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]
telemetry:
  access_log: {{ enabled: true, output: \"{}\" }}
  tracing:
    otlp: {{ endpoint: \"{}\" }}
    batch: {{ schedule_delay: 20ms }}
",
        origin.addr(),
        log.display(),
        collector.endpoint()
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(get(&gw, "/x").await.status, 200);
    }
    // 5 request spans and 5 attempt spans reach the collector; the log writer flushes
    // within its 100 ms interval.
    collector.wait_for_spans(10, Duration::from_secs(5)).await;
    let mut scrape = parse(&scrape_with(&gw, None).await.text());
    for _ in 0..200 {
        let written = scrape.get(
            "portcullis_access_log_lines_total",
            &[("outcome", "written")],
        );
        let exported = scrape.get("portcullis_trace_spans_total", &[("outcome", "exported")]);
        if written == Some(5.0) && exported == Some(10.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        scrape = parse(&scrape_with(&gw, None).await.text());
    }
    assert_prometheus_text(&scrape);
    for (name, delivered, value) in [
        ("portcullis_access_log_lines_total", "written", 5.0),
        ("portcullis_trace_spans_total", "exported", 10.0),
    ] {
        assert_eq!(scrape.value(name, &[("outcome", delivered)]), value);
        assert_eq!(scrape.value(name, &[("outcome", "dropped")]), 0.0);
        assert_eq!(scrape.value(name, &[("outcome", "failed")]), 0.0);
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    // Sinks that are off have no series.
    let plain = TestGateway::start(
        "admin: { address: \"127.0.0.1:0\" }\nlisteners: [{ name: main, address: \"127.0.0.1:0\" }]\n",
    )
    .await;
    let scrape = parse(&scrape_with(&plain, None).await.text());
    assert!(!scrape.text.contains("portcullis_trace_spans_total"));
    assert!(!scrape.text.contains("portcullis_access_log_lines_total"));
}
