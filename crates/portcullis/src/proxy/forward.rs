//! Forwarding one request to an upstream: pick an endpoint, rewrite the head for the hop,
//! send with the route's timeout, and hand back the streamed response. Protocol upgrades
//! (WebSocket and others) become a bidirectional byte tunnel once both sides said 101.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use tokio::time::Instant;

use super::deadline;
use super::headers;
use super::retry::{self, RetryPolicy};
use super::Downstream;
use crate::body::{fault, Body, LimitedIncoming};
use crate::config::schema::HostHeader;
use crate::error::{ErrorKind, ProxyError};
use crate::router::Route;
use crate::telemetry::{BytesIn, Record};
use crate::upstream::breaker::BreakerTicket;
use crate::upstream::client::UpstreamResponse;
use crate::upstream::h1pool::PooledConn;
use crate::upstream::outcome::{GatewayError, Outcome};
use crate::upstream::overflow::Held;
use crate::upstream::shed;
use crate::upstream::{lb, Endpoint, Picked, Upstream};

/// Who is asking, and since when.
#[derive(Debug)]
pub struct Caller<'a> {
    /// The client's address (after trusted `X-Forwarded-For`).
    pub ip: std::net::IpAddr,
    /// The listener's trusted proxies (for `X-Forwarded-For`).
    pub trusted: &'a [ipnet::IpNet],
    /// When the gateway started on the request: deadlines count from here.
    pub arrived: Instant,
}

/// The request body as the attempt loop holds it: kept bytes can be sent again, a stream
/// only once.
enum RequestBody {
    Empty,
    Kept(Bytes),
    Stream(Incoming),
}

impl RequestBody {
    fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Stream(_))
    }
}

/// When the forward step must be done by (response head received), and who set that time.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The caller's deadline is the earlier one: running out is `deadline_exceeded`, not
    /// `upstream_timeout`.
    callers: bool,
}

impl Deadline {
    fn expired_error(&self) -> ProxyError {
        ProxyError::new(if self.callers {
            ErrorKind::DeadlineExceeded
        } else {
            ErrorKind::UpstreamTimeout
        })
    }
}

