//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (listeners
//! bound and config compiled) and the JSON API under `/api/` (see `api` and
//! `docs/admin-api.md`) and `GET /metrics` (Prometheus / OpenMetrics, `docs/metrics.md`).

mod api;
pub(crate) mod redact;

use std::convert::Infallible;
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

use crate::app::Shared;
use crate::body::Body;
use crate::telemetry::metrics::format::Format;

/// Serves the admin endpoints on `listener` until `stop` is cancelled.
pub fn spawn(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
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
            let shared = shared.clone();
            let builder = builder.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| serve(shared.clone(), req));
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

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path().starts_with(api::PREFIX) {
        return Ok(api::serve(&shared, req).await);
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(&shared, &req),
        (_, "/healthz" | "/readyz" | "/metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
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
