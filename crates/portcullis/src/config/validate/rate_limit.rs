//! Semantic checks on rate-limit policies and on every place that names one.

use std::collections::HashSet;

use super::{header_name, positive, unique_names, Problems};
use crate::config::schema::{RateLimitAlgorithm, RateLimitConfig, RateLimitKey};
use crate::config::Config;
use crate::policy::ratelimit::build_limit;

/// Most keys one policy may track: its store is allocated up front, 32 bytes a key, so this
/// bounds a policy at about 320 MB (a larger value would fail the start or abort it).
pub const MAX_KEYS: usize = 10_000_000;

pub(super) fn rate_limits(config: &Config, p: &mut Problems) {
    unique_names(
        "rate_limits",
        "rate limit",
        config.rate_limits.iter().map(|r| r.name.as_str()),
        p,
    );
    for (i, rl) in config.rate_limits.iter().enumerate() {
        policy(&format!("rate_limits[{i}]"), rl, p);
    }
    let known: HashSet<&str> = config.rate_limits.iter().map(|r| r.name.as_str()).collect();
    references(
        "defaults.rate_limits",
        &config.defaults.rate_limits,
        &known,
        p,
    );
    for (i, l) in config.listeners.iter().enumerate() {
        references(
            &format!("listeners[{i}].rate_limits"),
            &l.rate_limits,
            &known,
            p,
        );
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(names) = &r.rate_limits {
            references(&format!("routes[{i}].rate_limits"), names, &known, p);
        }
        if r.rate_limit_cost == Some(0) {
            p.push(format!("routes[{i}].rate_limit_cost"), "must be at least 1");
        }
    }
}

fn references(path: &str, names: &[String], known: &HashSet<&str>, p: &mut Problems) {
    let mut seen = HashSet::new();
    for (j, name) in names.iter().enumerate() {
        if !known.contains(name.as_str()) {
            p.push(
                format!("{path}[{j}]"),
                format!("unknown rate limit \"{name}\""),
            );
        } else if !seen.insert(name.as_str()) {
            p.push(
                format!("{path}[{j}]"),
                format!(
                    "rate limit \"{name}\" is listed twice (it would count every request twice)"
                ),
            );
        }
    }
}

fn policy(path: &str, rl: &RateLimitConfig, p: &mut Problems) {
    if rl.limit == 0 {
        p.push(format!("{path}.limit"), "must be at least 1");
    }
    if rl.max_keys == 0 {
        p.push(format!("{path}.max_keys"), "must be at least 1");
    }
    if rl.max_keys > MAX_KEYS {
        p.push(
            format!("{path}.max_keys"),
            format!("must be at most {MAX_KEYS}, got {}", rl.max_keys),
        );
    }
    if !(400..=599).contains(&rl.status) {
        p.push(
            format!("{path}.status"),
            format!("must be a 4xx or 5xx status, not {}", rl.status),
        );
    }
    if rl.client_ip_prefix.ipv4 > 32 {
        p.push(format!("{path}.client_ip_prefix.ipv4"), "must be 0 to 32");
    }
    if rl.client_ip_prefix.ipv6 > 128 {
        p.push(format!("{path}.client_ip_prefix.ipv6"), "must be 0 to 128");
    }
    if let Some(d) = rl.max_delay {
        positive(p, format!("{path}.max_delay"), d);
    }
    if rl.cost.default == 0 {
        p.push(format!("{path}.cost.default"), "must be at least 1");
    }
    for (method, cost) in &rl.cost.methods {
        let at = format!("{path}.cost.methods.{method}");
        if http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
            p.push(at, format!("\"{method}\" is not a valid method"));
        } else if *cost == 0 {
            p.push(at, "must be at least 1");
        }
    }
    for (j, key) in rl.key.iter().enumerate() {
        let at = format!("{path}.key[{j}]");
        match key {
            RateLimitKey::Header(name) => p.check(format!("{at}.header"), header_name(name)),
            RateLimitKey::Query(name) if name.is_empty() => {
                p.push(format!("{at}.query"), "must not be empty");
            }
            _ => {}
        }
    }
    if rl.burst == Some(0) {
        p.push(format!("{path}.burst"), "must be at least 1");
    }
    if rl.burst.is_some() && rl.algorithm != RateLimitAlgorithm::TokenBucket {
        p.push(format!("{path}.burst"), "only token_bucket has a burst");
    }
    if rl.algorithm == RateLimitAlgorithm::Concurrency {
        if !rl.key.is_empty() {
            p.push(
                format!("{path}.key"),
                "a concurrency limit has no key: it caps all requests of the policy together",
            );
        }
        if rl.max_delay.is_some() {
            p.push(
                format!("{path}.max_delay"),
                "a concurrency limit does not delay",
            );
        }
        return;
    }
    positive(p, format!("{path}.window"), rl.window);
    if rl.limit > 0 && !rl.window.is_zero() && rl.burst != Some(0) {
        if let Err(e) = build_limit(rl) {
            p.push(path.to_string(), e);
        }
    }
}
