//! Retries within a budget, and how long to wait before each one.
//!
//! # [`RetryBudget`]: retries cannot multiply load during an outage
//!
//! One budget per upstream. The caller [`deposit`](RetryBudget::deposit)s once for every
//! original request sent to the upstream and calls [`try_withdraw`](RetryBudget::try_withdraw)
//! before every retry; a `false` means "do not retry" and is counted in
//! [`refused`](RetryBudget::refused).
//!
//! Exact semantics:
//!
//! - The window `W` is split into [`BUCKETS`] (10) buckets of width `w = W / 10` nanoseconds
//!   (integer division; `W` must be at least 10 ns). An instant `now` falls in bucket number
//!   `now / w`. "In the window" means: in the bucket of the latest `now` seen, or in one of the
//!   9 buckets before it. So a deposit or retry counts for between `9·w` and `10·w` after it
//!   happened (at most `W`), and then leaves the window all at once with its bucket.
//! - Let `D` be the deposits and `R` the granted retries in the window. The *allowance* is
//!   `floor(D · ratio_percent / 100) + floor(min_per_sec · W / 1 s)`. `try_withdraw` grants a
//!   retry (and counts it in `R`) iff afterwards `R ≤ allowance`, i.e. iff `R + 1 ≤ allowance`
//!   before; otherwise it leaves `R` unchanged and increments `refused`. Refused retries never
//!   use up budget.
//! - `min_per_sec · W` is granted per window, not per second: with no traffic at all, a budget
//!   of `min_per_sec = 1`, `W = 10 s` allows 10 retries in any run of buckets spanning the
//!   window, which may be back to back.
//! - Time may go backwards (callers on several threads read the clock at slightly different
//!   moments): a `now` earlier than the latest seen is counted in the latest bucket and never
//!   rotates buckets out.
//! - Thread safety and slack: the state sits behind one `Mutex` held only for the rotation (at
//!   most 10 bucket resets) and two additions, so every operation is linearisable and the
//!   invariant `R ≤ allowance` holds exactly at every moment, with **zero slack**, however many
//!   threads share the budget. (`allowance` can still fall below `R` later when deposits leave
//!   the window before the retries they paid for; then retries are refused until it recovers.)
//!   A poisoned mutex is recovered, never propagated: the counters are always consistent.
//! - Counters saturate at `u64::MAX` instead of wrapping.
//!
//! # [`Backoff`]: full-jitter exponential delays
//!
//! [`Backoff::delay`]`(attempt, random)` is uniform in `[0, min(max, base · 2^attempt)]`
//! (attempt 0 is the first retry), computed without overflow for any `attempt` and saturating
//! at `u64::MAX` nanoseconds. The randomness is passed in: this crate owns no RNG.
//!
//! [`honour_retry_after`] combines that delay with an upstream `Retry-After`: it waits for the
//! larger of the two, or returns `None` (do not retry) if that exceeds the caller's `max_wait`.
//!
//! ```
//! use std::time::Duration;
//! use portcullis_limits::{honour_retry_after, Backoff, Nanos, RetryBudget};
//!
//! // Retries up to 20% of requests, plus 1 per second, over a 10 s window.
//! let budget = RetryBudget::new(20, 1, Duration::from_secs(10)).unwrap();
//! let now = Nanos::from_secs(100);
//! budget.deposit(now);
//! if budget.try_withdraw(now) {
//!     let backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));
//!     let computed = backoff.delay(0, 0x9e37_79b9_7f4a_7c15);
//!     assert!(computed <= Duration::from_millis(25));
//!     let wait = honour_retry_after(computed, Some(Duration::from_secs(2)), Duration::from_secs(5));
//!     assert_eq!(wait, Some(Duration::from_secs(2)));
//! }
//! ```

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::Nanos;

