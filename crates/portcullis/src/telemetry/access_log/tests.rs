//! Unit tests of the line format (every field, escaping, timestamps), redaction and
//! sampling. The black-box tests (`tests/access_log.rs`) drive the whole path.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::line::{escaped, ip_addr, redacted, socket_addr, Entry, Format, Rfc3339};
use super::{AccessLog, Sample};
use crate::config::schema::AccessLogConfig;
use crate::telemetry::{BodyEnd, Head, RateLimitAction};

fn peer() -> SocketAddr {
    "10.1.2.3:40000".parse().unwrap()
}

fn facts(uri: Uri, host: Option<HeaderValue>) -> Head {
    Head {
        method: Method::GET,
        uri,
        host,
        version: Version::HTTP_11,
        user_agent: None,
        logged_headers: Vec::new(),
    }
}

/// An entry that only the request differs in.
fn entry(request: Option<&Head>) -> Entry<'_> {
    Entry {
        arrival: Duration::from_micros(1_700_000_000_123_456),
        request_id: None,
        trace_id: None,
        client_ip: None,
        peer: peer(),
        listener: None,
        request,
        route: None,
        upstream: None,
        endpoint: None,
        attempts: 0,
        reason: "",
        rate_limit: None,
        status: 200,
        bytes_in: 0,
        end: BodyEnd {
            duration: Duration::from_micros(1500),
            bytes_out: 0,
            complete: true,
            failed: false,
        },
    }
}

fn plain() -> Format {
    Format {
        redact_query: Vec::new(),
        headers: None,
    }
}

/// The entry's line, parsed back (it must be one valid JSON object on one line).
fn json_of(entry: &Entry<'_>, format: &Format) -> Value {
    let mut out = Vec::new();
    entry.write_json(format, &mut out);
    assert!(
        !out.contains(&b'\n'),
        "one line: {}",
        String::from_utf8_lossy(&out)
    );
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

/// The fields of a line, in order (docs/access-log.md).
const ORDER: [&str; 25] = [
    "time",
    "request_id",
    "trace_id",
    "client_ip",
    "peer",
    "listener",
    "method",
    "host",
    "path",
    "protocol",
    "user_agent",
    "headers",
    "route",
    "upstream",
    "endpoint",
    "attempts",
    "status",
    "reason",
    "rate_limit_policy",
    "rate_limit_action",
    "bytes_in",
    "bytes_out",
    "duration_us",
    "body_complete",
    "body_failed",
];

#[test]
fn every_field_in_order() {
    let head = Head {
        method: Method::POST,
        uri: "/v1/items?id=7".parse().unwrap(),
        host: Some(HeaderValue::from_static("api.example.com")),
        version: Version::HTTP_2,
        user_agent: Some(HeaderValue::from_static("curl/8.5.0")),
        logged_headers: vec![(1, HeaderValue::from_static("acme"))],
    };
    let request_id = HeaderValue::from_static("req-1");
    let mut e = entry(Some(&head));
    e.request_id = Some(&request_id);
    e.trace_id = Some([0xab; 16]);
    e.client_ip = Some("203.0.113.9".parse().unwrap());
    e.listener = Some("public");
    e.route = Some("items");
    e.upstream = Some("app");
    e.endpoint = Some("10.0.0.5:8080".parse().unwrap());
    e.attempts = 2;
    e.reason = "rate_limited";
    e.rate_limit = Some(("per-user", RateLimitAction::Denied));
    e.status = 429;
    e.bytes_in = 12;
    e.end = BodyEnd {
        duration: Duration::from_micros(1500),
        bytes_out: 34,
        complete: false,
        failed: true,
    };
    let format = Format {
        redact_query: Vec::new(),
        headers: Some(vec![
            HeaderName::from_static("x-absent"),
            HeaderName::from_static("x-tenant"),
        ]),
    };
    let mut out = Vec::new();
    e.write_json(&format, &mut out);
    let expected = json!({
        "time": "2023-11-14T22:13:20.123456Z",
        "request_id": "req-1",
        "trace_id": "abababababababababababababababab",
        "client_ip": "203.0.113.9",
        "peer": "10.1.2.3:40000",
        "listener": "public",
        "method": "POST",
        "host": "api.example.com",
        "path": "/v1/items?id=7",
        "protocol": "HTTP/2.0",
        "user_agent": "curl/8.5.0",
        "headers": { "x-tenant": "acme" },
        "route": "items",
        "upstream": "app",
        "endpoint": "10.0.0.5:8080",
        "attempts": 2,
        "status": 429,
        "reason": "rate_limited",
        "rate_limit_policy": "per-user",
        "rate_limit_action": "denied",
        "bytes_in": 12,
        "bytes_out": 34,
        "duration_us": 1500,
        "body_complete": false,
        "body_failed": true,
    });
    // The same keys, in the documented order.
    let text = String::from_utf8(out).unwrap();
    let mut at = 0;
    for key in ORDER {
        let found = text[at..]
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} missing or out of order in {text}"));
        at += found;
    }
    assert_eq!(expected.as_object().unwrap().len(), ORDER.len());
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
}

