//! Tests of route compilation and precedence in `find`.

use super::*;

use crate::config::schema::Config;

/// YAML through a JSON value, so enums are written as maps (`action: { proxy: ... }`) whatever
/// the YAML deserializer's own enum convention is.
fn config(yaml: &str) -> Config {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    serde_json::from_value(value).unwrap()
}

fn upstreams(name: &str) -> Option<usize> {
    ["a", "b"].iter().position(|u| *u == name)
}

fn router(yaml: &str) -> Router {
    Router::compile(&config(yaml), &upstreams).unwrap()
}

fn compile_err(yaml: &str) -> String {
    format!(
        "{:#}",
        Router::compile(&config(yaml), &upstreams).unwrap_err()
    )
}

fn req(method: &str, uri: &str, host: Option<&str>) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(h) = host {
        b = b.header(http::header::HOST, h);
    }
    b.body(()).unwrap().into_parts().0
}

/// The name of the route found on listener 0 for `GET uri` with `Host: host`.
fn found(r: &Router, uri: &str, host: Option<&str>) -> Option<String> {
    r.find(0, &req("GET", uri, host))
        .map(|r| r.name.to_string())
}

const LISTENERS: &str = "
listeners:
  - { name: public, address: '0.0.0.0:0' }
  - { name: internal, address: '127.0.0.1:0' }
";

fn with_listeners(routes: &str) -> String {
    format!("{LISTENERS}\nroutes:\n{routes}")
}

