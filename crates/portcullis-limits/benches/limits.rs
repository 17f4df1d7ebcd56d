//! Decision cost of portcullis-limits' GCRA against `governor` (same algorithm, same rate):
//! single-threaded and with 2 threads contending, on one key and on many keys, with a
//! fixed fake clock for both (and one real-clock pair). Run: `cargo bench -p portcullis-limits`.

// The bench measures wall time and spawns threads itself; the gateway-wide bans on
// `Instant` (use tokio's clock) do not apply to a benchmark harness.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use portcullis_limits::{DirectGcra, KeyHasher, Limit, MemoryStore, Nanos, Request, Store};

/// 1M per second with a burst so large that no measured call is denied: both libraries
/// take their "allow" path, the one that matters at gateway speed.
const RATE: u32 = 1_000_000;
const BURST: u32 = u32::MAX;
const MANY: u64 = 10_000;
const THREADS: usize = 2;

fn gov_quota() -> Quota {
    let (Some(rate), Some(burst)) = (NonZeroU32::new(RATE), NonZeroU32::new(BURST)) else {
        unreachable!("constants are non-zero")
    };
    Quota::per_second(rate).allow_burst(burst)
}

fn limit() -> Limit {
    match Limit::gcra(RATE, Duration::from_secs(1), BURST) {
        Ok(l) => l,
        Err(e) => unreachable!("constant limit is valid: {e}"),
    }
}

fn ours_keyed() -> MemoryStore {
    // Room for every bench key (4x headroom), as governor's map grows to hold them.
    MemoryStore::new(limit(), 4 * MANY as usize)
}

fn ours_direct() -> DirectGcra {
    match DirectGcra::new(limit()) {
        Ok(d) => d,
        Err(e) => unreachable!("{e}"),
    }
}

const HASHER: KeyHasher = KeyHasher::new([0x5eed, 0xcafe]);
const NOW: Nanos = Nanos::from_secs(1);

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("gcra_1_thread");

    let store = ours_keyed();
    g.bench_function("portcullis/one_key", |b| {
        b.iter(|| {
            store
                .acquire(HASHER.key_of(black_box(&42u64)), Request::new(NOW))
                .is_allowed()
        })
    });
    let gov = RateLimiter::dashmap_with_clock(gov_quota(), FakeRelativeClock::default());
    g.bench_function("governor/one_key", |b| {
        b.iter(|| gov.check_key(black_box(&42u64)).is_ok())
    });

    let store = ours_keyed();
    let mut i = 0u64;
    g.bench_function("portcullis/many_keys", |b| {
        b.iter(|| {
            i = (i + 1) % MANY;
            store
                .acquire(HASHER.key_of(&i), Request::new(NOW))
                .is_allowed()
        })
    });
    let gov = RateLimiter::dashmap_with_clock(gov_quota(), FakeRelativeClock::default());
    let mut i = 0u64;
    g.bench_function("governor/many_keys", |b| {
        b.iter(|| {
            i = (i + 1) % MANY;
            gov.check_key(&i).is_ok()
        })
    });

    let direct = ours_direct();
    g.bench_function("portcullis/direct", |b| {
        b.iter(|| direct.acquire(Request::new(black_box(NOW))))
    });
    let gov = RateLimiter::direct_with_clock(gov_quota(), FakeRelativeClock::default());
    g.bench_function("governor/direct", |b| b.iter(|| gov.check().is_ok()));

    // Real clocks: governor's default (quanta) vs std's monotonic clock read by the caller.
    let direct = ours_direct();
    let start = Instant::now();
    g.bench_function("portcullis/direct_real_clock", |b| {
        b.iter(|| {
            let now = Nanos::from_duration(start.elapsed());
            direct.acquire(Request::new(now)).is_allowed()
        })
    });
    let gov = RateLimiter::direct(gov_quota());
    g.bench_function("governor/direct_real_clock", |b| {
        b.iter(|| gov.check().is_ok())
    });
    g.finish();
}

/// Time per call per thread with `THREADS` threads calling `f(thread, i)` at once.
fn contended(iters: u64, f: &(dyn Fn(u64, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(THREADS);
    let times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        f(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    times.into_iter().max().unwrap_or_default()
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("gcra_2_threads");

    let store = ours_keyed();
    g.bench_function("portcullis/one_key", |b| {
        b.iter_custom(|n| {
            contended(n, &|_, _| {
                black_box(
                    store
                        .acquire(HASHER.key_of(&42u64), Request::new(NOW))
                        .is_allowed(),
                );
            })
        })
    });
    let gov = RateLimiter::dashmap_with_clock(gov_quota(), FakeRelativeClock::default());
    g.bench_function("governor/one_key", |b| {
        b.iter_custom(|n| {
            contended(n, &|_, _| {
                black_box(gov.check_key(&42u64).is_ok());
            })
        })
    });

    let store = ours_keyed();
    g.bench_function("portcullis/many_keys", |b| {
        b.iter_custom(|n| {
            contended(n, &|t, i| {
                let k = (i + t * MANY / 2) % MANY;
                black_box(
                    store
                        .acquire(HASHER.key_of(&k), Request::new(NOW))
                        .is_allowed(),
                );
            })
        })
    });
    let gov = RateLimiter::dashmap_with_clock(gov_quota(), FakeRelativeClock::default());
    g.bench_function("governor/many_keys", |b| {
        b.iter_custom(|n| {
            contended(n, &|t, i| {
                let k = (i + t * MANY / 2) % MANY;
                black_box(gov.check_key(&k).is_ok());
            })
        })
    });

    let direct = ours_direct();
    g.bench_function("portcullis/direct", |b| {
        b.iter_custom(|n| {
            contended(n, &|_, _| {
                black_box(direct.acquire(Request::new(NOW)).is_allowed());
            })
        })
    });
    let gov = RateLimiter::direct_with_clock(gov_quota(), FakeRelativeClock::default());
    g.bench_function("governor/direct", |b| {
        b.iter_custom(|n| {
            contended(n, &|_, _| {
                black_box(gov.check().is_ok());
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = single_thread, two_threads }
criterion_main!(benches);
