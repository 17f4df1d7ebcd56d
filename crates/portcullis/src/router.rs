//! The router: compiled route tables and `find`, which picks the route for a request.
//!
//! # Precedence
//! Each listener has its own table holding the routes that serve it (a route with no
//! `listeners` serves all of them). For a request on a listener, candidate routes are tried
//! in this order, and the first whose path, methods, headers and query all match wins:
//! 1. routes listing the request host exactly;
//! 2. routes listing a wildcard `*.suffix` that the host ends with, longest suffix first
//!    (`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`);
//! 3. routes with no hosts.
//!
//! Within each group routes keep config order, and a route listed in several groups is tried
//! once, in the earliest. The request host is the `:authority` (HTTP/2, or an HTTP/1.1
//! absolute-form target), else the `Host` header; it is compared case-insensitively, without
//! port or trailing dot, IPv6 literals in brackets (`[::1]`). A request without a valid host
//! is tried against group 3 only.
//!
//! # Cost of `find`
//! Every matcher is compiled by `Router::compile`. `find` does one hash lookup for an exact
//! host, else one per dot of the host, then walks one precomputed candidate list; it
//! allocates only to lower-case a host that has upper-case letters.

mod host;
mod matcher;
mod redirect;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::config::schema::{BreakerScope, Config, HostHeader, RouteAction, RouteConfig};
use crate::policy::headers::HeaderEdits;
use crate::policy::ratelimit::RateLimiter;
use crate::policy::rewrite::PathRewriter;
use crate::policy::Policy;
use crate::proxy::retry::RetryPolicy;
use crate::upstream::breaker::CircuitBreaker;

use self::host::{normalize_config_host, request_authority, wildcard_suffixes};
pub(crate) use self::matcher::prefix_matches;
use self::matcher::RequestMatcher;
pub use self::redirect::Redirect;

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

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Position in `config.routes` (`Router::route`): what telemetry keeps instead of a
    /// reference count.
    pub id: usize,
    pub name: Arc<str>,
    pub action: Action,
    /// Applied in order: rewrite, request headers, response headers.
    pub policies: Vec<Policy>,
    pub host_header: HostHeader,
    pub max_request_body: u64,
    pub timeout: Duration,
    /// A streamed request or response body that moves nothing for this long is cut (0: off).
    pub stream_idle_timeout: Duration,
    /// Where the caller's deadline is read from and the remaining budget written to.
    pub deadline: crate::proxy::deadline::Policy,
    /// Rate-limit policies asked for every request on this route, in order.
    pub rate_limits: Vec<Arc<RateLimiter>>,
    /// The route's cost for its rate limits (a policy's per-method cost wins).
    pub rate_limit_cost: Option<u32>,
    /// The route × upstream circuit breaker (upstreams with `scope: route`).
    pub breaker: Option<Arc<CircuitBreaker>>,
    pub retry: Option<RetryPolicy>,
    /// Load-shedding priority, and the header that may override it.
    pub priority: crate::upstream::shed::PriorityRule,
    /// Protocols a client may upgrade to (lower case; never `h2c`).
    pub upgrades: Box<[Box<str>]>,
}

/// The compiled routes of a config and one lookup table per listener.
#[derive(Debug, Default)]
pub struct Router {
    /// In config order; tables refer to routes by index here.
    entries: Vec<Entry>,
    /// Indexed by listener number (position in `config.listeners`).
    tables: Vec<Table>,
}

#[derive(Debug)]
struct Entry {
    route: Arc<Route>,
    matcher: RequestMatcher,
}

/// The routes of one listener, grouped by host for precedence.
#[derive(Debug, Default)]
struct Table {
    /// Exact host → its exact routes, then the wildcard routes that match the host (longest
    /// suffix first), without repeats.
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// Wildcard suffix (`example.com` for `*.example.com`) → its routes, then the routes of
    /// every shorter wildcard suffix that also matches, without repeats.
    wildcard: HashMap<Box<str>, Box<[u32]>>,
    /// Routes with no hosts, tried last.
    any: Box<[u32]>,
}

