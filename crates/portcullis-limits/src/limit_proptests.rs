//! Property tests over all algorithms: no panics on any input, headers in range, and
//! `retry_after` exact (waiting it admits the request, 1 ns less does not).

use super::*;
use crate::decision::Outcome;
use proptest::prelude::*;

fn any_limit() -> impl Strategy<Value = Limit> {
    (0u8..3, 1u32..50, 1u64..5_000_000_000, 1u32..50).prop_filter_map(
        "valid limit",
        |(alg, quota, period, burst)| {
            let period = Duration::from_nanos(period);
            match alg {
                0 => Limit::gcra(quota, period, burst).ok(),
                1 => Limit::fixed_window(quota, period).ok(),
                _ => Limit::sliding_window(quota, period).ok(),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_on_arbitrary_input(limit in any_limit(), w0: u64, w1: u64, now: u64,
                                       cost: u32, max_delay: u64) {
        let req = Request { now: Nanos(now), cost, max_delay: Nanos(max_delay) };
        let (_, d) = limit.transition(State { w0, w1 }, req);
        prop_assert!(d.remaining <= d.limit);
        let _ = limit.weight(State { w0, w1 }, Nanos(now));
        let _ = limit.fresh_at(State { w0, w1 });
    }

    #[test]
    fn sequences_keep_invariants(limit in any_limit(),
                                 steps in prop::collection::vec((0u64..50_000_000, 0u32..4, any::<bool>()), 1..60)) {
        let mut state = State::default();
        let mut now = 1_000_000_000u64;
        for (dt, cost, delay) in steps {
            now += dt;
            let mut req = Request::new(Nanos(now)).cost(cost);
            if delay {
                req = req.max_delay(Duration::from_millis(20));
            }
            let (next, d) = limit.transition(state, req);
            prop_assert!(d.remaining <= d.limit);
            match d.outcome {
                Outcome::Denied => {
                    prop_assert_eq!(next, state);
                    let r = d.retry_after.map(|r| r.as_nanos() as u64).unwrap_or(0);
                    prop_assert!(r > 0);
                    let plain = Request::new(Nanos(now + r)).cost(cost);
                    prop_assert!(limit.transition(state, plain).1.outcome == Outcome::Allowed);
                    let early = Request::new(Nanos(now + r - 1)).cost(cost);
                    prop_assert!(limit.transition(state, early).1.outcome != Outcome::Allowed);
                }
                Outcome::CostExceedsLimit => {
                    prop_assert!(cost > limit.burst());
                    prop_assert_eq!(next, state);
                }
                Outcome::Delayed(wait) => {
                    prop_assert!(delay && wait <= Duration::from_millis(20) && !wait.is_zero());
                }
                Outcome::Allowed => {}
            }
            // Forgetting a weight-0 state changes nothing.
            if limit.weight(next, Nanos(now)) == 0 {
                let probe = Request::new(Nanos(now)).cost(1);
                prop_assert_eq!(limit.transition(next, probe).1,
                                limit.transition(State::default(), probe).1);
            }
            state = next;
        }
    }
}
