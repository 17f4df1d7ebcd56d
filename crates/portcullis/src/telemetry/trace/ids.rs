//! Trace and span ids: one small random generator per thread, used both by the SDK (as the
//! provider's `IdGenerator`) and by the unsampled path, which makes its ids without the SDK;
//! and the hand-over of a trace id already chosen (and sampled) to the SDK's next root span.

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, RandomState};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::IdGenerator;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(seeded());
    /// The id the SDK's next root span on this thread gets (see `with_trace_id`).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// A generator seeded from the OS, or, should that fail, from std's per-process hash keys.
fn seeded() -> SmallRng {
    SmallRng::try_from_os_rng()
        .unwrap_or_else(|_| SmallRng::seed_from_u64(RandomState::new().hash_one(0u8)))
}

/// A random, valid (non-zero) trace id.
pub fn trace_id() -> TraceId {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        loop {
            let id: u128 = rng.random();
            if id != 0 {
                return TraceId::from(id);
            }
        }
    })
}

/// A random, valid (non-zero) span id.
pub fn span_id() -> SpanId {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        loop {
            let id: u64 = rng.random();
            if id != 0 {
                return SpanId::from(id);
            }
        }
    })
}

/// Runs `build` (which starts one root span with the SDK) so that the span gets `id` as its
/// trace id: the id the sampling decision was already made on.
pub fn with_trace_id<R>(id: TraceId, build: impl FnOnce() -> R) -> R {
    NEXT_TRACE_ID.set(Some(id));
    let built = build();
    // Not taken if the SDK built no span (a provider already shut down).
    NEXT_TRACE_ID.set(None);
    built
}

/// The provider's id generator: the thread's generator, and the handed-over trace id.
#[derive(Debug, Default)]
pub struct Ids;

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.take().unwrap_or_else(trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        span_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_differ() {
        assert_ne!(trace_id(), TraceId::INVALID);
        assert_ne!(span_id(), SpanId::INVALID);
        assert_ne!(trace_id(), trace_id());
        assert_ne!(span_id(), span_id());
    }

    #[test]
    fn a_handed_over_trace_id_is_used_once() {
        let id = TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c);
        let first = with_trace_id(id, || Ids.new_trace_id());
        assert_eq!(first, id);
        assert_ne!(Ids.new_trace_id(), id, "the next root gets a random id");
        with_trace_id(id, || ());
        assert_ne!(Ids.new_trace_id(), id, "an id not taken is not left behind");
    }
}
