//! Rate-limit policies: compile a `RateLimitConfig` into a limiter backed by a bounded store,
//! build each request's key, ask every limit of a route, and turn the answer into a refusal
//! (429 with `Retry-After` and the IETF `RateLimit` headers), a delay, or headers on the
//! allowed response. Counters live in a `Registry` so a reload keeps those of unchanged
//! policies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::telemetry::RateLimitAction;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use portcullis_limits::{
    ConcurrencyLimit, Decision, KeyHasher, Limit, MemoryStore, Nanos, Outcome, Permit, Request,
    Store, StoreStats,
};
use tokio::time::Instant;

use crate::config::schema::{
    ClientIpPrefix, MissingKey, RateLimitAlgorithm, RateLimitConfig, RateLimitKey,
};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Shadow-mode refusals of one policy are logged at most once per this interval.
const SHADOW_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Builds the algorithm of a rate (not concurrency) policy; the error text is what
/// `portcullis check` prints.
pub fn build_limit(cfg: &RateLimitConfig) -> Result<Option<Limit>, String> {
    let limit = match cfg.algorithm {
        RateLimitAlgorithm::TokenBucket => {
            Limit::gcra(cfg.limit, cfg.window, cfg.burst.unwrap_or(cfg.limit))
        }
        RateLimitAlgorithm::SlidingWindow => Limit::sliding_window(cfg.limit, cfg.window),
        RateLimitAlgorithm::FixedWindow => Limit::fixed_window(cfg.limit, cfg.window),
        RateLimitAlgorithm::Concurrency => return Ok(None),
    };
    limit.map(Some).map_err(|e| e.to_string())
}

/// Where counters live across config reloads: one store per policy identity (name, limit,
/// `max_keys`), the hashing seed, and the clock's epoch.
#[derive(Debug)]
pub struct Registry {
    stores: Mutex<HashMap<(String, Limit, usize), Arc<MemoryStore>>>,
    concurrency: Mutex<HashMap<(String, u32), Arc<ConcurrencyLimit>>>,
    stats: Mutex<HashMap<String, Arc<PolicyStats>>>,
    hasher: KeyHasher,
    epoch: crate::clock::Epoch,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            stores: Mutex::new(HashMap::new()),
            concurrency: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            // A per-process secret seed: clients cannot craft colliding keys.
            hasher: KeyHasher::new([rand::random(), rand::random()]),
            epoch: crate::clock::Epoch::start(),
        }
    }

    fn store(&self, name: &str, limit: Limit, max_keys: usize) -> Arc<MemoryStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores
            .entry((name.to_string(), limit, max_keys))
            .or_insert_with(|| Arc::new(MemoryStore::new(limit, max_keys)))
            .clone()
    }

    fn concurrency(&self, name: &str, limit: u32) -> Arc<ConcurrencyLimit> {
        let mut map = self.concurrency.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((name.to_string(), limit))
            .or_insert_with(|| ConcurrencyLimit::new(limit))
            .clone()
    }

    fn stats(&self, name: &str) -> Arc<PolicyStats> {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    fn now(&self) -> Nanos {
        self.epoch.now()
    }
}

/// Counters of one policy's decisions (read by the admin API and metrics).
#[derive(Debug, Default)]
pub struct PolicyStats {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub shadow_denied: AtomicU64,
    pub delayed: AtomicU64,
    pub skipped: AtomicU64,
    last_shadow_log: Mutex<Option<Instant>>,
}

/// The state of a compiled policy: a keyed rate store or an in-flight limit.
#[derive(Debug)]
enum Kind {
    Rate {
        store: Arc<MemoryStore>,
        limit: Limit,
    },
    Concurrency(Arc<ConcurrencyLimit>),
}

/// One compiled rate-limit policy.
#[derive(Debug)]
pub struct RateLimiter {
    pub name: Arc<str>,
    kind: Kind,
    key: Vec<RateLimitKey>,
    prefix: ClientIpPrefix,
    missing: MissingKey,
    enforce: bool,
    max_delay: Option<Duration>,
    default_cost: u32,
    method_costs: Vec<(Method, u32)>,
    status: StatusCode,
    headers_on_allowed: bool,
    legacy_headers: bool,
    /// `"name";q=Q;w=W`, made once.
    policy_header: Option<HeaderValue>,
    pub stats: Arc<PolicyStats>,
    registry_hasher: KeyHasher,
}

