//! `Limit`: what a limit is (algorithm and parameters), its per-key `State`, and the pure
//! transition every store runs atomically.

use std::fmt;
use std::time::Duration;

use crate::decision::Decision;
use crate::time::Nanos;
use crate::{gcra, window};

/// Which algorithm a [`Limit`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: a token bucket kept as one "theoretical arrival time".
    Gcra,
    /// `quota` per window; windows are aligned on multiples of `period` since the epoch.
    FixedWindow,
    /// Sliding window counter approximation: the previous window's count, weighted by how
    /// much of it still overlaps the sliding window, plus the current window's count.
    SlidingWindow,
}

/// A validated limit. `Hash + Eq` over every parameter that shapes the counters, so a
/// registry can key stores by `Limit` (plus the policy name) and keep counters across
/// reloads exactly when the limit is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    algorithm: Algorithm,
    quota: u32,
    period: u64,
    burst: u32,
    /// GCRA emission interval (`period / quota`, rounded down); 0 for windows.
    interval: u64,
    /// GCRA capacity `burst * interval`; 0 for windows.
    capacity: u64,
    /// `u64::MAX / interval`: divides by the interval with a multiply (see `div_interval`).
    reciprocal: u64,
}

/// Why a limit's parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// `quota` or `burst` was zero.
    Zero,
    /// `period` was zero or too long to count in `u64` nanoseconds.
    Period,
    /// GCRA: more than one request per nanosecond (`quota` > `period` in ns).
    TooFast,
    /// A single-cell limiter was given a limit that is not GCRA.
    NotGcra,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitError::Zero => "quota and burst must be at least 1",
            LimitError::Period => "period must be between 1 ns and 584 years",
            LimitError::TooFast => "rate must be at most one request per nanosecond",
            LimitError::NotGcra => "this limiter only runs GCRA limits",
        })
    }
}

impl std::error::Error for LimitError {}

/// The per-key state: two words, all zeros meaning "fresh" (never seen / fully restored).
/// The layout per algorithm is documented on the algorithm's module and on
/// [`Limit::transition`]; a shared store keeps these two integers and nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct State {
    /// GCRA: theoretical arrival time (ns). Windows: index of the window (`now / period`).
    pub w0: u64,
    /// GCRA: unused (0). Fixed window: count in window `w0`. Sliding window: count of
    /// window `w0` in the low 32 bits, count of window `w0 - 1` in the high 32 bits.
    pub w1: u64,
}

/// One request against a limit: when, how much, and how long it may wait for its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// The caller's current instant.
    pub now: Nanos,
    /// Units this request consumes (default 1). 0 peeks: the decision without consuming.
    pub cost: u32,
    /// Delay mode (nginx `burst` + `delay`): a request over the rate may wait up to this long
    /// for its slot instead of being refused. Zero (default) refuses at once.
    pub max_delay: Nanos,
}

impl Request {
    /// A request of cost 1 at `now`, refused rather than delayed when over the limit.
    pub fn new(now: Nanos) -> Request {
        Request {
            now,
            cost: 1,
            max_delay: Nanos::ZERO,
        }
    }

    /// This request with another cost.
    pub fn cost(self, cost: u32) -> Request {
        Request { cost, ..self }
    }

    /// This request, allowed to wait up to `max_delay` for its slot.
    pub fn max_delay(self, max_delay: Duration) -> Request {
        Request {
            max_delay: Nanos::from_duration(max_delay),
            ..self
        }
    }
}

fn period_nanos(period: Duration) -> Result<u64, LimitError> {
    match u64::try_from(period.as_nanos()) {
        Ok(0) | Err(_) => Err(LimitError::Period),
        Ok(p) => Ok(p),
    }
}

impl Limit {
    /// GCRA: `quota` requests per `period` sustained, up to `burst` at once.
    pub fn gcra(quota: u32, period: Duration, burst: u32) -> Result<Limit, LimitError> {
        if quota == 0 || burst == 0 {
            return Err(LimitError::Zero);
        }
        let period = period_nanos(period)?;
        let interval = period / u64::from(quota);
        if interval == 0 {
            return Err(LimitError::TooFast);
        }
        // The capacity `burst * interval` and TATs up to it must fit in u64 nanoseconds
        // with room for any `now` a caller may reasonably pass.
        let capacity = interval
            .checked_mul(u64::from(burst))
            .filter(|c| *c <= u64::MAX / 2)
            .ok_or(LimitError::Period)?;
        Ok(Limit {
            algorithm: Algorithm::Gcra,
            quota,
            period,
            burst,
            interval,
            capacity,
            reciprocal: u64::MAX / interval,
        })
    }

    /// Fixed window: `quota` per window of `period`.
    pub fn fixed_window(quota: u32, period: Duration) -> Result<Limit, LimitError> {
        Limit::window(Algorithm::FixedWindow, quota, period)
    }

    /// Sliding window counter approximation: `quota` per sliding `period`.
    pub fn sliding_window(quota: u32, period: Duration) -> Result<Limit, LimitError> {
        Limit::window(Algorithm::SlidingWindow, quota, period)
    }