#[test]
fn absent_facts_are_null_and_headers_left_out_unless_configured() {
    let line = json_of(&entry(None), &plain());
    for key in [
        "request_id",
        "trace_id",
        "client_ip",
        "listener",
        "method",
        "host",
        "path",
        "protocol",
        "user_agent",
        "route",
        "upstream",
        "endpoint",
        "reason",
        "rate_limit_policy",
        "rate_limit_action",
    ] {
        assert_eq!(line[key], Value::Null, "{key}");
    }
    assert!(line.get("headers").is_none());
    assert_eq!(line["attempts"], 0);
    assert_eq!(line["body_complete"], true);
}

#[test]
fn host_is_the_authority_when_the_uri_has_one() {
    let head = facts(
        "http://upstream.test:8080/x".parse().unwrap(),
        Some(HeaderValue::from_static("other.test")),
    );
    let e = entry(Some(&head));
    let line = json_of(&e, &plain());
    assert_eq!(line["host"], "upstream.test:8080");
    assert_eq!(line["path"], "/x");
}

#[test]
fn odd_characters_in_path_host_and_headers_stay_valid_json() {
    let host = HeaderValue::from_bytes(b"ev\"il\\host\t\xff\xfe").unwrap();
    let uri: Uri = "/a%22b/\\/{x}/\"q\"?k=%00&x=\\y`".parse().unwrap();
    let head = facts(uri, Some(host));
    let request_id = HeaderValue::from_bytes(b"id\"\\\t\xc3\xa9").unwrap();
    let mut e = entry(Some(&head));
    e.request_id = Some(&request_id);
    let line = json_of(&e, &plain());
    assert_eq!(line["host"], "ev\"il\\host\t\u{fffd}\u{fffd}");
    assert_eq!(line["path"], "/a%22b/\\/{x}/\"q\"?k=%00&x=\\y`");
    assert_eq!(line["request_id"], "id\"\\\té");
}

#[test]
fn gateway_codes_need_no_escaping() {
    // `code_or_null` writes reasons and rate-limit actions as they are.
    let actions = [
        RateLimitAction::Denied,
        RateLimitAction::Delayed,
        RateLimitAction::ShadowDenied,
    ];
    let codes = crate::reason::ALL
        .iter()
        .copied()
        .chain(actions.iter().map(|a| a.as_str()));
    for code in codes {
        assert!(
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
            "{code:?}"
        );
    }
}

#[test]
fn config_names_and_ipv6_addresses_stay_valid_json() {
    let mut e = entry(None);
    e.listener = Some("pub\"lic\n");
    e.route = Some("r\\1\u{7}");
    e.upstream = Some("\u{e9}t\u{e9}");
    e.rate_limit = Some(("p\t", RateLimitAction::ShadowDenied));
    e.client_ip = Some("2001:db8::7".parse().unwrap());
    e.peer = "[::ffff:10.0.0.1]:443".parse().unwrap();
    e.endpoint = Some("[fe80::1%3]:8080".parse().unwrap());
    let line = json_of(&e, &plain());
    assert_eq!(line["listener"], "pub\"lic\n");
    assert_eq!(line["route"], "r\\1\u{7}");
    assert_eq!(line["upstream"], "\u{e9}t\u{e9}");
    assert_eq!(line["rate_limit_policy"], "p\t");
    assert_eq!(line["rate_limit_action"], "shadow_denied");
    assert_eq!(line["client_ip"], "2001:db8::7");
    assert_eq!(line["peer"], "[::ffff:10.0.0.1]:443");
    assert_eq!(line["endpoint"], "[fe80::1%3]:8080");
}

