//! Tests of the fixed and sliding window transitions with explicit times.

use super::*;

const SEC: u64 = 1_000_000_000;

fn run(limit: &Limit, state: &mut State, req: Request) -> Decision {
    let (next, d) = limit.transition(*state, req);
    *state = next;
    d
}

fn at(ns: u64) -> Request {
    Request::new(Nanos(ns))
}

#[test]
fn fixed_window_exact_boundaries() {
    let l = Limit::fixed_window(3, Duration::from_secs(10)).unwrap();
    let mut s = State::default();
    let t = 20 * SEC + 4 * SEC; // window 2, 6 s before its end
    for r in [2, 1, 0] {
        let d = run(&l, &mut s, at(t));
        assert_eq!((d.outcome, d.remaining, d.limit), (Outcome::Allowed, r, 3));
        assert_eq!(d.reset_after, Duration::from_secs(6));
    }
    let d = run(&l, &mut s, at(30 * SEC - 1));
    assert_eq!(d.outcome, Outcome::Denied);
    assert_eq!(d.retry_after, Some(Duration::from_nanos(1)));
    assert_eq!(d.reset_after, Duration::from_nanos(1));
    let d = run(&l, &mut s, at(30 * SEC));
    assert_eq!((d.outcome, d.remaining), (Outcome::Allowed, 2));
    assert_eq!(d.reset_after, Duration::from_secs(10));
    // Cost: 2 more fit, then a cost of 2 does not; cost 4 never does.
    assert_eq!(run(&l, &mut s, at(31 * SEC).cost(2)).remaining, 0);
    let d = run(&l, &mut s, at(31 * SEC).cost(2));
    assert_eq!(d.outcome, Outcome::Denied);
    assert_eq!(d.retry_after, Some(Duration::from_secs(9)));
    let d = run(&l, &mut s, at(31 * SEC).cost(4));
    assert_eq!(
        (d.outcome, d.retry_after),
        (Outcome::CostExceedsLimit, None)
    );
    // An idle key long after is fresh.
    let d = run(&l, &mut s, at(1000 * SEC).cost(0));
    assert_eq!((d.remaining, d.reset_after), (3, Duration::ZERO));
}

#[test]
fn fixed_window_delay_queues_into_next_windows() {
    let l = Limit::fixed_window(2, Duration::from_secs(1)).unwrap();
    let mut s = State::default();
    let req = at(5 * SEC + 600_000_000).max_delay(Duration::from_millis(1500));
    assert_eq!(run(&l, &mut s, req).outcome, Outcome::Allowed);
    assert_eq!(run(&l, &mut s, req).outcome, Outcome::Allowed);
    let d = run(&l, &mut s, req);
    assert_eq!(d.outcome, Outcome::Delayed(Duration::from_millis(400)));
    assert_eq!(d.remaining, 0);
    assert_eq!(d.reset_after, Duration::from_millis(1400));
    assert_eq!(
        run(&l, &mut s, req).outcome,
        Outcome::Delayed(Duration::from_millis(400))
    );
    assert_eq!(
        run(&l, &mut s, req).outcome,
        Outcome::Delayed(Duration::from_millis(1400))
    );
    assert_eq!(
        run(&l, &mut s, req).outcome,
        Outcome::Delayed(Duration::from_millis(1400))
    );
    let d = run(&l, &mut s, req);
    assert_eq!(d.outcome, Outcome::Denied);
    assert_eq!(d.retry_after, Some(Duration::from_millis(2400)));
}

