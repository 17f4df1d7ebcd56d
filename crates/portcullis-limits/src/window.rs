//! Fixed window and sliding window counter: per-key counts of windows aligned on
//! multiples of `period` since the caller's epoch (window index `w = now / period`).
//!
//! Fixed window — state `w0` = index of the latest window holding reservations, `w1` = its
//! count. Every window before `w0` (from the time it was written) counts as full: a request
//! that did not fit was queued into a later window (delay mode), and later requests queue
//! behind it, FIFO, even a cheaper one that would still fit.
//! ```text
//! (target, count) = w0 >= w ? (w0, w1) : (w, 0)
//! if count + c > quota: (target, count) = (target + 1, 0)
//! wait = target * period - now   (0 when target == w)
//! wait == 0 -> Allowed; wait <= max_delay -> Delayed(wait); state = (target, count + c)
//! otherwise -> Denied, retry_after = wait, state unchanged
//! ```
//!
//! Sliding window counter — state `w0` = window index, `w1` = `prev << 32 | cur`. At elapsed
//! `e = now % period` into window `w` the estimate of the sliding window's count is
//! `prev * (period - e) / period + cur`, compared exactly (u128, no rounding):
//! ```text
//! allowed iff prev * (period - e) + (cur + c) * period <= quota * period
//! ```
//! Over the limit, the earliest instant it fits (assuming no other traffic) is computed in
//! closed form: within the current window as `prev`'s weight decays, or else in the next
//! window where `cur` becomes `prev`. Delay mode reserves a slot only within the current
//! window (the count goes to `cur`); a request that would need the next window is denied
//! with that `retry_after`. The approximation assumes the previous window's requests were
//! spread evenly; any sliding interval of `period` still admits at most `2 * quota`, and
//! each fixed window at most `quota`.

use std::time::Duration;

use crate::decision::{Decision, Outcome};
use crate::limit::{Limit, Request, State};
use crate::time::Nanos;

fn clamp_u32(v: u128) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(crate) fn fixed_transition(limit: &Limit, state: State, req: Request) -> (State, Decision) {
    let now = req.now.0;
    let period = limit.period_ns();
    let quota = u64::from(limit.quota());
    let w = now / period;
    let decide = |s: State, outcome: Outcome, retry_after: Option<u64>| {
        let remaining = if s.w0 > w {
            0
        } else if s.w0 == w {
            quota.saturating_sub(s.w1)
        } else {
            quota
        };
        let fresh = fixed_fresh_at(limit, s).0;
        Decision {
            outcome,
            limit: limit.quota(),
            remaining: clamp_u32(u128::from(remaining)),
            reset_after: Duration::from_nanos(fresh.saturating_sub(now)),
            retry_after: retry_after.map(Duration::from_nanos),
        }
    };
    let cost = u64::from(req.cost);
    if cost > quota {
        return (state, decide(state, Outcome::CostExceedsLimit, None));
    }
    let (mut target, mut count) = if state.w0 >= w {
        (state.w0, state.w1)
    } else {
        (w, 0)
    };
    if count.saturating_add(cost) > quota {
        target = target.saturating_add(1);
        count = 0;
    }
    let wait = target.saturating_mul(period).saturating_sub(now);
    let next = State {
        w0: target,
        w1: count + cost,
    };
    if wait == 0 {
        (next, decide(next, Outcome::Allowed, None))
    } else if wait <= req.max_delay.0 {
        (
            next,
            decide(next, Outcome::Delayed(Duration::from_nanos(wait)), None),
        )
    } else {
        (state, decide(state, Outcome::Denied, Some(wait)))
    }
}

pub(crate) fn fixed_fresh_at(limit: &Limit, state: State) -> Nanos {
    if state.w1 == 0 {
        Nanos::ZERO
    } else {
        Nanos(state.w0.saturating_add(1).saturating_mul(limit.period_ns()))
    }
}

