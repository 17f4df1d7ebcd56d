//! Rate-limit keys (`policy::ratelimit`): for any key definition (client IP with any
//! prefix, headers, query parameters, the route; `skip` or a fallback when a part is
//! missing) and any two requests, `check` never panics, and the two requests share a
//! counter exactly when their keys are equal part by part (a limit of 1 per hour refuses
//! the second request exactly then). A key part can hold any byte (query values are
//! percent-decoded), so no value may pass for another part or for a missing one.
//!
//! Input lines: the key parts (`client_ip`, `route`, `header:NAME`, `query:NAME`,
//! space-separated); `skip` or `fallback:VALUE`; the IPv4 and IPv6 prefixes; the two
//! requests' client IPs; the route name; then request A's head, a blank line, request B's.
#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::config::schema::RateLimitConfig;
use portcullis::policy::ratelimit::{check, Ask, RateLimitState, RateLimiter, Registry, Verdict};
use portcullis_fuzz::{head, lines, text};
use serde_json::{json, Value};

/// One key part of one request, as the policy defines it.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Value(Vec<u8>),
    /// Absent and replaced by the fallback.
    Fallback,
}

/// What a request is asked with.
struct Asked<'a> {
    req: &'a Parts,
    ip: IpAddr,
    route: &'a str,
}

/// The key of a request, part by part; `None` when a part is missing and the policy skips.
fn model(key: &[Value], fallback: bool, prefix: (u8, u8), asked: &Asked<'_>) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    for part in key {
        let value = match part {
            Value::String(s) if s == "client_ip" => {
                let ip = asked.ip.to_canonical();
                let net = match ip {
                    IpAddr::V4(_) => ipnet::IpNet::new(ip, prefix.0.min(32)),
                    IpAddr::V6(_) => ipnet::IpNet::new(ip, prefix.1.min(128)),
                };
                net.ok().map(|n| n.trunc().addr().to_string().into_bytes())
            }
            Value::String(_) => Some(asked.route.as_bytes().to_vec()),
            Value::Object(o) => match (o.get("header"), o.get("query")) {
                (Some(Value::String(name)), _) => HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .and_then(|n| asked.req.headers.get(n))
                    .map(|v| v.as_bytes().to_vec()),
                (_, Some(Value::String(name))) => {
                    form_urlencoded::parse(asked.req.uri.query().unwrap_or("").as_bytes())
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned().into_bytes())
                }
                _ => return None,
            },
            _ => return None,
        };
        match value {
            Some(v) => parts.push(Part::Value(v)),
            None if fallback => parts.push(Part::Fallback),
            None => return None,
        }
    }
    Some(parts)
}

fn refused(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Refuse(_))
}

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let mut line = || input.next().and_then(text).unwrap_or("").to_string();
    let key: Vec<Value> = line()
        .split(' ')
        .filter_map(|p| match p.split_once(':') {
            None if p == "client_ip" || p == "route" => Some(json!(p)),
            Some(("header", name)) => Some(json!({ "header": name })),
            Some(("query", name)) => Some(json!({ "query": name })),
            _ => None,
        })
        .collect();
    let missing = match line().split_once(':') {
        Some(("fallback", value)) => json!({ "fallback": value }),
        _ => json!("skip"),
    };
    let prefixes = line();
    let mut prefixes = prefixes.split(' ').map(|p| p.parse::<u8>().unwrap_or(255));
    let prefix = (
        prefixes.next().unwrap_or(32),
        prefixes.next().unwrap_or(128),
    );
    let ips = line();
    let mut ips = ips.split(' ').map(|a| a.parse::<IpAddr>().ok());
    let (Some(Some(ip_a)), Some(Some(ip_b))) = (ips.next(), ips.next()) else {
        return;
    };
    let route = line();
    let (Some(a), Some(b)) = (head(&mut input), head(&mut input)) else {
        return;
    };

    let fallback = missing.is_object();
    let cfg = json!({
        "name": "fuzz",
        "limit": 1,
        "window": "1h",
        "key": key,
        "missing_key": missing,
        "client_ip_prefix": { "ipv4": prefix.0, "ipv6": prefix.1 },
        "max_keys": 64,
    });
    let cfg: RateLimitConfig = match serde_json::from_value(cfg) {
        Ok(cfg) => cfg,
        Err(e) => panic!("the fuzz policy does not deserialize: {e}"),
    };
    let registry = Registry::new();
    let limiter = match RateLimiter::compile(&cfg, &registry) {
        Ok(limiter) => limiter,
        Err(e) => panic!("the fuzz policy does not compile: {e:#}"),
    };
    let limiters: [Arc<RateLimiter>; 1] = [limiter];
    let request_id = HeaderValue::from_static("fuzz");
    let ask = |asked: &Asked<'_>| {
        let ask = Ask {
            req: asked.req,
            client_ip: asked.ip,
            route: asked.route,
            route_cost: None,
            request_id: &request_id,
        };
        check(&limiters, &registry, &ask, &mut RateLimitState::default())
    };

    let a = Asked {
        req: &a,
        ip: ip_a,
        route: &route,
    };
    let b = Asked {
        req: &b,
        ip: ip_b,
        route: &route,
    };
    let key_a = model(&key, fallback, prefix, &a);
    let key_b = model(&key, fallback, prefix, &b);
    assert!(!refused(&ask(&a)), "the first request is refused");
    let second = ask(&b);
    let shared = match (&key_a, &key_b) {
        (Some(key_a), Some(key_b)) => key_a == key_b,
        _ => false,
    };
    assert_eq!(
        refused(&second),
        shared,
        "keys {key_a:?} and {key_b:?}: the second request shares a counter with the first"
    );
});
