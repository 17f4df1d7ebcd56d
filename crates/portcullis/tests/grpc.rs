//! Black-box tests of what a real gRPC client (tonic's generic client over HTTP/2 with prior
//! knowledge) sees through the gateway: a normal call goes through, and every answer the
//! gateway makes itself arrives as a trailers-only gRPC status naming the reason (deadline,
//! timeout, rate limit, no route, connect failure, open circuit, body too large), never as
//! an HTTP error that the client would turn into UNAVAILABLE.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::uri::PathAndQuery;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_test::raw::RefusedAddr;
use portcullis_test::{Behavior, Origin, TestGateway};
use tonic::{Code, Status};

/// Upper bound for a whole test: a hang fails the test instead of blocking the suite.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// The one message of the test service, both ways (the origin echoes it).
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
}

const METHOD: &str = "/test.Echo/Say";

/// Calls `path` on the gateway's `main` listener with `text`, optionally with a deadline
/// (sent as `grpc-timeout`; the client itself enforces none).
async fn call(
    gw: &TestGateway,
    path: &str,
    text: &str,
    timeout: Option<Duration>,
) -> Result<Echo, Status> {
    let channel: Client<HttpConnector, tonic::body::Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin: Uri = format!("http://{}", gw.addr("main")).parse().unwrap();
    let mut grpc = tonic::client::Grpc::with_origin(channel, origin);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(Echo { text: text.into() });
    if let Some(timeout) = timeout {
        req.set_timeout(timeout);
    }
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let path = PathAndQuery::try_from(path).unwrap();
    let call = grpc.unary(req, path, codec);
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call got no answer")
        .map(tonic::Response::into_inner)
}

/// A gateway with listener `main`, upstream `app` (HTTP/2) at `endpoint` with `upstream`
/// settings, `rate_limits` policies, and one route for `/test.Echo/` with `route` settings.
async fn gateway(endpoint: &str, upstream: &str, rate_limits: &str, route: &str) -> TestGateway {
    portcullis_test::init_tracing();
    let rate_limits = if rate_limits.is_empty() {
        " []".to_string()
    } else {
        format!("\n{rate_limits}")
    };
    TestGateway::start(&format!(
        "admin: {{ enabled: false }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n\
         upstreams:\n  - name: app\n    protocol: http2\n    \
         endpoints: [{{ address: \"{endpoint}\" }}]\n{upstream}\
         rate_limits:{rate_limits}\n\
         routes:\n  - name: echo\n    match: {{ path: {{ prefix: /test.Echo/ }} }}\n{route}    \
         action: {{ proxy: {{ upstream: app }} }}\n"
    ))
    .await
}

/// The status names the gateway's reason, in `grpc-message` and `x-portcullis-reason`, and
/// carries the request id.
fn assert_refused(result: Result<Echo, Status>, code: Code, reason: &str) -> Status {
    let status = match result {
        Ok(echo) => panic!("expected {code:?} ({reason}), the call succeeded: {echo:?}"),
        Err(status) => status,
    };
    assert_eq!(
        (status.code(), status.message()),
        (code, reason),
        "{status:?}"
    );
    let meta = status.metadata();
    assert_eq!(
        meta.get("x-portcullis-reason").unwrap().to_str().unwrap(),
        reason
    );
    assert!(meta.get("x-request-id").is_some(), "{meta:?}");
    assert_eq!(
        meta.get("content-type").unwrap().to_str().unwrap(),
        "application/grpc"
    );
    status
}