impl Table {
    /// The host-specific candidates for a (normalised) host: groups 1 and 2.
    fn hosted(&self, host: &str) -> &[u32] {
        if let Some(list) = self.exact.get(host) {
            return list;
        }
        wildcard_suffixes(host)
            .find_map(|suffix| self.wildcard.get(suffix))
            .map_or(&[], |list| list)
    }
}

/// Per-listener host lists while compiling, before chains are precomputed.
#[derive(Default)]
struct TableBuilder {
    exact: HashMap<String, Vec<u32>>,
    wildcard: HashMap<String, Vec<u32>>,
    any: Vec<u32>,
}

impl TableBuilder {
    fn add(&mut self, index: u32, hosts: &Hosts) {
        if hosts.exact.is_empty() && hosts.wildcard.is_empty() {
            self.any.push(index);
        }
        for h in &hosts.exact {
            self.exact.entry(h.clone()).or_default().push(index);
        }
        for s in &hosts.wildcard {
            self.wildcard.entry(s.clone()).or_default().push(index);
        }
    }

    /// The wildcard routes a host name matches, longest suffix first.
    fn wildcard_chain<'a>(&'a self, suffixes: impl Iterator<Item = &'a str>) -> Vec<u32> {
        suffixes
            .filter_map(|s| self.wildcard.get(s))
            .flatten()
            .copied()
            .collect()
    }

    fn build(self) -> Table {
        let exact = self
            .exact
            .iter()
            .map(|(host, routes)| {
                let chain = routes
                    .iter()
                    .copied()
                    .chain(self.wildcard_chain(wildcard_suffixes(host)));
                (host.as_str().into(), dedup(chain))
            })
            .collect();
        let wildcard = self
            .wildcard
            .keys()
            .map(|suffix| {
                let chain = self.wildcard_chain(
                    std::iter::once(suffix.as_str()).chain(wildcard_suffixes(suffix)),
                );
                (suffix.as_str().into(), dedup(chain))
            })
            .collect();
        Table {
            exact,
            wildcard,
            any: self.any.into(),
        }
    }
}

