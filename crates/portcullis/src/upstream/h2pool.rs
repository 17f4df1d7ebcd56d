//! HTTP/2 to upstreams: one multiplexed connection per endpoint, kept on the endpoint itself
//! (so it goes away with the endpoint when DNS drops it), opened on first use and again after
//! it closes (GOAWAY, reset, idle close by the server). Built on hyper's connection-level
//! client, so the connection target (the endpoint) and `:authority` (the route's host) are
//! independent.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::client::{classify_chain, connect_tcp};
use super::overflow::Thresholds;
use super::Endpoint;
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};

/// The HTTP/2 connection of one endpoint; the async lock makes concurrent first requests
/// share one connect instead of racing several.
#[derive(Debug, Default)]
pub struct Slot(tokio::sync::Mutex<Option<SendRequest<Body>>>);

#[derive(Debug)]
pub struct H2Pool {
    connect_timeout: Duration,
    thresholds: Arc<Thresholds>,
}

impl H2Pool {
    pub fn new(connect_timeout: Duration, thresholds: Arc<Thresholds>) -> Self {
        Self {
            connect_timeout,
            thresholds,
        }
    }

    /// Sends `req` (absolute URI: its authority becomes `:authority`) on the endpoint's
    /// connection. A connection found closed before the request went out is replaced once.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let mut sender = self.sender(endpoint, false).await?;
        if sender.ready().await.is_err() {
            sender = self.sender(endpoint, true).await?;
            sender
                .ready()
                .await
                .map_err(|e| ProxyError::with_source(ErrorKind::UpstreamReset, e))?;
        }
        sender.send_request(req).await.map_err(|e| {
            let kind = classify_chain(Some(&e));
            ProxyError::with_source(kind, e)
        })
    }

    async fn sender(
        &self,
        endpoint: &Endpoint,
        replace: bool,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let mut current = endpoint.h2_slot.0.lock().await;
        if let Some(sender) = current.as_ref() {
            if !replace && !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let sender = Box::pin(self.connect(endpoint)).await?;
        *current = Some(sender.clone());
        Ok(sender)
    }

    /// Opens the connection, within the upstream's `max_pending_requests` (while connecting)
    /// and `max_connections` (for the connection's life) thresholds.
    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<Body>, ProxyError> {
        let addr = endpoint.addr;
        let _pending = self.thresholds.pending()?;
        let open = self.thresholds.connection()?;
        let stream = connect_tcp(addr, self.connect_timeout)
            .await
            .map_err(|e| endpoint.connect_failed(e))?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                endpoint.connect_failed(ProxyError::with_source(ErrorKind::UpstreamConnect, e))
            })?;
        tokio::spawn(async move {
            let _open = open;
            if let Err(err) = conn.await {
                tracing::debug!(endpoint = %addr, error = %err, "upstream h2 connection closed");
            }
        });
        Ok(sender)
    }
}
