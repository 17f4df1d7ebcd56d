//! `Store`: where per-key limit state lives; `MemoryStore`: the default in-process store,
//! sharded and bounded by `max_keys`.
//!
//! Layout: `shards` (a power of two, ≤ 64, each expecting at least 1 024 of the `max_keys`
//! keys) of one open-addressing table each (linear probing), with slots of 32 bytes
//! (`[key_lo, key_hi, w0, w1]`) allocated zeroed up front. A key maps to one shard by its high
//! word and to its home slot in that shard by its low word.
//!
//! Room: a shard holds up to `room` keys, `room` being its share of `max_keys` (all of it when
//! there is one shard) plus a margin of ten standard deviations of that share, because keys
//! fall into shards at random (secret-seeded hashes, so clients cannot aim at a shard); a
//! shard's table has `room + room / 4 + 1` slots, so it is at most 80 % full and probes stay
//! short. So the store holds at least `max_keys` keys without evicting any (with one shard,
//! exactly; with several, a shard fills up before the store holds `max_keys` keys with odds
//! of about 1e-20), never more than `capacity()`, and its memory is `memory_bytes()`, at
//! most `MemoryStore::MAX_BYTES_PER_KEY` per key of `max_keys` plus a fixed part, whatever
//! the traffic.
//!
//! Eviction, only when a new key finds its shard holding `room` keys: first every key whose
//! state is equivalent to fresh goes ([`Limit::weight`] 0: GCRA TAT ≤ now, window over), since
//! dropping those changes no decision. That sweep reads the whole shard, so it runs only when
//! a key may have become fresh (the shard keeps a lower bound of the instant its earliest key
//! does) and at most once per `slots / 8` new keys (a constant cost per new key, even when a
//! full shard churns). Otherwise the victim is the first fresh-equivalent key, else the key of
//! smallest weight (closest to fresh), among `SAMPLE` (16) keys taken round-robin: an
//! approximate LRU that also keeps the error small, since an evicted active key fails open
//! (its next request starts from a fresh budget). Both kinds of eviction are counted
//! ([`StoreStats`]).

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
const MAX_SHARDS: usize = 64;
/// A shard is only split off when each would still expect this many keys: the margin a
/// shard needs (ten standard deviations of its share) is then at most ~31 % of the share.
const MIN_KEYS_PER_SHARD: usize = 1024;
/// Keys compared to choose a victim when no key is fresh-equivalent.
const SAMPLE: usize = 16;

/// `[key_lo, key_hi, w0, w1]`; a zero key is an empty slot. Aligned so that a slot never
/// straddles two cache lines (two slots per line).
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(32))]
struct Slot([u64; SLOT_WORDS]);

impl Slot {
    fn is_empty(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0
    }

    fn state(&self) -> State {
        State {
            w0: self.0[2],
            w1: self.0[3],
        }
    }
}

#[derive(Debug)]
struct Table {
    /// `room + room / 4 + 1` slots: always at least one empty, so every probe ends.
    slots: Box<[Slot]>,
    len: usize,
    room: usize,
    /// Where the next victim sample starts.
    hand: usize,
    /// No key of this shard is fresh-equivalent before this instant (ns).
    sweep_at: u64,
    /// New keys since the last sweep: a sweep waits for `slots.len() / 8` of them, so its
    /// cost is spread over them even when each sweep frees little.
    since_sweep: usize,
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
}

/// `(shards, room per shard, slots per shard)` for `max_keys`.
fn geometry(max_keys: usize) -> (usize, usize, usize) {
    let max_keys = max_keys.max(1);
    let mut shards = 1;
    while shards < MAX_SHARDS && max_keys / (shards * 2) >= MIN_KEYS_PER_SHARD {
        shards *= 2;
    }
    let room = if shards == 1 {
        max_keys
    } else {
        // A shard's share is Binomial(max_keys, 1/shards): mean ≤ `share`, standard
        // deviation < sqrt(share). Ten of them (+1 for the integer root) and a little more.
        let share = max_keys.div_ceil(shards);
        share + 10 * (share.isqrt() + 1) + 16
    };
    (shards, room, room + room / 4 + 1)
}

/// `x` mapped onto `[0, n)` by multiply-shift (no division).
#[inline]
fn reduce(x: u64, n: usize) -> usize {
    ((u128::from(x) * n as u128) >> 64) as usize
}