#[test]
fn query_values_are_redacted_by_name() {
    let redact = vec!["token".to_string(), "api_key".to_string()];
    let cases = [
        ("/s?q=cats&token=abc", "/s?q=cats&token=REDACTED"),
        ("/s?TOKEN=abc&Token=d", "/s?TOKEN=REDACTED&Token=REDACTED"),
        // Percent-encoded and `+` in the name still match; the name is kept as written.
        (
            "/s?to%6Ben=abc&api%5Fkey=z",
            "/s?to%6Ben=REDACTED&api%5Fkey=REDACTED",
        ),
        // No value, empty name, other names that merely contain the name: left alone.
        (
            "/s?token&=v&tokens=1&my_token=2",
            "/s?token&=v&tokens=1&my_token=2",
        ),
        (
            "/s?token=&a=1&&token==x",
            "/s?token=REDACTED&a=1&&token=REDACTED",
        ),
        ("/s", "/s"),
        ("/s?", "/s?"),
    ];
    let format = Format {
        redact_query: redact,
        headers: None,
    };
    for (uri, expected) in cases {
        let head = facts(uri.parse().unwrap(), None);
        let e = entry(Some(&head));
        assert_eq!(json_of(&e, &format)["path"], expected, "{uri}");
    }
    assert!(redacted("api+key", &["api key".to_string()]));
    assert!(!redacted("api+key", &["api+key".to_string()]));
}

#[test]
fn repeated_headers_are_joined_in_the_headers_object() {
    let mut request = facts("/".parse().unwrap(), None);
    request.logged_headers = vec![
        (0, HeaderValue::from_static("a")),
        (0, HeaderValue::from_static("b")),
        (2, HeaderValue::from_bytes(b"\"\xff").unwrap()),
    ];
    let format = Format {
        redact_query: Vec::new(),
        headers: Some(vec![
            HeaderName::from_static("x-one"),
            HeaderName::from_static("x-two"),
            HeaderName::from_static("x-three"),
        ]),
    };
    let line = json_of(&entry(Some(&request)), &format);
    assert_eq!(
        line["headers"],
        json!({ "x-one": "a, b", "x-three": "\"\u{fffd}" })
    );
}