/// Forwards `parts` + `body` to `upstream` and returns the upstream's response head with its
/// body still streaming. With a retry policy this is a loop of attempts: each picks an
/// endpoint (a retry prefers one not tried yet), passes the breaker and the upstream's
/// thresholds, and is bounded by the per-try timeout and the deadline; its outcome feeds the
/// breaker and outlier detection and decides whether another attempt follows (within the
/// upstream's retry budget, after a jittered backoff that must end before the deadline).
pub async fn forward(
    ds: &Downstream,
    route: &Route,
    upstream: &Arc<Upstream>,
    caller: &Caller<'_>,
    mut parts: http::request::Parts,
    body: Incoming,
    record: &mut Record,
) -> Result<Response<Body>, ProxyError> {
    let started = caller.arrived;
    // Refuse what is known to be too large before touching the upstream.
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|len| len > route.max_request_body) {
        return Err(ProxyError::new(ErrorKind::RequestBodyTooLarge));
    }
    // The deadline: the route's timeout from arrival, or the caller's own budget (from
    // `grpc-timeout` or the route's deadline header) if that ends sooner. A budget already
    // spent gets 504 without any upstream call.
    let incoming = route
        .deadline
        .incoming(&parts.headers)
        .map_err(|err| ProxyError::with_source(ErrorKind::BadRequest, err))?;
    let route_at = started + route.timeout;
    let deadline = match &incoming {
        Some(caller) if started + caller.budget <= route_at => Deadline {
            at: started + caller.budget,
            callers: true,
        },
        _ => Deadline {
            at: route_at,
            callers: false,
        },
    };
    if Instant::now() >= deadline.at {
        return Err(deadline.expired_error());
    }
    let downstream_version = parts.version;
    // Only an upgrade to a protocol the route allows is forwarded; any other `Upgrade` is
    // removed and the request goes on as a plain one.
    let upgrade = downstream_version == Version::HTTP_11
        && headers::is_upgrade_request(&parts.headers)
        && headers::upgrade_allowed(&parts.headers, &route.upgrades);
    let downstream_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };

    // The host the client asked for, as it wrote it (port included). Like the router, the
    // target's authority (HTTP/2 `:authority`, HTTP/1.1 absolute form) wins over `Host`
    // (RFC 9112 §3.2.2), so the upstream is told the host the route was chosen for.
    let original_host: Option<HeaderValue> = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| parts.headers.get(header::HOST).cloned());
    headers::strip_hop_by_hop(&mut parts.headers, upgrade, route.deadline.header.as_ref());
    headers::set_forwarded(
        &mut parts.headers,
        ds.peer,
        caller.trusted,
        ds.scheme,
        original_host.as_ref().and_then(|h| h.to_str().ok()),
    );
    let hash = upstream
        .hash_key()
        .and_then(|key| lb::request_hash(key, &parts, caller.ip));
    // The head for this hop: the client sends it to the endpoint (see `UpstreamClient::send`).
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
        .into();

    // Load shedding: a slot of the upstream's adaptive limit, perhaps after a wait in its
    // priority queue (bounded by max_wait and the deadline). Held until the response head.
    let mut shed_permit = match &upstream.shedder {
        Some(shedder) => {
            let priority = shed::priority(&route.priority, &parts.headers);
            match shedder.acquire(priority, Some(deadline.at)).await {
                Ok(permit) => Some(permit),
                Err(_) if Instant::now() >= deadline.at => return Err(deadline.expired_error()),
                Err(after) => return Err(ProxyError::retry_after(ErrorKind::Shed, after)),
            }
        }
        None => None,
    };

    // Retries apply to the route's methods, never to upgrades, and only to a body that was
    // kept: empty, or declared no larger than `retry.max_body` and read in full up front.
    let retry = route
        .retry
        .as_ref()
        .filter(|r| r.attempts > 1 && !upgrade && r.allows(&parts.method));
    let mut body = if body.is_end_stream() {
        RequestBody::Empty
    } else if let (Some(policy), Some(len)) = (retry, declared) {
        if len <= policy.max_body {
            let read = tokio::time::timeout_at(deadline.at, retry::keep(body)).await;
            match read {
                Ok(Ok(bytes)) => {
                    record.bytes_in = BytesIn::Known(bytes.len() as u64);
                    RequestBody::Kept(bytes)
                }
                // Reading the client's body failed: its framing (400) or it went away (499).
                Ok(Err(err)) => {
                    let kind = if err.is_parse() {
                        ErrorKind::BadRequest
                    } else {
                        ErrorKind::DownstreamAborted
                    };
                    return Err(ProxyError::with_source(kind, err));
                }
                Err(_) => return Err(ProxyError::new(ErrorKind::RequestTimeout)),
            }
        } else {
            RequestBody::Stream(body)
        }
    } else {
        RequestBody::Stream(body)
    };
    let attempts = match retry {
        Some(policy) if body.replayable() => policy.attempts,
        _ => 1,
    };
    // The per-try timeout bounds every attempt, also of requests that are never retried.
    let per_try = route.retry.as_ref().and_then(|r| r.per_try_timeout);

    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    // The attempt before this one, kept until this one is admitted: if it is not (breaker,
    // caps), the client gets that attempt's answer rather than a refusal of the retry.
    let mut previous: Option<Box<Attempt>> = None;
    let mut attempt: u32 = 0;
    let (mut resp, conn, picked) = loop {
        let last = attempt + 1 >= attempts;
        let (picked, ticket, request_slot) = match admit(upstream, route, hash, &tried) {
            Ok(admitted) => admitted,
            Err(err) => match previous.take() {
                Some(previous) => break previous.end(&mut shed_permit)?,
                None => return Err(err),
            },
        };
        if let Some(previous) = previous.take() {
            previous.discard();
        }
        record.attempts = attempt + 1;
        record.endpoint = Some(picked.endpoint.addr);
        if attempt == 0 && attempts > 1 {
            upstream.deposit_request(); // an original request that may be retried
        }
        let now = Instant::now();
        if now >= deadline.at {
            return Err(deadline.expired_error());
        }
        let try_until = per_try.map_or(deadline.at, |t| (now + t).min(deadline.at));

        // This attempt's request: the original on the last attempt, a copy otherwise.
        let mut head = if last {
            std::mem::replace(&mut parts, empty_head())
        } else {
            copy_head(&parts)
        };
        let host = match &route.host_header {
            HostHeader::PassThrough => original_host.clone(),
            HostHeader::Endpoint => HeaderValue::from_str(picked.endpoint.authority.as_str()).ok(),
            HostHeader::Rewrite(value) => HeaderValue::from_str(value).ok(),
        };
        match host {
            Some(host) => {
                head.headers.insert(header::HOST, host);
            }
            None => {
                head.headers.remove(header::HOST);
            }
        }
        if let Some(caller) = &incoming {
            // The upstream gets the time this attempt has left, in the caller's format.
            deadline::write(
                &caller.source,
                try_until.saturating_duration_since(Instant::now()),
                &mut head.headers,
            );
        }
        // The attempt's span, a child of the request's; the upstream gets its context.
        let span = record
            .span
            .as_ref()
            .map(|span| span.attempt(&mut head, &upstream.name, &picked.endpoint, attempt));
        let mut body_fault = None;
        let attempt_body = match &body {
            RequestBody::Empty => Body::Empty,
            RequestBody::Kept(bytes) => Body::full(bytes.clone()),
            RequestBody::Stream(_) => {
                let RequestBody::Stream(stream) = std::mem::replace(&mut body, RequestBody::Empty)
                else {
                    return Err(ProxyError::new(ErrorKind::Internal));
                };
                let limited = LimitedIncoming::new(stream, route.max_request_body);
                let progress = limited.progress();
                record.bytes_in = BytesIn::Counted(Arc::clone(&progress));
                body_fault = Some(progress);
                Body::Limited(limited).with_idle_timeout(route.stream_idle_timeout)
            }
        };

        // Send, bounded by the per-try timeout and the deadline until the response head.
        let request = Request::from_parts(head, attempt_body);
        let sent =
            tokio::time::timeout_at(try_until, upstream.client.send(&picked.endpoint, request))
                .await;
        let latency = now.elapsed();
        // The slot covers the attempt until its response head.
        drop(request_slot);
        let result = match sent {
            // The send failed because the client's body went over its limit or stalled,
            // whatever the upstream client made of it: the client's fault.
            Ok(Err(err))
                if body_fault
                    .as_ref()
                    .is_some_and(|p| p.fault.load(Ordering::Relaxed) != fault::NONE) =>
            {
                let kind = match body_fault.map(|p| p.fault.load(Ordering::Relaxed)) {
                    Some(fault::TOO_LARGE) => ErrorKind::RequestBodyTooLarge,
                    _ => ErrorKind::RequestTimeout,
                };
                let err = ProxyError::with_source(kind, err);
                if let Some(span) = span {
                    span.end(Err::<&Response<Incoming>, _>(&err));
                }
                return Err(err);
            }
            Ok(result) => result,
            Err(_) if try_until < deadline.at => Err(ProxyError::new(ErrorKind::UpstreamTimeout)),
            Err(_) => Err(deadline.expired_error()),
        };
        if let Some(span) = span {
            span.end(result.as_ref().map(|(resp, _)| resp));
        }

        // One classification feeds the breaker, outlier detection and the retry decision.
        let outcome = match &result {
            Ok((resp, _)) => Some(Outcome::response(resp.status(), resp.headers())),
            Err(err) => Outcome::from_error(err),
        };
        if let Some(outcome) = &outcome {
            if let Some(ticket) = ticket {
                ticket.record(outcome, latency);
            }
            upstream.record_outcome(&picked.endpoint, outcome);
        }

        // A retry the route's breaker (now open) or the upstream's request cap would refuse
        // is not tried: the client is better served by this attempt's own answer.
        let wanted = match (retry, outcome) {
            (Some(policy), Some(cause))
                if !last
                    && policy.retries(&cause)
                    && !route.breaker.as_ref().is_some_and(|b| b.is_open())
                    && !upstream.thresholds.requests.is_full() =>
            {
                Some((policy, cause))
            }
            _ => None,
        };
        if let Some((policy, cause)) = wanted {
            if let Some(delay) = retry_delay(policy, attempt, &result, deadline) {
                if upstream.withdraw_retry() {
                    upstream.count_retry(&cause);
                    tracing::debug!(
                        route = %route.name, upstream = %upstream.name,
                        endpoint = %picked.endpoint.addr, attempt = attempt + 1,
                        outcome = ?cause, ?delay, "retrying"
                    );
                    tried.push(Arc::clone(&picked.endpoint));
                    // Boxed: retries are rare, and inline it would enlarge every request's future.
                    previous = Some(Box::new(Attempt {
                        result,
                        picked,
                        outcome,
                        latency,
                    }));
                    if !delay.is_zero() {
                        Box::pin(tokio::time::sleep(delay)).await;
                    }
                    attempt += 1;
                    continue;
                }
                tracing::debug!(
                    route = %route.name, upstream = %upstream.name,
                    "retry refused by the upstream's retry budget"
                );
            }
        }
        let this = Attempt {
            result,
            picked,
            outcome,
            latency,
        };
        break this.end(&mut shed_permit)?;
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !headers::upgrade_allowed(resp.headers(), &route.upgrades) {
        // A switch to a protocol the route does not allow (or that was not asked for).
        if let Some(conn) = conn {
            conn.discard();
        }
        return Err(ProxyError::new(ErrorKind::UpstreamProtocol));
    }
    if switching {
        match (
            downstream_upgrade,
            resp.extensions_mut().remove::<OnUpgrade>(),
        ) {
            (Some(down), Some(up)) => tunnel(ds, down, up),
            _ => return Err(ProxyError::new(ErrorKind::UpstreamProtocol)),
        }
    }

    let (mut head, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut head.headers, switching, None);
    head.version = downstream_version;
    let body = if switching {
        Body::Empty
    } else {
        Body::upstream(body, picked, conn).with_idle_timeout(route.stream_idle_timeout)
    };
    Ok(Response::from_parts(head, body))
}

