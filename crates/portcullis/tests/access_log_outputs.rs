//! Black-box tests of access-log outputs that are not plain files: opening one never blocks
//! the start (a named pipe without a reader fails it, with an error that says so), a reader
//! that goes away and comes back is logged once each way, an output that keeps failing is
//! logged once, and requests are served at full speed while a pipe is not read.
//!
//! The gateway's own log lines are captured by a subscriber this test binary installs for
//! the whole process (the writer thread is not a tokio thread), keyed by the output's path.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use portcullis::telemetry::access_log::AccessLog;
use portcullis_test::{Behavior, Origin, TempDir, TestClient, TestGateway};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

/// How long a start may take before it counts as hung.
const START_GUARD: Duration = Duration::from_secs(10);

/// Upper bound for a whole test: a hang fails the test instead of blocking the suite.
const HANG_GUARD: Duration = Duration::from_secs(30);

// ----- the gateway's log lines about its outputs -----

/// `(output, message)` of every event that names an `output`.
static EVENTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

#[derive(Default)]
struct Fields {
    output: Option<String>,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "output" => self.output = Some(format!("{value:?}").trim_matches('"').to_string()),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(output) = fields.output {
            EVENTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((output, fields.message));
        }
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("portcullis::telemetry", tracing::Level::INFO);
        let subscriber = tracing_subscriber::registry().with(Capture.with_filter(filter));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The gateway's messages about `output` that start with `prefix`.
fn logged(output: &Path, prefix: &str) -> Vec<String> {
    let output = output.display().to_string();
    EVENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(o, m)| *o == output && m.starts_with(prefix))
        .map(|(_, m)| m.clone())
        .collect()
}

const FAILING: &str = "access log output failing: ";
const RECOVERED: &str = "access log output works again";

// ----- files, pipes and configs -----

/// A reader of a named pipe that never blocks: opening it does not wait for a writer, and
/// reading takes what the pipe holds.
struct PipeReader {
    file: File,
    text: String,
}

impl PipeReader {
    fn open(path: &Path) -> PipeReader {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        PipeReader {
            file,
            text: String::new(),
        }
    }

    /// Reads what the pipe holds; returns the complete lines read so far.
    fn lines(&mut self) -> usize {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.text.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the pipe: {e}"),
            }
        }
        let complete = self.text.rfind('\n').map_or(0, |i| i + 1);
        for line in self.text[..complete].lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("invalid JSON line ({e}): {line}"));
        }
        self.text[..complete].lines().count()
    }
}

fn config(origin: &Origin, output: &Path, extra: &str) -> String {
    format!(
        "admin: {{ enabled: false }}\n\
         server: {{ drain_timeout: 1s }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n\
         routes:\n  - name: app\n    action: {{ proxy: {{ upstream: app }} }}\n\
         telemetry:\n  access_log: {{ enabled: true, output: \"{}\"{extra} }}\n",
        origin.addr(),
        output.display(),
    )
}

fn access_log(gw: &TestGateway) -> &AccessLog {
    gw.gateway()
        .shared()
        .telemetry
        .access_log
        .as_ref()
        .expect("access log enabled")
}

/// Starts a gateway on a thread of its own (a start that blocks the thread cannot be timed
/// out from the same thread) and returns the start's error, or `None` once it started; a
/// start that takes longer than `START_GUARD` fails the test. `unblock` is called then, so
/// that the hung start can end.
fn start_result(yaml: &str, unblock: impl FnOnce()) -> Option<String> {
    let config = portcullis_test::gateway::parse_config(yaml, &Default::default());
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let outcome = match portcullis::app::Gateway::start(config).await {
                Ok(gw) => {
                    gw.shutdown().await;
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };
            let _ = done.send(outcome);
        });
    });
    match result.recv_timeout(START_GUARD) {
        Ok(outcome) => outcome,
        Err(_) => {
            unblock();
            panic!("the start hung on opening the access log output");
        }
    }
}

