//! HTTP/2 to upstreams: one multiplexed connection per endpoint, opened on first use and
//! again after it closes (GOAWAY, reset, idle close by the server). Built on hyper's
//! connection-level client, so the connection target (the endpoint) and `:authority` (the
//! route's host) are independent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::client::{classify_chain, connect_tcp};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};

/// The connection slot of one endpoint; the async lock makes concurrent first requests share
/// one connect instead of racing several.
type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Body>>>>;

#[derive(Debug)]
pub struct H2Pool {
    slots: Mutex<HashMap<SocketAddr, Slot>>,
    connect_timeout: Duration,
}

impl H2Pool {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            connect_timeout,
        }
    }

    /// Sends `req` (absolute URI: its authority becomes `:authority`) on the endpoint's
    /// connection. A connection found closed before the request went out is replaced once.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let slot = self.slot(addr);
        let mut sender = self.sender(addr, &slot, false).await?;
        if sender.ready().await.is_err() {
            sender = self.sender(addr, &slot, true).await?;
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

    fn slot(&self, addr: SocketAddr) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(addr).or_default().clone()
    }

    async fn sender(
        &self,
        addr: SocketAddr,
        slot: &Slot,
        replace: bool,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let mut current = slot.lock().await;
        if let Some(sender) = current.as_ref() {
            if !replace && !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let sender = Box::pin(self.connect(addr)).await?;
        *current = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Body>, ProxyError> {
        let stream = connect_tcp(addr, self.connect_timeout).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::with_source(ErrorKind::UpstreamConnect, e))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(endpoint = %addr, error = %err, "upstream h2 connection closed");
            }
        });
        Ok(sender)
    }
}
