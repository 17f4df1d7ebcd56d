//! Tests of `validate`: exact messages with paths, and many problems reported together.

use super::*;
use crate::config::schema::StatusRange;

/// The validation problems of a YAML config that parses.
pub(super) fn problems(yaml: &str) -> Vec<String> {
    let config = crate::config::parse(yaml).unwrap_or_else(|e| panic!("does not parse: {e}"));
    validate(&config).iter().map(ToString::to_string).collect()
}

const BASE: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  - name: api
    endpoints:
      - address: 127.0.0.1:9000
routes:
  - name: api
    match:
      path: { prefix: /api }
    action:
      proxy: { upstream: api }
"#;

pub(super) fn assert_problems(yaml: &str, expected: &[&str]) {
    assert_eq!(problems(yaml), expected, "config:\n{yaml}");
}

#[test]
fn valid_config_has_no_problems() {
    assert_problems(BASE, &[]);
}

#[test]
fn no_listeners() {
    assert_problems(
        "routes: []",
        &["listeners: at least one listener is required"],
    );
}

#[test]
fn duplicate_names_point_at_the_first() {
    let yaml = r#"
listeners:
  - { name: a, address: 127.0.0.1:8080 }
  - { name: a, address: 127.0.0.1:8081 }
upstreams:
  - { name: u, endpoints: [{ address: "h:1" }] }
  - { name: u, endpoints: [{ address: "h:1" }] }
routes:
  - { name: x, action: { respond: {} } }
  - { name: api, action: { respond: {} } }
  - { name: y, action: { respond: {} } }
  - { name: api, action: { respond: {} } }
  - { name: "", action: { respond: {} } }
"#;
    assert_problems(
        yaml,
        &[
            "listeners[1].name: duplicate listener name \"a\" (also listeners[0])",
            "upstreams[1].name: duplicate upstream name \"u\" (also upstreams[0])",
            "routes[3].name: duplicate route name \"api\" (also routes[1])",
            "routes[4].name: must not be empty",
        ],
    );
}

#[test]
fn listener_and_admin_addresses() {
    let yaml = r#"
admin: { address: "127.0.0.1:8081" }
listeners:
  - { name: a, address: "127.0.0.1:8080" }
  - { name: b, address: "localhost:80" }
  - { name: c, address: "127.0.0.1:8080" }
  - { name: d, address: "0.0.0.0:8081" }
  - { name: e, address: "127.0.0.1:0" }
  - { name: f, address: "127.0.0.1:0" }
"#;
    assert_problems(
        yaml,
        &[
            "listeners[1].address: \"localhost:80\" is not an ip:port address (e.g. 0.0.0.0:8080 or [::]:8080)",
            "listeners[2].address: address 127.0.0.1:8080 is already used by listeners[0]",
            "admin.address: address 127.0.0.1:8081 overlaps listeners[3] (0.0.0.0:8081)",
        ],
    );
}

#[test]
fn disabled_admin_is_not_checked() {
    let yaml = BASE.replace(
        "listeners:",
        "admin: { enabled: false, address: \"127.0.0.1:8080\" }\nlisteners:",
    );
    assert_problems(&yaml, &[]);
}

#[test]
fn listener_limits() {
    let yaml = r#"
listeners:
  - name: a
    address: 127.0.0.1:8080
    limits:
      max_connections: 0
      max_headers: 0
      max_header_bytes: 512B
      h2_max_concurrent_streams: 0
      header_read_timeout: 0s
      keepalive_timeout: 0s
"#;
    assert_problems(
        yaml,
        &[
            "listeners[0].limits.max_connections: must be at least 1, got 0",
            "listeners[0].limits.max_headers: must be at least 1, got 0",
            "listeners[0].limits.max_header_bytes: must be at least 1KiB (1024 bytes), got 512 bytes",
            "listeners[0].limits.h2_max_concurrent_streams: must be at least 1, got 0",
            "listeners[0].limits.header_read_timeout: must be greater than 0",
            "listeners[0].limits.keepalive_timeout: must be greater than 0",
        ],
    );
}

