//! JSON access logs: one line per request, written by a dedicated thread so that the
//! request path never waits for the output (`docs/access-log.md`).
//!
//! The request path (`AccessLog::record`) decides sampling, copies the request's facts
//! (reference-counted handles, no formatting) into an `Entry` and pushes it into a bounded
//! buffer without blocking; a full buffer drops the line and counts it. The writer thread
//! (`writer`) formats entries as JSON (`line`) and writes them out.

mod line;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

use super::{BodyEnd, Record};
use crate::config::schema::AccessLogConfig;
use crate::reason;
use crate::runtime::Runtime;
use line::{Entry, Format, RequestFacts};

pub use line::REDACTED;

/// How long shutdown waits for the writer to write out what it holds.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The access log of the process.
#[derive(Debug)]
pub struct AccessLog {
    /// Into the bounded buffer. Declared before `asks` so it is dropped first: the writer
    /// sees the buffer closed by the time it sees no more asks can come.
    entries: SyncSender<Entry>,
    asks: Sender<writer::FlushAsk>,
    counters: Arc<Counters>,
    sample: Sample,
    /// The request headers to log, with whether each one is redacted.
    headers: Vec<(HeaderName, bool)>,
}

/// Lines by fate, for metrics and tests.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Which successful requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    All,
    None,
    /// Logged when a random `u32` is below this.
    Below(u32),
}

impl Sample {
    fn of(ratio: f64) -> Sample {
        if ratio >= 1.0 {
            Sample::All
        } else if ratio > 0.0 {
            // In (0, 2^32): the ratio is below 1.
            Sample::Below((ratio * 4_294_967_296.0) as u32)
        } else {
            Sample::None
        }
    }

    fn keeps(self) -> bool {
        match self {
            Sample::All => true,
            Sample::None => false,
            Sample::Below(threshold) => rand::rng().random::<u32>() < threshold,
        }
    }
}

impl AccessLog {
    /// The log `config` asks for (`None` when disabled): opens the output and starts the
    /// writer thread.
    pub fn from_config(config: &AccessLogConfig) -> anyhow::Result<Option<AccessLog>> {
        if !config.enabled {
            return Ok(None);
        }
        let out = writer::open(&config.output)?;
        let redacted = |name: &HeaderName| {
            config
                .redact_headers
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name.as_str()))
        };
        let headers = config
            .headers
            .iter()
            .map(|name| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("access log header {name:?}"))?;
                let redact = redacted(&name);
                Ok((name, redact))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let format = Format {
            redact_query: config.redact_query_params.clone(),
            headers: (!headers.is_empty())
                .then(|| headers.iter().map(|(n, _)| n.clone()).collect()),
        };
        let capacity = config.buffer.max(1);
        let (entries, entries_rx) = mpsc::sync_channel(capacity);
        let (asks, asks_rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = writer::Writer {
            entries: entries_rx,
            asks: asks_rx,
            out,
            format,
            counters: counters.clone(),
            flush_interval: config.flush_interval,
            capacity,
        };
        std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || writer.run())
            .context("starting the access log writer thread")?;
        Ok(Some(AccessLog {
            entries,
            asks,
            counters,
            sample: Sample::of(config.sample_success),
            headers,
        }))
    }

    /// The configured request headers of a request, redacted ones as `REDACTED` (their
    /// values are never copied). Empty, without allocating, when none is configured.
    pub fn capture_headers(&self, headers: &HeaderMap) -> Vec<(usize, HeaderValue)> {
        let mut out = Vec::new();
        for (i, (name, redact)) in self.headers.iter().enumerate() {
            if *redact {
                if headers.contains_key(name) {
                    out.push((i, HeaderValue::from_static(REDACTED)));
                }
            } else {
                out.extend(headers.get_all(name).iter().map(|v| (i, v.clone())));
            }
        }
        out
    }

    /// Logs one finished request, unless sampling leaves it out. Never blocks: a full
    /// buffer drops the line (`dropped`). Takes the captured headers out of `record.head`.
    pub fn record(&self, runtime: &Runtime, record: &mut Record, end: &BodyEnd) {
        if self.sample != Sample::All && successful(record, end) && !self.sample.keeps() {
            return;
        }
        let duration = record.arrived.elapsed();
        let entry = Entry {
            arrival: wall_clock().saturating_sub(duration),
            duration,
            request_id: record.request_id.clone(),
            trace_id: record.span.as_ref().and_then(|s| s.trace_id()),
            client_ip: record.client_ip,
            peer: record.peer,
            listener: runtime
                .listeners
                .get(record.listener)
                .map(|l| l.name.clone()),
            request: record.head.as_mut().map(|h| RequestFacts {
                method: h.method.clone(),
                uri: h.uri.clone(),
                host: h.host.clone(),
                version: h.version,
                user_agent: h.user_agent.clone(),
                headers: std::mem::take(&mut h.logged_headers),
            }),
            route: record
                .route
                .and_then(|id| runtime.router.route(id))
                .map(|r| r.name.clone()),
            upstream: record
                .upstream
                .and_then(|i| runtime.upstreams.get(i))
                .map(|u| u.name.clone()),
            endpoint: record.endpoint,
            attempts: record.attempts,
            reason: record.reason,
            rate_limit: record.rate_limit.clone(),
            status: record.status.as_u16(),
            bytes_in: record.bytes_in.get(),
            end: *end,
        };
        if self.entries.try_send(entry).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes out every line recorded before the call and flushes the output, waiting at
    /// most `timeout` (in real time, also under a paused test clock). False when the
    /// writer did not confirm in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (ask, done) = mpsc::sync_channel(1);
        if self.asks.send(ask).is_err() {
            return false;
        }
        tokio::task::spawn_blocking(move || done.recv_timeout(timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Lines handed to the output.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost to a failed write (the output's error is logged once per run of failures).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }
}

/// Successful, for sampling: status 1xx–3xx that the upstream gave or a configured direct
/// response or redirect made; one attempt at most; no rate limit acted; the response body
/// completed. Everything else (errors, refusals, retried, delayed or shadow-denied requests,
/// broken bodies) is always logged.
fn successful(record: &Record, end: &BodyEnd) -> bool {
    record.status.as_u16() < 400
        && matches!(
            record.reason,
            "" | reason::DIRECT_RESPONSE | reason::REDIRECT
        )
        && record.attempts <= 1
        && record.rate_limit.is_none()
        && end.complete
        && !end.failed
}

/// Wall-clock time since the Unix epoch (zero if the clock is set before it).
#[allow(clippy::disallowed_types)] // The log line's timestamp is the one use of the wall clock.
fn wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
