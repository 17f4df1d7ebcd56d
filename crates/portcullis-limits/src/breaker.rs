//! `Breaker`: a pure circuit-breaker state machine — the caller passes time in, asks
//! [`Breaker::admit`] before a call and reports its outcome with [`Breaker::record`]; every
//! state change comes back as a [`Transition`] with its [`Cause`].
//!
//! ```text
//!              failure rate or slow-call rate >= threshold
//!              (over the window, at least min_calls calls)
//!   +--------+ ------------------------------------------> +------------------+
//!   | Closed |                                             | Open { until }   |
//!   +--------+ <--+                                  +---> | admit: Rejected  |
//!       ^         |                                  |     +------------------+
//!       |         |                                  |              |
//!       |         |                     ProbeFailed  |              | OpenElapsed
//!       |         |        (open duration x2, capped |              | (now >= until,
//!       |         |          at max_open_duration)   |              |  seen by admit)
//!       |         |                                  |              v
//!       |         |   ProbesSucceeded            +---------------------------+
//!       |         +----------------------------- | HalfOpen                  |
//!       |   (window and open-duration growth     | admit: Probe, at most     |
//!       |    reset)                              | half_open_probes at once  |
//!       |                                        +---------------------------+
//! ```
//!
//! Breakers decide off the hot path; the hot path reads a gate: [`Breaker::state`] is a
//! cheap `Copy` value the gateway can publish wherever its requests look. Nothing here reads a
//! clock, allocates after construction, or panics; arithmetic saturates.
//!
//! A call is *failed* when the caller says so and *slow* when its latency is strictly above
//! `slow_call_threshold`; one call may be both. In half-open, a probe that fails **or** is slow
//! counts as a failed probe (a still-slow upstream would trip again right after closing).
//!
//! ```
//! use std::time::Duration;
//! use portcullis_limits::{Admission, Breaker, BreakerConfig, BreakerState, BreakerWindow, Nanos};
//!
//! let mut breaker = Breaker::new(BreakerConfig {
//!     window: BreakerWindow::Count(10),
//!     min_calls: 4,
//!     failure_rate_threshold: 50,
//!     slow_call_threshold: Duration::from_secs(2),
//!     slow_call_rate_threshold: 100,
//!     open_duration: Duration::from_secs(5),
//!     max_open_duration: Duration::from_secs(60),
//!     half_open_probes: 1,
//!     half_open_successes_to_close: 1,
//! })
//! .unwrap();
//! let now = Nanos::from_secs(1);
//! for ok in [true, false, true] {
//!     assert_eq!(breaker.admit(now).0, Admission::Allowed);
//!     assert!(breaker.record(now, ok, Duration::from_millis(10)).is_none());
//! }
//! let tripped = breaker.record(now, false, Duration::from_millis(10)).unwrap();
//! assert_eq!(tripped.to, BreakerState::Open { until: Nanos::from_secs(6) });
//! ```

use std::time::Duration;

use crate::Nanos;

/// Buckets a time-based window is split into.
const TIME_BUCKETS: u64 = 10;
/// Largest count-based window (one byte of memory per call remembered).
const MAX_COUNT_WINDOW: u32 = 1_000_000;

/// Which recent calls the rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerWindow {
    /// The last `n` calls.
    Count(u32),
    /// Calls in the last `d`, kept in 10 buckets of `d / 10`: a call drops out between 9/10
    /// and 10/10 of `d` after it was recorded.
    Time(Duration),
}

/// What trips the breaker and how it recovers. Percentages are `1..=100`; a rate "reaches" its
/// threshold when `bad * 100 >= threshold * calls` (exact, no rounding).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BreakerConfig {
    /// The calls the rates are computed over.
    pub window: BreakerWindow,
    /// No trip until the window holds at least this many calls.
    pub min_calls: u32,
    /// Trip when at least this percent of calls in the window failed.
    pub failure_rate_threshold: u8,
    /// A call is slow when its latency is strictly above this (`Duration::MAX`: never).
    pub slow_call_threshold: Duration,
    /// Trip when at least this percent of calls in the window were slow.
    pub slow_call_rate_threshold: u8,
    /// How long the first trip stays open.
    pub open_duration: Duration,
    /// Each consecutive trip (a probe failing) doubles the open duration up to this cap.
    pub max_open_duration: Duration,
    /// Probes allowed in flight at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub half_open_successes_to_close: u32,
}

