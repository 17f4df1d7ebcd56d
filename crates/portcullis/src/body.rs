//! The body types the proxy moves: an enum rather than a boxed trait object, so the common
//! cases (a streamed upstream body, a small gateway-made body) cost no allocation. Streamed
//! bodies carry a stream idle timeout (`IdleWatch`) that cuts them when they stall.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::Side;
use crate::upstream::h1pool::PooledConn;
use crate::upstream::Picked;

mod idle;

pub use idle::{IdleWatch, StreamIdle};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body sent to the client or to an upstream.
#[derive(Debug)]
pub enum Body {
    /// Nothing.
    Empty,
    /// A body made in full by the gateway (direct responses, errors).
    Full(Option<Bytes>),
    /// A client's request body with a byte ceiling; going over it fails the stream.
    Limited(LimitedIncoming),
    /// An upstream's response body; holds the endpoint pick so the endpoint counts the
    /// request as in flight until the body has been sent.
    /// The HTTP/1.1 connection it came on rides along and goes back to its pool when the
    /// body has been sent and dropped (unless the body failed or was cut).
    /// Build it with `Body::upstream`.
    Upstream(Incoming, Picked, Option<PooledConn>, IdleWatch),
}

/// How to tell whether a request body sent upstream has been handed over to its end (what
/// decides whether its HTTP/1.1 connection may carry another request). No allocation of its
/// own: a streamed body shares the `Progress` it already has. As small as one pointer.
#[derive(Debug, Clone)]
pub enum RequestEnd {
    /// `Empty` and `Full`: the whole body is handed over at once.
    AtOnce,
    /// A streamed client body: ended once its `Progress::ended` is set.
    Watched(Arc<Progress>),
}

impl RequestEnd {
    /// Whether the body has been handed over to its end.
    pub fn reached(&self) -> bool {
        match self {
            RequestEnd::AtOnce => true,
            RequestEnd::Watched(progress) => progress.ended.load(Ordering::Acquire),
        }
    }
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    /// An upstream's response body (see `Body::Upstream`), with no idle timeout yet.
    pub fn upstream(body: Incoming, picked: Picked, conn: Option<PooledConn>) -> Self {
        Body::Upstream(body, picked, conn, IdleWatch::OFF)
    }

    /// How to tell later whether this body, sent as a request body, was handed over to its
    /// end; `None` for a body whose end is not tracked (an upstream's body).
    pub fn request_end(&self) -> Option<RequestEnd> {
        match self {
            Body::Empty | Body::Full(_) => Some(RequestEnd::AtOnce),
            Body::Limited(inner) => Some(RequestEnd::Watched(inner.progress())),
            Body::Upstream(..) => None,
        }
    }

    /// Cuts a streamed body (`Limited`, `Upstream`) that moves no frame for `timeout`: it then
    /// yields an error, so hyper resets or closes the stream. `Duration::ZERO` turns it off;
    /// `Empty` and `Full` bodies are returned as they are.
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Body {
        match &mut self {
            Body::Limited(inner) => inner.idle = IdleWatch::new(timeout),
            Body::Upstream(_, _, _, idle) => *idle = IdleWatch::new(timeout),
            Body::Empty | Body::Full(_) => {}
        }
        self
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Limited(inner) => inner.poll_frame(cx),
            Body::Upstream(inner, picked, conn, idle) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    idle.moved();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(err))) => {
                    // The exchange broke off: the connection is in no state to be reused.
                    if let Some(conn) = conn.take() {
                        conn.discard();
                    }
                    Poll::Ready(Some(Err(err.into())))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    if !idle.stalled(cx) {
                        return Poll::Pending;
                    }
                    if let Some(conn) = conn.take() {
                        conn.discard();
                    }
                    let cut = idle.cut(Side::Upstream);
                    tracing::debug!(
                        endpoint = %picked.endpoint.addr, timeout = ?cut.timeout,
                        "stream idle timeout: the upstream's response body stalled; cut"
                    );
                    Poll::Ready(Some(Err(Box::new(cut))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Limited(inner) => inner.inner.is_end_stream(),
            Body::Upstream(inner, ..) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Limited(inner) => inner.inner.size_hint(),
            Body::Upstream(inner, ..) => inner.size_hint(),
        }
    }
}

/// The error a `LimitedIncoming` fails with when the body grows past its ceiling.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// A streamed request body that fails once more than `limit` bytes have passed, or when it
/// stalls longer than its idle timeout (see `Body::with_idle_timeout`).
#[derive(Debug)]
pub struct LimitedIncoming {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    progress: Arc<Progress>,
    idle: IdleWatch,
}

/// What a `LimitedIncoming` has seen, shared with the sender and the request's record.
#[derive(Debug, Default)]
pub struct Progress {
    /// A `fault` constant: why the body failed on the gateway's side, if it did.
    pub fault: AtomicU8,
    /// Bytes received from the client so far.
    pub received: AtomicU64,
    /// The body has yielded its last frame: it is complete (set with `Release`).
    pub ended: AtomicBool,
}

/// Why a `LimitedIncoming` failed on the gateway's side (see `LimitedIncoming::fault`).
pub mod fault {
    /// The body is fine (so far).
    pub const NONE: u8 = 0;
    /// More than the limit arrived (413).
    pub const TOO_LARGE: u8 = 1;
    /// The client stopped sending for longer than the stream idle timeout (408).
    pub const STALLED: u8 = 2;
}

impl LimitedIncoming {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            progress: Arc::new(Progress::default()),
            idle: IdleWatch::OFF,
        }
    }

    /// The body's progress. `fault` is set (to a `fault` constant) when the body fails on
    /// the gateway's side: too large or stalled. The sender keeps it: how the body error
    /// surfaces from the upstream client depends on the protocol (over HTTP/2 it becomes a
    /// stream reset that no longer carries the cause), and either way it is the client's
    /// fault, not the upstream's. `received` counts the bytes for telemetry.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.remaining = 0;
                        self.progress
                            .fault
                            .store(fault::TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: self.limit,
                        }))));
                    }
                    self.remaining -= len;
                    self.progress.received.fetch_add(len, Ordering::Relaxed);
                }
                // The sender may stop polling once the body says it is at its end (a last data
                // frame) or after trailers: either is the end.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.progress.ended.store(true, Ordering::Release);
                }
                self.idle.moved();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                self.progress.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !self.idle.stalled(cx) {
                    return Poll::Pending;
                }
                let cut = self.idle.cut(Side::Downstream);
                self.progress.fault.store(fault::STALLED, Ordering::Relaxed);
                tracing::debug!(
                    timeout = ?cut.timeout,
                    "stream idle timeout: the client's request body stalled; cut"
                );
                Poll::Ready(Some(Err(Box::new(cut))))
            }
        }
    }
}

impl Unpin for LimitedIncoming {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_made_bodies_ignore_the_idle_timeout() {
        let body = Body::full("x").with_idle_timeout(Duration::from_secs(1));
        assert!(matches!(body, Body::Full(Some(_))));
        let body = Body::Empty.with_idle_timeout(Duration::from_secs(1));
        assert!(matches!(body, Body::Empty));
    }

    #[test]
    fn the_idle_watch_keeps_the_body_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<IdleWatch>(), 16);
        let upstream =
            size_of::<Incoming>() + size_of::<Picked>() + size_of::<Option<PooledConn>>();
        assert!(size_of::<Body>() <= upstream + size_of::<IdleWatch>());
    }
}
