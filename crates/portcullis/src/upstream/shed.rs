//! Load shedding of one upstream: an adaptive concurrency limit ([`AdaptiveLimit`]) in front
//! of the upstream and a bounded wait queue with three priority classes behind it.
//!
//! # Admission
//!
//! - **Fast path.** When nobody is queued and the limit has a free slot, [`Shedder::acquire`]
//!   takes it with two atomic operations (a load of the queue length, the in-flight CAS)
//!   plus the permit's reference counts: no lock, no allocation.
//! - **Queue.** Otherwise the request enters a queue of at most `queue_size` waiters, kept
//!   as one FIFO per [`Priority`]. A new arrival never overtakes a waiter of its own or a
//!   higher priority: it first hands any free slot to the waiters, and only if the queue is
//!   then empty may it take a slot itself. It does overtake lower-priority waiters, because
//!   it is queued in its class and the best waiter is served first. (A fast-path arrival
//!   racing a waiter that is enqueueing at the same instant may win; neither came first.)
//! - **Hand-off.** When a slot frees (a [`ShedPermit`] is finished or dropped), the releaser
//!   takes the queue's mutex and gives slots to the highest-priority, oldest waiters while
//!   the limit has room. A slot is moved as the [`AdaptivePermit`] itself through the
//!   waiter's oneshot channel, under the mutex, so it cannot be counted twice; a waiter that
//!   leaves (timeout or cancellation) takes the same mutex, so it either finds itself still
//!   queued and removes itself, or finds the permit already in its channel. A waiter whose
//!   timer fires at the very moment it was handed a slot keeps the slot; a cancelled waiter
//!   that was handed a slot releases it again (to the next waiter). The queue length is
//!   mirrored in an atomic so that releasers skip the mutex when nobody waits; a SeqCst fence
//!   on both sides (after the in-flight decrement, after the enqueue) ensures that either
//!   the releaser sees the new waiter or the waiter's own retry sees the free slot.
//! - **Full queue.** An arrival that finds `queue_size` waiters evicts the newest waiter of
//!   the lowest class strictly below its own priority (that waiter is shed), or, if there is
//!   none, is shed itself. Under overload `sheddable` requests go first and `critical` last.
//!   `queue_size: 0` means no waiting at all: no free slot, shed.
//! - **Waiting too long.** A waiter is shed when `max_wait` has passed, or at the request's
//!   deadline (`give_up_at`) if that comes first; a request whose wait would end at once
//!   (deadline already past, `max_wait: 0s`) is not queued, so it cannot evict anyone. The
//!   caller can tell the two apart by comparing the clock with its deadline (504
//!   `deadline_exceeded` rather than 503 `shed`).
//!
//! A shed request gets `Err(retry_after)`: `max_wait` rounded up to whole seconds, at least
//! 1 s and at most 30 s. A shed client retrying sooner than a queue turnover would only add
//! to the overload; more than a few seconds is no longer a hint but a guess.
//!
//! # Latency samples
//!
//! [`ShedPermit::finish`] reports the latency of the upstream exchange (to the response
//! head) and whether the upstream signalled overload (timeout or 503); a window that closes
//! recomputes the limit (logged at debug). Time is `tokio::time::Instant` since the
//! shedder's creation, converted to [`Nanos`]. A permit dropped without `finish` releases its
//! slot and records nothing (the request failed before an exchange could be measured).
//!
//! Sheds are counted per [`ShedCause`] in atomics and logged at debug only, so that a shed
//! storm does not flood the logs; metrics read the counters.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use portcullis_limits::{AdaptiveConfig, AdaptiveLimit, AdaptivePermit, Nanos};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::schema::{LoadSheddingConfig, Priority, PriorityConfig};

/// Bounds of the `Retry-After` hint of a shed request.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a request was shed (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedCause {
    /// The queue was full of waiters of the same or a higher priority, or a higher-priority
    /// arrival evicted the waiter.
    QueueFull,
    /// The waiter's `max_wait` or the request's deadline passed.
    Timeout,
}

impl ShedCause {
    pub const ALL: [ShedCause; 2] = [ShedCause::QueueFull, ShedCause::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedCause::QueueFull => "queue_full",
            ShedCause::Timeout => "timeout",
        }
    }
}

/// The load shedder of one upstream; see the module docs.
#[derive(Debug)]
pub struct Shedder {
    shared: Arc<Shared>,
    max_wait: Duration,
    retry_after: Duration,
}

