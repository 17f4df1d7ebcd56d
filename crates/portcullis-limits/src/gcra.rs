//! GCRA (generic cell rate algorithm): a token bucket kept as a single instant.
//!
//! State: `w0 = TAT`, the theoretical arrival time in ns (0 = fresh). Parameters:
//! emission interval `T = period / quota` (ns, rounded down) and capacity `C = burst * T`.
//!
//! Transition for a request of cost `c` at `now` (all u64, saturating):
//! ```text
//! if c > burst                 -> CostExceedsLimit, TAT unchanged
//! base    = max(TAT, now)
//! new_tat = base + c * T
//! wait    = (new_tat - C) - now          (0 if negative)
//! wait == 0           -> Allowed,      TAT = new_tat
//! wait <= max_delay   -> Delayed(wait), TAT = new_tat   (slot reserved)
//! otherwise           -> Denied, retry_after = wait, TAT unchanged
//! remaining   = (now + C - max(TAT', now)) / T
//! reset_after = max(TAT', now) - now
//! ```
//! From fresh, `burst` unit requests pass at once; then one more every `T`. The state is
//! fresh-equivalent once `TAT <= now`.

use std::time::Duration;

use crate::decision::{Decision, Outcome};
use crate::limit::{Limit, Request, State};

/// The state-changing half of the transition: what happens to a TAT, without building the
/// headers. `DirectGcra` runs only this inside its CAS loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The TAT to store (unchanged when refused).
    pub(crate) tat: u64,
    pub(crate) outcome: Outcome,
    /// For `Denied`: the wait that would have been needed.
    pub(crate) retry_after: Option<u64>,
}

#[inline]
pub(crate) fn step(limit: &Limit, tat: u64, req: Request) -> Step {
    let now = req.now.0;
    let interval = limit.interval_ns();
    if req.cost > limit.burst() {
        return Step {
            tat,
            outcome: Outcome::CostExceedsLimit,
            retry_after: None,
        };
    }
    let new_tat = tat
        .max(now)
        .saturating_add(u64::from(req.cost).saturating_mul(interval));
    let wait = new_tat
        .saturating_sub(limit.capacity_ns())
        .saturating_sub(now);
    if wait == 0 {
        Step {
            tat: new_tat,
            outcome: Outcome::Allowed,
            retry_after: None,
        }
    } else if wait <= req.max_delay.0 {
        let outcome = Outcome::Delayed(Duration::from_nanos(wait));
        Step {
            tat: new_tat,
            outcome,
            retry_after: None,
        }
    } else {
        Step {
            tat,
            outcome: Outcome::Denied,
            retry_after: Some(wait),
        }
    }
}

/// The headers half: the decision for a step taken at `now`.
#[inline]
pub(crate) fn decision(limit: &Limit, step: Step, now: u64) -> Decision {
    let effective = step.tat.max(now);
    let free = now
        .saturating_add(limit.capacity_ns())
        .saturating_sub(effective);
    let remaining = u32::try_from(limit.div_interval(free)).unwrap_or(u32::MAX);
    Decision {
        outcome: step.outcome,
        limit: limit.burst(),
        remaining: remaining.min(limit.burst()),
        reset_after: Duration::from_nanos(effective - now),
        retry_after: step.retry_after.map(Duration::from_nanos),
    }
}

