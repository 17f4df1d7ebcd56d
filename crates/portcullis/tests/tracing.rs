//! Black-box tests of tracing: real requests through the gateway to in-process origins, spans
//! exported over OTLP/HTTP to an in-process receiver that decodes the protobuf payload.
//! Checked: span names, kinds and parentage, trace id continuity from the incoming
//! `traceparent` to the upstream's, attributes, one attempt span per try, parent-based ratio
//! sampling (context propagated when not sampled), and export that never holds up requests.
//! Real time: the SDK stamps spans with the wall clock; batches are sent every 20ms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis::telemetry::trace::Tracer;
use portcullis_test::otlp::{OtlpReceiver, OtlpStatus, ReceivedSpan, SpanKind};
use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient, TestGateway, TestResponse};

const WAIT: Duration = Duration::from_secs(5);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A gateway with one route `app` to `upstream` endpoints, tracing to `receiver`.
fn config(receiver: &OtlpReceiver, endpoints: &[String], route: &str, tracing: &str) -> String {
    let endpoints = portcullis_test::endpoints_yaml(endpoints);
    format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: backend\n    endpoints: [{endpoints}]\n\
         routes:\n  - name: app\n    action: {{ proxy: {{ upstream: backend }} }}\n    {route}\n\
         telemetry:\n  tracing:\n    otlp:\n      endpoint: {}\n      headers: {{ x-api-key: k1 }}\n    \
         batch: {{ schedule_delay: 20ms }}\n    {tracing}\n",
        receiver.endpoint()
    )
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut req = Request::get(gw.url("main", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    TestClient::http1()
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
}

fn tracer(gw: &TestGateway) -> &Tracer {
    gw.gateway().shared().telemetry.tracer.as_ref().unwrap()
}

fn server_span(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 1, "one server span: {spans:#?}");
    servers[0]
}

/// The client spans, in attempt order.
fn attempt_spans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    attempts.sort_by_key(|s| s.attr("portcullis.attempt").map(str::to_owned));
    attempts
}