/// What permits and waiters reach back to.
#[derive(Debug)]
struct Shared {
    limit: Arc<AdaptiveLimit>,
    epoch: crate::clock::Epoch,
    queue_size: usize,
    queue: Mutex<Queue>,
    /// `queue.len`, readable without the lock (written only under it).
    queued: AtomicUsize,
    shed_queue_full: AtomicU64,
    shed_timeout: AtomicU64,
}

/// The waiters, one FIFO per priority class.
#[derive(Debug, Default)]
struct Queue {
    sheddable: VecDeque<Waiter>,
    normal: VecDeque<Waiter>,
    critical: VecDeque<Waiter>,
    len: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    slot: oneshot::Sender<AdaptivePermit>,
}

/// A slot of the upstream's concurrency limit; see [`ShedPermit::finish`].
#[derive(Debug)]
pub struct ShedPermit {
    permit: Option<AdaptivePermit>,
    shared: Arc<Shared>,
}

impl Shedder {
    /// Builds the shedder; the error names what is wrong with the adaptive limit.
    pub fn new(cfg: &LoadSheddingConfig) -> Result<Shedder, String> {
        let adaptive = &cfg.adaptive_limit;
        let limit = AdaptiveLimit::new(AdaptiveConfig {
            initial: adaptive.initial,
            min: adaptive.min,
            max: adaptive.max,
            window: adaptive.window,
        })?;
        let whole_secs = cfg.max_wait.as_secs() + u64::from(cfg.max_wait.subsec_nanos() > 0);
        let retry_after = Duration::from_secs(whole_secs).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER);
        Ok(Shedder {
            shared: Arc::new(Shared {
                limit,
                epoch: crate::clock::Epoch::start(),
                queue_size: usize::try_from(cfg.queue_size).unwrap_or(usize::MAX),
                queue: Mutex::new(Queue::default()),
                queued: AtomicUsize::new(0),
                shed_queue_full: AtomicU64::new(0),
                shed_timeout: AtomicU64::new(0),
            }),
            max_wait: cfg.max_wait,
            retry_after,
        })
    }

    /// A slot, waiting in the queue up to `max_wait` (or until `give_up_at`, the request's
    /// deadline, if earlier). `Err(retry_after)` means shed: 503 reason `shed` with
    /// `Retry-After`. Dropping the future while it waits (the client went away) leaves the
    /// queue and never keeps a slot.
    pub async fn acquire(
        &self,
        priority: Priority,
        give_up_at: Option<Instant>,
    ) -> Result<ShedPermit, Duration> {
        let shared = &self.shared;
        if shared.queued.load(Ordering::Relaxed) == 0 {
            if let Some(permit) = shared.limit.try_acquire() {
                return Ok(shared.permit(permit));
            }
        }
        let now = Instant::now();
        let until = match (now.checked_add(self.max_wait), give_up_at) {
            (Some(max_wait), Some(deadline)) => Some(max_wait.min(deadline)),
            (max_wait, deadline) => max_wait.or(deadline),
        };
        let may_wait = until.is_none_or(|until| until > now);
        let (id, slot) = match shared.enter(priority, may_wait) {
            Entry::Granted(permit) => return Ok(shared.permit(permit)),
            Entry::Shed(cause) => return Err(self.shed(priority, cause)),
            Entry::Queued { id, slot } => (id, slot),
        };
        let mut waiting = Waiting {
            shared,
            priority,
            id,
            slot,
            armed: true,
        };
        let received = match until {
            Some(until) => tokio::time::timeout_at(until, &mut waiting.slot).await.ok(),
            None => Some((&mut waiting.slot).await),
        };
        match received {
            Some(Ok(permit)) => {
                waiting.armed = false;
                Ok(shared.permit(permit))
            }
            Some(Err(_evicted)) => {
                // Counted by the arrival that evicted this waiter.
                waiting.armed = false;
                tracing::debug!(?priority, "request shed: evicted from the queue");
                Err(self.retry_after)
            }
            None => match waiting.withdraw() {
                Withdrawn::Granted(permit) => Ok(shared.permit(permit)),
                Withdrawn::Removed => Err(self.shed(priority, ShedCause::Timeout)),
                Withdrawn::Evicted => {
                    tracing::debug!(?priority, "request shed: evicted from the queue");
                    Err(self.retry_after)
                }
            },
        }
    }

    /// The current adaptive concurrency limit.
    pub fn limit(&self) -> u32 {
        self.shared.limit.limit()
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.shared.limit.in_flight()
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Requests shed since the shedder was built, all causes.
    pub fn shed_total(&self) -> u64 {
        ShedCause::ALL.into_iter().map(|c| self.shed_by(c)).sum()
    }

    /// Requests shed for `cause` since the shedder was built.
    pub fn shed_by(&self, cause: ShedCause) -> u64 {
        self.shared.counter(cause).load(Ordering::Relaxed)
    }

    /// The `Retry-After` hint given to shed requests.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Counts and logs a shed; returns the `Retry-After` hint.
    fn shed(&self, priority: Priority, cause: ShedCause) -> Duration {
        self.shared.counter(cause).fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?priority, cause = cause.as_str(), "request shed");
        self.retry_after
    }
}