#[tokio::test]
async fn a_normal_call_goes_through() {
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::grpc()).await;
        let gw = gateway(&origin.addr().to_string(), "", "", "").await;
        let echo = call(&gw, METHOD, "hello", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(echo.text, "hello");
        // The upstream's own status passes unchanged.
        let origin = Origin::start(Behavior::grpc_status(5, "no such thing")).await;
        let gw = gateway(&origin.addr().to_string(), "", "", "").await;
        let status = call(&gw, METHOD, "x", None).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "no such thing")
        );
        assert!(status.metadata().get("x-portcullis-reason").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn running_out_of_time_is_deadline_exceeded() {
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::slow(Duration::from_secs(5), Behavior::grpc())).await;
        let addr = origin.addr().to_string();
        // The caller's deadline, 0.3 s.
        let gw = gateway(&addr, "", "", "").await;
        let result = call(&gw, METHOD, "x", Some(Duration::from_millis(300))).await;
        assert_refused(result, Code::DeadlineExceeded, "deadline_exceeded");
        // The route's timeout.
        let gw = gateway(&addr, "", "", "    timeout: 300ms\n").await;
        let result = call(&gw, METHOD, "x", None).await;
        assert_refused(result, Code::DeadlineExceeded, "upstream_timeout");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rate_limited_call_is_resource_exhausted_with_its_headers() {
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::grpc()).await;
        let gw = gateway(
            &origin.addr().to_string(),
            "",
            "  - { name: one, limit: 1, window: 1h }",
            "    rate_limits: [one]\n",
        )
        .await;
        call(&gw, METHOD, "first", None).await.unwrap();
        let status = assert_refused(
            call(&gw, METHOD, "second", None).await,
            Code::ResourceExhausted,
            "rate_limited",
        );
        let meta = status.metadata();
        assert!(meta.get("retry-after").is_some(), "{meta:?}");
        assert!(meta.get("ratelimit").is_some(), "{meta:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::grpc()).await;
        let gw = gateway(&origin.addr().to_string(), "", "", "").await;
        let result = call(&gw, "/other.Service/Call", "x", None).await;
        assert_refused(result, Code::Unimplemented, "no_route");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_and_an_open_circuit_are_unavailable() {
    tokio::time::timeout(HANG_GUARD, async {
        let refused = RefusedAddr::new();
        let breaker = "    circuit_breaker: { window: { calls: 1 }, min_calls: 1, \
                       failure_rate: 100, open_duration: 1h }\n";
        let gw = gateway(&refused.addr().to_string(), breaker, "", "").await;
        let result = call(&gw, METHOD, "x", None).await;
        assert_refused(result, Code::Unavailable, "upstream_connect_failed");
        let result = call(&gw, METHOD, "x", None).await;
        let status = assert_refused(result, Code::Unavailable, "circuit_open");
        assert!(status.metadata().get("retry-after").is_some());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_message_over_the_body_limit_is_resource_exhausted() {
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::grpc()).await;
        let gw = gateway(
            &origin.addr().to_string(),
            "",
            "",
            "    max_request_body: 1KiB\n",
        )
        .await;
        let result = call(&gw, METHOD, &"x".repeat(4096), None).await;
        assert_refused(result, Code::ResourceExhausted, "request_body_too_large");
    })
    .await
    .unwrap();
}

/// The access log records what was sent (200) and why (the reason).
#[tokio::test]
async fn the_access_log_records_the_status_sent_and_the_reason() {
    tokio::time::timeout(HANG_GUARD, async {
        let log =
            std::env::temp_dir().join(format!("portcullis-grpc-{}-access.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let origin = Origin::start(Behavior::grpc()).await;
        portcullis_test::init_tracing();
        let gw = TestGateway::start(&format!(
            "admin: {{ enabled: false }}\n\
             listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n\
             upstreams:\n  - name: app\n    protocol: http2\n    \
             endpoints: [{{ address: \"{}\" }}]\n\
             routes:\n  - name: echo\n    match: {{ path: {{ prefix: /test.Echo/ }} }}\n    \
             action: {{ proxy: {{ upstream: app }} }}\n\
             telemetry:\n  access_log: {{ enabled: true, output: \"{}\" }}\n",
            origin.addr(),
            log.display()
        ))
        .await;
        let result = call(&gw, "/other.Service/Call", "x", None).await;
        assert_refused(result, Code::Unimplemented, "no_route");
        let access_log = gw.gateway().shared().telemetry.access_log.as_ref().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let line = loop {
            assert!(access_log.flush(Duration::from_secs(5)).await);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().next() {
                break serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
            assert!(tokio::time::Instant::now() < deadline, "no line logged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["reason"], "no_route", "{line}");
        let _ = std::fs::remove_file(&log);
    })
    .await
    .unwrap();
}
