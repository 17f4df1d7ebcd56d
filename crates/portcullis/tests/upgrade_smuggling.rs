//! Black-box tests of which protocol upgrades a route forwards (`routes[].upgrades`): an
//! `Upgrade: h2c` must never reach the upstream, since HTTP/2 spoken to it through a tunnel
//! would pass every later request by the routes (here: a path the gateway answers with 403).
//! Any upgrade the route does not allow goes upstream as a plain request, without `Upgrade`,
//! `Connection: upgrade` or `HTTP2-Settings`.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_test::raw::status_of;
use portcullis_test::TestGateway;
use proxying_support::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that switches every request carrying `Upgrade` to HTTP/2 (`101`, `upgrade:
/// h2c`, whatever was asked) and then serves HTTP/2 on the connection, answering any path;
/// other requests get a plain `200`. It records each HTTP/1.1 head and each HTTP/2 path.
struct SwitchingOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    h2_paths: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl SwitchingOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h2_paths = Arc::new(Mutex::new(Vec::new()));
        let (h, p) = (heads.clone(), h2_paths.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(switch(stream, h.clone(), p.clone()));
            }
        });
        Self {
            addr,
            heads,
            h2_paths,
            accept,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn h2_paths(&self) -> Vec<String> {
        self.h2_paths.lock().unwrap().clone()
    }
}

impl Drop for SwitchingOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn has_header(head: &str, name: &str) -> bool {
    head.lines()
        .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
}

async fn switch(
    mut stream: TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    h2_paths: Arc<Mutex<Vec<String>>>,
) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    heads.lock().unwrap().push(head.clone());
    if !has_header(&head, "upgrade") {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain")
            .await;
        return;
    }
    let switched =
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n";
    if stream.write_all(switched).await.is_err() {
        return;
    }
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let path = req.uri().path().to_owned();
        h2_paths.lock().unwrap().push(path.clone());
        async move {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                "origin reached {path}"
            )))))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A gateway whose route `/blocked` answers 403 and whose catch-all route proxies to
/// `origin`, with `upgrades` as given (absent: the default).
async fn gateway(origin: SocketAddr, upgrades: Option<&str>) -> TestGateway {
    portcullis_test::init_tracing();
    let upgrades = upgrades.map_or(String::new(), |u| format!("    upgrades: {u}\n"));
    TestGateway::start(&format!(
        "admin: {{ enabled: false }}\n\
         server: {{ drain_timeout: 1s }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n\
         upstreams:\n  - name: app\n    endpoints: [{{ address: \"{origin}\" }}]\n\
         routes:\n\
         \x20 - name: blocked\n    match: {{ path: {{ prefix: /blocked }} }}\n    \
         action: {{ respond: {{ status: 403, body: forbidden }} }}\n\
         \x20 - name: app\n    action: {{ proxy: {{ upstream: app }} }}\n{upgrades}"
    ))
    .await
}

/// What the smuggling attempt got.
#[derive(Debug)]
struct Attempt {
    /// The status of the answer to the upgrade request.
    status: Option<u16>,
    /// The body `GET /blocked` over HTTP/2 got through the switched connection, if it did.
    smuggled: Option<String>,
}

/// Asks for an upgrade with `upgrade` and `connection`; if the answer is 101, speaks HTTP/2
/// on the connection and asks for `/blocked`.
async fn smuggle(gw: SocketAddr, upgrade: &str, connection: &str) -> Attempt {
    let mut stream = TcpStream::connect(gw).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nhost: gw\r\nupgrade: {upgrade}\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
         connection: {connection}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let Some(head) = read_head(&mut stream).await else {
        return Attempt {
            status: None,
            smuggled: None,
        };
    };
    let status = status_of(head.as_bytes());
    if status != Some(101) {
        return Attempt {
            status,
            smuggled: None,
        };
    }
    let smuggled = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("http://gw/blocked")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    let smuggled = tokio::time::timeout(Duration::from_secs(2), smuggled)
        .await
        .ok()
        .flatten();
    Attempt { status, smuggled }
}

#[tokio::test]
async fn h2c_and_other_disallowed_upgrades_never_reach_the_upstream() {
    bounded(async {
        // (route's `upgrades`, Upgrade, Connection)
        let cases: [(Option<&str>, &str, &str); 7] = [
            (None, "h2c", "Upgrade, HTTP2-Settings"),
            (None, "H2C", "upgrade, http2-settings"),
            (None, "websocket, h2c", "Upgrade, HTTP2-Settings"),
            (None, "foo", "Upgrade"),
            (None, "h2", "Upgrade"),
            (Some("[]"), "websocket", "Upgrade"),
            (Some("[foo]"), "websocket", "Upgrade"),
        ];
        let mut failed = Vec::new();
        for (upgrades, upgrade, connection) in cases {
            let case = format!("upgrades {upgrades:?}, Upgrade: {upgrade}");
            let origin = SwitchingOrigin::start().await;
            let gw = gateway(origin.addr, upgrades).await;
            let attempt = smuggle(gw.addr("main"), upgrade, connection).await;
            // Forwarded as a plain request: the origin answered it with its plain 200.
            if attempt.status != Some(200) || attempt.smuggled.is_some() {
                failed.push(format!("{case}: {attempt:?}"));
            }
            if !origin.h2_paths().is_empty() {
                failed.push(format!("{case}: HTTP/2 reached {:?}", origin.h2_paths()));
            }
            for head in origin.heads() {
                let lower = head.to_ascii_lowercase();
                if has_header(&head, "upgrade")
                    || has_header(&head, "http2-settings")
                    || lower.contains("connection: upgrade")
                {
                    failed.push(format!("{case}: the origin was asked to switch: {head}"));
                }
            }
            gw.shutdown().await;
        }
        assert!(failed.is_empty(), "{failed:#?}");
    })
    .await;
}

#[tokio::test]
async fn a_switch_to_a_protocol_the_route_does_not_allow_is_refused() {
    bounded(async {
        // The route allows websocket; the origin switches to h2c instead: 502, no tunnel.
        let origin = SwitchingOrigin::start().await;
        let gw = gateway(origin.addr, None).await;
        let attempt = smuggle(gw.addr("main"), "websocket", "Upgrade").await;
        assert_eq!(attempt.status, Some(502), "{attempt:?}");
        assert!(attempt.smuggled.is_none(), "{attempt:?}");
        assert!(origin.h2_paths().is_empty(), "{:?}", origin.h2_paths());
        // It was asked for the allowed upgrade, without HTTP2-Settings.
        let heads = origin.heads();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].to_ascii_lowercase().contains("upgrade: websocket"),
            "{heads:?}"
        );
        assert!(!has_header(&heads[0], "http2-settings"), "{heads:?}");
        gw.shutdown().await;
    })
    .await;
}