/// Waits (real time, bounded by `WAIT`) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `traceparent` parts: trace id, parent id, flags.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<_> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn the_request_span_continues_the_callers_trace_and_the_upstream_joins_it() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Echo).await;
    let yaml = config(
        &receiver,
        &[origin.addr().to_string()],
        "",
        "service_name: edge-gw\n    resource: { deployment.environment.name: test }",
    );
    let gw = TestGateway::start(&yaml).await;
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let resp = get(
        &gw,
        "/orders/7?secret=x",
        &[
            ("traceparent", &incoming),
            ("tracestate", "vendor=abc"),
            ("user-agent", "trace-test/1.0"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);

    let spans = receiver.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = server_span(&spans);
    let attempts = attempt_spans(&spans);
    assert_eq!(attempts.len(), 1);
    let attempt = attempts[0];

    // Parentage: caller → request span → attempt span → the upstream's traceparent.
    assert_eq!(server.trace_id_hex(), TRACE_ID);
    assert_eq!(server.parent_span_id_hex().as_deref(), Some(PARENT_ID));
    assert_eq!(attempt.trace_id_hex(), TRACE_ID);
    assert_eq!(attempt.parent_span_id_hex(), Some(server.span_id_hex()));
    let seen = &origin.requests()[0];
    let (trace, parent, flags) = traceparent(seen.header("traceparent").unwrap());
    assert_eq!(trace, TRACE_ID);
    assert_eq!(parent, attempt.span_id_hex());
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));

    // The request span: names and attributes per the HTTP conventions, plus ours.
    assert_eq!(server.name, "GET app");
    assert_eq!(server.status, OtlpStatus::Unset);
    let port = gw.addr("main").port().to_string();
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/orders/7"),
        ("url.scheme", "http"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
        ("network.peer.address", "127.0.0.1"),
        ("user_agent.original", "trace-test/1.0"),
        ("http.route", "app"),
        ("http.response.status_code", "200"),
        ("portcullis.route", "app"),
        ("portcullis.upstream", "backend"),
        ("portcullis.endpoint", &origin.addr().to_string()),
        ("portcullis.attempts", "1"),
    ] {
        assert_eq!(
            server.attr(key),
            Some(value),
            "server span {key}: {server:#?}"
        );
    }
    assert!(server.attr("portcullis.reason").is_none());
    assert!(server.attr("error.type").is_none());
    assert_eq!(
        server.attr("portcullis.request_id"),
        resp.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    );
    assert!(
        server.attributes.values().all(|v| !v.contains("secret")),
        "the query is not recorded"
    );

    // The attempt span.
    assert_eq!(attempt.name, "GET");
    assert_eq!(attempt.status, OtlpStatus::Unset);
    let endpoint = origin.addr();
    for (key, value) in [
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("server.port", &endpoint.port().to_string()),
        ("network.peer.address", "127.0.0.1"),
        ("url.full", &format!("http://{endpoint}/orders/7")),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("portcullis.upstream", "backend"),
        ("portcullis.endpoint", &endpoint.to_string()),
        ("portcullis.attempt", "1"),
    ] {
        assert_eq!(
            attempt.attr(key),
            Some(value),
            "attempt span {key}: {attempt:#?}"
        );
    }
    assert!(attempt.attr("http.request.resend_count").is_none());
    // The attempt lies within the request.
    assert!(attempt.start_unix_nanos >= server.start_unix_nanos);
    assert!(attempt.end_unix_nanos <= server.end_unix_nanos);

    // Resource and export request.
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("edge-gw")
    );
    assert_eq!(
        server
            .resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    let headers = receiver.last_headers().unwrap();
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["x-api-key"], "k1");
    // Counted once the collector's answer is read (just after it stored the spans).
    eventually("2 spans counted as exported", || {
        tracer(&gw).exported() == 2
    })
    .await;
    assert_eq!(tracer(&gw).dropped(), 0);
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_new_trace() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(204)).await;
    let gw = TestGateway::start(&config(&receiver, &[origin.addr().to_string()], "", "")).await;
    assert_eq!(
        get(&gw, "/", &[("tracestate", "stale=1")]).await.status,
        204
    );

    let spans = receiver.wait_for_spans(2, WAIT).await;
    let server = server_span(&spans);
    let attempt = attempt_spans(&spans)[0];
    assert_eq!(server.parent_span_id, None, "a root span");
    assert_ne!(server.trace_id, [0; 16]);
    let seen = &origin.requests()[0];
    let (trace, parent, flags) = traceparent(seen.header("traceparent").unwrap());
    assert_eq!(trace, server.trace_id_hex());
    assert_eq!(parent, attempt.span_id_hex());
    assert_eq!(flags, "01");
    assert_eq!(
        seen.header("tracestate"),
        None,
        "a tracestate without a valid traceparent is not passed on"
    );
}

#[tokio::test]
async fn a_retried_request_has_one_attempt_span_per_try() {
    let receiver = OtlpReceiver::start().await;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let origin = Origin::start(Behavior::scripted(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            ResponseSpec::new(503)
        } else {
            ResponseSpec::new(200)
        }
    }))
    .await;
    let route = "retry: { attempts: 2, on: [], statuses: [503] }";
    let gw = TestGateway::start(&config(&receiver, &[origin.addr().to_string()], route, "")).await;
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(
        get(&gw, "/", &[("traceparent", &incoming)]).await.status,
        200
    );

    let spans = receiver.wait_for_spans(3, WAIT).await;
    let server = server_span(&spans);
    let attempts = attempt_spans(&spans);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert_eq!(server.attr("portcullis.attempts"), Some("2"));
    assert_eq!(server.status, OtlpStatus::Unset);

    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(first.attr("portcullis.attempt"), Some("1"));
    assert_eq!(first.attr("http.response.status_code"), Some("503"));
    assert_eq!(first.attr("error.type"), Some("503"));
    assert_eq!(first.status, OtlpStatus::Error);
    assert_eq!(second.attr("portcullis.attempt"), Some("2"));
    assert_eq!(second.attr("http.request.resend_count"), Some("1"));
    assert_eq!(second.attr("http.response.status_code"), Some("200"));
    assert_eq!(second.status, OtlpStatus::Unset);
    assert_ne!(first.span_id, second.span_id);
    assert!(second.start_unix_nanos >= first.end_unix_nanos);

    // Each try told the upstream its own span.
    let parents: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| traceparent(r.header("traceparent").unwrap()).1)
        .collect();
    assert_eq!(parents, [first.span_id_hex(), second.span_id_hex()]);
    for span in [first, second] {
        assert_eq!(span.parent_span_id_hex(), Some(server.span_id_hex()));
        assert_eq!(span.trace_id_hex(), TRACE_ID);
    }
}

