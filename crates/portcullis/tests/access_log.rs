//! Black-box tests of the JSON access log: a gateway in this process, real origins and
//! clients, the log written to a file (or a pipe) in a temp directory of its own, each line
//! parsed and checked field by field. Covers a proxied request, a gateway refusal of each
//! kind (no route, rate limit), a retry, redaction, sampling, the periodic and shutdown
//! flushes, and a writer that cannot keep up (lines dropped and counted, requests unharmed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::Request;
use http_body_util::Full;
use portcullis::telemetry::access_log::AccessLog;
use portcullis_test::{
    Behavior, Origin, ResponseSpec, TempDir, TestClient, TestGateway, TestResponse,
};
use serde_json::Value;
use tokio::time::Instant;

/// Upper bound for a whole test: a hang fails the test instead of blocking the suite.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, test)
        .await
        .expect("test did not finish within the hang guard")
}

/// A config: listener `main` (trusting `X-Forwarded-For` from loopback), upstream `app` at
/// `origin`, the route lines given (YAML list items indented by two spaces), policies
/// `rate_limits`, and the access log section `{ enabled: true, output: <log>, <extra> }`.
fn config(origin: &Origin, log: &Path, extra: &str, rate_limits: &str, routes: &str) -> String {
    format!(
        "admin: {{ enabled: false }}\n\
         server: {{ drain_timeout: 1s }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    \
         trusted_proxies: [127.0.0.0/8]\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n\
         rate_limits:\n{rate_limits}\n\
         routes:\n{routes}\n\
         telemetry:\n  access_log: {{ enabled: true, output: \"{}\"{extra} }}\n",
        origin.addr(),
        log.display(),
    )
}

const CATCH_ALL: &str = "  - name: app\n    action: { proxy: { upstream: app } }";

async fn start(yaml: &str) -> TestGateway {
    portcullis_test::init_tracing();
    TestGateway::start(yaml).await
}

fn access_log(gw: &TestGateway) -> &AccessLog {
    gw.gateway()
        .shared()
        .telemetry
        .access_log
        .as_ref()
        .expect("access log enabled")
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("invalid JSON line ({e}): {line}"))
        })
        .collect()
}

/// The log's lines once there are at least `n`. A line is written when the response body
/// has ended on the gateway's side, which may be just after the client saw the response.
async fn lines(gw: &TestGateway, path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(access_log(gw).flush(Duration::from_secs(5)).await);
        let lines = read_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} lines, have {}: {lines:#?}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn get(gw: &TestGateway, path: &str) -> TestResponse {
    TestClient::http1().get(&gw.url("main", path)).await
}

/// The line whose request id is the response's.
fn line_of<'a>(lines: &'a [Value], resp: &TestResponse) -> &'a Value {
    let id = resp.header("x-request-id").expect("x-request-id");
    lines
        .iter()
        .find(|l| l["request_id"] == id)
        .unwrap_or_else(|| panic!("no line for request {id}: {lines:#?}"))
}

#[allow(clippy::disallowed_types)] // The line's wall-clock time is compared with the clock.
fn now_since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