/// The result of [`Shared::enter`].
enum Entry {
    Granted(AdaptivePermit),
    Queued {
        id: u64,
        slot: oneshot::Receiver<AdaptivePermit>,
    },
    Shed(ShedCause),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counter(&self, cause: ShedCause) -> &AtomicU64 {
        match cause {
            ShedCause::QueueFull => &self.shed_queue_full,
            ShedCause::Timeout => &self.shed_timeout,
        }
    }

    fn permit(self: &Arc<Self>, permit: AdaptivePermit) -> ShedPermit {
        ShedPermit {
            permit: Some(permit),
            shared: Arc::clone(self),
        }
    }

    /// The slow path of `acquire`: a slot if nobody is ahead, else (if `may_wait`: the
    /// wait would not end at once) a place in the queue, evicting a lower-priority waiter if
    /// full, else shed.
    fn enter(&self, priority: Priority, may_wait: bool) -> Entry {
        let mut queue = self.lock();
        // Free slots go to those already waiting.
        self.dispatch(&mut queue);
        if queue.len == 0 {
            if let Some(permit) = self.limit.try_acquire() {
                return Entry::Granted(permit);
            }
        }
        if !may_wait {
            return Entry::Shed(ShedCause::Timeout);
        }
        if queue.len >= self.queue_size {
            if !queue.evict_below(priority) {
                return Entry::Shed(ShedCause::QueueFull);
            }
            self.shed_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, slot) = oneshot::channel();
        let id = queue.push(priority, tx);
        self.queued.store(queue.len, Ordering::Relaxed);
        // Pairs with the fence in `release`: a slot freed since our `try_acquire` is seen
        // by this dispatch, or our waiter is seen by the releaser.
        fence(Ordering::SeqCst);
        self.dispatch(&mut queue);
        Entry::Queued { id, slot }
    }

    /// Hands free slots to the best waiters while both exist. Called under the lock.
    fn dispatch(&self, queue: &mut Queue) {
        while queue.len > 0 {
            let Some(mut permit) = self.limit.try_acquire() else {
                break;
            };
            // A waiter whose receiver is gone cannot be queued (it leaves under the lock
            // first), but should one be, the permit goes to the next waiter.
            while let Some(waiter) = queue.pop_best() {
                match waiter.slot.send(permit) {
                    Ok(()) => break,
                    Err(returned) => permit = returned,
                }
            }
        }
        self.queued.store(queue.len, Ordering::Relaxed);
    }

    /// After a slot was freed: hands it on if anyone waits.
    fn release(&self) {
        // Pairs with the fence in `enter`; see there.
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::Relaxed) > 0 {
            let mut queue = self.lock();
            self.dispatch(&mut queue);
        }
    }

    fn now(&self) -> Nanos {
        self.epoch.now()
    }
}

impl Queue {
    fn class(&mut self, priority: Priority) -> &mut VecDeque<Waiter> {
        match priority {
            Priority::Sheddable => &mut self.sheddable,
            Priority::Normal => &mut self.normal,
            Priority::Critical => &mut self.critical,
        }
    }

