//! An in-process OTLP/HTTP trace receiver: a hyper server on `127.0.0.1:0` that accepts
//! `POST /v1/traces`, decodes the real protobuf payload (`ExportTraceServiceRequest`) and
//! keeps every span with its resource attributes for tests to assert on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    /// Attribute values as text (numbers and booleans formatted).
    pub attributes: BTreeMap<String, String>,
    pub status: OtlpStatus,
    pub status_message: String,
    /// The resource the span was sent with (`service.name`, ...).
    pub resource: BTreeMap<String, String>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The trace id as 32 lowercase hex digits (as in `traceparent`).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    pub fn parent_span_id_hex(&self) -> Option<String> {
        self.parent_span_id.map(|id| hex(&id))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Export requests received (decoded or not).
    requests: AtomicUsize,
    /// 0: answer 200; otherwise this status.
    status: AtomicU16,
    /// `content-type` and other headers of the last export request.
    last_headers: Mutex<Option<http::HeaderMap>>,
}

/// A running receiver; stops on drop.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("otlp receiver: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("otlp receiver: no local address");
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        OtlpReceiver { addr, state, stop }
    }

    /// The base URL to configure as `telemetry.tracing.otlp.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The headers of the last export request.
    pub fn last_headers(&self) -> Option<http::HeaderMap> {
        self.state.last_headers.lock().unwrap().clone()
    }

    /// Answers every export with `status` from now on (0: 200 again).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits (real time, bounded) until at least `n` spans arrived; returns them all.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "otlp receiver: expected at least {n} spans within {timeout:?}, got {}: {spans:#?}",
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_headers.lock().unwrap() = Some(req.headers().clone());
    let answer = |status: StatusCode, body: Bytes| {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND, Bytes::new());
    }
    let forced = state.status.load(Ordering::SeqCst);
    if forced != 0 {
        return answer(StatusCode::from_u16(forced).unwrap(), Bytes::new());
    }
    let Ok(body) = req.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let Ok(message) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let mut received = Vec::new();
    for resource_spans in message.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let status = span.status.clone().unwrap_or_default();
                received.push(ReceivedSpan {
                    trace_id: span.trace_id.as_slice().try_into().unwrap(),
                    span_id: span.span_id.as_slice().try_into().unwrap(),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| span.parent_span_id.as_slice().try_into().unwrap()),
                    name: span.name.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    attributes: attributes(&span.attributes),
                    status: OtlpStatus::try_from(status.code).unwrap_or(OtlpStatus::Unset),
                    status_message: status.message,
                    resource: resource.clone(),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                });
            }
        }
    }
    state.spans.lock().unwrap().extend(received);
    let response = ExportTraceServiceResponse {
        partial_success: None,
    };
    answer(StatusCode::OK, Bytes::from(response.encode_to_vec()))
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