#[allow(clippy::disallowed_types)] // As above.
fn parse_time(text: &str) -> Duration {
    humantime::parse_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

#[tokio::test]
async fn a_proxied_request_is_logged_field_by_field() {
    bounded(async {
        let dir = TempDir::new("proxied");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::fixed(200, "1234567")).await;
        let gw = start(&config(&origin, &log, "", "", CATCH_ALL)).await;
        let before = now_since_epoch();
        let url = gw.url("main", "/echo/x?a=1&b=%22two%22");
        let resp = TestClient::http1()
            .request(request(
                "POST",
                &url,
                &[
                    ("user-agent", "tester/1.0"),
                    ("x-forwarded-for", "203.0.113.7"),
                ],
                "hello",
            ))
            .await;
        assert_eq!(resp.status, 200);
        let after = now_since_epoch();
        let lines = lines(&gw, &log, 1).await;
        assert_eq!(lines.len(), 1);
        let line = &lines[0];

        let time = line["time"].as_str().unwrap();
        assert_eq!(time.len(), 27, "{time}: microseconds, UTC");
        assert!(time.ends_with('Z'));
        let arrival = parse_time(time);
        assert!(
            before <= arrival + Duration::from_millis(1) && arrival <= after,
            "{time}"
        );
        assert_eq!(line["request_id"], resp.header("x-request-id").unwrap());
        assert_eq!(line["trace_id"], Value::Null, "no tracing configured");
        assert_eq!(
            line["client_ip"], "203.0.113.7",
            "from the trusted X-Forwarded-For"
        );
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(line["listener"], "main");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["host"], gw.addr("main").to_string());
        assert_eq!(line["path"], "/echo/x?a=1&b=%22two%22");
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert_eq!(line["user_agent"], "tester/1.0");
        assert!(line.get("headers").is_none(), "no headers configured");
        assert_eq!(line["route"], "app");
        assert_eq!(line["upstream"], "app");
        assert_eq!(line["endpoint"], origin.addr().to_string());
        assert_eq!(line["attempts"], 1);
        assert_eq!(line["status"], 200);
        assert_eq!(line["reason"], Value::Null);
        assert_eq!(line["rate_limit_policy"], Value::Null);
        assert_eq!(line["rate_limit_action"], Value::Null);
        assert_eq!(line["bytes_in"], 5);
        assert_eq!(line["bytes_out"], 7);
        let duration = line["duration_us"].as_u64().unwrap();
        assert!(
            duration <= (after - before).as_micros() as u64,
            "{duration}µs"
        );
        assert_eq!(line["body_complete"], true);
        assert_eq!(line["body_failed"], false);
        assert_eq!(line.as_object().unwrap().len(), 24);
    })
    .await;
}

#[tokio::test]
async fn http2_requests_show_their_protocol_and_authority() {
    bounded(async {
        let dir = TempDir::new("h2");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(204)).await;
        let gw = start(&config(&origin, &log, "", "", CATCH_ALL)).await;
        let resp = TestClient::http2().get(&gw.url("main", "/h2")).await;
        assert_eq!(resp.status, 204);
        let lines = lines(&gw, &log, 1).await;
        let line = line_of(&lines, &resp);
        assert_eq!(line["protocol"], "HTTP/2.0");
        assert_eq!(line["host"], gw.addr("main").to_string());
        assert_eq!(line["status"], 204);
        assert_eq!(line["bytes_out"], 0);
    })
    .await;
}

#[tokio::test]
async fn refusals_show_the_reason_and_the_rate_limit_policy() {
    bounded(async {
        let dir = TempDir::new("refusals");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(200)).await;
        let routes = "  - name: api\n    match: { path: { prefix: /api } }\n    \
                      rate_limits: [one]\n    action: { proxy: { upstream: app } }";
        let policies = "  - { name: one, limit: 1, window: 1h }";
        let gw = start(&config(&origin, &log, "", policies, routes)).await;

        let missing = get(&gw, "/elsewhere").await;
        assert_eq!(missing.status, 404);
        let allowed = get(&gw, "/api/a").await;
        assert_eq!(allowed.status, 200);
        let limited = get(&gw, "/api/b").await;
        assert_eq!(limited.status, 429);

        let lines = lines(&gw, &log, 3).await;
        let line = line_of(&lines, &missing);
        assert_eq!(line["status"], 404);
        assert_eq!(line["reason"], "no_route");
        assert_eq!(line["route"], Value::Null);
        assert_eq!(line["upstream"], Value::Null);
        assert_eq!(line["endpoint"], Value::Null);
        assert_eq!(line["attempts"], 0);
        assert_eq!(line["path"], "/elsewhere");
        assert!(
            line["bytes_out"].as_u64().unwrap() > 0,
            "the JSON error body"
        );

        let line = line_of(&lines, &allowed);
        assert_eq!(
            line["rate_limit_policy"],
            Value::Null,
            "allowing is not acting"
        );
        assert_eq!(line["reason"], Value::Null);

        let line = line_of(&lines, &limited);
        assert_eq!(line["status"], 429);
        assert_eq!(line["reason"], "rate_limited");
        assert_eq!(line["rate_limit_policy"], "one");
        assert_eq!(line["rate_limit_action"], "denied");
        assert_eq!(line["route"], "api");
        assert_eq!(line["attempts"], 0);
        assert_eq!(line["endpoint"], Value::Null);
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_retried_request_shows_two_attempts() {
    bounded(async {
        let dir = TempDir::new("retry");
        let log = dir.file("access.log");
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let origin = Origin::start(Behavior::scripted(move |_| {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                ResponseSpec::new(503)
            } else {
                ResponseSpec::new(200).body("ok")
            }
        }))
        .await;
        let routes = "  - name: app\n    retry: { attempts: 2, on: [], statuses: [503] }\n    \
                      action: { proxy: { upstream: app } }";
        let gw = start(&config(&origin, &log, "", "", routes)).await;
        let resp = get(&gw, "/flaky").await;
        assert_eq!(resp.status, 200);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        let lines = lines(&gw, &log, 1).await;
        let line = line_of(&lines, &resp);
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["status"], 200);
        assert_eq!(line["reason"], Value::Null);
        assert_eq!(line["endpoint"], origin.addr().to_string());
        assert_eq!(line["bytes_out"], 2);
    })
    .await;
}

