//! Black-box tests of proxying itself: the protocol matrix (HTTP/1.1 and HTTP/2 on each side),
//! streaming without buffering in both directions, large bodies, trailers, gRPC, and the
//! bodiless responses (HEAD, 204, 304).

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxying_support;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Version};
use portcullis_test::{Behavior, Origin, ResponseSpec, TestClient};
use proxying_support::{bounded, pattern, request, wait_until, Setup};

/// Answers 201 with the request body echoed and the method in `x-method`.
fn mirror() -> Behavior {
    Behavior::scripted(|req| {
        ResponseSpec::new(201)
            .header("x-method", req.method.as_str())
            .body(req.body.clone())
    })
}

async fn assert_passes_unchanged(client: TestClient, h2_upstream: bool) {
    let origin = Origin::start(mirror()).await;
    let mut setup = Setup::new(origin.addr());
    if h2_upstream {
        setup = setup.h2_upstream();
    }
    let gw = setup.start().await;
    let path = "/p/a%20b/c?x=1&y=%2F&z";
    for (method, body) in [("PUT", &b"payload \x00\xff bytes"[..]), ("DELETE", b"")] {
        let resp = client
            .request(request(method, &gw.url("main", path), body.to_vec()))
            .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_eq!(resp.header("x-method"), Some(method));
        assert_eq!(resp.body, body);
        let seen = origin.requests().pop().expect("origin saw the request");
        assert_eq!(seen.method, method);
        assert_eq!(seen.path_and_query(), path);
        assert_eq!(seen.body, body);
        let want = if h2_upstream {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert_eq!(seen.version, want);
    }
}

#[tokio::test]
async fn h1_client_to_h1_upstream_passes_method_path_body_and_status() {
    bounded(assert_passes_unchanged(TestClient::http1(), false)).await;
}

#[tokio::test]
async fn h2_client_to_h1_upstream_passes_method_path_body_and_status() {
    bounded(assert_passes_unchanged(TestClient::http2(), false)).await;
}

#[tokio::test]
async fn h1_client_to_h2_upstream_passes_method_path_body_and_status() {
    bounded(assert_passes_unchanged(TestClient::http1(), true)).await;
}

#[tokio::test]
async fn h2_client_to_h2_upstream_passes_method_path_body_and_status() {
    bounded(assert_passes_unchanged(TestClient::http2(), true)).await;
}

#[tokio::test]
async fn client_sees_its_own_protocol_version_whatever_the_upstream_speaks() {
    bounded(async {
        let origin = Origin::start(Behavior::Echo).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for (client, version) in [
                (TestClient::http1(), Version::HTTP_11),
                (TestClient::http2(), Version::HTTP_2),
            ] {
                let resp = client.get(&gw.url("main", "/v")).await;
                assert_eq!(resp.status, 200);
                assert_eq!(resp.version, version);
                let origin_saw = if h2_upstream { "HTTP/2.0" } else { "HTTP/1.1" };
                assert_eq!(resp.json()["version"], origin_saw);
            }
        }
    })
    .await;
}

/// The origin holds the first chunk while the client still has the last one in hand.
async fn assert_request_body_streams(client: TestClient, h2_upstream: bool) {
    let origin = Origin::start(Behavior::EchoBody).await;
    let mut setup = Setup::new(origin.addr());
    if h2_upstream {
        setup = setup.h2_upstream();
    }
    let gw = setup.start().await;
    let (mut body, response) =
        client.request_streaming(Request::post(gw.url("main", "/up")).body(()).unwrap());
    body.send("first ").await;
    wait_until("the first chunk at the origin", || {
        origin.requests().last().map(|r| r.body.clone()) == Some(Bytes::from("first "))
    })
    .await;
    assert!(!origin.requests()[0].complete);
    body.send("last").await;
    body.finish();
    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "first last");
    wait_until("the origin to see the end of the body", || {
        origin.requests()[0].complete
    })
    .await;
    let seen = &origin.requests()[0];
    assert_eq!(seen.body, "first last");
    // Length unknown up front: no Content-Length on the hop (chunked over HTTP/1.1).
    assert!(seen.header("content-length").is_none());
    if !h2_upstream {
        assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    }
}

#[tokio::test]
async fn request_body_streams_through_h1_to_h1() {
    bounded(assert_request_body_streams(TestClient::http1(), false)).await;
}

#[tokio::test]
async fn request_body_streams_through_h2_to_h2() {
    bounded(assert_request_body_streams(TestClient::http2(), true)).await;
}

#[tokio::test]
async fn request_body_streams_through_h1_to_h2() {
    bounded(assert_request_body_streams(TestClient::http1(), true)).await;
}

