//! Black-box tests of who may use the admin listener (`docs/admin-api.md#security`): the
//! bearer token on every change and (by default) on reads, `application/json` only for
//! changes, foreign `Origin` and `Host` (DNS rebinding) refused, `Allow` on every 405, the
//! JSON 404, duplicate JSON keys refused, and the token never shown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_test::{Behavior, Origin, TestClient, TestGateway, TestResponse};
use proxying_support::request;

const TOKEN: &str = "t0ken-Value_1234567890";

/// A file holding the admin token, removed on drop.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(contents: &str) -> TokenFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "portcullis-admin-token-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A gateway whose route `all` has a breaker (id `route/all`), with `admin` settings added to
/// the admin section (`auth_token` from a file when `token` is given).
async fn start(origin: &Origin, token: Option<&TokenFile>, admin: &str) -> TestGateway {
    let auth = token
        .map(|t| format!(", auth_token: {{ file: \"{}\" }}", t.0.display()))
        .unwrap_or_default();
    TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\"{auth}{admin} }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n\
         \x20   circuit_breaker: {{ window: {{ calls: 10 }}, min_calls: 10, failure_rate: 50 }}\n\
         routes: [{{ name: all, action: {{ proxy: {{ upstream: app }} }} }}]\n",
        origin.addr()
    ))
    .await
}

/// `method path` on the admin listener with `headers` and `body`.
async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResponse {
    let mut req = request(method, &gw.admin_url(path), body.to_string());
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    TestClient::http1_no_pool().request(req).await
}

const JSON: (&str, &str) = ("content-type", "application/json");
const OPEN: &str = r#"{"state": "open"}"#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Every change the admin API offers, with a body that would make it succeed.
const CHANGES: [(&str, &str, &str); 1] = [("POST", "/api/breakers/route/all/force", OPEN)];

/// Every read endpoint of the API.
const READS: [&str; 5] = [
    "/api/routes",
    "/api/upstreams",
    "/api/breakers",
    "/api/rate_limits",
    "/api/config",
];

