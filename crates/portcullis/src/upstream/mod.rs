//! Upstreams: named groups of endpoints, how one is picked (load balancing), which are in
//! rotation (health checks, DNS, outlier ejection), and the connection pool that reaches them.

pub mod breaker;
pub mod client;
pub mod dns;
pub mod h1pool;
pub mod h2pool;
pub mod health;
pub mod lb;
pub mod outcome;
pub mod outlier;
pub mod overflow;
pub mod shed;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::schema::{
    BreakerScope, CircuitBreakerConfig, HashKey, LbPolicy, UpstreamConfig, UpstreamProtocol,
};

/// One resolved address of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `ip:port`, ready to put in an upstream request URI.
    pub authority: http::uri::Authority,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    /// Connections that failed to open (TCP connect, its timeout, or the HTTP handshake).
    connect_errors: std::sync::atomic::AtomicU64,
    /// Idle HTTP/1.1 keep-alive connections to this endpoint.
    pub(crate) h1_idle: h1pool::IdleStack,
    /// The multiplexed HTTP/2 connection to this endpoint.
    pub(crate) h2_slot: h2pool::Slot,
    /// This endpoint's circuit breaker when the upstream's breakers are per endpoint.
    pub breaker: Option<Arc<breaker::CircuitBreaker>>,
    /// Streaks, interval counts and ejection state for outlier detection.
    pub(crate) outlier: outlier::EndpointOutlier,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Self {
            addr,
            weight,
            authority,
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            connect_errors: std::sync::atomic::AtomicU64::new(0),
            h1_idle: h1pool::IdleStack::default(),
            h2_slot: h2pool::Slot::default(),
            breaker: None,
            outlier: outlier::EndpointOutlier::default(),
        }
    }

    /// The endpoint with a circuit breaker of its own (breakers per endpoint).
    pub(crate) fn with_breaker(mut self, cfg: Option<&CircuitBreakerConfig>) -> Self {
        self.breaker = cfg.and_then(|cfg| {
            let label = format!("endpoint {}", self.addr);
            breaker::CircuitBreaker::new(cfg, label)
                .map_err(|err| tracing::error!(endpoint = %self.addr, error = %err, "invalid circuit breaker, none used"))
                .ok()
                .map(Arc::new)
        });
        self
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Connections to this endpoint that failed to open, since it was added.
    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    /// Counts a connection that failed to open; passes `err` through.
    pub(crate) fn connect_failed(&self, err: crate::error::ProxyError) -> crate::error::ProxyError {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
        err
    }

    /// Moves the endpoint in or out of rotation; the upstream's balancer must be rebuilt after.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// An endpoint chosen for one attempt; counts as in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Arc<Endpoint>,
}

impl Picked {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { endpoint }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named group of endpoints with its balancer and pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub client: client::UpstreamClient,
    hash_key: Option<HashKey>,
    policy: LbPolicy,
    /// The configured endpoints that parsed; invalid ones were logged and left out.
    specs: Vec<dns::EndpointSpec>,
    dns_refresh: Duration,
    health_check: Option<Arc<health::HealthCheck>>,
    /// The breaker settings of each endpoint (breakers per endpoint only).
    endpoint_breaker: Option<CircuitBreakerConfig>,
    /// Connection and request caps (503 `upstream_overflow`).
    pub thresholds: Arc<overflow::Thresholds>,
    /// What every route's retries to this upstream draw from (`None`: invalid, which
    /// validation refuses first; then nothing is retried).
    retry_budget: Option<portcullis_limits::RetryBudget>,
    /// Retries sent, by cause (`outcome::RetryCause` order).
    retries: [std::sync::atomic::AtomicU64; 6],
    /// Adaptive concurrency limit with a priority queue (`load_shedding`).
    pub shedder: Option<shed::Shedder>,
    /// The clock origin of `retry_budget`.
    epoch: crate::clock::Epoch,
    /// Passive outlier detection, when configured.
    outlier: Option<outlier::Detector>,
    /// All current endpoints (in rotation or not), sorted by address.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// What `pick` reads: built from the endpoints in rotation.
    balancer: ArcSwap<lb::Balancer>,
    /// Serializes changes to `endpoints` and `balancer` (never held across an await).
    state: Mutex<State>,
    me: Weak<Upstream>,
}

