//! `ConcurrencyLimit`: a cap on requests in flight, as an atomic counter and a permit that
//! gives its slot back when dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// At most `limit` permits exist at once.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    limit: u32,
    in_flight: AtomicU32,
}

/// One slot of a [`ConcurrencyLimit`], released on drop (also on panic or cancellation of
/// the future holding it).
#[derive(Debug)]
pub struct Permit {
    owner: Arc<ConcurrencyLimit>,
}

impl ConcurrencyLimit {
    /// A limit of `limit` requests in flight (0 refuses everything).
    pub fn new(limit: u32) -> Arc<ConcurrencyLimit> {
        Arc::new(ConcurrencyLimit {
            limit,
            in_flight: AtomicU32::new(0),
        })
    }

    /// A permit if fewer than `limit` are in flight; `None` means refuse (or queue).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                owner: Arc::clone(self),
            })
    }

    /// Permits currently held.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Slots free now (for a `RateLimit`-style `remaining`).
    pub fn available(&self) -> u32 {
        self.limit.saturating_sub(self.in_flight())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_capped_and_released_on_drop() {
        let c = ConcurrencyLimit::new(2);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        assert!(c.try_acquire().is_none());
        assert_eq!((c.in_flight(), c.available()), (2, 0));
        drop(a);
        let _c2 = c.try_acquire().unwrap();
        drop(b);
        assert_eq!(c.in_flight(), 1);
        assert!(ConcurrencyLimit::new(0).try_acquire().is_none());
    }

    #[test]
    fn threads_never_hold_more_than_the_limit() {
        let c = ConcurrencyLimit::new(3);
        let peak = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (c, peak) = (c.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(p) = c.try_acquire() {
                            peak.fetch_max(c.in_flight(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(c.in_flight(), 0);
    }
}
