//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (listeners
//! bound and config compiled) and the JSON API under `/api/` (see `api` and
//! `docs/admin-api.md`) and `GET /metrics` (Prometheus / OpenMetrics, `docs/metrics.md`).
//! Every request passes `access` first (Host, Origin, token, content type).

pub mod access;
mod api;
pub(crate) mod redact;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::access::{Access, Class};
use crate::app::Shared;
use crate::body::Body;
use crate::telemetry::metrics::format::Format;

/// Serves the admin endpoints on `listener` until `stop` is cancelled, to requests that
/// `access` lets in.
pub fn spawn(listener: TcpListener, shared: Arc<Shared>, access: Access, stop: CancellationToken) {
    let access = Arc::new(access);
    let bound = listener.local_addr().ok();
    tokio::spawn(async move {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()).http1_only());
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            // The address this client connected to: what its Host may name.
            let Some(local) = stream.local_addr().ok().or(bound) else {
                continue;
            };
            let shared = shared.clone();
            let access = access.clone();
            let builder = builder.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |req| serve(shared.clone(), access.clone(), local, req));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
}

async fn serve(
    shared: Arc<Shared>,
    access: Arc<Access>,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(refused) = access.refuse_origin(req.headers(), local) {
        return Ok(refused);
    }
    if req.uri().path().starts_with(api::PREFIX) {
        return Ok(api::serve(&shared, &access, req).await);
    }
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Ok(api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin endpoint at {path}"),
        ));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(api::method_not_allowed("GET, HEAD"));
    }
    if let Some(refused) = access.refuse_request(req.headers(), Class::Probe) {
        return Ok(refused);
    }
    let resp = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => metrics(&shared, &req),
    };
    Ok(resp)
}

/// `GET /metrics`: the format the `Accept` header asks for (`telemetry::metrics::format`).
fn metrics(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let Some(metrics) = &shared.telemetry.metrics else {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are turned off (telemetry.metrics.enabled: false)\n",
        );
    };
    let accept = req.headers().get(header::ACCEPT).map(HeaderValue::as_bytes);
    let format = Format::negotiate(accept);
    match metrics.encode(
        shared.runtime.load_full(),
        shared.telemetry.sink_counts(),
        format,
    ) {
        Ok(body) => {
            let mut resp = Response::new(Body::full(body));
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
