//! `Key`: a limited client's identity as a 128-bit keyed hash, so every stored key has the
//! same small size whatever the client key (IP, header, token) looked like.

use std::hash::{Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

/// A 128-bit hash of a client key; never zero (zero marks an empty store slot).
///
/// Collision odds: with keys from [`KeyHasher`] (SipHash-1-3, 128-bit output, secret seed),
/// two distinct client keys share a `Key` with probability 2^-128; among `n` live keys the
/// chance of any collision is about n² / 2^129 (≈ 1.5e-27 for a million keys). The secret
/// seed keeps clients from crafting collisions to share or spoil another client's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(u128);

impl Key {
    /// A key from an already well-mixed 128-bit hash (0 is mapped to 1).
    pub const fn from_hash(hash: u128) -> Key {
        Key(if hash == 0 { 1 } else { hash })
    }

    /// The 128-bit value.
    pub const fn get(self) -> u128 {
        self.0
    }
}

/// Hashes client keys into [`Key`]s with a secret seed. Give every store of one gateway
/// process the same hasher (or seed); a shared store across processes needs a shared seed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHasher {
    seed: [u64; 2],
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher { seed: <secret> }")
    }
}

impl KeyHasher {
    /// A hasher with this secret seed (the gateway draws it at random at start).
    pub const fn new(seed: [u64; 2]) -> KeyHasher {
        KeyHasher { seed }
    }

    /// The key for these bytes.
    pub fn key(&self, bytes: &[u8]) -> Key {
        let mut h = SipHasher13::new_with_keys(self.seed[0], self.seed[1]);
        h.write(bytes);
        Key::from_hash(h.finish128().as_u128())
    }

    /// The key for any hashable value (e.g. an `IpAddr`, or a tuple of route and client).
    pub fn key_of<T: Hash + ?Sized>(&self, value: &T) -> Key {
        let mut h = SipHasher13::new_with_keys(self.seed[0], self.seed[1]);
        value.hash(&mut h);
        Key::from_hash(h.finish128().as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_bytes_and_seed_and_are_never_zero() {
        let a = KeyHasher::new([1, 2]);
        let b = KeyHasher::new([3, 4]);
        assert_eq!(a.key(b"10.0.0.1"), a.key(b"10.0.0.1"));
        assert_ne!(a.key(b"10.0.0.1"), a.key(b"10.0.0.2"));
        assert_ne!(a.key(b"10.0.0.1"), b.key(b"10.0.0.1"));
        assert_eq!(a.key_of(&7u64), a.key_of(&7u64));
        assert_eq!(Key::from_hash(0).get(), 1);
        assert_eq!(format!("{a:?}"), "KeyHasher { seed: <secret> }");
    }
}
