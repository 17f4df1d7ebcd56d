//! First end-to-end check: the gateway proxies over HTTP/1.1 and HTTP/2 and answers 404 itself.

use portcullis_test::{Behavior, Origin, TestClient, TestGateway};

fn config(origin: std::net::SocketAddr) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: main
    address: "127.0.0.1:0"
upstreams:
  - name: app
    endpoints: [{{ address: "{origin}" }}]
routes:
  - name: app
    match: {{ path: {{ prefix: /app }} }}
    action: {{ proxy: {{ upstream: app }} }}
"#
    )
}

#[tokio::test]
async fn proxies_and_refuses_unknown_routes() {
    portcullis_test::init_tracing();
    let origin = Origin::start_named("a", Behavior::Echo).await;
    let gw = TestGateway::start(&config(origin.addr())).await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let resp = client.get(&gw.url("main", "/app/x?y=1")).await;
        assert_eq!(resp.status, 200, "{:?}", resp.text());
        assert_eq!(resp.header("x-origin"), Some("a"));
        assert_eq!(resp.json()["path"], "/app/x?y=1");
        assert!(resp.header("x-request-id").is_some());
        let resp = client.get(&gw.url("main", "/nope")).await;
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("x-portcullis-reason"), Some("no_route"));
        assert_eq!(resp.json()["reason"], "no_route");
    }
    assert_eq!(origin.hits(), 2);
    gw.shutdown().await;
}
