//! JSON access logs: one line per request, formatted by the request's own thread and
//! written out by a dedicated thread, so that the request path never waits for the output
//! (`docs/access-log.md`).
//!
//! The request path (`AccessLog::record`) decides sampling, formats the line (`line`) from
//! the borrowed `Record` into a reused thread-local buffer and appends it to the shared
//! `Chunk` under a lock held only for that copy; a chunk holding `buffer` lines drops the
//! line and counts it. The writer thread (`writer`) swaps the chunk for an empty one every
//! tick and writes it out with one write, outside the lock.

pub mod line;
#[cfg(test)]
mod tests;
mod writer;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

use super::{BodyEnd, Record};
use crate::config::schema::AccessLogConfig;
use crate::reason;
use crate::runtime::Runtime;
use line::{Entry, Format};

pub use line::REDACTED;

/// How long shutdown waits for the writer to write out what it holds.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Bytes a chunk reserves up front (it grows as needed and keeps what it grew to).
const CHUNK_RESERVE: usize = 64 * 1024;

/// Bytes the thread-local line buffer reserves up front.
const LINE_RESERVE: usize = 1024;

thread_local! {
    /// The line being formatted on this thread, reused from request to request.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(LINE_RESERVE));
}

/// The access log of the process.
#[derive(Debug)]
pub struct AccessLog {
    /// Finished lines waiting for the writer thread.
    shared: Arc<Shared>,
    /// Flush requests to the writer thread. Dropping the log closes it, which tells the
    /// thread to write out what is left and stop.
    asks: Sender<writer::FlushAsk>,
    format: Format,
    /// Lines a chunk holds at most (`buffer`).
    capacity: usize,
    sample: Sample,
    /// The request headers to log, with whether each one is redacted.
    headers: Vec<(HeaderName, bool)>,
}

/// What the request threads and the writer thread share.
#[derive(Debug)]
struct Shared {
    /// Held only to append one line or to swap the chunk, never across I/O.
    chunk: Mutex<Chunk>,
    /// The chunk was found full and not taken since: requests drop their line without
    /// formatting it (under overload the log must not add work).
    full: AtomicBool,
    counters: Counters,
}

/// Finished lines, each ending in `\n`, in the order they were recorded.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: usize,
}

impl Chunk {
    fn with_capacity(bytes: usize) -> Chunk {
        Chunk {
            bytes: Vec::with_capacity(bytes),
            lines: 0,
        }
    }
}

impl Shared {
    /// Swaps the waiting lines into `spare` (which must be empty), leaving its allocation
    /// behind for the next lines.
    fn take(&self, spare: &mut Chunk) {
        let mut chunk = self.chunk.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *chunk, spare);
        self.full.store(false, Ordering::Relaxed);
    }
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
        let (asks, asks_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            chunk: Mutex::new(Chunk::with_capacity(CHUNK_RESERVE)),
            full: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let writer = writer::Writer {
            shared: shared.clone(),
            spare: Chunk::with_capacity(CHUNK_RESERVE),
            asks: asks_rx,
            out,
            name: config.output.trim().to_string(),
            flush_interval: config.flush_interval,
        };
        std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || writer.run())
            .context("starting the access log writer thread")?;
        Ok(Some(AccessLog {
            shared,
            asks,
            format,
            capacity: config.buffer.max(1),
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

    /// Logs one finished request, unless sampling leaves it out. Formats the line on the
    /// calling thread and appends it to the shared chunk; never waits for the output, and a
    /// chunk already holding `buffer` lines drops the line (`dropped`).
    pub fn record(&self, runtime: &Runtime, record: &Record, end: &BodyEnd) {
        if self.sample != Sample::All && successful(record, end) && !self.sample.keeps() {
            return;
        }
        if self.shared.full.load(Ordering::Relaxed) {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let entry = Entry {
            arrival: crate::telemetry::wall_clock().saturating_sub(end.duration),
            request_id: record.request_id.as_ref(),
            trace_id: record.span.as_ref().and_then(|s| s.trace_id()),
            client_ip: record.client_ip,
            peer: record.peer,
            listener: runtime.listeners.get(record.listener).map(|l| &*l.name),
            request: record.head.as_ref(),
            route: record
                .route
                .and_then(|id| runtime.router.route(id))
                .map(|r| &*r.name),
            upstream: record
                .upstream
                .and_then(|i| runtime.upstreams.get(i))
                .map(|u| &*u.name),
            endpoint: record.endpoint,
            attempts: record.attempts,
            reason: record.reason,
            rate_limit: record.rate_limit.as_ref().map(|(name, a)| (&**name, *a)),
            status: record.status.as_u16(),
            bytes_in: record.bytes_in.get(),
            end: *end,
        };
        let append = |line: &mut Vec<u8>| {
            line.clear();
            entry.write_json(&self.format, line);
            line.push(b'\n');
            self.append(line);
        };
        // The thread's buffer, or (while the thread is being torn down) a fresh one.
        let reused = LINE.try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => append(&mut line),
            Err(_) => append(&mut Vec::with_capacity(LINE_RESERVE)),
        });
        if reused.is_err() {
            append(&mut Vec::with_capacity(LINE_RESERVE));
        }
    }

    /// Appends one finished line to the chunk, or counts it dropped if the chunk is full.
    fn append(&self, line: &[u8]) {
        let mut chunk = self
            .shared
            .chunk
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if chunk.lines >= self.capacity {
            self.shared.full.store(true, Ordering::Relaxed);
            drop(chunk);
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        chunk.bytes.extend_from_slice(line);
        chunk.lines += 1;
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
        self.shared.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the buffer was full (while it stays full, without being formatted).
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost to a failed write (the output's error is logged once per run of failures).
    pub fn failed(&self) -> u64 {
        self.shared.counters.failed.load(Ordering::Relaxed)
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