#[test]
fn sliding_window_weights_previous_window() {
    let l = Limit::sliding_window(10, Duration::from_secs(10)).unwrap();
    let mut s = State::default();
    // 10 requests at the end of window 0.
    for _ in 0..10 {
        assert!(run(&l, &mut s, at(9 * SEC)).is_allowed());
    }
    let d = run(&l, &mut s, at(9 * SEC));
    assert_eq!(d.outcome, Outcome::Denied);
    // Next window needs prev weight 10 * (10 - e) / 10 <= 9, i.e. e >= 1 s.
    assert_eq!(d.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(d.reset_after, Duration::from_secs(11));
    assert_eq!(run(&l, &mut s, at(11 * SEC - 1)).outcome, Outcome::Denied);
    let d = run(&l, &mut s, at(11 * SEC));
    assert_eq!((d.outcome, d.remaining), (Outcome::Allowed, 0));
    // At e = 5 s, prev weighs 5, cur = 1: remaining 4.
    let d = run(&l, &mut s, at(15 * SEC).cost(0));
    assert_eq!(d.remaining, 4);
    assert_eq!(d.reset_after, Duration::from_secs(15));
    // cost 5 needs prev weight <= 4, i.e. e >= 6 s.
    let d = run(&l, &mut s, at(15 * SEC).cost(5));
    assert_eq!(d.outcome, Outcome::Denied);
    assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
    let d = run(
        &l,
        &mut s,
        at(15 * SEC).cost(5).max_delay(Duration::from_secs(1)),
    );
    assert_eq!(d.outcome, Outcome::Delayed(Duration::from_secs(1)));
    assert_eq!(d.remaining, 0);
    // cost 11 never fits.
    assert_eq!(
        run(&l, &mut s, at(15 * SEC).cost(11)).outcome,
        Outcome::CostExceedsLimit
    );
    // Two windows later everything is forgotten.
    let d = run(&l, &mut s, at(30 * SEC).cost(0));
    assert_eq!((d.remaining, d.reset_after), (10, Duration::ZERO));
}

#[test]
fn sliding_window_retry_after_is_exact() {
    // Whatever the state, waiting retry_after admits the request and 1 ns less does not.
    let l = Limit::sliding_window(7, Duration::from_millis(1000)).unwrap();
    let mut s = State::default();
    let mut t = 3 * SEC + 123;
    for step in 0..500u64 {
        let cost = (step % 3 + 1) as u32;
        let d = run(&l, &mut s, at(t).cost(cost));
        if let Some(r) = d.retry_after {
            let r = r.as_nanos() as u64;
            assert!(!l.transition(s, at(t + r - 1).cost(cost)).1.is_allowed());
            assert!(l.transition(s, at(t + r).cost(cost)).1.is_allowed());
        }
        t += 37_000_000 + step * 1_000_003 % 90_000_000;
    }
}

#[test]
fn sliding_window_approximation_error_is_bounded() {
    // Offered load: 3x the quota, evenly spaced. Every fixed window admits <= quota, any
    // sliding interval of one period admits < 2 * quota, and in steady state the admitted
    // count per sliding period stays within 10% of the quota.
    let quota = 100u32;
    let period = SEC;
    let l = Limit::sliding_window(quota, Duration::from_nanos(period)).unwrap();
    let mut s = State::default();
    let mut admitted = Vec::new();
    let step = period / (3 * u64::from(quota));
    let mut t = 0;
    while t < 20 * period {
        if run(&l, &mut s, at(t)).is_allowed() {
            admitted.push(t);
        }
        t += step;
    }
    let mut start = 0;
    for (end, &t_end) in admitted.iter().enumerate() {
        while admitted[start] + period <= t_end {
            start += 1;
        }
        let in_interval = (end - start + 1) as u32;
        assert!(in_interval < 2 * quota);
        if t_end > 3 * period {
            assert!(
                in_interval <= quota + quota / 10,
                "{in_interval} at {t_end}"
            );
        }
    }
    for w in 0..20 {
        let n = admitted.iter().filter(|t| **t / period == w).count() as u32;
        assert!(n <= quota);
    }
    let total = admitted.len() as u32;
    assert!(total >= 19 * quota && total <= 21 * quota, "{total}");
}

#[test]
fn weights_and_fresh_instants() {
    let f = Limit::fixed_window(5, Duration::from_secs(1)).unwrap();
    let s = State { w0: 3, w1: 2 };
    assert_eq!(f.weight(s, Nanos(3 * SEC)), 2);
    assert_eq!(f.weight(s, Nanos(4 * SEC)), 0);
    assert_eq!(f.fresh_at(s), Nanos(4 * SEC));
    let sl = Limit::sliding_window(5, Duration::from_secs(1)).unwrap();
    let s = State { w0: 3, w1: 2 };
    assert_eq!(sl.fresh_at(s), Nanos(5 * SEC));
    assert!(sl.weight(s, Nanos(4 * SEC + 1)) > 0);
    assert_eq!(sl.weight(s, Nanos(5 * SEC)), 0);
}
