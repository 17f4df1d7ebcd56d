//! Access log lines (`telemetry::access_log::line`): whatever the request and the configured
//! names hold, a line is one valid JSON object on one line, and the client's and the
//! config's strings read back from it as they were (non-UTF-8 bytes as U+FFFD).
//!
//! Input lines: the redacted query names (comma-separated); the logged header names
//! (comma-separated; an empty line: no `headers` object); the listener, route and upstream
//! names (empty: none); the arrival time in microseconds; then the request head.
#![no_main]

use std::time::Duration;

use http::HeaderName;
use libfuzzer_sys::fuzz_target;
use portcullis::telemetry::access_log::line::{Entry, Format};
use portcullis::telemetry::{BodyEnd, Head};
use portcullis_fuzz::{head, lines, text};
use serde_json::Value;

fn lossy(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn name(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let mut line = || {
        input
            .next()
            .map(|l| text(l).unwrap_or("\u{fffd}"))
            .unwrap_or("")
    };
    let redact_query: Vec<String> = line()
        .split(',')
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    let header_names = line();
    let headers: Option<Vec<HeaderName>> = name(header_names).map(|names| {
        names
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect()
    });
    let listener = line();
    let route = line();
    let upstream = line();
    let arrival = Duration::from_micros(line().parse().unwrap_or(1_700_000_000_000_000));
    let Some(parts) = head(&mut input) else {
        return;
    };

    let mut request = Head::of(&parts);
    if let Some(names) = &headers {
        for (i, n) in names.iter().enumerate() {
            request
                .logged_headers
                .extend(parts.headers.get_all(n).iter().map(|v| (i, v.clone())));
        }
    }
    let entry = Entry {
        arrival,
        request_id: parts.headers.get("x-request-id"),
        trace_id: Some([0xab; 16]),
        client_ip: Some("2001:db8::1".parse().unwrap_or([127, 0, 0, 1].into())),
        peer: "10.0.0.1:40000"
            .parse()
            .unwrap_or(([127, 0, 0, 1], 1).into()),
        listener: name(listener),
        request: Some(&request),
        route: name(route),
        upstream: name(upstream),
        endpoint: None,
        attempts: 1,
        reason: "",
        rate_limit: None,
        status: 200,
        bytes_in: 0,
        end: BodyEnd {
            duration: Duration::from_micros(10),
            bytes_out: 0,
            complete: true,
            failed: false,
        },
    };
    let format = Format {
        redact_query: redact_query.clone(),
        headers: headers.clone(),
    };
    let mut out = Vec::new();
    entry.write_json(&format, &mut out);
    assert!(!out.contains(&b'\n'), "a line break inside the line");
    let json: Value = match serde_json::from_slice(&out) {
        Ok(json) => json,
        Err(e) => panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&out)),
    };
    let field = |key: &str| json.get(key).cloned().unwrap_or(Value::Null);
    let string_or_null = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.into()));

    assert_eq!(field("listener"), string_or_null(name(listener)));
    assert_eq!(field("route"), string_or_null(name(route)));
    assert_eq!(field("upstream"), string_or_null(name(upstream)));
    assert_eq!(field("method"), Value::String(parts.method.as_str().into()));
    assert_eq!(
        field("user_agent"),
        parts
            .headers
            .get("user-agent")
            .map_or(Value::Null, |v| lossy(v.as_bytes()))
    );
    assert_eq!(
        field("request_id"),
        parts
            .headers
            .get("x-request-id")
            .map_or(Value::Null, |v| lossy(v.as_bytes()))
    );
    if redact_query.is_empty() {
        let target = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |pq| pq.as_str());
        let target = if parts.uri.query().is_some() {
            target
        } else {
            parts.uri.path()
        };
        assert_eq!(field("path"), Value::String(target.into()));
    }
    match &headers {
        None => assert_eq!(json.get("headers"), None),
        Some(names) => {
            let logged = field("headers");
            for n in names {
                let values: Vec<String> = parts
                    .headers
                    .get_all(n)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                if values.is_empty() {
                    continue;
                }
                // A name listed twice keeps the values under its first listing only.
                if names.iter().filter(|m| *m == n).count() == 1 {
                    assert_eq!(
                        logged.get(n.as_str()),
                        Some(&Value::String(values.join(", "))),
                        "header {n}"
                    );
                }
            }
        }
    }
    let time = field("time");
    let time = time.as_str().unwrap_or_default();
    assert!(time.len() == 27 && time.ends_with('Z'), "time {time:?}");
});