#[test]
fn listener_line_limits() {
    let yaml = r#"
listeners:
  - name: a
    address: 127.0.0.1:8080
    limits: { max_request_line_bytes: 255B, max_header_line_bytes: 2MiB }
  - name: b
    address: 127.0.0.1:8081
    limits:
      max_request_line_bytes: 256B
      max_header_line_bytes: 1MiB
      max_header_bytes: 1KiB
      underscore_headers: reject
"#;
    assert_problems(
        yaml,
        &[
            "listeners[0].limits.max_request_line_bytes: must be from 256B to 1MiB, got 255 bytes",
            "listeners[0].limits.max_header_line_bytes: must be from 256B to 1MiB, got 2097152 bytes",
        ],
    );
}

#[test]
fn upstream_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: empty
    endpoints: []
  - name: bad
    endpoints:
      - { address: "10.0.0.1" }
      - { address: "http://x:80" }
      - { address: "[::1]:0" }
      - { address: "api.internal:8080", weight: 0 }
      - { address: "[::1]:8080", weight: 1001 }
    load_balancer: { policy: consistent_hash }
    pool: { connect_timeout: 0s }
  - name: key
    endpoints: [{ address: "h:1" }]
    load_balancer: { hash_key: client_ip }
  - name: badkey
    endpoints: [{ address: "h:1" }]
    load_balancer: { policy: consistent_hash, hash_key: { header: "a b" } }
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].endpoints: at least one endpoint is required",
            "upstreams[1].endpoints[0].address: \"10.0.0.1\" must be host:port (e.g. 10.0.0.1:8080, [::1]:8080 or api.internal:80)",
            "upstreams[1].endpoints[1].address: \"http://x:80\" must be host:port (e.g. 10.0.0.1:8080, [::1]:8080 or api.internal:80)",
            "upstreams[1].endpoints[2].address: \"[::1]:0\": port 0 is out of range 1–65535",
            "upstreams[1].endpoints[3].weight: must be between 1 and 1000, got 0",
            "upstreams[1].endpoints[4].weight: must be between 1 and 1000, got 1001",
            "upstreams[1].load_balancer.hash_key: required when policy is consistent_hash",
            "upstreams[1].pool.connect_timeout: must be greater than 0",
            "upstreams[2].load_balancer.hash_key: only used by policy consistent_hash, but policy is round_robin",
            "upstreams[3].load_balancer.hash_key.header: \"a b\" is not a valid header name",
        ],
    );
}

#[test]
fn health_check_problems() {
    let yaml = r#"
listeners: [{ name: a, address: "127.0.0.1:8080" }]
upstreams:
  - name: u
    endpoints: [{ address: "h:1" }]
    health_check:
      path: healthz
      interval: 1s
      timeout: 2s
      healthy_threshold: 0
      unhealthy_threshold: 0
      expected_statuses: [200, 700, "300-200", "2xx", "200-299"]
"#;
    assert_problems(
        yaml,
        &[
            "upstreams[0].health_check.path: \"healthz\" must start with '/'",
            "upstreams[0].health_check.timeout: 2s must not exceed interval (1s)",
            "upstreams[0].health_check.healthy_threshold: must be at least 1, got 0",
            "upstreams[0].health_check.unhealthy_threshold: must be at least 1, got 0",
            "upstreams[0].health_check.expected_statuses[1]: status 700 is outside 100..=599",
            "upstreams[0].health_check.expected_statuses[2]: range \"300-200\" is empty: 300 is greater than 200",
            "upstreams[0].health_check.expected_statuses[3]: \"2xx\" is not a status code or a range like \"200-399\"",
        ],
    );
}

#[test]
fn status_range_values() {
    assert_eq!(status_range(&StatusRange::Code(204)), Ok((204, 204)));
    assert_eq!(
        status_range(&StatusRange::Range("200-399".into())),
        Ok((200, 399))
    );
    assert_eq!(
        status_range(&StatusRange::Range("500-500".into())),
        Ok((500, 500))
    );
}

#[test]
fn route_references() {
    let yaml = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
upstreams: [{ name: api, endpoints: [{ address: "h:1" }] }]
routes:
  - { name: a, action: { proxy: { upstream: api } } }
  - { name: b, listeners: [public, internal], action: { proxy: { upstream: api } } }
  - { name: c, action: { proxy: { upstream: billing } } }
"#;
    assert_problems(
        yaml,
        &[
            "routes[1].listeners[1]: unknown listener \"internal\"",
            "routes[2].action.proxy.upstream: unknown upstream \"billing\"",
        ],
    );
}

