//! The admin JSON API under `/api/`: read-only views of the running snapshot (routes,
//! upstreams, breakers, rate limits, the redacted config) and one action, forcing a circuit
//! breaker open or closed. Every answer is JSON with `cache-control: no-store`; errors are
//! `{"error": "...", "message": "..."}`. Documented in `docs/admin-api.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserializer as _;
use serde_json::{json, Map, Value};

use super::access::{Access, Class};
use super::redact;
use crate::app::Shared;
use crate::body::Body;
use crate::router::{Action, Route};
use crate::runtime::Runtime;
use crate::upstream::breaker::{self, CircuitBreaker, Forced};
use crate::upstream::outcome::RetryCause;
use crate::upstream::outlier::EjectionCause;
use crate::upstream::shed::ShedCause;
use crate::upstream::Upstream;

/// Where the API lives on the admin listener.
pub const PREFIX: &str = "/api/";

/// Largest request body accepted (`POST /api/breakers/{id}/force`).
const MAX_BODY: usize = 4 * 1024;

/// Time allowed to receive that body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one request under `/api/` that passed the Host and Origin checks.
pub async fn serve(shared: &Shared, access: &Access, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let view: Option<fn(&Runtime) -> Value> = match path {
        "/api/routes" => Some(routes),
        "/api/upstreams" => Some(upstreams),
        "/api/breakers" => Some(breakers),
        "/api/rate_limits" => Some(rate_limits),
        "/api/config" => Some(config),
        _ => None,
    };
    if let Some(view) = view {
        if !read_only {
            return method_not_allowed("GET, HEAD");
        }
        if let Some(refused) = access.refuse_request(req.headers(), Class::Read) {
            return refused;
        }
        return json_response(StatusCode::OK, &view(&shared.runtime.load()));
    }
    if let Some(id) = path
        .strip_prefix("/api/breakers/")
        .and_then(|rest| rest.strip_suffix("/force"))
    {
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        if let Some(refused) = access.refuse_request(req.headers(), Class::Change) {
            return refused;
        }
        let id = percent_decode(id);
        return force(shared, id.as_deref(), req).await;
    }
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no admin API endpoint at {path}"),
    )
}

// ----- views -----

fn routes(runtime: &Runtime) -> Value {
    let list: Vec<Value> = runtime
        .router
        .routes()
        .map(|route| route_json(runtime, route))
        .collect();
    json!({ "routes": list })
}

fn route_json(runtime: &Runtime, route: &Route) -> Value {
    let action = match &route.action {
        Action::Proxy { upstream } => json!({
            "kind": "proxy",
            "upstream": runtime.upstreams.get(*upstream).map(|u| &*u.name),
        }),
        Action::Respond { status, .. } => json!({ "kind": "respond", "status": status.as_u16() }),
        Action::Redirect(r) => json!({ "kind": "redirect", "status": r.status.as_u16() }),
    };
    let retry = route.retry.as_ref().map(|r| {
        json!({
            "attempts": r.attempts,
            "per_try_timeout_ms": r.per_try_timeout.map(millis),
        })
    });
    let breaker = route
        .breaker
        .as_ref()
        .map(|b| breaker_summary(&route_breaker_id(&route.name), b));
    json!({
        "name": &*route.name,
        "action": action,
        "timeout_ms": millis(route.timeout),
        "retry": retry,
        "rate_limits": route.rate_limits.iter().map(|l| &*l.name).collect::<Vec<_>>(),
        "priority": {
            "level": route.priority.level,
            "header": route.priority.header.as_ref().map(|h| h.as_str()),
        },
        "breaker": breaker,
    })
}

fn upstreams(runtime: &Runtime) -> Value {
    let list: Vec<Value> = runtime.upstreams.iter().map(|u| upstream_json(u)).collect();
    json!({ "upstreams": list })
}

