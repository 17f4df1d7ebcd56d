//! The body types the proxy moves: an enum rather than a boxed trait object, so the common
//! cases (a streamed upstream body, a small gateway-made body) cost no allocation.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::h1pool::PooledConn;
use crate::upstream::Picked;

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
    /// body has been sent and dropped.
    Upstream(Incoming, Picked, Option<PooledConn>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
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
            Body::Limited(inner) => Pin::new(inner).poll_frame(cx),
            Body::Upstream(inner, _, _) => Pin::new(inner)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Limited(inner) => inner.inner.is_end_stream(),
            Body::Upstream(inner, _, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Limited(inner) => inner.inner.size_hint(),
            Body::Upstream(inner, _, _) => inner.size_hint(),
        }
    }
}

/// The error a `LimitedIncoming` fails with when the body grows past its ceiling.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// A streamed request body that fails once more than `limit` bytes have passed.
#[derive(Debug)]
pub struct LimitedIncoming {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl LimitedIncoming {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that turns true when the body goes over its limit. The sender keeps it: how the
    /// body error surfaces from the upstream client depends on the protocol (over HTTP/2 it
    /// becomes a stream reset that no longer carries `BodyTooLarge`).
    pub fn exceeded_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.exceeded)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.remaining = 0;
                        self.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: self.limit,
                        }))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Unpin for LimitedIncoming {}
