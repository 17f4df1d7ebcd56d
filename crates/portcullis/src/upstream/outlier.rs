//! Passive outlier detection: endpoints whose real traffic fails are ejected from their
//! upstream's rotation for a while, then come back by themselves.
//!
//! Configured by `upstreams[].outlier_detection` ([`OutlierDetectionConfig`]); off when absent,
//! and then [`Upstream::record_outcome`] is a single branch. Every attempt's [`Outcome`] is
//! recorded against the endpoint that served it:
//!
//! - **Success** = a response head with a status below 500 (4xx included: the endpoint
//!   answered). It resets both streaks below.
//! - **5xx** = a response with status 500-599. It adds one to the endpoint's 5xx streak and
//!   resets its gateway-error streak (the endpoint is reachable, it answers).
//! - **Gateway error** = no response head: connect failure, reset, timeout or protocol error
//!   (`Outcome::Failed`). It adds one to the gateway-error streak **and** to the 5xx streak,
//!   since the client is answered a 5xx for it (as Envoy does when it does not split local
//!   errors). Unlike Envoy, upstream 502/503/504 responses are 5xx here, not gateway errors.
//!   Failures that say nothing about the endpoint (the client's body too large, the client
//!   gone) are not recorded at all.
//!
//! **Ejection rules.** `consecutive_5xx` (cause `consecutive_5xx`) and
//! `consecutive_gateway_errors` (cause `consecutive_gateway_errors`): the endpoint is ejected
//! when its streak reaches the threshold; 0 turns a rule off. A gateway error that completes
//! both streaks at once is reported as `consecutive_gateway_errors`. A streak that reaches its
//! threshold starts again from 0 whether or not the ejection was allowed, so a refused
//! ejection is retried after another full streak. `success_rate` (cause `success_rate`):
//! every `interval`, the endpoints not ejected that had at least `min_requests` requests in
//! that interval are judged, if there are at least `min_hosts` of them; with `mean` and
//! `stdev` (population standard deviation) of their success rates (successes / requests),
//! those strictly below `mean - stdev_factor × stdev` are ejected, lowest rate first. A
//! uniform population (stdev 0) ejects nobody. The interval counters of every endpoint start
//! again from 0 at each evaluation.
//!
//! **Limits.** With `n` endpoints (all of the upstream's, in rotation or not), at most
//! `clamp(floor(n × max_ejection_percent / 100), 1, n - 1)` are ejected at once when `n ≥ 2`,
//! and none when `n ≤ 1`: an ejection over the limit is skipped (logged, counted in
//! [`Upstream::ejections_skipped`]). An ejection is also skipped when it would leave no
//! endpoint in rotation (healthy and not ejected), so ejections never empty an upstream. A
//! `max_ejection_percent` over 100 counts as 100.
//!
//! **Duration.** Each endpoint has an ejection count ([`Endpoint::ejections`]): an ejection
//! adds one to it (except once `base_ejection_time × count` already reached
//! `max_ejection_time`), then lasts `min(base_ejection_time × count, max_ejection_time)`. At
//! each `interval` evaluation, an endpoint that spent the whole interval since the previous
//! evaluation in rotation as far as outlier detection goes (neither ejected nor returning
//! during it) has its count lowered by one; so after `count` such intervals its next ejection
//! is a first one again.
//!
//! **Return.** An endpoint leaves rotation at once when ejected (the balancer is rebuilt
//! over the endpoints healthy *and* not ejected), and comes back when its time is up, without
//! traffic: one task per upstream (started by [`Upstream::spawn_tasks`], stopped by its
//! token) sleeps until the earlier of the next return and the next `interval` evaluation, so
//! a return happens when due, not rounded up to an interval. Evaluations run every
//! `interval` from the task's start.
//! Both streaks and the interval counters are reset at ejection and at return, so a returning
//! endpoint starts afresh (results of requests that were in flight while it was out count
//! toward nothing). Ejection is independent of active health checks: an endpoint is in
//! rotation when both agree.
//!
//! **Visibility.** Every ejection is logged with `warn` and every return with `info`, with
//! `upstream`, `endpoint`, `cause`, `ejections` (the count) and `duration`. Counters:
//! [`Upstream::ejections_total`] per cause, [`Upstream::ejections_skipped`],
//! [`Upstream::ejected_endpoints`], and per endpoint [`Endpoint::is_ejected`].
//!
//! **Cost.** Recording a success is one relaxed `fetch_add` (only with `success_rate`) and
//! two relaxed loads; failures add a few more relaxed atomics; only an ejection takes the
//! detector's lock.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outcome::Outcome;
use super::{Endpoint, Upstream};
use crate::config::schema::OutlierDetectionConfig;

