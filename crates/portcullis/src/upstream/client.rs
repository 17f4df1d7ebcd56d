//! The connection pool to an upstream's endpoints: hyper-util's pooled client, one per
//! upstream, keyed by endpoint address. Errors are mapped to `ProxyError` kinds here.

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::schema::{PoolConfig, UpstreamProtocol};
use crate::error::{ErrorKind, ProxyError};

#[derive(Debug, Clone)]
pub struct UpstreamClient {
    inner: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    pub fn new(protocol: UpstreamProtocol, pool: &PoolConfig) -> Self {
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
            .set_host(false)
            .http2_only(protocol == UpstreamProtocol::Http2);
        if protocol == UpstreamProtocol::Http2 {
            builder
                .http2_adaptive_window(true)
                .http2_keep_alive_interval(None);
        }
        Self {
            inner: builder.build(connector),
        }
    }

    /// Sends one request; the URI must carry the endpoint's authority.
    pub async fn send(
        &self,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        self.inner.request(req).await.map_err(classify)
    }
}

/// Maps a client error to whose fault it was and what the client is told.
fn classify(err: hyper_util::client::legacy::Error) -> ProxyError {
    if err.is_connect() {
        return ProxyError::with_source(ErrorKind::UpstreamConnect, err);
    }
    // A request-body failure (client went away, or the body passed its ceiling) is not the
    // upstream's fault.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(e) = source {
        if e.is::<crate::body::BodyTooLarge>() {
            return ProxyError::with_source(ErrorKind::RequestBodyTooLarge, err);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                // The request body failed; what made it fail lies further down the chain.
                let kind = request_body_error(e);
                return ProxyError::with_source(kind, err);
            }
            if h.is_parse() {
                return ProxyError::with_source(ErrorKind::UpstreamProtocol, err);
            }
        }
        source = e.source();
    }
    ProxyError::with_source(ErrorKind::UpstreamReset, err)
}

/// Why the client's request body failed: over its ceiling (413), malformed framing such as a
/// bad chunk size (400), or anything else, e.g. the client went away mid-body (499).
fn request_body_error(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<crate::body::BodyTooLarge>() {
            return ErrorKind::RequestBodyTooLarge;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ) {
                return ErrorKind::BadRequest;
            }
        }
        source = e.source();
    }
    ErrorKind::DownstreamAborted
}
