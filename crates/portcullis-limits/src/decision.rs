//! `Decision` and `Outcome`: the one answer every limit gives, shaped for the RateLimit and
//! Retry-After headers.

use std::time::Duration;

/// What the caller must do with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Proceed now; the cost has been consumed.
    Allowed,
    /// The request's slot is reserved (the cost is consumed): sleep this long, then proceed.
    /// Only returned when the request allowed a delay (`Request::max_delay`) at least this long.
    Delayed(Duration),
    /// Refuse; nothing was consumed. `Decision::retry_after` says when the same request
    /// would be allowed if no other traffic arrives.
    Denied,
    /// Refuse: the request's cost exceeds the limit's capacity, so no wait can ever admit it
    /// (`retry_after` is `None`). Nothing was consumed.
    CostExceedsLimit,
}

/// The answer of a limit to one request.
///
/// Header mapping (draft-ietf-httpapi-ratelimit-headers):
/// `RateLimit-Policy: "name";q={limit};w={Limit::policy_window secs}` and
/// `RateLimit: "name";r={remaining};t={reset_after, seconds rounded up}`;
/// on refusal `Retry-After: {retry_after, seconds rounded up}` ([`Decision::retry_after_secs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Proceed, wait then proceed, or refuse (a type, not a bool, so a delay is never
    /// mistaken for a plain allow).
    pub outcome: Outcome,
    /// The quota: requests of cost 1 available at once from a fresh state (GCRA burst or
    /// window quota).
    pub limit: u32,
    /// Requests of cost 1 that would be allowed right now, after this decision took effect.
    pub remaining: u32,
    /// Time until the key is back to a fresh state (full quota) if no more requests arrive.
    pub reset_after: Duration,
    /// For `Outcome::Denied`: how long until this same request would be allowed without
    /// delay, assuming no other traffic. `None` otherwise (and for `CostExceedsLimit`).
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// True for `Allowed` and `Delayed` (the request will proceed, maybe after a wait).
    pub fn is_allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed | Outcome::Delayed(_))
    }

    /// The wait before proceeding: zero unless `Delayed`.
    pub fn delay(&self) -> Duration {
        match self.outcome {
            Outcome::Delayed(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// `retry_after` in whole seconds rounded up, as `Retry-After` wants it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(ceil_secs)
    }

    /// `reset_after` in whole seconds rounded up, for the `t` parameter of `RateLimit`.
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        let d = Decision {
            outcome: Outcome::Denied,
            limit: 1,
            remaining: 0,
            reset_after: Duration::from_millis(1_001),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(d.reset_after_secs(), 2);
        assert_eq!(d.retry_after_secs(), Some(2));
        assert!(!d.is_allowed());
        assert_eq!(d.delay(), Duration::ZERO);
        let delayed = Decision {
            outcome: Outcome::Delayed(Duration::from_nanos(7)),
            ..d
        };
        assert!(delayed.is_allowed());
        assert_eq!(delayed.delay(), Duration::from_nanos(7));
    }
}