fn upstream_json(u: &Upstream) -> Value {
    let t = &u.thresholds;
    let gauge =
        |g: &crate::upstream::overflow::Gauge| json!({ "current": g.current(), "max": g.max() });
    let retry_budget = u.retry_budget_stats().map(|s| {
        json!({
            "deposits": s.deposits,
            "retries": s.retries,
            "allowance": s.allowance,
            "remaining": s.remaining,
            "refused": s.refused,
        })
    });
    let retries: Map<String, Value> = RetryCause::ALL
        .into_iter()
        .map(|c| (c.as_str().to_string(), json!(u.retries(c))))
        .collect();
    let shedding = u.shedder.as_ref().map(|s| {
        let shed: Map<String, Value> = ShedCause::ALL
            .into_iter()
            .map(|c| (c.as_str().to_string(), json!(s.shed_by(c))))
            .collect();
        json!({
            "limit": s.limit(),
            "in_flight": s.in_flight(),
            "queued": s.queued(),
            "shed": shed,
        })
    });
    let ejections: Map<String, Value> = EjectionCause::ALL
        .into_iter()
        .map(|c| (c.as_str().to_string(), json!(u.ejections_total(c))))
        .collect();
    let endpoints: Vec<Value> = u
        .endpoints()
        .iter()
        .map(|e| {
            let breaker = e
                .breaker
                .as_ref()
                .map(|b| breaker_summary(&endpoint_breaker_id(&u.name, e.addr), b));
            json!({
                "address": e.addr.to_string(),
                "weight": e.weight,
                "healthy": e.is_healthy(),
                "ejected": e.is_ejected(),
                "ejections": e.ejections(),
                "in_flight": e.in_flight(),
                "breaker": breaker,
            })
        })
        .collect();
    json!({
        "name": &*u.name,
        "protocol": u.protocol,
        "load_balancer": u.policy(),
        "thresholds": {
            "connections": gauge(&t.connections),
            "pending": gauge(&t.pending),
            "requests": gauge(&t.requests),
            "overflowed": load(&t.overflowed),
        },
        "retry_budget": retry_budget,
        "retries": retries,
        "load_shedding": shedding,
        "outlier_detection": {
            "ejections": ejections,
            "ejections_skipped": u.ejections_skipped(),
            "ejected_endpoints": u.ejected_endpoints(),
        },
        "endpoints": endpoints,
    })
}

fn breakers(runtime: &Runtime) -> Value {
    let list: Vec<Value> = all_breakers(runtime)
        .iter()
        .map(|b| {
            let mut v = breaker_summary(&b.id, &b.breaker);
            if let Value::Object(map) = &mut v {
                map.insert("scope".into(), json!(b.scope));
                map.insert("route".into(), json!(b.route.as_deref()));
                map.insert("upstream".into(), json!(b.upstream.as_deref()));
                map.insert("endpoint".into(), json!(b.endpoint));
                map.insert("stats".into(), breaker_stats(&b.breaker));
            }
            v
        })
        .collect();
    json!({ "breakers": list })
}

fn rate_limits(runtime: &Runtime) -> Value {
    let list: Vec<Value> = runtime
        .rate_limits
        .iter()
        .map(|l| {
            let s = &l.stats;
            let store = l.store_stats().map(|(keys, st)| {
                json!({
                    "keys": keys,
                    "evictions": st.evictions,
                    "evicted_active": st.evicted_active,
                })
            });
            json!({
                "name": &*l.name,
                "allowed": load(&s.allowed),
                "denied": load(&s.denied),
                "shadow_denied": load(&s.shadow_denied),
                "delayed": load(&s.delayed),
                "skipped": load(&s.skipped),
                "store": store,
            })
        })
        .collect();
    json!({ "rate_limits": list })
}

fn config(runtime: &Runtime) -> Value {
    serde_json::to_value(redact::redacted(&runtime.config)).unwrap_or_else(
        |err| json!({ "error": "internal", "message": format!("config not serializable: {err}") }),
    )
}

// ----- breakers -----

/// One breaker and where it sits.
struct Located {
    id: String,
    scope: &'static str,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    endpoint: Option<String>,
    breaker: Arc<CircuitBreaker>,
}

fn route_breaker_id(route: &str) -> String {
    format!("route/{route}")
}

fn endpoint_breaker_id(upstream: &str, addr: std::net::SocketAddr) -> String {
    format!("endpoint/{upstream}/{addr}")
}

/// Route breakers in route order, then endpoint breakers by upstream and address.
fn all_breakers(runtime: &Runtime) -> Vec<Located> {
    let mut out = Vec::new();
    for route in runtime.router.routes() {
        if let Some(b) = &route.breaker {
            let upstream = match route.action {
                Action::Proxy { upstream } => {
                    runtime.upstreams.get(upstream).map(|u| u.name.clone())
                }
                _ => None,
            };
            out.push(Located {
                id: route_breaker_id(&route.name),
                scope: "route",
                route: Some(route.name.clone()),
                upstream,
                endpoint: None,
                breaker: Arc::clone(b),
            });
        }
    }
    for u in &runtime.upstreams {
        for e in u.endpoints() {
            if let Some(b) = &e.breaker {
                out.push(Located {
                    id: endpoint_breaker_id(&u.name, e.addr),
                    scope: "endpoint",
                    route: None,
                    upstream: Some(u.name.clone()),
                    endpoint: Some(e.addr.to_string()),
                    breaker: Arc::clone(b),
                });
            }
        }
    }
    out
}

fn breaker_summary(id: &str, b: &CircuitBreaker) -> Value {
    json!({
        "id": id,
        "state": breaker::state_name(b.state()),
        "forced": b.forced().as_str(),
    })
}