#[test]
fn exact_then_wildcard_then_any() {
    let r = router(&with_listeners(
        "
  - { name: any, action: { proxy: { upstream: a } } }
  - { name: wild, match: { hosts: ['*.example.com'] }, action: { proxy: { upstream: a } } }
  - { name: exact, match: { hosts: ['api.example.com'] }, action: { proxy: { upstream: b } } }
",
    ));
    assert_eq!(
        found(&r, "/", Some("api.example.com")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        found(&r, "/", Some("www.example.com")).as_deref(),
        Some("wild")
    );
    assert_eq!(found(&r, "/", Some("example.com")).as_deref(), Some("any"));
    assert_eq!(found(&r, "/", Some("other.org")).as_deref(), Some("any"));
    assert_eq!(found(&r, "/", None).as_deref(), Some("any"));
}

#[test]
fn falls_through_groups_when_path_does_not_match() {
    let r = router(&with_listeners(
        "
  - { name: exact-api, match: { hosts: [api.example.com], path: { prefix: /api } }, action: { proxy: { upstream: a } } }
  - { name: wild-static, match: { hosts: ['*.example.com'], path: { prefix: /static } }, action: { proxy: { upstream: a } } }
  - { name: any, action: { proxy: { upstream: b } } }
",
    ));
    assert_eq!(
        found(&r, "/api/x", Some("api.example.com")).as_deref(),
        Some("exact-api")
    );
    assert_eq!(
        found(&r, "/static/x", Some("api.example.com")).as_deref(),
        Some("wild-static")
    );
    assert_eq!(
        found(&r, "/other", Some("api.example.com")).as_deref(),
        Some("any")
    );
}

#[test]
fn config_order_within_a_group() {
    let r = router(&with_listeners(
        "
  - { name: first, match: { hosts: [a.com], path: { prefix: /x } }, action: { proxy: { upstream: a } } }
  - { name: second, match: { hosts: [a.com] }, action: { proxy: { upstream: a } } }
  - { name: third, match: { hosts: [a.com], path: { prefix: /x/y } }, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(found(&r, "/x/y", Some("a.com")).as_deref(), Some("first"));
    assert_eq!(found(&r, "/z", Some("a.com")).as_deref(), Some("second"));
}

#[test]
fn wildcards_longest_suffix_first_and_any_depth() {
    let r = router(&with_listeners(
        "
  - { name: short, match: { hosts: ['*.com'] }, action: { proxy: { upstream: a } } }
  - { name: mid, match: { hosts: ['*.example.com'] }, action: { proxy: { upstream: a } } }
  - { name: long, match: { hosts: ['*.b.example.com'], path: { exact: /only } }, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(
        found(&r, "/only", Some("x.b.example.com")).as_deref(),
        Some("long")
    );
    assert_eq!(
        found(&r, "/other", Some("x.b.example.com")).as_deref(),
        Some("mid")
    );
    assert_eq!(
        found(&r, "/", Some("a.b.example.com")).as_deref(),
        Some("mid")
    );
    assert_eq!(
        found(&r, "/only", Some("b.example.com")).as_deref(),
        Some("mid")
    );
    assert_eq!(
        found(&r, "/", Some("example.com")).as_deref(),
        Some("short")
    );
    assert_eq!(found(&r, "/", Some("com")), None);
    assert_eq!(found(&r, "/", Some("example.org")), None);
}

#[test]
fn exact_host_also_gets_matching_wildcards() {
    let r = router(&with_listeners(
        "
  - { name: exact, match: { hosts: [a.example.com], methods: [POST] }, action: { proxy: { upstream: a } } }
  - { name: both, match: { hosts: ['*.example.com', a.example.com], methods: [PUT] }, action: { proxy: { upstream: a } } }
  - { name: wild, match: { hosts: ['*.example.com'] }, action: { proxy: { upstream: a } } }
",
    ));
    let find = |m: &str| {
        r.find(0, &req(m, "/", Some("a.example.com")))
            .map(|r| r.name.to_string())
    };
    assert_eq!(find("POST").as_deref(), Some("exact"));
    assert_eq!(find("PUT").as_deref(), Some("both"));
    assert_eq!(find("GET").as_deref(), Some("wild"));
    // A route listed under an exact host and a wildcard appears once in the candidates.
    let table = &r.tables[0];
    assert_eq!(table.hosted("a.example.com"), &[0, 1, 2]);
    assert_eq!(table.hosted("z.example.com"), &[1, 2]);
}

#[test]
fn host_case_port_and_trailing_dot_are_ignored() {
    let r = router(&with_listeners(
        "
  - { name: exact, match: { hosts: [API.Example.com] }, action: { proxy: { upstream: a } } }
  - { name: wild, match: { hosts: ['*.Example.com'] }, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(
        found(&r, "/", Some("api.EXAMPLE.com:8080")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        found(&r, "/", Some("api.example.com.")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        found(&r, "/", Some("X.example.COM:443")).as_deref(),
        Some("wild")
    );
}

#[test]
fn ipv6_hosts() {
    let r = router(&with_listeners(
        "
  - { name: v6, match: { hosts: ['::1'] }, action: { proxy: { upstream: a } } }
  - { name: v6b, match: { hosts: ['[2001:db8::1]'] }, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(found(&r, "/", Some("[::1]:8080")).as_deref(), Some("v6"));
    assert_eq!(found(&r, "/", Some("[::1]")).as_deref(), Some("v6"));
    assert_eq!(
        found(&r, "/", Some("[2001:DB8::1]:443")).as_deref(),
        Some("v6b")
    );
    assert_eq!(found(&r, "/", Some("[::2]")), None);
}

#[test]
fn h2_authority_is_the_host() {
    let r = router(&with_listeners(
        "
  - { name: h2, match: { hosts: [grpc.example.com] }, action: { proxy: { upstream: a } } }
  - { name: any, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(
        found(&r, "https://grpc.example.com:8443/svc/Method", None).as_deref(),
        Some("h2")
    );
    assert_eq!(
        found(
            &r,
            "https://other.example.com/svc/Method",
            Some("grpc.example.com")
        )
        .as_deref(),
        Some("any")
    );
}

#[test]
fn listener_scoping() {
    let r = router(&with_listeners(
        "
  - { name: internal-only, listeners: [internal], match: { path: { prefix: /admin } }, action: { proxy: { upstream: a } } }
  - { name: everywhere, action: { proxy: { upstream: b } } }
",
    ));
    let on = |l: usize| {
        r.find(l, &req("GET", "/admin/x", Some("a.com")))
            .map(|r| r.name.to_string())
    };
    assert_eq!(on(0).as_deref(), Some("everywhere"));
    assert_eq!(on(1).as_deref(), Some("internal-only"));
    assert_eq!(on(2), None, "unknown listener");
}

#[test]
fn methods_headers_and_query_all_apply() {
    let r = router(&with_listeners(
        "
  - name: canary
    match:
      path: { prefix: /api }
      methods: [GET]
      headers: [{ name: x-canary, present: true }]
      query: [{ name: v, exact: '2 beta' }]
    action: { proxy: { upstream: b } }
  - { name: any, action: { proxy: { upstream: a } } }
",
    ));
    let mut p = req("GET", "/api/x?v=2%20beta", Some("a.com"));
    p.headers.insert("x-canary", HeaderValue::from_static("1"));
    assert_eq!(r.find(0, &p).map(|r| &*r.name), Some("canary"));
    p.method = http::Method::POST;
    assert_eq!(r.find(0, &p).map(|r| &*r.name), Some("any"));
    let p = req("GET", "/api/x?v=2%20beta", Some("a.com"));
    assert_eq!(r.find(0, &p).map(|r| &*r.name), Some("any"));
}

#[test]
fn no_route_is_none() {
    let r = router(&with_listeners(
        "
  - { name: api, match: { path: { exact: /api } }, action: { proxy: { upstream: a } } }
",
    ));
    assert_eq!(found(&r, "/other", Some("a.com")), None);
    assert!(Router::default().find(0, &req("GET", "/", None)).is_none());
}

#[test]
fn route_fields_are_compiled() {
    let r = router(&with_listeners(
        "
  - name: full
    match: { path: { prefix: /api } }
    action: { proxy: { upstream: b } }
    rewrite: strip_prefix
    host_header: { rewrite: internal.example.com }
    request_headers: { set: { x-a: '1' } }
    response_headers: { remove: [server] }
    max_request_body: 1 KiB
    timeout: 5s
  - name: respond
    action: { respond: { status: 418, headers: { X-Teapot: 'yes' }, body: short and stout } }
  - name: redirect
    action: { redirect: { scheme: https, status: 308 } }
  - name: bare
    action: { proxy: { upstream: a } }
",
    ));
    let routes: Vec<_> = r.routes().collect();
    let full = routes[0];
    assert_eq!(&*full.name, "full");
    assert!(matches!(full.action, Action::Proxy { upstream: 1 }));
    assert!(matches!(
        full.policies.as_slice(),
        [
            Policy::Rewrite(_),
            Policy::RequestHeaders(_),
            Policy::ResponseHeaders(_)
        ]
    ));
    assert_eq!(
        full.host_header,
        HostHeader::Rewrite("internal.example.com".into())
    );
    assert_eq!(full.max_request_body, 1024);
    assert_eq!(full.timeout, Duration::from_secs(5));

    match &routes[1].action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            assert_eq!(*status, StatusCode::IM_A_TEAPOT);
            assert_eq!(headers["x-teapot"], "yes");
            assert_eq!(body.as_ref(), b"short and stout");
        }
        other => panic!("unexpected {other:?}"),
    }
    match &routes[2].action {
        Action::Redirect(rd) => {
            assert_eq!(rd.status, StatusCode::PERMANENT_REDIRECT);
            assert_eq!(rd.scheme.as_deref(), Some("https"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let bare = routes[3];
    assert!(bare.policies.is_empty());
    assert_eq!(bare.host_header, HostHeader::PassThrough);
    assert_eq!(bare.max_request_body, 10 * 1024 * 1024);
    assert_eq!(bare.timeout, Duration::from_secs(30));
}

#[test]
fn compile_errors_name_the_route() {
    let cases = [
        ("  - { name: r1, action: { proxy: { upstream: nope } } }", "unknown upstream"),
        (
            "  - { name: r1, listeners: [nope], action: { proxy: { upstream: a } } }",
            "unknown listener",
        ),
        (
            "  - { name: r1, match: { hosts: ['a.*.com'] }, action: { proxy: { upstream: a } } }",
            "wildcard",
        ),
        (
            "  - { name: r1, match: { hosts: ['a.com:80'] }, action: { proxy: { upstream: a } } }",
            "invalid host",
        ),
        (
            "  - { name: r1, match: { path: { regex: '(' } }, action: { proxy: { upstream: a } } }",
            "invalid regex",
        ),
        (
            "  - { name: r1, rewrite: strip_prefix, action: { proxy: { upstream: a } } }",
            "prefix",
        ),
        (
            "  - { name: r1, action: { respond: { status: 99 } } }",
            "invalid status",
        ),
        (
            "  - { name: r1, action: { respond: { headers: { 'a b': x } } } }",
            "invalid header name",
        ),
        (
            "  - { name: r1, action: { redirect: { status: 200 } } }",
            "3xx",
        ),
        (
            "  - { name: r1, request_headers: { set: { 'a b': x } }, action: { proxy: { upstream: a } } }",
            "request_headers",
        ),
        (
            "  - { name: r1, host_header: { rewrite: \"a\\nb\" }, action: { proxy: { upstream: a } } }",
            "host_header",
        ),
    ];
    for (routes, want) in cases {
        let err = compile_err(&with_listeners(routes));
        assert!(err.contains("route \"r1\""), "{err}");
        assert!(err.contains(want), "{err} should mention {want}");
    }
}

#[test]
fn request_host_borrows_lower_case() {
    let p = req("GET", "/", Some("example.com:8080"));
    assert!(matches!(
        request_host(&p),
        Some(Cow::Borrowed("example.com"))
    ));
    assert_eq!(request_port(&p), Some(8080));
    let p = req("GET", "/", Some("Example.com"));
    assert_eq!(request_host(&p).as_deref(), Some("example.com"));
    assert_eq!(request_port(&p), None);
}