#[tokio::test]
async fn gateway_errors_mark_both_spans_as_failed() {
    let receiver = OtlpReceiver::start().await;
    let closed = portcullis_test::raw::RefusedAddr::new();
    let gw = TestGateway::start(&config(&receiver, &[closed.to_string()], "", "")).await;
    assert_eq!(get(&gw, "/x", &[]).await.status, 502);

    let spans = receiver.wait_for_spans(2, WAIT).await;
    let server = server_span(&spans);
    let attempt = attempt_spans(&spans)[0];
    assert_eq!(server.status, OtlpStatus::Error);
    assert_eq!(server.attr("error.type"), Some("upstream_connect_failed"));
    assert_eq!(
        server.attr("portcullis.reason"),
        Some("upstream_connect_failed")
    );
    assert_eq!(server.attr("http.response.status_code"), Some("502"));
    assert_eq!(attempt.status, OtlpStatus::Error);
    assert_eq!(attempt.attr("error.type"), Some("upstream_connect_failed"));
    assert_eq!(attempt.attr("http.response.status_code"), None);
    assert_eq!(
        attempt.attr("portcullis.endpoint"),
        Some(closed.to_string().as_str())
    );
}

#[tokio::test]
async fn a_rate_limited_request_names_the_policy_and_has_no_attempt() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = config(
        &receiver,
        &[origin.addr().to_string()],
        "rate_limits: [one]",
        "",
    )
        + "rate_limits:\n  - { name: one, algorithm: token_bucket, limit: 1, window: 1h }\n";
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(get(&gw, "/", &[]).await.status, 200);
    assert_eq!(get(&gw, "/", &[]).await.status, 429);

    let spans = receiver.wait_for_spans(3, WAIT).await;
    let refused: Vec<_> = spans
        .iter()
        .filter(|s| s.attr("http.response.status_code") == Some("429"))
        .collect();
    assert_eq!(refused.len(), 1, "{spans:#?}");
    let refused = refused[0];
    assert_eq!(refused.kind, SpanKind::Server);
    assert_eq!(refused.attr("portcullis.reason"), Some("rate_limited"));
    assert_eq!(refused.attr("portcullis.rate_limit.policy"), Some("one"));
    assert_eq!(refused.attr("portcullis.rate_limit.action"), Some("denied"));
    assert_eq!(
        refused.status,
        OtlpStatus::Unset,
        "4xx is not a server error"
    );
    assert!(
        !spans
            .iter()
            .any(|s| s.parent_span_id == Some(refused.span_id)),
        "no attempt"
    );
}

