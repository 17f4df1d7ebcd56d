//! Turns one request into a response per the origin's `Behavior`, recording the request
//! (head at once, body as it arrives) on the way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Behavior, ResponseSpec, Shared};
use crate::BoxError;

pub(crate) type ResponseBody = BoxBody<Bytes, BoxError>;
type BoxedResponse = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// The hyper service: records the head, answers, stamps `x-origin`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let id = shared.log.push_head(&parts);
    let head_request = parts.method == http::Method::HEAD;
    let req = Request::from_parts(parts, body);
    let mut response = match shared.status_override() {
        Some(code) => {
            read_body(&shared, id, req.into_body()).await;
            plain(code, Bytes::new())
        }
        None => respond(shared.clone(), shared.behavior.clone(), id, req).await,
    };
    if head_request {
        response = without_body(response);
    }
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert("x-origin", name);
    }
    Ok(response)
}

/// The answer to a HEAD request: the GET headers (length included) and no body. hyper drops
/// the body itself over HTTP/1.1 but sends it over HTTP/2, which is a protocol error there.
fn without_body(response: Response<ResponseBody>) -> Response<ResponseBody> {
    use http_body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact() {
        if !body.is_end_stream() {
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
    }
    Response::from_parts(parts, empty())
}

fn respond(
    shared: Arc<Shared>,
    behavior: Behavior,
    id: usize,
    req: Request<Incoming>,
) -> BoxedResponse {
    Box::pin(async move {
        match behavior {
            Behavior::Echo => {
                let (parts, body) = req.into_parts();
                let (bytes, _) = read_body(&shared, id, body).await;
                echo(&shared.name, &parts, bytes.len())
            }
            Behavior::Status(code) => {
                read_body(&shared, id, req.into_body()).await;
                plain(code, Bytes::new())
            }
            Behavior::Fixed {
                status,
                headers,
                body,
            } => {
                read_body(&shared, id, req.into_body()).await;
                let spec = ResponseSpec {
                    status,
                    headers,
                    body,
                    ..ResponseSpec::default()
                };
                from_spec(spec)
            }
            Behavior::Slow { delay, then } => {
                tokio::time::sleep(delay).await;
                respond(shared, *then, id, req).await
            }
            Behavior::SlowBody {
                chunk,
                chunks,
                delay,
            } => {
                read_body(&shared, id, req.into_body()).await;
                streaming(move |mut tx| async move {
                    for _ in 0..chunks {
                        tokio::time::sleep(delay).await;
                        if tx.send_data(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                })
            }
            Behavior::Stream { chunks, interval } => {
                read_body(&shared, id, req.into_body()).await;
                streaming(move |mut tx| async move {
                    for i in 0..chunks {
                        if i > 0 {
                            tokio::time::sleep(interval).await;
                        }
                        if tx.send_data(format!("chunk {i}\n").into()).await.is_err() {
                            return;
                        }
                    }
                })
            }
            Behavior::EchoBody => {
                let body = req.into_body();
                streaming(move |tx| echo_body(shared, id, body, tx))
            }
            Behavior::Trailers { body, trailers } => {
                read_body(&shared, id, req.into_body()).await;
                from_spec(ResponseSpec {
                    status: 200,
                    body,
                    trailers,
                    ..ResponseSpec::default()
                })
            }
            Behavior::Grpc { status, message } => {
                let (bytes, _) = read_body(&shared, id, req.into_body()).await;
                grpc(bytes, status, &message)
            }
            // Handled per connection before HTTP is spoken; unreachable in practice.
            Behavior::CloseConnection => plain(500, Bytes::new()),
            Behavior::ResetAfterHeaders => {
                read_body(&shared, id, req.into_body()).await;
                aborting(Bytes::new())
            }
            Behavior::AbortMidBody { prefix } => {
                read_body(&shared, id, req.into_body()).await;
                aborting(prefix)
            }
            Behavior::WebSocketEcho => websocket(shared, id, req),
            Behavior::Scripted(script) => {
                read_body(&shared, id, req.into_body()).await;
                let Some(recorded) = shared.log.get(id) else {
                    return plain(500, Bytes::from_static(b"request log cleared"));
                };
                let spec = script(&recorded);
                tokio::time::sleep(spec.delay).await;
                from_spec(spec)
            }
        }
    })
}

/// Reads the whole body into the log; returns it with its trailers. A body error ends the
/// read early (the entry stays incomplete and is marked aborted).
async fn read_body(shared: &Shared, id: usize, mut body: Incoming) -> (Bytes, Option<HeaderMap>) {
    let mut bytes = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            shared.log.mark_aborted(id);
            return (bytes.freeze(), trailers);
        };
        match frame.into_data() {
            Ok(data) => {
                shared.log.append_body(id, &data);
                bytes.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    shared.log.set_trailers(id, t.clone());
                    trailers = Some(t);
                }
            }
        }
    }
    shared.log.mark_complete(id);
    (bytes.freeze(), trailers)
}

