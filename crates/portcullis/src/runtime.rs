//! The runtime: the compiled, immutable snapshot of a config that requests read.

use std::sync::Arc;

use crate::config::Config;
use crate::router::Router;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Runtime {
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Runtime {
    /// Compiles a validated config.
    pub fn compile(config: &Config) -> anyhow::Result<Runtime> {
        let upstreams: Vec<Arc<Upstream>> = config.upstreams.iter().map(Upstream::new).collect();
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let router = Router::compile(config, &index)?;
        Ok(Runtime { router, upstreams })
    }
}
