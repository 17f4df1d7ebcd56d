//! Black-box routing tests through a running in-process gateway: host, path, method, header,
//! query and listener matching; route precedence; direct responses, redirects and proxying;
//! path rewrites; request and response header edits; the 404 `no_route` answer.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_test::raw::send_raw;
use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
use tokio::net::TcpStream;

/// Upper bound for any single exchange with the gateway.
const WAIT: Duration = Duration::from_secs(5);

/// The two listeners every gateway here has.
const LISTENERS: &str = r#"
admin: { enabled: false }
listeners:
  - { name: main, address: "127.0.0.1:0" }
  - { name: side, address: "127.0.0.1:0" }
"#;

/// A gateway whose routes each proxy to their own Echo origin named like the route, so
/// `x-origin` says which route took a request.
struct Fixture {
    gw: TestGateway,
    /// Kept alive for the gateway; indexed like the routes.
    origins: Vec<Origin>,
}

impl Fixture {
    /// `routes` are (name, YAML lines of the route other than `name` and `action`).
    async fn start(routes: &[(&str, &str)]) -> Fixture {
        portcullis_test::init_tracing();
        let mut origins = Vec::new();
        for (name, _) in routes {
            origins.push(Origin::start_named(name, Behavior::Echo).await);
        }
        let mut yaml = String::from(LISTENERS);
        yaml.push_str("upstreams:\n");
        for o in &origins {
            yaml.push_str(&format!(
                "  - {{ name: {}, endpoints: [{{ address: \"{}\" }}] }}\n",
                o.name(),
                o.addr()
            ));
        }
        yaml.push_str("routes:\n");
        for (name, body) in routes {
            yaml.push_str(&format!("  - name: {name}\n"));
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                yaml.push_str(&format!("    {}\n", line.trim_start()));
            }
            yaml.push_str(&format!(
                "    action: {{ proxy: {{ upstream: {name} }} }}\n"
            ));
        }
        let gw = TestGateway::start(&yaml).await;
        Fixture { gw, origins }
    }

    fn origin(&self, name: &str) -> &Origin {
        self.origins
            .iter()
            .find(|o| o.name() == name)
            .unwrap_or_else(|| panic!("no origin {name}"))
    }

    /// Which origin answered `req` on `listener` (`None` for the gateway's 404 `no_route`).
    async fn who(&self, listener: &str, req: Request<Full<Bytes>>) -> Option<String> {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = exchange(self.gw.addr(listener), Proto::H1, req).await;
        routed_to(&resp, &what)
    }

    /// `who` for a GET of `path_and_query` on `main`.
    async fn get(&self, path_and_query: &str) -> Option<String> {
        self.who("main", get(None, path_and_query, &[])).await
    }
}

/// `Some(origin)` for a proxied answer, `None` for 404 `no_route`; panics on anything else.
fn routed_to(resp: &TestResponse, what: &str) -> Option<String> {
    if resp.status == 404 && resp.header("x-portcullis-reason") == Some("no_route") {
        return None;
    }
    assert_eq!(resp.status, 200, "{what}: {:?}", resp.text());
    let origin = resp.header("x-origin");
    assert!(
        origin.is_some(),
        "{what}: no x-origin in {:?}",
        resp.headers
    );
    origin.map(str::to_owned)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
}

/// A request with an optional `Host` header (HTTP/1.1: an empty one for an origin-form target
/// without a host) and extra headers.
fn get(host: Option<&str>, target: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request(Method::GET, host, target, headers)
}

fn request(
    method: Method,
    host: Option<&str>,
    target: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(target);
    // HTTP/1.1 requires a `Host`; with no host to name, an origin-form request carries an
    // empty one (RFC 9112 §3.2), which routes like no host at all.
    let host = host.or(target.starts_with('/').then_some(""));
    if let Some(h) = host {
        b = b.header(http::header::HOST, h);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("valid request")
}

/// Sends `req` as is on a new connection (hyper's connection-level client: no `Host` is
/// added, an HTTP/2 `:authority` comes from the URI) and buffers the response.
async fn exchange(addr: SocketAddr, proto: Proto, req: Request<Full<Bytes>>) -> TestResponse {
    let what = format!("{proto:?} {} {}", req.method(), req.uri());
    let done = tokio::time::timeout(WAIT, async {
        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        let resp = match proto {
            Proto::H1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("h1 handshake");
                tokio::spawn(conn);
                send.send_request(req).await.expect("h1 request")
            }
            Proto::H2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("h2 handshake");
                tokio::spawn(conn);
                send.send_request(req).await.expect("h2 request")
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        TestResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            trailers: None,
        }
    })
    .await;
    done.unwrap_or_else(|_| panic!("{what}: no response within {WAIT:?}"))
}