#[derive(Debug, Default)]
struct State {
    /// Per spec: the addresses of its last successful lookup (IP literals: their address).
    resolved: Vec<Option<Vec<SocketAddr>>>,
    /// Set once `spawn_tasks` ran: endpoints added later get a health-check loop too.
    tasks: Option<CancellationToken>,
}

impl Upstream {
    /// Builds an upstream; IP-literal endpoints are usable at once, host names after `resolve`.
    /// Invalid endpoint addresses and an invalid health check are logged (validation reports
    /// them first) and left out.
    pub fn new(config: &UpstreamConfig) -> Arc<Self> {
        let mut specs = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            match dns::parse_address(&endpoint.address) {
                Ok(target) => specs.push(dns::EndpointSpec {
                    address: endpoint.address.clone(),
                    target,
                    weight: endpoint.weight.clamp(1, lb::MAX_WEIGHT),
                }),
                Err(err) => tracing::error!(
                    upstream = %config.name, address = %endpoint.address, error = %err,
                    "invalid endpoint address, ignored"
                ),
            }
        }
        let health_check = config.health_check.as_ref().and_then(|c| {
            health::HealthCheck::from_config(c)
                .map_err(|err| {
                    tracing::error!(
                        upstream = %config.name, error = %err,
                        "invalid health check, active checks disabled"
                    );
                })
                .ok()
                .map(Arc::new)
        });
        let resolved: Vec<Option<Vec<SocketAddr>>> = specs
            .iter()
            .map(|s| match s.target {
                dns::Target::Addr(addr) => Some(vec![addr]),
                dns::Target::Host { .. } => None,
            })
            .collect();
        let policy = config.load_balancer.policy;
        let thresholds = overflow::Thresholds::new(&config.limits);
        let budget = &config.retry_budget;
        let retry_budget = portcullis_limits::RetryBudget::new(
            budget.percent,
            budget.min_per_second,
            budget.window,
        )
        .map_err(|err| {
            tracing::error!(upstream = %config.name, error = %err, "invalid retry budget, no retries");
        })
        .ok();
        let shedder = config.load_shedding.as_ref().and_then(|cfg| {
            shed::Shedder::new(cfg)
                .map_err(|err| {
                    tracing::error!(upstream = %config.name, error = %err, "invalid load shedding, off");
                })
                .ok()
        });
        let endpoint_breaker = config
            .circuit_breaker
            .clone()
            .filter(|b| b.scope == BreakerScope::Endpoint);
        Arc::new_cyclic(|me| {
            let upstream = Self {
                name: config.name.as_str().into(),
                protocol: config.protocol,
                client: client::UpstreamClient::new(
                    config.protocol,
                    &config.pool,
                    Arc::clone(&thresholds),
                ),
                endpoint_breaker,
                thresholds,
                retry_budget,
                retries: Default::default(),
                shedder,
                epoch: crate::clock::Epoch::start(),
                hash_key: config.load_balancer.hash_key.clone(),
                policy,
                specs,
                dns_refresh: config.dns_refresh,
                health_check,
                outlier: config
                    .outlier_detection
                    .as_ref()
                    .map(outlier::Detector::new),
                endpoints: ArcSwap::from_pointee(Vec::new()),
                balancer: ArcSwap::from_pointee(lb::Balancer::new(policy, Vec::new())),
                state: Mutex::new(State {
                    resolved,
                    tasks: None,
                }),
                me: me.clone(),
            };
            let state = upstream.lock_state();
            upstream.apply_resolved(&state);
            drop(state);
            upstream
        })
    }

    /// Where the consistent-hash key comes from, if the policy hashes.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// The balancing policy.
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// Whether this upstream's endpoints carry circuit breakers (`scope: endpoint`).
    pub fn has_endpoint_breakers(&self) -> bool {
        self.endpoint_breaker.is_some()
    }

    /// The soonest any endpoint breaker goes half-open (all open: a Retry-After hint).
    pub fn endpoint_breakers_retry_after(&self) -> Duration {
        self.endpoints
            .load()
            .iter()
            .filter_map(|e| e.breaker.as_ref()?.retry_after())
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Counts an original request (not a retry) towards the retry budget.
    pub fn deposit_request(&self) {
        if let Some(budget) = &self.retry_budget {
            budget.deposit(self.now());
        }
    }

    /// Asks the retry budget for one retry; `false` (counted) means do not retry.
    pub fn withdraw_retry(&self) -> bool {
        self.retry_budget
            .as_ref()
            .is_some_and(|budget| budget.try_withdraw(self.now()))
    }

    /// Counts a retry about to be sent because of `outcome`.
    pub fn count_retry(&self, outcome: &outcome::Outcome) {
        let cause = outcome::RetryCause::of(outcome);
        if let Some(counter) = self.retries.get(cause as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Retries sent because of `cause` since start.
    pub fn retries(&self, cause: outcome::RetryCause) -> u64 {
        self.retries
            .get(cause as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The retry budget's state (for the admin API and metrics).
    pub fn retry_budget_stats(&self) -> Option<portcullis_limits::RetryBudgetStats> {
        self.retry_budget.as_ref().map(|b| b.stats(self.now()))
    }

    fn now(&self) -> portcullis_limits::Nanos {
        self.epoch.now()
    }

    /// Picks an endpoint for one attempt; `hash` is the request's key hash for consistent
    /// hashing. `None` means no endpoint is in rotation (503 `no_healthy_upstream`).
    pub fn pick(&self, hash: Option<u64>) -> Option<Picked> {
        let balancer = self.balancer.load();
        balancer.pick(hash).map(|e| Picked::new(Arc::clone(e)))
    }

    /// Like `pick`, but only an endpoint `accept` agrees to: the balancer is asked again (a
    /// refused endpoint's share spreads over the others as the policy spreads traffic; with
    /// consistent hashing the next picks fall back to round robin), then the rotation is
    /// walked in order. `None` when no endpoint in rotation is accepted.
    pub fn pick_where(
        &self,
        hash: Option<u64>,
        accept: impl Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<Picked> {
        let balancer = self.balancer.load();
        let candidates = balancer.endpoints();
        let mut first = None;
        for round in 0..candidates.len() {
            let e = balancer.pick(if round == 0 { hash } else { None })?;
            if accept(e) {
                return Some(Picked::new(Arc::clone(e)));
            }
            first.get_or_insert(e);
        }
        let start = first
            .and_then(|f| candidates.iter().position(|e| Arc::ptr_eq(e, f)))
            .unwrap_or(0);
        (1..=candidates.len())
            .filter_map(|step| candidates.get((start + step) % candidates.len()))
            .find(|e| accept(e))
            .map(|e| Picked::new(Arc::clone(e)))
    }

    /// Resolves host-name endpoints (at start, before listeners open, and on every refresh).
    /// A host that fails keeps its previous addresses and is logged; the error lists the hosts
    /// that have never resolved, which therefore contribute no endpoint yet.
    pub async fn resolve(&self) -> anyhow::Result<()> {
        let lookups = self
            .specs
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| match &spec.target {
                dns::Target::Host { host, port } => {
                    Some(async move { (i, dns::lookup(host, *port).await) })
                }
                dns::Target::Addr(_) => None,
            });
        let results = futures_util::future::join_all(lookups).await;
        if results.is_empty() {
            return Ok(());
        }
        let mut never_resolved = Vec::new();
        let mut state = self.lock_state();
        for (i, result) in results {
            let Some(spec) = self.specs.get(i) else {
                continue;
            };
            match result {
                Ok(addrs) => {
                    if let Some(slot) = state.resolved.get_mut(i) {
                        *slot = Some(addrs);
                    }
                }
                Err(err) => {
                    let had = state.resolved.get(i).is_some_and(Option::is_some);
                    tracing::warn!(
                        upstream = %self.name, address = %spec.address, error = %err,
                        kept_previous = had, "endpoint resolution failed"
                    );
                    if !had {
                        never_resolved.push(spec.address.as_str());
                    }
                }
            }
        }
        self.apply_resolved(&state);
        drop(state);
        if never_resolved.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "upstream {}: could not resolve {}",
                self.name,
                never_resolved.join(", ")
            )
        }
    }

    /// Starts DNS refresh, active health checks and the outlier timer until `stop` is
    /// cancelled. Calling it again does nothing.
    pub fn spawn_tasks(self: &Arc<Self>, stop: CancellationToken) {
        let mut state = self.lock_state();
        if state.tasks.is_some() {
            tracing::debug!(upstream = %self.name, "tasks already running");
            return;
        }
        state.tasks = Some(stop.clone());
        if let Some(check) = &self.health_check {
            for endpoint in self.endpoints.load().iter() {
                health::spawn(
                    Arc::downgrade(self),
                    Arc::clone(endpoint),
                    Arc::clone(check),
                    stop.clone(),
                );
            }
        }
        drop(state);
        outlier::spawn(self, stop.clone());
        if let Some(idle_timeout) = self.client.idle_timeout() {
            tokio::spawn(expire_idle_loop(
                Arc::downgrade(self),
                idle_timeout,
                stop.clone(),
            ));
        }
        let has_hosts = self
            .specs
            .iter()
            .any(|s| matches!(s.target, dns::Target::Host { .. }));
        if has_hosts {
            tokio::spawn(dns::refresh_loop(
                Arc::downgrade(self),
                self.dns_refresh,
                stop,
            ));
        }
    }

    /// Whether any endpoint is in rotation (healthy, not ejected), without picking one.
    pub fn has_rotation(&self) -> bool {
        !self.balancer.load().endpoints().is_empty()
    }

    /// A snapshot of the current endpoints, in rotation or not, sorted by address.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.load().as_ref().clone()
    }

    /// Whether some host name has never resolved (so it contributes no endpoint yet).
    pub(crate) fn has_unresolved_hosts(&self) -> bool {
        let state = self.lock_state();
        self.specs
            .iter()
            .zip(&state.resolved)
            .any(|(spec, addrs)| matches!(spec.target, dns::Target::Host { .. }) && addrs.is_none())
    }

    /// Whether `endpoint` is still one of this upstream's (DNS may have removed it).
    pub(crate) fn has_endpoint(&self, endpoint: &Arc<Endpoint>) -> bool {
        self.endpoints
            .load()
            .iter()
            .any(|e| Arc::ptr_eq(e, endpoint))
    }

    /// Rebuilds the balancer after an endpoint's health or ejection changed.
    pub(crate) fn rebuild_balancer(&self) {
        let state = self.lock_state();
        self.rebuild_locked(&state);
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the endpoint list match the resolved addresses; new endpoints get a health-check
    /// loop when tasks run.
    fn apply_resolved(&self, state: &MutexGuard<'_, State>) {
        let wanted: Vec<(SocketAddr, u32)> = self
            .specs
            .iter()
            .zip(&state.resolved)
            .flat_map(|(spec, addrs)| addrs.iter().flatten().map(move |addr| (*addr, spec.weight)))
            .collect();
        let current = self.endpoints.load_full();
        let breaker = self.endpoint_breaker.as_ref();
        let next = dns::merge(&current, &wanted, |addr, weight| {
            Endpoint::new(addr, weight).with_breaker(breaker)
        });
        let unchanged = next.len() == current.len()
            && next
                .iter()
                .zip(current.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if unchanged {
            return;
        }
        let added: Vec<Arc<Endpoint>> = next
            .iter()
            .filter(|e| !current.iter().any(|c| Arc::ptr_eq(c, e)))
            .cloned()
            .collect();
        let removed: Vec<SocketAddr> = current
            .iter()
            .filter(|c| !next.iter().any(|e| Arc::ptr_eq(c, e)))
            .map(|c| c.addr)
            .collect();
        if !current.is_empty() {
            tracing::info!(
                upstream = %self.name,
                added = ?added.iter().map(|e| e.addr).collect::<Vec<_>>(),
                removed = ?removed,
                "endpoints changed"
            );
        }
        self.endpoints.store(Arc::new(next));
        if let (Some(stop), Some(check)) = (&state.tasks, &self.health_check) {
            for endpoint in added {
                health::spawn(self.me.clone(), endpoint, Arc::clone(check), stop.clone());
            }
        }
        self.rebuild_locked(state);
    }

    /// Swaps in a balancer over the endpoints in rotation (healthy and not ejected), if that
    /// set changed.
    fn rebuild_locked(&self, _state: &MutexGuard<'_, State>) {
        let rotation: Vec<Arc<Endpoint>> = self
            .endpoints
            .load()
            .iter()
            .filter(|e| e.is_healthy() && !e.is_ejected())
            .cloned()
            .collect();
        let current = self.balancer.load();
        let same = rotation.len() == current.endpoints().len()
            && rotation
                .iter()
                .zip(current.endpoints())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        if rotation.is_empty() {
            tracing::warn!(upstream = %self.name, "no endpoint in rotation");
        }
        self.balancer
            .store(Arc::new(lb::Balancer::new(self.policy, rotation)));
    }
}

/// Closes HTTP/1.1 connections idle longer than `idle_timeout`, checking every half of it.
async fn expire_idle_loop(
    upstream: std::sync::Weak<Upstream>,
    idle_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    let mut ticker =
        tokio::time::interval((idle_timeout / 2).max(std::time::Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        for endpoint in upstream.endpoints.load().iter() {
            endpoint.h1_idle.expire(idle_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> Arc<Upstream> {
        let config: UpstreamConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Upstream::new(&config)
    }

    #[test]
    fn ip_literals_are_usable_at_once_and_bad_addresses_are_skipped() {
        let u = upstream(
            "name: a
endpoints: [{address: \"127.0.0.1:8001\", weight: 3}, {address: \"no port\"}, {address: \"[::1]:8002\"}]",
        );
        let eps = u.endpoints();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].weight, 3);
        let picked = u.pick(None).unwrap();
        assert_eq!(picked.endpoint.in_flight(), 1);
        drop(picked);
        assert!(eps.iter().all(|e| e.in_flight() == 0));
    }

    #[test]
    fn unhealthy_endpoints_leave_rotation_and_none_left_means_none() {
        let u = upstream(
            "name: a
endpoints: [{address: \"127.0.0.1:8001\"}, {address: \"127.0.0.1:8002\"}]",
        );
        let eps = u.endpoints();
        eps[0].set_healthy(false);
        u.rebuild_balancer();
        for _ in 0..10 {
            assert_eq!(u.pick(None).unwrap().endpoint.addr, eps[1].addr);
        }
        eps[1].set_healthy(false);
        u.rebuild_balancer();
        assert!(u.pick(None).is_none());
        assert!(u.pick(Some(7)).is_none());
        eps[0].set_healthy(true);
        u.rebuild_balancer();
        assert_eq!(u.pick(None).unwrap().endpoint.addr, eps[0].addr);
    }

    #[tokio::test]
    async fn host_names_resolve_and_keep_identity() {
        let u = upstream(
            "name: a
endpoints: [{address: \"localhost:8080\", weight: 2}, {address: \"127.0.0.1:9000\"}]",
        );
        assert_eq!(u.endpoints().len(), 1, "only the IP literal before resolve");
        u.resolve().await.unwrap();
        let first = u.endpoints();
        assert!(first.len() >= 2);
        assert!(first.iter().all(|e| e.addr.ip().is_loopback()));
        assert!(first.iter().any(|e| e.addr.port() == 8080 && e.weight == 2));
        u.resolve().await.unwrap();
        let second = u.endpoints();
        assert_eq!(first.len(), second.len());
        assert!(first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)));
    }

    #[tokio::test]
    async fn failed_resolution_keeps_previous_set() {
        let u = upstream(
            "name: a
endpoints: [{address: \"127.0.0.1:9000\"}, {address: \"does-not-exist.invalid:80\"}]",
        );
        let before = u.endpoints();
        assert!(u.resolve().await.is_err(), ".invalid never resolves");
        let after = u.endpoints();
        assert_eq!(before.len(), after.len());
        assert!(Arc::ptr_eq(&before[0], &after[0]));
        assert!(u.pick(None).is_some());
    }

    #[tokio::test]
    async fn dns_refresh_task_resolves_and_stops() {
        let u = upstream(
            "name: a
dns_refresh: 10ms
endpoints: [{address: \"localhost:8080\"}]",
        );
        let stop = CancellationToken::new();
        u.spawn_tasks(stop.clone());
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while u.endpoints().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "refresh task never resolved localhost");
        stop.cancel();
    }
}
