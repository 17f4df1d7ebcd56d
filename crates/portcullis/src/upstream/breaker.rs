//! `CircuitBreaker`: the gateway's handle on one `portcullis_limits::Breaker` (per route ×
//! upstream, or per endpoint). The hot path reads a published gate (one atomic load) and takes
//! the breaker's lock only to record an outcome or when the gate says the state may change.
//! Every transition is logged with its cause and counted.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use portcullis_limits::{Admission, Breaker, BreakerState, Nanos};

use super::outcome::Outcome;
use crate::config::schema::{CircuitBreakerConfig, FailureKind};
use crate::config::validate::breaker_config;

/// Gate value of a closed breaker.
const GATE_CLOSED: u64 = 0;
/// Gate value while half-open: every admission goes through the lock.
const GATE_HALF_OPEN: u64 = 1;
// Any other value: open until that many nanoseconds after the epoch (at least 2).

/// Transition counts of one breaker (admin API and metrics).
#[derive(Debug, Default)]
pub struct BreakerStats {
    pub opened: AtomicU64,
    pub half_opened: AtomicU64,
    pub closed: AtomicU64,
    /// Requests refused because the breaker was open (or half-open with every probe out).
    pub rejected: AtomicU64,
    /// Transitions by `[from][to]`, in `state_index` order.
    transitions: [[AtomicU64; 3]; 3],
}

impl BreakerStats {
    /// Transitions from `from` to `to` since start.
    pub fn transitions(&self, from: BreakerState, to: BreakerState) -> u64 {
        self.transitions
            .get(state_index(from))
            .and_then(|row| row.get(state_index(to)))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count_transition(&self, from: BreakerState, to: BreakerState) {
        if let Some(c) = self
            .transitions
            .get(state_index(from))
            .and_then(|row| row.get(state_index(to)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The transitions a breaker makes (`(from, to)`, any `until`): trip, wait out, probe fails,
/// probes succeed.
pub const TRANSITIONS: [(BreakerState, BreakerState); 4] = [
    (BreakerState::Closed, BreakerState::Open { until: Nanos(0) }),
    (
        BreakerState::Open { until: Nanos(0) },
        BreakerState::HalfOpen,
    ),
    (
        BreakerState::HalfOpen,
        BreakerState::Open { until: Nanos(0) },
    ),
    (BreakerState::HalfOpen, BreakerState::Closed),
];

/// 0 closed, 1 open, 2 half-open: the state's number in metrics.
pub fn state_index(state: BreakerState) -> usize {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open { .. } => 1,
        BreakerState::HalfOpen => 2,
    }
}

/// One circuit breaker and what counts as a failure for it.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// What the breaker guards, for logs: `route "r" → upstream "u"` or `endpoint 1.2.3.4:80`.
    label: Arc<str>,
    epoch: crate::clock::Epoch,
    gate: AtomicU64,
    /// An operator's override (`Forced`), read before the gate.
    forced: AtomicU8,
    inner: Mutex<Breaker>,
    failure_on: Vec<FailureKind>,
    failure_statuses: Vec<u16>,
    failure_grpc_statuses: Vec<u32>,
    pub stats: BreakerStats,
}

impl CircuitBreaker {
    /// A closed breaker; the error is the configuration problem (validation reports it first).
    pub fn new(cfg: &CircuitBreakerConfig, label: impl Into<Arc<str>>) -> Result<Self, String> {
        Ok(Self {
            label: label.into(),
            epoch: crate::clock::Epoch::start(),
            gate: AtomicU64::new(GATE_CLOSED),
            forced: AtomicU8::new(Forced::None as u8),
            inner: Mutex::new(Breaker::new(breaker_config(cfg))?),
            failure_on: cfg.failure_on.clone(),
            failure_statuses: cfg.failure_statuses.clone(),
            failure_grpc_statuses: cfg.failure_grpc_statuses.clone(),
            stats: BreakerStats::default(),
        })
    }

    /// The current state (for the admin API and metrics).
    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// Whether calls would be refused now without asking (open and not yet due to half-open).
    /// Cheap: one atomic load and, when open, a clock read.
    pub fn is_open(&self) -> bool {
        match self.forced() {
            Forced::Open => return true,
            Forced::Closed => return false,
            Forced::None => {}
        }
        let gate = self.gate.load(Ordering::Acquire);
        gate > GATE_HALF_OPEN && self.now().0 < gate
    }

    /// The time left until an open breaker goes half-open; `None` when not open.
    pub fn retry_after(&self) -> Option<Duration> {
        let gate = self.gate.load(Ordering::Acquire);
        let now = self.now().0;
        (gate > GATE_HALF_OPEN && now < gate).then(|| Duration::from_nanos(gate - now))
    }

    /// Holds the breaker open or closed whatever the outcomes say (`Forced::None` lets it
    /// decide again, from the state it was in). Logged at warn.
    pub fn force(&self, forced: Forced) {
        let before = self.forced.swap(forced as u8, Ordering::AcqRel);
        if before != forced as u8 {
            tracing::warn!(breaker = %self.label, forced = forced.as_str(), "circuit breaker override changed");
        }
    }

    /// The operator's override in force.
    pub fn forced(&self) -> Forced {
        Forced::from_u8(self.forced.load(Ordering::Acquire))
    }

    /// Asks to send one call. `Err(retry_after)`: refused, fail fast.
    pub fn admit(self: &Arc<Self>) -> Result<BreakerTicket, Duration> {
        match self.forced() {
            Forced::None => {}
            // Outcomes are still recorded, so the breaker's own state stays current.
            Forced::Closed => return Ok(BreakerTicket::new(self, false)),
            Forced::Open => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(FORCED_OPEN_RETRY_AFTER);
            }
        }
        let gate = self.gate.load(Ordering::Acquire);
        if gate == GATE_CLOSED {
            return Ok(BreakerTicket::new(self, false));
        }
        let now = self.now();
        if gate > GATE_HALF_OPEN && now.0 < gate {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Duration::from_nanos(gate - now.0));
        }
        let mut breaker = self.lock();
        let (admission, transition) = breaker.admit(now);
        if let Some(t) = transition {
            self.publish(&breaker, t);
        }
        drop(breaker);
        match admission {
            Admission::Allowed => Ok(BreakerTicket::new(self, false)),
            Admission::Probe => Ok(BreakerTicket::new(self, true)),
            Admission::Rejected { retry_after } => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(retry_after)
            }
        }
    }