impl BreakerConfig {
    /// `Ok` when every field is in range; otherwise says which field is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        match self.window {
            BreakerWindow::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                return Err(format!(
                    "breaker window: count must be 1..={MAX_COUNT_WINDOW}, got {n}"
                ));
            }
            BreakerWindow::Count(n) if self.min_calls > n => {
                return Err(format!(
                    "breaker min_calls ({}) exceeds the count window ({n}); it could never trip",
                    self.min_calls
                ));
            }
            BreakerWindow::Time(d) if d.as_nanos() < u128::from(TIME_BUCKETS) => {
                return Err(format!(
                    "breaker window: time window must be at least {TIME_BUCKETS}ns, got {d:?}"
                ));
            }
            _ => {}
        }
        if self.min_calls == 0 {
            return Err("breaker min_calls must be at least 1".to_string());
        }
        for (name, percent) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(1..=100).contains(&percent) {
                return Err(format!(
                    "breaker {name} must be 1..=100 percent, got {percent}"
                ));
            }
        }
        if self.open_duration.is_zero() {
            return Err("breaker open_duration must be positive".to_string());
        }
        if self.max_open_duration < self.open_duration {
            return Err(format!(
                "breaker max_open_duration ({:?}) is below open_duration ({:?})",
                self.max_open_duration, self.open_duration
            ));
        }
        if self.half_open_probes == 0 {
            return Err("breaker half_open_probes must be at least 1".to_string());
        }
        if self.half_open_successes_to_close == 0 {
            return Err("breaker half_open_successes_to_close must be at least 1".to_string());
        }
        Ok(())
    }
}

/// Where the breaker is. `Open { until }` still reads as open after `until` until the next
/// [`Breaker::admit`] moves it to half-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail fast until `until`.
    Open {
        /// The instant the breaker goes half-open (on the next admit at or after it).
        until: Nanos,
    },
    /// A limited number of probes test the upstream.
    HalfOpen,
}

/// The answer to [`Breaker::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send the call and [`Breaker::record`] its outcome.
    Allowed,
    /// Half-open: send the call as a probe and [`Breaker::record`] its outcome.
    Probe,
    /// Fail fast without touching the upstream. When open, `retry_after` is the time left
    /// until half-open; when half-open with every probe slot taken it is a hint
    /// (`open_duration`), since it depends on when the probes finish.
    Rejected {
        /// When to try again (for a Retry-After header).
        retry_after: Duration,
    },
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Closed → open: this percent of calls in the window failed (rounded down).
    FailureRate {
        /// Failed calls as a percentage of the window.
        percent: u8,
    },
    /// Closed → open: this percent of calls in the window were slow (rounded down).
    SlowCallRate {
        /// Slow calls as a percentage of the window.
        percent: u8,
    },
    /// Half-open → open: a probe failed or was slow.
    ProbeFailed,
    /// Half-open → closed: enough probes succeeded.
    ProbesSucceeded,
    /// Open → half-open: the open duration passed.
    OpenElapsed,
}

/// One state change, for the logs, metrics and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Why.
    pub cause: Cause,
}

/// Calls, failures and slow calls, as running sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Counts {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u64::from(failed));
        self.slow = self.slow.saturating_add(u64::from(slow));
    }

    fn remove(&mut self, other: Counts) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// One bucket of a time window: the bucket index (`now / width`) it holds and its counts.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    index: u64,
    counts: Counts,
}

/// The sliding window of outcomes, with O(1) record and running sums.
#[derive(Clone, Debug)]
enum Outcomes {
    Count {
        /// Outcome flags (`FAILED | SLOW`) of the last `capacity` calls.
        ring: Vec<u8>,
        capacity: usize,
        /// Where the next outcome goes once the ring is full.
        next: usize,
        sums: Counts,
    },
    Time {
        width: u64,
        /// Boxed: the count variant stays small and the breaker cheap to move.
        buckets: Box<[Bucket; TIME_BUCKETS as usize]>,
        /// The latest bucket index seen; an earlier `now` is counted into it.
        latest: u64,
        sums: Counts,
    },
}

