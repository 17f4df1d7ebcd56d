//! Forwarding one request to an upstream: pick an endpoint, rewrite the head for the hop,
//! send with the route's timeout, and hand back the streamed response. Protocol upgrades
//! (WebSocket and others) become a bidirectional byte tunnel once both sides said 101.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::headers;
use super::Downstream;
use crate::body::{Body, LimitedIncoming};
use crate::config::schema::HostHeader;
use crate::error::{ErrorKind, ProxyError};
use crate::router::Route;
use crate::upstream::{lb, Upstream};

/// Forwards `parts` + `body` to `upstream` and returns the upstream's response head with its
/// body still streaming.
pub async fn forward(
    ds: &Downstream,
    route: &Route,
    upstream: &Arc<Upstream>,
    trusted: &[ipnet::IpNet],
    client_ip: std::net::IpAddr,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ProxyError> {
    // Refuse what is known to be too large before touching the upstream.
    if declared_length(&parts.headers).is_some_and(|len| len > route.max_request_body) {
        return Err(ProxyError::new(ErrorKind::RequestBodyTooLarge));
    }
    let downstream_version = parts.version;
    let upgrade =
        downstream_version == Version::HTTP_11 && headers::is_upgrade_request(&parts.headers);
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
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        ds.peer,
        trusted,
        ds.scheme,
        original_host.as_ref().and_then(|h| h.to_str().ok()),
    );

    // Pick the endpoint.
    let hash = upstream
        .hash_key()
        .and_then(|key| lb::request_hash(key, &parts, client_ip));
    let picked = upstream
        .pick(hash)
        .ok_or_else(|| ProxyError::new(ErrorKind::NoHealthyUpstream))?;

    // The head for this hop: the client sends it to the endpoint (see `UpstreamClient::send`).
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
        .into();
    let host = match &route.host_header {
        HostHeader::PassThrough => original_host,
        HostHeader::Endpoint => HeaderValue::from_str(picked.endpoint.authority.as_str()).ok(),
        HostHeader::Rewrite(value) => HeaderValue::from_str(value).ok(),
    };
    match host {
        Some(host) => {
            parts.headers.insert(header::HOST, host);
        }
        None => {
            parts.headers.remove(header::HOST);
        }
    }
    let mut body_exceeded = None;
    let body = if body.is_end_stream() {
        Body::Empty
    } else {
        let limited = LimitedIncoming::new(body, route.max_request_body);
        body_exceeded = Some(limited.exceeded_flag());
        // stream idle timeout
        Body::Limited(limited).with_idle_timeout(route.stream_idle_timeout)
    };

    // Send, bounded by the route's timeout until the response head arrives.
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(
        route.timeout,
        upstream.client.send(&picked.endpoint, request),
    )
    .await
    .map_err(|_| ProxyError::new(ErrorKind::UpstreamTimeout))?;
    let (mut resp, conn) = match sent {
        // The send failed because the body went over its limit, whatever the client made of it.
        Err(err) if body_exceeded.is_some_and(|f| f.load(Ordering::Relaxed)) => {
            return Err(ProxyError::with_source(ErrorKind::RequestBodyTooLarge, err));
        }
        sent => sent?,
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
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
    headers::strip_hop_by_hop(&mut head.headers, switching);
    head.version = downstream_version;
    let body = if switching {
        Body::Empty
    } else {
        // stream idle timeout
        Body::upstream(body, picked, conn).with_idle_timeout(route.stream_idle_timeout)
    };
    Ok(Response::from_parts(head, body))
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