    fn push(&mut self, priority: Priority, slot: oneshot::Sender<AdaptivePermit>) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.class(priority).push_back(Waiter { id, slot });
        self.len += 1;
        id
    }

    /// The highest-priority, oldest waiter.
    fn pop_best(&mut self) -> Option<Waiter> {
        let waiter = [Priority::Critical, Priority::Normal, Priority::Sheddable]
            .into_iter()
            .find_map(|p| self.class(p).pop_front())?;
        self.len -= 1;
        Some(waiter)
    }

    /// Drops the newest waiter of the lowest class below `priority` (its receiver then
    /// reports the eviction); false if there is none.
    fn evict_below(&mut self, priority: Priority) -> bool {
        let evicted = [Priority::Sheddable, Priority::Normal]
            .into_iter()
            .filter(|p| *p < priority)
            .find_map(|p| self.class(p).pop_back());
        if evicted.is_some() {
            self.len -= 1;
        }
        evicted.is_some()
    }

    /// Takes waiter `id` out of its class; false if it is no longer queued.
    fn remove(&mut self, priority: Priority, id: u64) -> bool {
        let class = self.class(priority);
        let Some(at) = class.iter().position(|w| w.id == id) else {
            return false;
        };
        class.remove(at);
        self.len -= 1;
        true
    }
}

/// A queued `acquire`; leaving it (timeout, or the future dropped) goes through `withdraw`.
struct Waiting<'a> {
    shared: &'a Arc<Shared>,
    priority: Priority,
    id: u64,
    slot: oneshot::Receiver<AdaptivePermit>,
    /// Still queued as far as this side knows: dropping must withdraw.
    armed: bool,
}

/// How a waiter left the queue.
enum Withdrawn {
    /// It was still queued and is not any more.
    Removed,
    /// A slot had already been handed to it.
    Granted(AdaptivePermit),
    /// A higher-priority arrival had evicted it.
    Evicted,
}

impl Waiting<'_> {
    /// Leaves the queue, or collects what the queue decided for this waiter already. Both
    /// happen under the queue's lock, so a hand-off is either complete or not started.
    fn withdraw(&mut self) -> Withdrawn {
        self.armed = false;
        let mut queue = self.shared.lock();
        if queue.remove(self.priority, self.id) {
            self.shared.queued.store(queue.len, Ordering::Relaxed);
            return Withdrawn::Removed;
        }
        drop(queue);
        match self.slot.try_recv() {
            Ok(permit) => Withdrawn::Granted(permit),
            Err(_) => Withdrawn::Evicted,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Withdrawn::Granted(permit) = self.withdraw() {
                // Released (and handed on) outside the lock.
                drop(self.shared.permit(permit));
            }
        }
    }
}

impl ShedPermit {
    /// Ends the request: `latency` of the upstream exchange (to the response head),
    /// `overloaded`: a timeout or 503 from the upstream (an explicit overload signal).
    /// Releases the slot, handing it to the best waiter.
    pub fn finish(mut self, latency: Duration, overloaded: bool) {
        if let Some(permit) = self.permit.take() {
            let now = self.shared.now();
            if let Some(limit) = permit.finish(now, latency, overloaded) {
                tracing::debug!(limit, "adaptive concurrency limit recomputed");
            }
        }
        // `drop` hands the slot on.
    }
}

impl Drop for ShedPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.shared.release();
    }
}

/// A route's priority rule, compiled: its level, and the header that may override it (the
/// name parsed once, not per request).
#[derive(Debug, Clone)]
pub struct PriorityRule {
    pub level: Priority,
    pub header: Option<http::HeaderName>,
}

impl PriorityRule {
    /// A header name that does not parse (validation refuses it) leaves only the level.
    pub fn new(cfg: &PriorityConfig) -> Self {
        Self {
            level: cfg.level,
            header: cfg
                .header
                .as_deref()
                .and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()),
        }
    }
}

/// The request's priority: the route's `priority.level`, overridden by the `priority.header`
/// header when it has exactly one value that names a priority (`critical`, `normal`,
/// `sheddable`, ASCII case-insensitive); other values and a repeated header are ignored.
pub fn priority(rule: &PriorityRule, headers: &http::HeaderMap) -> Priority {
    let Some(name) = &rule.header else {
        return rule.level;
    };
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return rule.level;
    };
    let value = value.as_bytes().trim_ascii();
    [
        (&b"critical"[..], Priority::Critical),
        (b"normal", Priority::Normal),
        (b"sheddable", Priority::Sheddable),
    ]
    .into_iter()
    .find(|(name, _)| value.eq_ignore_ascii_case(name))
    .map_or(rule.level, |(_, p)| p)
}

#[cfg(test)]
#[path = "shed_tests.rs"]
mod tests;