// ---------------------------------------------------------------------------------------
// Hosts

/// Routes listed so that config order alone would give the wrong answers: the catch-all
/// first, the short wildcard before the long one, the exact host last.
const HOST_ROUTES: &[(&str, &str)] = &[
    ("any", ""),
    ("wild", r#"match: { hosts: ["*.example.com"] }"#),
    ("wild-eu", r#"match: { hosts: ["*.eu.example.com"] }"#),
    (
        "narrow",
        "match: { hosts: [api.example.com], path: { prefix: /narrow } }",
    ),
    (
        "exact",
        "match: { hosts: [api.example.com, www.example.org], methods: [GET] }",
    ),
];

/// (host, method, path, origin expected).
const HOST_CASES: &[(&str, &str, &str, &str)] = &[
    ("api.example.com", "GET", "/x", "exact"),
    ("www.example.org", "GET", "/x", "exact"),
    ("API.Example.COM", "GET", "/x", "exact"),
    ("api.example.com:8080", "GET", "/x", "exact"),
    ("Api.Example.Com:1", "GET", "/x", "exact"),
    ("api.example.com.", "GET", "/x", "exact"),
    // Within the exact group, config order: `narrow` is listed before `exact`.
    ("api.example.com", "GET", "/narrow/y", "narrow"),
    // The exact routes don't take POST: on to the wildcard group.
    ("api.example.com", "POST", "/x", "wild"),
    ("a.example.com", "GET", "/", "wild"),
    ("a.b.c.example.com", "GET", "/", "wild"),
    ("A.EXAMPLE.com:9999", "GET", "/", "wild"),
    ("x.eu.example.com", "GET", "/", "wild-eu"),
    ("x.y.eu.example.com", "GET", "/", "wild-eu"),
    // `*.eu.example.com` does not take its apex; `*.example.com` does take it.
    ("eu.example.com", "GET", "/", "wild"),
    // Not the apex, and not a mere string suffix.
    ("example.com", "GET", "/", "any"),
    ("notexample.com", "GET", "/", "any"),
    ("www.example.org.evil", "GET", "/", "any"),
    ("127.0.0.1", "GET", "/", "any"),
];

#[tokio::test]
async fn host_precedence_over_http1_host_header() {
    let f = Fixture::start(HOST_ROUTES).await;
    let addr = f.gw.addr("main");
    for &(host, method, path, want) in HOST_CASES {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let req = request(method.clone(), Some(host), path, &[]);
        let resp = exchange(addr, Proto::H1, req).await;
        let got = routed_to(&resp, &format!("{method} {path} Host: {host}"));
        assert_eq!(got.as_deref(), Some(want), "{method} {path} Host: {host}");
    }
    // No host (an empty `Host`): only the routes without hosts take part.
    let resp = exchange(addr, Proto::H1, get(None, "/narrow/x", &[])).await;
    assert_eq!(routed_to(&resp, "no host").as_deref(), Some("any"));
}

#[tokio::test]
async fn host_precedence_over_http2_authority() {
    let f = Fixture::start(HOST_ROUTES).await;
    let addr = f.gw.addr("main");
    for &(host, method, path, want) in HOST_CASES {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let uri = format!("http://{host}{path}");
        let req = request(method.clone(), None, &uri, &[]);
        let resp = exchange(addr, Proto::H2, req).await;
        assert_eq!(resp.version, http::Version::HTTP_2);
        let got = routed_to(&resp, &format!("h2 {method} {uri}"));
        assert_eq!(got.as_deref(), Some(want), "h2 {method} {uri}");
    }
}

/// Which origin a raw HTTP/1.1 response came from (`x-origin`), if any.
fn raw_origin(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-origin")
            .then(|| value.trim().to_owned())
    })
}

