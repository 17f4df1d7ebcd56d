//! What an origin saw: every request it received, recorded for tests to assert on.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Uri, Version};
use std::sync::Mutex;

/// One request as the origin received it. The body fills in as frames arrive, so a test can
/// observe a streamed request before it is complete (see `complete`).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Body bytes received so far.
    pub body: Bytes,
    /// Request trailers, if the client sent any.
    pub trailers: Option<HeaderMap>,
    /// True once the whole body (and trailers) arrived.
    pub complete: bool,
    /// True when the body broke off with an error instead (the sender reset the stream or
    /// closed the connection mid-body). Only behaviours that read the body see it.
    pub aborted: bool,
    /// When the request head arrived (tokio clock, so paused-time tests can compare).
    pub received_at: tokio::time::Instant,
}

impl RecordedRequest {
    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name` that is valid UTF-8, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Path with query, e.g. `/a/b?x=1`.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// The request log of one origin; indices are stable so a body can be appended while it streams.
/// Entries are found by a monotonic id, so `clear` never confuses a request still streaming.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    next_id: usize,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: usize,
    request: RecordedRequest,
    body: BytesMut,
}

impl RequestLog {
    /// Records a request head and returns its id.
    pub(crate) fn push_head(&self, parts: &http::request::Parts) -> usize {
        let request = RecordedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: Bytes::new(),
            trailers: None,
            complete: false,
            aborted: false,
            received_at: tokio::time::Instant::now(),
        };
        let mut log = self.lock();
        let id = log.next_id;
        log.next_id += 1;
        log.entries.push(Entry {
            id,
            request,
            body: BytesMut::new(),
        });
        id
    }

    pub(crate) fn append_body(&self, id: usize, data: &[u8]) {
        self.with(id, |e| e.body.extend_from_slice(data));
    }

    pub(crate) fn set_trailers(&self, id: usize, trailers: HeaderMap) {
        self.with(id, |e| e.request.trailers = Some(trailers));
    }

    pub(crate) fn mark_complete(&self, id: usize) {
        self.with(id, |e| e.request.complete = true);
    }

    pub(crate) fn mark_aborted(&self, id: usize) {
        self.with(id, |e| e.request.aborted = true);
    }

    /// The request `id`; `None` if the log was cleared since.
    pub(crate) fn get(&self, id: usize) -> Option<RecordedRequest> {
        let log = self.lock();
        log.entries.iter().find(|e| e.id == id).map(Self::snapshot)
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.lock().entries.iter().map(Self::snapshot).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub(crate) fn clear(&self) {
        self.lock().entries.clear();
    }

    fn with(&self, id: usize, f: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.lock().entries.iter_mut().rev().find(|e| e.id == id) {
            f(entry);
        }
    }

    fn snapshot(entry: &Entry) -> RecordedRequest {
        let mut request = entry.request.clone();
        request.body = Bytes::copy_from_slice(&entry.body);
        request
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log inconsistent; keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
