//! THE request pipeline. `handle` reads top to bottom: the head's conformance, route, policies
//! on the request, the route's action (forward, direct response, redirect), policies on the response, finish.
//! `docs/request-lifecycle.md` draws the same steps.

pub mod conformance;
pub mod deadline;
pub mod forward;
pub mod grpc;
pub mod headers;
pub mod path;
pub mod retry;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::Shared;
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};
use crate::policy::ratelimit::{self, Ask, RateLimitState, Verdict};
use crate::policy::Flow;
use crate::reason;
use crate::router::{Action, Redirect};
use crate::runtime::Runtime;
use crate::telemetry::{ObservedBody, Record};

/// One downstream connection, shared by the requests it carries.
#[derive(Debug)]
pub struct Downstream {
    pub shared: Arc<Shared>,
    /// Index of the listener in the runtime.
    pub listener: usize,
    pub peer: SocketAddr,
    /// `http` (TLS comes later).
    pub scheme: &'static str,
    /// Requests on this connection whose response head is not sent yet (idle detection).
    pub in_flight: AtomicUsize,
    /// This connection's place under the listener's `max_connections`; released when the
    /// connection ends, or taken over by a tunnel when the connection is upgraded.
    pub connection_slot: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

/// Counts a request as in flight on its connection until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one request. Never fails: every error becomes a response with a reason. The
/// response body carries the request's telemetry record to the end (`ObservedBody`).
pub async fn handle(
    ds: Arc<Downstream>,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let arrived = tokio::time::Instant::now();
    let _in_flight = InFlight::enter(&ds.in_flight);
    let runtime = ds.shared.runtime.load_full();
    let (mut parts, body) = req.into_parts();
    // 0. The head must be conforming HTTP within the listener's limits, before anything reads
    //    it (and before the gateway adds headers of its own).
    let conforms = match runtime.listeners.get(ds.listener) {
        Some(listener) => conformance::check(&mut parts, &listener.conformance),
        None => Ok(()),
    };
    let request_id = headers::ensure_request_id(&mut parts.headers);
    let telemetry = &ds.shared.telemetry;
    let mut record = Record::new(arrived, &ds);
    if let Some(tracer) = &telemetry.tracer {
        record.span = tracer.start(&parts);
    }
    if telemetry.wants_head(&record) {
        record.request_id = Some(request_id.clone());
        record.head = Some(telemetry.head(&parts));
    }

    let grpc = grpc::Kind::of(&parts.headers);
    let mut limits = RateLimitState::default();
    let mut resp = if let Err(refusal) = conforms {
        tracing::debug!(
            peer = %ds.peer, status = refusal.status.as_u16(), reason = refusal.reason,
            request_id = ?request_id, "request refused"
        );
        record.reason = refusal.reason;
        refusal.response(parts.version, &request_id)
    } else {
        match process(
            &runtime,
            &ds,
            parts,
            body,
            &request_id,
            &mut limits,
            &mut record,
        )
        .await
        {
            Ok(resp) => resp,
            Err(err) => {
                log_error(&err, &ds, &request_id);
                record.reason = err.status_and_reason().1;
                error_response(&err, &request_id)
            }
        }
    };
    // A gRPC client gets the gateway's own answers as gRPC statuses (the configured direct
    // responses and redirects are the operator's to shape).
    if let Some(kind) = grpc {
        if !matches!(
            record.reason,
            "" | reason::DIRECT_RESPONSE | reason::REDIRECT
        ) {
            resp = grpc::refusal(resp, kind, record.reason);
        }
    }
    // A refusal already describes the limit that refused; an earlier limit that allowed the
    // request must not overwrite that with its own headers.
    if let (Some(applied), None) = (&limits.tightest, limits.denied_by()) {
        ratelimit::add_allowed_headers(resp.headers_mut(), applied);
    }
    resp.headers_mut().insert(headers::REQUEST_ID, request_id);
    if !telemetry.observes() {
        return Ok(resp.map(ObservedBody::plain));
    }
    record.status = resp.status();
    record.rate_limit = limits.acted.take();
    Ok(resp.map(|body| ObservedBody::observed(body, ds.clone(), runtime, record)))
}

async fn process(
    runtime: &Runtime,
    ds: &Downstream,
    mut parts: http::request::Parts,
    body: Incoming,
    request_id: &HeaderValue,
    limits: &mut RateLimitState,
    record: &mut Record,
) -> Result<Response<Body>, ProxyError> {
    // 1. The request must be one we can route at all.
    if parts.method == Method::CONNECT {
        return Err(ProxyError::new(ErrorKind::BadRequest));
    }
    let listener = &runtime.listeners[ds.listener];
    let client_ip = headers::client_ip(&parts.headers, ds.peer, &listener.trusted_proxies);
    record.client_ip = Some(client_ip);
    let registry = &ds.shared.rate_limits;

    // 2. The listener's rate limits, before any routing work.
    if !listener.rate_limits.is_empty() {
        let ask = Ask {
            req: &parts,
            client_ip,
            route: "",
            route_cost: None,
            request_id,
        };
        let verdict = ratelimit::check(&listener.rate_limits, registry, &ask, limits);
        if let Some(refusal) = wait_or_refuse(verdict).await {
            record.reason = reason::RATE_LIMITED;
            return Ok(refusal);
        }
    }

    // 3. Route, on the normalised path (the upstream gets the same one).
    path::normalize(&mut parts.uri);
    let route = runtime
        .router
        .find(ds.listener, &parts)
        .ok_or_else(|| ProxyError::new(ErrorKind::NoRoute))?;
    record.route = Some(route.id);

    // 4. The route's rate limits, then its other policies on the request.
    if !route.rate_limits.is_empty() {
        let ask = Ask {
            req: &parts,
            client_ip,
            route: &route.name,
            route_cost: route.rate_limit_cost,
            request_id,
        };
        let verdict = ratelimit::check(&route.rate_limits, registry, &ask, limits);
        if let Some(refusal) = wait_or_refuse(verdict).await {
            record.reason = reason::RATE_LIMITED;
            return Ok(refusal);
        }
    }
    for policy in &route.policies {
        if let Flow::Respond(resp) = policy.on_request(&mut parts) {
            record.reason = reason::of_header(resp.headers().get(reason::HEADER));
            return Ok(resp);
        }
    }

    // 5. The route's action.
    let resp = match &route.action {
        Action::Proxy { upstream } => {
            record.upstream = Some(*upstream);
            let upstream = runtime
                .upstreams
                .get(*upstream)
                .ok_or_else(|| ProxyError::new(ErrorKind::Internal))?;
            let caller = forward::Caller {
                ip: client_ip,
                trusted: &listener.trusted_proxies,
                arrived: record.arrived,
            };
            forward::forward(ds, route, upstream, &caller, parts, body, record).await?
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            record.reason = reason::DIRECT_RESPONSE;
            direct_response(*status, headers, body.clone())
        }
        Action::Redirect(redirect) => {
            record.reason = reason::REDIRECT;
            redirect_response(redirect, &parts, ds.scheme)
        }
    };

    // 6. Policies on the response.
    let (mut head, body) = resp.into_parts();
    for policy in &route.policies {
        policy.on_response(&mut head);
    }
    Ok(Response::from_parts(head, body))
}

/// Sleeps out a delay (delay mode) or hands back a refusal. The sleep is boxed: it is rare,
/// and inline it would make every request's future larger.
async fn wait_or_refuse(verdict: Verdict) -> Option<Response<Body>> {
    match verdict {
        Verdict::Pass => None,
        Verdict::Wait(delay) => {
            Box::pin(tokio::time::sleep(delay)).await;
            None
        }
        Verdict::Refuse(resp) => Some(resp),
    }
}

fn direct_response(status: StatusCode, headers: &http::HeaderMap, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    // `headers` hold `x-portcullis-reason: direct_response` unless the route turned it off.
    *resp.headers_mut() = headers.clone();
    resp
}

fn redirect_response(
    redirect: &Redirect,
    parts: &http::request::Parts,
    scheme: &str,
) -> Response<Body> {
    let location = redirect.location(parts, scheme);
    let body = serde_json::json!({ "reason": reason::REDIRECT, "location": location });
    let mut resp = Response::new(Body::full(body.to_string()));
    *resp.status_mut() = redirect.status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(reason::HEADER, HeaderValue::from_static(reason::REDIRECT));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The response for a failure: its status, the reason in a header and a small JSON body.
pub fn error_response(err: &ProxyError, request_id: &HeaderValue) -> Response<Body> {
    let (status, reason) = err.status_and_reason();
    let mut resp = gateway_response(status, reason, request_id, serde_json::Map::new());
    if let Some(after) = err.retry_after {
        // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

/// Every response the gateway makes itself because it refused or failed a request: the status,
/// `x-portcullis-reason`, and a JSON body `{reason, status, request_id}` plus `extra` fields.
pub fn gateway_response(
    status: StatusCode,
    reason: &'static str,
    request_id: &HeaderValue,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response<Body> {
    let mut body = extra;
    body.insert("reason".into(), reason.into());
    body.insert("status".into(), status.as_u16().into());
    body.insert(
        "request_id".into(),
        request_id.to_str().unwrap_or("").into(),
    );
    let mut resp = Response::new(Body::full(serde_json::Value::Object(body).to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(reason::HEADER, HeaderValue::from_static(reason));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn log_error(err: &ProxyError, ds: &Downstream, request_id: &HeaderValue) {
    let (status, reason) = err.status_and_reason();
    let side = err.side();
    match side {
        crate::error::Side::Downstream => tracing::debug!(
            peer = %ds.peer, status = status.as_u16(), reason, ?side, request_id = ?request_id,
            error = %err, "request refused"
        ),
        // One line per reason per second at most (a breaker that opens would otherwise log
        // every request it refuses); the metrics count every one.
        _ => {
            if let Some(suppressed) = ds.shared.telemetry.refusal_log.admit(reason) {
                tracing::warn!(
                    peer = %ds.peer, status = status.as_u16(), reason, ?side,
                    request_id = ?request_id, error = %err, suppressed, "request failed"
                );
            }
        }
    }
}
