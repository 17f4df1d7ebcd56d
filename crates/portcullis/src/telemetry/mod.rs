//! Telemetry: what happened to one request (`Record`), filled in along the pipeline, and its
//! emission exactly once (`ObservedBody`): metrics, the access log line and the span end when
//! the response body has been sent, or dropped because the client went away.
//!
//! The sinks live in `Telemetry` (one per process, in `app::Shared`). A sink that is not
//! configured costs a branch: no head is copied, no wall clock read, no span started.

pub mod access_log;
pub mod log_limit;
pub mod metrics;
pub mod trace;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{Body, BoxError, Progress};
use crate::config::schema::TelemetryConfig;
use crate::proxy::Downstream;
use crate::runtime::Runtime;

/// The process's telemetry sinks.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: Option<metrics::Metrics>,
    pub access_log: Option<access_log::AccessLog>,
    pub tracer: Option<trace::Tracer>,
    /// Per-reason limit on the log lines of refused and failed requests.
    pub refusal_log: log_limit::LogLimit,
}

impl Telemetry {
    /// Builds the sinks `config` turns on. Must run inside the tokio runtime (exporters and
    /// writers start their background work here).
    pub fn from_config(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
        Ok(Telemetry {
            metrics: metrics::Metrics::from_config(&config.metrics)?,
            access_log: access_log::AccessLog::from_config(&config.access_log)?,
            tracer: trace::Tracer::from_config(&config.tracing)?,
            refusal_log: log_limit::LogLimit::default(),
        })
    }

    /// Whether any sink wants to hear about requests.
    pub fn observes(&self) -> bool {
        self.metrics.is_some() || self.access_log.is_some() || self.tracer.is_some()
    }

    /// Whether a sink needs the request's id, method, URI, host and version: the access log
    /// always, the tracer only for a sampled request (its span's attributes).
    pub fn wants_head(&self, record: &Record) -> bool {
        self.access_log.is_some() || record.span.as_ref().is_some_and(|s| s.is_sampled())
    }

    /// The request's head for the sinks, with the headers the access log logs.
    pub fn head(&self, parts: &http::request::Parts) -> Head {
        let mut head = Head::of(parts);
        if let Some(log) = &self.access_log {
            head.logged_headers = log.capture_headers(&parts.headers);
        }
        head
    }

    /// Writes out what the sinks still hold; on shutdown, bounded, best effort.
    pub async fn flush(&self) {
        if let Some(log) = &self.access_log {
            log.flush(access_log::SHUTDOWN_FLUSH).await;
        }
    }

    /// Emits a request the gateway refused before it reached the pipeline (hyper could not
    /// parse its head): counted by `status` and `reason` like any other, and access logged.
    pub fn refused_early(
        &self,
        ds: &Downstream,
        status: StatusCode,
        reason: &'static str,
        request_id: &HeaderValue,
        bytes_out: u64,
    ) {
        if !self.observes() {
            return;
        }
        let arrived = Instant::now();
        let mut record = Record::new(arrived, ds);
        record.status = status;
        record.reason = reason;
        record.request_id = Some(request_id.clone());
        let end = BodyEnd {
            duration: std::time::Duration::ZERO,
            bytes_out,
            complete: true,
            failed: false,
        };
        let runtime = ds.shared.runtime.load();
        self.finish(&runtime, &mut record, &end);
    }

    /// Emits one finished request to every sink.
    fn finish(&self, runtime: &Runtime, record: &mut Record, end: &BodyEnd) {
        if let Some(metrics) = &self.metrics {
            metrics.record(runtime, record, end);
        }
        if let Some(log) = &self.access_log {
            log.record(runtime, record, end);
        }
        if let Some(tracer) = &self.tracer {
            tracer.finish(runtime, record, end);
        }
    }

    /// The sinks' counts now.
    pub fn sink_counts(&self) -> SinkCounts {
        SinkCounts {
            access_log: self.access_log.as_ref().map(|log| Delivered {
                delivered: log.written(),
                dropped: log.dropped(),
                failed: log.failed(),
            }),
            spans: self.tracer.as_ref().map(|tracer| Delivered {
                delivered: tracer.exported(),
                dropped: tracer.dropped(),
                failed: tracer.failed(),
            }),
        }
    }
}

/// Wall-clock time since the Unix epoch (zero if the clock is set before it): the one read
/// of the calendar clock in the gateway (log timestamps, the process start time); everything
/// else uses tokio's clock so tests can pause it.
#[allow(clippy::disallowed_types)]
pub fn wall_clock() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Lowercase hex of `bytes` into `out` (twice as long; extra room is left as it was): trace
/// and span ids on the wire and in the access log.
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// What a sink did with what it was given, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Written (access log lines) or accepted by the collector (spans).
    pub delivered: u64,
    /// Dropped because the sink's buffer was full.
    pub dropped: u64,
    /// Lost to write or export errors.
    pub failed: u64,
}

/// The access log's and the tracer's counts (`None` for a sink that is off).
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCounts {
    pub access_log: Option<Delivered>,
    pub spans: Option<Delivered>,
}

/// The request as it arrived (before path normalisation), kept only when a sink needs it.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub version: Version,
    pub user_agent: Option<HeaderValue>,
    /// The request headers `telemetry.access_log.headers` lists (`AccessLog::capture_headers`).
    pub logged_headers: Vec<(usize, HeaderValue)>,
}

