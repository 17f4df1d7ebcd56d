//! `AdaptiveLimit`: a concurrency limit per upstream that follows measured latency
//! (gradient style), with time passed in and no probing phase.
//!
//! The hot path is the same as [`ConcurrencyLimit`](crate::ConcurrencyLimit): an atomic
//! in-flight counter compared against an atomic limit. Each finished request records its
//! latency (and whether it was an explicit overload signal: a timeout or a 503) in a small
//! mutex-guarded aggregate; when a `window` has passed, the next finish closes the window and
//! recomputes the limit:
//!
//! - `short` is the mean latency of the window's non-dropped samples.
//! - `baseline` is a long-term latency that moves **down quickly** (half the gap per window)
//!   and **up slowly** (2 % of the gap per window) while `short` is within `TOLERANCE` of
//!   it. Above that it is frozen (the rise is taken for our own queue), unless concurrency
//!   fell since the previous window and latency did not follow: then the upstream itself got
//!   slower and the baseline moves up by half the gap. Without this, any equilibrium with a
//!   queue lets the baseline creep after latency and the limit drifts to `max`.
//! - `gradient = clamp(TOLERANCE × baseline / short, 0.5, 1.0)`; `TOLERANCE` (1.2) keeps
//!   ordinary jitter from reading as queueing.
//! - `target = limit × gradient + √limit` (the square root is headroom so the limit can
//!   discover extra capacity), and `limit += 0.2 × (target − limit)`, clamped to `[min, max]`.
//!   If the window never used half the limit, the limit does not grow (no growth without
//!   demand).
//! - Any drop in the window instead multiplies the limit by 0.75 (also clamped to `min`).
//!
//! # Why it never drops to the minimum to measure
//!
//! Schemes that need the true minimum RTT (Envoy's adaptive concurrency filter) periodically
//! pin the limit to a floor so the queue drains and the unloaded latency can be sampled;
//! traffic above the floor is shed during every probe. Here nothing requires a clean
//! measurement:
//!
//! - If the limit is above what the upstream can serve, requests queue and `short` rises
//!   above `baseline`, so the gradient itself shrinks the limit (at most ~10 % per window)
//!   until the queue drains; the uncongested latency is then observed again under real
//!   traffic and the baseline, which adapts down quickly, picks it up. Draining the queue is
//!   a side effect of ordinary control, not a separate phase.
//! - If the upstream genuinely became slower without queueing, cutting the limit does not
//!   lower latency, so the baseline follows it up within a few windows and the gradient
//!   returns to 1; nothing has to be re-measured from scratch.
//!
//! So absent explicit overload signals the limit only ever moves by bounded, smoothed steps
//! (a window never takes it below ~90 % of its previous value), and the only sharp cut is
//! the multiplicative decrease on drops, which is a response to real overload.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Nanos;

/// Noise allowance: `short` may exceed `baseline` by this factor before the limit shrinks.
const TOLERANCE: f64 = 1.2;
/// Gradient bounds: a window shrinks the target by at most half.
const MIN_GRADIENT: f64 = 0.5;
const MAX_GRADIENT: f64 = 1.0;
/// Weight of a new target in the smoothed limit.
const SMOOTHING: f64 = 0.2;
/// Baseline EWMA weights when the window is faster / slower than the baseline.
const BASELINE_DOWN: f64 = 0.5;
const BASELINE_UP: f64 = 0.02;
/// Concurrency counts as cut when below this fraction of the previous window's.
const UNRESPONSIVE: f64 = 0.97;
/// Multiplicative decrease on an explicit overload signal.
const BACKOFF: f64 = 0.75;

/// Settings of an [`AdaptiveLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveConfig {
    /// The limit before any measurement.
    pub initial: u32,
    /// Floor of the limit (at least 1, so traffic always produces samples to recover from).
    pub min: u32,
    /// Ceiling of the limit.
    pub max: u32,
    /// How often the limit is recomputed (measured in the caller's `now`).
    pub window: Duration,
}

/// A concurrency limit that adapts to measured latency; see the module docs.
#[derive(Debug)]
pub struct AdaptiveLimit {
    min: u32,
    max: u32,
    window: u64,
    limit: AtomicU32,
    in_flight: AtomicU32,
    state: Mutex<Aggregate>,
}

/// Window aggregation and the controller's memory; touched only by `finish` and readers
/// that ask for it explicitly.
#[derive(Debug)]
struct Aggregate {
    window_start: Option<Nanos>,
    latency_sum: u64,
    samples: u64,
    drops: u64,
    peak_in_flight: u32,
    baseline: Option<f64>,
    limit: f64,
    /// The previous window's mean latency and peak in flight.
    prev: Option<(f64, u32)>,
}

