//! `DirectGcra`: one GCRA cell in a single `AtomicU64`, for limits that are not keyed
//! (e.g. a route-wide cap); lock-free, updated by compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Decision;
use crate::gcra;
use crate::limit::{Algorithm, Limit, LimitError, Request};

/// A single GCRA limiter whose whole state is one TAT in an `AtomicU64`.
#[derive(Debug)]
pub struct DirectGcra {
    limit: Limit,
    tat: AtomicU64,
}

impl DirectGcra {
    /// A fresh cell for a GCRA `limit` (`LimitError::NotGcra` for window limits, whose
    /// state does not fit one word).
    pub fn new(limit: Limit) -> Result<DirectGcra, LimitError> {
        if limit.algorithm() != Algorithm::Gcra {
            return Err(LimitError::NotGcra);
        }
        Ok(DirectGcra {
            limit,
            tat: AtomicU64::new(0),
        })
    }

    /// The limit this cell enforces.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Decide `request`, consuming its cost when allowed or delayed.
    #[inline]
    pub fn acquire(&self, request: Request) -> Decision {
        // Only the TAT arithmetic runs inside the CAS loop; the headers are built once.
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let step = gcra::step(&self.limit, current, request);
            if step.tat == current {
                return gcra::decision(&self.limit, step, request.now.0);
            }
            match self.tat.compare_exchange_weak(
                current,
                step.tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return gcra::decision(&self.limit, step, request.now.0),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Outcome;
    use crate::time::Nanos;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn rejects_windows_and_matches_the_pure_transition() {
        let w = Limit::fixed_window(1, Duration::from_secs(1)).unwrap();
        assert_eq!(DirectGcra::new(w).err(), Some(LimitError::NotGcra));
        let g = DirectGcra::new(Limit::gcra(10, Duration::from_secs(1), 2).unwrap()).unwrap();
        let now = Nanos::from_secs(1);
        assert_eq!(g.acquire(Request::new(now)).outcome, Outcome::Allowed);
        assert_eq!(g.acquire(Request::new(now)).outcome, Outcome::Allowed);
        assert_eq!(g.acquire(Request::new(now)).outcome, Outcome::Denied);
    }

    #[test]
    fn threads_never_exceed_the_burst() {
        let g = Arc::new(
            DirectGcra::new(Limit::gcra(1, Duration::from_secs(60), 1000).unwrap()).unwrap(),
        );
        let allowed = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (g, allowed) = (g.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        if g.acquire(Request::new(Nanos::from_secs(7))).is_allowed() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }
}
