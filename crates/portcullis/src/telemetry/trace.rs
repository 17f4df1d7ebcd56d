//! OpenTelemetry traces: the W3C trace context read from each request, a server span per
//! request and a client span per upstream attempt (whose context the upstream receives),
//! parent-based ratio sampling, and export over OTLP (`trace::export`).
//!
//! Every request gets a trace context, sampled or not, so that it can be propagated and
//! logged; attributes are built only for sampled (recording) spans. The SDK builds only the
//! spans it may record (sampled, or children of a caller's context): a new trace that is not
//! sampled, and the attempts of an unsampled request, are a context made here, so that the
//! 99 % of requests a low ratio leaves out stay cheap. `docs/tracing.md` lists the spans and
//! their attributes.

mod export;
mod ids;
mod propagation;
mod sampling;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::Span as _;
use opentelemetry::trace::{
    SpanBuilder, SpanKind, Status, TraceContextExt, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue, Value};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use tokio_util::sync::CancellationToken;

use super::{BodyEnd, Record};
use crate::config::schema::TracingConfig;
use crate::error::ProxyError;
use crate::reason;
use crate::runtime::Runtime;
use crate::upstream::Endpoint;

use export::ExportStats;
use propagation::{Outgoing, TRACEPARENT};
use sampling::RatioSampler;

/// Attribute names: the OpenTelemetry HTTP semantic conventions, then portcullis' own.
mod attr {
    pub const METHOD: &str = "http.request.method";
    pub const METHOD_ORIGINAL: &str = "http.request.method_original";
    pub const STATUS: &str = "http.response.status_code";
    pub const ROUTE: &str = "http.route";
    pub const RESEND_COUNT: &str = "http.request.resend_count";
    pub const REQUEST_BODY_SIZE: &str = "http.request.body.size";
    pub const RESPONSE_BODY_SIZE: &str = "http.response.body.size";
    pub const URL_PATH: &str = "url.path";
    pub const URL_SCHEME: &str = "url.scheme";
    pub const URL_FULL: &str = "url.full";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const CLIENT_ADDRESS: &str = "client.address";
    pub const PEER_ADDRESS: &str = "network.peer.address";
    pub const PEER_PORT: &str = "network.peer.port";
    pub const PROTOCOL_VERSION: &str = "network.protocol.version";
    pub const USER_AGENT: &str = "user_agent.original";
    pub const ERROR_TYPE: &str = "error.type";
    pub const P_ROUTE: &str = "portcullis.route";
    pub const P_UPSTREAM: &str = "portcullis.upstream";
    pub const P_ENDPOINT: &str = "portcullis.endpoint";
    pub const P_ATTEMPT: &str = "portcullis.attempt";
    pub const P_ATTEMPTS: &str = "portcullis.attempts";
    pub const P_REASON: &str = "portcullis.reason";
    pub const P_REQUEST_ID: &str = "portcullis.request_id";
    pub const P_RATE_LIMIT_POLICY: &str = "portcullis.rate_limit.policy";
    pub const P_RATE_LIMIT_ACTION: &str = "portcullis.rate_limit.action";
}

/// `error.type` of a response body that broke off (the upstream, or the idle timeout).
const RESPONSE_BODY_FAILED: &str = "response_body_failed";

/// The process's tracer: spans are started here and exported by a background task.
#[derive(Debug)]
pub struct Tracer {
    inner: Arc<Inner>,
    provider: SdkTracerProvider,
    stats: Arc<ExportStats>,
    stop: CancellationToken,
    exporter: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How long `shutdown` waits for the last exports.
    flush_timeout: Duration,
}

/// What a request's span needs to start its attempts' spans.
#[derive(Debug)]
struct Inner {
    tracer: SdkTracer,
    /// The decision for a new trace: the provider's sampler without its parent-based part.
    root_sampler: RatioSampler,
    propagator: TraceContextPropagator,
}

/// The trace context of one request, and its span when the SDK built one.
#[derive(Debug)]
pub struct RequestSpan(Request);

#[derive(Debug)]
enum Request {
    /// Built by the SDK: a sampled request, or the child of a caller's trace context (boxed:
    /// an SDK span is large, and the record carrying it moves).
    Sdk { span: Box<Span>, inner: Arc<Inner> },
    /// A new trace that is not sampled: its trace id only. Its span id would never be seen
    /// (each attempt's context gets its own), nor its trace state (a new trace has none).
    Unsampled(TraceId),
}