/// RFC 9112 §3.2.2: with an absolute-form target the `Host` header is ignored, and a proxy
/// sends a `Host` built from the target, so the upstream sees the host the route matched.
#[tokio::test]
async fn absolute_form_target_routes_by_its_authority() {
    let f = Fixture::start(HOST_ROUTES).await;
    let addr = f.gw.addr("main");
    let cases = [
        ("http://API.example.com:9999/x", "other.test", "exact"),
        ("http://a.example.com/x?q=1", "api.example.com", "wild"),
        ("http://example.com/x", "api.example.com", "any"),
    ];
    for (target, host, want) in cases {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = send_raw(addr, raw.as_bytes(), WAIT).await;
        assert_eq!(
            portcullis_test::raw::status_of(&resp),
            Some(200),
            "{target}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(raw_origin(&resp).as_deref(), Some(want), "{target}");
        let seen = f.origin(want).requests();
        let last = seen.last().expect("origin saw the request");
        let authority = target
            .strip_prefix("http://")
            .and_then(|t| t.split('/').next())
            .expect("authority");
        assert_eq!(
            last.header("host"),
            Some(authority),
            "{target}: the upstream must get the Host of the target, not {host:?}"
        );
        let path = &target[target.find(authority).expect("authority") + authority.len()..];
        assert_eq!(last.path_and_query(), path);
    }
}

// ---------------------------------------------------------------------------------------
// Path, methods, headers, query, listeners

#[tokio::test]
async fn path_exact_prefix_and_regex() {
    let f = Fixture::start(&[
        ("exact", "match: { path: { exact: /exact } }"),
        ("prefix", "match: { path: { prefix: /api } }"),
        ("slash", "match: { path: { prefix: /dir/ } }"),
        ("regex", r#"match: { path: { regex: "/users/[0-9]+" } }"#),
    ])
    .await;
    let cases: &[(&str, Option<&str>)] = &[
        ("/exact", Some("exact")),
        ("/exact?x=1", Some("exact")),
        ("/exact/", None),
        ("/exactly", None),
        ("/Exact", None),
        ("/api", Some("prefix")),
        ("/api/", Some("prefix")),
        ("/api/v1/users?x", Some("prefix")),
        ("/apix", None),
        ("/ap", None),
        ("/dir/", Some("slash")),
        ("/dir/a", Some("slash")),
        ("/dir", None),
        ("/users/42", Some("regex")),
        ("/users/42?page=2", Some("regex")),
        ("/users/42/posts", None),
        ("/users/abc", None),
        ("/v1/users/42", None),
        ("/", None),
    ];
    for &(path, want) in cases {
        assert_eq!(f.get(path).await.as_deref(), want, "GET {path}");
    }
}

#[tokio::test]
async fn methods() {
    let f = Fixture::start(&[
        (
            "write",
            "match: { path: { exact: /m }, methods: [POST, PUT, PURGE] }",
        ),
        (
            "read",
            "match: { path: { exact: /m }, methods: [GET, HEAD] }",
        ),
    ])
    .await;
    let cases: &[(&str, Option<&str>)] = &[
        ("GET", Some("read")),
        ("HEAD", Some("read")),
        ("POST", Some("write")),
        ("PUT", Some("write")),
        ("PURGE", Some("write")),
        ("DELETE", None),
        ("OPTIONS", None),
    ];
    for &(method, want) in cases {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let got = f.who("main", request(m, None, "/m", &[])).await;
        assert_eq!(got.as_deref(), want, "{method} /m");
    }
}

#[tokio::test]
async fn header_matchers() {
    let f = Fixture::start(&[
        (
            "debug",
            "match: { path: { exact: /h }, headers: [{ name: X-Debug, present: true }] }",
        ),
        (
            "canary",
            "match: { path: { exact: /h }, headers: [{ name: x-env, exact: canary }] }",
        ),
        (
            "versioned",
            r#"match: { path: { exact: /h }, headers: [{ name: x-version, regex: "v[0-9]+" }] }"#,
        ),
        (
            "anon",
            "match: { path: { exact: /h }, headers: [{ name: authorization, present: false }] }",
        ),
        ("authed", "match: { path: { exact: /h } }"),
    ])
    .await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("x-debug", "")], "debug"),
        (&[("X-DEBUG", "1"), ("x-env", "canary")], "debug"),
        (&[("x-env", "canary")], "canary"),
        (&[("x-env", "prod"), ("x-env", "canary")], "canary"),
        (&[("x-env", "Canary")], "anon"),
        (&[("x-env", "canary-2")], "anon"),
        (&[("x-version", "v12")], "versioned"),
        (&[("x-version", "v12-beta")], "anon"),
        (&[("x-version", "xv1")], "anon"),
        (&[], "anon"),
        (&[("authorization", "Bearer t")], "authed"),
        (
            &[("authorization", "Bearer t"), ("x-version", "v1")],
            "versioned",
        ),
    ];
    for &(headers, want) in cases {
        let got = f.who("main", get(None, "/h", headers)).await;
        assert_eq!(got.as_deref(), Some(want), "GET /h {headers:?}");
    }
}

