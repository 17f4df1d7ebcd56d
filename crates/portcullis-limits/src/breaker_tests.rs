//! Tests of the circuit-breaker state machine, with explicit times.
use super::*;

const FAST: Duration = Duration::from_millis(10);
const SLOW_LATENCY: Duration = Duration::from_secs(3);

fn cfg(window: BreakerWindow) -> BreakerConfig {
    BreakerConfig {
        window,
        min_calls: 4,
        failure_rate_threshold: 50,
        slow_call_threshold: Duration::from_secs(2),
        slow_call_rate_threshold: 75,
        open_duration: Duration::from_secs(5),
        max_open_duration: Duration::from_secs(12),
        half_open_probes: 2,
        half_open_successes_to_close: 3,
    }
}

fn breaker(window: BreakerWindow) -> Breaker {
    Breaker::new(cfg(window)).unwrap()
}

fn s(secs: u64) -> Nanos {
    Nanos::from_secs(secs)
}

/// Trips a count-window breaker at `now` with four failures.
fn tripped(now: Nanos) -> Breaker {
    let mut b = breaker(BreakerWindow::Count(10));
    for _ in 0..3 {
        assert_eq!(b.record(now, false, FAST), None);
    }
    assert!(b.record(now, false, FAST).is_some());
    b
}

#[test]
fn validate_rejects_out_of_range_fields() {
    assert_eq!(cfg(BreakerWindow::Count(10)).validate(), Ok(()));
    assert_eq!(
        cfg(BreakerWindow::Time(Duration::from_secs(10))).validate(),
        Ok(())
    );
    let bad: [fn(&mut BreakerConfig); 11] = [
        |c| c.window = BreakerWindow::Count(0),
        |c| c.window = BreakerWindow::Count(MAX_COUNT_WINDOW + 1),
        |c| c.window = BreakerWindow::Count(3), // below min_calls
        |c| c.window = BreakerWindow::Time(Duration::from_nanos(9)),
        |c| c.min_calls = 0,
        |c| c.failure_rate_threshold = 0,
        |c| c.slow_call_rate_threshold = 101,
        |c| c.open_duration = Duration::ZERO,
        |c| c.max_open_duration = Duration::from_secs(4),
        |c| c.half_open_probes = 0,
        |c| c.half_open_successes_to_close = 0,
    ];
    for (i, spoil) in bad.iter().enumerate() {
        let mut c = cfg(BreakerWindow::Count(10));
        spoil(&mut c);
        assert!(c.validate().is_err(), "case {i} accepted");
        assert!(Breaker::new(c).is_err(), "case {i} built");
    }
}

