//! Shared setup for the proxying black-box tests: a one-route gateway config built from a
//! few YAML lines, a hang guard, and small request/assert helpers.

// Each test binary uses its own subset of these helpers, and a failed helper should stop
// the test at once.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_test::{TestGateway, TestResponse};

/// Upper bound for a whole test: a hang fails the test instead of blocking the suite.
pub const HANG_GUARD: Duration = Duration::from_secs(10);

/// Runs `test` under `HANG_GUARD`.
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, test)
        .await
        .expect("test did not finish within the hang guard")
}

/// A gateway with one listener `main`, one upstream `app` and one catch-all route `app`;
/// extra YAML fields are added to each as `key: value` lines.
#[derive(Debug, Clone)]
pub struct Setup {
    endpoints: Vec<String>,
    listener: Vec<String>,
    upstream: Vec<String>,
    route: Vec<String>,
}

impl Setup {
    pub fn new(origin: SocketAddr) -> Self {
        Self::with_endpoint(origin.to_string())
    }

    pub fn with_endpoint(address: String) -> Self {
        Self {
            endpoints: vec![address],
            listener: Vec::new(),
            upstream: Vec::new(),
            route: Vec::new(),
        }
    }

    /// The upstream speaks cleartext HTTP/2 (prior knowledge).
    pub fn h2_upstream(self) -> Self {
        self.upstream("protocol: http2")
    }

    pub fn listener(mut self, line: &str) -> Self {
        self.listener.push(line.to_owned());
        self
    }

    pub fn upstream(mut self, line: &str) -> Self {
        self.upstream.push(line.to_owned());
        self
    }

    pub fn route(mut self, line: &str) -> Self {
        self.route.push(line.to_owned());
        self
    }

    pub fn yaml(&self) -> String {
        let indent = |lines: &[String]| {
            lines
                .iter()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        let endpoints = portcullis_test::endpoints_yaml(&self.endpoints);
        format!(
            "admin: {{ enabled: false }}\n\
             server: {{ drain_timeout: 1s }}\n\
             listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n{}\
             upstreams:\n  - name: app\n    endpoints: [{endpoints}]\n{}\
             routes:\n  - name: app\n    action: {{ proxy: {{ upstream: app }} }}\n{}",
            indent(&self.listener),
            indent(&self.upstream),
            indent(&self.route),
        )
    }

    pub async fn start(&self) -> TestGateway {
        portcullis_test::init_tracing();
        TestGateway::start(&self.yaml()).await
    }

    /// Starts with `extra` top-level YAML sections appended (e.g. `rate_limits:`).
    pub async fn start_with_extra(&self, extra: &str) -> TestGateway {
        portcullis_test::init_tracing();
        TestGateway::start(&format!("{}{extra}", self.yaml())).await
    }
}

/// A request with a full body.
pub fn request(method: &str, url: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// Asserts `resp` is an answer the gateway made itself: status, reason header, and the JSON
/// body `{reason, status, request_id}` whose id matches the `x-request-id` header.
pub fn assert_gateway_error(resp: &TestResponse, status: u16, reason: &str) {
    assert_eq!(resp.status.as_u16(), status, "body: {}", resp.text());
    assert_eq!(resp.header("x-portcullis-reason"), Some(reason));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let json = resp.json();
    assert_eq!(json["reason"], reason);
    assert_eq!(json["status"], status);
    let id = resp.header("x-request-id").expect("x-request-id on errors");
    assert!(!id.is_empty());
    assert_eq!(json["request_id"], id);
    assert!(resp.header("x-origin").is_none(), "origin answered instead");
}

/// Polls `cond` every 5 ms until it holds, panicking with `what` after 5 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `len` bytes of a non-repeating-looking pattern, so misplaced or lost chunks show.
pub fn pattern(len: usize) -> Bytes {
    let mut state: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}