/// Why an endpoint was ejected (the `cause` field of the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectionCause {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
    SuccessRate,
}

impl EjectionCause {
    pub const ALL: [EjectionCause; 3] = [
        EjectionCause::Consecutive5xx,
        EjectionCause::ConsecutiveGatewayErrors,
        EjectionCause::SuccessRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EjectionCause::Consecutive5xx => "consecutive_5xx",
            EjectionCause::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            EjectionCause::SuccessRate => "success_rate",
        }
    }

    fn index(self) -> usize {
        match self {
            EjectionCause::Consecutive5xx => 0,
            EjectionCause::ConsecutiveGatewayErrors => 1,
            EjectionCause::SuccessRate => 2,
        }
    }
}

impl fmt::Display for EjectionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request in `EndpointOutlier::interval_counts` (the high half; successes are the low).
const ONE_REQUEST: u64 = 1 << 32;

/// The outlier state of one endpoint. Written on the hot path with relaxed atomics only;
/// `ejected`, `ejections` and `ejected_in_interval` change under the detector's lock.
#[derive(Debug, Default)]
pub(crate) struct EndpointOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway_errors: AtomicU32,
    /// Requests (high 32 bits) and successes (low 32 bits) in the current interval; only
    /// counted when the success-rate rule is on.
    interval_counts: AtomicU64,
    ejected: AtomicBool,
    /// The ejection count that multiplies `base_ejection_time` (it decays, see the module doc).
    ejections: AtomicU32,
    /// Ejected or returned since the last interval evaluation (no decay for this interval).
    ejected_in_interval: AtomicBool,
}

impl EndpointOutlier {
    fn reset_counts(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway_errors.store(0, Ordering::Relaxed);
        self.interval_counts.store(0, Ordering::Relaxed);
    }
}

impl Endpoint {
    /// Whether outlier detection has this endpoint out of rotation right now.
    pub fn is_ejected(&self) -> bool {
        self.outlier.ejected.load(Ordering::Relaxed)
    }

    /// The endpoint's ejection count: the multiplier of `base_ejection_time` for its current
    /// or last ejection; it decays by one per interval spent in rotation (0: never ejected, or
    /// long recovered).
    pub fn ejections(&self) -> u32 {
        self.outlier.ejections.load(Ordering::Relaxed)
    }
}

impl Upstream {
    /// Records the outcome of one attempt to `endpoint` for outlier detection; may eject it.
    /// A single branch when outlier detection is off.
    pub fn record_outcome(&self, endpoint: &Arc<Endpoint>, outcome: &Outcome) {
        if let Some(detector) = &self.outlier {
            detector.record(self, endpoint, outcome);
        }
    }

    /// Ejections so far for `cause` (0 when outlier detection is off).
    pub fn ejections_total(&self, cause: EjectionCause) -> u64 {
        self.outlier.as_ref().map_or(0, |d| {
            d.totals
                .get(cause.index())
                .map_or(0, |c| c.load(Ordering::Relaxed))
        })
    }

    /// Ejections skipped because of `max_ejection_percent` or because they would have left
    /// no endpoint in rotation.
    pub fn ejections_skipped(&self) -> u64 {
        self.outlier
            .as_ref()
            .map_or(0, |d| d.skipped.load(Ordering::Relaxed))
    }