/// Asserts a JSON error answer of the admin API.
fn assert_error(resp: &TestResponse, status: u16, kind: &str, what: &str) {
    assert_eq!(resp.status.as_u16(), status, "{what}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(resp.json()["error"], kind, "{what}");
}

/// Whether the breaker of route `all` is forced (as the data plane sees it: 503 when open).
async fn forced(gw: &TestGateway) -> String {
    let resp = send(
        gw,
        "GET",
        "/api/breakers",
        &[("authorization", &bearer(TOKEN))],
        "",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["breakers"][0]["forced"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn release(gw: &TestGateway) {
    let auth = bearer(TOKEN);
    let resp = send(
        gw,
        "POST",
        "/api/breakers/route/all/force",
        &[JSON, ("authorization", &auth)],
        r#"{"state": "none"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn every_change_needs_the_token() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let file = TokenFile::new(&format!("{TOKEN}\n"));
    let gw = start(&origin, Some(&file), "").await;
    let wrong = bearer("t0ken-Value_1234567891");
    let short = bearer("t0ken");
    let basic = format!("Basic {TOKEN}");
    let refused: [(&str, Option<&str>, &str); 5] = [
        ("no token", None, "Bearer realm=\"portcullis-admin\""),
        (
            "wrong token",
            Some(&wrong),
            "Bearer realm=\"portcullis-admin\", error=\"invalid_token\"",
        ),
        (
            "prefix of the token",
            Some(&short),
            "Bearer realm=\"portcullis-admin\", error=\"invalid_token\"",
        ),
        (
            "basic scheme",
            Some(&basic),
            "Bearer realm=\"portcullis-admin\"",
        ),
        (
            "empty bearer",
            Some("Bearer "),
            "Bearer realm=\"portcullis-admin\"",
        ),
    ];
    for (method, path, body) in CHANGES {
        for (what, auth, challenge) in refused {
            let mut headers = vec![JSON];
            if let Some(auth) = auth {
                headers.push(("authorization", auth));
            }
            let resp = send(&gw, method, path, &headers, body).await;
            let what = format!("{method} {path} with {what}");
            assert_error(&resp, 401, "unauthorized", &what);
            assert_eq!(resp.header("www-authenticate"), Some(challenge), "{what}");
            assert_eq!(forced(&gw).await, "none", "{what} changed nothing");
        }
        for auth in [bearer(TOKEN), format!("bearer {TOKEN}")] {
            let resp = send(&gw, method, path, &[JSON, ("authorization", &auth)], body).await;
            assert_eq!(
                resp.status,
                200,
                "{method} {path} with {auth}: {}",
                resp.text()
            );
            assert_eq!(forced(&gw).await, "open");
            release(&gw).await;
        }
    }
}

#[tokio::test]
async fn reads_need_the_token_unless_turned_off_and_probes_only_when_asked() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let file = TokenFile::new(TOKEN);
    let auth = bearer(TOKEN);

    let gw = start(&origin, Some(&file), "").await;
    for path in READS {
        assert_error(
            &send(&gw, "GET", path, &[], "").await,
            401,
            "unauthorized",
            path,
        );
        let resp = send(&gw, "GET", path, &[("authorization", &auth)], "").await;
        assert_eq!(resp.status, 200, "{path}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(send(&gw, "GET", path, &[], "").await.status, 200, "{path}");
    }

    let gw = start(&origin, Some(&file), ", auth_reads: false").await;
    for path in READS {
        assert_eq!(send(&gw, "GET", path, &[], "").await.status, 200, "{path}");
    }
    let (method, path, body) = CHANGES[0];
    let resp = send(&gw, method, path, &[JSON], body).await;
    assert_error(&resp, 401, "unauthorized", "changes still need it");

    let gw = start(&origin, Some(&file), ", auth_health_and_metrics: true").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_error(
            &send(&gw, "GET", path, &[], "").await,
            401,
            "unauthorized",
            path,
        );
        let resp = send(&gw, "GET", path, &[("authorization", &auth)], "").await;
        assert_eq!(resp.status, 200, "{path}");
    }
}

#[tokio::test]
async fn changes_take_only_json_with_or_without_a_token() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let file = TokenFile::new(TOKEN);
    let auth = bearer(TOKEN);
    let with_token = start(&origin, Some(&file), "").await;
    // Loopback without a token (the default): the content type alone keeps a web page out.
    let without = start(&origin, None, "").await;
    let types = [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("application/json-patch+json"),
    ];
    for (gw, token) in [(&with_token, Some(auth.as_str())), (&without, None)] {
        for (method, path, body) in CHANGES {
            for content_type in types {
                let mut headers = Vec::new();
                if let Some(t) = content_type {
                    headers.push(("content-type", t));
                }
                if let Some(token) = token {
                    headers.push(("authorization", token));
                }
                let resp = send(gw, method, path, &headers, body).await;
                let what = format!(
                    "{method} {path} as {content_type:?}, token {}",
                    token.is_some()
                );
                assert_error(&resp, 415, "unsupported_media_type", &what);
            }
            let mut headers = vec![("content-type", "Application/JSON; charset=utf-8")];
            if let Some(token) = token {
                headers.push(("authorization", token));
            }
            let resp = send(gw, method, path, &headers, body).await;
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
    }
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start(&origin, None, "").await;
    let own = format!("http://{}", gw.admin_addr());
    let other_port = format!("http://127.0.0.1:{}", gw.admin_addr().port() ^ 1);
    for foreign in [
        "http://evil.example",
        "null",
        other_port.as_str(),
        "http://localhost",
    ] {
        for (method, path, body) in CHANGES {
            let resp = send(&gw, method, path, &[JSON, ("origin", foreign)], body).await;
            assert_error(&resp, 403, "forbidden", &format!("{path} from {foreign}"));
        }
        for path in READS {
            let resp = send(&gw, "GET", path, &[("origin", foreign)], "").await;
            assert_error(&resp, 403, "forbidden", &format!("{path} from {foreign}"));
        }
    }
    let resp = send(&gw, "GET", "/api/breakers", &[], "").await;
    assert_eq!(resp.json()["breakers"][0]["forced"], "none");
    let (method, path, body) = CHANGES[0];
    let resp = send(&gw, method, path, &[JSON, ("origin", &own)], body).await;
    assert_eq!(resp.status, 200, "same origin: {}", resp.text());
}

#[tokio::test]
async fn foreign_hosts_are_refused_everywhere() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start(&origin, None, ", hosts: [gw-admin.internal]").await;
    let port = gw.admin_addr().port();
    let rebinding = format!("attacker.example:{port}");
    let wrong_port = format!("127.0.0.1:{}", port ^ 1);
    let other_ip = format!("127.0.0.2:{port}");
    let paths: Vec<&str> = READS
        .iter()
        .copied()
        .chain(["/healthz", "/readyz", "/metrics"])
        .collect();
    for host in [
        rebinding.as_str(),
        "attacker.example",
        wrong_port.as_str(),
        other_ip.as_str(),
        "127.0.0.1",
        "",
    ] {
        for (method, path, body) in CHANGES {
            let resp = send(&gw, method, path, &[JSON, ("host", host)], body).await;
            assert_error(
                &resp,
                421,
                "misdirected_request",
                &format!("{path} for {host:?}"),
            );
        }
        for path in &paths {
            let resp = send(&gw, "GET", path, &[("host", host)], "").await;
            assert_error(
                &resp,
                421,
                "misdirected_request",
                &format!("{path} for {host:?}"),
            );
        }
    }
    let localhost = format!("localhost:{port}");
    for host in [
        localhost.as_str(),
        "gw-admin.internal",
        "GW-Admin.internal:8443",
    ] {
        let resp = send(&gw, "GET", "/api/routes", &[("host", host)], "").await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
    }
    let resp = send(&gw, "GET", "/api/breakers", &[], "").await;
    assert_eq!(resp.json()["breakers"][0]["forced"], "none");
}

#[tokio::test]
async fn every_405_carries_allow_and_unknown_paths_get_the_json_404() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start(&origin, None, "").await;
    let mut cases: Vec<(&str, &str)> = READS.iter().map(|p| (*p, "GET, HEAD")).collect();
    cases.extend([
        ("/healthz", "GET, HEAD"),
        ("/readyz", "GET, HEAD"),
        ("/metrics", "GET, HEAD"),
        ("/api/breakers/route/all/force", "POST"),
        ("/api/breakers/route/nope/force", "POST"),
    ]);
    for (path, allow) in cases {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            if allow.split(", ").any(|m| m == method) {
                continue;
            }
            let resp = send(&gw, method, path, &[JSON], "{}").await;
            assert_eq!(resp.status, 405, "{method} {path}");
            assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
            if method != "HEAD" {
                assert_error(
                    &resp,
                    405,
                    "method_not_allowed",
                    &format!("{method} {path}"),
                );
            }
        }
    }
    for path in [
        "/",
        "/nope",
        "/healthz/x",
        "/metrics2",
        "/api",
        "/api/",
        "/api/nope",
        "/api/routes/x",
        "/api/breakers/route/all",
    ] {
        for method in ["GET", "POST"] {
            let resp = send(&gw, method, path, &[JSON], "{}").await;
            assert_error(&resp, 404, "not_found", &format!("{method} {path}"));
        }
    }
}

#[tokio::test]
async fn duplicate_json_keys_are_refused() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = start(&origin, None, "").await;
    for body in [
        r#"{"state": "none", "state": "open"}"#,
        r#"{"state": "open", "state": "open"}"#,
        r#"{"state": "open", "why": {"a": 1, "a": 2}}"#,
    ] {
        let (method, path, _) = CHANGES[0];
        let resp = send(&gw, method, path, &[JSON], body).await;
        assert_error(&resp, 400, "bad_request", body);
        let problem = resp.json()["problems"][0].as_str().unwrap().to_string();
        assert!(
            problem.starts_with("invalid JSON: duplicate key \""),
            "{problem}"
        );
    }
    let resp = send(&gw, "GET", "/api/breakers", &[], "").await;
    assert_eq!(resp.json()["breakers"][0]["forced"], "none");
}