#[tokio::test]
async fn query_matchers() {
    let f = Fixture::start(&[
        (
            "q-exact",
            r#"match: { path: { exact: /q }, query: [{ name: q, exact: "a b/é" }] }"#,
        ),
        (
            "q-debug",
            "match: { path: { exact: /q }, query: [{ name: debug, present: true }] }",
        ),
        (
            "q-id",
            r#"match: { path: { exact: /q }, query: [{ name: id, regex: "[0-9]+" }] }"#,
        ),
        (
            "q-quiet",
            "match: { path: { exact: /q }, query: [{ name: verbose, present: false }] }",
        ),
    ])
    .await;
    let cases: &[(&str, Option<&str>)] = &[
        ("/q?q=a%20b%2F%C3%A9", Some("q-exact")),
        ("/q?x=1&q=a+b/%C3%A9", Some("q-exact")),
        ("/q?q=other&q=a%20b%2f%c3%a9", Some("q-exact")),
        ("/q?q=a%20b&verbose", None),
        ("/q?debug&verbose", Some("q-debug")),
        ("/q?verbose=1&debug=", Some("q-debug")),
        ("/q?debugger=1&verbose", None),
        ("/q?id=42&verbose", Some("q-id")),
        ("/q?id=%34%32&verbose", Some("q-id")),
        ("/q?id=42x&verbose", None),
        ("/q?id=x42&verbose", None),
        ("/q", Some("q-quiet")),
        ("/q?verbosely=1", Some("q-quiet")),
        ("/q?verbose", None),
    ];
    for &(path, want) in cases {
        assert_eq!(f.get(path).await.as_deref(), want, "GET {path}");
    }
}

#[tokio::test]
async fn listener_scoping() {
    let f = Fixture::start(&[
        (
            "main-only",
            "listeners: [main]\nmatch: { path: { prefix: /s } }",
        ),
        (
            "side-only",
            "listeners: [side]\nmatch: { path: { prefix: /s } }",
        ),
        (
            "side-extra",
            "listeners: [side]\nmatch: { path: { prefix: /x } }",
        ),
        (
            "both",
            "listeners: [main, side]\nmatch: { path: { prefix: /b } }",
        ),
        ("all", "match: { path: { prefix: /all } }"),
    ])
    .await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("main", "/s", Some("main-only")),
        ("side", "/s", Some("side-only")),
        ("main", "/x", None),
        ("side", "/x", Some("side-extra")),
        ("main", "/b", Some("both")),
        ("side", "/b", Some("both")),
        ("main", "/all", Some("all")),
        ("side", "/all", Some("all")),
    ];
    for &(listener, path, want) in cases {
        let got = f.who(listener, get(None, path, &[])).await;
        assert_eq!(got.as_deref(), want, "{listener}: GET {path}");
    }
}

// ---------------------------------------------------------------------------------------
// Actions

