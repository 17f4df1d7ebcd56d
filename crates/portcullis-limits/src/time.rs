//! `Nanos`: the caller-supplied monotonic instant every algorithm takes as its "now".

use std::time::Duration;

/// A monotonic instant or a span, in nanoseconds since an epoch the caller chooses (for the
/// gateway: process start on its clock). All instants passed to one limit must share that
/// epoch. `u64` nanoseconds cover 584 years; arithmetic on it saturates instead of wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The epoch itself.
    pub const ZERO: Nanos = Nanos(0);

    /// `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Nanos {
        Nanos(secs.saturating_mul(1_000_000_000))
    }

    /// `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Nanos {
        Nanos(millis.saturating_mul(1_000_000))
    }

    /// A duration as nanoseconds, saturating at `u64::MAX` (584 years).
    pub fn from_duration(d: Duration) -> Nanos {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// This span as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Nanos {
        Nanos(self.0.saturating_add(Nanos::from_duration(d).0))
    }
}

impl From<Duration> for Nanos {
    fn from(d: Duration) -> Nanos {
        Nanos::from_duration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(Nanos::from_secs(2).0, 2_000_000_000);
        assert_eq!(Nanos::from_millis(3).0, 3_000_000);
        assert_eq!(Nanos::from_secs(u64::MAX).0, u64::MAX);
        assert_eq!(Nanos::from_duration(Duration::MAX).0, u64::MAX);
        assert_eq!(Nanos(5).saturating_add(Duration::MAX).0, u64::MAX);
        assert_eq!(Nanos(1_500).as_duration(), Duration::from_nanos(1_500));
    }
}