/// Keeps the first occurrence of each index, in order.
fn dedup(indexes: impl IntoIterator<Item = u32>) -> Box<[u32]> {
    let mut out: Vec<u32> = Vec::new();
    for i in indexes {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.into()
}

/// A route's normalised host list.
#[derive(Default)]
struct Hosts {
    exact: Vec<String>,
    /// Suffixes without the `*.`.
    wildcard: Vec<String>,
}

impl Hosts {
    fn compile(hosts: &[String]) -> anyhow::Result<Self> {
        let mut out = Hosts::default();
        for h in hosts {
            let (list, name) = match h.trim().strip_prefix("*.") {
                Some(suffix) => (&mut out.wildcard, suffix),
                None => (&mut out.exact, h.as_str()),
            };
            anyhow::ensure!(
                !name.contains('*'),
                "invalid host {h:?}: only one leading wildcard label (`*.example.com`) is allowed"
            );
            let name = normalize_config_host(name)?;
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Ok(out)
    }
}

impl Router {
    /// Builds the route tables from a validated config. `upstream_index` maps an upstream name
    /// to its index in the runtime; listener indexes follow `config.listeners` order.
    pub fn compile(
        config: &Config,
        upstream_index: &dyn Fn(&str) -> Option<usize>,
    ) -> anyhow::Result<Router> {
        Self::compile_with(config, upstream_index, &|_| None)
    }

    /// As `compile`, resolving rate-limit policy names through `rate_limit`; a route without
    /// its own `rate_limits` list gets `defaults.rate_limits`.
    pub fn compile_with(
        config: &Config,
        upstream_index: &dyn Fn(&str) -> Option<usize>,
        rate_limit: &dyn Fn(&str) -> Option<Arc<RateLimiter>>,
    ) -> anyhow::Result<Router> {
        anyhow::ensure!(
            u32::try_from(config.routes.len()).is_ok(),
            "too many routes ({})",
            config.routes.len()
        );
        let mut builders: Vec<TableBuilder> = config
            .listeners
            .iter()
            .map(|_| TableBuilder::default())
            .collect();
        let mut entries = Vec::with_capacity(config.routes.len());
        for (index, rc) in (0u32..).zip(&config.routes) {
            let names = rc
                .rate_limits
                .as_ref()
                .unwrap_or(&config.defaults.rate_limits);
            let limits = names
                .iter()
                .map(|n| rate_limit(n).with_context(|| format!("unknown rate limit {n:?}")))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("route {:?}", rc.name))?;
            let (entry, hosts) = compile_route(config, index as usize, rc, upstream_index, limits)
                .with_context(|| format!("route {:?}", rc.name))?;
            let listeners =
                listener_indexes(config, rc).with_context(|| format!("route {:?}", rc.name))?;
            match listeners {
                None => builders.iter_mut().for_each(|b| b.add(index, &hosts)),
                Some(list) => {
                    for l in list {
                        if let Some(b) = builders.get_mut(l) {
                            b.add(index, &hosts);
                        }
                    }
                }
            }
            entries.push(entry);
        }
        Ok(Router {
            entries,
            tables: builders.into_iter().map(TableBuilder::build).collect(),
        })
    }

    /// The route with `Route::id` `id`.
    pub fn route(&self, id: usize) -> Option<&Arc<Route>> {
        self.entries.get(id).map(|e| &e.route)
    }

    /// The route for a request arriving on listener number `listener`, or `None` (404).
    pub fn find(&self, listener: usize, req: &Parts) -> Option<&Arc<Route>> {
        let table = self.tables.get(listener)?;
        let authority = request_authority(req);
        let hosted = authority
            .as_ref()
            .map_or(&[][..], |a| table.hosted(&a.host));
        hosted
            .iter()
            .chain(table.any.iter())
            .filter_map(|&i| self.entries.get(i as usize))
            .find(|e| e.matcher.matches(req))
            .map(|e| &e.route)
    }

    /// Every compiled route, in config order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.entries.iter().map(|e| &e.route)
    }
}

