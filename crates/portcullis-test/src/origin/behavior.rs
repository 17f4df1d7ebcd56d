//! What an origin does with each request: the `Behavior` enum and the `ResponseSpec` that
//! scripted origins return.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::RecordedRequest;

/// A closure that decides the response from the recorded request (body included).
pub type Script = Arc<dyn Fn(&RecordedRequest) -> ResponseSpec + Send + Sync>;

/// How an origin answers. Every HTTP response carries `x-origin: <origin name>`.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with a JSON body describing the request: `origin`, `method`, `path` (with query),
    /// `uri`, `version` (e.g. `"HTTP/2.0"`), `headers` (name → list of values), `body_len`.
    Echo,
    /// This status with an empty body (see also `Origin::set_status`).
    Status(u16),
    /// A fixed response.
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Waits `delay` (tokio clock) before answering as `then` does; the request is recorded
    /// when it arrives, before the wait.
    Slow {
        delay: Duration,
        then: Box<Behavior>,
    },
    /// 200 headers at once, then `chunks` copies of `chunk`, each sent after waiting `delay`.
    SlowBody {
        chunk: Bytes,
        chunks: usize,
        delay: Duration,
    },
    /// 200 with a chunked body of `chunks` chunks `"chunk {i}\n"`, the first at once and the
    /// next ones every `interval`, each sent as soon as it is produced.
    Stream { chunks: usize, interval: Duration },
    /// 200 headers at once, then streams the request body back frame by frame as it arrives,
    /// and the request trailers as response trailers.
    EchoBody,
    /// 200 with `body` then `trailers` (announced in a `trailer` header). Over HTTP/1.1 they
    /// are only sent when the request has `te: trailers` (hyper drops them otherwise).
    Trailers {
        body: Bytes,
        trailers: Vec<(String, String)>,
    },
    /// gRPC-style unary: reads one length-prefixed message (flag byte + u32 BE length) and
    /// answers `content-type: application/grpc` with the payload echoed in one message, then
    /// trailers `grpc-status: status` and `grpc-message: message`. A malformed request gets
    /// no message and `grpc-status: 13`.
    Grpc { status: u32, message: String },
    /// Accepts TCP connections and closes them without answering (no HTTP at all).
    CloseConnection,
    /// Sends 200 headers, then aborts the response (HTTP/1.1: connection closed;
    /// HTTP/2: stream reset).
    ResetAfterHeaders,
    /// Sends 200 headers and `prefix` of a chunked body, then aborts like `ResetAfterHeaders`.
    AbortMidBody { prefix: Bytes },
    /// Answers an HTTP/1.1 `Upgrade: websocket` with 101 and echoes every text and binary
    /// message; other requests get 400.
    WebSocketEcho,
    /// The closure decides; the whole request body is read first.
    Scripted(Script),
}

impl Behavior {
    /// A fixed response with a body and no extra headers.
    pub fn fixed(status: u16, body: impl Into<Bytes>) -> Self {
        Behavior::Fixed {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `then`, after waiting `delay`.
    pub fn slow(delay: Duration, then: Behavior) -> Self {
        Behavior::Slow {
            delay,
            then: Box::new(then),
        }
    }

    /// gRPC echo answering `grpc-status: 0` (OK).
    pub fn grpc() -> Self {
        Behavior::Grpc {
            status: 0,
            message: String::new(),
        }
    }

    /// gRPC echo answering `grpc-status: status` with `message`.
    pub fn grpc_status(status: u32, message: impl Into<String>) -> Self {
        Behavior::Grpc {
            status,
            message: message.into(),
        }
    }

    /// Body `body` then the given trailers.
    pub fn trailers(body: impl Into<Bytes>, trailers: &[(&str, &str)]) -> Self {
        Behavior::Trailers {
            body: body.into(),
            trailers: pairs(trailers),
        }
    }

    /// A scripted origin.
    pub fn scripted(f: impl Fn(&RecordedRequest) -> ResponseSpec + Send + Sync + 'static) -> Self {
        Behavior::Scripted(Arc::new(f))
    }
}

impl fmt::Debug for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behavior::Echo => f.write_str("Echo"),
            Behavior::Status(code) => write!(f, "Status({code})"),
            Behavior::Fixed { status, .. } => write!(f, "Fixed({status})"),
            Behavior::Slow { delay, then } => write!(f, "Slow({delay:?}, {then:?})"),
            Behavior::SlowBody { chunks, delay, .. } => write!(f, "SlowBody({chunks}, {delay:?})"),
            Behavior::Stream { chunks, interval } => write!(f, "Stream({chunks}, {interval:?})"),
            Behavior::EchoBody => f.write_str("EchoBody"),
            Behavior::Trailers { .. } => f.write_str("Trailers"),
            Behavior::Grpc { status, .. } => write!(f, "Grpc({status})"),
            Behavior::CloseConnection => f.write_str("CloseConnection"),
            Behavior::ResetAfterHeaders => f.write_str("ResetAfterHeaders"),
            Behavior::AbortMidBody { .. } => f.write_str("AbortMidBody"),
            Behavior::WebSocketEcho => f.write_str("WebSocketEcho"),
            Behavior::Scripted(_) => f.write_str("Scripted"),
        }
    }
}

/// A response described as data, returned by `Behavior::Scripted` closures.
#[derive(Debug, Clone, Default)]
pub struct ResponseSpec {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Sent after the body (the body is then chunked over HTTP/1.1; see `Behavior::Trailers`).
    pub trailers: Vec<(String, String)>,
    /// Wait this long before sending the response headers.
    pub delay: Duration,
}

impl ResponseSpec {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
