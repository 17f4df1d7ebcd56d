//! HTTP/1.1 to upstreams: keep-alive connections kept on a stack per endpoint (no lookup
//! by key, no task per request), on hyper's connection-level client. A connection goes
//! back to its endpoint only when both directions of its exchange are complete: the response
//! body it carried has been sent on and dropped, and the request body has been handed over
//! to its end (an upstream may answer before it has read the request body; a client that
//! then stalls must not hold up the next request on that connection). Otherwise it is
//! closed. A request that a reused connection never wrote (the upstream had closed it) is
//! sent once more on another connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::client::{classify_chain, connect_tcp};
use super::overflow::Thresholds;
use super::Endpoint;
use crate::body::{Body, RequestEnd};
use crate::error::{ErrorKind, ProxyError};

/// Idle keep-alive connections of one endpoint, most recently used last.
#[derive(Debug, Default)]
pub struct IdleStack {
    stack: Mutex<Vec<Idle>>,
    /// How many may be kept: the upstream's `max_idle_per_endpoint`, set by its pool when it
    /// opens a connection (kept here rather than in every `PooledConn`, which rides in every
    /// response body).
    max_idle: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl IdleStack {
    /// The most recently used connection that is still open, younger than `max_idle_age`
    /// and ready for a request now; others are dropped (closed). A pooled connection that is
    /// not ready is still busy with an earlier exchange: waiting for it would tie this
    /// request to that one.
    fn pop(&self, max_idle_age: Duration) -> Option<SendRequest<Body>> {
        let mut stack = self.stack.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = stack.pop() {
            if idle.sender.is_ready() && idle.since.elapsed() < max_idle_age {
                return Some(idle.sender);
            }
        }
        None
    }

    fn push(&self, sender: SendRequest<Body>) {
        let mut stack = self.stack.lock().unwrap_or_else(|p| p.into_inner());
        if stack.len() < self.max_idle.load(Ordering::Relaxed) {
            stack.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops connections idle longer than `max_idle_age` (closing them).
    pub fn expire(&self, max_idle_age: Duration) {
        let mut stack = self.stack.lock().unwrap_or_else(|p| p.into_inner());
        stack.retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < max_idle_age);
    }

    /// Connections kept idle now.
    pub fn len(&self) -> usize {
        self.stack.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection lent to one exchange; goes back to its endpoint's stack when dropped, if the
/// request body it carried was handed over to its end by then (else it is closed).
#[derive(Debug)]
pub struct PooledConn {
    /// `None` once discarded, or from the start when the request body's end is not tracked.
    sender: Option<SendRequest<Body>>,
    endpoint: Arc<Endpoint>,
    request_end: RequestEnd,
}

impl PooledConn {
    /// Closes the connection instead of keeping it (its response was not read to the end).
    pub fn discard(mut self) {
        self.sender = None;
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if !sender.is_closed() && self.request_end.reached() {
                self.endpoint.h1_idle.push(sender);
            }
        }
    }
}

#[derive(Debug)]
pub struct H1Pool {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    thresholds: Arc<Thresholds>,
}

impl H1Pool {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        thresholds: Arc<Thresholds>,
    ) -> Self {
        Self {
            connect_timeout,
            idle_timeout,
            max_idle,
            thresholds,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends `req` (origin-form URI, `Host` header set) to `endpoint` on an idle connection
    /// or a new one; returns the response and the connection, lent until the body is done.
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut req: http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, PooledConn), ProxyError> {
        // A body whose end cannot be told never lets its connection be kept.
        let tracked = req.body().request_end();
        let keep = tracked.is_some();
        let mut request_end = tracked.unwrap_or(RequestEnd::AtOnce);
        loop {
            let (mut sender, reused) = match endpoint.h1_idle.pop(self.idle_timeout) {
                Some(sender) => (sender, true),
                // Boxed: the connect path is rare, and inline it would enlarge every request's future.
                None => (Box::pin(self.connect(endpoint)).await?, false),
            };
            if let Err(err) = sender.ready().await {
                if reused {
                    continue; // closed while idle: try the next one
                }
                return Err(ProxyError::with_source(ErrorKind::UpstreamReset, err));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let conn = PooledConn {
                        sender: keep.then_some(sender),
                        endpoint: endpoint.clone(),
                        request_end: std::mem::replace(&mut request_end, RequestEnd::AtOnce),
                    };
                    return Ok((resp, conn));
                }
                Err(mut err) => match err.take_message() {
                    // Never written: the upstream closed the idle connection first.
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        let err = err.into_error();
                        let kind = classify_chain(Some(&err));
                        return Err(ProxyError::with_source(kind, err));
                    }
                },
            }
        }
    }

    /// Opens a connection, within the upstream's `max_pending_requests` (while connecting)
    /// and `max_connections` (for the connection's life) thresholds.
    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<Body>, ProxyError> {
        let addr = endpoint.addr;
        endpoint
            .h1_idle
            .max_idle
            .store(self.max_idle, Ordering::Relaxed);
        let _pending = self.thresholds.pending()?;
        let open = self.thresholds.connection()?;
        let stream = connect_tcp(addr, self.connect_timeout)
            .await
            .map_err(|e| endpoint.connect_failed(e))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                endpoint.connect_failed(ProxyError::with_source(ErrorKind::UpstreamConnect, e))
            })?;
        tokio::spawn(async move {
            let _open = open;
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(endpoint = %addr, error = %err, "upstream connection closed");
            }
        });
        Ok(sender)
    }
}