    /// Whether `outcome` is a failure for this breaker.
    pub fn is_failure(&self, outcome: &Outcome) -> bool {
        outcome.matches(
            &self.failure_on,
            &self.failure_statuses,
            &self.failure_grpc_statuses,
        )
    }

    fn record(&self, outcome: &Outcome, latency: Duration) {
        let failed = self.is_failure(outcome);
        let now = self.now();
        let mut breaker = self.lock();
        if let Some(t) = breaker.record(now, !failed, latency) {
            self.publish(&breaker, t);
        }
    }

    fn abandon_probe(&self) {
        self.lock().abandon_probe();
    }

    /// Publishes the breaker's new state to the gate, then logs and counts the transition.
    fn publish(&self, breaker: &Breaker, t: portcullis_limits::Transition) {
        let gate = match breaker.state() {
            BreakerState::Closed => GATE_CLOSED,
            BreakerState::HalfOpen => GATE_HALF_OPEN,
            BreakerState::Open { until } => until.0.max(GATE_HALF_OPEN + 1),
        };
        self.gate.store(gate, Ordering::Release);
        let counter = match t.to {
            BreakerState::Closed => &self.stats.closed,
            BreakerState::HalfOpen => &self.stats.half_opened,
            BreakerState::Open { .. } => &self.stats.opened,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats.count_transition(t.from, t.to);
        let from = state_name(t.from);
        let to = state_name(t.to);
        let cause = format!("{:?}", t.cause);
        match t.to {
            BreakerState::Open { until } => {
                let open_for = Duration::from_nanos(until.0.saturating_sub(self.now().0));
                tracing::warn!(breaker = %self.label, from, to, cause, ?open_for, "circuit breaker opened");
            }
            _ => {
                tracing::warn!(breaker = %self.label, from, to, cause, "circuit breaker state changed")
            }
        }
    }

    fn now(&self) -> Nanos {
        self.epoch.now()
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // Every update of the breaker is complete before the lock is released: recover.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `Retry-After` of a breaker an operator holds open: when it closes is not known.
const FORCED_OPEN_RETRY_AFTER: Duration = Duration::from_secs(30);

/// An operator's override of a breaker (admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Forced {
    /// The breaker decides from the outcomes.
    None = 0,
    /// Every call is refused (503 `circuit_open`).
    Open = 1,
    /// Every call goes through.
    Closed = 2,
}

impl Forced {
    fn from_u8(v: u8) -> Forced {
        match v {
            1 => Forced::Open,
            2 => Forced::Closed,
            _ => Forced::None,
        }
    }

    /// `none`, `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::None => "none",
            Forced::Open => "open",
            Forced::Closed => "closed",
        }
    }
}