impl RateLimiter {
    /// Compiles a policy, taking its counters from `registry` (kept when unchanged).
    pub fn compile(cfg: &RateLimitConfig, registry: &Registry) -> anyhow::Result<Arc<Self>> {
        let kind = match build_limit(cfg).map_err(|e| anyhow::anyhow!("{}: {e}", cfg.name))? {
            Some(limit) => Kind::Rate {
                store: registry.store(&cfg.name, limit, cfg.max_keys),
                limit,
            },
            None => Kind::Concurrency(registry.concurrency(&cfg.name, cfg.limit)),
        };
        let policy_header = match &kind {
            Kind::Rate { limit, .. } => HeaderValue::from_str(&format!(
                "\"{}\";q={};w={}",
                cfg.name,
                limit.policy_quota(),
                ceil_secs(limit.policy_window())
            ))
            .ok(),
            Kind::Concurrency(_) => None,
        };
        let mut method_costs = Vec::with_capacity(cfg.cost.methods.len());
        for (method, cost) in &cfg.cost.methods {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| anyhow::anyhow!("{}: invalid method {method:?}", cfg.name))?;
            method_costs.push((method, *cost));
        }
        Ok(Arc::new(Self {
            name: cfg.name.as_str().into(),
            kind,
            key: cfg.key.clone(),
            prefix: cfg.client_ip_prefix,
            missing: cfg.missing_key.clone(),
            enforce: cfg.enforce,
            max_delay: cfg.max_delay,
            default_cost: cfg.cost.default,
            method_costs,
            status: StatusCode::from_u16(cfg.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            headers_on_allowed: cfg.headers.on_allowed,
            legacy_headers: cfg.headers.legacy,
            policy_header,
            stats: registry.stats(&cfg.name),
            registry_hasher: registry.hasher,
        }))
    }

    /// Keys currently tracked and eviction counts (rate policies only).
    pub fn store_stats(&self) -> Option<(usize, StoreStats)> {
        match &self.kind {
            Kind::Rate { store, .. } => Some((store.len(), store.stats())),
            Kind::Concurrency(_) => None,
        }
    }

    fn cost(&self, method: &Method, route_cost: Option<u32>) -> u32 {
        self.method_costs
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, c)| *c)
            .or(route_cost)
            .unwrap_or(self.default_cost)
    }

    /// Writes the request's key into `out`; `false` when a part is missing and the policy
    /// skips the request.
    ///
    /// Each part is written so that no value can pass for another: a tag (`PRESENT`, or
    /// `FALLBACK` for a missing part replaced by the fallback), then the length of a
    /// variable-length value before its bytes. A percent-decoded query value can hold any
    /// byte, so a separator byte alone would let `?a=x%00&b=y` and `?a=x&b=%00y` share a
    /// counter, and `?t=%01v` share the missing key's.
    fn key_bytes(&self, req: &Parts, client_ip: IpAddr, route: &str, out: &mut KeyBuf) -> bool {
        for part in &self.key {
            let found = match part {
                RateLimitKey::ClientIp => {
                    // Fixed length for its family (the first byte `push_ip` writes).
                    out.push(PRESENT);
                    push_ip(out, client_ip, self.prefix);
                    true
                }
                RateLimitKey::Header(name) => match req.headers.get(name) {
                    Some(v) => {
                        push_value(out, PRESENT, v.as_bytes());
                        true
                    }
                    None => false,
                },
                RateLimitKey::Query(name) => {
                    match query_value(req.uri.query().unwrap_or(""), name) {
                        Some(v) => {
                            push_value(out, PRESENT, v.as_bytes());
                            true
                        }
                        None => false,
                    }
                }
                RateLimitKey::Route => {
                    push_value(out, PRESENT, route.as_bytes());
                    true
                }
            };
            if !found {
                match &self.missing {
                    MissingKey::Skip => return false,
                    MissingKey::Fallback(f) => push_value(out, FALLBACK, f.as_bytes()),
                }
            }
        }
        true
    }
}

/// Tag of a key part the request has.
const PRESENT: u8 = 0;
/// Tag of a missing key part replaced by the policy's fallback.
const FALLBACK: u8 = 1;

/// One variable-length key part: its tag, its length, its bytes.
fn push_value(out: &mut KeyBuf, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend(bytes);
}