#[tokio::test]
async fn captured_headers_are_redacted_without_copying_the_value() {
    let dir = std::env::temp_dir().join(format!("portcullis-al-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = AccessLogConfig {
        enabled: true,
        output: dir.join("capture.log").display().to_string(),
        headers: vec!["X-Tenant".into(), "authorization".into(), "cookie".into()],
        ..AccessLogConfig::default()
    };
    let log = AccessLog::from_config(&config).unwrap().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
    headers.append("x-tenant", HeaderValue::from_static("t1"));
    headers.append("x-tenant", HeaderValue::from_static("t2"));
    let captured = log.capture_headers(&headers);
    assert_eq!(
        captured,
        vec![
            (0, HeaderValue::from_static("t1")),
            (0, HeaderValue::from_static("t2")),
            (1, HeaderValue::from_static("REDACTED")),
        ]
    );
    assert!(log.capture_headers(&HeaderMap::new()).is_empty());
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sampling_ratio() {
    assert_eq!(Sample::of(1.0), Sample::All);
    assert_eq!(Sample::of(0.0), Sample::None);
    assert_eq!(Sample::of(0.5), Sample::Below(1 << 31));
    assert!(!Sample::None.keeps() && Sample::All.keeps());
    let kept = (0..10_000).filter(|_| Sample::of(0.25).keeps()).count();
    assert!((2_000..3_000).contains(&kept), "{kept} of 10000 at 25%");
}

#[allow(clippy::disallowed_types)] // Compared against humantime's formatting of SystemTime.
fn humantime_micros(since_epoch: Duration) -> String {
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + since_epoch).to_string()
}

fn rfc3339(since_epoch: Duration) -> String {
    String::from_utf8(Rfc3339(since_epoch).text().to_vec()).unwrap()
}

#[test]
fn timestamps_match_a_reference_implementation() {
    // Leap days, century rules, year ends, the epoch and the last representable second.
    for (secs, expected) in [
        (0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, "2000-02-29T00:00:00.000000Z"),
        (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
        (1_704_067_199, "2023-12-31T23:59:59.000000Z"),
        (253_402_300_799, "9999-12-31T23:59:59.000000Z"),
    ] {
        assert_eq!(rfc3339(Duration::from_secs(secs)), expected);
    }
    assert_eq!(
        rfc3339(Duration::from_secs(300_000_000_000)),
        "9999-12-31T23:59:59.999999Z"
    );
}

#[test]
fn timestamps_in_the_same_second_share_only_the_second() {
    // The thread keeps the last second's text: a later line in that second differs only in
    // its microseconds, and the next second is computed afresh.
    let second = Duration::from_secs(1_704_067_199);
    assert_eq!(rfc3339(second), "2023-12-31T23:59:59.000000Z");
    assert_eq!(
        rfc3339(second + Duration::from_micros(12_345)),
        "2023-12-31T23:59:59.012345Z"
    );
    assert_eq!(
        rfc3339(second + Duration::from_micros(1_000_001)),
        "2024-01-01T00:00:00.000001Z"
    );
    assert_eq!(rfc3339(second), "2023-12-31T23:59:59.000000Z");
}

proptest! {
    /// The hand-written escaping gives what serde_json gives, for any text (control
    /// characters, quotes, backslashes, any Unicode).
    #[test]
    fn escaping_agrees_with_serde_json(text in any::<String>(), controls in "[\\x00-\\x1f\"\\\\a-z\u{e9}\u{2028}]{0,40}") {
        for text in [text, controls] {
            let mut out = vec![b'"'];
            escaped(&mut out, &text);
            out.push(b'"');
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&text).unwrap());
        }
    }

    /// Addresses are written as their `Display` form shows them.
    #[test]
    fn addresses_agree_with_display(ip in any::<std::net::IpAddr>(), addr in any::<SocketAddr>()) {
        let mut out = Vec::new();
        ip_addr(&mut out, ip);
        prop_assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        let mut out = Vec::new();
        socket_addr(&mut out, addr);
        prop_assert_eq!(String::from_utf8(out).unwrap(), format!("\"{addr}\""));
    }

    #[test]
    fn timestamps_agree_with_humantime(micros in 0u64..253_402_300_800_000_000) {
        let d = Duration::from_micros(micros);
        prop_assert_eq!(rfc3339(d), humantime_micros(d));
    }

    /// Whatever bytes a client manages to get into the URI, the host or an id, the line is
    /// one valid JSON object that gives them back (UTF-8 as is, others as U+FFFD).
    #[test]
    fn any_input_gives_valid_json(
        path in "[!-~]{0,40}",
        host in proptest::collection::vec(any::<u8>(), 0..40),
        id in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut target = b"/".to_vec();
        target.extend_from_slice(path.as_bytes());
        let Ok(uri) = Uri::from_maybe_shared(bytes::Bytes::from(target)) else {
            return Ok(());
        };
        let host_value = HeaderValue::from_bytes(&host).ok();
        let head = facts(uri.clone(), host_value.clone());
        let request_id = HeaderValue::from_bytes(&id).ok();
        let mut e = entry(Some(&head));
        e.request_id = request_id.as_ref();
        let format = Format { redact_query: vec!["k".into()], headers: None };
        let line = json_of(&e, &format);
        if uri.authority().is_none() {
            let expected = host_value.map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            prop_assert_eq!(line["host"].as_str().map(String::from), expected);
        }
        if !uri.query().is_some_and(|q| q.split('&').any(|p| p.split_once('=').is_some_and(|(n, _)| redacted(n, &format.redact_query)))) {
            let expected = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            prop_assert_eq!(line["path"].as_str(), Some(expected));
        }
        let expected_id = request_id.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        prop_assert_eq!(line["request_id"].as_str().map(String::from), expected_id);
    }
}

/// A runtime with listener `main`, upstream `app` and route `app`.
fn one_route_runtime() -> crate::runtime::Runtime {
    let yaml = "listeners: [{ name: main, address: \"127.0.0.1:0\" }]\n\
                upstreams: [{ name: app, endpoints: [{ address: \"127.0.0.1:9\" }] }]\n\
                routes: [{ name: app, action: { proxy: { upstream: app } } }]\n";
    let config = crate::config::parse(yaml).unwrap();
    crate::runtime::Runtime::compile(&config, &crate::policy::ratelimit::Registry::new()).unwrap()
}