pub(crate) fn fixed_weight(limit: &Limit, state: State, now: Nanos) -> u64 {
    let w = now.0 / limit.period_ns();
    if state.w0 < w || state.w1 == 0 {
        0
    } else {
        (state.w0 - w)
            .saturating_mul(u64::from(limit.quota()))
            .saturating_add(state.w1)
    }
}

/// `(prev, cur)` as seen from window `w`.
fn sliding_counts(state: State, w: u64) -> (u64, u64) {
    let (prev, cur) = (state.w1 >> 32, state.w1 & u64::from(u32::MAX));
    if state.w0 == w {
        (prev, cur)
    } else if state.w0.checked_add(1) == Some(w) {
        (cur, 0)
    } else {
        (0, 0)
    }
}

pub(crate) fn sliding_transition(limit: &Limit, state: State, req: Request) -> (State, Decision) {
    let now = req.now.0;
    let period = u128::from(limit.period_ns());
    let quota = u128::from(limit.quota());
    let w = now / limit.period_ns();
    let e = u128::from(now % limit.period_ns());
    let (prev, cur) = sliding_counts(state, w);
    let (prev, cur) = (u128::from(prev), u128::from(cur));
    let decide = |cur_after: u128, outcome: Outcome, retry_after: Option<u128>| {
        let used = prev * (period - e) + cur_after * period;
        let remaining = (quota * period).saturating_sub(used) / period;
        let reset = if cur_after > 0 {
            2 * period - e
        } else if prev > 0 {
            period - e
        } else {
            0
        };
        Decision {
            outcome,
            limit: limit.quota(),
            remaining: clamp_u32(remaining),
            reset_after: Duration::from_nanos(u64::try_from(reset).unwrap_or(u64::MAX)),
            retry_after: retry_after
                .map(|r| Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX))),
        }
    };
    let cost = u128::from(req.cost);
    if cost > quota {
        return (state, decide(cur, Outcome::CostExceedsLimit, None));
    }
    let store = |cur_after: u128| State {
        w0: w,
        w1: (prev << 32 | cur_after) as u64,
    };
    if prev * (period - e) + (cur + cost) * period <= quota * period {
        return (
            store(cur + cost),
            decide(cur + cost, Outcome::Allowed, None),
        );
    }
    if cur + cost <= quota {
        // prev > 0 here (else it would fit). Wait until prev's weight has decayed enough:
        // smallest d with prev * (period - e - d) <= (quota - cur - cost) * period.
        let wait = (period - e) - (quota - cur - cost) * period / prev;
        if wait <= u128::from(req.max_delay.0) {
            let outcome = Outcome::Delayed(Duration::from_nanos(wait as u64));
            return (store(cur + cost), decide(cur + cost, outcome, None));
        }
        return (state, decide(cur, Outcome::Denied, Some(wait)));
    }
    // Needs the next window, where cur becomes prev (cur > 0 since cost <= quota):
    // smallest e' with cur * (period - e') <= (quota - cost) * period.
    let e_next = period - (quota - cost) * period / cur;
    (
        state,
        decide(cur, Outcome::Denied, Some((period - e) + e_next)),
    )
}

pub(crate) fn sliding_fresh_at(limit: &Limit, state: State) -> Nanos {
    let (prev, cur) = sliding_counts(state, state.w0);
    let windows = if cur > 0 {
        2
    } else if prev > 0 {
        1
    } else {
        return Nanos::ZERO;
    };
    Nanos(
        state
            .w0
            .saturating_add(windows)
            .saturating_mul(limit.period_ns()),
    )
}

pub(crate) fn sliding_weight(limit: &Limit, state: State, now: Nanos) -> u64 {
    let period = u128::from(limit.period_ns());
    let e = u128::from(now.0 % limit.period_ns());
    let (prev, cur) = sliding_counts(state, now.0 / limit.period_ns());
    let weight = u128::from(prev) * (period - e) + u128::from(cur) * period;
    u64::try_from(weight).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
