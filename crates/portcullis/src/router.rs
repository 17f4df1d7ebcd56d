//! The router: compiled route tables and `find`, which picks the route for a request.
//!
//! Precedence (documented in docs/config.md): routes whose host list has an exact match for
//! the request host, then wildcard hosts longest suffix first, then routes with no host; within
//! each group, config order; the first route whose path, method, headers and query all match wins.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, StatusCode};

use crate::config::schema::{Config, HostHeader};
use crate::policy::Policy;

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Forward to `upstreams[upstream]` of the runtime.
    Proxy {
        upstream: usize,
    },
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Redirect(Redirect),
}

/// A compiled redirect action.
#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: StatusCode,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub action: Action,
    /// Applied in order: rewrite, request headers, response headers.
    pub policies: Vec<Policy>,
    pub host_header: HostHeader,
    pub max_request_body: u64,
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Router {}

impl Router {
    /// Builds the route tables from a validated config. `upstream_index` maps an upstream name
    /// to its index in the runtime; listener indexes follow `config.listeners` order.
    pub fn compile(
        _config: &Config,
        _upstream_index: &dyn Fn(&str) -> Option<usize>,
    ) -> anyhow::Result<Router> {
        Ok(Router {})
    }

    /// The route for a request arriving on listener number `listener`, or `None` (404).
    pub fn find(&self, _listener: usize, _req: &Parts) -> Option<&Arc<Route>> {
        None
    }
}

/// The request's host without port: `:authority` (HTTP/2) or the `Host` header, lower-cased.
pub fn request_host(_req: &Parts) -> Option<&str> {
    None
}

impl Redirect {
    /// The `Location` value for a request; `scheme` is the request's own scheme.
    pub fn location(&self, _req: &Parts, _scheme: &str) -> String {
        String::new()
    }
}
