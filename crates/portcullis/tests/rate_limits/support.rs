//! Shared setup for the rate-limit black-box tests: a gateway config built from a policy list
//! and a route list, bounded requests with extra headers, and parsers/asserts for the
//! refusal and the `RateLimit` headers.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_test::{Origin, TestClient, TestGateway, TestResponse};

/// Upper bound for a whole test: a hang fails the test instead of blocking the suite.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// Upper bound for one exchange.
pub const WAIT: Duration = Duration::from_secs(5);

/// Runs `test` under `HANG_GUARD`.
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, test)
        .await
        .expect("test did not finish within the hang guard")
}

/// A config with one listener `main` (trusting `X-Forwarded-For` from 127.0.0.0/8, so tests
/// can choose the client IP), an upstream `app` pointing at `origin` when there is one (else
/// routes use `respond`), and the given `rate_limits` and `routes` sections: YAML list items
/// indented by two spaces.
pub fn config(origin: Option<&Origin>, rate_limits: &str, routes: &str) -> String {
    let upstreams = origin.map_or_else(String::new, |o| {
        format!(
            "upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n",
            o.addr()
        )
    });
    format!(
        "admin: {{ enabled: false }}\n\
         server: {{ drain_timeout: 1s }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    \
         trusted_proxies: [127.0.0.0/8]\n\
         {upstreams}\
         rate_limits:\n{rate_limits}\n\
         routes:\n{routes}\n"
    )
}

/// Starts a gateway from `yaml`.
pub async fn start(yaml: &str) -> TestGateway {
    portcullis_test::init_tracing();
    TestGateway::start(yaml).await
}

/// A gateway whose one catch-all route `app` proxies to `origin` under the policies `names`
/// (a YAML flow list such as `[per-user]`), with `policies` as the `rate_limits` section.
pub async fn proxied(origin: &Origin, policies: &str, names: &str) -> TestGateway {
    let routes = format!(
        "  - name: app\n    rate_limits: {names}\n    action: {{ proxy: {{ upstream: app }} }}"
    );
    start(&config(Some(origin), policies, &routes)).await
}

/// A request with extra headers and an empty body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// Sends `method url` with `headers`, within `WAIT`.
pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    tokio::time::timeout(WAIT, client.request(request(method, url, headers)))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no response within {WAIT:?}"))
}

/// GET `url` with `headers`, within `WAIT`.
pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> TestResponse {
    send(client, "GET", url, headers).await
}

/// The parsed `RateLimit: "NAME";r=R;t=T` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeader {
    pub name: String,
    pub remaining: u64,
    pub reset: u64,
}

/// Parses `RateLimit`, if present; panics on a malformed value.
pub fn ratelimit(resp: &TestResponse) -> Option<RateLimitHeader> {
    let value = resp.header("ratelimit")?;
    let (name, params) = parse_item(value);
    Some(RateLimitHeader {
        name,
        remaining: param(value, &params, "r"),
        reset: param(value, &params, "t"),
    })
}

/// The parsed `RateLimit-Policy: "NAME";q=Q;w=W` header as `(name, q, w)`, if present.
pub fn ratelimit_policy(resp: &TestResponse) -> Option<(String, u64, u64)> {
    let value = resp.header("ratelimit-policy")?;
    let (name, params) = parse_item(value);
    Some((name, param(value, &params, "q"), param(value, &params, "w")))
}

/// Splits `"NAME";k=v;k=v` into the name and its parameters.
fn parse_item(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let name = parts.next().unwrap_or_default();
    assert!(
        name.len() >= 2 && name.starts_with('"') && name.ends_with('"'),
        "item name is not a quoted string: {value:?}"
    );
    let params = parts
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("parameter without '=' in {value:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (name[1..name.len() - 1].to_owned(), params)
}

fn param(value: &str, params: &[(String, String)], key: &str) -> u64 {
    let (_, v) = params
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}= parameter in {value:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{key}= is not an integer in {value:?}"))
}

/// True when the response carries none of the rate-limit headers.
pub fn has_no_ratelimit_headers(resp: &TestResponse) -> bool {
    [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
    .iter()
    .all(|h| resp.header(h).is_none())
}

/// Asserts `resp` is a refusal by `policy` with `status`: the reason header, a JSON body
/// `{reason, status, request_id, policy, retry_after}` (the id the `x-request-id` header
/// carries, as on every gateway-made response), `Retry-After` (whole seconds > 0, equal to the
/// body's), and `RateLimit-Policy`/`RateLimit` naming `policy` with `r=0`. Returns the
/// `Retry-After` seconds.
pub fn assert_refused(resp: &TestResponse, status: u16, policy: &str) -> u64 {
    assert_eq!(resp.status.as_u16(), status, "body: {}", resp.text());
    assert_eq!(resp.header("x-portcullis-reason"), Some("rate_limited"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(resp.header("x-origin").is_none(), "the origin answered");
    let json = resp.json();
    assert_eq!(json["reason"], "rate_limited", "{json}");
    assert_eq!(json["status"], status, "{json}");
    assert_eq!(json["policy"], policy, "{json}");
    let request_id = resp
        .header("x-request-id")
        .expect("x-request-id on a refusal");
    assert_eq!(json["request_id"], request_id, "{json}");
    let retry_after: u64 = resp
        .header("retry-after")
        .expect("Retry-After on a refusal")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after > 0, "Retry-After: {retry_after}");
    assert_eq!(json["retry_after"], retry_after, "{json}");
    let (name, _, _) = ratelimit_policy(resp).expect("RateLimit-Policy on a refusal");
    assert_eq!(name, policy, "RateLimit-Policy names another policy");
    let rl = ratelimit(resp).expect("RateLimit on a refusal");
    assert_eq!(rl.name, policy, "RateLimit names another policy");
    assert_eq!(rl.remaining, 0, "a refusal has nothing remaining");
    retry_after
}

/// Asserts `resp` came from the origin (status 200, `x-origin` set).
pub fn assert_from_origin(resp: &TestResponse) {
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    assert!(
        resp.header("x-origin").is_some(),
        "not answered by the origin"
    );
}

/// Sends GET `url` with `headers` until refused: asserts exactly `n` are allowed (status
/// 200) and the next is a 429 refusal by `policy`. Returns the allowed responses.
pub async fn exactly_then_refused(
    client: &TestClient,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
    policy: &str,
) -> Vec<TestResponse> {
    let mut allowed = Vec::with_capacity(n);
    for i in 0..n {
        let resp = get(client, url, headers).await;
        assert_eq!(
            resp.status,
            200,
            "request {} of {n} with {headers:?} should pass: {}",
            i + 1,
            resp.text()
        );
        allowed.push(resp);
    }
    let resp = get(client, url, headers).await;
    assert_refused(&resp, 429, policy);
    allowed
}