    fn window(algorithm: Algorithm, quota: u32, period: Duration) -> Result<Limit, LimitError> {
        if quota == 0 {
            return Err(LimitError::Zero);
        }
        let period = period_nanos(period)?;
        Ok(Limit {
            algorithm,
            quota,
            period,
            burst: quota,
            interval: 0,
            capacity: 0,
            reciprocal: 0,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Requests per period.
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// GCRA burst; equals `quota` for windows.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub(crate) fn period_ns(&self) -> u64 {
        self.period
    }

    pub(crate) fn interval_ns(&self) -> u64 {
        self.interval
    }

    pub(crate) fn capacity_ns(&self) -> u64 {
        self.capacity
    }

    /// `n / interval` for GCRA without a hardware divide (it costs as much as the rest of
    /// a decision): with `r = floor((2^64 - 1) / d)`, `floor(n * r / 2^64)` is `q` or
    /// `q - 1` for every `n < 2^64`, and one compare fixes it up.
    #[inline]
    pub(crate) fn div_interval(&self, n: u64) -> u64 {
        let d = self.interval;
        let q = ((u128::from(n) * u128::from(self.reciprocal)) >> 64) as u64;
        if n - q * d >= d {
            q + 1
        } else {
            q
        }
    }

    /// `q` of the `RateLimit-Policy` header: the capacity available at once.
    pub fn policy_quota(&self) -> u32 {
        self.burst
    }

    /// `w` of the `RateLimit-Policy` header: the time over which `policy_quota` is restored
    /// (GCRA: `burst` emission intervals; windows: the period).
    pub fn policy_window(&self) -> Duration {
        match self.algorithm {
            Algorithm::Gcra => {
                Duration::from_nanos(self.interval.saturating_mul(u64::from(self.burst)))
            }
            Algorithm::FixedWindow | Algorithm::SlidingWindow => self.period(),
        }
    }

    /// The pure transition: given a key's state and a request, the state to store and the
    /// decision. Deterministic, integer-only, never panics; a denied request returns the
    /// state unchanged. A store must apply it atomically per key (CAS loop, lock, or a
    /// server-side script that mirrors the arithmetic of `gcra` / `window`).
    #[inline]
    pub fn transition(&self, state: State, request: Request) -> (State, Decision) {
        match self.algorithm {
            Algorithm::Gcra => gcra::transition(self, state, request),
            Algorithm::FixedWindow => window::fixed_transition(self, state, request),
            Algorithm::SlidingWindow => window::sliding_transition(self, state, request),
        }
    }

    /// How much credit forgetting this state at `now` would hand back, in the algorithm's
    /// own units (GCRA: ns of debt; windows: weighted count). 0 exactly when the state is
    /// equivalent to fresh, so dropping it changes no decision. Stores evict the smallest.
    #[inline]
    pub fn weight(&self, state: State, now: Nanos) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => state.w0.saturating_sub(now.0),
            Algorithm::FixedWindow => window::fixed_weight(self, state, now),
            Algorithm::SlidingWindow => window::sliding_weight(self, state, now),
        }
    }

    /// The instant from which `state` is equivalent to fresh if no request arrives (a
    /// shared store's key TTL).
    pub fn fresh_at(&self, state: State) -> Nanos {
        match self.algorithm {
            Algorithm::Gcra => Nanos(state.w0),
            Algorithm::FixedWindow => window::fixed_fresh_at(self, state),
            Algorithm::SlidingWindow => window::sliding_fresh_at(self, state),
        }
    }
}

#[cfg(test)]
#[path = "limit_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn validation() {
        let s = Duration::from_secs(1);
        assert_eq!(Limit::gcra(0, s, 1), Err(LimitError::Zero));
        assert_eq!(Limit::gcra(1, s, 0), Err(LimitError::Zero));
        assert_eq!(Limit::gcra(1, Duration::ZERO, 1), Err(LimitError::Period));
        assert_eq!(
            Limit::gcra(2, Duration::from_nanos(1), 1),
            Err(LimitError::TooFast)
        );
        assert_eq!(Limit::gcra(1, Duration::MAX, 1), Err(LimitError::Period));
        assert_eq!(
            Limit::gcra(1, Duration::from_secs(1 << 33), u32::MAX),
            Err(LimitError::Period)
        );
        assert_eq!(Limit::fixed_window(0, s), Err(LimitError::Zero));
        assert!(Limit::sliding_window(u32::MAX, Duration::from_nanos(1)).is_ok());
        assert!(Limit::gcra(u32::MAX, Duration::from_secs(60), u32::MAX).is_ok());
    }

    #[test]
    fn identity_is_hash_eq_over_parameters() {
        let s = Duration::from_secs(1);
        let mut set = HashSet::new();
        set.insert(Limit::gcra(10, s, 5).unwrap());
        assert!(set.contains(&Limit::gcra(10, s, 5).unwrap()));
        assert!(!set.contains(&Limit::gcra(10, s, 6).unwrap()));
        assert!(!set.contains(&Limit::fixed_window(10, s).unwrap()));
    }

    #[test]
    fn division_by_reciprocal_is_exact() {
        for period in [1u64, 2, 3, 7, 1000, 999_999_937, 1 << 40, 123_456_789_012] {
            let l = Limit::gcra(1, Duration::from_nanos(period), 1).unwrap();
            let d = l.interval_ns();
            for n in [
                0,
                1,
                d - 1,
                d,
                d + 1,
                2 * d - 1,
                2 * d,
                u64::MAX / 2,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(l.div_interval(n), n / d, "{n} / {d}");
            }
        }
    }

    #[test]
    fn policy_header_values() {
        let l = Limit::gcra(100, Duration::from_secs(60), 10).unwrap();
        assert_eq!(l.policy_quota(), 10);
        assert_eq!(l.policy_window(), Duration::from_secs(6));
        let w = Limit::fixed_window(100, Duration::from_secs(60)).unwrap();
        assert_eq!(
            (w.policy_quota(), w.policy_window()),
            (100, Duration::from_secs(60))
        );
    }
}
