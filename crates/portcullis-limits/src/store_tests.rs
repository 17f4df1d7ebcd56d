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
fn geometry_holds_max_keys_within_the_memory_bound() {
    let l = Limit::gcra(1, Duration::from_secs(1), 1).unwrap();
    for max in [
        0,
        1,
        2,
        5,
        7,
        8,
        9,
        63,
        64,
        65,
        100,
        513,
        1000,
        2047,
        2048,
        2049,
        4096,
        10_000,
        100_000,
        1 << 20,
    ] {
        let s = MemoryStore::new(l, max);
        assert!(s.capacity() >= max.max(1), "{max}: {}", s.capacity());
        let bound = MemoryStore::MAX_BYTES_PER_KEY * max.max(1) + MemoryStore::FIXED_BYTES;
        assert!(
            s.memory_bytes() <= bound,
            "{max}: {} > {bound}",
            s.memory_bytes()
        );
        for i in 0..(2 * max as u64 + 4).min(50_000) {
            s.acquire(key(i), Request::new(Nanos(SEC)));
        }
        assert!(s.len() <= s.capacity());
    }
    // One shard below 2 048 keys: exactly `max_keys`.
    assert_eq!(MemoryStore::new(l, 2047).capacity(), 2047);
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
    assert!(
        bound <= 10_000 * MemoryStore::MAX_BYTES_PER_KEY + MemoryStore::FIXED_BYTES,
        "{bound}"
    );
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
    assert!(store.len() <= store.capacity() && store.capacity() <= 14_000);
    assert_eq!(store.memory_bytes(), bound);
    // Every decision matched the unbounded reference: 10 left at the start, then one per
    // 10 ms emission interval over the ~100 ms flood.
    assert_eq!(active_allowed, 19);
    check_active(now + 1);
    let stats = store.stats();
    assert!(stats.evictions >= 1_000_000 - 14_000, "{stats:?}");
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

/// Every algorithm a store runs, at `quota` per hour (bursts of `quota`).
fn every_algorithm(quota: u32) -> [Limit; 3] {
    let hour = Duration::from_secs(3600);
    [
        Limit::gcra(quota, hour, quota).unwrap(),
        Limit::fixed_window(quota, hour).unwrap(),
        Limit::sliding_window(quota, hour).unwrap(),
    ]
}

/// Fills a store of `max_keys` with `n` distinct keys, each spending its whole `quota`, then
/// asks once more for every key: returns how many of those second requests were allowed
/// (all are due a refusal while the store keeps its keys).
fn second_pass_allowed(limit: Limit, quota: u32, max_keys: usize, n: usize, seed: u64) -> usize {
    let store = MemoryStore::new(limit, max_keys);
    let keys = crate::key::KeyHasher::new([seed, !seed]);
    let now = Nanos(10 * SEC);
    for i in 0..n as u64 {
        for _ in 0..quota {
            let d = store.acquire(keys.key_of(&i), Request::new(now));
            assert!(d.is_allowed(), "{limit:?} max_keys {max_keys}: key {i}");
        }
    }
    let later = Nanos(11 * SEC);
    let allowed = (0..n as u64)
        .filter(|i| {
            store
                .acquire(keys.key_of(i), Request::new(later))
                .is_allowed()
        })
        .count();
    assert_eq!(
        store.stats(),
        StoreStats::default(),
        "{limit:?} {max_keys} {n}"
    );
    allowed
}

#[test]
fn a_store_holds_max_keys_active_keys_without_evicting_any() {
    for max_keys in [
        1usize, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 500, 513, 1000, 1023,
        1024, 1025, 2000, 2047, 2048, 2049, 4095, 4096, 4097, 10_000, 65_536, 100_000,
    ] {
        for percent in [40, 90, 100] {
            let n = (max_keys * percent).div_ceil(100);
            for limit in every_algorithm(1) {
                assert_eq!(
                    second_pass_allowed(limit, 1, max_keys, n, 7),
                    0,
                    "{limit:?}: {n} keys ({percent} %) of max_keys {max_keys}"
                );
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    #[test]
    fn any_store_holds_max_keys_active_keys(
        max_keys in 1usize..6000,
        percent in proptest::sample::select(vec![40usize, 90, 100]),
        quota in 1u32..4,
        alg in 0usize..3,
        seed: u64,
    ) {
        let n = (max_keys * percent).div_ceil(100);
        let limit = every_algorithm(quota)[alg];
        proptest::prop_assert_eq!(second_pass_allowed(limit, quota, max_keys, n, seed), 0);
    }
}

#[test]
fn a_full_store_evicts_fresh_equivalent_keys_before_active_ones() {
    for limit in [
        Limit::gcra(1, Duration::from_secs(1), 1).unwrap(),
        Limit::fixed_window(1, Duration::from_secs(1)).unwrap(),
        Limit::sliding_window(1, Duration::from_secs(1)).unwrap(),
    ] {
        for max_keys in [10, 1000, 5000] {
            let store = MemoryStore::new(limit, max_keys);
            let old = max_keys as u64 / 2;
            // Half the keys at 1 s (fresh again by 4 s), the other half active from 10 s.
            for i in 0..old {
                store.acquire(key(i), Request::new(Nanos(SEC)));
            }
            for i in old..max_keys as u64 {
                store.acquire(key(i), Request::new(Nanos(10 * SEC)));
            }
            // As many new keys as there are stale ones: only stale ones make room.
            for i in 0..old {
                store.acquire(key(1 << 40 | i), Request::new(Nanos(10 * SEC)));
            }
            let stats = store.stats();
            assert_eq!(stats.evicted_active, 0, "{limit:?} {max_keys}: {stats:?}");
            let active = (old..max_keys as u64).chain((0..old).map(|i| 1 << 40 | i));
            let allowed = active
                .filter(|i| {
                    store
                        .acquire(key(*i), Request::new(Nanos(10 * SEC)))
                        .is_allowed()
                })
                .count();
            assert_eq!(allowed, 0, "{limit:?} {max_keys}");
        }
    }
}

#[test]
fn a_store_full_of_active_keys_evicts_one_per_new_key_and_counts_it() {
    let limit = Limit::gcra(1, Duration::from_secs(3600), 1).unwrap();
    let store = MemoryStore::new(limit, 100);
    for i in 0..100 {
        store.acquire(key(i), Request::new(Nanos(SEC)));
    }
    assert_eq!(store.stats(), StoreStats::default());
    for i in 100..110 {
        assert!(store.acquire(key(i), Request::new(Nanos(SEC))).is_allowed());
    }
    assert_eq!(
        store.stats(),
        StoreStats {
            evictions: 10,
            evicted_active: 10
        }
    );
    assert_eq!(store.len(), 100);
    // Every key still held is found again (removals keep probe chains intact): a peek
    // (cost 0) sees a held key's spent budget, and stores nothing for the others.
    let held = (0..110)
        .filter(|i| {
            let d = store.acquire(key(*i), Request::new(Nanos(SEC)).cost(0));
            d.remaining == 0
        })
        .count();
    assert_eq!(held, 100);
    assert_eq!(store.len(), 100);
}

#[test]
fn removals_keep_every_other_key_reachable() {
    // Small tables under churn: many clusters wrap around the end of the table.
    for room in [1, 2, 3, 7, 8, 20] {
        let mut table = Table::new(room, room + room / 4 + 1);
        let mut held: Vec<(u64, u64)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..5000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            if held.len() == room || (x >> 63 == 1 && !held.is_empty()) {
                let (lo, hi) = held.swap_remove((x >> 8) as usize % held.len());
                let Ok(i) = table.probe(lo, hi) else {
                    panic!("room {room} step {step}: held key lost")
                };
                table.remove(i);
            } else {
                // Keys crowded onto few home slots, so clusters form and wrap.
                let (lo, hi) = ((x >> 62) << 62 | (step + 1), step + 1);
                let Err(i) = table.probe(lo, hi) else {
                    panic!("room {room}: a new key was found")
                };
                table.slots[i] = Slot([lo, hi, 1, 0]);
                table.len += 1;
                held.push((lo, hi));
            }
            assert_eq!(table.len, held.len());
            for &(lo, hi) in &held {
                assert!(table.probe(lo, hi).is_ok(), "room {room} step {step}");
            }
        }
    }
}