/// The span of one upstream attempt (`None` for an unsampled one: nothing to record or
/// end); ended with the attempt's result.
#[derive(Debug)]
pub struct AttemptSpan(Option<Span>);

impl Tracer {
    /// The tracer `config` asks for (`None` without an OTLP endpoint). Starts the exporter
    /// task, so it must run inside the tokio runtime.
    pub fn from_config(config: &TracingConfig) -> anyhow::Result<Option<Tracer>> {
        let Some(otlp) = &config.otlp else {
            return Ok(None);
        };
        let resource = Resource::builder_empty()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_service_name(config.service_name.clone())
            .build();
        let stats = Arc::new(ExportStats::default());
        let stop = CancellationToken::new();
        let (queue, exporter) = export::start(
            otlp,
            &config.batch,
            &resource,
            Arc::clone(&stats),
            stop.clone(),
        )?;
        let ratio = Sampler::TraceIdRatioBased(config.sampling_ratio);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(Sampler::ParentBased(Box::new(ratio)))
            .with_id_generator(ids::Ids)
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("portcullis")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Some(Tracer {
            inner: Arc::new(Inner {
                tracer,
                root_sampler: RatioSampler::new(config.sampling_ratio),
                propagator: TraceContextPropagator::new(),
            }),
            provider,
            stats,
            stop,
            exporter: Mutex::new(Some(exporter)),
            // The queue may hold several batches; each export is bounded by the timeout.
            flush_timeout: otlp.timeout.saturating_mul(2),
        }))
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Spans lost in failed or rejected exports.
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.stats.exported.load(Ordering::Relaxed)
    }

    /// Sends the spans queued now and stops the exporter, waiting at most twice the export
    /// timeout. Spans that end later are dropped (and counted). Called once drained.
    pub async fn shutdown(&self) {
        let timeout = self.flush_timeout;
        self.stop.cancel();
        let exporter = self
            .exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(exporter) = exporter {
            if tokio::time::timeout(timeout, exporter).await.is_err() {
                tracing::warn!(?timeout, "trace exporter did not finish in time");
            }
        }
        let _ = self.provider.shutdown();
    }

    /// Starts the request's span: a child of the incoming `traceparent` (sampled as it
    /// says), or the root of a new trace (sampled at the configured ratio).
    pub fn start(&self, parts: &http::request::Parts) -> Option<RequestSpan> {
        let name = known_method(&parts.method).unwrap_or("HTTP");
        let builder = || SpanBuilder::from_name(name).with_kind(SpanKind::Server);
        let inner = &self.inner;
        let request = if propagation::carries(&parts.headers, &TRACEPARENT) {
            let parent = inner
                .propagator
                .extract_with_context(&Context::new(), &HeaderExtractor(&parts.headers));
            let span = Box::new(inner.tracer.build_with_context(builder(), &parent));
            Request::Sdk {
                span,
                inner: Arc::clone(inner),
            }
        } else {
            // A new trace: decided here on the trace id, as the SDK's sampler would, and
            // handed to the SDK (with that id) only when sampled.
            let trace_id = ids::trace_id();
            if inner.root_sampler.samples(trace_id) {
                let root = Context::new();
                let span = ids::with_trace_id(trace_id, || {
                    Box::new(inner.tracer.build_with_context(builder(), &root))
                });
                Request::Sdk {
                    span,
                    inner: Arc::clone(inner),
                }
            } else {
                Request::Unsampled(trace_id)
            }
        };
        Some(RequestSpan(request))
    }

    /// Ends the request's span with what the record says about the request.
    pub fn finish(&self, runtime: &Runtime, record: &mut Record, end: &BodyEnd) {
        let Some(RequestSpan(Request::Sdk { mut span, .. })) = record.span.take() else {
            return;
        };
        if span.is_recording() {
            server_attributes(&mut span, runtime, record, end);
        }
        span.end();
    }
}

impl RequestSpan {
    /// The request's W3C trace id, sampled or not (for the access log).
    pub fn trace_id(&self) -> Option<[u8; 16]> {
        match &self.0 {
            Request::Sdk { span, .. } => {
                let context = span.span_context();
                context.is_valid().then(|| context.trace_id().to_bytes())
            }
            Request::Unsampled(trace_id) => Some(trace_id.to_bytes()),
        }
    }

