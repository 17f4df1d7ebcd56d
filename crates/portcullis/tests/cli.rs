//! Black-box tests of the `portcullis` binary: `check`, `schema`, `run` refusing a config,
//! `--version` with the commit, and `run` itself: the start-up line, SIGHUP ignored, a port in
//! use reported once, the admin token kept out of the log.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env_remove("PORTCULLIS_PUBLIC_ADDR")
        .env_remove("PORTCULLIS_DEMO_ADDR")
        .env_remove("PORTCULLIS_ADMIN_ADDR")
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run portcullis")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file in a fresh directory under the system temp dir, removed on drop.
struct TempConfig {
    dir: PathBuf,
    file: PathBuf,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write config");
        TempConfig { dir, file }
    }

    fn path(&self) -> &str {
        self.file.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn example_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/configs exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

#[test]
fn check_passes_on_every_example_config() {
    let files = example_configs();
    assert!(!files.is_empty(), "no example configs found");
    for file in files {
        let path = file.to_str().expect("utf-8 path");
        let out = portcullis(&["check", path]);
        assert!(
            out.status.success(),
            "{path} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(stdout(&out), format!("{path}: ok\n"));
    }
}

const INVALID: &str = r#"
listeners:
  - { name: public, address: "127.0.0.1:8080" }
  - { name: public, address: "127.0.0.1:8080" }
upstreams:
  - { name: api, endpoints: [{ address: "10.0.0.1:80", weight: 0 }] }
routes:
  - { name: a, action: { proxy: { upstream: api } } }
  - { name: b, listeners: [private], action: { proxy: { upstream: api } } }
  - { name: c, action: { proxy: { upstream: billing } } }
  - { name: d, match: { path: { regex: "(" } }, action: { redirect: { status: 200 } } }
"#;

#[test]
fn check_lists_every_validation_problem() {
    let config = TempConfig::new("invalid.yaml", INVALID);
    let file = config.path();
    let out = portcullis(&["check", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let expected: Vec<String> = [
        "listeners[1].name: duplicate listener name \"public\" (also listeners[0])",
        "listeners[1].address: address 127.0.0.1:8080 is already used by listeners[0]",
        "upstreams[0].endpoints[0].weight: must be between 1 and 1000, got 0",
        "routes[1].listeners[0]: unknown listener \"private\"",
        "routes[2].action.proxy.upstream: unknown upstream \"billing\"",
        "routes[3].match.path.regex: invalid regex \"(\": unclosed group",
        "routes[3].action.redirect.status: must be one of 301, 302, 303, 307, 308, got 200",
    ]
    .iter()
    .map(|line| format!("{file}: {line}"))
    .collect();
    let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(got, expected);
}

#[test]
fn check_lists_every_circuit_breaker_problem() {
    let config = TempConfig::new(
        "breaker.yaml",
        r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
upstreams:
  - name: ok
    endpoints: [{ address: "10.0.0.1:80" }]
    circuit_breaker: { window: { duration: 30s }, failure_statuses: [429] }
  - name: api
    endpoints: [{ address: "10.0.0.2:80" }]
    circuit_breaker:
      window: { calls: 10 }
      min_calls: 20
      failure_rate: 0
      open_duration: 30s
      max_open_duration: 10s
      failure_on: []
      failure_grpc_statuses: [0]
routes:
  - { name: a, action: { proxy: { upstream: api } } }
"#,
    );
    let file = config.path();
    let out = portcullis(&["check", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let expected: Vec<String> = [
        "upstreams[1].circuit_breaker.min_calls: 20 exceeds window.calls (10): the breaker could never trip",
        "upstreams[1].circuit_breaker.failure_rate: must be 1..=100, got 0",
        "upstreams[1].circuit_breaker.max_open_duration: 10s must not be below open_duration (30s)",
        "upstreams[1].circuit_breaker.failure_grpc_statuses[0]: gRPC status 0 is OK, not a failure",
    ]
    .iter()
    .map(|line| format!("{file}: {line}"))
    .collect();
    let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(got, expected);
}

#[test]
fn check_lists_every_bad_route_when_parsing() {
    let config = TempConfig::new(
        "unparsable.yaml",
        r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
routes:
  - { name: a, action: { proxy: { upstrem: api } } }
  - { name: b, action: { respond: { status: "teapot" } } }
  - { action: { respond: {} } }
"#,
    );
    let file = config.path();
    let out = portcullis(&["check", file]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(&format!(
        "{file}: routes[0].action.proxy.upstrem: unknown field `upstrem`, expected `upstream`"
    )));
    assert!(lines[1].starts_with(&format!("{file}: routes[1].action.respond.status: ")));
    assert_eq!(lines[2], format!("{file}: routes[2]: missing field `name`"));
}

#[test]
fn check_reports_each_file_and_unset_variables() {
    let good = example_configs().remove(0);
    let good = good.to_str().expect("utf-8 path");
    let bad = TempConfig::new(
        "env.yaml",
        "listeners:\n  - name: a\n    address: ${PORTCULLIS_TEST_SURELY_UNSET_VAR}\n",
    );
    let missing = "/nonexistent/portcullis.yaml";
    let out = portcullis(&["check", good, bad.path(), missing]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], format!("{good}: ok"));
    assert_eq!(
        lines[1],
        format!(
            "{}: line 3: environment variable \"PORTCULLIS_TEST_SURELY_UNSET_VAR\" is not set and has no default (write ${{PORTCULLIS_TEST_SURELY_UNSET_VAR:-default}} to give one)",
            bad.path()
        )
    );
    assert!(lines[2].starts_with(&format!("{missing}: cannot read {missing}: ")));
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let config = TempConfig::new("invalid.yaml", INVALID);
    let out = portcullis(&["run", "--config", config.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: routes[2].action.proxy.upstream: unknown upstream \"billing\"",
            config.path()
        )),
        "{err}"
    );
}

#[test]
fn schema_is_json_describing_the_config() {
    let out = portcullis(&["schema"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert!(schema["properties"]["listeners"].is_object(), "{schema}");
    assert!(stdout(&out).contains("\"listeners\""));
}

#[test]
fn version_names_the_commit() {
    let out = portcullis(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let rest = text
        .trim()
        .strip_prefix(&format!("portcullis {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert!(
            rest == head || rest == format!("{head}-dirty"),
            "{rest:?} is not {head:?}"
        ),
        None => assert_eq!(rest, "unknown"),
    }
}

/// `portcullis run` in the background, its stderr collected line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<String>>,
}

/// How long the gateway gets to start or to log a line.
const WAIT: Duration = Duration::from_secs(20);

impl Running {
    fn start(config: &TempConfig, env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config", config.path()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock()
                    .expect("log lock")
                    .push_str(&format!("{line}\n"));
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, log }
    }

    /// The next line of stderr containing `needle`; panics with the log when no line comes
    /// for `WAIT`.
    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?}; log:\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The `addr=` of the next line containing `needle` (e.g. "listening").
    fn addr(&self, needle: &str) -> SocketAddr {
        let line = self.wait_for(needle);
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {line:?}"))
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then the exit status and the whole log.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        // stderr ends (the reader thread hangs up) when the process is gone.
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not stop: {}", self.log()),
            }
        }
        let code = self.child.wait().expect("wait").code();
        (code, self.log())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` (a complete HTTP/1.1 request with `connection: close`), returns the answer.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n"),
    )
}

const HELLO: &str = r#"
admin: { enabled: false }
listeners: [{ name: public, address: "127.0.0.1:0" }]
routes: [{ name: hello, action: { respond: { body: "hello\n" } } }]
"#;

#[test]
fn sighup_is_logged_and_ignored() {
    let config = TempConfig::new("hello.yaml", HELLO);
    let mut gw = Running::start(&config, &[]);
    let addr = gw.addr("listening");
    assert!(get(addr, "/", "").starts_with("HTTP/1.1 200"));
    for _ in 0..2 {
        gw.signal("HUP");
        gw.wait_for("reload is not supported yet; ignoring SIGHUP");
        assert!(gw.is_alive(), "SIGHUP ended the gateway: {}", gw.log());
        let answer = get(addr, "/", "");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let (code, log) = gw.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn start_is_logged_with_version_config_and_counts() {
    let config = TempConfig::new("hello.yaml", HELLO);
    let gw = Running::start(&config, &[]);
    let line = gw.wait_for("starting portcullis");
    for part in [
        format!("version=\"{} (", env!("CARGO_PKG_VERSION")),
        format!("config={}", config.path()),
        "listeners=public=127.0.0.1:0".to_string(),
        "routes=1".to_string(),
        "upstreams=0".to_string(),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
    assert!(line.contains(" INFO "), "{line}");
}

#[test]
fn a_port_in_use_is_reported_once_as_not_started() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = TempConfig::new(
        "taken.yaml",
        &format!(
            "admin: {{ enabled: false }}\nlisteners: [{{ name: public, address: \"{addr}\" }}]\n"
        ),
    );
    let out = portcullis(&["run", "--config", config.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "portcullis: cannot start: binding listener \"public\" on {addr}: "
        )),
        "{err}"
    );
    assert!(!err.contains("stopped"), "{err}");
}

#[test]
fn the_admin_token_never_reaches_the_log() {
    const TOKEN: &str = "cli-test-admin-token-5f1e";
    let config = TempConfig::new(
        "admin.yaml",
        r#"
admin: { address: "127.0.0.1:0", auth_token: { env: PORTCULLIS_TEST_ADMIN_TOKEN } }
listeners: [{ name: public, address: "127.0.0.1:0" }]
routes: [{ name: hello, action: { respond: { body: "hello\n" } } }]
"#,
    );
    let gw = Running::start(
        &config,
        &[
            ("PORTCULLIS_TEST_ADMIN_TOKEN", TOKEN),
            ("RUST_LOG", "trace"),
        ],
    );
    let admin = gw.addr("admin listening");
    let answer = get(
        admin,
        "/api/config",
        &format!("authorization: Bearer {TOKEN}\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("PORTCULLIS_TEST_ADMIN_TOKEN") && !answer.contains(TOKEN),
        "{answer}"
    );
    let answer = get(admin, "/api/config", "authorization: Bearer wrong\r\n");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = get(admin, "/api/config", "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let (code, log) = gw.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("admin listening"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
}

#[test]
fn check_refuses_a_non_loopback_admin_without_a_token() {
    for address in ["0.0.0.0:9901", "[::]:9901", "192.0.2.10:9901"] {
        let config = TempConfig::new(
            "admin.yaml",
            &format!(
                "admin: {{ address: \"{address}\" }}\nlisteners: [{{ name: public, address: \"127.0.0.1:8080\" }}]\n"
            ),
        );
        let out = portcullis(&["check", config.path()]);
        assert_eq!(out.status.code(), Some(1), "{address}");
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!(
                "{}: admin.auth_token: required when the admin listener binds to {address}, which is not a loopback address",
                config.path()
            )),
            "{text}"
        );
    }
}

#[test]
fn check_words_problems_without_rust_types() {
    let config = TempConfig::new(
        "words.yaml",
        r#"
server: { drain_timeout: soon }
listeners:
  - { name: a, address: "127.0.0.1:99999" }
  - { name: b, address: "127.0.0.1:8081", limits: { max_connections: -5 } }
  - { name: c, address: "127.0.0.1:8082", protocol: 5 }
upstreams:
  - { name: u, endpoints: [{ address: "10.0.0.1:70000" }] }
routes:
  - { name: r0, action: { proxy: "u" } }
  - { name: r1, action: 5 }
  - { name: r2, timeout: 5, action: { respond: {} } }
  - { name: r3, action: { respond: { status: 70000 } } }
  - { name: r4, action: { respond: { reason_header: no } } }
"#,
    );
    let file = config.path();
    let out = portcullis(&["check", file]);
    assert_eq!(out.status.code(), Some(1));
    let expected: Vec<String> = [
        "server.drain_timeout: invalid value: string \"soon\", expected a duration like 250ms, 5s, 1m or 1h 30m",
        "listeners[1].limits.max_connections: invalid value: integer `-5`, expected a non-negative integer",
        "listeners[2].protocol: invalid type: integer `5`, expected one of: http1, http2, auto",
        "routes[0].action.proxy: invalid type: string \"u\", expected a mapping with the settings of `proxy`",
        "routes[1].action: invalid type: integer `5`, expected one of: proxy, respond, redirect",
        "routes[2].timeout: invalid type: integer `5`, expected a duration like 250ms, 5s, 1m or 1h 30m",
        "routes[3].action.respond.status: invalid value: integer `70000`, expected an integer from 0 to 65535",
        "routes[4].action.respond.reason_header: invalid type: string \"no\", expected true or false",
    ]
    .iter()
    .map(|line| format!("{file}: {line}"))
    .collect();
    let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(got, expected);
    // Once it parses, the port range is the problem named, not the address's shape.
    let config = TempConfig::new(
        "ports.yaml",
        "listeners: [{ name: a, address: \"127.0.0.1:99999\" }]\nupstreams: [{ name: u, endpoints: [{ address: \"api.internal:70000\" }] }]\n",
    );
    let out = portcullis(&["check", config.path()]);
    let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        got,
        [
            format!("{}: listeners[0].address: \"127.0.0.1:99999\": port 99999 is out of range 0–65535", config.path()),
            format!("{}: upstreams[0].endpoints[0].address: \"api.internal:70000\": port 70000 is out of range 1–65535", config.path()),
        ]
    );
}

/// Sizes that the gateway allocates up front at start (a rate-limit store, the span export
/// queue and batch) are bounded by `check`: a value past the bound would abort the start
/// (out of memory) or panic in it. Found by the `config` fuzz target.
#[test]
fn check_refuses_sizes_that_cannot_be_allocated() {
    let rate_limit = |max_keys: &str| {
        format!(
            "listeners: [{{ name: a, address: \"127.0.0.1:8080\" }}]\n\
             rate_limits:\n  - {{ name: big, limit: 10, max_keys: {max_keys} }}\n"
        )
    };
    let tracing = |queue: &str| {
        format!(
            "listeners: [{{ name: a, address: \"127.0.0.1:8080\" }}]\n\
             telemetry:\n  tracing:\n    otlp: {{ endpoint: \"http://127.0.0.1:4318\" }}\n    \
             batch: {{ max_queue_size: {queue}, max_batch_size: 1 }}\n"
        )
    };
    let refused = [
        (rate_limit("10000001"), "rate_limits[0].max_keys: must be at most 10000000, got 10000001"),
        (rate_limit("1000000000000"), "rate_limits[0].max_keys: must be at most 10000000, got 1000000000000"),
        (rate_limit("18446744073709551615"), "rate_limits[0].max_keys: must be at most 10000000, got 18446744073709551615"),
        (tracing("1048577"), "telemetry.tracing.batch.max_queue_size: must be at most 1048576, got 1048577"),
        (tracing("4611686018427387904"), "telemetry.tracing.batch.max_queue_size: must be at most 1048576, got 4611686018427387904"),
        (tracing("18446744073709551615"), "telemetry.tracing.batch.max_queue_size: must be at most 1048576, got 18446744073709551615"),
    ];
    for (text, message) in refused {
        let config = TempConfig::new("big.yaml", &text);
        let out = portcullis(&["check", config.path()]);
        assert_eq!(out.status.code(), Some(1), "{text}\n{}", stdout(&out));
        assert_eq!(
            stdout(&out),
            format!("{}: {message}\n", config.path()),
            "{text}"
        );
    }
    for text in [rate_limit("10000000"), tracing("1048576")] {
        let config = TempConfig::new("edge.yaml", &text);
        let out = portcullis(&["check", config.path()]);
        assert!(out.status.success(), "{text}\n{}", stdout(&out));
    }
}