/// `closed`, `open` or `half_open`: the state's name in logs and metrics.
pub fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// An admitted call. Report its outcome with `record`; dropped without it (the request was
/// abandoned), a half-open probe slot is given back and nothing is counted.
#[derive(Debug)]
pub struct BreakerTicket {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
}

impl BreakerTicket {
    fn new(breaker: &Arc<CircuitBreaker>, probe: bool) -> Self {
        Self {
            breaker: Arc::clone(breaker),
            probe,
        }
    }

    /// Records the call's outcome and the time its response head took.
    pub fn record(self, outcome: &Outcome, latency: Duration) {
        self.breaker.record(outcome, latency);
        std::mem::forget(self);
    }
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::outcome::GatewayError;

    fn config() -> CircuitBreakerConfig {
        serde_yaml_ng::from_str(
            "{ window: { calls: 4 }, min_calls: 4, failure_rate: 50, open_duration: 10s, \
               failure_statuses: [429] }",
        )
        .unwrap()
    }

    const OK: Outcome = Outcome::Response {
        status: 200,
        grpc_status: None,
    };
    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn trips_fails_fast_probes_and_closes() {
        let b = Arc::new(CircuitBreaker::new(&config(), "test").unwrap());
        for outcome in [OK, OK, Outcome::Failed(GatewayError::Reset)] {
            b.admit().unwrap().record(&outcome, FAST);
        }
        assert!(!b.is_open());
        let too_many = Outcome::Response {
            status: 429,
            grpc_status: None,
        };
        b.admit().unwrap().record(&too_many, FAST);
        assert!(b.is_open());
        let retry_after = b.admit().unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.admit().unwrap_err(), Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!b.is_open());
        let probe = b.admit().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "one probe at a time");
        drop(probe); // abandoned: the slot comes back
        b.admit().unwrap().record(&OK, FAST);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.stats.opened.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats.closed.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats.rejected.load(Ordering::Relaxed), 3);
        let [trip, wait, probe_failed, probes_ok] =
            TRANSITIONS.map(|(from, to)| b.stats.transitions(from, to));
        assert_eq!((trip, wait, probe_failed, probes_ok), (1, 1, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_operator_can_hold_it_open_or_closed() {
        let b = Arc::new(CircuitBreaker::new(&config(), "test").unwrap());
        b.force(Forced::Open);
        assert!(b.is_open());
        assert_eq!(b.admit().unwrap_err(), FORCED_OPEN_RETRY_AFTER);
        b.force(Forced::None);
        assert!(b.admit().is_ok());
        for _ in 0..4 {
            b.admit()
                .unwrap()
                .record(&Outcome::Failed(GatewayError::Reset), FAST);
        }
        assert!(b.is_open(), "tripped");
        b.force(Forced::Closed);
        assert!(!b.is_open());
        assert!(b.admit().is_ok(), "held closed although tripped");
        b.force(Forced::None);
        assert!(b.admit().is_err(), "back to its own state: open");
    }
}