/// Opening an output never blocks the start: each kind of file either starts the gateway or
/// fails the start at once with an error naming the problem.
#[test]
fn opening_an_output_never_blocks_the_start() {
    let dir = TempDir::new("kinds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(Origin::start(Behavior::Status(200)));

    // A named pipe nobody reads: opening it for writing would wait for a reader forever.
    let fifo = dir.fifo("no-reader.pipe");
    let unblock = || drop(PipeReader::open(&fifo));
    let err = start_result(&config(&origin, &fifo, ""), unblock).expect("start must fail");
    assert!(
        err.contains("no reader on the named pipe"),
        "the error names the problem: {err}"
    );
    assert!(err.contains("no-reader.pipe"), "and the pipe: {err}");

    // A Unix socket cannot be opened at all.
    let socket = dir.file("log.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = start_result(&config(&origin, &socket, ""), || {}).expect("start must fail");
    assert!(
        err.contains("Unix socket"),
        "the error names the problem: {err}"
    );

    // A named pipe with a reader, and a character device, start the gateway.
    let fifo = dir.fifo("read.pipe");
    let reader = PipeReader::open(&fifo);
    let unblock = || drop(PipeReader::open(&fifo));
    assert_eq!(start_result(&config(&origin, &fifo, ""), unblock), None);
    drop(reader);
    let null = Path::new("/dev/null");
    assert_eq!(start_result(&config(&origin, null, ""), || {}), None);
}

async fn send(gw: &TestGateway, client: &TestClient, n: usize) {
    let url = gw.url("main", "/x");
    let statuses = futures_util::stream::iter(0..n)
        .map(|_| client.get(&url))
        .buffer_unordered(32)
        .map(|r| r.status)
        .collect::<Vec<_>>();
    let statuses = tokio::time::timeout(Duration::from_secs(20), statuses)
        .await
        .expect("requests were held up by the access log");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// Waits until the pipe has `n` complete lines (the writer takes them on its next tick).
async fn read_until(reader: &mut PipeReader, gw: &TestGateway, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reader.lines() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lines did not arrive"
        );
        access_log(gw).flush(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A pipe that is not read fills up: lines are dropped and counted, requests go on, and that
/// is no failure. Its reader going away is logged once however long it stays away, and its
/// coming back once; lines then reach the new reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_going_away_and_coming_back_is_logged_once_each_way() {
    capture_logs();
    tokio::time::timeout(HANG_GUARD, async {
        let dir = TempDir::new("reader");
        let fifo = dir.fifo("access.pipe");
        let mut reader = PipeReader::open(&fifo);
        let origin = Origin::start(Behavior::fixed(200, "x")).await;
        let gw =
            TestGateway::start(&config(&origin, &fifo, ", buffer: 4, flush_interval: 10ms")).await;
        let client = TestClient::http1();
        let log = access_log(&gw);

        send(&gw, &client, 3).await;
        read_until(&mut reader, &gw, 3).await;

        // Not read: a pipe holds 64 KiB (about 130 lines), so 600 requests overflow it.
        send(&gw, &client, 600).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            log.dropped() > 0,
            "the stuck pipe should have dropped lines"
        );
        assert_eq!(log.failed(), 0, "a full pipe is not a failure");
        assert!(logged(&fifo, FAILING).is_empty());
        // Read again until every line is accounted for and every written one was read (no
        // line is left half in the pipe).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            log.flush(Duration::from_secs(5)).await;
            let read = reader.lines() as u64;
            if log.written() + log.dropped() == 603 && read == log.written() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lines unaccounted for"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The reader goes away: every write fails, for many ticks and flushes.
        drop(reader);
        for _ in 0..20 {
            send(&gw, &client, 2).await;
            log.flush(Duration::from_secs(5)).await;
        }
        assert!(log.failed() >= 30, "lines lost: {}", log.failed());
        let failing = logged(&fifo, FAILING);
        assert_eq!(
            failing.len(),
            1,
            "one line per run of failures: {failing:#?}"
        );
        assert!(failing[0].contains("lines dropped so far"), "{failing:?}");
        assert!(logged(&fifo, RECOVERED).is_empty());

        // A new reader: the lines reach it and the recovery is logged once.
        let mut reader = PipeReader::open(&fifo);
        for _ in 0..10 {
            send(&gw, &client, 2).await;
            log.flush(Duration::from_secs(5)).await;
        }
        read_until(&mut reader, &gw, 20).await;
        assert_eq!(logged(&fifo, RECOVERED).len(), 1);
        assert_eq!(logged(&fifo, FAILING).len(), 1);
        gw.shutdown().await;
    })
    .await
    .expect("test did not finish within the hang guard");
}

/// An output that fails every write (a full disk) is logged once, not once per flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_keeps_failing_is_logged_once() {
    capture_logs();
    let full = Path::new("/dev/full");
    if OpenOptions::new().append(true).open(full).is_err() {
        return; // no such device here
    }
    tokio::time::timeout(HANG_GUARD, async {
        let origin = Origin::start(Behavior::fixed(200, "x")).await;
        let gw = TestGateway::start(&config(&origin, full, ", flush_interval: 10ms")).await;
        let client = TestClient::http1();
        let log = access_log(&gw);
        for _ in 0..20 {
            send(&gw, &client, 1).await;
            log.flush(Duration::from_secs(5)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(log.failed(), 20);
        let failing = logged(full, FAILING);
        assert_eq!(
            failing.len(),
            1,
            "one line per run of failures: {failing:#?}"
        );
        let recovered = logged(full, RECOVERED);
        assert!(
            recovered.is_empty(),
            "it never worked again: {recovered:#?}"
        );
        gw.shutdown().await;
    })
    .await
    .expect("test did not finish within the hang guard");
}
