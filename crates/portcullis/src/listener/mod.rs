//! Listeners: bind a socket, accept within the connection limits (`max_connections`, and
//! `max_connections_per_ip` checked at accept, before anything is read), and hand each
//! connection to `connection`, which serves it with the protocol the listener speaks.
//!
//! - `connection`: the HTTP server of one connection, its watchdog (first-request and idle
//!   timeouts, drain) and the per-connection state the service and the IO share.
//! - `watched`: the connection's IO: counts activity, tells HTTP/2 from HTTP/1.1 on `auto`
//!   listeners, and replaces hyper's bare automatic error responses with the gateway's own.
//! - `head_scan`: what `watched` sees of a request head's framing headers before the HTTP
//!   parser folds them (`Content-Length` with `Transfer-Encoding`, repeated `Content-Length`).
//! - `refusal`: those responses, and the metrics and log lines of refused connections.
//! - `per_ip`: the per-client-IP connection count.

mod connection;
mod head_scan;
mod per_ip;
mod refusal;
mod watched;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::config::schema::{ListenerConfig, ListenerLimits, ListenerProtocol};
use crate::proxy::Downstream;
use crate::reason;

/// Backlog of pending connections the kernel keeps per listener.
const BACKLOG: u32 = 4096;
/// hyper refuses read buffers smaller than this.
const MIN_BUF_SIZE: usize = 8192;

/// Binds `address` with `SO_REUSEADDR` and a deep backlog.
pub fn bind(address: &str) -> io::Result<TcpListener> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{address}: {e}")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// The HTTP server of a listener, configured once: hyper's HTTP/1.1 server for `http1`, its
/// HTTP/2 server for `http2` (anything but the preface is a protocol error, never an
/// HTTP/1.1 answer), the detecting builder for `auto`.
#[derive(Debug)]
enum Server {
    Http1(http1::Builder),
    Http2(http2::Builder<TokioExecutor>),
    Auto(Box<auto::Builder<TokioExecutor>>),
}

impl Server {
    fn new(protocol: ListenerProtocol, limits: &ListenerLimits) -> Server {
        let header_bytes = usize::try_from(limits.max_header_bytes.as_u64()).unwrap_or(usize::MAX);
        let buf_size = header_bytes.max(MIN_BUF_SIZE);
        let header_list = u32::try_from(header_bytes).unwrap_or(u32::MAX);
        match protocol {
            ListenerProtocol::Http1 => {
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new())
                    .keep_alive(true)
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(buf_size)
                    .max_headers(limits.max_headers);
                Server::Http1(b)
            }
            ListenerProtocol::Http2 => {
                let mut b = http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .max_concurrent_streams(limits.h2_max_concurrent_streams)
                    .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
                    .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
                    .max_header_list_size(header_list);
                Server::Http2(b)
            }
            ListenerProtocol::Auto => {
                let mut b = auto::Builder::new(TokioExecutor::new());
                b.http1()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(buf_size)
                    .max_headers(limits.max_headers);
                b.http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(limits.h2_max_concurrent_streams)
                    .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
                    .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
                    .max_header_list_size(header_list);
                Server::Auto(Box::new(b))
            }
        }
    }
}

/// What every connection of a listener shares.
#[derive(Debug)]
struct ListenerShared {
    name: Arc<str>,
    server: Server,
    keepalive: Duration,
    first_request: Duration,
    metrics: Option<Arc<crate::telemetry::metrics::listeners::ListenerState>>,
}

/// Accepts connections on `listener` until `stop` is cancelled. Each connection is served in
/// its own task tracked by `shared.tasks`.
pub fn spawn_accept_loop(
    listener: TcpListener,
    index: usize,
    config: &ListenerConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let limits = &config.limits;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let metrics = shared
        .telemetry
        .metrics
        .as_ref()
        .map(|m| m.listener(&config.name, permits.clone(), limits.max_connections));
    let ls = Arc::new(ListenerShared {
        name: config.name.as_str().into(),
        server: Server::new(config.protocol, limits),
        keepalive: limits.keepalive_timeout,
        first_request: limits.first_request_timeout,
        metrics,
    });
    let per_ip = (limits.max_connections_per_ip > 0)
        .then(|| Arc::new(per_ip::PerIp::new(limits.max_connections_per_ip)));
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        loop {
            // Over the limit, stop accepting: new connections wait in the kernel backlog.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => break,
                Err(TryAcquireError::NoPermits) => {
                    if let Some(m) = &ls.metrics {
                        m.limited();
                    }
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        () = stop.cancelled() => break,
                    }
                }
            };
            if let Some(m) = &ls.metrics {
                m.holding_permit(true);
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %ls.name, error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            if let Some(m) = &ls.metrics {
                m.holding_permit(false);
            }
            // The per-IP cap: refused before anything is read, the permit given back at once.
            let ip_slot = match &per_ip {
                None => None,
                Some(per_ip) => match per_ip.enter(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        drop(stream);
                        refusal::connection_refused(
                            &shared,
                            &ls,
                            peer,
                            reason::CLIENT_CONNECTION_LIMIT,
                        );
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ds = Arc::new(Downstream {
                shared: shared.clone(),
                listener: index,
                peer,
                scheme: "http",
                in_flight: AtomicUsize::new(0),
                connection_slot: std::sync::Mutex::new(Some(permit)),
            });
            let stop = stop.clone();
            let tracked = ls.metrics.as_ref().map(|m| m.track(&ds));
            let ls = ls.clone();
            shared.tasks.spawn(async move {
                connection::serve(stream, ds, &ls, ip_slot, stop).await;
                drop(tracked);
            });
        }
        tracing::debug!(listener = %ls.name, "stopped accepting");
    });
}