impl Table {
    fn new(room: usize, slots: usize) -> Table {
        Table {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            len: 0,
            room,
            hand: 0,
            sweep_at: u64::MAX,
            since_sweep: slots,
            stats: StoreStats::default(),
        }
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 >= self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// The slot holding `(lo, hi)`, or else the empty slot where it would go.
    #[inline]
    fn probe(&self, lo: u64, hi: u64) -> Result<usize, usize> {
        let mut i = reduce(lo, self.slots.len());
        // At most every slot; there is always an empty one, so the loop ends before.
        for _ in 0..self.slots.len() {
            let s = &self.slots[i].0;
            if s[0] == lo && s[1] == hi {
                return Ok(i);
            }
            if s[0] == 0 && s[1] == 0 {
                return Err(i);
            }
            i = self.next(i);
        }
        Err(i)
    }

    /// Empties slot `i`, moving later keys of its cluster back (backward-shift deletion) so
    /// every key stays reachable from its home slot.
    fn remove(&mut self, mut i: usize) {
        let mut j = i;
        for _ in 0..self.slots.len() {
            j = self.next(j);
            if self.slots[j].is_empty() {
                break;
            }
            let home = reduce(self.slots[j].0[0], self.slots.len());
            // The key at `j` may move to `i` unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i] = Slot::default();
        self.len -= 1;
    }

    /// Removes every fresh-equivalent key; returns how many went.
    fn sweep(&mut self, limit: &Limit, now: u64) -> usize {
        let before = self.len;
        let mut sweep_at = u64::MAX;
        let mut i = 0;
        while i < self.slots.len() {
            let slot = self.slots[i];
            if slot.is_empty() {
                i += 1;
            } else if limit.weight(slot.state(), crate::time::Nanos(now)) == 0 {
                // A later key may shift into `i`: look at it again.
                self.remove(i);
            } else {
                sweep_at = sweep_at.min(limit.fresh_at(slot.state()).0);
                i += 1;
            }
        }
        self.sweep_at = sweep_at;
        self.since_sweep = 0;
        let freed = before - self.len;
        self.stats.evictions += freed as u64;
        freed
    }

    /// Removes the key of smallest weight among the next `SAMPLE` keys from the hand.
    fn evict_one(&mut self, limit: &Limit, now: u64) {
        let mut best: Option<(u64, usize)> = None;
        let mut seen = 0;
        let mut i = self.hand;
        for _ in 0..self.slots.len() {
            let slot = self.slots[i];
            if !slot.is_empty() {
                let w = limit.weight(slot.state(), crate::time::Nanos(now));
                if best.is_none_or(|(bw, _)| w < bw) {
                    best = Some((w, i));
                }
                seen += 1;
                if seen == SAMPLE || w == 0 {
                    break;
                }
            }
            i = self.next(i);
        }
        self.hand = self.next(i);
        if let Some((w, victim)) = best {
            self.remove(victim);
            self.stats.evictions += 1;
            if w > 0 {
                self.stats.evicted_active += 1;
            }
        }
    }
}

impl MemoryStore {
    /// The most bytes a store takes per key of `max_keys`, beyond [`Self::FIXED_BYTES`]:
    /// 32-byte slots, tables at most 80 % full, plus the shard margin.
    pub const MAX_BYTES_PER_KEY: usize = 54;
    /// The fixed part of a store's memory: the shards' locks and bookkeeping.
    pub const FIXED_BYTES: usize = MAX_SHARDS * 128 + 256;

    /// A store for `limit` that holds at least `max_keys` keys (at least 1) before it evicts
    /// any, and never more than [`MemoryStore::capacity`].
    pub fn new(limit: Limit, max_keys: usize) -> MemoryStore {
        let (shards, room, slots) = geometry(max_keys);
        let shards = (0..shards)
            .map(|_| Shard(Mutex::new(Table::new(room, slots))))
            .collect();
        MemoryStore { limit, shards }
    }

    /// The most keys this store will ever hold: `max_keys` with one shard, else a margin
    /// more (each shard's share of `max_keys` plus its margin).
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| lock(s).room).sum()
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
            + self
                .shards
                .iter()
                .map(|s| lock(s).slots.len() * std::mem::size_of::<Slot>())
                .sum::<usize>()
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
        let mut table = lock(shard);
        let empty = match table.probe(lo, hi) {
            Ok(i) => {
                let slot = &mut table.slots[i].0;
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
            Err(empty) => empty,
        };
        let (next, decision) = self.limit.transition(State::default(), request);
        let now = request.now.0;
        if self.limit.weight(next, request.now) == 0 {
            // Still fresh-equivalent (denied, or a peek): nothing worth storing.
            return decision;
        }
        let mut empty = empty;
        if table.len >= table.room {
            if now >= table.sweep_at && table.since_sweep >= table.slots.len() / 8 {
                table.sweep(&self.limit, now);
            }
            if table.len >= table.room {
                table.evict_one(&self.limit, now);
            }
            // Removals shift keys: find the new key's slot again.
            match table.probe(lo, hi) {
                Err(i) => empty = i,
                Ok(_) => return decision,
            }
            if table.len >= table.room {
                // Nothing could be evicted (unreachable with room ≥ 1): fail open.
                return decision;
            }
        }
        let fresh_at = self.limit.fresh_at(next).0;
        table.sweep_at = table.sweep_at.min(fresh_at);
        table.since_sweep = table.since_sweep.saturating_add(1);
        table.slots[empty] = Slot([lo, hi, next.w0, next.w1]);
        table.len += 1;
        decision
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
