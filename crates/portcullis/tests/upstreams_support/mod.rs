//! Helpers shared by the upstream test files: config templating, requests, counting, polling.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::HashMap;
use std::time::Duration;

use portcullis_test::{Origin, TestClient, TestGateway, TestResponse};

/// A gateway config with listener `main` and route `/app` → upstream `app`, whose fields
/// (indented by 4 spaces after the first line) are `upstream`.
pub fn config(upstream: &str) -> String {
    format!(
        r#"
admin: {{ enabled: false }}
listeners:
  - name: main
    address: "127.0.0.1:0"
upstreams:
  - name: app
    {upstream}
routes:
  - name: app
    match: {{ path: {{ prefix: /app }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#
    )
}

/// `[{ address: "127.0.0.1:p", weight: w }, ...]` for the given origins.
pub fn endpoints(origins: &[(&Origin, u32)]) -> String {
    let items: Vec<String> = origins
        .iter()
        .map(|(o, w)| format!("{{ address: \"{}\", weight: {w} }}", o.addr()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// GET `path` on listener `main`.
pub async fn get(client: &TestClient, gw: &TestGateway, path: &str) -> TestResponse {
    get_with(client, gw, path, &[]).await
}

/// GET `path` on listener `main` with extra headers.
pub async fn get_with(
    client: &TestClient,
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut req = http::Request::get(gw.url("main", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
}

/// How many times each origin name appears.
pub fn count_by_origin(names: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Health-check requests `o` received.
pub fn healthz(o: &Origin) -> usize {
    o.requests()
        .iter()
        .filter(|r| r.path_and_query() == "/healthz")
        .count()
}

/// Polls `cond` every 5 ms until it holds; panics after 2 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}