async fn echo_body(
    shared: Arc<Shared>,
    id: usize,
    mut body: Incoming,
    mut tx: Sender<Bytes, BoxError>,
) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            shared.log.mark_aborted(id);
            tx.abort("request body failed".into());
            return;
        };
        match frame.into_data() {
            Ok(data) => {
                shared.log.append_body(id, &data);
                if tx.send_data(data).await.is_err() {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    shared.log.set_trailers(id, t.clone());
                    let _ = tx.send_trailers(t).await;
                }
            }
        }
    }
    shared.log.mark_complete(id);
}

fn echo(name: &str, parts: &http::request::Parts, body_len: usize) -> Response<ResponseBody> {
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let entry = headers
            .entry(k.as_str())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = entry {
            values.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
        }
    }
    let json = serde_json::json!({
        "origin": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut response = plain(200, Bytes::from(json.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn grpc(request: Bytes, status: u32, message: &str) -> Response<ResponseBody> {
    let payload = parse_grpc_message(request);
    let (status, message) = match payload {
        Some(_) => (status, message.to_owned()),
        None => (13, "malformed grpc message".to_owned()),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(&message) {
        trailers.insert("grpc-message", v);
    }
    let mut response = streaming(move |mut tx| async move {
        if let Some(payload) = payload {
            let mut framed = BytesMut::with_capacity(5 + payload.len());
            framed.put_u8(0);
            framed.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
            framed.extend_from_slice(&payload);
            if tx.send_data(framed.freeze()).await.is_err() {
                return;
            }
        }
        let _ = tx.send_trailers(trailers).await;
    });
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        http::header::TRAILER,
        HeaderValue::from_static("grpc-status, grpc-message"),
    );
    response
}

/// The payload of exactly one uncompressed length-prefixed message, if `body` is that.
fn parse_grpc_message(mut body: Bytes) -> Option<Bytes> {
    if body.len() < 5 {
        return None;
    }
    let compressed = body.get_u8();
    let len = usize::try_from(body.get_u32()).ok()?;
    (compressed == 0 && body.len() == len).then_some(body)
}

fn websocket(shared: Arc<Shared>, id: usize, mut req: Request<Incoming>) -> Response<ResponseBody> {
    shared.log.mark_complete(id);
    let is_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return plain(400, Bytes::from_static(b"websocket upgrade expected"));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let name = shared.name.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(origin = %name, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            let echoed = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(echoed).await.is_err() {
                break;
            }
        }
        let _ = ws.close(None).await;
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// 200 headers, then `prefix` (if any), then the response is aborted with an error.
fn aborting(prefix: Bytes) -> Response<ResponseBody> {
    streaming(move |mut tx| async move {
        if !prefix.is_empty() && tx.send_data(prefix).await.is_err() {
            return;
        }
        // Give the connection a moment to flush the head (and prefix) before the abort.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.abort("origin aborted the response on purpose".into());
    })
}

fn from_spec(spec: ResponseSpec) -> Response<ResponseBody> {
    let mut response = if spec.trailers.is_empty() {
        plain(spec.status, spec.body)
    } else {
        let trailers = header_map(&spec.trailers);
        let announce = spec
            .trailers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let body = spec.body;
        let mut response = streaming(move |mut tx| async move {
            if !body.is_empty() && tx.send_data(body).await.is_err() {
                return;
            }
            let _ = tx.send_trailers(trailers).await;
        });
        *response.status_mut() = status(spec.status);
        if let Ok(v) = HeaderValue::from_str(&announce) {
            response.headers_mut().insert(http::header::TRAILER, v);
        }
        response
    };
    for (k, v) in header_map(&spec.headers) {
        if let Some(k) = k {
            response.headers_mut().append(k, v);
        }
    }
    response
}

/// A 200 response whose body is produced by `produce` as a spawned task; the body ends when
/// the sender is dropped.
fn streaming<F, Fut>(produce: F) -> Response<ResponseBody>
where
    F: FnOnce(Sender<Bytes, BoxError>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, body) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(produce(tx));
    Response::new(body.boxed())
}

fn plain(code: u16, body: Bytes) -> Response<ResponseBody> {
    let body = if body.is_empty() {
        empty()
    } else {
        Full::new(body).map_err(|e| match e {}).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = status(code);
    response
}

fn empty() -> ResponseBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("origin: invalid status code {code}"))
}

/// Header pairs as a map; an invalid name or value is a bug in the test, so it panics.
fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .unwrap_or_else(|e| panic!("origin: invalid header name {k:?}: {e}"));
        let value = HeaderValue::from_str(v)
            .unwrap_or_else(|e| panic!("origin: invalid header value {v:?}: {e}"));
        map.append(name, value);
    }
    map
}