#[test]
fn route_matchers() {
    let yaml = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
routes:
  - name: m
    match:
      hosts: ["api.example.com", "*.example.com", "a.com:80", "a b.com", "*", "x.*.com", "", "API.example.com"]
      path: { exact: "no-slash" }
      methods: [GET, get, "GE T", ""]
      headers:
        - { name: "x-a", exact: "1" }
        - { name: "bad name", present: true }
        - { name: "x-b" }
        - { name: "x-c", exact: "1", regex: "a" }
        - { name: "x-d", regex: "(" }
        - { name: "x-e", exact: "a\nb" }
      query:
        - { name: "", present: false }
        - { name: "q", regex: "[z-a]" }
    action: { respond: {} }
  - name: p
    match: { path: { prefix: "api" } }
    action: { respond: {} }
  - name: r
    match: { path: { regex: "/(a" } }
    action: { respond: {} }
"#;
    assert_problems(
        yaml,
        &[
            "routes[0].match.hosts[2]: \"a.com:80\" must be a host name without a port (routes match on the name only)",
            "routes[0].match.hosts[3]: \"a b.com\" is not a valid host name (letters, digits, '-', '_' and dots; no spaces)",
            "routes[0].match.hosts[4]: \"*\": a wildcard is only allowed as a leading \"*.\" (e.g. \"*.example.com\")",
            "routes[0].match.hosts[5]: \"x.*.com\": a wildcard is only allowed as a leading \"*.\" (e.g. \"*.example.com\")",
            "routes[0].match.hosts[6]: \"\" is not a valid host name (letters, digits, '-', '_' and dots; no spaces)",
            "routes[0].match.hosts[7]: \"API.example.com\" must be lower case (\"api.example.com\")",
            "routes[0].match.path.exact: \"no-slash\" must start with '/'",
            "routes[0].match.methods[1]: \"get\" must be upper case (\"GET\"); methods are case-sensitive",
            "routes[0].match.methods[2]: \"GE T\" is not a valid HTTP method",
            "routes[0].match.methods[3]: \"\" is not a valid HTTP method",
            "routes[0].match.headers[1].name: \"bad name\" is not a valid header name",
            "routes[0].match.headers[2]: exactly one of exact, present, regex is required (found none)",
            "routes[0].match.headers[3]: exactly one of exact, present, regex is required (found exact, regex)",
            "routes[0].match.headers[4].regex: invalid regex \"(\": unclosed group",
            "routes[0].match.headers[5].exact: \"a\\nb\" is not a valid header value (control characters are not allowed)",
            "routes[0].match.query[0].name: must not be empty",
            "routes[0].match.query[1].regex: invalid regex \"[z-a]\": invalid character class range, the start must be <= the end",
            "routes[1].match.path.prefix: \"api\" must start with '/'",
            "routes[2].match.path.regex: invalid regex \"/(a\": unclosed group",
        ],
    );
}

#[test]
fn respond_and_redirect_actions() {
    let yaml = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
routes:
  - { name: a, action: { respond: { status: 101 } } }
  - { name: b, action: { respond: { status: 600 } } }
  - { name: c, action: { respond: { status: 204, body: "x" } } }
  - name: d
    action:
      respond:
        headers: { "content-type": "text/plain", "bad name": "v", "x-v": "a\u0001", "content-length": "3" }
  - { name: e, action: { redirect: { status: 200, scheme: ftp, host: "a.com:80", port: 0, path: "x" } } }
  - { name: f, action: { redirect: { status: 308, scheme: https, host: "b.example.com", port: 8443, path: "/new?q=1" } } }
  - { name: g, action: { redirect: { host: "a b" } } }
"#;
    assert_problems(
        yaml,
        &[
            "routes[0].action.respond.status: must be between 200 and 599, got 101",
            "routes[1].action.respond.status: must be between 200 and 599, got 600",
            "routes[2].action.respond.body: must be empty for status 204",
            "routes[3].action.respond.headers.bad name: \"bad name\" is not a valid header name",
            "routes[3].action.respond.headers.content-length: \"content-length\" is a connection/framing header managed by the gateway and cannot be edited",
            "routes[3].action.respond.headers.x-v: \"a\\u{1}\" is not a valid header value (control characters are not allowed)",
            "routes[4].action.redirect.status: must be one of 301, 302, 303, 307, 308, got 200",
            "routes[4].action.redirect.scheme: must be \"http\" or \"https\", got \"ftp\"",
            "routes[4].action.redirect.host: \"a.com:80\" must not include a port (use `port`)",
            "routes[4].action.redirect.port: must be between 1 and 65535",
            "routes[4].action.redirect.path: \"x\" must start with '/'",
            "routes[6].action.redirect.host: \"a b\" is not a valid host name",
        ],
    );
}