/// A gateway with non-proxy routes only (plus one proxy to `origin`).
async fn action_gateway(origin: &Origin) -> TestGateway {
    portcullis_test::init_tracing();
    let yaml = format!(
        r#"{LISTENERS}
upstreams:
  - {{ name: app, endpoints: [{{ address: "{addr}" }}] }}
routes:
  - name: teapot
    match: {{ path: {{ exact: /teapot }} }}
    action:
      respond:
        status: 418
        headers: {{ content-type: text/plain, x-custom: "yes", cache-control: no-store }}
        body: "short and stout\n"
  - name: empty
    match: {{ path: {{ exact: /empty }} }}
    action: {{ respond: {{ status: 204 }} }}
  - name: default
    match: {{ path: {{ exact: /default }} }}
    action: {{ respond: {{}} }}
  - name: to-https
    match: {{ path: {{ prefix: /r/https }} }}
    action: {{ redirect: {{ scheme: https, status: 301 }} }}
  - name: to-host
    match: {{ path: {{ prefix: /r/host }} }}
    action: {{ redirect: {{ host: new.example.com, status: 308 }} }}
  - name: to-port
    match: {{ path: {{ prefix: /r/port }} }}
    action: {{ redirect: {{ scheme: https, port: 8443, status: 307 }} }}
  - name: to-default-port
    match: {{ path: {{ prefix: /r/default-port }} }}
    action: {{ redirect: {{ port: 80 }} }}
  - name: to-path
    match: {{ path: {{ prefix: /r/path }} }}
    action: {{ redirect: {{ path: /new, status: 301 }} }}
  - name: to-path-query
    match: {{ path: {{ prefix: /r/pq }} }}
    action: {{ redirect: {{ path: "/new?from=old", status: 303 }} }}
  - name: to-all
    match: {{ path: {{ prefix: /r/all }} }}
    action: {{ redirect: {{ scheme: https, host: secure.example.net, port: 9443, path: /login }} }}
  - name: proxied
    match: {{ path: {{ prefix: /app }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#,
        addr = origin.addr()
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn direct_responses() {
    let origin = Origin::start_named("app", Behavior::Echo).await;
    let gw = action_gateway(&origin).await;
    let client = TestClient::http1();

    let resp = client.get(&gw.url("main", "/teapot")).await;
    assert_eq!(resp.status, 418);
    assert_eq!(resp.text(), "short and stout\n");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-custom"), Some("yes"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));
    assert!(resp.header("x-request-id").is_some());

    let resp = client.get(&gw.url("main", "/empty")).await;
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));

    let resp = client.get(&gw.url("main", "/default")).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));

    // HTTP/2 gets the same answer.
    let resp = TestClient::http2().get(&gw.url("side", "/teapot")).await;
    assert_eq!(resp.status, 418);
    assert_eq!(resp.text(), "short and stout\n");
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));

    // And the proxy route still proxies.
    let resp = client.get(&gw.url("main", "/app/x")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-origin"), Some("app"));
    assert_eq!(resp.json()["path"], "/app/x");
    assert_eq!(origin.hits(), 1, "only the proxy route reaches the origin");
}

#[tokio::test]
async fn redirects_build_location_from_the_request() {
    let origin = Origin::start_named("app", Behavior::Echo).await;
    let gw = action_gateway(&origin).await;
    let addr = gw.addr("main");
    // (Host, target, status, Location).
    let cases = [
        (
            "www.example.com:8080",
            "/r/https/a?x=1&y=%20",
            301,
            "https://www.example.com/r/https/a?x=1&y=%20",
        ),
        (
            "www.example.com:8080",
            "/r/host?x=1",
            308,
            "http://new.example.com:8080/r/host?x=1",
        ),
        (
            "www.example.com:8080",
            "/r/port",
            307,
            "https://www.example.com:8443/r/port",
        ),
        (
            "www.example.com:8080",
            "/r/default-port?k",
            302,
            "http://www.example.com/r/default-port?k",
        ),
        (
            "WWW.Example.com",
            "/r/path/old?x=1",
            301,
            "http://www.example.com/new?x=1",
        ),
        (
            "www.example.com",
            "/r/path",
            301,
            "http://www.example.com/new",
        ),
        (
            "www.example.com",
            "/r/pq?x=1",
            303,
            "http://www.example.com/new?from=old&x=1",
        ),
        (
            "www.example.com:8080",
            "/r/all?next=%2Fhome",
            302,
            "https://secure.example.net:9443/login?next=%2Fhome",
        ),
    ];
    for (host, target, status, location) in cases {
        let resp = exchange(addr, Proto::H1, get(Some(host), target, &[])).await;
        assert_eq!(resp.status, status, "{host} {target}");
        assert_eq!(resp.header("location"), Some(location), "{host} {target}");
        assert_eq!(resp.header("x-portcullis-reason"), Some("redirect"));
    }
    // HTTP/2: the authority plays the Host's part.
    let uri = "http://www.example.com:8080/r/host?x=1";
    let resp = exchange(addr, Proto::H2, get(None, uri, &[])).await;
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("http://new.example.com:8080/r/host?x=1")
    );
    assert_eq!(origin.hits(), 0, "redirects never reach the origin");
}