    /// How many of the upstream's endpoints are ejected right now.
    pub fn ejected_endpoints(&self) -> usize {
        self.endpoints
            .load()
            .iter()
            .filter(|e| e.is_ejected())
            .count()
    }
}

/// The settings, checked once.
#[derive(Debug, Clone)]
struct Settings {
    consecutive_5xx: u32,
    consecutive_gateway_errors: u32,
    success_rate: Option<SuccessRate>,
    interval: Duration,
    base_ejection_time: Duration,
    max_ejection_time: Duration,
    max_ejection_percent: u32,
}

#[derive(Debug, Clone)]
struct SuccessRate {
    min_hosts: usize,
    min_requests: u64,
    stdev_factor: f64,
}

/// An endpoint out of rotation and when it comes back.
#[derive(Debug)]
struct Ejection {
    endpoint: Arc<Endpoint>,
    cause: EjectionCause,
    duration: Duration,
    until: Instant,
}

/// The outlier detector of one upstream.
#[derive(Debug)]
pub(crate) struct Detector {
    settings: Settings,
    /// The endpoints ejected now. Lock order: this lock, then the upstream's state lock.
    ejected: Mutex<Vec<Ejection>>,
    /// Wakes the timer task when an ejection may have moved its next wake-up earlier.
    wake: Arc<Notify>,
    totals: [AtomicU64; 3],
    skipped: AtomicU64,
}