#[test]
fn rewrites_and_header_edits() {
    let yaml = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
routes:
  - { name: a, rewrite: strip_prefix, action: { respond: {} } }
  - { name: b, match: { path: { exact: /x } }, rewrite: { replace_prefix: "v2" }, action: { respond: {} } }
  - { name: c, match: { path: { prefix: /x } }, rewrite: { replace_prefix: "/v2" }, action: { respond: {} } }
  - { name: d, rewrite: { regex: { pattern: "^/(", replacement: "/" } }, action: { respond: {} } }
  - name: e
    host_header: { rewrite: "" }
    timeout: 0s
    request_headers:
      add: { "x-ok": "1", "Host": "h" }
      set: { "Transfer-Encoding": "chunked" }
      remove: ["x-gone", "bad name"]
    response_headers:
      set: { "host": "fine on responses" }
      remove: ["connection"]
    action: { respond: {} }
"#;
    assert_problems(
        yaml,
        &[
            "routes[0].rewrite: strip_prefix requires a prefix path match (match.path.prefix)",
            "routes[1].rewrite: replace_prefix requires a prefix path match (match.path.prefix)",
            "routes[1].rewrite.replace_prefix: \"v2\" must start with '/'",
            "routes[3].rewrite.regex.pattern: invalid regex \"^/(\": unclosed group",
            "routes[4].host_header.rewrite: must not be empty",
            "routes[4].request_headers.add.Host: the Host header is set with `host_header`, not with header edits",
            "routes[4].request_headers.set.Transfer-Encoding: \"Transfer-Encoding\" is a connection/framing header managed by the gateway and cannot be edited",
            "routes[4].request_headers.remove[1]: \"bad name\" is not a valid header name",
            "routes[4].response_headers.remove[0]: \"connection\" is a connection/framing header managed by the gateway and cannot be edited",
            "routes[4].timeout: must be greater than 0",
        ],
    );
}

#[test]
fn drain_timeout_may_be_zero() {
    let yaml = format!("server: {{ drain_timeout: 0s }}\n{BASE}");
    assert_problems(&yaml, &[]);
}

#[test]
fn several_problems_are_all_reported() {
    let yaml = r#"
admin: { address: "127.0.0.1:8080" }
listeners:
  - { name: public, address: "127.0.0.1:8080" }
  - { name: public, address: "nowhere" }
upstreams:
  - { name: api, endpoints: [] }
routes:
  - { name: a, action: { proxy: { upstream: api } } }
  - { name: a, listeners: [private], action: { proxy: { upstream: billing } } }
  - { name: c, match: { path: { regex: "(" } }, rewrite: strip_prefix, action: { redirect: { status: 200 } } }
"#;
    assert_problems(
        yaml,
        &[
            "listeners[1].name: duplicate listener name \"public\" (also listeners[0])",
            "listeners[1].address: \"nowhere\" is not an ip:port address (e.g. 0.0.0.0:8080 or [::]:8080)",
            "admin.address: address 127.0.0.1:8080 is already used by listeners[0]",
            "upstreams[0].endpoints: at least one endpoint is required",
            "routes[1].name: duplicate route name \"a\" (also routes[0])",
            "routes[1].listeners[0]: unknown listener \"private\"",
            "routes[1].action.proxy.upstream: unknown upstream \"billing\"",
            "routes[2].match.path.regex: invalid regex \"(\": unclosed group",
            "routes[2].action.redirect.status: must be one of 301, 302, 303, 307, 308, got 200",
            "routes[2].rewrite: strip_prefix requires a prefix path match (match.path.prefix)",
        ],
    );
}

#[test]
fn valid_rate_limits_have_no_problems() {
    let yaml = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
    rate_limits: [global]
rate_limits:
  - name: global
    limit: 1000
  - name: per-ip
    algorithm: sliding_window
    limit: 10
    window: 1s
    key: [client_ip, { header: x-api-key }]
    client_ip_prefix: { ipv4: 24, ipv6: 64 }
    missing_key: { fallback: anon }
    cost: { default: 1, methods: { POST: 5 } }
  - name: inflight
    algorithm: concurrency
    limit: 100
defaults:
  rate_limits: [per-ip]
routes:
  - name: api
    rate_limits: [per-ip, inflight]
    rate_limit_cost: 2
    action: { respond: { status: 200 } }
"#;
    assert_problems(yaml, &[]);
}