/// A limit that acted on a request, kept for the response headers.
#[derive(Debug, Clone)]
pub struct Applied {
    pub limiter: Arc<RateLimiter>,
    pub decision: Decision,
}

/// What the limits of a request decided, carried from the request to its response.
#[derive(Debug, Default)]
pub struct RateLimitState {
    /// The most restrictive enforced decision that allowed the request.
    pub tightest: Option<Applied>,
    /// In-flight slots held until the response head is sent.
    pub permits: Vec<Permit>,
    /// The policy that did more than allow the request (refused, delayed it longest, or
    /// would have refused it in shadow mode), for the access log and the span.
    pub acted: Option<(Arc<str>, RateLimitAction)>,
}

impl RateLimitState {
    /// The policy that refused the request, if one did.
    pub fn denied_by(&self) -> Option<&str> {
        match &self.acted {
            Some((name, RateLimitAction::Denied)) => Some(name),
            _ => None,
        }
    }

    /// A shadow refusal is noted unless an enforced policy already acted.
    fn acted_shadow(&mut self, limiter: &RateLimiter) {
        if self.acted.is_none() {
            self.acted = Some((limiter.name.clone(), RateLimitAction::ShadowDenied));
        }
    }
}

/// What the limits are asked about: the request and what the gateway knows of it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub req: &'a Parts,
    /// After trusted `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// The matched route's name (empty before routing).
    pub route: &'a str,
    /// The route's `rate_limit_cost`.
    pub route_cost: Option<u32>,
    /// For the refusal's body.
    pub request_id: &'a HeaderValue,
}

/// What the limits decided for a request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on now.
    Pass,
    /// Go on after this wait (delay mode: the slots are already reserved).
    Wait(Duration),
    /// Refused by an enforced policy: answer with this.
    Refuse(http::Response<crate::body::Body>),
}

