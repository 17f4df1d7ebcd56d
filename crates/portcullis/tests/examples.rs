//! Every file in `examples/configs/` parses and validates, and is started and exercised here:
//! what its comments promise is what the running gateway does. A new example fails until it
//! gets an exercise in `exercise`.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_test::{TestClient, TestGateway};

/// Upper bound for one exchange with a started example.
const WAIT: Duration = Duration::from_secs(5);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs")
}

/// Every `*.yaml` / `*.yml` file of `examples/configs/`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let dir = example_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_example_config_is_valid_and_exercised() {
    portcullis_test::init_tracing();
    let files = example_files();
    assert!(!files.is_empty(), "no example configs found");
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_owned();
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        // As `portcullis check` sees it with nothing set in the environment: defaults apply.
        if let Err(errors) = portcullis::config::from_str_with(&text, &|_| None) {
            panic!("examples/configs/{name} is not a valid config:\n{errors}");
        }
        exercise(&name, &text).await;
    }
}

/// Starts the example `name` and checks what it promises.
async fn exercise(name: &str, text: &str) {
    match name {
        "quickstart.yaml" => quickstart(text).await,
        other => panic!(
            "examples/configs/{other} has no exercise: add an arm for it to `exercise` in \
             crates/portcullis/tests/examples.rs that starts it (on free loopback ports: make \
             its addresses ${{VAR:-default}} references) and checks what its comments promise"
        ),
    }
}

/// A loopback address with a port that was free a moment ago. The listener is released on
/// return, right before the gateway binds the port.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

async fn get(client: &TestClient, url: &str) -> portcullis_test::TestResponse {
    tokio::time::timeout(WAIT, client.get(url))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no response within {WAIT:?}"))
}

/// The curl lines at the top of `quickstart.yaml`, and the comments on its routes.
async fn quickstart(text: &str) {
    let public = free_addr();
    let demo = free_addr();
    let admin = free_addr();
    let vars: HashMap<String, String> = [
        ("PORTCULLIS_PUBLIC_ADDR", public),
        ("PORTCULLIS_DEMO_ADDR", demo),
        ("PORTCULLIS_ADMIN_ADDR", admin),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_string()))
    .collect();
    let gw = TestGateway::start_with_vars(text, vars).await;
    assert_eq!(gw.addr("public"), public);
    assert_eq!(gw.addr("demo-origin"), demo);
    assert_eq!(gw.admin_addr(), admin);
    let client = TestClient::http1();
    let url = |path: &str| gw.url("public", path);

    // /api/users: proxied to the demo origin as /users.
    let resp = get(&client, &url("/api/users")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        serde_json::json!([{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}])
    );
    assert_eq!(resp.header("x-served-by"), Some("portcullis-quickstart"));
    // The answer is the demo origin's direct response, passed through the proxy.
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));
    // The demo origin only answers /whoami when the `api` route's x-gateway header arrived.
    let resp = get(&client, &url("/api/whoami")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(resp.text(), "you came through the gateway\n");
    // Anything else under /api reaches the demo origin's fallback, not the gateway's 404.
    let resp = get(&client, &url("/api/nothing-here")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));
    assert_eq!(resp.json()["error"], "not found on the demo origin");
    assert_eq!(resp.header("x-served-by"), Some("portcullis-quickstart"));

    // /healthz: answered by the gateway itself.
    let resp = get(&client, &url("/healthz")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok\n");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-portcullis-reason"), Some("direct_response"));

    // /docs: a permanent redirect to /api/users keeping scheme, host and port (and query).
    let resp = get(&client, &url("/docs")).await;
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{public}/api/users").as_str())
    );
    let resp = get(&client, &url("/docs?page=2")).await;
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{public}/api/users?page=2").as_str())
    );

    // /nope: the gateway's own 404.
    let resp = get(&client, &url("/nope")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
    assert_eq!(resp.json()["reason"], "no_route");

    // The demo origin's routes are scoped to its own listener.
    let resp = get(&client, &gw.url("public", "/users")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));

    // Admin readiness.
    let resp = get(&client, &gw.admin_url("/readyz")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ready\n");

    drop(client);
    tokio::time::timeout(Duration::from_secs(15), gw.shutdown())
        .await
        .expect("quickstart gateway shut down in time");
}