impl Detector {
    pub(crate) fn new(config: &OutlierDetectionConfig) -> Self {
        Self {
            settings: Settings {
                consecutive_5xx: config.consecutive_5xx,
                consecutive_gateway_errors: config.consecutive_gateway_errors,
                success_rate: config.success_rate.as_ref().map(|s| SuccessRate {
                    min_hosts: usize::try_from(s.min_hosts).unwrap_or(usize::MAX).max(1),
                    min_requests: u64::from(s.min_requests.max(1)),
                    stdev_factor: s.stdev_factor,
                }),
                // The timer task needs a non-zero period.
                interval: config.interval.max(Duration::from_millis(1)),
                base_ejection_time: config.base_ejection_time,
                max_ejection_time: config.max_ejection_time,
                max_ejection_percent: config.max_ejection_percent.min(100),
            },
            ejected: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            totals: Default::default(),
            skipped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Ejection>> {
        // Every update is a push or a retain: the list stays consistent after a panic.
        self.ejected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, upstream: &Upstream, endpoint: &Arc<Endpoint>, outcome: &Outcome) {
        let s = &self.settings;
        let stats = &endpoint.outlier;
        let (success, gateway_error) = match outcome {
            Outcome::Response { status, .. } => (*status < 500, false),
            Outcome::Failed(_) => (false, true),
        };
        if s.success_rate.is_some() {
            let add = if success {
                ONE_REQUEST | 1
            } else {
                ONE_REQUEST
            };
            stats.interval_counts.fetch_add(add, Ordering::Relaxed);
        }
        if success {
            reset(&stats.consecutive_5xx);
            reset(&stats.consecutive_gateway_errors);
            return;
        }
        let gateway_streak = if gateway_error {
            streak(
                &stats.consecutive_gateway_errors,
                s.consecutive_gateway_errors,
            )
        } else {
            reset(&stats.consecutive_gateway_errors);
            false
        };
        let streak_5xx = streak(&stats.consecutive_5xx, s.consecutive_5xx);
        let cause = if gateway_streak {
            EjectionCause::ConsecutiveGatewayErrors
        } else if streak_5xx {
            EjectionCause::Consecutive5xx
        } else {
            return;
        };
        self.eject(upstream, endpoint, cause, Instant::now());
    }

    /// Ejects `endpoint` unless it is already out, no longer the upstream's, or the limits
    /// forbid it; returns whether it was ejected.
    fn eject(
        &self,
        upstream: &Upstream,
        endpoint: &Arc<Endpoint>,
        cause: EjectionCause,
        now: Instant,
    ) -> bool {
        let mut ejected = self.lock();
        let stats = &endpoint.outlier;
        if stats.ejected.load(Ordering::Relaxed) {
            return false;
        }
        let endpoints = upstream.endpoints.load();
        if !endpoints.iter().any(|e| Arc::ptr_eq(e, endpoint)) {
            return false;
        }
        let total = endpoints.len();
        let out = endpoints.iter().filter(|e| e.is_ejected()).count();
        let allowed = max_ejected(total, self.settings.max_ejection_percent);
        let others_in_rotation = endpoints
            .iter()
            .filter(|e| !Arc::ptr_eq(e, endpoint) && e.is_healthy() && !e.is_ejected())
            .count();
        if out >= allowed || others_in_rotation == 0 {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            let reason = if out >= allowed {
                "max_ejection_percent reached"
            } else {
                "it is the last endpoint in rotation"
            };
            tracing::info!(
                upstream = %upstream.name, endpoint = %endpoint.addr, %cause,
                ejected = out, endpoints = total, "outlier not ejected: {reason}"
            );
            return false;
        }
        let count = self.next_count(stats.ejections.load(Ordering::Relaxed));
        let duration = self.duration(count);
        stats.ejections.store(count, Ordering::Relaxed);
        stats.ejected_in_interval.store(true, Ordering::Relaxed);
        stats.reset_counts();
        stats.ejected.store(true, Ordering::Relaxed);
        ejected.push(Ejection {
            endpoint: Arc::clone(endpoint),
            cause,
            duration,
            until: now + duration,
        });
        if let Some(total) = self.totals.get(cause.index()) {
            total.fetch_add(1, Ordering::Relaxed);
        }
        upstream.rebuild_balancer();
        drop(ejected);
        self.wake.notify_one();
        tracing::warn!(
            upstream = %upstream.name, endpoint = %endpoint.addr, %cause,
            ejections = count, ?duration, "outlier ejected"
        );
        true
    }

    /// The ejection count after one more ejection.
    fn next_count(&self, count: u32) -> u32 {
        let s = &self.settings;
        if count > 0 && s.base_ejection_time.saturating_mul(count) >= s.max_ejection_time {
            count
        } else {
            count.saturating_add(1)
        }
    }

    /// How long an ejection with this count lasts.
    fn duration(&self, count: u32) -> Duration {
        let s = &self.settings;
        s.base_ejection_time
            .saturating_mul(count)
            .min(s.max_ejection_time)
    }

    /// When the next ejected endpoint comes back.
    fn next_return(&self) -> Option<Instant> {
        self.lock().iter().map(|e| e.until).min()
    }

    /// Brings back the endpoints whose time is up at `now`.
    fn return_due(&self, upstream: &Upstream, now: Instant) {
        let mut ejected = self.lock();
        let (due, kept): (Vec<Ejection>, Vec<Ejection>) =
            ejected.drain(..).partition(|e| e.until <= now);
        *ejected = kept;
        if due.is_empty() {
            return;
        }
        for e in &due {
            let stats = &e.endpoint.outlier;
            stats.reset_counts();
            stats.ejected_in_interval.store(true, Ordering::Relaxed);
            stats.ejected.store(false, Ordering::Relaxed);
        }
        upstream.rebuild_balancer();
        drop(ejected);
        for e in due {
            tracing::info!(
                upstream = %upstream.name, endpoint = %e.endpoint.addr, cause = %e.cause,
                ejections = e.endpoint.ejections(), duration = ?e.duration,
                "outlier back in rotation"
            );
        }
    }

    /// The `interval` evaluation: decays ejection counts, then applies the success-rate rule.
    fn evaluate(&self, upstream: &Upstream, now: Instant) {
        let endpoints = upstream.endpoints.load_full();
        let mut judged: Vec<(&Arc<Endpoint>, f64)> = Vec::new();
        {
            let _ejected = self.lock();
            for endpoint in endpoints.iter() {
                let stats = &endpoint.outlier;
                let counts = stats.interval_counts.swap(0, Ordering::Relaxed);
                let moved = stats.ejected_in_interval.swap(false, Ordering::Relaxed);
                let ejected = stats.ejected.load(Ordering::Relaxed);
                let count = stats.ejections.load(Ordering::Relaxed);
                if !ejected && !moved && count > 0 {
                    stats.ejections.store(count - 1, Ordering::Relaxed);
                }
                let requests = counts >> 32;
                let successes = counts & u64::from(u32::MAX);
                if let Some(rule) = &self.settings.success_rate {
                    if !ejected && requests >= rule.min_requests {
                        // Both fit in 32 bits: the conversions are exact.
                        judged.push((endpoint, successes as f64 / requests as f64));
                    }
                }
            }
        }
        let Some(rule) = &self.settings.success_rate else {
            return;
        };
        for endpoint in success_rate_outliers(&mut judged, rule) {
            self.eject(upstream, endpoint, EjectionCause::SuccessRate, now);
        }
    }
}

/// The judged endpoints below `mean - stdev_factor × stdev`, lowest rate first; none when
/// fewer than `min_hosts` were judged.
fn success_rate_outliers<'a>(
    judged: &mut [(&'a Arc<Endpoint>, f64)],
    rule: &SuccessRate,
) -> Vec<&'a Arc<Endpoint>> {
    if judged.len() < rule.min_hosts || judged.is_empty() {
        return Vec::new();
    }
    let n = judged.len() as f64;
    let mean = judged.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = judged.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - rule.stdev_factor * variance.sqrt();
    judged.sort_by(|a, b| a.1.total_cmp(&b.1));
    judged
        .iter()
        .filter(|(_, rate)| *rate < threshold)
        .map(|(e, _)| *e)
        .collect()
}

/// How many of `total` endpoints may be ejected at once.
fn max_ejected(total: usize, percent: u32) -> usize {
    if total < 2 {
        return 0;
    }
    let percent = usize::try_from(percent.min(100)).unwrap_or(100);
    (total.saturating_mul(percent) / 100).clamp(1, total - 1)
}

/// Counts one more in a streak; true exactly when it reaches `threshold` (0: rule off), and
/// then the streak starts again.
fn streak(counter: &AtomicU32, threshold: u32) -> bool {
    if threshold == 0 {
        return false;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if n == threshold {
        counter.store(0, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// Ends a streak; a load first so the common case writes nothing.
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Starts the upstream's outlier timer task (returns and interval evaluations) if outlier
/// detection is on; it stops when `stop` is cancelled or the upstream is dropped.
pub(super) fn spawn(upstream: &Arc<Upstream>, stop: CancellationToken) {
    if let Some(detector) = &upstream.outlier {
        tokio::spawn(run(
            Arc::downgrade(upstream),
            Arc::clone(&detector.wake),
            detector.settings.interval,
            stop,
        ));
    }
}

async fn run(
    upstream: Weak<Upstream>,
    wake: Arc<Notify>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut next_evaluation = Instant::now() + interval;
    loop {
        let wake_at = {
            let Some(upstream) = upstream.upgrade() else {
                return;
            };
            let Some(detector) = &upstream.outlier else {
                return;
            };
            detector
                .next_return()
                .map_or(next_evaluation, |t| t.min(next_evaluation))
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => continue,
            () = tokio::time::sleep_until(wake_at) => {}
        }
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        let Some(detector) = &upstream.outlier else {
            return;
        };
        let now = Instant::now();
        detector.return_due(&upstream, now);
        if now >= next_evaluation {
            detector.evaluate(&upstream, now);
            next_evaluation += interval;
            if next_evaluation <= now {
                next_evaluation = now + interval;
            }
        }
    }
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod tests;
