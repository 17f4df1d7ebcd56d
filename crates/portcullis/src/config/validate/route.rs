//! Semantic checks on routes: references, matchers, actions, rewrites and header edits.

use std::collections::{BTreeMap, HashSet};

use super::{compile_regex, header_name, header_value, is_host_name, positive, uri_path, Problems};
use crate::config::schema::{
    HeaderOps, HostHeader, PathMatch, PathRewrite, RouteAction, RouteConfig, RouteMatch, ValueMatch,
};
use crate::config::Config;

/// Headers that describe the connection or the message framing; the gateway owns them, so
/// header edits and direct responses may not touch them.
pub(super) const MANAGED_HEADERS: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn routes(config: &Config, p: &mut Problems) {
    super::unique_names(
        "routes",
        "route",
        config.routes.iter().map(|r| r.name.as_str()),
        p,
    );
    let refs = Names {
        listeners: config.listeners.iter().map(|l| l.name.as_str()).collect(),
        upstreams: config.upstreams.iter().map(|u| u.name.as_str()).collect(),
    };
    for (i, r) in config.routes.iter().enumerate() {
        route(&format!("routes[{i}]"), r, &refs, p);
    }
}

/// The names a route may refer to.
struct Names<'a> {
    listeners: HashSet<&'a str>,
    upstreams: HashSet<&'a str>,
}

fn route(path: &str, r: &RouteConfig, names: &Names<'_>, p: &mut Problems) {
    for (j, l) in r.listeners.iter().enumerate() {
        if !names.listeners.contains(l.as_str()) {
            p.push(
                format!("{path}.listeners[{j}]"),
                format!("unknown listener \"{l}\""),
            );
        }
    }
    route_match(&format!("{path}.match"), &r.matches, p);
    action(&format!("{path}.action"), &r.action, names, p);
    if let Some(rewrite) = &r.rewrite {
        path_rewrite(&format!("{path}.rewrite"), rewrite, &r.matches, p);
    }
    if let HostHeader::Rewrite(host) = &r.host_header {
        let check = if host.is_empty() {
            Err("must not be empty".to_string())
        } else {
            header_value(host)
        };
        p.check(format!("{path}.host_header.rewrite"), check);
    }
    header_ops(
        &format!("{path}.request_headers"),
        &r.request_headers,
        true,
        p,
    );
    header_ops(
        &format!("{path}.response_headers"),
        &r.response_headers,
        false,
        p,
    );
    positive(p, format!("{path}.timeout"), r.timeout);
    for (j, token) in r.upgrades.iter().enumerate() {
        p.check(format!("{path}.upgrades[{j}]"), upgrade_token(token));
    }
    super::protection::route(path, r, p);
}