    /// Whether the request's span is recorded (and will be exported).
    pub fn is_sampled(&self) -> bool {
        match &self.0 {
            Request::Sdk { span, .. } => span.span_context().is_sampled(),
            Request::Unsampled(_) => false,
        }
    }

    /// Starts the span of attempt number `attempt` (0: the first) of the request to
    /// `endpoint` and writes its context into the attempt's headers (`traceparent`, and
    /// `tracestate` when there is one), sampled or not, so that the upstream's spans are its
    /// children.
    pub fn attempt(
        &self,
        head: &mut http::request::Parts,
        upstream: &Arc<str>,
        endpoint: &Endpoint,
        attempt: u32,
    ) -> AttemptSpan {
        let (parent, inner) = match &self.0 {
            Request::Sdk { span, inner } if span.span_context().is_sampled() => {
                (span.span_context(), inner)
            }
            Request::Sdk { span, .. } => {
                let parent = span.span_context();
                if parent.is_valid() {
                    unsampled_attempt(parent.trace_id(), parent.trace_state(), head);
                }
                return AttemptSpan(None);
            }
            Request::Unsampled(trace_id) => {
                unsampled_attempt(*trace_id, &TraceState::NONE, head);
                return AttemptSpan(None);
            }
        };
        let parent = Context::new().with_remote_span_context(parent.clone());
        let name = known_method(&head.method).unwrap_or("HTTP");
        let builder = SpanBuilder::from_name(name).with_kind(SpanKind::Client);
        let mut span = inner.tracer.build_with_context(builder, &parent);
        let context = span.span_context();
        let outgoing = Outgoing {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            sampled: context.is_sampled(),
            state: context.trace_state(),
        };
        propagation::inject(&outgoing, &mut head.headers);
        if span.is_recording() {
            let addr = endpoint.addr;
            // Formatted once (an address goes through `core::fmt`), shared by reference count.
            let ip: Arc<str> = addr.ip().to_string().into();
            let mut attributes = vec![
                KeyValue::new(attr::SERVER_ADDRESS, Value::from(Arc::clone(&ip))),
                KeyValue::new(attr::SERVER_PORT, i64::from(addr.port())),
                KeyValue::new(attr::PEER_ADDRESS, Value::from(ip)),
                KeyValue::new(attr::PEER_PORT, i64::from(addr.port())),
                KeyValue::new(
                    attr::URL_FULL,
                    format!("http://{}{}", endpoint.authority, head.uri.path()),
                ),
                KeyValue::new(attr::P_UPSTREAM, Value::from(Arc::clone(upstream))),
                KeyValue::new(attr::P_ENDPOINT, addr.to_string()),
                KeyValue::new(attr::P_ATTEMPT, i64::from(attempt) + 1),
            ];
            method_attributes(&mut attributes, &head.method);
            if attempt > 0 {
                attributes.push(KeyValue::new(attr::RESEND_COUNT, i64::from(attempt)));
            }
            span.set_attributes(attributes);
        }
        AttemptSpan(Some(span))
    }
}

/// Writes the context of an unsampled request's attempt, which has no span: what the SDK
/// would give a child it does not sample (the request's trace id and trace state, a new span
/// id, no flags).
fn unsampled_attempt(trace_id: TraceId, state: &TraceState, head: &mut http::request::Parts) {
    let outgoing = Outgoing {
        trace_id,
        span_id: ids::span_id(),
        sampled: false,
        state,
    };
    propagation::inject(&outgoing, &mut head.headers);
}

impl AttemptSpan {
    /// Ends the span with the attempt's response head, or the error that ended it. A
    /// response of 400 or more, or no response, marks the span as an error.
    pub fn end<B>(self, result: Result<&http::Response<B>, &ProxyError>) {
        let Some(mut span) = self.0 else {
            return;
        };
        if span.is_recording() {
            match result {
                Ok(response) => {
                    let status = response.status();
                    span.set_attributes([
                        KeyValue::new(attr::STATUS, i64::from(status.as_u16())),
                        KeyValue::new(attr::PROTOCOL_VERSION, protocol_version(response.version())),
                    ]);
                    if status.as_u16() >= 400 {
                        status_error(&mut span, status.as_str().to_string());
                    }
                }
                Err(err) => status_error(&mut span, err.status_and_reason().1.to_string()),
            }
        }
        span.end();
    }
}

