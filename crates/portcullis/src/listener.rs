//! Listeners: bind a socket, accept within the connection limit, and serve each connection
//! with HTTP/1.1 and cleartext HTTP/2 (detected per connection) under the listener's
//! protective limits, an idle timeout, and graceful shutdown.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::config::schema::{ListenerConfig, ListenerLimits, ListenerProtocol};
use crate::proxy::{self, Downstream};

/// Backlog of pending connections the kernel keeps per listener.
const BACKLOG: u32 = 4096;
/// hyper refuses read buffers smaller than this.
const MIN_BUF_SIZE: usize = 8192;
/// How many idle-timer checks make one idle timeout (precision of the idle close).
const IDLE_CHECKS: u32 = 4;

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

/// The HTTP server settings of one listener.
fn http_builder(
    protocol: ListenerProtocol,
    limits: &ListenerLimits,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match protocol {
        ListenerProtocol::Auto => builder,
        ListenerProtocol::Http1 => builder.http1_only(),
        ListenerProtocol::Http2 => builder.http2_only(),
    };
    let header_bytes = usize::try_from(limits.max_header_bytes.as_u64()).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(header_bytes.max(MIN_BUF_SIZE))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    builder
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
    let builder = Arc::new(http_builder(config.protocol, &config.limits));
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let idle = config.limits.keepalive_timeout;
    let name: Arc<str> = config.name.as_str().into();
    let tasks = shared.tasks.clone();
    let metrics = shared
        .telemetry
        .metrics
        .as_ref()
        .map(|m| m.listener(&config.name, permits.clone(), config.limits.max_connections));
    tasks.spawn(async move {
        loop {
            // Over the limit, stop accepting: new connections wait in the kernel backlog.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => break,
                Err(TryAcquireError::NoPermits) => {
                    if let Some(m) = &metrics {
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
            if let Some(m) = &metrics {
                m.holding_permit(true);
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %name, error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
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
            let builder = builder.clone();
            let stop = stop.clone();
            let tracked = metrics.as_ref().map(|m| {
                m.holding_permit(false);
                m.track(&ds)
            });
            shared.tasks.spawn(async move {
                serve_connection(stream, ds, &builder, idle, stop).await;
                drop(tracked);
            });
        }
        tracing::debug!(listener = %name, "stopped accepting");
    });
}

async fn serve_connection(
    stream: TcpStream,
    ds: Arc<Downstream>,
    builder: &auto::Builder<TokioExecutor>,
    idle: Duration,
    stop: CancellationToken,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let peer = ds.peer;
    let control = Arc::new(Control::default());
    let done = CancellationToken::new();
    ds.shared.tasks.spawn(watchdog(
        control.clone(),
        activity,
        ds.clone(),
        idle,
        stop,
        done.clone(),
    ));
    let service = service_fn(move |req| proxy::handle(ds.clone(), req));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    // The connection is polled on every wake-up (each read, write and upstream answer); it
    // only looks at one atomic for orders, so lifecycle signals cost traffic nothing.
    let mut graceful_sent = false;
    let res = std::future::poll_fn(|cx| {
        control.waker.register(cx.waker());
        match control.order.load(Ordering::Acquire) {
            CLOSE => return Poll::Ready(None),
            GRACEFUL if !graceful_sent => {
                graceful_sent = true;
                conn.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    done.cancel();
    match res {
        Some(Err(err)) => tracing::debug!(%peer, error = %err, "connection ended with error"),
        None => tracing::debug!(%peer, "connection closed by the gateway"),
        Some(Ok(())) => {}
    }
}

/// Finish what is in flight, then close (HTTP/1.1: no more keep-alive; HTTP/2: GOAWAY).
const GRACEFUL: u8 = 1;
/// Drop the connection now.
const CLOSE: u8 = 2;

/// Orders from a connection's watchdog to the task serving it (0: none, serve on).
#[derive(Debug, Default)]
struct Control {
    order: AtomicU8,
    waker: AtomicWaker,
}

impl Control {
    fn order(&self, order: u8) {
        self.order.fetch_max(order, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Watches one connection from its own task, so that timers and shutdown signals are not
/// polled on every wake-up of the connection: closes it gracefully when it has been idle for
/// the keep-alive timeout or the gateway drains, drops it when it ignores an idle close for
/// one more timeout or the drain timeout has passed. Ends with the connection (`done`).
async fn watchdog(
    control: Arc<Control>,
    activity: Arc<AtomicU64>,
    ds: Arc<Downstream>,
    idle: Duration,
    stop: CancellationToken,
    done: CancellationToken,
) {
    let force_close = ds.shared.force_close.clone();
    let check_every = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut last_seen = activity.load(Ordering::Relaxed);
    let mut quiet_checks = 0;
    let mut closing = false;
    // Closing because idle: a peer that ignores the graceful close (an HTTP/2 client that
    // never acknowledges the GOAWAY's PING) is dropped after one more quiet idle timeout.
    let mut idle_closing = false;
    let mut ticker = tokio::time::interval(check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = force_close.cancelled() => {
                control.order(CLOSE);
                return;
            }
            () = stop.cancelled(), if !closing => {
                control.order(GRACEFUL);
                closing = true;
            }
            _ = ticker.tick(), if !closing || idle_closing => {
                let now_seen = activity.load(Ordering::Relaxed);
                let busy = ds.in_flight.load(Ordering::Relaxed) > 0;
                if now_seen == last_seen && !busy {
                    quiet_checks += 1;
                    if quiet_checks >= IDLE_CHECKS && idle_closing {
                        tracing::debug!(peer = %ds.peer, "idle connection ignored the close; dropping it");
                        control.order(CLOSE);
                        return;
                    }
                    if quiet_checks >= IDLE_CHECKS {
                        tracing::debug!(peer = %ds.peer, "closing idle connection");
                        control.order(GRACEFUL);
                        closing = true;
                        idle_closing = true;
                        quiet_checks = 0;
                    }
                } else {
                    last_seen = now_seen;
                    quiet_checks = 0;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream that counts reads and writes, so the idle timer can tell a quiet connection.
    struct Watched {
        #[pin]
        inner: TcpStream,
        activity: Arc<AtomicU64>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_read(cx, buf);
        if res.is_ready() {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if res.is_ready() {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if res.is_ready() {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
