//! Clients for tests: an HTTP/1.1 or HTTP/2 (prior knowledge) client over hyper-util's legacy
//! client that buffers responses into a `TestResponse`, streaming variants, and a WebSocket
//! client.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::BoxError;

/// The request body type the client sends.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// An HTTP client for tests; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct TestClient {
    inner: Client<HttpConnector, RequestBody>,
}

impl TestClient {
    /// HTTP/1.1 with a keep-alive pool.
    pub fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Cleartext HTTP/2 with prior knowledge.
    pub fn http2() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// HTTP/1.1 opening a new connection per request (no idle connections kept).
    pub fn http1_no_pool() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        }
    }

    /// GET `url`; panics if the request fails (use `try_get` to assert on failures).
    pub async fn get(&self, url: &str) -> TestResponse {
        self.try_get(url)
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e:#}"))
    }

    /// GET `url`.
    pub async fn try_get(&self, url: &str) -> anyhow::Result<TestResponse> {
        let req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("invalid url {url}"))?;
        self.try_request(req).await
    }

    /// Sends `req` and buffers the response; panics if the request fails.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> TestResponse {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_request(req)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e:#}"))
    }

    /// Sends `req` and buffers the response (body and trailers).
    pub async fn try_request(&self, req: Request<Full<Bytes>>) -> anyhow::Result<TestResponse> {
        let response = self.send(req).await?;
        TestResponse::read(response).await
    }

    /// Sends `req` and returns as soon as the response head arrives; the body streams.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<StreamingResponse> {
        let req = req.map(|b| b.map_err(|e| match e {}).boxed());
        self.send_boxed(req).await
    }

    /// Starts `req` with a body the test writes piece by piece through the returned
    /// `BodySender` (sent chunked over HTTP/1.1). The task yields the buffered response.
    pub fn request_streaming(
        &self,
        req: Request<()>,
    ) -> (BodySender, JoinHandle<anyhow::Result<TestResponse>>) {
        let (tx, body) = Channel::<Bytes, BoxError>::new(1);
        let req = req.map(|()| body.boxed());
        let client = self.clone();
        let task = tokio::spawn(async move {
            let response = client.send_boxed(req).await?;
            TestResponse::read(response).await
        });
        (BodySender { tx: Some(tx) }, task)
    }

    async fn send_boxed(&self, req: Request<RequestBody>) -> anyhow::Result<StreamingResponse> {
        let what = format!("{} {}", req.method(), req.uri());
        let response = self
            .inner
            .request(req)
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {e:?}"))?;
        Ok(StreamingResponse::new(response))
    }
}

/// Writes a streaming request body; the body ends on `finish` or drop.
pub struct BodySender {
    tx: Option<Sender<Bytes, BoxError>>,
}

impl BodySender {
    /// Sends one chunk; panics if the request is gone (the connection failed or answered).
    pub async fn send(&mut self, chunk: impl Into<Bytes>) {
        let sent = match self.tx.as_mut() {
            Some(tx) => tx.send_data(chunk.into()).await.is_ok(),
            None => false,
        };
        assert!(sent, "BodySender: the request body is no longer read");
    }

    /// Sends one chunk; false if the request body is no longer read.
    pub async fn try_send(&mut self, chunk: impl Into<Bytes>) -> bool {
        match self.tx.as_mut() {
            Some(tx) => tx.send_data(chunk.into()).await.is_ok(),
            None => false,
        }
    }

    /// Sends trailers and ends the body.
    pub async fn finish_with_trailers(mut self, trailers: HeaderMap) {
        if let Some(mut tx) = self.tx.take() {
            let _ = tx.send_trailers(trailers).await;
        }
    }

    /// Ends the body.
    pub fn finish(mut self) {
        self.tx.take();
    }

    /// Aborts the body with an error (the client resets the stream / closes the connection).
    pub fn abort(mut self) {
        if let Some(tx) = self.tx.take() {
            tx.abort("client aborted the request body on purpose".into());
        }
    }
}

/// A response whose head has arrived and whose body is read on demand.
pub struct StreamingResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    body: Incoming,
    trailers: Option<HeaderMap>,
}

impl StreamingResponse {
    fn new(response: Response<Incoming>) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            trailers: None,
        }
    }

    /// The next data frame; `Ok(None)` at the end of the body (trailers are kept for `rest`).
    pub async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| anyhow::anyhow!("response body: {e:?}"))?;
            match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Ok(Some(data)),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        self.trailers = Some(t);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The next data frame within `timeout`; `Err` on timeout or body error.
    pub async fn next_chunk_within(&mut self, timeout: Duration) -> anyhow::Result<Option<Bytes>> {
        tokio::time::timeout(timeout, self.next_chunk())
            .await
            .map_err(|_| anyhow::anyhow!("no response chunk within {timeout:?}"))?
    }

    /// Reads the rest of the body into a `TestResponse` (chunks already taken are not in it).
    pub async fn rest(mut self) -> anyhow::Result<TestResponse> {
        let collected = self
            .body
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("response body: {e:?}"))?;
        let trailers = collected.trailers().cloned().or(self.trailers.take());
        Ok(TestResponse {
            status: self.status,
            version: self.version,
            headers: self.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl TestResponse {
    async fn read(response: StreamingResponse) -> anyhow::Result<TestResponse> {
        response.rest().await
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The trailer `name`, if trailers arrived and contain it.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
    }
}

/// A WebSocket client connection (use `futures_util::{SinkExt, StreamExt}` on it).
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` (`ws://127.0.0.1:port/path`); panics if the handshake fails.
pub async fn ws_connect(url: &str) -> WsClient {
    try_ws_connect(url)
        .await
        .unwrap_or_else(|e| panic!("websocket connect to {url} failed: {e:#}"))
}

/// Opens a WebSocket to `url`.
pub async fn try_ws_connect(url: &str) -> anyhow::Result<WsClient> {
    let (ws, _response) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("websocket handshake with {url}"))?;
    Ok(ws)
}