/// How many buckets a [`RetryBudget`] window is split into.
pub const BUCKETS: usize = 10;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A retry budget for one upstream: within a sliding window (10 buckets), retries may reach
/// `ratio_percent`% of the original requests plus `min_per_sec` per second of the window.
/// The exact semantics (bucketing, rounding, time going backwards, zero slack across threads)
/// are in the doc comment atop `portcullis-limits/src/retry.rs`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio_percent: u32,
    /// `floor(min_per_sec · W / 1 s)`: retries allowed per window with no traffic.
    min_per_window: u64,
    /// Bucket width `w` in nanoseconds, at least 1.
    bucket_nanos: u64,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    /// Number (`now / w`) of the latest bucket; its counts are at index `epoch % BUCKETS`.
    epoch: u64,
    deposits: [u64; BUCKETS],
    retries: [u64; BUCKETS],
    refused: u64,
}

/// A snapshot of a [`RetryBudget`] at some `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryBudgetStats {
    /// Original requests deposited in the window.
    pub deposits: u64,
    /// Retries granted in the window.
    pub retries: u64,
    /// Retries the window allows in total (`floor(D · ratio / 100) + min_per_sec · W`).
    pub allowance: u64,
    /// Retries that `try_withdraw` would still grant now (`allowance − retries`, at least 0).
    pub remaining: u64,
    /// Retries refused since the budget was created (not windowed).
    pub refused: u64,
}

impl RetryBudget {
    /// A budget allowing, within any `window`, retries up to `ratio_percent`% of the original
    /// requests plus `min_per_sec` per second of the window.
    ///
    /// Errors if `window` is shorter than [`BUCKETS`] nanoseconds (or longer than `u64`
    /// nanoseconds, 584 years).
    pub fn new(ratio_percent: u32, min_per_sec: u32, window: Duration) -> Result<Self, String> {
        let window_nanos = u64::try_from(window.as_nanos())
            .map_err(|_| format!("retry budget window {window:?} is too long (max 584 years)"))?;
        let bucket_nanos = window_nanos / BUCKETS as u64;
        if bucket_nanos == 0 {
            return Err(format!(
                "retry budget window {window:?} is too short (at least {BUCKETS} ns)"
            ));
        }
        let effective_window = u128::from(bucket_nanos) * BUCKETS as u128;
        let min_per_window = u128::from(min_per_sec) * effective_window / NANOS_PER_SEC;
        Ok(RetryBudget {
            ratio_percent,
            min_per_window: u64::try_from(min_per_window).unwrap_or(u64::MAX),
            bucket_nanos,
            state: Mutex::new(Buckets {
                epoch: 0,
                deposits: [0; BUCKETS],
                retries: [0; BUCKETS],
                refused: 0,
            }),
        })
    }

    /// Record one original request (not a retry) sent at `now`.
    pub fn deposit(&self, now: Nanos) {
        let mut state = self.lock();
        let i = state.rotate(now.0 / self.bucket_nanos);
        state.deposits[i] = state.deposits[i].saturating_add(1);
    }

    /// Ask to retry at `now`: `true` (and the retry is counted) if the budget allows it,
    /// `false` (and the refusal is counted) otherwise.
    pub fn try_withdraw(&self, now: Nanos) -> bool {
        let mut state = self.lock();
        let i = state.rotate(now.0 / self.bucket_nanos);
        let retries = sum(&state.retries);
        if retries < self.allowance(sum(&state.deposits)) {
            state.retries[i] = state.retries[i].saturating_add(1);
            true
        } else {
            state.refused = state.refused.saturating_add(1);
            false
        }
    }

    /// Retries refused since the budget was created.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// The window's counts as of `now` (rotating buckets exactly as the other methods do).
    pub fn stats(&self, now: Nanos) -> RetryBudgetStats {
        let mut state = self.lock();
        state.rotate(now.0 / self.bucket_nanos);
        let deposits = sum(&state.deposits);
        let retries = sum(&state.retries);
        let allowance = self.allowance(deposits);
        RetryBudgetStats {
            deposits,
            retries,
            allowance,
            remaining: allowance.saturating_sub(retries),
            refused: state.refused,
        }
    }