impl Head {
    pub fn of(parts: &http::request::Parts) -> Head {
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            host: parts.headers.get(http::header::HOST).cloned(),
            version: parts.version,
            user_agent: parts.headers.get(http::header::USER_AGENT).cloned(),
            logged_headers: Vec::new(),
        }
    }

    /// The host the client asked for: the URI's authority (HTTP/2, absolute form) or `Host`,
    /// as the client sent it (a `Host` need not be text).
    pub fn host(&self) -> Option<&[u8]> {
        match self.uri.authority() {
            Some(authority) => Some(authority.as_str().as_bytes()),
            None => self.host.as_ref().map(HeaderValue::as_bytes),
        }
    }
}

/// What a rate limit did to a request, when it did more than allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAction {
    Denied,
    Delayed,
    /// A shadow-mode policy would have refused it.
    ShadowDenied,
}

impl RateLimitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitAction::Denied => "denied",
            RateLimitAction::Delayed => "delayed",
            RateLimitAction::ShadowDenied => "shadow_denied",
        }
    }
}

/// Request body bytes received from the client.
#[derive(Debug, Default)]
pub enum BytesIn {
    /// No body, or one that never reached the upstream.
    #[default]
    None,
    /// Read in full before forwarding (kept for retries).
    Known(u64),
    /// Streamed: counted as it passes (`LimitedIncoming`).
    Counted(Arc<Progress>),
}

impl BytesIn {
    pub fn get(&self) -> u64 {
        match self {
            BytesIn::None => 0,
            BytesIn::Known(n) => *n,
            BytesIn::Counted(p) => p.received.load(Ordering::Relaxed),
        }
    }
}

/// What happened to one request, filled in by `proxy::handle` and `proxy::forward`.
#[derive(Debug)]
pub struct Record {
    /// When the gateway started on the request (latency counts from here).
    pub arrived: Instant,
    /// Only when `Telemetry::wants_head`.
    pub request_id: Option<HeaderValue>,
    /// Index of the listener in the runtime.
    pub listener: usize,
    pub peer: SocketAddr,
    /// After trusted `X-Forwarded-For`; `None` if the request was refused before that.
    pub client_ip: Option<IpAddr>,
    /// Only when `Telemetry::wants_head`.
    pub head: Option<Head>,
    /// `Route::id` of the matched route.
    pub route: Option<usize>,
    /// Index of the upstream in the runtime.
    pub upstream: Option<usize>,
    /// The endpoint whose answer (or failure) the client got.
    pub endpoint: Option<SocketAddr>,
    /// Upstream attempts made (0: none).
    pub attempts: u32,
    /// Why the gateway answered itself (`reason::*`); empty when the upstream answered.
    pub reason: &'static str,
    /// The rate-limit policy that acted on the request, and how.
    pub rate_limit: Option<(Arc<str>, RateLimitAction)>,
    /// The response status sent to the client.
    pub status: StatusCode,
    pub bytes_in: BytesIn,
    /// The request's span, when tracing samples it.
    pub span: Option<trace::RequestSpan>,
}

impl Record {
    pub fn new(arrived: Instant, ds: &Downstream) -> Record {
        Record {
            arrived,
            request_id: None,
            listener: ds.listener,
            peer: ds.peer,
            client_ip: None,
            head: None,
            route: None,
            upstream: None,
            endpoint: None,
            attempts: 0,
            reason: "",
            rate_limit: None,
            status: StatusCode::OK,
            bytes_in: BytesIn::None,
            span: None,
        }
    }
}

/// How the response body ended.
#[derive(Debug, Clone, Copy)]
pub struct BodyEnd {
    /// From the request's arrival to the end of its response body: read once, for every sink.
    pub duration: std::time::Duration,
    /// Response body bytes sent to the client (data frames handed to the connection).
    pub bytes_out: u64,
    /// The body reached its end (false: the client went away, or the body failed).
    pub complete: bool,
    /// The body failed: the upstream broke off, or the stream idle timeout cut it.
    pub failed: bool,
}

/// The response body the client gets: the proxied body, counted, with the request's record;
/// when it is dropped (sent, failed or abandoned) the record goes to the sinks, once.
#[derive(Debug)]
pub struct ObservedBody {
    body: Body,
    done: Option<Box<Done>>,
}

#[derive(Debug)]
struct Done {
    ds: Arc<Downstream>,
    runtime: Arc<Runtime>,
    record: Record,
    end: BodyEnd,
}

impl ObservedBody {
    /// A body nothing observes (telemetry off, or a response made outside the pipeline).
    pub fn plain(body: Body) -> Self {
        Self { body, done: None }
    }

    /// `body`, reported to `ds.shared.telemetry` with `record` once it ends.
    pub fn observed(
        body: Body,
        ds: Arc<Downstream>,
        runtime: Arc<Runtime>,
        record: Record,
    ) -> Self {
        let complete = body.is_end_stream();
        Self {
            body,
            done: Some(Box::new(Done {
                ds,
                runtime,
                record,
                end: BodyEnd {
                    duration: std::time::Duration::ZERO,
                    bytes_out: 0,
                    complete,
                    failed: false,
                },
            })),
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(done) = &mut this.done {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        done.end.bytes_out += data.len() as u64;
                    }
                }
                Poll::Ready(Some(Err(_))) => done.end.failed = true,
                Poll::Ready(None) => done.end.complete = true,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(mut done) = self.done.take() {
            if self.body.is_end_stream() && !done.end.failed {
                done.end.complete = true;
            }
            done.end.duration = done.record.arrived.elapsed();
            let Done {
                ds,
                runtime,
                record,
                end,
            } = &mut *done;
            ds.shared.telemetry.finish(runtime, record, end);
        }
    }
}