/// Asks every limiter in order. A refusal by an enforced policy stops there; delays add up to
/// the longest one. Synchronous, so the request future carries no state for it; the caller
/// sleeps on `Verdict::Wait`.
pub fn check(
    limiters: &[Arc<RateLimiter>],
    registry: &Registry,
    ask: &Ask<'_>,
    state: &mut RateLimitState,
) -> Verdict {
    let Ask {
        req,
        client_ip,
        route,
        route_cost,
        request_id,
    } = *ask;
    let mut delay = Duration::ZERO;
    for limiter in limiters {
        let stats = &limiter.stats;
        match &limiter.kind {
            Kind::Concurrency(limit) => match limit.try_acquire() {
                Some(permit) => {
                    stats.allowed.fetch_add(1, Ordering::Relaxed);
                    state.permits.push(permit);
                }
                None if limiter.enforce => {
                    stats.denied.fetch_add(1, Ordering::Relaxed);
                    state.acted = Some((limiter.name.clone(), RateLimitAction::Denied));
                    return Verdict::Refuse(refusal(limiter, None, request_id));
                }
                None => {
                    shadow_denied(limiter, None);
                    state.acted_shadow(limiter);
                }
            },
            Kind::Rate { store, .. } => {
                let mut key = KeyBuf::default();
                if !limiter.key_bytes(req, client_ip, route, &mut key) {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let key = limiter.registry_hasher.key(key.as_slice());
                let mut request =
                    Request::new(registry.now()).cost(limiter.cost(&req.method, route_cost));
                if let (Some(max), true) = (limiter.max_delay, limiter.enforce) {
                    request = request.max_delay(max);
                }
                let decision = store.acquire(key, request);
                match decision.outcome {
                    Outcome::Allowed | Outcome::Delayed(_) => {
                        if let Outcome::Delayed(d) = decision.outcome {
                            stats.delayed.fetch_add(1, Ordering::Relaxed);
                            if d > delay {
                                state.acted =
                                    Some((limiter.name.clone(), RateLimitAction::Delayed));
                            }
                            delay = delay.max(d);
                        } else {
                            stats.allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        if limiter.enforce && limiter.headers_on_allowed {
                            keep_tightest(state, limiter, decision);
                        }
                    }
                    Outcome::Denied | Outcome::CostExceedsLimit if limiter.enforce => {
                        stats.denied.fetch_add(1, Ordering::Relaxed);
                        state.acted = Some((limiter.name.clone(), RateLimitAction::Denied));
                        return Verdict::Refuse(refusal(limiter, Some(&decision), request_id));
                    }
                    Outcome::Denied | Outcome::CostExceedsLimit => {
                        shadow_denied(limiter, Some(&decision));
                        state.acted_shadow(limiter);
                    }
                }
            }
        }
    }
    if delay.is_zero() {
        Verdict::Pass
    } else {
        Verdict::Wait(delay)
    }
}

/// Key bytes built on the stack; only unusually long keys (long header values) spill.
#[derive(Debug)]
struct KeyBuf {
    inline: [u8; 64],
    len: usize,
    spill: Vec<u8>,
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self {
            inline: [0; 64],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl KeyBuf {
    fn push(&mut self, byte: u8) {
        self.extend(&[byte]);
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.spill.is_empty() {
            if let Some(dst) = self.inline.get_mut(self.len..self.len + bytes.len()) {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            self.spill.extend_from_slice(&self.inline[..self.len]);
        }
        self.spill.extend_from_slice(bytes);
    }

    fn as_slice(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

fn keep_tightest(state: &mut RateLimitState, limiter: &Arc<RateLimiter>, decision: Decision) {
    let tighter = match &state.tightest {
        None => true,
        Some(current) => {
            (decision.remaining, decision.reset_after)
                < (current.decision.remaining, current.decision.reset_after)
        }
    };
    if tighter {
        state.tightest = Some(Applied {
            limiter: limiter.clone(),
            decision,
        });
    }
}

fn shadow_denied(limiter: &RateLimiter, decision: Option<&Decision>) {
    limiter.stats.shadow_denied.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut last = limiter
        .stats
        .last_shadow_log
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| now.saturating_duration_since(t) >= SHADOW_LOG_INTERVAL) {
        *last = Some(now);
        tracing::info!(
            policy = %limiter.name,
            shadow_denied_total = limiter.stats.shadow_denied.load(Ordering::Relaxed),
            retry_after = ?decision.and_then(|d| d.retry_after),
            "rate limit would refuse (shadow mode, enforce: false); request passed"
        );
    }
}

/// The refusal: the gateway's error response (reason `rate_limited`, with the policy and
/// `retry_after` in the body), `Retry-After` and the policy's `RateLimit` headers.
fn refusal(
    limiter: &RateLimiter,
    decision: Option<&Decision>,
    request_id: &HeaderValue,
) -> http::Response<crate::body::Body> {
    let retry_after = decision.and_then(|d| d.retry_after_secs());
    let mut extra = serde_json::Map::new();
    extra.insert("policy".into(), (*limiter.name).into());
    extra.insert("retry_after".into(), retry_after.into());
    let mut resp = crate::proxy::gateway_response(
        limiter.status,
        crate::reason::RATE_LIMITED,
        request_id,
        extra,
    );
    let h = resp.headers_mut();
    if let Some(secs) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(d) = decision {
        write_headers(h, limiter, d);
    }
    resp
}

/// Adds the headers describing `applied` to an allowed response.
pub fn add_allowed_headers(headers: &mut HeaderMap, applied: &Applied) {
    write_headers(headers, &applied.limiter, &applied.decision);
}

fn write_headers(h: &mut HeaderMap, limiter: &RateLimiter, d: &Decision) {
    let Some(policy) = &limiter.policy_header else {
        return;
    };
    h.insert(RATELIMIT_POLICY, policy.clone());
    let reset = d.reset_after_secs();
    // `"name";r=R;t=T`, written without the formatting machinery (it runs per response).
    let mut value = Vec::with_capacity(limiter.name.len() + 32);
    value.push(b'"');
    value.extend_from_slice(limiter.name.as_bytes());
    value.extend_from_slice(b"\";r=");
    push_decimal(&mut value, u64::from(d.remaining));
    value.extend_from_slice(b";t=");
    push_decimal(&mut value, reset);
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        h.insert(RATELIMIT, v);
    }
    if limiter.legacy_headers {
        h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(d.limit));
        h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
        h.insert(X_RATELIMIT_RESET, HeaderValue::from(reset));
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The client IP masked to the policy's prefix, as bytes.
fn push_ip(out: &mut KeyBuf, ip: IpAddr, prefix: ClientIpPrefix) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = mask_u32(prefix.ipv4);
            out.push(4);
            out.extend(&(bits & mask).to_be_bytes());
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = mask_u128(prefix.ipv6);
            out.push(6);
            out.extend(&(bits & mask).to_be_bytes());
        }
    }
}

fn mask_u32(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

fn mask_u128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
