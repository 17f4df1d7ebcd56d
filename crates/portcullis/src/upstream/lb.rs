//! Load balancers: smooth weighted round robin, least-request (P2C) and Maglev consistent hashing.
//!
//! A [`Balancer`] is an immutable snapshot built off the hot path from the endpoints in
//! rotation; the upstream swaps it atomically when that set changes. Picking reads the
//! snapshot and at most one atomic counter.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::Endpoint;
use crate::config::schema::{HashKey, LbPolicy};

/// Entries in a Maglev lookup table (a prime, so every permutation covers the table).
pub const MAGLEV_TABLE_SIZE: usize = 65_537;

/// Weights are clamped to this range.
pub const MAX_WEIGHT: u32 = 1000;

/// Building a round-robin sequence costs `length × endpoints`; past this budget the weights
/// are scaled down (proportions kept approximately) so a rebuild stays cheap.
const SEQUENCE_BUDGET: u64 = 1 << 24;

const SEED_REQUEST_KEY: u64 = 0x7063_6c73_6b65_7931;
const SEED_MAGLEV_OFFSET: u64 = 0x7063_6c73_6f66_6673;
const SEED_MAGLEV_SKIP: u64 = 0x7063_6c73_736b_6970;

/// The endpoints in rotation and how to choose among them.
#[derive(Debug)]
pub struct Balancer {
    /// Sorted by address so the same set always builds the same tables.
    endpoints: Vec<Arc<Endpoint>>,
    strategy: Strategy,
}

#[derive(Debug)]
enum Strategy {
    RoundRobin(WeightedSequence),
    LeastRequest,
    ConsistentHash {
        table: Vec<u32>,
        /// For requests without a hash key.
        fallback: WeightedSequence,
    },
}

impl Balancer {
    /// Builds a balancer over `endpoints` (normally those in rotation).
    pub fn new(policy: LbPolicy, mut endpoints: Vec<Arc<Endpoint>>) -> Self {
        endpoints.sort_by_key(|e| e.addr);
        endpoints.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let strategy = match policy {
            LbPolicy::RoundRobin => Strategy::RoundRobin(WeightedSequence::new(&endpoints)),
            LbPolicy::LeastRequest => Strategy::LeastRequest,
            LbPolicy::ConsistentHash => Strategy::ConsistentHash {
                table: maglev_table(&endpoints),
                fallback: WeightedSequence::new(&endpoints),
            },
        };
        Self {
            endpoints,
            strategy,
        }
    }

    /// The endpoints this balancer chooses from, sorted by address.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Chooses an endpoint; `hash` is used by consistent hashing only. `None` when empty.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Arc<Endpoint>> {
        let index = match &self.strategy {
            Strategy::RoundRobin(sequence) => sequence.next(),
            Strategy::LeastRequest => least_request(&self.endpoints),
            Strategy::ConsistentHash { table, fallback } => match hash {
                Some(hash) if !table.is_empty() => table.get(slot(hash)).map(|&i| i as usize),
                _ => fallback.next(),
            },
        }?;
        self.endpoints.get(index)
    }
}

/// Index into a Maglev table for a key hash.
fn slot(hash: u64) -> usize {
    (hash % MAGLEV_TABLE_SIZE as u64) as usize
}

fn clamp_weight(weight: u32) -> u32 {
    weight.clamp(1, MAX_WEIGHT)
}

/// A precomputed smooth weighted round-robin order, walked by an atomic counter.
#[derive(Debug)]
struct WeightedSequence {
    order: Vec<u32>,
    next: AtomicUsize,
}