/// An `Upgrade` protocol name a route may let through: a token (RFC 9110 §5.6.2) without a
/// version, and not HTTP/2 (`h2c` over an upgraded connection would let the client send
/// requests the routes never see; `h2` is not an upgrade token at all).
fn upgrade_token(token: &str) -> Result<(), String> {
    if token.eq_ignore_ascii_case("h2c") || token.eq_ignore_ascii_case("h2") {
        return Err(format!(
            "\"{token}\" is refused: HTTP/2 over an upgraded connection would bypass the routes"
        ));
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if token.is_empty() || !token.bytes().all(tchar) {
        return Err(format!(
            "\"{token}\" is not a protocol name (a token such as websocket)"
        ));
    }
    Ok(())
}

fn route_match(path: &str, m: &RouteMatch, p: &mut Problems) {
    for (j, host) in m.hosts.iter().enumerate() {
        p.check(format!("{path}.hosts[{j}]"), route_host(host));
    }
    match &m.path {
        Some(PathMatch::Exact(s)) => p.check(format!("{path}.path.exact"), starts_with_slash(s)),
        Some(PathMatch::Prefix(s)) => p.check(format!("{path}.path.prefix"), starts_with_slash(s)),
        Some(PathMatch::Regex(s)) => p.check(format!("{path}.path.regex"), compile_regex(s)),
        None => {}
    }
    for (j, method) in m.methods.iter().enumerate() {
        p.check(format!("{path}.methods[{j}]"), http_method(method));
    }
    for (j, h) in m.headers.iter().enumerate() {
        let vp = format!("{path}.headers[{j}]");
        p.check(format!("{vp}.name"), header_name(&h.name));
        if let Some(exact) = &h.exact {
            p.check(format!("{vp}.exact"), header_value(exact));
        }
        value_match(&vp, h, p);
    }
    for (j, q) in m.query.iter().enumerate() {
        let vp = format!("{path}.query[{j}]");
        if q.name.is_empty() {
            p.push(format!("{vp}.name"), "must not be empty");
        }
        value_match(&vp, q, p);
    }
}

/// Exactly one of `exact`, `present`, `regex`; the regex compiles.
fn value_match(path: &str, v: &ValueMatch, p: &mut Problems) {
    let set: Vec<&str> = [
        ("exact", v.exact.is_some()),
        ("present", v.present.is_some()),
        ("regex", v.regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    if set.len() != 1 {
        let found = if set.is_empty() {
            "none".to_string()
        } else {
            set.join(", ")
        };
        p.push(
            path,
            format!("exactly one of exact, present, regex is required (found {found})"),
        );
    }
    if let Some(re) = &v.regex {
        p.check(format!("{path}.regex"), compile_regex(re));
    }
}

/// A route host: an exact name or `*.` + name, lower case (request hosts are lower-cased
/// before matching); no port, no spaces.
fn route_host(host: &str) -> Result<(), String> {
    if host.contains(':') {
        return Err(format!(
            "\"{host}\" must be a host name without a port (routes match on the name only)"
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(format!(
            "\"{host}\": a wildcard is only allowed as a leading \"*.\" (e.g. \"*.example.com\")"
        ));
    }
    if !is_host_name(name) {
        return Err(format!(
            "\"{host}\" is not a valid host name (letters, digits, '-', '_' and dots; no spaces)"
        ));
    }
    let lower = host.to_ascii_lowercase();
    if lower != host {
        return Err(format!("\"{host}\" must be lower case (\"{lower}\")"));
    }
    Ok(())
}

fn starts_with_slash(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(format!("\"{path}\" must start with '/'"))
    }
}

pub(super) fn http_method(method: &str) -> Result<(), String> {
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(format!("\"{method}\" is not a valid HTTP method"));
    }
    let upper = method.to_ascii_uppercase();
    if upper != method {
        return Err(format!(
            "\"{method}\" must be upper case (\"{upper}\"); methods are case-sensitive"
        ));
    }
    Ok(())
}

fn action(path: &str, action: &RouteAction, names: &Names<'_>, p: &mut Problems) {
    match action {
        RouteAction::Proxy { upstream } => {
            if !names.upstreams.contains(upstream.as_str()) {
                p.push(
                    format!("{path}.proxy.upstream"),
                    format!("unknown upstream \"{upstream}\""),
                );
            }
        }
        RouteAction::Respond {
            status,
            headers,
            body,
            ..
        } => {
            let path = format!("{path}.respond");
            if !(200..=599).contains(status) {
                p.push(
                    format!("{path}.status"),
                    format!("must be between 200 and 599, got {status}"),
                );
            } else if matches!(status, 204 | 304) && !body.is_empty() {
                p.push(
                    format!("{path}.body"),
                    format!("must be empty for status {status}"),
                );
            }
            header_map(&format!("{path}.headers"), headers, false, p);
        }
        RouteAction::Redirect {
            scheme,
            host,
            port,
            path: to_path,
            status,
        } => {
            let path = format!("{path}.redirect");
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                p.push(
                    format!("{path}.status"),
                    format!("must be one of 301, 302, 303, 307, 308, got {status}"),
                );
            }
            if let Some(scheme) = scheme {
                if scheme != "http" && scheme != "https" {
                    p.push(
                        format!("{path}.scheme"),
                        format!("must be \"http\" or \"https\", got \"{scheme}\""),
                    );
                }
            }
            if let Some(host) = host {
                let check = if host.contains(':') {
                    Err(format!("\"{host}\" must not include a port (use `port`)"))
                } else if is_host_name(host) {
                    Ok(())
                } else {
                    Err(format!("\"{host}\" is not a valid host name"))
                };
                p.check(format!("{path}.host"), check);
            }
            if *port == Some(0) {
                p.push(format!("{path}.port"), "must be between 1 and 65535");
            }
            if let Some(to_path) = to_path {
                p.check(format!("{path}.path"), uri_path(to_path));
            }
        }
    }
}

fn path_rewrite(path: &str, rewrite: &PathRewrite, m: &RouteMatch, p: &mut Problems) {
    let has_prefix = matches!(m.path, Some(PathMatch::Prefix(_)));
    match rewrite {
        PathRewrite::StripPrefix => {
            if !has_prefix {
                p.push(
                    path,
                    "strip_prefix requires a prefix path match (match.path.prefix)",
                );
            }
        }
        PathRewrite::ReplacePrefix(to) => {
            if !has_prefix {
                p.push(
                    path,
                    "replace_prefix requires a prefix path match (match.path.prefix)",
                );
            }
            p.check(format!("{path}.replace_prefix"), starts_with_slash(to));
        }
        PathRewrite::Regex { pattern, .. } => {
            p.check(format!("{path}.regex.pattern"), compile_regex(pattern));
        }
    }
}

/// Header edits: valid names and values, and no managed (hop-by-hop/framing) headers.
/// On requests `host` is refused too: `host_header` decides it.
fn header_ops(path: &str, ops: &HeaderOps, request: bool, p: &mut Problems) {
    header_map(&format!("{path}.add"), &ops.add, request, p);
    header_map(&format!("{path}.set"), &ops.set, request, p);
    for (j, name) in ops.remove.iter().enumerate() {
        p.check(format!("{path}.remove[{j}]"), edit_name(name, request));
    }
}

fn header_map(path: &str, map: &BTreeMap<String, String>, request: bool, p: &mut Problems) {
    for (name, value) in map {
        let check = edit_name(name, request).and_then(|()| header_value(value));
        p.check(format!("{path}.{name}"), check);
    }
}

fn edit_name(name: &str, request: bool) -> Result<(), String> {
    header_name(name)?;
    let lower = name.to_ascii_lowercase();
    if MANAGED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "\"{name}\" is a connection/framing header managed by the gateway and cannot be edited"
        ));
    }
    if request && lower == "host" {
        return Err("the Host header is set with `host_header`, not with header edits".to_string());
    }
    Ok(())
}