#[inline]
pub(crate) fn transition(limit: &Limit, state: State, req: Request) -> (State, Decision) {
    let step = step(limit, state.w0, req);
    (
        State {
            w0: step.tat,
            w1: state.w1,
        },
        decision(limit, step, req.now.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Nanos;

    const SEC: u64 = 1_000_000_000;

    fn run(limit: &Limit, state: &mut State, req: Request) -> Decision {
        let (next, d) = limit.transition(*state, req);
        *state = next;
        d
    }

    #[test]
    fn burst_then_denied_then_refill_at_exact_interval() {
        // 10 per second => T = 100 ms; burst 3.
        let l = Limit::gcra(10, Duration::from_secs(1), 3).unwrap();
        let t0 = 5 * SEC;
        let mut s = State::default();
        for expect_remaining in [2, 1, 0] {
            let d = run(&l, &mut s, Request::new(Nanos(t0)));
            assert_eq!(d.outcome, Outcome::Allowed);
            assert_eq!(d.remaining, expect_remaining);
            assert_eq!(d.limit, 3);
        }
        assert_eq!(s.w0, t0 + 300_000_000);
        let d = run(&l, &mut s, Request::new(Nanos(t0)));
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(d.reset_after, Duration::from_millis(300));
        assert_eq!(d.remaining, 0);
        // One nanosecond early: still denied, retry after exactly 1 ns.
        let d = run(&l, &mut s, Request::new(Nanos(t0 + 100_000_000 - 1)));
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.retry_after, Some(Duration::from_nanos(1)));
        // Exactly on time: allowed, and the next one is denied again.
        let d = run(&l, &mut s, Request::new(Nanos(t0 + 100_000_000)));
        assert_eq!(d.outcome, Outcome::Allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, None);
        let d = run(&l, &mut s, Request::new(Nanos(t0 + 100_000_000)));
        assert_eq!(d.outcome, Outcome::Denied);
        // Full reset after reset_after: a full burst again.
        let later = t0 + 100_000_000 + d.reset_after.as_nanos() as u64;
        let d = run(&l, &mut s, Request::new(Nanos(later)));
        assert_eq!((d.outcome, d.remaining), (Outcome::Allowed, 2));
        // Idle long: never more than burst.
        let d = run(&l, &mut s, Request::new(Nanos(later + 100 * SEC)).cost(0));
        assert_eq!((d.remaining, d.reset_after), (3, Duration::ZERO));
    }

    #[test]
    fn cost_above_one_and_above_burst() {
        let l = Limit::gcra(10, Duration::from_secs(1), 5).unwrap();
        let mut s = State::default();
        let d = run(&l, &mut s, Request::new(Nanos(SEC)).cost(4));
        assert_eq!((d.outcome, d.remaining), (Outcome::Allowed, 1));
        let d = run(&l, &mut s, Request::new(Nanos(SEC)).cost(2));
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        let before = s;
        let d = run(&l, &mut s, Request::new(Nanos(SEC)).cost(6));
        assert_eq!(d.outcome, Outcome::CostExceedsLimit);
        assert_eq!(d.retry_after, None);
        assert_eq!(s, before);
        let d = run(&l, &mut s, Request::new(Nanos(u64::MAX)).cost(u32::MAX));
        assert_eq!(d.outcome, Outcome::CostExceedsLimit);
    }

    #[test]
    fn delay_mode_reserves_slots_up_to_max_delay() {
        // T = 100 ms, burst 1, may wait up to 250 ms.
        let l = Limit::gcra(10, Duration::from_secs(1), 1).unwrap();
        let mut s = State::default();
        let req = Request::new(Nanos(SEC)).max_delay(Duration::from_millis(250));
        assert_eq!(run(&l, &mut s, req).outcome, Outcome::Allowed);
        let d = run(&l, &mut s, req);
        assert_eq!(d.outcome, Outcome::Delayed(Duration::from_millis(100)));
        assert_eq!(d.remaining, 0);
        assert_eq!(
            run(&l, &mut s, req).outcome,
            Outcome::Delayed(Duration::from_millis(200))
        );
        // The next would wait 300 ms > 250 ms: denied, nothing reserved.
        let d = run(&l, &mut s, req);
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.retry_after, Some(Duration::from_millis(300)));
        // Exactly max_delay is still accepted.
        let exact = req.max_delay(Duration::from_millis(300));
        assert_eq!(
            run(&l, &mut s, exact).outcome,
            Outcome::Delayed(Duration::from_millis(300))
        );
    }

    #[test]
    fn huge_times_saturate_without_panic() {
        let l = Limit::gcra(1, Duration::from_secs(3600), 1000).unwrap();
        let mut s = State {
            w0: u64::MAX - 5,
            w1: 0,
        };
        let d = run(
            &l,
            &mut s,
            Request::new(Nanos(u64::MAX)).max_delay(Duration::MAX),
        );
        assert!(d.remaining <= 1000);
        let d = run(&l, &mut s, Request::new(Nanos(0)));
        assert_eq!(d.outcome, Outcome::Denied);
    }

    #[test]
    fn long_run_rate_is_exact_with_integer_interval() {
        // 1000 per second: 10 s of requests every 1 ms admit burst + 10 000 (no drift).
        let l = Limit::gcra(1000, Duration::from_secs(1), 5).unwrap();
        let mut s = State::default();
        let mut admitted = 0u32;
        for i in 0..=10_000u64 {
            for _ in 0..3 {
                if run(&l, &mut s, Request::new(Nanos(SEC + i * 1_000_000))).is_allowed() {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 5 + 10_000);
    }
}