#[test]
fn rate_limit_problems_are_all_reported_with_paths() {
    let yaml = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
    rate_limits: [nope]
rate_limits:
  - name: a
    limit: 0
    status: 200
    client_ip_prefix: { ipv4: 33 }
    burst: 0
  - name: a
    algorithm: concurrency
    limit: 5
    key: [client_ip]
    max_delay: 1s
  - name: fast
    limit: 2000000000
    window: 1ns
  - name: w
    algorithm: fixed_window
    limit: 5
    burst: 3
    cost: { default: 0, methods: { POST: 0 } }
    key: [{ header: "bad header" }]
defaults:
  rate_limits: [w, w]
routes:
  - name: api
    rate_limits: [missing]
    rate_limit_cost: 0
    action: { respond: { status: 200 } }
"#;
    assert_problems(
        yaml,
        &[
            "rate_limits[1].name: duplicate rate limit name \"a\" (also rate_limits[0])",
            "rate_limits[0].limit: must be at least 1",
            "rate_limits[0].status: must be a 4xx or 5xx status, not 200",
            "rate_limits[0].client_ip_prefix.ipv4: must be 0 to 32",
            "rate_limits[0].burst: must be at least 1",
            "rate_limits[1].key: a concurrency limit has no key: it caps all requests of the policy together",
            "rate_limits[1].max_delay: a concurrency limit does not delay",
            "rate_limits[2]: rate must be at most one request per nanosecond",
            "rate_limits[3].cost.default: must be at least 1",
            "rate_limits[3].cost.methods.POST: must be at least 1",
            "rate_limits[3].key[0].header: \"bad header\" is not a valid header name",
            "rate_limits[3].burst: only token_bucket has a burst",
            "defaults.rate_limits[1]: rate limit \"w\" is listed twice (it would count every request twice)",
            "listeners[0].rate_limits[0]: unknown rate limit \"nope\"",
            "routes[0].rate_limits[0]: unknown rate limit \"missing\"",
            "routes[0].rate_limit_cost: must be at least 1",
        ],
    );
}

#[test]
fn route_upgrades_refuse_http2_and_non_tokens() {
    let yaml = format!("{BASE}    upgrades: [websocket, h2c, H2C, h2, \"web socket\", \"\"]\n");
    assert_problems(
        &yaml,
        &[
            "routes[0].upgrades[1]: \"h2c\" is refused: HTTP/2 over an upgraded connection would bypass the routes",
            "routes[0].upgrades[2]: \"H2C\" is refused: HTTP/2 over an upgraded connection would bypass the routes",
            "routes[0].upgrades[3]: \"h2\" is refused: HTTP/2 over an upgraded connection would bypass the routes",
            "routes[0].upgrades[4]: \"web socket\" is not a protocol name (a token such as websocket)",
            "routes[0].upgrades[5]: \"\" is not a protocol name (a token such as websocket)",
        ],
    );
    assert_problems(&format!("{BASE}    upgrades: []\n"), &[]);
    assert_problems(&format!("{BASE}    upgrades: [websocket, foo]\n"), &[]);
}

#[test]
fn admin_off_loopback_needs_a_token() {
    for address in [
        "0.0.0.0:9901",
        "[::]:9901",
        "10.0.0.5:9901",
        "[2001:db8::1]:9901",
    ] {
        let yaml = format!("{BASE}admin: {{ address: \"{address}\" }}\n");
        let addr: SocketAddr = address.parse().unwrap();
        assert_problems(
            &yaml,
            &[&format!(
                "admin.auth_token: required when the admin listener binds to {addr}, which is not a loopback address (set auth_token: {{ env: NAME }} or {{ file: PATH }}, or bind to 127.0.0.1)"
            )],
        );
        let with_token = format!(
            "{BASE}admin: {{ address: \"{address}\", auth_token: {{ env: ADMIN_TOKEN }} }}\n"
        );
        assert_problems(&with_token, &[]);
        let disabled = format!("{BASE}admin: {{ address: \"{address}\", enabled: false }}\n");
        assert_problems(&disabled, &[]);
    }
    for address in ["127.0.0.1:9901", "127.0.0.2:9901", "[::1]:9901"] {
        assert_problems(&format!("{BASE}admin: {{ address: \"{address}\" }}\n"), &[]);
    }
}