/// Marks `span` as failed, with `error_type` as `error.type` and the status description.
fn status_error(span: &mut Span, error_type: String) {
    span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.clone()));
    span.set_status(Status::error(error_type));
}

/// The server span's attributes, from the finished request's record.
fn server_attributes(span: &mut Span, runtime: &Runtime, record: &Record, end: &BodyEnd) {
    let route = record.route.and_then(|id| runtime.router.route(id));
    let mut attributes = Vec::with_capacity(24);
    attributes.push(KeyValue::new(attr::URL_SCHEME, "http"));
    attributes.push(KeyValue::new(
        attr::STATUS,
        i64::from(record.status.as_u16()),
    ));
    if let Some(head) = &record.head {
        method_attributes(&mut attributes, &head.method);
        attributes.push(KeyValue::new(attr::URL_PATH, head.uri.path().to_string()));
        attributes.push(KeyValue::new(
            attr::PROTOCOL_VERSION,
            protocol_version(head.version),
        ));
        if let Some((host, port)) = head
            .host()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(split_host)
        {
            attributes.push(KeyValue::new(attr::SERVER_ADDRESS, host));
            if let Some(port) = port {
                attributes.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
            }
        }
        if let Some(agent) = head.user_agent.as_ref().and_then(|a| a.to_str().ok()) {
            attributes.push(KeyValue::new(attr::USER_AGENT, agent.to_string()));
        }
        let method = known_method(&head.method).unwrap_or("HTTP");
        match route {
            Some(route) => span.update_name(format!("{method} {}", route.name)),
            None => span.update_name(method),
        }
    }
    // The client is the peer unless a trusted proxy said otherwise: formatted once then.
    let peer_ip: Arc<str> = record.peer.ip().to_string().into();
    let client_ip = match record.client_ip {
        Some(ip) if ip != record.peer.ip() => Value::from(ip.to_string()),
        _ => Value::from(Arc::clone(&peer_ip)),
    };
    attributes.push(KeyValue::new(attr::CLIENT_ADDRESS, client_ip));
    attributes.push(KeyValue::new(attr::PEER_ADDRESS, Value::from(peer_ip)));
    attributes.push(KeyValue::new(
        attr::PEER_PORT,
        i64::from(record.peer.port()),
    ));
    if let Some(id) = record.request_id.as_ref().and_then(|id| id.to_str().ok()) {
        attributes.push(KeyValue::new(attr::P_REQUEST_ID, id.to_string()));
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new(
            attr::ROUTE,
            Value::from(Arc::clone(&route.name)),
        ));
        attributes.push(KeyValue::new(
            attr::P_ROUTE,
            Value::from(Arc::clone(&route.name)),
        ));
    }
    if let Some(upstream) = record.upstream.and_then(|i| runtime.upstreams.get(i)) {
        attributes.push(KeyValue::new(
            attr::P_UPSTREAM,
            Value::from(Arc::clone(&upstream.name)),
        ));
    }
    if let Some(endpoint) = record.endpoint {
        attributes.push(KeyValue::new(attr::P_ENDPOINT, endpoint.to_string()));
    }
    if record.attempts > 0 {
        attributes.push(KeyValue::new(attr::P_ATTEMPTS, i64::from(record.attempts)));
    }
    if !record.reason.is_empty() {
        attributes.push(KeyValue::new(attr::P_REASON, record.reason));
    }
    if let Some((policy, action)) = &record.rate_limit {
        attributes.push(KeyValue::new(
            attr::P_RATE_LIMIT_POLICY,
            Value::from(Arc::clone(policy)),
        ));
        attributes.push(KeyValue::new(attr::P_RATE_LIMIT_ACTION, action.as_str()));
    }
    attributes.push(KeyValue::new(
        attr::REQUEST_BODY_SIZE,
        record.bytes_in.get() as i64,
    ));
    attributes.push(KeyValue::new(
        attr::RESPONSE_BODY_SIZE,
        end.bytes_out as i64,
    ));
    span.set_attributes(attributes);

    // Server spans are errors for 5xx, and for a response that did not reach the client in
    // full (4xx are the client's business).
    if let Some(error) = server_error(record.status, record.reason, end) {
        status_error(span, error);
    }
}