    fn allowance(&self, deposits: u64) -> u64 {
        let by_ratio = u128::from(deposits) * u128::from(self.ratio_percent) / 100;
        u64::try_from(by_ratio)
            .unwrap_or(u64::MAX)
            .saturating_add(self.min_per_window)
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Every critical section leaves the counters consistent, so a poisoned lock is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Buckets {
    /// Move the window forward to bucket number `epoch` (never backwards) and return the index
    /// of the bucket to count into.
    fn rotate(&mut self, epoch: u64) -> usize {
        if epoch > self.epoch {
            let advance = epoch - self.epoch;
            if advance >= BUCKETS as u64 {
                self.deposits = [0; BUCKETS];
                self.retries = [0; BUCKETS];
            } else {
                for step in 1..=advance {
                    let i = index(self.epoch.wrapping_add(step));
                    self.deposits[i] = 0;
                    self.retries[i] = 0;
                }
            }
            self.epoch = epoch;
        }
        index(self.epoch)
    }
}

fn index(epoch: u64) -> usize {
    // The remainder is < BUCKETS, so the cast is lossless.
    (epoch % BUCKETS as u64) as usize
}

fn sum(counts: &[u64; BUCKETS]) -> u64 {
    counts.iter().fold(0u64, |acc, &n| acc.saturating_add(n))
}

/// Full-jitter exponential backoff: the delay before retry `attempt` is uniform in
/// `[0, min(max, base · 2^attempt)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The ceiling of the first retry's delay (attempt 0); it doubles with every attempt.
    pub base: Duration,
    /// The ceiling no delay exceeds.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The ceiling of retry `attempt`'s delay: `min(max, base · 2^attempt)`, saturating at
    /// `u64::MAX` nanoseconds.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(attempt))
    }

    /// The delay before retry `attempt` (0 for the first retry), drawn uniformly from
    /// `[0, ceiling(attempt)]` (both ends included) by `random`, which the caller takes
    /// from a uniform 64-bit source. The mapping is monotonic in `random`: 0 gives no delay,
    /// `u64::MAX` the full ceiling.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = u128::from(self.ceiling_nanos(attempt));
        // (ceiling + 1) ≤ 2^64 and random < 2^64, so the product fits in u128; the result is
        // ≤ ceiling < 2^64.
        let nanos = ((ceiling + 1) * u128::from(random)) >> 64;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn ceiling_nanos(&self, attempt: u32) -> u64 {
        let base = Nanos::from_duration(self.base).0;
        let max = Nanos::from_duration(self.max).0;
        let grown = match 1u64.checked_shl(attempt) {
            Some(factor) => base.saturating_mul(factor),
            None if base == 0 => 0,
            None => u64::MAX,
        };
        grown.min(max)
    }
}

