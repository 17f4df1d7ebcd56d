//! Span export: the bounded queue between the request path and the exporter (a
//! `SpanProcessor` that never blocks: a full queue drops the span and counts it), and the
//! exporter task on the tokio runtime that batches finished spans and POSTs them as OTLP
//! protobuf to `<endpoint>/v1/traces`. Failures are counted and logged at most once per
//! `LOG_EVERY`; they never reach the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::schema::{BatchConfig, OtlpConfig};

/// At most one warning per this period about failed exports (with the count since the last).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The collector's answer is read up to this size (it is a small protobuf message).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What the exporter counts; shared by the queue, the task and `Tracer`.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans dropped because the queue was full (or the exporter had stopped).
    pub dropped: AtomicU64,
    /// Spans lost in exports that failed or that the collector rejected.
    pub failed: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
}

/// The request path's end of the queue: `on_end` is a `try_send`, never a wait.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    stats: Arc<ExportStats>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exporter task flushes on its schedule and on `Tracer::shutdown`.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The exporter task's settings and connection.
struct Exporter {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
    resource: ResourceAttributesWithSchema,
    max_batch: usize,
    schedule_delay: Duration,
    stats: Arc<ExportStats>,
    log: FailureLog,
}

/// Starts the exporter task (on the current tokio runtime) and returns the queue's sending
/// end. The task ends when `stop` is cancelled (after a last flush) or when every sender is
/// gone.
pub fn start(
    otlp: &OtlpConfig,
    batch: &BatchConfig,
    resource: &Resource,
    stats: Arc<ExportStats>,
    stop: CancellationToken,
) -> anyhow::Result<(QueueProcessor, tokio::task::JoinHandle<()>)> {
    let url: Uri = traces_url(&otlp.endpoint)
        .parse()
        .map_err(|e| anyhow::anyhow!("telemetry.tracing.otlp.endpoint: {e}"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &otlp.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            anyhow::anyhow!("telemetry.tracing.otlp.headers: invalid name {name:?}")
        })?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| anyhow::anyhow!("telemetry.tracing.otlp.headers.{name}: invalid value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(otlp.timeout));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let (queue, spans) = mpsc::channel(batch.max_queue_size.max(1));
    let exporter = Exporter {
        client,
        url,
        headers,
        timeout: otlp.timeout,
        resource: ResourceAttributesWithSchema::from(resource),
        max_batch: batch.max_batch_size.max(1),
        schedule_delay: batch.schedule_delay,
        stats: Arc::clone(&stats),
        log: FailureLog::default(),
    };
    let task = tokio::spawn(exporter.run(spans, stop));
    Ok((QueueProcessor { queue, stats }, task))
}

/// `<endpoint>/v1/traces`, as the OTLP specification builds the per-signal URL from a base.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

impl Exporter {
    /// Collects batches (full, or `schedule_delay` after their first span) and sends them one
    /// at a time; spans that arrive meanwhile wait in the queue.
    async fn run(mut self, mut spans: mpsc::Receiver<SpanData>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => break,
                n = spans.recv_many(&mut batch, self.max_batch) => n,
            };
            if received == 0 {
                return; // every sender is gone
            }
            let flush_at = Instant::now() + self.schedule_delay;
            while batch.len() < self.max_batch {
                let room = self.max_batch - batch.len();
                tokio::select! {
                    () = tokio::time::sleep_until(flush_at) => break,
                    () = stop.cancelled() => break,
                    n = spans.recv_many(&mut batch, room) => if n == 0 { break },
                }
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(self.max_batch));
            self.export(full).await;
        }
        // Shutdown: send what is queued now, then stop taking spans.
        spans.close();
        while spans.recv_many(&mut batch, self.max_batch).await > 0 {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(self.max_batch));
            self.export(full).await;
        }
    }

    async fn export(&mut self, spans: Vec<SpanData>) {
        let count = spans.len() as u64;
        let message = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &self.resource),
        };
        let mut request = Request::new(Full::new(Bytes::from(message.encode_to_vec())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        *request.headers_mut() = self.headers.clone();
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let sent = tokio::time::timeout(self.timeout, self.send(request)).await;
        let rejected = match sent {
            Ok(Ok(rejected)) => rejected,
            Ok(Err(error)) => {
                self.failed(count, &error);
                return;
            }
            Err(_) => {
                let error = format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                );
                self.failed(count, &error);
                return;
            }
        };
        let rejected = rejected.min(count);
        self.stats
            .exported
            .fetch_add(count - rejected, Ordering::Relaxed);
        if rejected > 0 {
            self.failed(
                rejected,
                "the collector rejected some spans (partial success)",
            );
        }
    }

    /// Sends one export request; returns the number of spans the collector rejected.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<u64, String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the collector: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the collector's answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the collector answered {status}"));
        }
        // An empty or undecodable body is a full success (the collector said 2xx).
        let rejected = ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        Ok(rejected)
    }

    fn failed(&mut self, spans: u64, error: &str) {
        self.stats.failed.fetch_add(spans, Ordering::Relaxed);
        self.log.failed(spans, error, &self.url);
    }
}

/// Rate-limited warnings about lost spans.
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    /// Spans lost since the last warning.
    unreported: u64,
}

impl FailureLog {
    fn failed(&mut self, spans: u64, error: &str, url: &Uri) {
        self.unreported += spans;
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            return;
        }
        self.last = Some(now);
        tracing::warn!(
            %url, error, lost_spans = self.unreported,
            "trace export failed; spans were lost (this warning repeats at most every 10s)"
        );
        self.unreported = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c/otlp"), "http://c/otlp/v1/traces");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_logged_at_most_once_per_period() {
        let url: Uri = "http://c/v1/traces".parse().unwrap();
        let mut log = FailureLog::default();
        log.failed(3, "x", &url);
        assert_eq!(log.unreported, 0, "the first failure is reported at once");
        log.failed(2, "x", &url);
        log.failed(4, "x", &url);
        assert_eq!(log.unreported, 6, "later ones wait for the period");
        tokio::time::advance(LOG_EVERY).await;
        log.failed(1, "x", &url);
        assert_eq!(log.unreported, 0, "reported with the count since the last");
    }
}
