//! Black-box tests of the `portcullis` binary: `check`, `schema`, `run` refusing a config,
//! `--version`.

#![allow(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

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
fn version_is_printed() {
    let out = portcullis(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
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