#[tokio::test]
async fn response_streams_chunk_by_chunk_before_the_origin_finishes() {
    bounded(async {
        // The origin would need a minute for the last chunk; the first must arrive at once.
        let origin = Origin::start(Behavior::Stream {
            chunks: 3,
            interval: Duration::from_secs(30),
        })
        .await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                let mut resp = client
                    .send(request("GET", &gw.url("main", "/s"), ""))
                    .await
                    .unwrap();
                assert_eq!(resp.status, 200);
                let first = resp.next_chunk_within(Duration::from_secs(5)).await;
                assert_eq!(first.unwrap().unwrap(), "chunk 0\n");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn chunked_response_without_length_arrives_whole_and_chunked() {
    bounded(async {
        let origin = Origin::start(Behavior::Stream {
            chunks: 5,
            interval: Duration::from_millis(5),
        })
        .await;
        let gw = Setup::new(origin.addr()).start().await;
        let resp = TestClient::http1().get(&gw.url("main", "/s")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert!(resp.header("content-length").is_none());
        let want: String = (0..5).map(|i| format!("chunk {i}\n")).collect();
        assert_eq!(resp.text(), want);
    })
    .await;
}

#[tokio::test]
async fn large_bodies_arrive_intact_both_ways() {
    bounded(async {
        const LEN: usize = 4 * 1024 * 1024 + 13;
        let data = pattern(LEN);
        let origin = Origin::start(Behavior::EchoBody).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                origin.clear_requests();
                let resp = client
                    .request(request("POST", &gw.url("main", "/big"), data.clone()))
                    .await;
                assert_eq!(resp.status, 200);
                assert_eq!(resp.body.len(), LEN);
                assert!(
                    resp.body == data,
                    "response body differs from what was sent"
                );
                let seen = &origin.requests()[0];
                assert_eq!(seen.body.len(), LEN);
                assert!(seen.body == data, "origin got a different body");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn h2_response_trailers_reach_an_h2_client() {
    bounded(async {
        let origin = Origin::start(Behavior::trailers("body", &[("x-checksum", "abc")])).await;
        let gw = Setup::new(origin.addr()).h2_upstream().start().await;
        let resp = TestClient::http2().get(&gw.url("main", "/t")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "body");
        assert_eq!(resp.trailer("x-checksum"), Some("abc"));
    })
    .await;
}

fn trailer_map(name: &'static str, value: &'static str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_static(value));
    map
}

#[tokio::test]
async fn request_trailers_reach_an_h2_upstream() {
    bounded(async {
        let origin = Origin::start(Behavior::EchoBody).await;
        let gw = Setup::new(origin.addr()).h2_upstream().start().await;
        // An HTTP/1.1 client only sends trailers it announced in `Trailer` (hyper's rule).
        for client in [TestClient::http2(), TestClient::http1()] {
            origin.clear_requests();
            let (mut body, response) = client.request_streaming(
                Request::post(gw.url("main", "/rt"))
                    .header("te", "trailers")
                    .header("trailer", "x-req-sum")
                    .body(())
                    .unwrap(),
            );
            body.send("data").await;
            body.finish_with_trailers(trailer_map("x-req-sum", "42"))
                .await;
            let resp = response.await.unwrap().unwrap();
            assert_eq!(resp.text(), "data");
            let seen = &origin.requests()[0];
            assert_eq!(seen.version, Version::HTTP_2);
            let trailers = seen.trailers.as_ref().expect("origin got request trailers");
            assert_eq!(trailers["x-req-sum"], "42");
            // EchoBody sends them back as response trailers. Over HTTP/1.1 hyper only encodes
            // trailers the response announced in a `Trailer` header; EchoBody (HTTP/2 here)
            // announces none, and the gateway cannot know the names before the head is sent,
            // so an HTTP/1.1 client gets the body without them.
            let want = (resp.version == Version::HTTP_2).then_some("42");
            assert_eq!(resp.trailer("x-req-sum"), want, "{:?}", resp.version);
        }
    })
    .await;
}

#[tokio::test]
async fn h1_chunked_trailers_pass_when_the_client_accepts_them() {
    bounded(async {
        let origin = Origin::start(Behavior::trailers("body", &[("x-checksum", "abc")])).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            let resp = TestClient::http1()
                .request(
                    Request::get(gw.url("main", "/t"))
                        .header("te", "trailers")
                        .body(Default::default())
                        .unwrap(),
                )
                .await;
            assert_eq!(resp.text(), "body");
            assert_eq!(
                resp.trailer("x-checksum"),
                Some("abc"),
                "h2 upstream: {h2_upstream}"
            );
            assert_eq!(
                origin.requests().last().unwrap().header("te"),
                Some("trailers")
            );
        }
    })
    .await;
}

#[tokio::test]
async fn h1_trailers_are_dropped_for_a_client_that_did_not_ask() {
    bounded(async {
        // HTTP/1.1 semantics as hyper implements them: trailers are only sent to a client
        // that said `te: trailers`. The body must still arrive whole.
        let origin = Origin::start(Behavior::trailers("body", &[("x-checksum", "abc")])).await;
        let gw = Setup::new(origin.addr()).h2_upstream().start().await;
        let resp = TestClient::http1().get(&gw.url("main", "/t")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "body");
        assert_eq!(resp.trailer("x-checksum"), None);
    })
    .await;
}

#[tokio::test]
async fn h1_request_trailers_reach_an_h1_upstream() {
    bounded(async {
        let origin = Origin::start(Behavior::EchoBody).await;
        let gw = Setup::new(origin.addr()).start().await;
        let (mut body, response) = TestClient::http1().request_streaming(
            Request::post(gw.url("main", "/rt"))
                .header("te", "trailers")
                .header("trailer", "x-req-sum")
                .body(())
                .unwrap(),
        );
        body.send("data").await;
        body.finish_with_trailers(trailer_map("x-req-sum", "42"))
            .await;
        let resp = response.await.unwrap().unwrap();
        assert_eq!(resp.text(), "data");
        let seen = &origin.requests()[0];
        assert_eq!(seen.header("trailer"), Some("x-req-sum"));
        let trailers = seen.trailers.as_ref().expect("origin got request trailers");
        assert_eq!(trailers["x-req-sum"], "42");
    })
    .await;
}

fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(u32::try_from(payload.len()).unwrap());
    b.extend_from_slice(payload);
    b.freeze()
}

fn grpc_call(url: &str, payload: &[u8]) -> Request<http_body_util::Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(grpc_frame(payload)))
        .unwrap()
}

#[tokio::test]
async fn grpc_unary_call_passes_end_to_end() {
    bounded(async {
        let origin = Origin::start(Behavior::grpc()).await;
        let gw = Setup::new(origin.addr()).h2_upstream().start().await;
        let resp = TestClient::http2()
            .request(grpc_call(
                &gw.url("main", "/pkg.Echo/Say"),
                b"ping \x00 pong",
            ))
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.version, Version::HTTP_2);
        assert_eq!(resp.header("content-type"), Some("application/grpc"));
        assert_eq!(resp.body, grpc_frame(b"ping \x00 pong"));
        assert_eq!(resp.trailer("grpc-status"), Some("0"));
        let seen = &origin.requests()[0];
        assert_eq!(seen.path_and_query(), "/pkg.Echo/Say");
        assert_eq!(seen.header("te"), Some("trailers"));
        assert_eq!(seen.header("content-type"), Some("application/grpc"));
    })
    .await;
}

#[tokio::test]
async fn grpc_error_status_and_message_survive_in_trailers() {
    bounded(async {
        let origin = Origin::start(Behavior::grpc_status(14, "backend unavailable")).await;
        let gw = Setup::new(origin.addr()).h2_upstream().start().await;
        let resp = TestClient::http2()
            .request(grpc_call(&gw.url("main", "/pkg.Echo/Say"), b"x"))
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, grpc_frame(b"x"));
        assert_eq!(resp.trailer("grpc-status"), Some("14"));
        assert_eq!(resp.trailer("grpc-message"), Some("backend unavailable"));
        assert!(resp.header("x-portcullis-reason").is_none());
    })
    .await;
}

