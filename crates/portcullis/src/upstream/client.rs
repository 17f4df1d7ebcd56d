//! The connections to an upstream's endpoints: HTTP/1.1 through `h1pool` (keep-alive
//! connections on a stack per endpoint), HTTP/2 through `h2pool` (one multiplexed connection
//! per endpoint, so `:authority` can carry the route's host while the connection goes to the
//! endpoint). Failures are mapped to `ProxyError` kinds here.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;
use std::sync::Arc;

use hyper::body::Incoming;

use super::h1pool::{H1Pool, PooledConn};
use super::h2pool::H2Pool;
use super::overflow::Thresholds;
use super::Endpoint;
use crate::body::Body;
use crate::config::schema::{PoolConfig, UpstreamProtocol};
use crate::error::{ErrorKind, ProxyError};

#[derive(Debug)]
pub enum UpstreamClient {
    Http1(H1Pool),
    Http2(H2Pool),
}

/// A response head from an upstream, with the HTTP/1.1 connection it came on: the connection
/// goes back to its endpoint's idle stack when this (or the body it is moved into) is dropped.
pub type UpstreamResponse = (http::Response<Incoming>, Option<PooledConn>);

impl UpstreamClient {
    pub fn new(protocol: UpstreamProtocol, pool: &PoolConfig, thresholds: Arc<Thresholds>) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => UpstreamClient::Http1(H1Pool::new(
                pool.connect_timeout,
                pool.idle_timeout,
                pool.max_idle_per_endpoint,
                thresholds,
            )),
            UpstreamProtocol::Http2 => {
                UpstreamClient::Http2(H2Pool::new(pool.connect_timeout, thresholds))
            }
        }
    }

    /// How long HTTP/1.1 connections may stay idle (`None` for HTTP/2).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        match self {
            UpstreamClient::Http1(pool) => Some(pool.idle_timeout()),
            UpstreamClient::Http2(_) => None,
        }
    }

    /// Sends one request to `endpoint`. Only the path and query of the request URI are used;
    /// the `Host` header says which host the request is for (for HTTP/2 it becomes
    /// `:authority`).
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut req: http::Request<Body>,
    ) -> Result<UpstreamResponse, ProxyError> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match self {
            UpstreamClient::Http1(pool) => {
                *req.uri_mut() = Uri::from(path_and_query);
                *req.version_mut() = Version::HTTP_11;
                // Cookie crumbs of an HTTP/2 client travel as one field over HTTP/1.1.
                crate::proxy::headers::join_cookies(req.headers_mut());
                // HTTP/1.1 requires a Host; a client that sent none (HTTP/1.0) gets the endpoint's.
                if !req.headers().contains_key(header::HOST) {
                    if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
                        req.headers_mut().insert(header::HOST, host);
                    }
                }
                let (resp, conn) = pool.send(endpoint, req).await?;
                Ok((resp, Some(conn)))
            }
            UpstreamClient::Http2(pool) => {
                // In HTTP/2 the host travels as :authority, never as a Host header.
                let authority = req
                    .headers_mut()
                    .remove(header::HOST)
                    .and_then(|h| authority_of(&h))
                    .unwrap_or_else(|| endpoint.authority.clone());
                *req.uri_mut() = absolute(authority, path_and_query)?;
                *req.version_mut() = Version::HTTP_2;
                Ok((pool.send(endpoint, req).await?, None))
            }
        }
    }
}

/// Opens a TCP connection to an endpoint within `timeout`, with Nagle off; any failure is a
/// connect failure (502 `upstream_connect_failed`).
pub(crate) async fn connect_tcp(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, ProxyError> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            ProxyError::with_source(
                ErrorKind::UpstreamConnect,
                format!("connect to {addr} timed out after {timeout:?}"),
            )
        })?
        .map_err(|e| ProxyError::with_source(ErrorKind::UpstreamConnect, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn absolute(authority: Authority, path_and_query: PathAndQuery) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::with_source(ErrorKind::BadRequest, e))
}

fn authority_of(host: &HeaderValue) -> Option<Authority> {
    Authority::try_from(host.as_bytes()).ok()
}

/// Maps a failure of a request on an established connection, looking through its causes.
pub(crate) fn classify_chain(source: Option<&(dyn std::error::Error + 'static)>) -> ErrorKind {
    let chain = || std::iter::successors(source, |e| e.source());
    // A request-body failure (client went away, or the body passed its ceiling) is not the
    // upstream's fault. The ceiling is looked for along the whole chain first: it sits below
    // hyper's "user body" error, which would otherwise read as the client going away.
    if chain().any(|e| e.is::<crate::body::BodyTooLarge>()) {
        return ErrorKind::RequestBodyTooLarge;
    }
    for e in chain() {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                // The request body failed: malformed framing such as a bad chunk size (400),
                // or anything else, e.g. the client went away mid-body (499).
                let malformed = std::iter::successors(e.source(), |e| e.source()).any(|e| {
                    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(
                            io.kind(),
                            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                        )
                    })
                });
                return if malformed {
                    ErrorKind::BadRequest
                } else {
                    ErrorKind::DownstreamAborted
                };
            }
            if h.is_parse() {
                return ErrorKind::UpstreamProtocol;
            }
        }
    }
    ErrorKind::UpstreamReset
}