/// How long to wait before a retry, given the backoff's `computed` delay and the upstream's
/// `Retry-After` (already parsed to a duration from now): the larger of the two, or `None` —
/// do not retry — if that exceeds `max_wait`.
///
/// Note that a `computed` delay above `max_wait` also gives `None`; keep `Backoff::max` at or
/// below `max_wait` if only `Retry-After` should be able to cancel a retry.
pub fn honour_retry_after(
    computed: Duration,
    retry_after: Option<Duration>,
    max_wait: Duration,
) -> Option<Duration> {
    let wait = retry_after.map_or(computed, |ra| ra.max(computed));
    (wait <= max_wait).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const SEC: Duration = Duration::from_secs(1);

    fn budget(ratio: u32, min: u32) -> RetryBudget {
        RetryBudget::new(ratio, min, 10 * SEC).unwrap()
    }

    fn t(secs: u64) -> Nanos {
        Nanos::from_secs(secs)
    }

    #[test]
    fn rejects_unusable_windows() {
        assert!(RetryBudget::new(20, 1, Duration::ZERO).is_err());
        assert!(RetryBudget::new(20, 1, Duration::from_nanos(9)).is_err());
        assert!(RetryBudget::new(20, 1, Duration::MAX).is_err());
        assert!(RetryBudget::new(20, 1, Duration::from_nanos(10)).is_ok());
        assert!(RetryBudget::new(
            u32::MAX,
            u32::MAX,
            Duration::from_secs(u64::MAX / 2_000_000_000)
        )
        .is_ok());
    }

    #[test]
    fn min_per_sec_allows_retries_with_no_traffic() {
        let b = budget(20, 1); // 1/s over 10 s: 10 retries per window
        for _ in 0..10 {
            assert!(b.try_withdraw(t(1_000)));
        }
        assert!(!b.try_withdraw(t(1_000)));
        assert_eq!(b.refused(), 1);

        let none = budget(20, 0);
        assert!(!none.try_withdraw(t(1_000)));
        assert_eq!(none.refused(), 1);
    }

    #[test]
    fn fractional_window_scales_min_per_sec() {
        let b = RetryBudget::new(0, 4, Duration::from_millis(2_500)).unwrap();
        assert_eq!(b.stats(t(0)).allowance, 10);
    }

    #[test]
    fn ratio_allows_twenty_percent_of_deposits_and_counts_refusals() {
        let b = budget(20, 0);
        for _ in 0..100 {
            b.deposit(t(50));
        }
        for _ in 0..20 {
            assert!(b.try_withdraw(t(51)));
        }
        for _ in 0..5 {
            assert!(!b.try_withdraw(t(52)));
        }
        assert_eq!(b.refused(), 5);
        assert_eq!(
            b.stats(t(52)),
            RetryBudgetStats {
                deposits: 100,
                retries: 20,
                allowance: 20,
                remaining: 0,
                refused: 5,
            }
        );
        // Refusals did not consume budget: new deposits reopen it exactly.
        for _ in 0..5 {
            b.deposit(t(53));
        }
        assert!(b.try_withdraw(t(53)));
        assert!(!b.try_withdraw(t(53)));
    }

    #[test]
    fn ratio_floors_and_adds_minimum() {
        let b = budget(20, 1);
        for _ in 0..9 {
            b.deposit(t(7));
        }
        // floor(9 · 0.2) = 1, plus 10 per window.
        assert_eq!(b.stats(t(7)).allowance, 11);
        for _ in 0..11 {
            assert!(b.try_withdraw(t(7)));
        }
        assert!(!b.try_withdraw(t(7)));
    }

    #[test]
    fn old_deposits_leave_the_window() {
        let b = budget(20, 0); // 1 s buckets
        for _ in 0..50 {
            b.deposit(t(100));
        }
        assert_eq!(b.stats(t(109)).deposits, 50); // bucket 100 is the 10th of 100..=109
        assert_eq!(b.stats(Nanos(Nanos::from_secs(110).0 - 1)).deposits, 50);
        assert_eq!(b.stats(t(110)).deposits, 0);
        assert!(!b.try_withdraw(t(110)));

        // Partial rotation keeps newer buckets.
        let b = budget(20, 0);
        for s in [200, 203, 206] {
            for _ in 0..10 {
                b.deposit(t(s));
            }
        }
        assert_eq!(b.stats(t(209)).deposits, 30);
        assert_eq!(b.stats(t(212)).deposits, 20);
        assert_eq!(b.stats(t(215)).deposits, 10);
        assert_eq!(b.stats(t(216)).deposits, 0);
        // A jump far ahead clears everything.
        b.deposit(t(217));
        assert_eq!(b.stats(t(u64::MAX / 1_000_000_000)).deposits, 0);
    }

    #[test]
    fn old_retries_leave_the_window_too() {
        let b = budget(0, 1);
        for _ in 0..10 {
            assert!(b.try_withdraw(t(300)));
        }
        assert!(!b.try_withdraw(t(309)));
        assert!(b.try_withdraw(t(310)));
        assert_eq!(b.refused(), 1);
    }

    #[test]
    fn time_going_backwards_counts_in_latest_bucket() {
        let b = budget(20, 0);
        for _ in 0..10 {
            b.deposit(t(500));
        }
        b.deposit(t(400)); // stale: counts at 500, does not rotate
        assert_eq!(b.stats(t(0)).deposits, 11);
        assert_eq!(b.stats(t(509)).deposits, 11);
        assert_eq!(b.stats(t(510)).deposits, 0);
    }

    #[test]
    fn extreme_configuration_saturates() {
        let b = RetryBudget::new(u32::MAX, u32::MAX, 10 * SEC).unwrap();
        b.deposit(t(1));
        let s = b.stats(t(1));
        assert_eq!(s.allowance, 42_949_672 + u64::from(u32::MAX) * 10);
        assert!(b.try_withdraw(t(1)));
        let at_end = Nanos(u64::MAX);
        b.deposit(at_end);
        assert!(b.try_withdraw(at_end));
    }

    #[test]
    fn threads_never_exceed_the_budget() {
        // Zero slack: with a fixed allowance, exactly the allowance is granted.
        let b = Arc::new(budget(20, 1));
        for _ in 0..100 {
            b.deposit(t(10));
        }
        let granted = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (b, granted) = (Arc::clone(&b), Arc::clone(&granted));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        if b.try_withdraw(t(11)) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::Relaxed), 30); // 20% of 100 + 1/s · 10 s
        assert_eq!(b.refused(), 8 * 200 - 30);
    }

    #[test]
    fn threads_interleaving_deposits_stay_within_allowance() {
        let b = Arc::new(budget(20, 0));
        let handles: Vec<_> = (0..8u64)
            .map(|k| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut granted = 0u64;
                    for i in 0..500u64 {
                        let now = Nanos::from_millis(20_000 + i + k);
                        if i % 2 == 0 {
                            b.deposit(now);
                        } else if b.try_withdraw(now) {
                            granted += 1;
                        }
                        let s = b.stats(now);
                        assert!(s.retries <= s.allowance, "{s:?}");
                    }
                    granted
                })
            })
            .collect();
        let granted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let s = b.stats(Nanos::from_millis(20_600));
        assert_eq!(s.deposits, 8 * 250);
        assert_eq!(s.retries, granted);
        assert!(granted <= 8 * 250 / 5);
        assert_eq!(s.refused, 8 * 250 - granted);
    }

    #[test]
    fn backoff_bounds_per_attempt() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for (attempt, ceiling_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3_200),
            (6, 5_000),
            (7, 5_000),
        ] {
            let ceiling = Duration::from_millis(ceiling_ms);
            assert_eq!(b.ceiling(attempt), ceiling);
            assert_eq!(b.delay(attempt, 0), Duration::ZERO);
            assert_eq!(b.delay(attempt, u64::MAX), ceiling);
            let mid = b.delay(attempt, 1 << 63);
            assert_eq!(mid, ceiling / 2, "attempt {attempt}");
            let mut r = 0x1234_5678_9abc_def0u64;
            for _ in 0..1_000 {
                r = r
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                assert!(b.delay(attempt, r) <= ceiling);
            }
        }
    }

    #[test]
    fn backoff_is_monotonic_in_random() {
        let b = Backoff::new(Duration::from_nanos(7), Duration::from_secs(1));
        let mut prev = Duration::ZERO;
        for r in (0..=u64::MAX).step_by(1 << 58) {
            let d = b.delay(3, r);
            assert!(d >= prev);
            prev = d;
        }
    }

    #[test]
    fn backoff_does_not_overflow_at_large_attempts() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for attempt in [40, 63, 64, 65, 127, 128, 1_000, u32::MAX] {
            assert_eq!(b.ceiling(attempt), Duration::from_secs(30));
            assert_eq!(b.delay(attempt, u64::MAX), Duration::from_secs(30));
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::from_nanos(u64::MAX));
        assert_eq!(huge.delay(0, u64::MAX), Duration::from_nanos(u64::MAX));
        let zero = Backoff::new(Duration::ZERO, Duration::MAX);
        assert_eq!(zero.delay(u32::MAX, u64::MAX), Duration::ZERO);
        let inverted = Backoff::new(SEC, Duration::from_millis(10));
        assert_eq!(inverted.ceiling(0), Duration::from_millis(10));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let ms = Duration::from_millis;
        let max_wait = ms(5_000);
        assert_eq!(honour_retry_after(ms(300), None, max_wait), Some(ms(300)));
        assert_eq!(
            honour_retry_after(ms(300), Some(ms(2_000)), max_wait),
            Some(ms(2_000))
        );
        assert_eq!(
            honour_retry_after(ms(300), Some(ms(100)), max_wait),
            Some(ms(300))
        );
        assert_eq!(
            honour_retry_after(ms(300), Some(max_wait), max_wait),
            Some(max_wait)
        );
        assert_eq!(honour_retry_after(ms(300), Some(ms(5_001)), max_wait), None);
        assert_eq!(honour_retry_after(ms(6_000), None, max_wait), None);
        assert_eq!(
            honour_retry_after(ms(0), Some(Duration::MAX), Duration::MAX),
            Some(Duration::MAX)
        );
    }
}
