//! Black-box tests of rate limiting through a running in-process gateway and origin: the
//! three rate algorithms and the concurrency limit, the refusal and the `RateLimit` headers,
//! keys and missing keys, cost, shadow and delay modes, where policies attach (listener,
//! route, `defaults`), the memory bound, and config errors.
//!
//! Every rate policy here uses a window long enough (`1h`) that wall-clock time cannot change
//! an outcome while a test runs; only delay mode depends on time by nature (see `modes`).
//! Refill over time is covered exactly by the paused-time unit tests of the policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test on setup errors"
)]

mod algorithms;
mod attach;
mod capacity;
mod keys;
mod modes;
mod support;
