//! Rate limit for per-request log lines: at most one line per reason per interval, and the
//! line that is let through says how many were held back since the previous one. Metrics
//! carry the totals; the log only has to say that something is happening, and why.
//!
//! Lock-free: one slot (two atomics) per reason code, a compare-and-swap decides which caller
//! of an interval writes the line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::reason;

/// One line per reason per second.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Slots: one per `reason::ALL` entry, one for anything else.
const SLOTS: usize = reason::ALL.len() + 1;

#[derive(Debug, Default)]
struct Slot {
    /// Milliseconds since `LogLimit::start` from which the next line may be written, plus 1
    /// (0: no line written yet).
    next: AtomicU64,
    /// Lines held back since the last one written.
    suppressed: AtomicU64,
}

/// Per-reason log line limiter.
#[derive(Debug)]
pub struct LogLimit {
    start: Instant,
    interval_ms: u64,
    slots: [Slot; SLOTS],
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(INTERVAL)
    }
}

impl LogLimit {
    pub fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }

    /// Whether a line for `reason` may be written now: `Some(held back since the last line)`,
    /// or `None` (the line is counted as held back).
    pub fn admit(&self, reason: &str) -> Option<u64> {
        self.admit_at(reason, Instant::now())
    }

    /// `admit` at `now`.
    pub fn admit_at(&self, reason: &str, now: Instant) -> Option<u64> {
        let i = reason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(SLOTS - 1);
        let slot = &self.slots[i];
        let now_ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let next = slot.next.load(Ordering::Acquire);
        if now_ms >= next
            && slot
                .next
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(slot.suppressed.swap(0, Ordering::AcqRel));
        }
        slot.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_reason_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        assert_eq!(limit.admit(reason::CIRCUIT_OPEN), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit(reason::CIRCUIT_OPEN), None);
        }
        // Another reason has its own slot; so has a code that is not in the list.
        assert_eq!(limit.admit(reason::SHED), Some(0));
        assert_eq!(limit.admit("not_a_reason"), Some(0));
        assert_eq!(limit.admit("not_a_reason"), None);

        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(limit.admit(reason::CIRCUIT_OPEN), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.admit(reason::CIRCUIT_OPEN), Some(6));
        assert_eq!(limit.admit(reason::CIRCUIT_OPEN), None);

        // A quiet spell: the next line comes at once and reports what was held back.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limit.admit(reason::CIRCUIT_OPEN), Some(1));
        assert_eq!(limit.admit(reason::SHED), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_let_one_line_through() {
        let limit = std::sync::Arc::new(LogLimit::new(Duration::from_secs(1)));
        // The threads have no runtime (no paused clock): they are given the time.
        let now = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| limit.admit_at(reason::SHED, now).is_some())
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.admit(reason::SHED), Some(7999));
    }
}
