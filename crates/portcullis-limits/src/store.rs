//! `Store`: where per-key limit state lives; `MemoryStore`: the default in-process store,
//! sharded and bounded by `max_keys`.
//!
//! Layout: `shards` (a power of two, ≤ 64) × `buckets` × `ways` (≤ 8) slots of 32 bytes
//! (`[key_lo, key_hi, w0, w1]`), allocated zeroed up front; a key maps to one shard (by
//! its high word) and one bucket in it (by its low word), like a set-associative cache.
//! So the number of keys never exceeds `capacity() ≤ max_keys` and memory is
//! `memory_bytes()`, whatever the traffic.
//!
//! Eviction, when a new key finds its bucket full: the slot whose state has the smallest
//! [`Limit::weight`] goes. Weight 0 means the state is equivalent to fresh (GCRA TAT ≤ now,
//! window expired), so dropping it changes no decision; such slots go first. Otherwise the
//! victim is the key closest to fresh — an approximate LRU that also minimizes the error:
//! an evicted active key fails open (its next request starts from a fresh budget), and it
//! gets back at most as much credit as any other key of its bucket holds. Both kinds of
//! eviction are counted ([`StoreStats`]).

use std::sync::{Mutex, PoisonError};

use crate::decision::Decision;
use crate::gcra;
use crate::key::Key;
use crate::limit::{Algorithm, Limit, Request, State};

/// Keyed state behind a policy. A store holds the state of one [`Limit`] and must apply
/// [`Limit::transition`] atomically per key; a shared store (Redis) does it in a script
/// that mirrors the integer arithmetic, with `Limit::fresh_at` as the key's expiry.
pub trait Store: Send + Sync {
    /// The limit whose counters this store holds.
    fn limit(&self) -> &Limit;
    /// Decide `request` for `key`, consuming its cost when allowed or delayed.
    fn acquire(&self, key: Key, request: Request) -> Decision;
}

/// Eviction counters of a [`MemoryStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys dropped to make room (including the harmless, fresh-equivalent ones).
    pub evictions: u64,
    /// Of those, keys whose state was still active: they failed open (fresh budget).
    pub evicted_active: u64,
}

const SLOT_WORDS: usize = 4;
const MAX_WAYS: usize = 8;
const MAX_SHARDS: usize = 64;

/// `[key_lo, key_hi, w0, w1]`; a zero key is an empty slot. Aligned so that a slot never
/// straddles two cache lines (two slots per line).
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(32))]
struct Slot([u64; SLOT_WORDS]);

#[derive(Debug)]
struct Table {
    slots: Vec<Slot>,
    len: usize,
    stats: StoreStats,
}

/// A shard on its own cache lines, so shard locks do not false-share.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Table>);

/// The default store: in-process, sharded by key, bounded by `max_keys`.
#[derive(Debug)]
pub struct MemoryStore {
    limit: Limit,
    shards: Box<[Shard]>,
    buckets: u64,
    ways: usize,
}

impl MemoryStore {
    /// A store for `limit` that keeps at most `max_keys` keys (at least 1).
    pub fn new(limit: Limit, max_keys: usize) -> MemoryStore {
        let max_keys = max_keys.max(1);
        let ways = max_keys.min(MAX_WAYS);
        let mut shards = (max_keys / ways).min(MAX_SHARDS);
        // Round down to a power of two: the shard is chosen by masking.
        shards = 1 << (usize::BITS - 1 - shards.leading_zeros());
        let buckets = max_keys / (shards * ways);
        let slots_per_shard = buckets * ways;
        let shards = (0..shards)
            .map(|_| {
                Shard(Mutex::new(Table {
                    slots: vec![Slot::default(); slots_per_shard],
                    len: 0,
                    stats: StoreStats::default(),
                }))
            })
            .collect();
        MemoryStore {
            limit,
            shards,
            buckets: buckets as u64,
            ways,
        }
    }

    /// The most keys this store will ever hold (≤ `max_keys`).
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.buckets as usize * self.ways
    }

    /// Keys currently held (locks each shard in turn; not for the hot path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this store occupies: fixed at construction from `max_keys`.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<MemoryStore>()
            + self.shards.len() * std::mem::size_of::<Shard>()
            + self.capacity() * std::mem::size_of::<Slot>()
    }

    /// Eviction counters, summed over shards.
    pub fn stats(&self) -> StoreStats {
        self.shards.iter().fold(StoreStats::default(), |acc, s| {
            let st = lock(s).stats;
            StoreStats {
                evictions: acc.evictions + st.evictions,
                evicted_active: acc.evicted_active + st.evicted_active,
            }
        })
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, Table> {
    // Nothing panics while holding the lock, but a poisoned table is still consistent.
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store for MemoryStore {
    fn limit(&self) -> &Limit {
        &self.limit
    }

    fn acquire(&self, key: Key, request: Request) -> Decision {
        let k = key.get();
        let (lo, hi) = (k as u64, (k >> 64) as u64);
        let shard = &self.shards[(hi as usize) & (self.shards.len() - 1)];
        // Map `lo` onto [0, buckets) by multiply-shift (no division).
        let bucket = ((u128::from(lo) * u128::from(self.buckets)) >> 64) as usize;
        let first = bucket * self.ways;
        let mut table = lock(shard);
        let Table { slots, len, stats } = &mut *table;
        let Some(ways) = slots.get_mut(first..first + self.ways) else {
            // Unreachable by construction (bucket < buckets); fail open rather than panic.
            return self.limit.transition(State::default(), request).1;
        };
        if let Some(Slot(slot)) = ways.iter_mut().find(|Slot(s)| s[0] == lo && s[1] == hi) {
            if self.limit.algorithm() == Algorithm::Gcra {
                // Hot path: only the TAT update under the lock; headers after unlocking.
                let step = gcra::step(&self.limit, slot[2], request);
                slot[2] = step.tat;
                drop(table);
                return gcra::decision(&self.limit, step, request.now.0);
            }
            let (next, decision) = self.limit.transition(
                State {
                    w0: slot[2],
                    w1: slot[3],
                },
                request,
            );
            slot[2] = next.w0;
            slot[3] = next.w1;
            return decision;
        }
        let (next, decision) = self.limit.transition(State::default(), request);
        if self.limit.weight(next, request.now) == 0 {
            // Still fresh-equivalent (denied, or a peek): nothing worth storing.
            return decision;
        }
        let victim = match ways.iter().position(|Slot(s)| s[0] == 0 && s[1] == 0) {
            Some(empty) => {
                *len += 1;
                empty
            }
            None => {
                let mut best = (u64::MAX, 0);
                for (i, Slot(s)) in ways.iter().enumerate() {
                    let w = self.limit.weight(State { w0: s[2], w1: s[3] }, request.now);
                    if w < best.0 {
                        best = (w, i);
                    }
                }
                stats.evictions += 1;
                if best.0 > 0 {
                    stats.evicted_active += 1;
                }
                best.1
            }
        };
        ways[victim] = Slot([lo, hi, next.w0, next.w1]);
        decision
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
