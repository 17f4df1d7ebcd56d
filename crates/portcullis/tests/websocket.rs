//! Black-box tests of protocol upgrades through the gateway: WebSocket tunnels (text, binary,
//! close, many messages, concurrent sockets) and an `Upgrade` the origin declines, which must
//! behave as an ordinary request.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis_test::raw::status_of;
use portcullis_test::{ws_connect, Behavior, Origin};
use proxying_support::{bounded, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = portcullis_test::client::WsClient;

async fn next_message(ws: &mut Ws) -> Message {
    ws.next()
        .await
        .expect("socket ended early")
        .expect("websocket error")
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_through_the_gateway() {
    bounded(async {
        let origin = Origin::start(Behavior::WebSocketEcho).await;
        let gw = Setup::new(origin.addr()).start().await;
        let mut ws = ws_connect(&gw.ws_url("main", "/chat?room=1")).await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::text("hello"));
        let binary: Vec<u8> = (0..=255u8).collect();
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::binary(binary));

        let seen = &origin.requests()[0];
        assert_eq!(seen.path_and_query(), "/chat?room=1");
        assert_eq!(seen.header("upgrade"), Some("websocket"));
        assert!(seen.header("sec-websocket-key").is_some());
        assert!(seen.header("x-forwarded-for").is_some());
    })
    .await;
}

#[tokio::test]
async fn websocket_close_handshake_completes_and_the_socket_ends() {
    bounded(async {
        let origin = Origin::start(Behavior::WebSocketEcho).await;
        let gw = Setup::new(origin.addr()).start().await;
        let mut ws = ws_connect(&gw.ws_url("main", "/chat")).await;
        ws.send(Message::text("before close")).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::text("before close"));
        ws.close(None).await.unwrap();
        // The origin answers the close; after it the stream ends (no hang).
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Err(_) => panic!("socket did not end after close"),
                Ok(None) => break,
                Ok(Some(Ok(Message::Close(_)))) => continue,
                Ok(Some(Ok(other))) => panic!("unexpected message after close: {other:?}"),
                // A closed tunnel may surface as a "connection closed" error: also an end.
                Ok(Some(Err(_))) => break,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn websocket_carries_many_messages_in_order() {
    bounded(async {
        let origin = Origin::start(Behavior::WebSocketEcho).await;
        let gw = Setup::new(origin.addr()).start().await;
        let mut ws = ws_connect(&gw.ws_url("main", "/many")).await;
        const N: usize = 500;
        let (mut tx, mut rx) = ws.split();
        let sender = tokio::spawn(async move {
            for i in 0..N {
                tx.send(Message::text(format!("message {i}")))
                    .await
                    .unwrap();
            }
            tx
        });
        for i in 0..N {
            let got = rx.next().await.expect("socket ended").unwrap();
            assert_eq!(got, Message::text(format!("message {i}")));
        }
        let tx = sender.await.unwrap();
        ws = tx.reunite(rx).unwrap();
        let big = vec![7u8; 256 * 1024];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::binary(big));
    })
    .await;
}

#[tokio::test]
async fn two_concurrent_websockets_do_not_mix() {
    bounded(async {
        let origin = Origin::start(Behavior::WebSocketEcho).await;
        let gw = Setup::new(origin.addr()).start().await;
        let mut a = ws_connect(&gw.ws_url("main", "/a")).await;
        let mut b = ws_connect(&gw.ws_url("main", "/b")).await;
        for i in 0..20 {
            a.send(Message::text(format!("a{i}"))).await.unwrap();
            b.send(Message::text(format!("b{i}"))).await.unwrap();
        }
        for i in 0..20 {
            assert_eq!(next_message(&mut b).await, Message::text(format!("b{i}")));
            assert_eq!(next_message(&mut a).await, Message::text(format!("a{i}")));
        }
        // Closing one leaves the other working.
        a.close(None).await.unwrap();
        b.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_message(&mut b).await, Message::text("still here"));
        assert_eq!(origin.hits(), 2);
    })
    .await;
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `stream`; returns the head
/// text and the body.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(n == 1, "connection closed in the head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("response with content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    (head, body)
}

async fn upgrade_request(
    addr: SocketAddr,
    stream: &mut TcpStream,
    path: &str,
) -> (String, Vec<u8>) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    read_response(stream).await
}

#[tokio::test]
async fn declined_upgrade_is_an_ordinary_request_and_the_connection_stays_http() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        // The route lets `foo` through (by default only websocket is).
        let gw = Setup::new(origin.addr())
            .route("upgrades: [websocket, foo]")
            .start()
            .await;
        let addr = gw.addr("main");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (head, body) = upgrade_request(addr, &mut stream, "/first").await;
        assert_eq!(status_of(head.as_bytes()), Some(200), "{head}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["path"], "/first");
        // The origin was asked for the upgrade and declined it with a plain 200.
        let seen = &origin.requests()[0];
        assert_eq!(seen.header("upgrade"), Some("foo"));
        assert!(
            !head.to_ascii_lowercase().contains("upgrade: foo"),
            "{head}"
        );

        // Still HTTP/1.1 on the same connection: a second request is answered normally.
        let (head, body) = upgrade_request(addr, &mut stream, "/second").await;
        assert_eq!(status_of(head.as_bytes()), Some(200), "{head}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["path"], "/second");
        assert_eq!(origin.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn websocket_handshake_refused_by_the_origin_reaches_the_client() {
    bounded(async {
        // The origin refuses the handshake with 403: the client must see that answer as a
        // failed handshake, not get a tunnel.
        let origin = Origin::start(Behavior::Status(403)).await;
        let gw = Setup::new(origin.addr()).start().await;
        let result = portcullis_test::client::try_ws_connect(&gw.ws_url("main", "/ws")).await;
        let Err(err) = result else {
            panic!("handshake must fail");
        };
        let err = format!("{err:#}");
        assert!(err.contains("403"), "{err}");
    })
    .await;
}

/// An open tunnel still holds its connection's place under `max_connections`: with a limit of
/// one, a second client waits until the WebSocket closes.
#[tokio::test]
async fn open_tunnel_counts_against_max_connections() {
    bounded(async {
        let origin = Origin::start(Behavior::WebSocketEcho).await;
        let gw = Setup::new(origin.addr())
            .listener("limits: { max_connections: 1 }")
            .start()
            .await;
        let mut ws = ws_connect(&gw.ws_url("main", "/chat")).await;
        ws.send(Message::text("hold")).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::text("hold"));

        let second = tokio::spawn(portcullis_test::raw::send_raw(
            gw.addr("main"),
            b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "served while the tunnel held the only slot"
        );

        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        // Served now: the WebSocket-only origin answers a plain GET with its own 400.
        let resp = String::from_utf8_lossy(&second.await.unwrap()).into_owned();
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("websocket upgrade expected"), "{resp}");
    })
    .await;
}
