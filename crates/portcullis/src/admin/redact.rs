//! Redaction of the running config before the admin API shows it (`GET /api/config`): values
//! of headers and query parameters whose names look like they carry credentials are replaced
//! with `<redacted>`. What can hold a secret is a header value the gateway sets, a value a
//! route matches on, a fixed response header, or a header sent to the trace collector (all of
//! those are hidden).

use std::collections::BTreeMap;

use crate::config::schema::{HeaderOps, RouteAction, ValueMatch};
use crate::config::Config;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Header names that always carry credentials (compared lower case).
const SENSITIVE_NAMES: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Parts of a name that suggest a credential (compared lower case).
const SENSITIVE_PARTS: [&str; 5] = ["token", "secret", "password", "key", "auth"];

/// Whether values of the header or query parameter `name` are treated as secrets.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_NAMES.contains(&name.as_str()) || SENSITIVE_PARTS.iter().any(|p| name.contains(p))
}

/// A copy of `config` with sensitive values replaced: in every route, the `add`/`set` values
/// of `request_headers` and `response_headers`, the `exact` and `regex` values of header and
/// query matchers, and the headers of a `respond` action, for sensitive names.
pub fn redacted(config: &Config) -> Config {
    let mut config = config.clone();
    for route in &mut config.routes {
        header_ops(&mut route.request_headers);
        header_ops(&mut route.response_headers);
        for m in route
            .matches
            .headers
            .iter_mut()
            .chain(route.matches.query.iter_mut())
        {
            value_match(m);
        }
        if let RouteAction::Respond { headers, .. } = &mut route.action {
            values(headers);
        }
    }
    // Headers sent to the trace collector are how collectors authenticate (API keys under
    // vendor-specific names): every value is hidden, whatever its name.
    if let Some(otlp) = &mut config.telemetry.tracing.otlp {
        for value in otlp.headers.values_mut() {
            *value = REDACTED.to_string();
        }
    }
    config
}

fn header_ops(ops: &mut HeaderOps) {
    values(&mut ops.add);
    values(&mut ops.set);
}

fn values(map: &mut BTreeMap<String, String>) {
    for (name, value) in map.iter_mut() {
        if is_sensitive(name) {
            *value = REDACTED.to_string();
        }
    }
}

fn value_match(m: &mut ValueMatch) {
    if !is_sensitive(&m.name) {
        return;
    }
    for value in [&mut m.exact, &mut m.regex].into_iter().flatten() {
        *value = REDACTED.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_names() {
        for name in [
            "Authorization",
            "cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-Client-Secret",
            "db_password",
            "api_key",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["x-request-id", "accept", "x-tenant", "user-agent"] {
            assert!(!is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn redacts_header_edits_matchers_and_fixed_responses_only_for_sensitive_names() {
        let config = crate::config::parse(
            r#"
routes:
  - name: r
    match:
      headers: [{ name: x-api-key, exact: k1 }, { name: x-tenant, exact: t1 }]
      query: [{ name: token, regex: "^abc" }, { name: page, exact: "2" }]
    action: { respond: { headers: { set-cookie: "s=1", x-kind: plain } } }
    request_headers:
      set: { Authorization: "Bearer xyz", x-tenant: t1 }
      add: { x-secret-thing: s3 }
    response_headers:
      set: { x-served-by: gw }
"#,
        )
        .unwrap();
        let json = serde_json::to_string(&redacted(&config)).unwrap();
        for secret in ["k1", "^abc", "s=1", "Bearer xyz", "s3"] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        for kept in ["t1", "\"2\"", "plain", "gw"] {
            assert!(json.contains(kept), "{kept} missing: {json}");
        }
        assert_eq!(json.matches(REDACTED).count(), 5, "{json}");
    }

    #[test]
    fn every_collector_header_is_hidden() {
        let config = crate::config::parse(
            r#"
telemetry:
  tracing:
    otlp:
      endpoint: "http://127.0.0.1:4318"
      headers: { x-honeycomb-team: hc-secret, plain-looking: pl-secret }
"#,
        )
        .unwrap();
        let json = serde_json::to_string(&redacted(&config)).unwrap();
        for secret in ["hc-secret", "pl-secret"] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        assert!(json.contains("127.0.0.1:4318"), "{json}");
        assert_eq!(json.matches(REDACTED).count(), 2, "{json}");
    }
}