// ---------------------------------------------------------------------------------------
// Rewrites

#[tokio::test]
async fn rewrites_change_the_path_the_origin_sees() {
    let f = Fixture::start(&[
        (
            "strip",
            "match: { path: { prefix: /strip } }\nrewrite: strip_prefix",
        ),
        (
            "replace",
            "match: { path: { prefix: /old } }\nrewrite: { replace_prefix: /v2 }",
        ),
        (
            "replace-root",
            "match: { path: { prefix: /root/ } }\nrewrite: { replace_prefix: / }",
        ),
        // `$$` is the config file's escape for `$`: the regex replacement is `/u/${id}/$2`.
        (
            "regex",
            r#"match: { path: { prefix: /users } }
rewrite: { regex: { pattern: "^/users/(?P<id>[0-9]+)/(\\w+)$", replacement: "/u/$${id}/$2" } }"#,
        ),
    ])
    .await;
    let cases = [
        ("/strip/users?a=1&b=%20", "strip", "/users?a=1&b=%20"),
        ("/strip", "strip", "/"),
        ("/strip/", "strip", "/"),
        ("/strip?x=1", "strip", "/?x=1"),
        ("/strip/a/b/", "strip", "/a/b/"),
        ("/old/users?q=1", "replace", "/v2/users?q=1"),
        ("/old", "replace", "/v2"),
        ("/root/a/b?c", "replace-root", "/a/b?c"),
        ("/users/42/posts?page=2", "regex", "/u/42/posts?page=2"),
        // The pattern does not match: the path is left as it is.
        ("/users/abc", "regex", "/users/abc"),
    ];
    for (target, want, seen) in cases {
        let resp = exchange(f.gw.addr("main"), Proto::H1, get(None, target, &[])).await;
        assert_eq!(routed_to(&resp, target).as_deref(), Some(want), "{target}");
        assert_eq!(resp.json()["path"], seen, "{target}");
        let last = f.origin(want).requests().pop().expect("recorded");
        assert_eq!(last.path_and_query(), seen, "{target}");
    }
    // `/stripx` is not under `/strip` (segment-aware prefix): no route.
    assert_eq!(f.get("/stripx").await, None);
}

// ---------------------------------------------------------------------------------------
// Header edits

#[tokio::test]
async fn header_edits_on_request_and_response() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named(
        "app",
        Behavior::Fixed {
            status: 200,
            headers: vec![
                ("x-powered-by".into(), "origin-framework".into()),
                ("cache-control".into(), "public, max-age=60".into()),
                ("x-trace".into(), "origin".into()),
            ],
            body: Bytes::from_static(b"hello"),
        },
    )
    .await;
    let yaml = format!(
        r#"{LISTENERS}
upstreams:
  - {{ name: app, endpoints: [{{ address: "{addr}" }}] }}
routes:
  - name: edited
    match: {{ path: {{ prefix: /e }} }}
    request_headers:
      remove: [x-internal, X-Env]
      set: {{ x-env: prod, x-tenant: acme }}
      add: {{ x-gateway: portcullis, x-multi: two }}
    response_headers:
      remove: [x-powered-by]
      set: {{ cache-control: no-store }}
      add: {{ x-served-by: portcullis, x-trace: gateway }}
    action: {{ proxy: {{ upstream: app }} }}
  - name: teapot
    match: {{ path: {{ exact: /d }} }}
    response_headers:
      set: {{ x-served-by: portcullis }}
    action: {{ respond: {{ status: 200, body: direct }} }}
"#,
        addr = origin.addr()
    );
    let gw = TestGateway::start(&yaml).await;

    let req = get(
        None,
        &gw.url("main", "/e/x"),
        &[
            ("x-internal", "secret"),
            ("x-env", "dev"),
            ("x-env", "test"),
            ("x-multi", "one"),
            ("x-keep", "kept"),
        ],
    );
    let resp = TestClient::http1().request(req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello");
    // Response edits, seen by the client.
    assert_eq!(resp.header("x-powered-by"), None);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("x-served-by"), Some("portcullis"));
    let trace: Vec<_> = resp.headers.get_all("x-trace").iter().collect();
    assert_eq!(trace, ["origin", "gateway"]);
    assert_eq!(resp.header("x-origin"), Some("app"));

    // Request edits, seen by the origin.
    let seen = origin.requests().pop().expect("origin got the request");
    assert_eq!(seen.header("x-internal"), None);
    assert_eq!(seen.header_all("x-env"), ["prod"]);
    assert_eq!(seen.header_all("x-tenant"), ["acme"]);
    assert_eq!(seen.header_all("x-gateway"), ["portcullis"]);
    assert_eq!(seen.header_all("x-multi"), ["one", "two"]);
    assert_eq!(seen.header_all("x-keep"), ["kept"]);

    // Response edits apply to a direct response too.
    let resp = TestClient::http1().get(&gw.url("main", "/d")).await;
    assert_eq!(resp.text(), "direct");
    assert_eq!(resp.header("x-served-by"), Some("portcullis"));
}