/// One slot of an [`AdaptiveLimit`]. Give it back with [`finish`](AdaptivePermit::finish) to
/// record a sample; dropping it without `finish` releases the slot and records nothing.
#[derive(Debug)]
pub struct AdaptivePermit {
    owner: Arc<AdaptiveLimit>,
}

impl AdaptiveLimit {
    /// Validates `config` (`1 <= min <= initial <= max`, `window > 0`).
    pub fn new(config: AdaptiveConfig) -> Result<Arc<AdaptiveLimit>, String> {
        let AdaptiveConfig {
            initial,
            min,
            max,
            window,
        } = config;
        if min == 0 {
            return Err("adaptive limit: min must be at least 1".to_string());
        }
        if !(min <= initial && initial <= max) {
            return Err(format!(
                "adaptive limit: need min <= initial <= max, got {min} <= {initial} <= {max}"
            ));
        }
        let window = Nanos::from_duration(window).0;
        if window == 0 {
            return Err("adaptive limit: window must be positive".to_string());
        }
        Ok(Arc::new(AdaptiveLimit {
            min,
            max,
            window,
            limit: AtomicU32::new(initial),
            in_flight: AtomicU32::new(0),
            state: Mutex::new(Aggregate {
                window_start: None,
                latency_sum: 0,
                samples: 0,
                drops: 0,
                peak_in_flight: 0,
                baseline: None,
                limit: f64::from(initial),
                prev: None,
            }),
        }))
    }

    /// A permit if fewer than `limit()` are in flight; `None` means refuse (or queue).
    pub fn try_acquire(self: &Arc<Self>) -> Option<AdaptivePermit> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| AdaptivePermit {
                owner: Arc::clone(self),
            })
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Permits currently held.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Slots free now (0 while the limit is below what is in flight).
    pub fn available(&self) -> u32 {
        self.limit().saturating_sub(self.in_flight())
    }

    /// The long-term latency baseline, once a window with samples has closed (for metrics).
    pub fn baseline(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.baseline.map(|b| Duration::from_nanos(b as u64))
    }

    /// Adds one sample; closes the window first if it has passed. Returns the new limit when
    /// a window was closed.
    fn record(&self, now: Nanos, latency: Duration, dropped: bool, in_flight: u32) -> Option<u32> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = None;
        match state.window_start {
            None => state.window_start = Some(now),
            Some(start) if now.0.saturating_sub(start.0) >= self.window => {
                let limit = state.close_window(self.min, self.max);
                self.limit.store(limit, Ordering::Relaxed);
                state.window_start = Some(now);
                changed = Some(limit);
            }
            Some(_) => {}
        }
        if dropped {
            state.drops = state.drops.saturating_add(1);
        } else {
            state.latency_sum = state
                .latency_sum
                .saturating_add(Nanos::from_duration(latency).0);
            state.samples = state.samples.saturating_add(1);
        }
        state.peak_in_flight = state.peak_in_flight.max(in_flight);
        changed
    }
}

impl Aggregate {
    /// The recompute: updates baseline and limit from the window, resets it, returns the
    /// limit to publish.
    fn close_window(&mut self, min: u32, max: u32) -> u32 {
        let (min_f, max_f) = (f64::from(min), f64::from(max));
        let short =
            (self.samples > 0).then(|| (self.latency_sum as f64 / self.samples as f64).max(1.0));
        if let Some(short) = short {
            // Latency that did not fall when concurrency did is not our queue: the upstream
            // got slower, so the baseline follows it up quickly.
            let unresponsive = self.prev.is_some_and(|(prev_short, prev_peak)| {
                let concurrency = f64::from(self.peak_in_flight) / f64::from(prev_peak.max(1));
                concurrency < UNRESPONSIVE && short / prev_short > (1.0 + concurrency) / 2.0
            });
            self.baseline = Some(match self.baseline {
                None => short,
                Some(b) if short < b => b + BASELINE_DOWN * (short - b),
                Some(b) if unresponsive => b + BASELINE_DOWN * (short - b),
                Some(b) if short <= TOLERANCE * b => b + BASELINE_UP * (short - b),
                Some(b) => b,
            });
            self.prev = Some((short, self.peak_in_flight));
        }
        let limit = self.limit;
        let next = if self.drops > 0 {
            limit * BACKOFF
        } else if let (Some(short), Some(baseline)) = (short, self.baseline) {
            let gradient = (TOLERANCE * baseline / short).clamp(MIN_GRADIENT, MAX_GRADIENT);
            let mut target = limit * gradient + limit.sqrt();
            if f64::from(self.peak_in_flight) * 2.0 < limit {
                target = target.min(limit);
            }
            limit + SMOOTHING * (target - limit)
        } else {
            limit
        };
        let next = next.clamp(min_f, max_f);
        self.limit = next;
        self.latency_sum = 0;
        self.samples = 0;
        self.drops = 0;
        self.peak_in_flight = 0;
        (self.limit.floor() as u32).clamp(min, max)
    }
}