impl Outcomes {
    fn new(window: BreakerWindow) -> Outcomes {
        match window {
            BreakerWindow::Count(n) => {
                let capacity = usize::try_from(n).unwrap_or(usize::MAX).max(1);
                Outcomes::Count {
                    ring: Vec::with_capacity(capacity),
                    capacity,
                    next: 0,
                    sums: Counts::default(),
                }
            }
            BreakerWindow::Time(d) => Outcomes::Time {
                width: (Nanos::from_duration(d).0 / TIME_BUCKETS).max(1),
                buckets: Box::new([Bucket::default(); TIME_BUCKETS as usize]),
                latest: 0,
                sums: Counts::default(),
            },
        }
    }

    fn record(&mut self, now: Nanos, failed: bool, slow: bool) {
        let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        match self {
            Outcomes::Count {
                ring,
                capacity,
                next,
                sums,
            } => {
                if ring.len() < *capacity {
                    ring.push(flags);
                } else if let Some(slot) = ring.get_mut(*next) {
                    let mut old = Counts::default();
                    old.add(*slot & FAILED != 0, *slot & SLOW != 0);
                    sums.remove(old);
                    *slot = flags;
                    *next = next.saturating_add(1) % *capacity;
                }
                sums.add(failed, slow);
            }
            Outcomes::Time {
                width,
                buckets,
                latest,
                sums,
            } => {
                let index = (now.0 / *width).max(*latest);
                *latest = index;
                Self::expire(&mut buckets[..], sums, index);
                if let Some(bucket) = buckets.get_mut(bucket_slot(index)) {
                    if bucket.index != index {
                        sums.remove(bucket.counts);
                        *bucket = Bucket {
                            index,
                            counts: Counts::default(),
                        };
                    }
                    bucket.counts.add(failed, slow);
                }
                sums.add(failed, slow);
            }
        }
    }

    /// Drops every bucket that is a full window or more behind `index`.
    fn expire(buckets: &mut [Bucket], sums: &mut Counts, index: u64) {
        for bucket in buckets.iter_mut() {
            if bucket.counts.calls > 0 && bucket.index.saturating_add(TIME_BUCKETS) <= index {
                sums.remove(bucket.counts);
                bucket.counts = Counts::default();
            }
        }
    }

    fn sums(&self) -> Counts {
        match self {
            Outcomes::Count { sums, .. } | Outcomes::Time { sums, .. } => *sums,
        }
    }

    fn reset(&mut self) {
        match self {
            Outcomes::Count {
                ring, next, sums, ..
            } => {
                ring.clear();
                *next = 0;
                *sums = Counts::default();
            }
            Outcomes::Time { buckets, sums, .. } => {
                **buckets = [Bucket::default(); TIME_BUCKETS as usize];
                *sums = Counts::default();
            }
        }
    }
}

fn bucket_slot(index: u64) -> usize {
    // `index % TIME_BUCKETS` is below 10, so the conversion cannot fail.
    usize::try_from(index % TIME_BUCKETS).unwrap_or(0)
}

/// `part` as a percentage of `whole`, rounded down (0 for an empty whole).
fn percent(part: u64, whole: u64) -> u8 {
    let p = u128::from(part).saturating_mul(100) / u128::from(whole.max(1));
    u8::try_from(p).unwrap_or(100)
}

/// `part / whole >= threshold / 100`, exactly.
fn reaches(part: u64, whole: u64, threshold: u8) -> bool {
    u128::from(part).saturating_mul(100) >= u128::from(whole).saturating_mul(u128::from(threshold))
}

