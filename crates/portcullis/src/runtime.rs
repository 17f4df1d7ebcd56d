//! The runtime: the compiled, immutable snapshot of a config that requests read. A request
//! loads it once (`Shared::runtime`) and uses that snapshot to the end.

use std::sync::Arc;

use crate::config::Config;
use crate::router::Router;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Runtime {
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Per listener, in `config.listeners` order.
    pub listeners: Vec<ListenerRuntime>,
}

/// What the request path needs to know about the listener a request came in on.
#[derive(Debug)]
pub struct ListenerRuntime {
    pub name: Arc<str>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Runtime {
    /// Compiles a validated config.
    pub fn compile(config: &Config) -> anyhow::Result<Runtime> {
        let upstreams: Vec<Arc<Upstream>> = config.upstreams.iter().map(Upstream::new).collect();
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let router = Router::compile(config, &index)?;
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                name: l.name.as_str().into(),
                trusted_proxies: l.trusted_proxies.clone(),
            })
            .collect();
        Ok(Runtime {
            router,
            upstreams,
            listeners,
        })
    }
}