#[test]
fn below_min_calls_stays_closed() {
    let mut b = breaker(BreakerWindow::Count(10));
    for _ in 0..3 {
        assert_eq!(b.admit(s(1)), (Admission::Allowed, None));
        assert_eq!(b.record(s(1), false, SLOW_LATENCY), None);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn failure_rate_trips_at_threshold() {
    let mut b = breaker(BreakerWindow::Count(10));
    for ok in [true, false, true] {
        assert_eq!(b.record(s(1), ok, FAST), None);
    }
    // 1 of 4 failed (25%) is below 50%.
    assert_eq!(b.record(s(1), true, FAST), None);
    // 2 of 5 = 40%: still closed; 3 of 6 = 50% reaches it.
    assert_eq!(b.record(s(1), false, FAST), None);
    let t = b.record(s(2), false, FAST).unwrap();
    assert_eq!(
        t,
        Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open { until: s(7) },
            cause: Cause::FailureRate { percent: 50 },
        }
    );
    assert_eq!(b.state(), BreakerState::Open { until: s(7) });
}

#[test]
fn slow_call_rate_trips() {
    let mut b = breaker(BreakerWindow::Count(10));
    // Exactly at the latency threshold is not slow.
    assert_eq!(b.record(s(1), true, Duration::from_secs(2)), None);
    assert_eq!(b.record(s(1), true, FAST), None);
    // Slow calls raise the rate: 3 of 5 (60%), 4 of 6 (66%), 5 of 7 (71%)...
    for _ in 0..5 {
        assert_eq!(b.record(s(1), true, SLOW_LATENCY), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }
    // ... and 6 of 8 (75%) reaches the threshold.
    let t = b.record(s(2), true, SLOW_LATENCY).unwrap();
    assert_eq!(
        t,
        Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open { until: s(7) },
            cause: Cause::SlowCallRate { percent: 75 },
        }
    );
}

#[test]
fn open_rejects_with_time_left() {
    let mut b = tripped(s(10));
    assert_eq!(b.state(), BreakerState::Open { until: s(15) });
    assert_eq!(
        b.admit(s(10)),
        (
            Admission::Rejected {
                retry_after: Duration::from_secs(5)
            },
            None
        )
    );
    assert_eq!(
        b.admit(Nanos::from_millis(14_250)).0,
        Admission::Rejected {
            retry_after: Duration::from_millis(750)
        }
    );
    // Outcomes of calls that were in flight when it tripped are ignored.
    assert_eq!(b.record(s(11), true, FAST), None);
    assert_eq!(b.state(), BreakerState::Open { until: s(15) });
}

#[test]
fn elapsed_open_goes_half_open_on_admit() {
    let mut b = tripped(s(10));
    let (admission, t) = b.admit(s(15));
    assert_eq!(admission, Admission::Probe);
    assert_eq!(
        t,
        Some(Transition {
            from: BreakerState::Open { until: s(15) },
            to: BreakerState::HalfOpen,
            cause: Cause::OpenElapsed,
        })
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn half_open_limits_probes_in_flight() {
    let mut b = tripped(s(10));
    assert_eq!(b.admit(s(20)).0, Admission::Probe);
    assert_eq!(b.admit(s(20)), (Admission::Probe, None));
    assert_eq!(
        b.admit(s(20)),
        (
            Admission::Rejected {
                retry_after: Duration::from_secs(5)
            },
            None
        )
    );
    // A finished probe frees its slot.
    assert_eq!(b.record(s(21), true, FAST), None);
    assert_eq!(b.admit(s(21)).0, Admission::Probe);
    assert_eq!(
        b.admit(s(21)).0,
        Admission::Rejected {
            retry_after: Duration::from_secs(5)
        }
    );
}

#[test]
fn probe_failure_reopens_with_doubled_capped_duration() {
    let mut b = tripped(s(0)); // open 5s
    let mut now = s(5);
    for expected in [10, 12, 12] {
        assert_eq!(b.admit(now).0, Admission::Probe);
        let t = b.record(now, false, FAST).unwrap();
        let until = now.saturating_add(Duration::from_secs(expected));
        assert_eq!(
            t,
            Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open { until },
                cause: Cause::ProbeFailed,
            }
        );
        assert_eq!(
            b.admit(now).0,
            Admission::Rejected {
                retry_after: Duration::from_secs(expected)
            }
        );
        now = until;
    }
    // A slow probe counts as failed too.
    assert_eq!(b.admit(now).0, Admission::Probe);
    assert_eq!(
        b.record(now, true, SLOW_LATENCY).unwrap().cause,
        Cause::ProbeFailed
    );
}

#[test]
fn probe_successes_close_and_reset() {
    let mut b = tripped(s(0));
    assert_eq!(b.admit(s(5)).0, Admission::Probe);
    assert_eq!(
        b.record(s(5), false, FAST).unwrap().cause,
        Cause::ProbeFailed
    ); // open 10s
    let mut now = s(15);
    for _ in 0..2 {
        assert_eq!(b.admit(now).0, Admission::Probe);
        assert_eq!(b.record(now, true, FAST), None);
        now = now.saturating_add(Duration::from_secs(1));
    }
    assert_eq!(b.admit(now).0, Admission::Probe);
    let t = b.record(now, true, FAST).unwrap();
    assert_eq!(
        t,
        Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Closed,
            cause: Cause::ProbesSucceeded,
        }
    );
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.admit(now), (Admission::Allowed, None));
    // The window restarted empty: three failures are below min_calls again.
    for _ in 0..3 {
        assert_eq!(b.record(now, false, FAST), None);
    }
    // And the growth reset: the next trip opens for the base 5s.
    let t = b.record(now, false, FAST).unwrap();
    assert_eq!(
        t.to,
        BreakerState::Open {
            until: now.saturating_add(Duration::from_secs(5))
        }
    );
    assert_eq!(t.cause, Cause::FailureRate { percent: 100 });
}

