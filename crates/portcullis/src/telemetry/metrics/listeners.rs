//! What a scrape reports about each listener: open connections (the listener's
//! `max_connections` permits in use, tunnels included), requests in flight (the sum of its
//! live connections' own in-flight counts, which the request path keeps anyway) and how often
//! the connection limit stopped the accept loop, and the connections it closed without serving
//! a request, by reason (`REFUSALS`). Nothing here is touched per request; a
//! connection costs one map insert and one removal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Semaphore;

use crate::proxy::Downstream;
use crate::reason;

/// The reasons a listener closes a connection without serving a request on it.
pub const REFUSALS: [&str; 3] = [
    reason::CLIENT_CONNECTION_LIMIT,
    reason::FIRST_REQUEST_TIMEOUT,
    reason::HEADER_TIMEOUT,
];

/// One listener's live state, shared by its accept loop and the scrape.
#[derive(Debug)]
pub struct ListenerState {
    pub name: Arc<str>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    /// The listener's connections, by the address of their `Downstream`.
    connections: Mutex<HashMap<usize, Weak<Downstream>>>,
    limited: AtomicU64,
    /// Connections closed without a request, by `REFUSALS` index.
    refused: [AtomicU64; REFUSALS.len()],
    /// 1 while the accept loop holds the permit for the connection it waits to accept.
    held_by_accept: AtomicUsize,
}

impl ListenerState {
    pub fn new(name: &str, permits: Arc<Semaphore>, max_connections: usize) -> Self {
        Self {
            name: name.into(),
            permits,
            max_connections,
            connections: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
            refused: Default::default(),
            held_by_accept: AtomicUsize::new(0),
        }
    }

    /// Counts a time the accept loop found every connection permit taken.
    pub fn limited(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed for `reason` (one of `REFUSALS`; others are not counted).
    pub fn refused(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections closed for `REFUSALS[i]` so far.
    pub fn refused_total(&self, i: usize) -> u64 {
        self.refused.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Whether the accept loop holds a permit for a connection not accepted yet.
    pub fn holding_permit(&self, holding: bool) {
        self.held_by_accept
            .store(usize::from(holding), Ordering::Relaxed);
    }

    /// Tracks `ds` until the returned guard is dropped (the connection's task ends).
    pub fn track(self: &Arc<Self>, ds: &Arc<Downstream>) -> Tracked {
        let key = Arc::as_ptr(ds) as usize;
        self.lock().insert(key, Arc::downgrade(ds));
        Tracked {
            state: Arc::clone(self),
            _ds: Arc::clone(ds),
            key,
        }
    }

    /// Connections holding a permit now (upgraded connections included).
    pub fn connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.permits.available_permits())
            .saturating_sub(self.held_by_accept.load(Ordering::Relaxed))
    }

    /// Requests whose response head is not sent yet, over the listener's connections.
    pub fn requests_in_flight(&self) -> usize {
        self.lock()
            .values()
            .filter_map(Weak::upgrade)
            .map(|ds| ds.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    pub fn limited_total(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Weak<Downstream>>> {
        // Each update is one insert or remove: the map is whole even after a panic.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection counted by its listener; removed when dropped.
#[derive(Debug)]
pub struct Tracked {
    state: Arc<ListenerState>,
    /// Held so that the address (the key) is not reused before the entry is removed.
    _ds: Arc<Downstream>,
    key: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.lock().remove(&self.key);
    }
}