#[test]
fn admin_access_settings() {
    assert_problems(
        &format!(
            "{BASE}admin:\n  auth_reads: true\n  auth_health_and_metrics: true\n  hosts: [ok.internal, \"bad host\", \"gw:80\", \"::1\"]\n"
        ),
        &[
            "admin.auth_reads: needs admin.auth_token",
            "admin.auth_health_and_metrics: needs admin.auth_token",
            "admin.hosts[1]: \"bad host\" is not a host name or IP address (leave out the port)",
            "admin.hosts[2]: \"gw:80\" is not a host name or IP address (leave out the port)",
        ],
    );
    for (source, problem) in [
        ("{ env: \"\" }", "admin.auth_token.env: \"\" is not an environment variable name (letters, digits and _, not starting with a digit)"),
        ("{ env: 1TOKEN }", "admin.auth_token.env: \"1TOKEN\" is not an environment variable name (letters, digits and _, not starting with a digit)"),
        ("{ env: \"A-B\" }", "admin.auth_token.env: \"A-B\" is not an environment variable name (letters, digits and _, not starting with a digit)"),
        ("{ file: \"\" }", "admin.auth_token.file: must not be empty"),
    ] {
        assert_problems(&format!("{BASE}admin: {{ auth_token: {source} }}\n"), &[problem]);
    }
    // The token itself never goes in the file.
    let errs = crate::config::parse(&format!("{BASE}admin: {{ auth_token: s3cret }}\n"))
        .unwrap_err()
        .to_string();
    assert!(errs.starts_with("admin.auth_token: "), "{errs}");
}

#[test]
fn ports_out_of_range_say_so() {
    let yaml = r#"
admin: { address: "127.0.0.1:65536" }
listeners:
  - { name: a, address: "127.0.0.1:99999" }
  - { name: b, address: "[::]:70000" }
  - { name: c, address: "127.0.0.1:http" }
upstreams:
  - name: u
    endpoints:
      - address: "127.0.0.1:99999"
      - address: "[::1]:65536"
      - address: "api.internal:100000"
      - address: "api.internal:0"
      - address: "api.internal:65535"
"#;
    assert_problems(
        yaml,
        &[
            "listeners[0].address: \"127.0.0.1:99999\": port 99999 is out of range 0–65535",
            "listeners[1].address: \"[::]:70000\": port 70000 is out of range 0–65535",
            "listeners[2].address: \"127.0.0.1:http\" is not an ip:port address (e.g. 0.0.0.0:8080 or [::]:8080)",
            "admin.address: \"127.0.0.1:65536\": port 65536 is out of range 0–65535",
            "upstreams[0].endpoints[0].address: \"127.0.0.1:99999\": port 99999 is out of range 1–65535",
            "upstreams[0].endpoints[1].address: \"[::1]:65536\": port 65536 is out of range 1–65535",
            "upstreams[0].endpoints[2].address: \"api.internal:100000\": port 100000 is out of range 1–65535",
            "upstreams[0].endpoints[3].address: \"api.internal:0\": port 0 is out of range 1–65535",
        ],
    );
}

#[test]
fn sizes_allocated_at_start_are_bounded() {
    let rate_limit = |max_keys: usize| {
        format!("{BASE}rate_limits:\n  - {{ name: big, limit: 10, max_keys: {max_keys} }}\n")
    };
    let tracing = |queue: usize| {
        format!("{BASE}telemetry:\n  tracing:\n    batch: {{ max_queue_size: {queue}, max_batch_size: 1 }}\n")
    };
    assert_problems(&rate_limit(MAX_KEYS), &[]);
    assert_problems(&tracing(MAX_QUEUE_SIZE), &[]);
    for max_keys in [MAX_KEYS + 1, 1 << 40, usize::MAX] {
        assert_problems(
            &rate_limit(max_keys),
            &[&format!(
                "rate_limits[0].max_keys: must be at most {MAX_KEYS}, got {max_keys}"
            )],
        );
    }
    for queue in [MAX_QUEUE_SIZE + 1, 1 << 62, usize::MAX] {
        assert_problems(
            &tracing(queue),
            &[&format!(
                "telemetry.tracing.batch.max_queue_size: must be at most {MAX_QUEUE_SIZE}, got {queue}"
            )],
        );
    }
}
