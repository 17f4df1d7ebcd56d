//! `Epoch`: the clock the gateway hands to `portcullis-limits`, whose algorithms take time as
//! `Nanos` since an origin. Read through tokio's `Instant`, so paused-time tests drive it.

use portcullis_limits::Nanos;
use tokio::time::Instant;

/// A clock origin: `now()` is the time since it was made, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    /// An origin at the present instant.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// The time since the origin (zero if the clock reads earlier).
    pub fn now(&self) -> Nanos {
        Nanos::from_duration(Instant::now().saturating_duration_since(self.0))
    }
}
