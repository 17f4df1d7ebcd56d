//! The runtime: the compiled, immutable snapshot of a config that requests read. A request
//! loads it once (`Shared::runtime`) and uses that snapshot to the end.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::policy::ratelimit::{RateLimiter, Registry};
use crate::proxy::conformance;
use crate::router::Router;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Runtime {
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Per listener, in `config.listeners` order.
    pub listeners: Vec<ListenerRuntime>,
    /// Every compiled rate-limit policy, in `config.rate_limits` order (admin API).
    pub rate_limits: Vec<Arc<RateLimiter>>,
    /// The validated config this snapshot was compiled from (admin API: `GET /api/config`).
    pub config: Arc<Config>,
}

/// What the request path needs to know about the listener a request came in on.
#[derive(Debug)]
pub struct ListenerRuntime {
    pub name: Arc<str>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate-limit policies asked for every request on the listener, before routing.
    pub rate_limits: Vec<Arc<RateLimiter>>,
    /// The head limits and framing rules every request is checked against first.
    pub conformance: conformance::Limits,
}

impl Runtime {
    /// Compiles a validated config; rate-limit counters come from `registry`, so those of
    /// unchanged policies survive a reload.
    pub fn compile(config: &Config, registry: &Registry) -> anyhow::Result<Runtime> {
        let upstreams: Vec<Arc<Upstream>> = config.upstreams.iter().map(Upstream::new).collect();
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let limiters = config
            .rate_limits
            .iter()
            .map(|cfg| RateLimiter::compile(cfg, registry))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limiter = |name: &str| limiters.iter().find(|l| &*l.name == name).cloned();
        let router = Router::compile_with(config, &index, &limiter)?;
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let rate_limits = l
                    .rate_limits
                    .iter()
                    .map(|n| {
                        limiter(n).with_context(|| {
                            format!("listener {:?}: unknown rate limit {n:?}", l.name)
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(ListenerRuntime {
                    name: l.name.as_str().into(),
                    trusted_proxies: l.trusted_proxies.clone(),
                    rate_limits,
                    conformance: conformance::Limits::new(&l.limits),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Runtime {
            router,
            upstreams,
            listeners,
            rate_limits: limiters,
            config: Arc::new(config.clone()),
        })
    }
}