/// One finished attempt: its result, endpoint, classification and response-head latency.
struct Attempt {
    result: Result<UpstreamResponse, ProxyError>,
    picked: Picked,
    outcome: Option<Outcome>,
    latency: Duration,
}

impl Attempt {
    /// Ends the forward step with this attempt: the adaptive limit learns from it (timeouts
    /// and 503s are the upstream saying it is overloaded) and its answer goes back.
    fn end(
        self,
        shed_permit: &mut Option<shed::ShedPermit>,
    ) -> Result<(http::Response<Incoming>, Option<PooledConn>, Picked), ProxyError> {
        if let (Some(permit), Some(outcome)) = (shed_permit.take(), &self.outcome) {
            let overloaded = matches!(
                outcome,
                Outcome::Failed(GatewayError::Timeout) | Outcome::Response { status: 503, .. }
            );
            permit.finish(self.latency, overloaded);
        }
        let (resp, conn) = self.result?;
        Ok((resp, conn, self.picked))
    }

    /// Drops the attempt for a retry; an HTTP/1.1 connection whose response body was never
    /// read is closed, not pooled.
    fn discard(self) {
        if let Ok((_, Some(conn))) = self.result {
            conn.discard();
        }
    }
}

/// Picks the endpoint of an attempt and admits it: its breaker (the route's, or the
/// endpoint's) and the upstream's request cap.
fn admit<'u>(
    upstream: &'u Upstream,
    route: &Route,
    hash: Option<u64>,
    tried: &[Arc<Endpoint>],
) -> Result<(Picked, Option<BreakerTicket>, Held<'u>), ProxyError> {
    // Endpoints whose own breaker refused this request (half-open with every probe slot
    // taken): another endpoint is picked instead.
    let mut refused: Vec<Arc<Endpoint>> = Vec::new();
    loop {
        let picked = pick(upstream, route, hash, tried, &refused)?;
        let ticket = match (&route.breaker, &picked.endpoint.breaker) {
            (Some(b), _) => Some(
                b.admit()
                    .map_err(|after| ProxyError::retry_after(ErrorKind::CircuitOpen, after))?,
            ),
            (None, Some(b)) => match b.admit() {
                Ok(ticket) => Some(ticket),
                Err(_) => {
                    refused.push(Arc::clone(&picked.endpoint));
                    continue;
                }
            },
            (None, None) => None,
        };
        let slot = upstream.thresholds.request()?;
        return Ok((picked, ticket, slot));
    }
}