/// The circuit breaker of one upstream (or route): state, window and half-open bookkeeping.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    window: Outcomes,
    /// The length of the current or most recent open period since the breaker last closed;
    /// zero when there was none (the next trip then opens for `open_duration`).
    last_open: Duration,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl Breaker {
    /// A closed breaker, or the [`BreakerConfig::validate`] error.
    pub fn new(cfg: BreakerConfig) -> Result<Breaker, String> {
        cfg.validate()?;
        Ok(Breaker {
            window: Outcomes::new(cfg.window),
            cfg,
            state: BreakerState::Closed,
            last_open: Duration::ZERO,
            probes_in_flight: 0,
            probe_successes: 0,
        })
    }

    /// The configuration this breaker runs.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The current state: what the hot path reads.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a call go to the upstream at `now`? An open breaker whose time is up moves to
    /// half-open here and returns that transition alongside the (probe) admission.
    pub fn admit(&mut self, now: Nanos) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if let BreakerState::Open { until } = self.state {
            if now < until {
                let retry_after = Duration::from_nanos(until.0.saturating_sub(now.0));
                return (Admission::Rejected { retry_after }, None);
            }
            transition = Some(self.enter(BreakerState::HalfOpen, Cause::OpenElapsed));
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
        let admission = match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::HalfOpen if self.probes_in_flight < self.cfg.half_open_probes => {
                self.probes_in_flight = self.probes_in_flight.saturating_add(1);
                Admission::Probe
            }
            BreakerState::HalfOpen | BreakerState::Open { .. } => Admission::Rejected {
                retry_after: self.cfg.open_duration,
            },
        };
        (admission, transition)
    }

    /// Reports the outcome of a call admitted earlier. Closed: counted in the window, and may
    /// trip the breaker. Half-open: a probe result, which may close or reopen it (a result
    /// arriving with no probe in flight is a straggler from before the trip and is ignored).
    /// Open: ignored.
    pub fn record(&mut self, now: Nanos, success: bool, latency: Duration) -> Option<Transition> {
        let failed = !success;
        let slow = latency > self.cfg.slow_call_threshold;
        match self.state {
            BreakerState::Closed => {
                self.window.record(now, failed, slow);
                let sums = self.window.sums();
                if sums.calls < u64::from(self.cfg.min_calls) {
                    return None;
                }
                let cause = if reaches(sums.failures, sums.calls, self.cfg.failure_rate_threshold) {
                    Cause::FailureRate {
                        percent: percent(sums.failures, sums.calls),
                    }
                } else if reaches(sums.slow, sums.calls, self.cfg.slow_call_rate_threshold) {
                    Cause::SlowCallRate {
                        percent: percent(sums.slow, sums.calls),
                    }
                } else {
                    return None;
                };
                Some(self.open(now, cause))
            }
            BreakerState::HalfOpen if self.probes_in_flight > 0 => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if failed || slow {
                    return Some(self.open(now, Cause::ProbeFailed));
                }
                self.probe_successes = self.probe_successes.saturating_add(1);
                if self.probe_successes < self.cfg.half_open_successes_to_close {
                    return None;
                }
                self.window.reset();
                self.last_open = Duration::ZERO;
                self.probes_in_flight = 0;
                self.probe_successes = 0;
                Some(self.enter(BreakerState::Closed, Cause::ProbesSucceeded))
            }
            BreakerState::HalfOpen | BreakerState::Open { .. } => None,
        }
    }

    /// Gives back a probe slot taken by [`Breaker::admit`] whose call ended without an
    /// outcome (the caller went away): the slot frees and nothing is counted.
    pub fn abandon_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// Opens from `now` for `open_duration`, or for double the last open period (capped)
    /// when this trip follows another without the breaker closing in between.
    fn open(&mut self, now: Nanos, cause: Cause) -> Transition {
        let duration = if self.last_open.is_zero() {
            self.cfg.open_duration
        } else {
            self.last_open.saturating_mul(2)
        }
        .min(self.cfg.max_open_duration);
        self.last_open = duration;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        let until = now.saturating_add(duration);
        self.enter(BreakerState::Open { until }, cause)
    }

    fn enter(&mut self, to: BreakerState, cause: Cause) -> Transition {
        let from = self.state;
        self.state = to;
        Transition { from, to, cause }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
