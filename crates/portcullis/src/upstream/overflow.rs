//! `Thresholds`: Envoy-style caps on one upstream (open connections, requests waiting for a
//! new connection, requests in flight). Over one, the request is refused with 503
//! `upstream_overflow` without touching the upstream. Unset caps cost one branch.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::schema::UpstreamLimitsConfig;
use crate::error::{ErrorKind, ProxyError};

/// One cap and how much of it is in use.
#[derive(Debug)]
pub struct Gauge {
    max: Option<u32>,
    current: AtomicU32,
}

impl Gauge {
    fn new(max: Option<u32>) -> Self {
        Self {
            max,
            current: AtomicU32::new(0),
        }
    }

    /// How many are in use now.
    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// Whether the cap is reached (never without a cap).
    pub fn is_full(&self) -> bool {
        self.max.is_some_and(|max| self.current() >= max)
    }

    /// The cap, if any.
    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// Takes one unit if the cap allows (always, without a cap).
    fn try_take(&self) -> bool {
        match self.max {
            None => {
                self.current.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .current
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    fn give(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The caps of one upstream.
#[derive(Debug)]
pub struct Thresholds {
    pub connections: Gauge,
    pub pending: Gauge,
    pub requests: Gauge,
    /// Requests refused by any cap.
    pub overflowed: AtomicU64,
}

/// A unit of a cap, borrowed for as long as the caller's scope holds it (a request's attempt,
/// a connect in progress); given back when dropped.
#[derive(Debug)]
pub struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.give();
    }
}

/// An open connection's unit of `max_connections`, owned by the connection's task; given
/// back when dropped (the connection closed).
#[derive(Debug)]
pub struct OpenConnection(Arc<Thresholds>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.give();
    }
}

impl Thresholds {
    pub fn new(cfg: &UpstreamLimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            connections: Gauge::new(cfg.max_connections),
            pending: Gauge::new(cfg.max_pending_requests),
            requests: Gauge::new(cfg.max_requests),
            overflowed: AtomicU64::new(0),
        })
    }

    /// A request in flight to the upstream (each attempt holds one until its response head).
    pub fn request(&self) -> Result<Held<'_>, ProxyError> {
        self.hold(&self.requests)
    }

    /// A request waiting for a new connection to open.
    pub fn pending(&self) -> Result<Held<'_>, ProxyError> {
        self.hold(&self.pending)
    }

    /// An open connection (held by the connection's task until it closes).
    pub fn connection(self: &Arc<Self>) -> Result<OpenConnection, ProxyError> {
        let held = self.hold(&self.connections)?;
        // The unit now belongs to the connection, which gives it back when it closes.
        std::mem::forget(held);
        Ok(OpenConnection(Arc::clone(self)))
    }

    /// One unit of `gauge` if its cap allows; otherwise the refusal is counted.
    fn hold<'a>(&'a self, gauge: &'a Gauge) -> Result<Held<'a>, ProxyError> {
        if gauge.try_take() {
            Ok(Held(gauge))
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            Err(ProxyError::new(ErrorKind::UpstreamOverflow))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_and_slots_come_back() {
        let t = Thresholds::new(&UpstreamLimitsConfig {
            max_connections: None,
            max_pending_requests: Some(1),
            max_requests: Some(2),
        });
        let a = t.request().unwrap();
        let b = t.request().unwrap();
        let err = t.request().unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamOverflow);
        drop(a);
        let _c = t.request().unwrap();
        drop(b);
        let p = t.pending().unwrap();
        assert!(t.pending().is_err());
        drop(p);
        assert!(t.pending().is_ok());
        let conns: Vec<_> = (0..1000).map(|_| t.connection().unwrap()).collect();
        assert_eq!(t.connections.current(), 1000);
        drop(conns);
        assert_eq!(t.connections.current(), 0);
        assert_eq!(t.overflowed.load(Ordering::Relaxed), 2);
    }
}