/// Picks the endpoint of an attempt: one whose breaker is not open (per-endpoint breakers)
/// and, for a retry, one not tried yet when such an endpoint exists.
fn pick(
    upstream: &Upstream,
    route: &Route,
    hash: Option<u64>,
    tried: &[Arc<Endpoint>],
    refused: &[Arc<Endpoint>],
) -> Result<Picked, ProxyError> {
    let closed = |e: &Arc<Endpoint>| {
        !e.breaker.as_ref().is_some_and(|b| b.is_open())
            && !refused.iter().any(|r| Arc::ptr_eq(r, e))
    };
    let fresh = |e: &Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
    let per_endpoint = route.breaker.is_none() && upstream.has_endpoint_breakers();
    let picked = match (per_endpoint, tried.is_empty()) {
        (false, true) => upstream.pick(hash),
        (false, false) => upstream
            .pick_where(hash, fresh)
            .or_else(|| upstream.pick(hash)),
        (true, _) => upstream
            .pick_where(hash, |e| closed(e) && fresh(e))
            .or_else(|| upstream.pick_where(hash, closed)),
    };
    match picked {
        Some(picked) => Ok(picked),
        // Every endpoint in rotation has its breaker open: answer as the breakers would.
        None if per_endpoint && upstream.has_rotation() => {
            let after = upstream.endpoint_breakers_retry_after();
            Err(ProxyError::retry_after(ErrorKind::CircuitOpen, after))
        }
        None => Err(ProxyError::new(ErrorKind::NoHealthyUpstream)),
    }
}