impl AdaptivePermit {
    /// Ends the request: records `latency` observed at `now` (`dropped`: it was a timeout, a
    /// 503 or another explicit overload signal) and releases the slot. Returns the new limit
    /// if this sample closed a window.
    pub fn finish(self, now: Nanos, latency: Duration, dropped: bool) -> Option<u32> {
        let in_flight = self.owner.in_flight();
        self.owner.record(now, latency, dropped, in_flight)
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    fn limit(initial: u32, min: u32, max: u32) -> Arc<AdaptiveLimit> {
        AdaptiveLimit::new(AdaptiveConfig {
            initial,
            min,
            max,
            window: WINDOW,
        })
        .unwrap()
    }

    /// Runs window `k`: takes every permit the limit allows, then finishes them all inside
    /// the window with `latency(in_flight)`; `drops` of them are overload signals. The first
    /// finish closes window `k - 1`. Returns the limit after that close.
    fn run_window(
        l: &Arc<AdaptiveLimit>,
        k: u64,
        drops: usize,
        latency: impl Fn(u32) -> Duration,
    ) -> u32 {
        let permits: Vec<_> = std::iter::from_fn(|| l.try_acquire())
            .take(100_000)
            .collect();
        let n = l.in_flight();
        let now = Nanos(k * Nanos::from_duration(WINDOW).0 + 1);
        for (i, p) in permits.into_iter().enumerate() {
            p.finish(now, latency(n), i < drops);
        }
        l.limit()
    }

    /// An upstream that serves `capacity` at once in `base`; beyond that requests queue.
    fn queueing(base_ms: u64, capacity: u32) -> impl Fn(u32) -> Duration {
        move |n| Duration::from_millis(base_ms) * n.max(capacity) / capacity
    }

    #[test]
    fn config_is_validated() {
        let cfg = AdaptiveConfig {
            initial: 10,
            min: 1,
            max: 100,
            window: WINDOW,
        };
        assert!(AdaptiveLimit::new(cfg).is_ok());
        for bad in [
            AdaptiveConfig { min: 0, ..cfg },
            AdaptiveConfig { initial: 0, ..cfg },
            AdaptiveConfig {
                initial: 101,
                ..cfg
            },
            AdaptiveConfig { min: 20, ..cfg },
            AdaptiveConfig {
                window: Duration::ZERO,
                ..cfg
            },
        ] {
            assert!(AdaptiveLimit::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permits_cap_in_flight_and_drop_without_finish_records_nothing() {
        let l = limit(2, 1, 10);
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        assert_eq!((l.in_flight(), l.available()), (2, 0));
        drop(a);
        assert_eq!(l.in_flight(), 1);
        assert_eq!(b.finish(Nanos(1), Duration::from_millis(5), false), None);
        assert_eq!(l.in_flight(), 0);
        // Dropped permits in later windows leave no trace: no window closes.
        for _ in 0..5 {
            drop(l.try_acquire().unwrap());
        }
        assert_eq!(l.baseline(), None);
        assert_eq!(l.limit(), 2);
    }

    #[test]
    fn threads_never_hold_more_than_the_limit() {
        let l = limit(3, 1, 3);
        let peak = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (l, peak) = (l.clone(), peak.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        if let Some(p) = l.try_acquire() {
                            peak.fetch_max(l.in_flight(), Ordering::Relaxed);
                            p.finish(Nanos(i * 1_000 + t), Duration::from_millis(1), false);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn steady_latency_grows_toward_max() {
        let l = limit(10, 1, 200);
        let mut prev = l.limit();
        for k in 0..200 {
            let now = run_window(&l, k, 0, |_| Duration::from_millis(10));
            assert!(now >= prev, "window {k}: {prev} -> {now}");
            prev = now;
        }
        assert_eq!(l.limit(), 200);
        assert_eq!(l.baseline(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn no_growth_without_demand() {
        let l = limit(10, 1, 200);
        for k in 0..50 {
            let p = l.try_acquire().unwrap();
            let now = Nanos(k * Nanos::from_duration(WINDOW).0);
            p.finish(now, Duration::from_millis(10), false);
        }
        assert_eq!(l.limit(), 10);
    }

    #[test]
    fn rising_latency_lowers_the_limit_and_it_recovers() {
        let l = limit(100, 1, 200);
        let mut k = 0;
        for _ in 0..100 {
            run_window(&l, k, 0, queueing(10, 1_000));
            k += 1;
        }
        let before = l.limit();
        assert_eq!(before, 200);
        // The upstream's capacity falls to 50: latency rises with our queue, the limit falls.
        for _ in 0..30 {
            run_window(&l, k, 0, queueing(10, 50));
            k += 1;
        }
        let low = l.limit();
        assert!(low < 100, "{before} -> {low}");
        assert!(l.baseline().unwrap() < Duration::from_millis(11));
        // Capacity returns: latency falls back and the limit grows back.
        for _ in 0..150 {
            run_window(&l, k, 0, queueing(10, 1_000));
            k += 1;
        }
        assert!(l.limit() >= 190, "recovered only to {}", l.limit());
    }

    #[test]
    fn uniformly_slower_upstream_is_followed_without_an_outage() {
        // Threefold latency that does not fall when the limit does is not our queue: after a
        // short dip the baseline follows it and the limit grows back.
        let l = limit(100, 1, 200);
        let mut k = 0;
        for _ in 0..100 {
            run_window(&l, k, 0, |_| Duration::from_millis(10));
            k += 1;
        }
        let mut lowest = l.limit();
        for _ in 0..200 {
            lowest = lowest.min(run_window(&l, k, 0, |_| Duration::from_millis(30)));
            k += 1;
        }
        assert!((120..200).contains(&lowest), "dipped to {lowest}");
        assert_eq!(l.limit(), 200);
    }

    #[test]
    fn queueing_upstream_settles_near_its_capacity() {
        let l = limit(10, 1, 1_000);
        for k in 0..600 {
            run_window(&l, k, 0, queueing(10, 100));
        }
        let settled = l.limit();
        assert!((80..=160).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn never_below_min() {
        let l = limit(50, 5, 100);
        for k in 0..100 {
            let ms = 10 * (k + 1);
            run_window(&l, k, (k % 3) as usize, move |_| Duration::from_millis(ms));
            assert!(l.limit() >= 5);
        }
        assert_eq!(l.limit(), 5);
    }

    #[test]
    fn drops_reduce_multiplicatively() {
        let ms10 = |_| Duration::from_millis(10);
        let l = limit(100, 1, 100);
        run_window(&l, 0, 0, ms10);
        let before = run_window(&l, 1, 1, ms10);
        let after = run_window(&l, 2, 0, ms10); // closes the window with one drop
        assert_eq!((before, after), (100, 75));
        // A window of nothing but drops takes the same single multiplicative step.
        let before = run_window(&l, 3, usize::MAX, ms10);
        let after = run_window(&l, 4, 0, ms10);
        assert!(after.abs_diff(before * 3 / 4) <= 1, "{before} -> {after}");
    }

    #[test]
    fn long_steady_run_has_no_probing_dips() {
        // Jittery latency from an upstream of capacity 100, many windows: the limit never
        // falls below 80 % of its previous value and never goes near the minimum.
        let l = limit(20, 1, 1_000);
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut prev = l.limit();
        for k in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let jitter = 80 + seed % 41; // 80 %..=120 %
            let base = queueing(10, 100);
            let now = run_window(&l, k, 0, move |n| base(n) * jitter as u32 / 100);
            assert!(now * 5 >= prev * 4, "window {k}: {prev} -> {now}");
            if k > 100 {
                assert!(now >= 50, "window {k}: dipped to {now}");
            }
            prev = now;
        }
    }

    #[test]
    fn idle_gaps_and_time_going_backwards_are_harmless() {
        let l = limit(10, 1, 100);
        run_window(&l, 0, 0, |_| Duration::from_millis(10));
        // A sample from "before" the window start only joins the open window.
        l.try_acquire()
            .unwrap()
            .finish(Nanos::ZERO, Duration::from_millis(10), false);
        // A long idle gap closes the window once, with the samples it had.
        run_window(&l, 1_000_000, 0, |_| Duration::from_millis(10));
        assert!(l.limit() >= 10);
        assert_eq!(l.in_flight(), 0);
    }
}