#[tokio::test]
async fn head_request_gets_headers_and_no_body_and_the_connection_stays_usable() {
    bounded(async {
        let origin = Origin::start(Behavior::fixed(200, "hello world")).await;
        for h2_upstream in [false, true] {
            let mut setup = Setup::new(origin.addr());
            if h2_upstream {
                setup = setup.h2_upstream();
            }
            let gw = setup.start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                let resp = client
                    .request(request("HEAD", &gw.url("main", "/h"), ""))
                    .await;
                assert_eq!(resp.status, 200);
                assert_eq!(resp.header("content-length"), Some("11"));
                assert!(resp.body.is_empty());
                assert_eq!(origin.requests().last().unwrap().method, "HEAD");
                // Same pooled connection: a framing mistake would break this request.
                let resp = client.get(&gw.url("main", "/h")).await;
                assert_eq!(resp.text(), "hello world");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn no_content_and_not_modified_pass_without_a_body() {
    bounded(async {
        let no_content = Origin::start(Behavior::Status(204)).await;
        let not_modified = Origin::start(Behavior::Fixed {
            status: 304,
            headers: vec![("etag".into(), "\"v1\"".into())],
            body: Bytes::new(),
        })
        .await;
        for (origin, status) in [(&no_content, 204), (&not_modified, 304)] {
            let gw = Setup::new(origin.addr()).start().await;
            for client in [TestClient::http1(), TestClient::http2()] {
                let resp = client
                    .request(
                        Request::get(gw.url("main", "/c"))
                            .header("if-none-match", "\"v1\"")
                            .body(Default::default())
                            .unwrap(),
                    )
                    .await;
                assert_eq!(resp.status, status);
                assert!(resp.body.is_empty());
                assert!(resp.header("transfer-encoding").is_none());
                if status == 304 {
                    assert_eq!(resp.header("etag"), Some("\"v1\""));
                }
                // The connection is still in step.
                assert_eq!(client.get(&gw.url("main", "/c")).await.status, status);
            }
        }
    })
    .await;
}