impl WeightedSequence {
    fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Self {
            order: smooth_wrr_sequence(&weights),
            next: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.order.get(n % self.order.len()).map(|&i| i as usize)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One full cycle of nginx's smooth weighted round robin over `weights` (reduced by their gcd):
/// every round each candidate gains its weight, the richest is chosen and pays the total.
/// Weights 5,1,1 give `0 0 1 0 2 0 0`.
pub fn smooth_wrr_sequence(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut reduced: Vec<u32> = weights.iter().map(|&w| clamp_weight(w)).collect();
    let mut total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    let n = reduced.len() as u64;
    if total.saturating_mul(n) > SEQUENCE_BUDGET {
        let limit = (SEQUENCE_BUDGET / n).max(n);
        for w in &mut reduced {
            *w = ((u64::from(*w) * limit / total).max(1)) as u32;
        }
    }
    let g = reduced.iter().fold(0, |acc, &w| gcd(acc, w)).max(1);
    for w in &mut reduced {
        *w /= g;
    }
    total = reduced.iter().map(|&w| u64::from(w)).sum();
    let total_i = total as i64;
    let mut current = vec![0i64; reduced.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in reduced.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_i;
        order.push(best as u32);
    }
    order
}

/// Power of two random choices: of two distinct random endpoints, the one with fewer requests
/// in flight per unit of weight (ties go to the first drawn).
fn least_request(endpoints: &[Arc<Endpoint>]) -> Option<usize> {
    match endpoints.len() {
        0 => None,
        1 => Some(0),
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            // in_flight_a / weight_a > in_flight_b / weight_b, without division.
            let load_a = ea.in_flight() as u64 * u64::from(clamp_weight(eb.weight));
            let load_b = eb.in_flight() as u64 * u64::from(clamp_weight(ea.weight));
            Some(if load_b < load_a { b } else { a })
        }
    }
}

/// Builds a weighted Maglev lookup table: each endpoint walks its own permutation of the
/// slots (offset and skip from its address) and claims the next free one when its turn comes;
/// an endpoint gets a turn per round in proportion to its weight.
fn maglev_table(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    const EMPTY: u32 = u32::MAX;
    let m = MAGLEV_TABLE_SIZE as u64;
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let key = e.authority.as_str().as_bytes();
            let offset = stable_hash(key, SEED_MAGLEV_OFFSET) % m;
            let skip = stable_hash(key, SEED_MAGLEV_SKIP) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let weights: Vec<u32> = endpoints.iter().map(|e| clamp_weight(e.weight)).collect();
    let max_weight = weights.iter().copied().max().unwrap_or(1);
    let mut next = vec![0u64; endpoints.len()];
    let mut credit = vec![0u32; endpoints.len()];
    let mut table = vec![EMPTY; MAGLEV_TABLE_SIZE];
    let mut filled = 0usize;
    while filled < MAGLEV_TABLE_SIZE {
        for i in 0..endpoints.len() {
            credit[i] += weights[i];
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let (offset, skip) = perms[i];
            // The permutation visits every slot within `m` steps and the table is not full,
            // so a free slot is always found.
            while next[i] < m {
                let s = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[s] == EMPTY {
                    table[s] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == MAGLEV_TABLE_SIZE {
                break;
            }
        }
    }
    table
}

/// A deterministic 64-bit hash (FNV-1a, then a murmur3 finalizer for avalanche): the same in
/// every process and release, so gateways agree on which endpoint owns a key.
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ fmix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The consistent-hash key hash of a request, or `None` when the request lacks the key (an
/// absent or empty header or cookie); such requests are balanced by round robin.
pub fn request_hash(key: &HashKey, req: &http::request::Parts, client_ip: IpAddr) -> Option<u64> {
    let hash = |bytes: &[u8]| stable_hash(bytes, SEED_REQUEST_KEY);
    match key {
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty())
            .map(hash),
        HashKey::Cookie(name) => cookie_value(&req.headers, name.as_bytes()).map(hash),
        HashKey::ClientIp => Some(match client_ip.to_canonical() {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => hash(&ip.octets()),
        }),
    }
}

/// The first non-empty value of cookie `name` across all `Cookie` headers (quotes removed).
fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (n == name && !v.is_empty()).then_some(v)
        })
        .next()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;

    fn endpoint(i: usize, weight: u32) -> Arc<Endpoint> {
        let addr: SocketAddr = format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        Arc::new(Endpoint::new(addr, weight))
    }

    fn counts(b: &Balancer, picks: usize, hash: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
        let mut c = vec![0; b.endpoints().len()];
        for n in 0..picks {
            let e = b.pick(hash(n)).unwrap();
            let i = b
                .endpoints()
                .iter()
                .position(|x| Arc::ptr_eq(x, e))
                .unwrap();
            c[i] += 1;
        }
        c
    }