/// With a ratio of 0 no new trace is recorded, yet the upstream still gets a context (not
/// sampled); a caller's sampled trace is still followed (parent-based).
#[tokio::test]
async fn ratio_zero_records_no_new_traces_but_still_propagates() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = config(
        &receiver,
        &[origin.addr().to_string()],
        "",
        "sampling_ratio: 0.0",
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..5 {
        assert_eq!(get(&gw, "/", &[]).await.status, 200);
    }
    for seen in origin.requests() {
        let (trace, parent, flags) = traceparent(seen.header("traceparent").unwrap());
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(parent, "0".repeat(16));
        assert_eq!(flags, "00", "not sampled");
    }

    // The caller sampled this one: recorded whatever the ratio. Spans are exported in
    // order, so once these arrived any span of the earlier requests would have too.
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(
        get(&gw, "/", &[("traceparent", &incoming)]).await.status,
        200
    );
    let spans = receiver.wait_for_spans(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans_now = receiver.spans();
    assert_eq!(spans_now.len(), 2, "{spans_now:#?}");
    assert!(spans.iter().all(|s| s.trace_id_hex() == TRACE_ID));
    assert_eq!(tracer(&gw).dropped(), 0);
}

/// A caller's "not sampled" decision is followed at ratio 1: no spans, and the upstream is
/// told "not sampled" in the caller's trace.
#[tokio::test]
async fn an_unsampled_caller_is_followed() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let gw = TestGateway::start(&config(&receiver, &[origin.addr().to_string()], "", "")).await;
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    assert_eq!(
        get(&gw, "/a", &[("traceparent", &unsampled)]).await.status,
        200
    );
    let (trace, parent, flags) = traceparent(origin.requests()[0].header("traceparent").unwrap());
    assert_eq!(trace, TRACE_ID);
    assert_ne!(
        parent, PARENT_ID,
        "the gateway's attempt is the upstream's parent"
    );
    assert_eq!(flags, "00");

    // A request without a decision of its own is sampled (ratio 1) and arrives after.
    assert_eq!(get(&gw, "/b", &[]).await.status, 200);
    receiver.wait_for_spans(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id_hex() != TRACE_ID));
}

/// A collector that accepts connections but never answers: requests are not slowed, the
/// queue overflows and drops are counted; a collector answering 500 costs spans, not
/// requests.
#[tokio::test]
async fn export_trouble_never_reaches_requests() {
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = config(&receiver, &[origin.addr().to_string()], "", "")
        .replace(
            &receiver.endpoint(),
            &format!("http://{}", stuck.local_addr().unwrap()),
        )
        .replace(
            "batch: { schedule_delay: 20ms }",
            "batch: { schedule_delay: 1ms, max_queue_size: 4, max_batch_size: 2 }",
        );
    let gw = TestGateway::start(&yaml).await;
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&gw, "/", &[]).await.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests were held up"
    );
    // 40 spans: the exporter holds one batch (2), the queue 4; the rest are dropped.
    assert!(
        tracer(&gw).dropped() >= 30,
        "dropped {}",
        tracer(&gw).dropped()
    );

    receiver.set_status(500);
    let gw = TestGateway::start(&config(&receiver, &[origin.addr().to_string()], "", "")).await;
    assert_eq!(get(&gw, "/", &[]).await.status, 200);
    eventually("2 spans counted as failed", || tracer(&gw).failed() == 2).await;
    assert_eq!(tracer(&gw).exported(), 0);
    assert_eq!(get(&gw, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn shutdown_sends_the_queued_spans() {
    let receiver = OtlpReceiver::start().await;
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = config(&receiver, &[origin.addr().to_string()], "", "")
        .replace("schedule_delay: 20ms", "schedule_delay: 1h");
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(get(&gw, "/", &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.requests(), 0, "the batch waits for its delay");
    gw.shutdown().await;
    assert_eq!(receiver.spans().len(), 2, "flushed on shutdown");
}

#[tokio::test]
async fn without_an_endpoint_there_is_no_tracer_and_no_context_is_added() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = format!(
        "admin: {{ enabled: false }}\n\
         listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\n\
         upstreams:\n  - name: backend\n    endpoints: [{{ address: \"{}\" }}]\n\
         routes:\n  - name: app\n    action: {{ proxy: {{ upstream: backend }} }}\n\
         telemetry:\n  tracing: {{ sampling_ratio: 1.0 }}\n",
        origin.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    assert!(gw.gateway().shared().telemetry.tracer.is_none());
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(
        get(&gw, "/", &[("traceparent", &incoming)]).await.status,
        200
    );
    // Passed through untouched, as any other header.
    assert_eq!(
        origin.requests()[0].header("traceparent"),
        Some(incoming.as_str())
    );
}
