//! Unit tests of the load shedder with paused time: fast path, priority hand-off, eviction,
//! waiting limits, cancellation, the priority header, and a multi-threaded stress run.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::config::schema::AdaptiveLimitConfig;
use Priority::{Critical, Normal, Sheddable};

const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

/// A fixed limit of `limit` (the adaptive window never closes within a test).
fn config(limit: u32, queue_size: u32, max_wait: Duration) -> LoadSheddingConfig {
    LoadSheddingConfig {
        adaptive_limit: AdaptiveLimitConfig {
            initial: limit,
            min: limit,
            max: limit,
            window: HOUR,
        },
        queue_size,
        max_wait,
    }
}

fn shedder(limit: u32, queue_size: u32, max_wait: Duration) -> Arc<Shedder> {
    Arc::new(Shedder::new(&config(limit, queue_size, max_wait)).unwrap())
}

/// Lets every ready task run (paused time does not advance while this task is ready).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// An `acquire` in its own task, given time to reach the queue.
async fn waiter(s: &Arc<Shedder>, priority: Priority) -> JoinHandle<Result<ShedPermit, Duration>> {
    let s = Arc::clone(s);
    let handle = tokio::spawn(async move { s.acquire(priority, None).await });
    settle().await;
    handle
}

#[tokio::test(start_paused = true)]
async fn fast_path_takes_free_slots_without_queueing() {
    let s = shedder(2, 10, HOUR);
    let start = Instant::now();
    let a = s.acquire(Normal, None).await.unwrap();
    let b = s.acquire(Sheddable, None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((s.limit(), s.in_flight(), s.queued()), (2, 2, 0));
    a.finish(MS, false);
    assert_eq!(s.in_flight(), 1);
    drop(b);
    assert_eq!((s.in_flight(), s.shed_total()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn slots_go_to_waiters_by_priority_then_arrival() {
    let s = shedder(1, 10, HOUR);
    let first = s.acquire(Normal, None).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let arrivals = [
        ("s1", Sheddable),
        ("n1", Normal),
        ("c1", Critical),
        ("n2", Normal),
        ("s2", Sheddable),
        ("c2", Critical),
    ];
    for (label, priority) in arrivals {
        let (s, tx) = (Arc::clone(&s), tx.clone());
        tokio::spawn(async move {
            let permit = s.acquire(priority, None).await.unwrap();
            tx.send(label).unwrap();
            permit.finish(MS, false);
        });
        settle().await;
    }
    drop(tx);
    assert_eq!((s.in_flight(), s.queued()), (1, 6));
    first.finish(MS, false);
    let mut order = Vec::new();
    while let Some(label) = rx.recv().await {
        order.push(label);
    }
    assert_eq!(order, ["c1", "c2", "n1", "n2", "s1", "s2"]);
    assert_eq!((s.in_flight(), s.queued(), s.shed_total()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn full_queue_evicts_the_newest_lower_priority_waiter() {
    let s = shedder(1, 3, HOUR);
    let held = s.acquire(Normal, None).await.unwrap();
    let n1 = waiter(&s, Normal).await;
    let s1 = waiter(&s, Sheddable).await;
    let s2 = waiter(&s, Sheddable).await;
    assert_eq!(s.queued(), 3);

    // A critical arrival takes the place of the newest sheddable waiter...
    let c1 = waiter(&s, Critical).await;
    assert!(s2.is_finished());
    assert_eq!(s2.await.unwrap().unwrap_err(), s.retry_after());
    // ...a normal one that of the remaining sheddable one...
    let n2 = waiter(&s, Normal).await;
    assert!(s1.await.unwrap().is_err());
    // ...but a normal arrival finding only normal and critical waiters is shed itself, at once.
    let start = Instant::now();
    assert!(s.acquire(Normal, None).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
    // The lowest class goes first: a critical arrival evicts the newest normal waiter.
    let c2 = waiter(&s, Critical).await;
    assert!(n2.await.unwrap().is_err());
    assert_eq!(s.queued(), 3);
    assert_eq!(s.shed_by(ShedCause::QueueFull), 4);
    assert_eq!(s.shed_by(ShedCause::Timeout), 0);

    drop(held);
    for survivor in [c1, c2, n1] {
        let permit = survivor.await.unwrap().unwrap();
        assert_eq!(s.in_flight(), 1);
        drop(permit);
    }
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_shed_when_max_wait_passes() {
    let s = shedder(1, 10, Duration::from_millis(100));
    let _held = s.acquire(Normal, None).await.unwrap();
    let start = Instant::now();
    let err = s.acquire(Critical, None).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(err, Duration::from_secs(1));
    assert_eq!((s.queued(), s.shed_by(ShedCause::Timeout)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_max_wait_sheds_at_the_deadline() {
    let s = shedder(1, 1, Duration::from_millis(100));
    let held = s.acquire(Normal, None).await.unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_millis(30);
    assert!(s.acquire(Normal, Some(deadline)).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(30));

    // A deadline already past: not queued, so it evicts nobody.
    let sheddable = waiter(&s, Sheddable).await;
    assert!(s.acquire(Critical, Some(Instant::now())).await.is_err());
    assert_eq!(s.queued(), 1);
    assert_eq!(s.shed_by(ShedCause::Timeout), 2);
    assert_eq!(s.shed_by(ShedCause::QueueFull), 0);
    drop(held);
    assert!(sheddable.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let s = shedder(1, 10, HOUR);
    let held = s.acquire(Normal, None).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), s.acquire(Normal, None)).await;
    assert!(gave_up.is_err());
    assert_eq!(s.queued(), 0);

    let next = waiter(&s, Sheddable).await;
    drop(held);
    let permit = next.await.unwrap().unwrap();
    assert_eq!(s.in_flight(), 1);
    drop(permit);
    assert_eq!((s.in_flight(), s.queued(), s.shed_total()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_cancelled_after_the_hand_off_passes_the_slot_on() {
    let s = shedder(1, 10, HOUR);
    let held = s.acquire(Normal, None).await.unwrap();
    let first = waiter(&s, Critical).await;
    let second = waiter(&s, Normal).await;
    // The slot is moved into `first`'s channel; `first` is cancelled before it runs.
    held.finish(MS, false);
    assert_eq!(s.queued(), 1);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let permit = second.await.unwrap().unwrap();
    assert_eq!((s.in_flight(), s.queued()), (1, 0));
    drop(permit);
    assert_eq!(s.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hand_off_at_the_moment_of_giving_up_is_neither_lost_nor_doubled() {
    let s = shedder(1, 10, Duration::from_millis(100));
    let held = s.acquire(Normal, None).await.unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let result = s.acquire(Normal, None).await;
    releaser.await.unwrap();
    match result {
        Ok(permit) => {
            assert_eq!(s.in_flight(), 1);
            drop(permit);
        }
        Err(_) => assert_eq!(s.shed_total(), 1),
    }
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
    assert!(s.acquire(Normal, None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn queue_size_zero_never_waits() {
    let s = shedder(1, 0, HOUR);
    let held = s.acquire(Normal, None).await.unwrap();
    let start = Instant::now();
    assert!(s.acquire(Critical, None).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((s.queued(), s.shed_by(ShedCause::QueueFull)), (0, 1));
    drop(held);
    assert!(s.acquire(Sheddable, None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_releases_its_slot_to_a_waiter() {
    let s = shedder(1, 10, HOUR);
    let held = s.acquire(Normal, None).await.unwrap();
    let next = waiter(&s, Normal).await;
    drop(held);
    let permit = next.await.unwrap().unwrap();
    drop(permit);
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn finish_feeds_the_adaptive_limit_on_the_shedders_clock() {
    let cfg = LoadSheddingConfig {
        adaptive_limit: AdaptiveLimitConfig {
            initial: 20,
            min: 1,
            max: 100,
            window: Duration::from_millis(100),
        },
        queue_size: 10,
        max_wait: HOUR,
    };
    let s = Shedder::new(&cfg).unwrap();
    s.acquire(Normal, None).await.unwrap().finish(MS, true);
    tokio::time::advance(Duration::from_millis(99)).await;
    s.acquire(Normal, None).await.unwrap().finish(MS, true);
    assert_eq!(s.limit(), 20, "the window has not closed yet");
    // Dropped permits record nothing: they do not close the window.
    tokio::time::advance(Duration::from_millis(1)).await;
    drop(s.acquire(Normal, None).await.unwrap());
    assert_eq!(s.limit(), 20);
    // The first finish after the window closes it: overload signals cut the limit by 1/4.
    s.acquire(Normal, None).await.unwrap().finish(MS, false);
    assert_eq!(s.limit(), 15);
}

#[test]
fn config_errors_are_reported_and_retry_after_is_whole_seconds() {
    let mut bad = config(1, 10, HOUR);
    bad.adaptive_limit.min = 0;
    assert!(Shedder::new(&bad).unwrap_err().contains("min"));
    for (max_wait, hint) in [
        (Duration::ZERO, 1),
        (Duration::from_millis(50), 1),
        (Duration::from_millis(2500), 3),
        (Duration::from_secs(4), 4),
        (HOUR, 30),
    ] {
        let s = Shedder::new(&config(1, 10, max_wait)).unwrap();
        assert_eq!(s.retry_after(), Duration::from_secs(hint), "{max_wait:?}");
    }
}

#[test]
fn the_priority_header_overrides_the_level_only_with_a_valid_value() {
    let cfg = PriorityConfig {
        level: Normal,
        header: Some("x-priority".to_string()),
    };
    let with = |values: &[&[u8]]| {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append("x-priority", http::HeaderValue::from_bytes(v).unwrap());
        }
        priority(&PriorityRule::new(&cfg), &headers)
    };
    assert_eq!(with(&[]), Normal);
    assert_eq!(with(&[b"critical"]), Critical);
    assert_eq!(with(&[b" Sheddable "]), Sheddable);
    assert_eq!(with(&[b"NORMAL"]), Normal);
    for invalid in [&b"urgent"[..], b"", b"critical!", b"\xffcritical", b"1"] {
        assert_eq!(with(&[invalid]), Normal, "{invalid:?}");
    }
    assert_eq!(
        with(&[b"critical", b"critical"]),
        Normal,
        "repeated: ignored"
    );

    let mut headers = http::HeaderMap::new();
    headers.insert("x-priority", http::HeaderValue::from_static("critical"));
    let no_header = PriorityConfig {
        level: Sheddable,
        header: None,
    };
    assert_eq!(
        priority(&PriorityRule::new(&no_header), &headers),
        Sheddable
    );
    let bad_name = PriorityConfig {
        level: Sheddable,
        header: Some("bad name\n".to_string()),
    };
    assert_eq!(priority(&PriorityRule::new(&bad_name), &headers), Sheddable);
}

async fn yields(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Many tasks on several threads acquire with mixed priorities, deadlines and cancellations.
/// Every task must finish (a lost waiter would wait for an hour), the limit must hold, and
/// nothing may remain in flight or queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_leaves_no_slot_and_no_waiter_behind() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 100;
    let s = shedder(3, 40, HOUR);
    let holding = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (s, holding, peak, counts) = (
                Arc::clone(&s),
                Arc::clone(&holding),
                Arc::clone(&peak),
                Arc::clone(&counts),
            );
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    let priority = [Sheddable, Normal, Critical][(t + i) % 3];
                    let give_up_at =
                        (i % 7 == 0).then(|| Instant::now() + Duration::from_micros(200));
                    let acquire = s.acquire(priority, give_up_at);
                    let result = if i % 5 == 0 {
                        tokio::select! {
                            biased;
                            r = acquire => Some(r),
                            () = yields(3) => None,
                        }
                    } else {
                        Some(acquire.await)
                    };
                    let outcome = match result {
                        Some(Ok(permit)) => {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            holding.fetch_sub(1, Ordering::SeqCst);
                            if i % 2 == 0 {
                                permit.finish(MS, false);
                            } else {
                                drop(permit);
                            }
                            0
                        }
                        Some(Err(_)) => 1,
                        None => 2,
                    };
                    counts[outcome].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("a waiter was lost: tasks never finished");
    let [ok, shed, cancelled] = counts.each_ref().map(|c| c.load(Ordering::Relaxed));
    assert_eq!(ok + shed + cancelled, (TASKS * ROUNDS) as u64);
    assert!(ok > 0);
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
    // Every shed the callers saw was counted; an evicted waiter may have been cancelled
    // before it noticed.
    assert!(s.shed_total() >= shed && s.shed_total() <= shed + cancelled);
    assert!(s.acquire(Normal, None).await.is_ok());
}