#[tokio::test]
async fn query_parameters_and_headers_are_redacted_by_name() {
    bounded(async {
        let dir = TempDir::new("redact");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(200)).await;
        let extra = ", redact_query_params: [token, Session], \
                     headers: [x-tenant, authorization, x-absent]";
        let gw = start(&config(&origin, &log, extra, "", CATCH_ALL)).await;
        let url = gw.url("main", "/q?token=s3cret&a=b&session=abc&tokens=keep");
        let resp = TestClient::http1()
            .request(request(
                "GET",
                &url,
                &[("x-tenant", "acme"), ("authorization", "Bearer s3cret")],
                "",
            ))
            .await;
        assert_eq!(resp.status, 200);
        // The origin still gets the real values: redaction is for the log only.
        assert_eq!(
            origin.requests()[0].header("authorization"),
            Some("Bearer s3cret")
        );
        let lines = lines(&gw, &log, 1).await;
        let line = line_of(&lines, &resp);
        assert_eq!(
            line["path"],
            "/q?token=REDACTED&a=b&session=REDACTED&tokens=keep"
        );
        assert_eq!(
            line["headers"],
            serde_json::json!({ "x-tenant": "acme", "authorization": "REDACTED" })
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("abc"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn with_sampling_at_zero_only_errors_and_refusals_are_logged() {
    bounded(async {
        let dir = TempDir::new("sampling");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(200)).await;
        let routes = "  - name: api\n    match: { path: { prefix: /api } }\n    \
                      rate_limits: [two]\n    action: { proxy: { upstream: app } }";
        let policies = "  - { name: two, limit: 2, window: 1h }";
        let gw = start(&config(
            &origin,
            &log,
            ", sample_success: 0.0",
            policies,
            routes,
        ))
        .await;
        assert_eq!(get(&gw, "/api/1").await.status, 200);
        assert_eq!(get(&gw, "/api/2").await.status, 200);
        let limited = get(&gw, "/api/3").await;
        assert_eq!(limited.status, 429);
        let missing = get(&gw, "/nowhere").await;
        assert_eq!(missing.status, 404);

        let lines = lines(&gw, &log, 2).await;
        // Give a stray success line the time to show up before counting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(access_log(&gw).flush(Duration::from_secs(5)).await);
        let lines_again = read_lines(&log);
        assert_eq!(lines_again.len(), 2, "{lines_again:#?}");
        assert_eq!(line_of(&lines, &limited)["status"], 429);
        assert_eq!(line_of(&lines, &missing)["status"], 404);
        assert_eq!(access_log(&gw).dropped(), 0);
        assert_eq!(access_log(&gw).written(), 2);
    })
    .await;
}

#[tokio::test]
async fn lines_reach_the_file_without_a_flush_being_asked_for() {
    bounded(async {
        let dir = TempDir::new("periodic");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(200)).await;
        let gw = start(&config(
            &origin,
            &log,
            ", flush_interval: 20ms",
            "",
            CATCH_ALL,
        ))
        .await;
        let resp = get(&gw, "/tail").await;
        assert_eq!(resp.status, 200);
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_lines(&log).is_empty() {
            assert!(Instant::now() < deadline, "no line within 5s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(line_of(&read_lines(&log), &resp)["path"], "/tail");
    })
    .await;
}

#[tokio::test]
async fn shutdown_writes_out_what_the_log_holds() {
    bounded(async {
        let dir = TempDir::new("shutdown");
        let log = dir.file("access.log");
        let origin = Origin::start(Behavior::Status(200)).await;
        // No periodic flush during the test: only the shutdown can write the lines out.
        let gw = start(&config(
            &origin,
            &log,
            ", flush_interval: 60s",
            "",
            CATCH_ALL,
        ))
        .await;
        for i in 0..5 {
            assert_eq!(get(&gw, &format!("/n/{i}")).await.status, 200);
        }
        gw.shutdown().await;
        let lines = read_lines(&log);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        for i in 0..5 {
            assert!(lines.iter().any(|l| l["path"] == format!("/n/{i}")));
        }
    })
    .await;
}

/// The log goes into a pipe that nobody reads until every request is done: the writer
/// finds it full and keeps its lines, the small buffer fills, and further lines are dropped and counted while
/// requests go on at full speed. Once the pipe is read, every counted line arrives.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_cannot_keep_up_drops_and_counts_lines_instead_of_blocking() {
    use std::io::BufRead as _;

    const REQUESTS: usize = 1500;
    bounded(async {
        let dir = TempDir::new("overflow");
        let fifo = dir.file("access.pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");

        // The gateway refuses a pipe without a reader, so one is there before it starts
        // (opening without blocking: nothing writes yet) and stays until the end. The
        // reader that reads opens the pipe (opening blocks until the gateway opens its end)
        // and reads only once told to.
        let _present = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap()
        };
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let read = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (fifo, read) = (fifo.clone(), read.clone());
            std::thread::spawn(move || {
                let file = std::fs::File::open(&fifo).unwrap();
                wait.recv().unwrap();
                for line in std::io::BufReader::new(file).lines() {
                    let line = line.unwrap();
                    serde_json::from_str::<Value>(&line)
                        .unwrap_or_else(|e| panic!("invalid JSON line ({e}): {line}"));
                    read.fetch_add(1, Ordering::SeqCst);
                }
            })
        };

        let origin = Origin::start(Behavior::fixed(200, "x")).await;
        let extra = ", buffer: 4, flush_interval: 10ms";
        let gw = start(&config(&origin, &fifo, extra, "", CATCH_ALL)).await;
        let client = TestClient::http1();
        let url = gw.url("main", "/many");
        let started = Instant::now();
        // At most 64 at a time: enough to keep the writer's tiny buffer overflowing, and few
        // enough that a loaded machine does not turn the test into one of upstream queueing.
        let statuses = futures_util::stream::iter(0..REQUESTS)
            .map(|_| {
                let (client, url) = (&client, &url);
                async move { client.get(url).await.status }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>();
        // 1500 requests through a blocked log must not wait for it.
        let statuses = tokio::time::timeout(Duration::from_secs(20), statuses)
            .await
            .expect("requests were held up by the access log");
        let took = started.elapsed();
        let not_ok: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
        assert!(not_ok.is_empty(), "statuses other than 200: {not_ok:?}");

        let log = access_log(&gw);
        // The last lines are recorded when their bodies end, just after the responses.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let dropped = log.dropped();
        assert!(
            dropped > 0,
            "the blocked writer should have made the buffer overflow"
        );

        go.send(()).unwrap();
        // Every request's line has been written or dropped, none lost in between.
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.dropped() + log.written() < REQUESTS as u64 {
            assert!(Instant::now() < deadline, "lines unaccounted for");
            assert!(
                log.flush(Duration::from_secs(10)).await,
                "flush once the pipe is read"
            );
        }
        let written = log.written();
        assert_eq!(log.failed(), 0);
        assert_eq!(log.dropped(), dropped, "nothing dropped after the requests");
        assert_eq!(dropped + written, REQUESTS as u64, "requests took {took:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while read.load(Ordering::SeqCst) < written as usize {
            assert!(Instant::now() < deadline, "lines lost in the pipe");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(read.load(Ordering::SeqCst), written as usize);
        gw.shutdown().await;
        drop(reader);
    })
    .await;
}

#[tokio::test]
async fn a_bad_output_path_fails_the_start() {
    let dir = TempDir::new("bad-output");
    let origin = Origin::start(Behavior::Status(200)).await;
    let yaml = config(
        &origin,
        &dir.file("missing/dir/access.log"),
        "",
        "",
        CATCH_ALL,
    );
    let config = portcullis_test::gateway::parse_config(&yaml, &Default::default());
    let err = portcullis::app::Gateway::start(config).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("opening access log file"), "{text}");
}
