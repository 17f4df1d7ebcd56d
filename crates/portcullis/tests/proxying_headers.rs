//! Black-box tests of the headers the gateway owns at the proxy boundary: hop-by-hop removal
//! both ways, `X-Forwarded-*` from untrusted and trusted peers, `x-request-id`, and the
//! `host_header` modes.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::net::SocketAddr;

use http::Request;
use portcullis_test::{Behavior, Origin, TestClient, TestGateway};
use proxying_support::{bounded, Setup};

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_origin() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        let resp = TestClient::http1()
            .request(
                Request::get(gw.url("main", "/hop"))
                    .header("connection", "keep-alive, x-hop")
                    .header("x-hop", "secret")
                    .header("keep-alive", "timeout=5")
                    .header("proxy-connection", "keep-alive")
                    .header("te", "gzip")
                    .header("upgrade", "foo") // no `Connection: upgrade`: not an upgrade
                    .header("x-kept", "yes")
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status, 200);
        let seen = &origin.requests()[0];
        for name in [
            "connection",
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
        ] {
            assert!(seen.header(name).is_none(), "{name} reached the origin");
        }
        assert_eq!(seen.header("x-kept"), Some("yes"));
    })
    .await;
}

#[tokio::test]
async fn te_trailers_is_the_only_te_that_reaches_the_origin() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        TestClient::http1()
            .request(
                Request::get(gw.url("main", "/te"))
                    .header("te", "gzip, trailers")
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(origin.requests()[0].header_all("te"), ["trailers"]);
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    bounded(async {
        let headers = [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "foo"),
            ("x-kept", "yes"),
        ];
        let origin = Origin::start(Behavior::Fixed {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: "ok".into(),
        })
        .await;
        let gw = Setup::new(origin.addr()).start().await;
        for client in [TestClient::http1(), TestClient::http2()] {
            let resp = client.get(&gw.url("main", "/hop")).await;
            assert_eq!(resp.status, 200);
            assert_eq!(resp.text(), "ok");
            for (name, _) in &headers[..5] {
                assert!(resp.header(name).is_none(), "{name} reached the client");
            }
            assert_eq!(resp.header("x-kept"), Some("yes"));
        }
    })
    .await;
}

fn forwarded_request(url: &str, spoofed: bool) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut builder = Request::get(url).header("host", "api.example.test");
    if spoofed {
        builder = builder
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example");
    }
    builder.body(Default::default()).unwrap()
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        let client = TestClient::http1();
        for spoofed in [true, false] {
            origin.clear_requests();
            client
                .request(forwarded_request(&gw.url("main", "/f"), spoofed))
                .await;
            let seen = &origin.requests()[0];
            assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
            assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
            assert_eq!(seen.header_all("x-forwarded-host"), ["api.example.test"]);
        }
    })
    .await;
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_peer_are_kept_and_appended() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr())
            .listener(r#"trusted_proxies: ["127.0.0.0/8"]"#)
            .start()
            .await;
        let client = TestClient::http1();
        client
            .request(forwarded_request(&gw.url("main", "/f"), true))
            .await;
        let seen = &origin.requests()[0];
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            ["203.0.113.7, 127.0.0.1"]
        );
        assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
        assert_eq!(seen.header_all("x-forwarded-host"), ["evil.example"]);

        // Nothing to keep: the trusted peer's own values are set.
        client
            .request(forwarded_request(&gw.url("main", "/f"), false))
            .await;
        let seen = &origin.requests()[1];
        assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
        assert_eq!(seen.header_all("x-forwarded-host"), ["api.example.test"]);
    })
    .await;
}

fn with_request_id(url: &str, id: Option<&str>) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut builder = Request::get(url);
    if let Some(id) = id {
        builder = builder.header("x-request-id", id);
    }
    builder.body(Default::default()).unwrap()
}

fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_shared_with_the_origin() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        let mut ids = Vec::new();
        for client in [TestClient::http1(), TestClient::http2()] {
            let resp = client
                .request(with_request_id(&gw.url("main", "/id"), None))
                .await;
            let id = resp.header("x-request-id").unwrap().to_owned();
            assert!(is_uuid_v4(&id), "{id}");
            assert_eq!(
                origin.requests().last().unwrap().header_all("x-request-id"),
                [id.as_str()]
            );
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
    })
    .await;
}

#[tokio::test]
async fn sane_request_id_is_kept_and_insane_ones_are_replaced() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        let client = TestClient::http1();
        let resp = client
            .request(with_request_id(
                &gw.url("main", "/id"),
                Some("client-id_42.x"),
            ))
            .await;
        assert_eq!(resp.header("x-request-id"), Some("client-id_42.x"));
        assert_eq!(
            origin.requests().last().unwrap().header_all("x-request-id"),
            ["client-id_42.x"]
        );

        let too_long = "a".repeat(129);
        for insane in ["has space", "", too_long.as_str()] {
            let resp = client
                .request(with_request_id(&gw.url("main", "/id"), Some(insane)))
                .await;
            let id = resp.header("x-request-id").unwrap().to_owned();
            assert!(is_uuid_v4(&id), "{insane:?} became {id:?}");
            assert_eq!(
                origin.requests().last().unwrap().header_all("x-request-id"),
                [id.as_str()]
            );
        }
    })
    .await;
}