/// A successful request through `one_route_runtime`'s route.
fn proxied_record(request_id: &str) -> crate::telemetry::Record {
    use crate::telemetry::{BytesIn, Record};
    let parts = http::Request::get("http://api.example.com/v1/items/42?page=2")
        .header("user-agent", "bench/1.0")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    Record {
        arrived: tokio::time::Instant::now(),
        request_id: Some(HeaderValue::from_str(request_id).unwrap()),
        listener: 0,
        peer: peer(),
        client_ip: Some("10.1.2.3".parse().unwrap()),
        head: Some(Head::of(&parts)),
        route: Some(0),
        upstream: Some(0),
        endpoint: Some("127.0.0.1:9".parse().unwrap()),
        attempts: 1,
        reason: "",
        rate_limit: None,
        status: http::StatusCode::OK,
        bytes_in: BytesIn::Known(0),
        span: None,
    }
}

/// Threads recording at the same time append whole lines: every line written is one valid
/// JSON object, and each thread's lines arrive complete and in the order it recorded them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_append_whole_lines() {
    const THREADS: usize = 4;
    const EACH: usize = 500;
    let dir = std::env::temp_dir().join(format!("portcullis-al-conc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("concurrent.log");
    let log = AccessLog::from_config(&AccessLogConfig {
        enabled: true,
        output: path.display().to_string(),
        buffer: THREADS * EACH,
        ..AccessLogConfig::default()
    })
    .unwrap()
    .unwrap();
    let runtime = one_route_runtime();
    let end = BodyEnd {
        duration: Duration::from_micros(1500),
        bytes_out: 1,
        complete: true,
        failed: false,
    };
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (log, runtime) = (&log, &runtime);
            scope.spawn(move || {
                for i in 0..EACH {
                    log.record(runtime, &proxied_record(&format!("t{t}-{i}")), &end);
                }
            });
        }
    });
    assert!(log.flush(Duration::from_secs(10)).await);
    assert_eq!(
        (log.written(), log.dropped(), log.failed()),
        ((THREADS * EACH) as u64, 0, 0)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut next = [0; THREADS];
    for line in text.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("invalid JSON line ({e}): {line}"));
        assert_eq!(value["route"], "app");
        let id = value["request_id"].as_str().unwrap();
        let (t, i) = id[1..].split_once('-').unwrap();
        let t: usize = t.parse().unwrap();
        assert_eq!(
            i.parse::<usize>().unwrap(),
            next[t],
            "thread {t}'s lines in order"
        );
        next[t] += 1;
    }
    assert_eq!(next, [EACH; THREADS]);
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cost of the request path's part (`AccessLog::record`: sampling, formatting the line,
/// appending it to the chunk) against the cost of formatting alone.
/// Run: `cargo test --release -p portcullis --lib access_log::tests::cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "a measurement, not a check"]
async fn cost_of_recording_and_of_formatting() {
    use tokio::time::Instant;

    const N: u32 = 200_000;
    let runtime = one_route_runtime();
    let log = AccessLog::from_config(&AccessLogConfig {
        enabled: true,
        output: "/dev/null".into(),
        buffer: 1 << 20,
        ..AccessLogConfig::default()
    })
    .unwrap()
    .unwrap();
    let record = proxied_record("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    let end = BodyEnd {
        duration: Duration::from_micros(1500),
        bytes_out: 1234,
        complete: true,
        failed: false,
    };
    let started = Instant::now();
    for _ in 0..N {
        log.record(&runtime, &record, &end);
    }
    let recording = started.elapsed() / N;
    assert!(log.flush(Duration::from_secs(30)).await);
    assert_eq!(log.dropped(), 0);

    let mut e = entry(record.head.as_ref());
    e.request_id = record.request_id.as_ref();
    e.listener = Some("main");
    e.route = Some("app");
    e.upstream = Some("app");
    e.endpoint = record.endpoint;
    e.attempts = 1;
    let format = plain();
    let mut out = Vec::with_capacity(1024);
    let started = Instant::now();
    for _ in 0..N {
        out.clear();
        e.write_json(&format, &mut out);
    }
    let formatting = started.elapsed() / N;
    println!(
        "record (request path, formatting included): {recording:?}/line; formatting alone: {formatting:?}/line, {} bytes",
        out.len()
    );
}
