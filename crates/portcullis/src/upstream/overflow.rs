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

/// Which cap a unit was taken from; the unit goes back when this is dropped.
#[derive(Debug)]
pub struct Slot {
    thresholds: Arc<Thresholds>,
    which: Which,
}

/// A request slot; given back when dropped.
#[derive(Debug)]
pub struct RequestSlot<'a>(&'a Gauge);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.give();
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Connection,
    Pending,
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

    /// A request in flight to the upstream (each attempt holds one). Borrowed, not counted
    /// through an `Arc`: this is on every request's path.
    pub fn request(&self) -> Result<RequestSlot<'_>, ProxyError> {
        if self.requests.try_take() {
            Ok(RequestSlot(&self.requests))
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            Err(ProxyError::new(ErrorKind::UpstreamOverflow))
        }
    }

    /// A request waiting for a new connection to open.
    pub fn pending(self: &Arc<Self>) -> Result<Slot, ProxyError> {
        self.take(Which::Pending)
    }

    /// An open connection (held by the connection's task until it closes).
    pub fn connection(self: &Arc<Self>) -> Result<Slot, ProxyError> {
        self.take(Which::Connection)
    }

    fn gauge(&self, which: Which) -> &Gauge {
        match which {
            Which::Connection => &self.connections,
            Which::Pending => &self.pending,
        }
    }

    fn take(self: &Arc<Self>, which: Which) -> Result<Slot, ProxyError> {
        if self.gauge(which).try_take() {
            Ok(Slot {
                thresholds: Arc::clone(self),
                which,
            })
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            Err(ProxyError::new(ErrorKind::UpstreamOverflow))
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.thresholds.gauge(self.which).give();
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