#[test]
fn stray_result_in_half_open_is_ignored() {
    let mut b = tripped(s(0));
    assert_eq!(b.admit(s(5)).0, Admission::Probe);
    assert_eq!(b.record(s(5), true, FAST), None);
    // No probe in flight: a late failure from before the trip does not reopen.
    assert_eq!(b.record(s(5), false, FAST), None);
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn time_window_forgets_old_outcomes() {
    // 10s window in 1s buckets.
    let mut b = breaker(BreakerWindow::Time(Duration::from_secs(10)));
    for _ in 0..2 {
        assert_eq!(b.record(s(0), false, FAST), None);
    }
    assert_eq!(b.record(s(9), true, FAST), None);
    assert_eq!(b.window.sums().calls, 3);
    // At 10s the bucket of 0s has dropped out.
    assert_eq!(b.record(s(10), true, FAST), None);
    assert_eq!(
        b.window.sums(),
        Counts {
            calls: 2,
            failures: 0,
            slow: 0
        }
    );
    assert_eq!(b.record(s(10), true, FAST), None);
    // 1 of 4 failed (25%); had the old failures stayed it would be 3 of 6 (50%): a trip.
    assert_eq!(b.record(s(11), false, FAST), None);
    assert_eq!(b.state(), BreakerState::Closed);
    // A long gap forgets everything.
    assert_eq!(b.record(s(100), false, FAST), None);
    assert_eq!(b.window.sums().calls, 1);
    // Time running backwards counts into the latest bucket, without panicking.
    assert_eq!(b.record(s(50), false, FAST), None);
    assert_eq!(b.window.sums().calls, 2);
    assert_eq!(b.record(s(100), false, FAST), None);
    let t = b.record(s(100), false, FAST).unwrap();
    assert_eq!(t.cause, Cause::FailureRate { percent: 100 });
    assert_eq!(t.to, BreakerState::Open { until: s(105) });
}

#[test]
fn count_window_slides() {
    let mut c = cfg(BreakerWindow::Count(4));
    c.failure_rate_threshold = 75;
    let mut b = Breaker::new(c).unwrap();
    for ok in [false, false, true, true] {
        assert_eq!(b.record(s(1), ok, FAST), None); // 2 of 4
    }
    // The two oldest failures slide out as new failures come in: still 2 of 4, although
    // 4 of 6 overall.
    assert_eq!(b.record(s(1), false, FAST), None);
    assert_eq!(b.record(s(1), false, FAST), None);
    assert_eq!(
        b.window.sums(),
        Counts {
            calls: 4,
            failures: 2,
            slow: 0
        }
    );
    // [t t f f] -> [t f f f]: 75% over the window (5 of 7 = 71% overall would not trip).
    let t = b.record(s(1), false, FAST).unwrap();
    assert_eq!(t.cause, Cause::FailureRate { percent: 75 });
}

#[test]
fn an_abandoned_probe_frees_its_slot_without_counting() {
    let mut b = tripped(s(0));
    // Two probe slots (see `cfg`), both taken.
    assert_eq!(b.admit(s(10)).0, Admission::Probe);
    assert_eq!(b.admit(s(10)).0, Admission::Probe);
    assert!(matches!(b.admit(s(10)).0, Admission::Rejected { .. }));
    b.abandon_probe();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.admit(s(10)).0, Admission::Probe);
    // Closed: abandoning is a no-op.
    let mut closed = breaker(BreakerWindow::Count(10));
    closed.abandon_probe();
    assert_eq!(closed.state(), BreakerState::Closed);
}