/// The wait before the next attempt, or `None` when there is to be no next attempt: the
/// upstream asked (Retry-After) for longer than the policy accepts, or the wait would not
/// end before the deadline.
fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    result: &Result<UpstreamResponse, ProxyError>,
    deadline: Deadline,
) -> Option<Duration> {
    let response = result.as_ref().ok().map(|(resp, _)| resp.headers());
    let delay = policy.delay(attempt, response)?;
    (Instant::now() + delay < deadline.at).then_some(delay)
}

/// A copy of a request head for one attempt (extensions are not copied: they carry
/// connection state, and requests with an upgrade are never retried).
fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = empty_head();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

fn empty_head() -> http::request::Parts {
    Request::new(()).into_parts().0
}

/// The `Content-Length` the client declared, if any.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// side closes or the gateway force-closes at the end of a drain.
fn tunnel(ds: &Downstream, down: OnUpgrade, up: OnUpgrade) {
    let force_close = ds.shared.force_close.clone();
    let peer = ds.peer;
    // The tunnel keeps counting against max_connections for as long as it is open.
    let slot = ds
        .connection_slot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    ds.shared.tasks.spawn(async move {
        let _slot = slot;
        let (down, up) = match tokio::try_join!(down, up) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "upgrade did not complete");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        tokio::select! {
            res = tokio::io::copy_bidirectional(&mut down, &mut up) => {
                if let Err(err) = res {
                    tracing::debug!(%peer, error = %err, "tunnel closed with error");
                }
            }
            () = force_close.cancelled() => {}
        }
    });
}