fn breaker_stats(b: &CircuitBreaker) -> Value {
    let s = &b.stats;
    json!({
        "opened": load(&s.opened),
        "half_opened": load(&s.half_opened),
        "closed": load(&s.closed),
        "rejected": load(&s.rejected),
    })
}

/// `POST /api/breakers/{id}/force` with `{"state": "open" | "closed" | "none"}`.
async fn force(shared: &Shared, id: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    let runtime = shared.runtime.load();
    let Some(located) = id.and_then(|id| all_breakers(&runtime).into_iter().find(|b| b.id == id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no circuit breaker with that id (see GET /api/breakers)",
        );
    };
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let forced = match parse_force(&body) {
        Ok(forced) => forced,
        Err(problems) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": "bad_request",
                    "message": "expected {\"state\": \"open\" | \"closed\" | \"none\"}",
                    "problems": problems,
                }),
            );
        }
    };
    located.breaker.force(forced);
    let mut v = breaker_summary(&located.id, &located.breaker);
    if let Value::Object(map) = &mut v {
        map.insert("stats".into(), breaker_stats(&located.breaker));
    }
    json_response(StatusCode::OK, &v)
}

/// The request body, at most `MAX_BODY` bytes, within `BODY_TIMEOUT`.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the request body is limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read",
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )),
    }
}

/// The override asked for, or every problem with the body.
fn parse_force(body: &[u8]) -> Result<Forced, Vec<String>> {
    let value = strict_json(body).map_err(|e| vec![format!("invalid JSON: {e}")])?;
    let Value::Object(map) = value else {
        return Err(vec!["the body must be a JSON object".into()]);
    };
    let mut problems: Vec<String> = map
        .keys()
        .filter(|k| k.as_str() != "state")
        .map(|k| format!("unknown field {k:?}"))
        .collect();
    let forced = match map.get("state") {
        None => {
            problems.push("missing field \"state\"".into());
            None
        }
        Some(Value::String(s)) => match s.as_str() {
            "open" => Some(Forced::Open),
            "closed" => Some(Forced::Closed),
            "none" => Some(Forced::None),
            other => {
                problems.push(format!(
                    "state: {other:?} is not one of \"open\", \"closed\", \"none\""
                ));
                None
            }
        },
        Some(other) => {
            problems.push(format!("state: expected a string, found {other}"));
            None
        }
    };
    match forced {
        Some(forced) if problems.is_empty() => Ok(forced),
        _ => Err(problems),
    }
}

/// Parses JSON, refusing an object that holds a key twice at any depth (serde_json would
/// keep the last one, and a sender that meant the first would be misread).
fn strict_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = de.deserialize_any(StrictVisitor)?;
    de.end()?;
    Ok(value)
}

/// Builds a `Value` like serde_json's own, with the duplicate-key check.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

// ----- responses -----

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn pretty(value: &Value) -> Bytes {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    Bytes::from(out)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(pretty(value)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": kind, "message": message }))
}

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("allowed: {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `%XX` escapes decoded (breaker ids hold route names and `[ipv6]:port`); `None` when the
/// result is not UTF-8 or an escape is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_bodies() {
        assert_eq!(parse_force(br#"{"state":"open"}"#), Ok(Forced::Open));
        assert_eq!(parse_force(br#"{"state":"closed"}"#), Ok(Forced::Closed));
        assert_eq!(parse_force(br#"{"state":"none"}"#), Ok(Forced::None));
        assert!(parse_force(b"not json").unwrap_err()[0].starts_with("invalid JSON"));
        assert_eq!(
            parse_force(b"[1]").unwrap_err(),
            vec!["the body must be a JSON object"]
        );
        assert_eq!(
            parse_force(br#"{"state":"ajar","x":1}"#).unwrap_err(),
            vec![
                "unknown field \"x\"".to_string(),
                "state: \"ajar\" is not one of \"open\", \"closed\", \"none\"".to_string(),
            ]
        );
        assert_eq!(
            parse_force(br#"{"state":1}"#).unwrap_err(),
            vec!["state: expected a string, found 1"]
        );
        for dup in [
            &br#"{"state":"open","state":"closed"}"#[..],
            br#"{"state":"open","x":{"a":1,"a":2}}"#,
            br#"{"state":"open","x":[{"a":1,"a":1}]}"#,
        ] {
            let err = parse_force(dup).unwrap_err();
            assert!(err[0].starts_with("invalid JSON: duplicate key"), "{err:?}");
        }
        assert_eq!(
            parse_force(b"{}").unwrap_err(),
            vec!["missing field \"state\""]
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("endpoint/u/%5B::1%5D:80").as_deref(),
            Some("endpoint/u/[::1]:80")
        );
        assert_eq!(percent_decode("route/a%20b").as_deref(), Some("route/a b"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
