//! A separate crate because these are pure rate-limiting algorithms — no I/O, no clock, no
//! async runtime — so the gateway's policies, the benches, the fuzzers and a shared store
//! (a later Redis store mirrors the same integer arithmetic in a script) all reuse one
//! definition of every limit.
//!
//! Time is passed in by the caller as [`Nanos`] (a monotonic instant in nanoseconds since an
//! epoch of the caller's choosing); nothing in here reads a clock.
//!
//! - [`Limit`] describes a limit (GCRA token bucket, fixed window or sliding window counter);
//!   it is `Hash + Eq`, so it doubles as the identity under which a registry keeps counters
//!   across config reloads.
//! - [`Limit::transition`] is the pure, deterministic state transition: `(State, Request) ->
//!   (State, Decision)`. Every store runs exactly this, atomically per key.
//! - [`Store`] is the keyed-counter storage behind a policy; [`MemoryStore`] is the default,
//!   sharded and bounded by `max_keys`. [`DirectGcra`] is a single lock-free GCRA cell for
//!   limits that are not keyed.
//! - [`Decision`] carries what the RateLimit / Retry-After headers need, and an [`Outcome`]
//!   that is `Allowed`, `Delayed` (slot reserved, wait then proceed) or `Denied`.
//! - [`ConcurrencyLimit`] caps requests in flight with a permit released on drop;
//!   [`AdaptiveLimit`] moves that cap with measured latency (no min-RTT probing dips).
//! - [`Breaker`] is the circuit-breaker state machine (count or time window, failure and
//!   slow-call rates, growing open durations, half-open probes), reporting each transition.
//! - [`RetryBudget`] bounds retries to a share of requests plus a floor per second;
//!   [`Backoff`] is full-jitter exponential backoff, [`honour_retry_after`] merges an
//!   upstream's `Retry-After`.
//!
//! ```
//! use std::time::Duration;
//! use portcullis_limits::{KeyHasher, Limit, MemoryStore, Nanos, Request, Store};
//!
//! // 100 requests per minute per client, bursts of 10, at most 10 000 clients tracked.
//! let limit = Limit::gcra(100, Duration::from_secs(60), 10).unwrap();
//! let store = MemoryStore::new(limit, 10_000);
//! let keys = KeyHasher::new([1, 2]);
//! let now = Nanos::from_secs(5);
//! let decision = store.acquire(keys.key(b"203.0.113.7"), Request::new(now));
//! assert!(decision.is_allowed());
//! assert_eq!(decision.remaining, 9);
//! ```

mod adaptive;
mod breaker;
mod concurrency;
mod decision;
mod direct;
mod gcra;
mod key;
mod limit;
mod retry;
mod store;
mod time;
mod window;

pub use adaptive::{AdaptiveConfig, AdaptiveLimit, AdaptivePermit};
pub use breaker::{
    Admission, Breaker, BreakerConfig, BreakerState, BreakerWindow, Cause, Transition,
};
pub use concurrency::{ConcurrencyLimit, Permit};
pub use decision::{Decision, Outcome};
pub use direct::DirectGcra;
pub use key::{Key, KeyHasher};
pub use limit::{Algorithm, Limit, LimitError, Request, State};
pub use retry::{
    honour_retry_after, Backoff, RetryBudget, RetryBudgetStats, BUCKETS as RETRY_BUDGET_BUCKETS,
};
pub use store::{MemoryStore, Store, StoreStats};
pub use time::Nanos;