/// `None` when the route serves every listener.
fn listener_indexes(config: &Config, rc: &RouteConfig) -> anyhow::Result<Option<Vec<usize>>> {
    if rc.listeners.is_empty() {
        return Ok(None);
    }
    rc.listeners
        .iter()
        .map(|name| {
            config
                .listeners
                .iter()
                .position(|l| &l.name == name)
                .with_context(|| format!("unknown listener {name:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

fn compile_route(
    config: &Config,
    id: usize,
    rc: &RouteConfig,
    upstream_index: &dyn Fn(&str) -> Option<usize>,
    rate_limits: Vec<Arc<RateLimiter>>,
) -> anyhow::Result<(Entry, Hosts)> {
    let hosts = Hosts::compile(&rc.matches.hosts)?;
    let matcher = RequestMatcher::compile(&rc.matches)?;
    let action = compile_action(&rc.action, upstream_index)?;
    let mut policies = Vec::new();
    if let Some(rewrite) = &rc.rewrite {
        policies.push(Policy::Rewrite(PathRewriter::compile(
            rewrite,
            rc.matches.path.as_ref(),
        )?));
    }
    if !rc.request_headers.is_empty() {
        let edits = HeaderEdits::compile(&rc.request_headers).context("request_headers")?;
        policies.push(Policy::RequestHeaders(edits));
    }
    if !rc.response_headers.is_empty() {
        let edits = HeaderEdits::compile(&rc.response_headers).context("response_headers")?;
        policies.push(Policy::ResponseHeaders(edits));
    }
    if let HostHeader::Rewrite(value) = &rc.host_header {
        HeaderValue::from_str(value)
            .with_context(|| format!("invalid host_header rewrite {value:?}"))?;
    }
    // A breaker per route × upstream, when the upstream asks for that scope.
    let breaker = match &rc.action {
        RouteAction::Proxy { upstream } => config
            .upstreams
            .iter()
            .find(|u| &u.name == upstream)
            .and_then(|u| u.circuit_breaker.as_ref())
            .filter(|b| b.scope == BreakerScope::Route)
            .map(|b| {
                let label = format!("route {:?} -> upstream {upstream:?}", rc.name);
                CircuitBreaker::new(b, label).map(Arc::new)
            })
            .transpose()
            .map_err(|err| anyhow::anyhow!("circuit_breaker: {err}"))?,
        _ => None,
    };
    let route = Route {
        id,
        name: rc.name.as_str().into(),
        action,
        policies,
        host_header: rc.host_header.clone(),
        max_request_body: rc.max_request_body.as_u64(),
        timeout: rc.timeout,
        stream_idle_timeout: rc.stream_idle_timeout,
        deadline: crate::proxy::deadline::Policy::from_config(&rc.deadline)
            .map_err(|err| anyhow::anyhow!("deadline: {err}"))?,
        rate_limits,
        rate_limit_cost: rc.rate_limit_cost,
        breaker,
        retry: rc.retry.as_ref().map(RetryPolicy::from_config),
        priority: crate::upstream::shed::PriorityRule::new(&rc.priority),
        upgrades: rc
            .upgrades
            .iter()
            .filter(|u| !u.eq_ignore_ascii_case("h2c"))
            .map(|u| u.to_ascii_lowercase().into())
            .collect(),
    };
    Ok((
        Entry {
            route: Arc::new(route),
            matcher,
        },
        hosts,
    ))
}

fn compile_action(
    action: &RouteAction,
    upstream_index: &dyn Fn(&str) -> Option<usize>,
) -> anyhow::Result<Action> {
    Ok(match action {
        RouteAction::Proxy { upstream } => Action::Proxy {
            upstream: upstream_index(upstream)
                .with_context(|| format!("unknown upstream {upstream:?}"))?,
        },
        RouteAction::Respond {
            status,
            headers,
            body,
            reason_header,
        } => {
            let status = StatusCode::from_u16(*status)
                .with_context(|| format!("invalid status {status}"))?;
            let mut map = HeaderMap::with_capacity(headers.len());
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("invalid header name {name:?}"))?;
                let value = HeaderValue::from_str(value)
                    .with_context(|| format!("invalid value for header {name}"))?;
                map.append(name, value);
            }
            // Set once here, not per request.
            if *reason_header {
                map.insert(
                    crate::reason::HEADER,
                    HeaderValue::from_static(crate::reason::DIRECT_RESPONSE),
                );
            }
            Action::Respond {
                status,
                headers: map,
                body: Bytes::from(body.clone()),
            }
        }
        RouteAction::Redirect {
            scheme,
            host,
            port,
            path,
            status,
        } => Action::Redirect(Redirect::compile(
            scheme.as_deref(),
            host.as_deref(),
            *port,
            path.as_deref(),
            *status,
        )?),
    })
}

/// The request's host without port: `:authority` (HTTP/2) or the `Host` header, lower-cased
/// (borrowed unless it had upper-case letters), IPv6 literals in brackets, no trailing dot.
/// `None` when absent or malformed.
pub fn request_host(req: &Parts) -> Option<Cow<'_, str>> {
    request_authority(req).map(|a| a.host)
}

/// The port the request's `:authority` or `Host` names, if any.
pub fn request_port(req: &Parts) -> Option<u16> {
    request_authority(req).and_then(|a| a.port)
}

#[cfg(test)]
mod tests;