/// The server span's `error.type`, if the request failed: the reason when the gateway
/// answered a 5xx itself, else the status code; or how the response body ended early.
fn server_error(status: StatusCode, reason: &'static str, end: &BodyEnd) -> Option<String> {
    if status.is_server_error() {
        Some(if reason.is_empty() {
            status.as_str().to_string()
        } else {
            reason.to_string()
        })
    } else if end.failed {
        Some(RESPONSE_BODY_FAILED.to_string())
    } else if !end.complete {
        Some(reason::DOWNSTREAM_ABORTED.to_string())
    } else {
        None
    }
}

/// `http.request.method` (and `http.request.method_original` for a method outside the
/// known set, which is reported as `_OTHER`).
fn method_attributes(attributes: &mut Vec<KeyValue>, method: &Method) {
    match known_method(method) {
        Some(name) => attributes.push(KeyValue::new(attr::METHOD, name)),
        None => {
            attributes.push(KeyValue::new(attr::METHOD, "_OTHER"));
            attributes.push(KeyValue::new(attr::METHOD_ORIGINAL, method.to_string()));
        }
    }
}

/// The method's name when it is one of the HTTP methods the conventions know.
fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return None,
    })
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]` (or `[v6][:port]`) into the host without brackets and the port.
fn split_host(authority: &str) -> Option<(String, Option<u16>)> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_string(), authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new trace is sampled on its own trace id, as `TraceIdRatioBased` decides (the
    /// lower 64 bits, shifted right once, below ratio × 2^63), and a sampled one keeps the id
    /// the decision was made on when the SDK builds its span.
    #[tokio::test]
    async fn new_traces_are_sampled_on_their_trace_id() {
        let config = TracingConfig {
            otlp: Some(crate::config::schema::OtlpConfig {
                endpoint: "http://127.0.0.1:9".into(),
                timeout: Duration::from_millis(100),
                headers: Default::default(),
            }),
            sampling_ratio: 0.5,
            ..TracingConfig::default()
        };
        let tracer = Tracer::from_config(&config).unwrap().unwrap();
        let (parts, ()) = http::Request::new(()).into_parts();
        let bound = (0.5 * (1u64 << 63) as f64) as u64;
        let mut sampled = 0;
        for _ in 0..400 {
            let span = tracer.start(&parts).unwrap();
            let id = span.trace_id().unwrap();
            let low = u64::from_be_bytes(id[8..].try_into().unwrap());
            assert_eq!(span.is_sampled(), low >> 1 < bound, "{id:02x?}");
            assert_eq!(span.is_sampled(), matches!(span.0, Request::Sdk { .. }));
            sampled += usize::from(span.is_sampled());
        }
        assert!((100..300).contains(&sampled), "{sampled} of 400 sampled");
        tracer.shutdown().await;
    }

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(
            split_host("example.com"),
            Some(("example.com".into(), None))
        );
        assert_eq!(
            split_host("example.com:8080"),
            Some(("example.com".into(), Some(8080)))
        );
        assert_eq!(split_host("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_host("bad host"), None);
    }

    #[test]
    fn server_errors_follow_the_conventions() {
        let done = BodyEnd {
            duration: std::time::Duration::ZERO,
            bytes_out: 0,
            complete: true,
            failed: false,
        };
        assert_eq!(server_error(StatusCode::OK, "", &done), None);
        assert_eq!(
            server_error(StatusCode::NOT_FOUND, reason::NO_ROUTE, &done),
            None
        );
        assert_eq!(
            server_error(StatusCode::BAD_GATEWAY, "", &done).as_deref(),
            Some("502")
        );
        assert_eq!(
            server_error(StatusCode::GATEWAY_TIMEOUT, reason::UPSTREAM_TIMEOUT, &done).as_deref(),
            Some("upstream_timeout")
        );
        let failed = BodyEnd {
            failed: true,
            complete: false,
            ..done
        };
        assert_eq!(
            server_error(StatusCode::OK, "", &failed).as_deref(),
            Some(RESPONSE_BODY_FAILED)
        );
        let aborted = BodyEnd {
            complete: false,
            ..done
        };
        assert_eq!(
            server_error(StatusCode::OK, "", &aborted).as_deref(),
            Some("downstream_aborted")
        );
    }
}