async fn host_header_gateway(origin: SocketAddr, h2_upstream: bool) -> TestGateway {
    let protocol = if h2_upstream { "http2" } else { "http1" };
    let route = |name: &str, mode: &str| {
        format!(
            "  - name: {name}\n    match: {{ path: {{ prefix: /{name} }} }}\n    \
             host_header: {mode}\n    action: {{ proxy: {{ upstream: app }} }}\n"
        )
    };
    let yaml = format!(
        "admin: {{ enabled: false }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n\
         upstreams:\n  - name: app\n    protocol: {protocol}\n    \
         endpoints: [{{ address: \"{origin}\" }}]\n\
         routes:\n{}{}{}",
        route("pass", "pass_through"),
        route("endpoint", "endpoint"),
        route("rewrite", "{ rewrite: internal.example }"),
    );
    portcullis_test::init_tracing();
    TestGateway::start(&yaml).await
}

/// The host the origin saw: `Host` over HTTP/1.1; over HTTP/2 `:authority` (a `Host` field,
/// if any, must agree with it).
fn host_seen(origin: &Origin) -> String {
    let seen = origin.requests().pop().unwrap();
    let authority = seen.uri.authority().map(|a| a.as_str().to_owned());
    match (seen.header("host"), authority) {
        (Some(host), Some(authority)) => {
            assert_eq!(host, authority, "host and :authority disagree");
            host.to_owned()
        }
        (Some(host), None) => host.to_owned(),
        (None, Some(authority)) => authority,
        (None, None) => panic!("origin saw no host at all"),
    }
}

async fn assert_host_header_modes(h2_upstream: bool) {
    let origin = Origin::start(Behavior::Echo).await;
    let gw = host_header_gateway(origin.addr(), h2_upstream).await;
    let client = TestClient::http1();
    let get = |path: &str| {
        Request::get(gw.url("main", path))
            .header("host", "api.example.test")
            .body(Default::default())
            .unwrap()
    };
    let cases = [
        ("/pass/x", "api.example.test".to_owned()),
        ("/endpoint/x", origin.addr().to_string()),
        ("/rewrite/x", "internal.example".to_owned()),
    ];
    for (path, want) in cases {
        let resp = client.request(get(path)).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(
            host_seen(&origin),
            want,
            "{path}, h2 upstream: {h2_upstream}"
        );
        // The client's host is kept for the origin in X-Forwarded-Host.
        assert_eq!(
            origin.requests().pop().unwrap().header("x-forwarded-host"),
            Some("api.example.test")
        );
    }
}

#[tokio::test]
async fn host_header_modes_set_the_host_an_h1_upstream_sees() {
    bounded(assert_host_header_modes(false)).await;
}

#[tokio::test]
async fn host_header_modes_set_the_host_an_h2_upstream_sees() {
    bounded(assert_host_header_modes(true)).await;
}

#[tokio::test]
async fn pass_through_host_from_an_h2_client_is_its_authority() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = host_header_gateway(origin.addr(), false).await;
        let resp = TestClient::http2().get(&gw.url("main", "/pass/x")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(host_seen(&origin), gw.addr("main").to_string());
    })
    .await;
}

#[tokio::test]
async fn connection_cannot_nominate_away_the_headers_the_gateway_manages() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr())
            .route("deadline: { header: x-deadline-ms }")
            .start()
            .await;
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // Each managed header, sent by the client and nominated in `Connection`; `None`: the
        // client does not send it (the gateway sets it).
        let cases: [(&str, Option<&str>); 8] = [
            ("x-request-id", Some("abc-123")),
            ("x-forwarded-for", None),
            ("x-forwarded-proto", None),
            ("x-forwarded-host", None),
            ("traceparent", Some(traceparent)),
            ("tracestate", Some("vendor=1")),
            ("grpc-timeout", Some("5S")),
            ("x-deadline-ms", Some("5000")),
        ];
        let mut lost = Vec::new();
        for (i, (name, sent)) in cases.iter().enumerate() {
            let mut req = Request::get(gw.url("main", &format!("/managed/{i}")))
                .header("connection", format!("close, {name}"));
            if let Some(value) = sent {
                req = req.header(*name, *value);
            }
            let resp = TestClient::http1_no_pool()
                .request(req.body(Default::default()).unwrap())
                .await;
            assert_eq!(resp.status, 200, "{name}: {}", resp.text());
            let seen = origin
                .requests()
                .into_iter()
                .find(|r| r.path_and_query() == format!("/managed/{i}"))
                .unwrap();
            let ok = match (*name, seen.header(name)) {
                (_, None) => false,
                ("x-request-id", Some(v)) => v == "abc-123" && resp.header(name) == Some(v),
                ("traceparent" | "tracestate", Some(v)) => Some(v) == *sent,
                (_, Some(v)) => !v.is_empty(),
            };
            if !ok {
                lost.push(format!("{name}: origin saw {:?}", seen.header(name)));
            }
        }
        assert!(lost.is_empty(), "{lost:#?}");
    })
    .await;
}

#[tokio::test]
async fn cookie_crumbs_from_an_http2_client_reach_an_http1_upstream_as_one_cookie() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        let gw = Setup::new(origin.addr()).start().await;
        let cases: [(&str, &[&str], &str); 3] = [
            ("/crumbs", &["a=1", "b=2", "c=3"], "a=1; b=2; c=3"),
            (
                "/two",
                &["session=x; theme=dark", "lang=en"],
                "session=x; theme=dark; lang=en",
            ),
            ("/single", &["a=1; b=2"], "a=1; b=2"),
        ];
        for (path, cookies, joined) in cases {
            let mut req = Request::get(gw.url("main", path));
            for cookie in cookies {
                req = req.header("cookie", *cookie);
            }
            let resp = TestClient::http2()
                .request(req.body(Default::default()).unwrap())
                .await;
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            let seen = origin
                .requests()
                .into_iter()
                .find(|r| r.path_and_query() == path)
                .unwrap();
            assert_eq!(seen.version, http::Version::HTTP_11, "{path}");
            assert_eq!(seen.header_all("cookie"), [joined], "{path}");
        }
    })
    .await;
}
