//! Route matching on any request head, through what the request path does with it: path
//! normalisation, `Router::find` on each listener, the route's request and response
//! policies (rewrite, header edits) and a redirect's `Location`. Never panics; the host is
//! matched ignoring ASCII case.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config;
use portcullis::policy::ratelimit::Registry;
use portcullis::policy::Flow;
use portcullis::proxy::path::normalize;
use portcullis::router::Action;
use portcullis::runtime::Runtime;
use portcullis_fuzz::{head, lines};

/// Routes of every kind of match, on two listeners.
const CONFIG: &str = r#"
listeners:
  - { name: public, address: "127.0.0.1:0" }
  - { name: internal, address: "127.0.0.1:0" }
upstreams:
  - { name: a, endpoints: [{ address: "127.0.0.1:1" }] }
  - { name: b, endpoints: [{ address: "127.0.0.1:2" }] }
routes:
  - name: exact-host
    match: { hosts: [api.example.com, 127.0.0.1], path: { prefix: /v1 } }
    rewrite: strip_prefix
    request_headers: { set: { x-route: exact }, add: { x-added: "1" }, remove: [cookie] }
    action: { proxy: { upstream: a } }
  - name: wildcard
    match: { hosts: ["*.example.com", "*.b.example.com"], path: { prefix: /api/ } }
    rewrite: { replace_prefix: /internal }
    response_headers: { remove: [server], set: { x-frame-options: DENY } }
    action: { proxy: { upstream: b } }
  - name: regex
    match: { path: { regex: "/users/([0-9]+)/(profile|posts)" }, methods: [GET, HEAD] }
    rewrite: { regex: { pattern: "^/users/([0-9]+)/(.*)$", replacement: "/u/$1/$2" } }
    action: { proxy: { upstream: a } }
  - name: headers-and-query
    listeners: [internal]
    match:
      path: { exact: /search }
      headers: [{ name: x-canary, present: true }, { name: x-tenant, regex: "t[0-9]+" }]
      query: [{ name: q, present: true }, { name: v, exact: "2 beta" }]
    action: { proxy: { upstream: b } }
  - name: redirect
    match: { path: { prefix: /old } }
    action: { redirect: { scheme: https, status: 308 } }
  - name: redirect-path
    match: { path: { exact: /docs }, hosts: ["*.example.org"] }
    action: { redirect: { path: "/api/users?from=docs", port: 8443 } }
  - name: respond
    match: { path: { exact: /healthz } }
    action: { respond: { status: 200, body: ok } }
  - name: fallback
    action: { respond: { status: 404 } }
"#;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let config = match config::from_str_with(CONFIG, &|_| None) {
            Ok(config) => config,
            Err(e) => panic!("the fuzz config is refused: {e}"),
        };
        match Runtime::compile(&config, &Registry::new()) {
            Ok(runtime) => runtime,
            Err(e) => panic!("the fuzz config does not compile: {e:#}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(mut req) = head(lines(data)) else {
        return;
    };
    let runtime = runtime();
    normalize(&mut req.uri);

    for listener in 0..3 {
        let found = runtime.router.find(listener, &req).map(|r| r.id);

        // The host compares ignoring ASCII case.
        if let Some(host) = req.headers.get(http::header::HOST) {
            let upper = host.as_bytes().to_ascii_uppercase();
            if let Ok(upper) = http::HeaderValue::from_bytes(&upper) {
                let mut shouted = req.clone();
                shouted.headers.insert(http::header::HOST, upper);
                let again = runtime.router.find(listener, &shouted).map(|r| r.id);
                assert_eq!(found, again, "host case changed the route");
            }
        }

        let Some(route) = found.and_then(|id| runtime.router.route(id)) else {
            continue;
        };
        let mut forwarded = req.clone();
        for policy in &route.policies {
            if let Flow::Respond(_) = policy.on_request(&mut forwarded) {
                break;
            }
        }
        let (mut resp, ()) = http::Response::new(()).into_parts();
        for policy in &route.policies {
            policy.on_response(&mut resp);
        }
        if let Action::Redirect(redirect) = &route.action {
            let _ = redirect.location(&req, "http");
        }
    }
});