    #[test]
    fn smooth_wrr_interleaves() {
        assert_eq!(smooth_wrr_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_wrr_sequence(&[1, 1, 1]), vec![0, 1, 2]);
        // Reduced by the gcd: 10,20 cycles like 1,2.
        assert_eq!(smooth_wrr_sequence(&[10, 20]), vec![1, 0, 1]);
        assert!(smooth_wrr_sequence(&[]).is_empty());
    }

    #[test]
    fn smooth_wrr_proportions() {
        let seq = smooth_wrr_sequence(&[3, 7, 1000, 1]);
        assert_eq!(seq.len(), 1011);
        let mut c = [0usize; 4];
        for &i in &seq {
            c[i as usize] += 1;
        }
        assert_eq!(c, [3, 7, 1000, 1]);
    }

    #[test]
    fn huge_sequences_are_scaled_not_exploded() {
        let weights: Vec<u32> = (0..2000).map(|i| 999 + (i % 2)).collect();
        let seq = smooth_wrr_sequence(&weights);
        assert!((seq.len() as u64) * 2000 <= SEQUENCE_BUDGET + 2000 * 2000);
        let mut seen = vec![false; 2000];
        for &i in &seq {
            seen[i as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "every endpoint still appears");
    }

    #[test]
    fn round_robin_balancer_follows_weights() {
        let b = Balancer::new(
            LbPolicy::RoundRobin,
            vec![endpoint(0, 5), endpoint(1, 1), endpoint(2, 1)],
        );
        let picked: Vec<usize> = (0..7)
            .map(|_| {
                let e = b.pick(None).unwrap();
                b.endpoints()
                    .iter()
                    .position(|x| Arc::ptr_eq(x, e))
                    .unwrap()
            })
            .collect();
        assert_eq!(picked, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, |_| None), vec![500, 100, 100]);
    }

