//! The harness tested against itself: every origin behavior driven by the clients directly.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Version};
use http_body_util::Full;
use portcullis_test::raw::{send_raw, slow_write, status_of};
use portcullis_test::{init_tracing, ws_connect, Behavior, Origin, ResponseSpec, TestClient};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_over_http1_and_http2() {
    init_tracing();
    let origin = Origin::start_named("alpha", Behavior::Echo).await;
    let h1 = TestClient::http1()
        .request(
            Request::post(origin.url("/a/b?x=1"))
                .header("x-test", "one")
                .header("x-test", "two")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await;
    assert_eq!(h1.status, 200);
    assert_eq!(h1.header("x-origin"), Some("alpha"));
    let json = h1.json();
    assert_eq!(json["origin"], "alpha");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/a/b?x=1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["body_len"], 5);
    assert_eq!(json["headers"]["x-test"], serde_json::json!(["one", "two"]));

    let h2 = TestClient::http2().get(&origin.url("/h2")).await;
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(h2.json()["version"], "HTTP/2.0");
    assert_eq!(h2.json()["path"], "/h2");

    assert_eq!(origin.hits(), 2);
    let requests = origin.requests();
    assert_eq!(requests[0].body, Bytes::from_static(b"hello"));
    assert!(requests[0].complete);
    assert_eq!(requests[0].header_all("x-test"), ["one", "two"]);
    assert_eq!(requests[1].version, Version::HTTP_2);
    assert_eq!(requests[1].path_and_query(), "/h2");
}

#[tokio::test]
async fn status_fixed_and_set_status() {
    let origin = Origin::start(Behavior::Status(204)).await;
    let client = TestClient::http1();
    assert_eq!(client.get(&origin.url("/")).await.status, 204);
    origin.set_status(503);
    assert_eq!(client.get(&origin.url("/")).await.status, 503);
    origin.clear_status();
    assert_eq!(client.get(&origin.url("/")).await.status, 204);

    let fixed = Origin::start(Behavior::Fixed {
        status: 201,
        headers: vec![("x-kind".into(), "fixed".into())],
        body: Bytes::from_static(b"made"),
    })
    .await;
    let resp = client.get(&fixed.url("/")).await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("x-kind"), Some("fixed"));
    assert_eq!(resp.text(), "made");
    fixed.set_status(500);
    let resp = client.get(&fixed.url("/")).await;
    assert_eq!((resp.status.as_u16(), resp.body.len()), (500, 0));
}

#[tokio::test]
async fn trailers_reach_an_h2_client_and_an_h1_client_that_asks() {
    let origin = Origin::start(Behavior::trailers("body", &[("x-checksum", "abc")])).await;
    let h2 = TestClient::http2().get(&origin.url("/")).await;
    assert_eq!(h2.text(), "body");
    assert_eq!(h2.trailer("x-checksum"), Some("abc"));

    let h1 = TestClient::http1()
        .request(
            Request::get(origin.url("/"))
                .header("te", "trailers")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(h1.text(), "body");
    assert_eq!(h1.trailer("x-checksum"), Some("abc"));
}

fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.extend_from_slice(payload);
    b.freeze()
}

#[tokio::test]
async fn grpc_echoes_a_framed_message_with_status_trailers() {
    let origin = Origin::start(Behavior::grpc()).await;
    let client = TestClient::http2();
    let grpc_request = |body: Bytes| {
        Request::post(origin.url("/pkg.Svc/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body))
            .unwrap()
    };
    let resp = client.request(grpc_request(grpc_frame(b"ping"))).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/grpc"));
    assert_eq!(resp.body, grpc_frame(b"ping"));
    assert_eq!(resp.trailer("grpc-status"), Some("0"));

    let resp = client
        .request(grpc_request(Bytes::from_static(b"\x00\x00")))
        .await;
    assert!(resp.body.is_empty());
    assert_eq!(resp.trailer("grpc-status"), Some("13"));

    let failing = Origin::start(Behavior::grpc_status(14, "unavailable")).await;
    let resp = client
        .request(
            Request::post(failing.url("/pkg.Svc/Method"))
                .body(Full::new(grpc_frame(b"x")))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.trailer("grpc-status"), Some("14"));
    assert_eq!(resp.trailer("grpc-message"), Some("unavailable"));
}

#[tokio::test]
async fn websocket_echo() {
    let origin = Origin::start(Behavior::WebSocketEcho).await;
    let mut ws = ws_connect(&format!("ws://{}/chat", origin.addr())).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    assert_eq!(origin.requests()[0].path_and_query(), "/chat");

    let plain = TestClient::http1().get(&origin.url("/chat")).await;
    assert_eq!(plain.status, 400);
}

#[tokio::test]
async fn close_connection_is_a_client_error() {
    let origin = Origin::start(Behavior::CloseConnection).await;
    let err = TestClient::http1().try_get(&origin.url("/")).await;
    assert!(err.is_err(), "expected an error, got {err:?}");
    assert!(origin.connections() >= 1);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn reset_after_headers_and_abort_mid_body_fail_the_body() {
    let reset = Origin::start(Behavior::ResetAfterHeaders).await;
    let aborted = Origin::start(Behavior::AbortMidBody {
        prefix: Bytes::from_static(b"partial"),
    })
    .await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let mut resp = client.send(get(&reset.url("/"))).await.unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.next_chunk().await.is_err());

        let mut resp = client.send(get(&aborted.url("/"))).await.unwrap();
        assert_eq!(resp.next_chunk().await.unwrap().unwrap(), "partial");
        assert!(resp.next_chunk().await.is_err());
    }
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test]
async fn raw_send_gets_a_response() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let reply = send_raw(
        origin.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&reply), Some(200), "{reply:?}");
    let garbage = send_raw(origin.addr(), b"NOT HTTP\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(status_of(&garbage), Some(400));
}

