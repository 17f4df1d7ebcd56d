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
    // upstream's fault. The ceiling is looked for along the whole chain first: it sits below
    // hyper's "user body" error, which would otherwise read as the client going away.
    let chain = || {
        std::iter::successors(std::error::Error::source(&err), |e| {
            (*e as &(dyn std::error::Error + 'static)).source()
        })
    };
    if chain().any(|e| e.is::<crate::body::BodyTooLarge>()) {
        return ProxyError::with_source(ErrorKind::RequestBodyTooLarge, err);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return ProxyError::with_source(ErrorKind::DownstreamAborted, err);
            }
            if h.is_parse() {
                return ProxyError::with_source(ErrorKind::UpstreamProtocol, err);
            }
        }
        source = e.source();
    }
    ProxyError::with_source(ErrorKind::UpstreamReset, err)
}
