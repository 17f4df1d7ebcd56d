//! Tests of `MemoryStore`: agreement with the pure transition, threads, bounds, eviction.

use super::*;
use crate::decision::Outcome;
use crate::time::Nanos;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

fn key(i: u64) -> Key {
    crate::key::KeyHasher::new([9, 9]).key_of(&i)
}

#[test]
fn store_applies_the_pure_transition_per_key() {
    for limit in [
        Limit::gcra(10, Duration::from_secs(1), 3).unwrap(),
        Limit::fixed_window(3, Duration::from_secs(1)).unwrap(),
        Limit::sliding_window(3, Duration::from_secs(1)).unwrap(),
    ] {
        let store = MemoryStore::new(limit, 1000);
        let mut states = [State::default(); 4];
        for step in 0..400u64 {
            let i = step % 4;
            let req = Request::new(Nanos(SEC + step * 7_000_000)).cost((step % 2 + 1) as u32);
            let (next, expected) = limit.transition(states[i as usize], req);
            states[i as usize] = next;
            assert_eq!(
                store.acquire(key(i), req),
                expected,
                "{limit:?} step {step}"
            );
        }
        assert_eq!(store.stats(), StoreStats::default());
    }
}

#[test]
fn geometry_never_exceeds_max_keys() {
    let l = Limit::gcra(1, Duration::from_secs(1), 1).unwrap();
    for max in [0, 1, 5, 7, 8, 9, 63, 100, 513, 10_000, 1 << 20] {
        let s = MemoryStore::new(l, max);
        assert!(s.capacity() <= max.max(1), "{max}");
        assert!(
            s.capacity() * 10 >= max * 9 || max < 1024,
            "{max}: {}",
            s.capacity()
        );
        for i in 0..(2 * max as u64 + 4).min(50_000) {
            s.acquire(key(i), Request::new(Nanos(SEC)));
        }
        assert!(s.len() <= s.capacity());
    }
}

#[test]
fn threads_on_one_key_never_exceed_the_limit() {
    for limit in [
        Limit::gcra(1, Duration::from_secs(60), 500).unwrap(),
        Limit::fixed_window(500, Duration::from_secs(60)).unwrap(),
        Limit::sliding_window(500, Duration::from_secs(60)).unwrap(),
    ] {
        let store = Arc::new(MemoryStore::new(limit, 64));
        let allowed = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (store, allowed) = (store.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        // Many keys interleaved, one hot key counted.
                        store.acquire(key(1000 + t * 10_000 + i % 8), Request::new(Nanos(SEC)));
                        if store.acquire(key(1), Request::new(Nanos(SEC))).is_allowed() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 500, "{limit:?}");
    }
}

#[test]
fn a_million_keys_stay_within_the_bound_and_active_keys_stay_correct() {
    // 100 per second, burst 100, at most 10 000 keys.
    let limit = Limit::gcra(100, Duration::from_secs(1), 100).unwrap();
    let store = MemoryStore::new(limit, 10_000);
    let bound = store.memory_bytes();
    assert!(bound <= 10_000 * 32 + 64 * 128 + 256, "{bound}");
    let active = key(u64::MAX);
    // What an unbounded store would hold for the active key.
    let mut reference = State::default();
    let mut check_active = |now: u64| {
        let (next, expected) = limit.transition(reference, Request::new(Nanos(now)));
        reference = next;
        let got = store.acquire(active, Request::new(Nanos(now)));
        assert_eq!(got, expected, "active key at {now}");
        got.is_allowed()
    };
    let mut now = 10 * SEC;
    // The active client spends 90 of its 100 at the start.
    for _ in 0..90 {
        assert!(check_active(now));
    }
    let mut active_allowed = 0;
    for i in 0..1_000_000u64 {
        // The flood: a million distinct clients, one request each, over 100 ms.
        store.acquire(key(i), Request::new(Nanos(now)));
        if i % 1000 == 500 {
            // The active client keeps spending: one request every 0.1 ms on average.
            if check_active(now) {
                active_allowed += 1;
            }
        }
        now += 100;
        assert!(i % 100_000 != 0 || store.len() <= store.capacity());
    }
    assert!(store.len() <= store.capacity() && store.capacity() <= 10_000);
    assert_eq!(store.memory_bytes(), bound);
    // Every decision matched the unbounded reference: 10 left at the start, then one per
    // 10 ms emission interval over the ~100 ms flood.
    assert_eq!(active_allowed, 19);
    check_active(now + 1);
    let stats = store.stats();
    assert!(stats.evictions >= 1_000_000 - 10_000, "{stats:?}");
    // Flood keys carry 10 ms of debt each and the active key ~1 s: it is never the victim;
    // the victims were flood keys still within their 10 ms debt.
    assert!(stats.evicted_active > 0);
}

#[test]
fn fresh_equivalent_keys_are_evicted_first_and_not_counted_as_active() {
    let limit = Limit::gcra(10, Duration::from_secs(1), 10).unwrap();
    let store = MemoryStore::new(limit, 64);
    for i in 0..1000u64 {
        // Each key's state is fresh again 100 ms later; keys arrive every 200 ms.
        store.acquire(key(i), Request::new(Nanos(SEC + i * 200_000_000)));
    }
    let stats = store.stats();
    assert!(stats.evictions > 0);
    assert_eq!(stats.evicted_active, 0);
}

#[test]
fn denied_fresh_requests_are_not_stored() {
    let limit = Limit::gcra(10, Duration::from_secs(1), 2).unwrap();
    let store = MemoryStore::new(limit, 64);
    let d = store.acquire(key(1), Request::new(Nanos(SEC)).cost(3));
    assert_eq!(d.outcome, Outcome::CostExceedsLimit);
    store.acquire(key(2), Request::new(Nanos(SEC)).cost(0));
    assert!(store.is_empty());
    assert_eq!(store.limit(), &limit);
}