#[tokio::test]
async fn slow_write_completes_against_a_patient_server() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let result = slow_write(
        origin.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        8,
        Duration::from_millis(5),
        Duration::from_secs(5),
    )
    .await;
    assert!(!result.closed_early);
    assert_eq!(status_of(&result.response), Some(200));
}

// Slow origins use real time with small delays: under `start_paused` the runtime's
// auto-advance would also fire the client's and the test's timers while real socket I/O is
// pending, so elapsed-time assertions would be meaningless.
#[tokio::test]
async fn slow_origin_delays_the_head_and_records_first() {
    let origin = Origin::start(Behavior::slow(
        Duration::from_millis(200),
        Behavior::Status(200),
    ))
    .await;
    let client = TestClient::http1();
    let url = origin.url("/");
    let task = tokio::spawn(async move { client.get(&url).await });
    origin.wait_for_hits(1, Duration::from_secs(5)).await;
    let started = origin.requests()[0].received_at;
    let resp = task.await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn slow_body_and_stream_send_chunks_as_produced() {
    let slow = Origin::start(Behavior::SlowBody {
        chunk: Bytes::from_static(b"ab"),
        chunks: 3,
        delay: Duration::from_millis(30),
    })
    .await;
    let resp = TestClient::http1().get(&slow.url("/")).await;
    assert_eq!(resp.text(), "ababab");
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));

    let stream = Origin::start(Behavior::Stream {
        chunks: 3,
        interval: Duration::from_secs(30),
    })
    .await;
    let mut resp = TestClient::http2()
        .send(get(&stream.url("/")))
        .await
        .unwrap();
    // The first chunk comes at once, long before the whole body could have been produced.
    let first = resp
        .next_chunk_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.unwrap(), "chunk 0\n");
}

#[tokio::test]
async fn echo_body_streams_the_request_back_before_it_ends() {
    let origin = Origin::start(Behavior::EchoBody).await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let (mut body, response) =
            client.request_streaming(Request::post(origin.url("/up")).body(()).unwrap());
        body.send("first ").await;
        // The origin has the first chunk while the client has not sent the last.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while origin.requests().last().map(|r| r.body.clone()) != Some("first ".into()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "first chunk never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!origin.requests().last().unwrap().complete);
        body.send("last").await;
        body.finish();
        let resp = response.await.unwrap().unwrap();
        assert_eq!(resp.text(), "first last");
        assert!(origin.requests().last().unwrap().complete);
    }
}

#[tokio::test]
async fn scripted_origin_answers_from_the_request() {
    let origin = Origin::start(Behavior::scripted(|req| {
        ResponseSpec::new(if req.body.is_empty() { 400 } else { 202 })
            .header("x-path", req.path_and_query())
            .body(req.body.clone())
            .trailer("x-done", "yes")
    }))
    .await;
    let resp = TestClient::http2()
        .request(
            Request::put(origin.url("/s?q=1"))
                .body(Full::new(Bytes::from_static(b"data")))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 202);
    assert_eq!(resp.header("x-path"), Some("/s?q=1"));
    assert_eq!(resp.text(), "data");
    assert_eq!(resp.trailer("x-done"), Some("yes"));
}

#[tokio::test]
async fn shutdown_stops_the_origin() {
    let origin = Origin::start(Behavior::Status(200)).await;
    let url = origin.url("/");
    assert_eq!(TestClient::http1().get(&url).await.status, 200);
    origin.shutdown().await;
    assert!(TestClient::http1_no_pool().try_get(&url).await.is_err());
}

#[test]
#[should_panic(expected = "invalid test config")]
fn invalid_gateway_config_panics_with_the_errors() {
    portcullis_test::gateway::parse_config("listeners: 7\n", &HashMap::new());
}

#[test]
fn gateway_config_parses_listeners() {
    let config = portcullis_test::gateway::parse_config(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n",
        &HashMap::new(),
    );
    assert_eq!(config.listeners[0].name, "main");
}

#[test]
fn gateway_config_substitutes_vars() {
    let vars = HashMap::from([("PORT".to_owned(), "0".to_owned())]);
    let config = portcullis_test::gateway::parse_config(
        "listeners:\n  - name: main\n    address: 127.0.0.1:${PORT}\n",
        &vars,
    );
    assert_eq!(config.listeners[0].address, "127.0.0.1:0");
}