#[tokio::test]
async fn the_token_is_never_shown() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let file = TokenFile::new(TOKEN);
    let gw = start(&origin, Some(&file), "").await;
    let resp = send(
        &gw,
        "GET",
        "/api/config",
        &[("authorization", &bearer(TOKEN))],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(!resp.text().contains(TOKEN), "{}", resp.text());
    let admin = &resp.json()["admin"];
    assert_eq!(admin["auth_token"]["file"], file.0.display().to_string());
    // Refusals do not echo what was sent either.
    let resp = send(
        &gw,
        "GET",
        "/api/config",
        &[("authorization", "Bearer guess-1")],
        "",
    )
    .await;
    assert!(!resp.text().contains("guess-1") && !resp.text().contains(TOKEN));
    assert!(!format!("{:?}", gw.gateway()).contains(TOKEN));
}

#[tokio::test]
async fn an_unreadable_or_empty_token_stops_the_start() {
    let empty = TokenFile::new(" \n");
    for (source, expected) in [
        (
            "{ file: /nonexistent/portcullis-token }".to_string(),
            "admin.auth_token.file: cannot read /nonexistent/portcullis-token",
        ),
        (
            format!("{{ file: \"{}\" }}", empty.0.display()),
            "holds an empty token",
        ),
        (
            "{ env: PORTCULLIS_TEST_SURELY_UNSET_TOKEN }".to_string(),
            "admin.auth_token.env: environment variable \"PORTCULLIS_TEST_SURELY_UNSET_TOKEN\" is not set",
        ),
    ] {
        let config = portcullis_test::gateway::parse_config(
            &format!(
                "admin: {{ address: \"127.0.0.1:0\", auth_token: {source} }}\n\
                 listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n"
            ),
            &Default::default(),
        );
        let err = portcullis::app::Gateway::start(config).await.unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
}