    #[test]
    fn empty_balancer_picks_nothing() {
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::ConsistentHash,
        ] {
            let b = Balancer::new(policy, Vec::new());
            assert!(b.pick(None).is_none());
            assert!(b.pick(Some(42)).is_none());
        }
    }

    #[test]
    fn p2c_prefers_less_loaded() {
        let eps = vec![endpoint(0, 1), endpoint(1, 1), endpoint(2, 1)];
        // Load the first two; the idle third must win every comparison it takes part in.
        let _busy: Vec<_> = (0..10)
            .flat_map(|_| {
                [
                    super::super::Picked::new(eps[0].clone()),
                    super::super::Picked::new(eps[1].clone()),
                ]
            })
            .collect();
        let b = Balancer::new(LbPolicy::LeastRequest, eps.clone());
        let c = counts(&b, 3000, |_| None);
        // The idle endpoint is in 2/3 of the pairs and wins all of them.
        assert!(c[2] > 1800, "{c:?}");

        // Weighted: 10 in flight on weight 10 is lighter than 2 in flight on weight 1.
        let heavy = endpoint(3, 10);
        let light = endpoint(4, 1);
        let _h: Vec<_> = (0..10)
            .map(|_| super::super::Picked::new(heavy.clone()))
            .collect();
        let _l: Vec<_> = (0..2)
            .map(|_| super::super::Picked::new(light.clone()))
            .collect();
        let b = Balancer::new(LbPolicy::LeastRequest, vec![heavy.clone(), light]);
        for _ in 0..50 {
            assert!(Arc::ptr_eq(b.pick(None).unwrap(), &heavy));
        }
    }

    #[test]
    fn maglev_spreads_keys_by_weight() {
        let b = Balancer::new(
            LbPolicy::ConsistentHash,
            vec![endpoint(0, 1), endpoint(1, 2), endpoint(2, 3)],
        );
        let Strategy::ConsistentHash { table, .. } = &b.strategy else {
            panic!("not maglev");
        };
        let mut c = [0usize; 3];
        for &i in table {
            c[i as usize] += 1;
        }
        let m = MAGLEV_TABLE_SIZE as f64;
        for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].into_iter().enumerate() {
            let share = c[i] as f64 / m;
            assert!((share - want).abs() < 0.01, "{c:?}");
        }
        // Same key, same endpoint; no key falls back to round robin.
        let k = request_hash(
            &HashKey::ClientIp,
            &parts(&[]),
            "192.0.2.7".parse().unwrap(),
        );
        let first = b.pick(k).unwrap().addr;
        assert!((0..100).all(|_| b.pick(k).unwrap().addr == first));
        assert_eq!(counts(&b, 600, |_| None), vec![100, 200, 300]);
    }

    #[test]
    fn maglev_remaps_few_keys_when_an_endpoint_leaves() {
        let eps: Vec<_> = (0..10).map(|i| endpoint(i, 1)).collect();
        let before = Balancer::new(LbPolicy::ConsistentHash, eps.clone());
        let removed = eps[3].addr;
        let after = Balancer::new(
            LbPolicy::ConsistentHash,
            eps.iter().filter(|e| e.addr != removed).cloned().collect(),
        );
        let keys = 100_000u64;
        let (mut moved, mut moved_from_survivors) = (0u64, 0u64);
        for k in 0..keys {
            let h = stable_hash(&k.to_le_bytes(), 1);
            let (a, b) = (before.pick(Some(h)).unwrap(), after.pick(Some(h)).unwrap());
            if a.addr != b.addr {
                moved += 1;
                if a.addr != removed {
                    moved_from_survivors += 1;
                }
            }
        }
        let share = moved as f64 / keys as f64;
        let collateral = moved_from_survivors as f64 / keys as f64;
        assert!(share < 0.1 + 0.03, "moved {share}");
        assert!(collateral < 0.01, "moved from survivors {collateral}");

        // Adding it back restores the original table exactly (deterministic build).
        let again = Balancer::new(LbPolicy::ConsistentHash, eps);
        let mut by_key: HashMap<u64, SocketAddr> = HashMap::new();
        for k in 0..1000u64 {
            by_key.insert(k, before.pick(Some(k)).unwrap().addr);
        }
        assert!(by_key
            .iter()
            .all(|(k, a)| again.pick(Some(*k)).unwrap().addr == *a));
    }

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn request_hash_by_header() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let key = HashKey::Header("X-User".to_string());
        let a = request_hash(&key, &parts(&[("x-user", "alice")]), ip);
        let a2 = request_hash(
            &key,
            &parts(&[("X-User", "alice")]),
            "192.0.2.2".parse().unwrap(),
        );
        let b = request_hash(&key, &parts(&[("x-user", "bob")]), ip);
        assert!(a.is_some());
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(request_hash(&key, &parts(&[]), ip), None);
        assert_eq!(request_hash(&key, &parts(&[("x-user", "")]), ip), None);
        // Stable across processes and releases.
        assert_eq!(a, Some(stable_hash(b"alice", SEED_REQUEST_KEY)));
    }

    #[test]
    fn request_hash_by_cookie() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let key = HashKey::Cookie("sid".to_string());
        let want = Some(stable_hash(b"abc", SEED_REQUEST_KEY));
        assert_eq!(
            request_hash(&key, &parts(&[("cookie", "a=1; sid=abc; b=2")]), ip),
            want
        );
        assert_eq!(
            request_hash(
                &key,
                &parts(&[("cookie", "a=1"), ("cookie", "sid=\"abc\"")]),
                ip
            ),
            want
        );
        assert_eq!(
            request_hash(&key, &parts(&[("cookie", "sidx=abc; SID=abc")]), ip),
            None
        );
        assert_eq!(
            request_hash(&key, &parts(&[("cookie", "sid=; junk")]), ip),
            None
        );
        assert_eq!(request_hash(&key, &parts(&[]), ip), None);
    }

    #[test]
    fn request_hash_by_client_ip() {
        let key = HashKey::ClientIp;
        let p = parts(&[]);
        let v4 = request_hash(&key, &p, "192.0.2.1".parse().unwrap());
        let mapped = request_hash(&key, &p, "::ffff:192.0.2.1".parse().unwrap());
        let other = request_hash(&key, &p, "192.0.2.2".parse().unwrap());
        assert!(v4.is_some());
        assert_eq!(v4, mapped);
        assert_ne!(v4, other);
        assert!(request_hash(&key, &p, "2001:db8::1".parse().unwrap()).is_some());
    }
}