// ---------------------------------------------------------------------------------------
// No route

#[tokio::test]
async fn no_route_is_404_with_a_json_reason() {
    let f = Fixture::start(&[(
        "only",
        "match: { hosts: [only.example.com], path: { prefix: /only } }",
    )])
    .await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let resp = client.get(&f.gw.url("main", "/only/x")).await;
        assert_eq!(resp.status, 404, "{:?}", resp.text());
        assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let body = resp.json();
        assert_eq!(body["reason"], "no_route");
        assert_eq!(body["status"], 404);
        assert_eq!(
            body["request_id"].as_str(),
            resp.header("x-request-id"),
            "the body's request id is the header's"
        );
    }
    let resp = exchange(
        f.gw.addr("main"),
        Proto::H1,
        get(Some("only.example.com"), "/only/x", &[]),
    )
    .await;
    assert_eq!(routed_to(&resp, "only").as_deref(), Some("only"));
    assert_eq!(f.origin("only").hits(), 1);
}

/// `/api/../admin` must not be served by the `/api` route: the path is normalised before
/// routing, and the upstream receives the normalised path.
#[tokio::test]
async fn dot_segments_cannot_escape_a_prefix_route() {
    let api = Origin::start_named("api", Behavior::Echo).await;
    let gw = TestGateway::start(&format!(
        r#"
admin: {{ enabled: false }}
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
upstreams: [{{ name: api, endpoints: [{{ address: "{}" }}] }}]
routes:
  - name: api
    match: {{ path: {{ prefix: /api }} }}
    action: {{ proxy: {{ upstream: api }} }}
"#,
        api.addr()
    ))
    .await;
    let addr = gw.addr("main");
    for target in ["/api/../admin", "/api/%2e%2e/admin", "/api/./../admin"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = send_raw(addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            portcullis_test::raw::status_of(&resp),
            Some(404),
            "{target}"
        );
    }
    let raw = b"GET /api/v1/../users?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let resp = send_raw(addr, raw, Duration::from_secs(5)).await;
    assert_eq!(portcullis_test::raw::status_of(&resp), Some(200));
    assert_eq!(api.requests()[0].path_and_query(), "/api/users?x=1");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_respond_route_can_leave_out_the_reason_header() {
    // A route that plays an origin: its answer, proxied elsewhere, must look like an
    // upstream's (no x-portcullis-reason); metrics still count it as a direct response.
    let gw = TestGateway::start(
        "admin: { address: \"127.0.0.1:0\" }\n\
         listeners: [{ name: main, address: \"127.0.0.1:0\" }]\n\
         routes:\n\
         \x20 - { name: plain, match: { path: { exact: /plain } }, action: { respond: { status: 503, headers: { x-demo-origin: \"true\" }, reason_header: false } } }\n\
         \x20 - { name: marked, match: { path: { exact: /marked } }, action: { respond: { reason_header: true } } }\n",
    )
    .await;
    let client = TestClient::http1();
    for (version, client) in [("h1", client.clone()), ("h2", TestClient::http2())] {
        let resp = client.get(&gw.url("main", "/plain")).await;
        assert_eq!(resp.status, 503, "{version}");
        assert_eq!(resp.header("x-demo-origin"), Some("true"), "{version}");
        assert_eq!(resp.header("x-portcullis-reason"), None, "{version}");
        let resp = client.get(&gw.url("main", "/marked")).await;
        assert_eq!(
            resp.header("x-portcullis-reason"),
            Some("direct_response"),
            "{version}"
        );
    }
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("route=\"plain\"")
                && l.contains("reason=\"direct_response\"")),
        "{metrics}"
    );
}
