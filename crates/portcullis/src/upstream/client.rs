//! The connections to an upstream's endpoints. HTTP/1.1 goes through hyper-util's pooled
//! client (keep-alive pool keyed by endpoint address); HTTP/2 through `h2pool`, one multiplexed
//! connection per endpoint, so `:authority` can carry the route's host while the connection
//! goes to the endpoint. Errors are mapped to `ProxyError` kinds here.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::h2pool::H2Pool;
use super::Endpoint;
use crate::body::Body;
use crate::config::schema::{PoolConfig, UpstreamProtocol};
use crate::error::{ErrorKind, ProxyError};

#[derive(Debug)]
pub enum UpstreamClient {
    Http1(Box<Client<HttpConnector, Body>>),
    Http2(H2Pool),
}

impl UpstreamClient {
    pub fn new(protocol: UpstreamProtocol, pool: &PoolConfig) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(pool.connect_timeout));
                connector.enforce_http(true);
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(pool.idle_timeout)
                    .pool_max_idle_per_host(pool.max_idle_per_endpoint)
                    .set_host(false);
                UpstreamClient::Http1(Box::new(builder.build(connector)))
            }
            UpstreamProtocol::Http2 => UpstreamClient::Http2(H2Pool::new(pool.connect_timeout)),
        }
    }

    /// Sends one request to `endpoint`. Only the path and query of the request URI are used;
    /// the `Host` header says which host the request is for (for HTTP/2 it becomes
    /// `:authority`).
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match self {
            UpstreamClient::Http1(client) => {
                *req.uri_mut() = absolute(endpoint.authority.clone(), path_and_query)?;
                *req.version_mut() = Version::HTTP_11;
                // HTTP/1.1 requires a Host; a client that sent none (HTTP/1.0) gets the endpoint's.
                if !req.headers().contains_key(header::HOST) {
                    if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
                        req.headers_mut().insert(header::HOST, host);
                    }
                }
                client.request(req).await.map_err(classify_legacy)
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
                pool.send(endpoint.addr, req).await
            }
        }
    }
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

/// Maps a pooled-client error to whose fault it was and what the client is told.
fn classify_legacy(err: hyper_util::client::legacy::Error) -> ProxyError {
    if err.is_connect() {
        return ProxyError::with_source(ErrorKind::UpstreamConnect, err);
    }
    let kind = classify_chain(std::error::Error::source(&err));
    ProxyError::with_source(kind, err)
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
