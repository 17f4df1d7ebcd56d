//! One downstream connection: served with the listener's HTTP server, watched from a task of
//! its own (first-request timeout, idle timeout, drain), and the state the service, the IO
//! wrapper and the watchdog share (`ConnState`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::per_ip::IpSlot;
use super::watched::Watched;
use super::{refusal, ListenerShared, Server};
use crate::body::BoxError;
use crate::proxy::conformance::AmbiguousFraming;
use crate::proxy::{self, Downstream};
use crate::reason;
use crate::telemetry::ObservedBody;

/// How many idle-timer checks make one idle timeout (precision of the idle close).
const IDLE_CHECKS: u32 = 4;

/// Not known yet (an `auto` listener before the first bytes).
pub const UNDECIDED: u8 = 0;
pub const HTTP1: u8 = 1;
pub const HTTP2: u8 = 2;

/// What the service, the IO wrapper and the watchdog of one connection know about it.
#[derive(Debug)]
pub struct ConnState {
    /// Reads and writes (the idle timer of HTTP/1.1 connections).
    pub activity: AtomicU64,
    /// Requests that reached the service.
    pub requests: AtomicU64,
    /// Requests from their entry into the service until their response body has ended or
    /// been dropped and, on HTTP/1.1, hyper has written out all it buffered of it
    /// (`ended`). While this is 0 on an HTTP/1.1 connection, hyper has no response of ours
    /// to write: whatever it writes is its own automatic error response.
    pub outstanding: AtomicUsize,
    /// HTTP/1.1 responses whose body ended (or was dropped) while hyper may still hold the
    /// last of its bytes in its write buffer: taken off `outstanding` at the next flush that
    /// reaches the socket (hyper flushes the socket only once its buffer is empty).
    pub ended: AtomicUsize,
    /// `UNDECIDED`, `HTTP1` or `HTTP2`.
    pub protocol: AtomicU8,
    /// A response switched protocols: the IO now carries a tunnel, not HTTP.
    pub upgraded: AtomicBool,
    /// HTTP/1.1: the request whose head the IO found framed ambiguously (`head_scan`), as its
    /// place in `requests` plus one (the count it makes); 0: none so far.
    pub ambiguous_head: AtomicU64,
}

impl ConnState {
    fn new(protocol: u8) -> Self {
        Self {
            activity: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            protocol: AtomicU8::new(protocol),
            upgraded: AtomicBool::new(false),
            ambiguous_head: AtomicU64::new(0),
        }
    }

    pub fn protocol(&self) -> u8 {
        self.protocol.load(Ordering::Relaxed)
    }

    /// HTTP/1.1: the responses that ended before a flush to the socket are out now.
    pub fn flushed(&self) {
        if self.ended.load(Ordering::Relaxed) > 0 {
            let ended = self.ended.swap(0, Ordering::AcqRel);
            self.outstanding.fetch_sub(ended, Ordering::AcqRel);
        }
    }
}

/// One request, counted in `ConnState::outstanding` from its entry into the service until
/// its response body is done (this guard travels inside the body).
#[derive(Debug)]
struct Outstanding(Arc<ConnState>);

impl Outstanding {
    /// Counts a request in; also says whether the IO found its head framed ambiguously.
    fn enter(state: &Arc<ConnState>) -> (Self, bool) {
        state.outstanding.fetch_add(1, Ordering::AcqRel);
        let count = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let ambiguous = state.ambiguous_head.load(Ordering::Acquire) == count;
        (Self(Arc::clone(state)), ambiguous)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if self.0.protocol() == HTTP2 {
            self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.0.ended.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The response body with its request's `Outstanding` guard.
#[derive(Debug)]
pub struct TrackedBody {
    body: ObservedBody,
    _outstanding: Outstanding,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `req` through the pipeline, counted as outstanding until its response body is done.
async fn handle(
    ds: Arc<Downstream>,
    outstanding: Outstanding,
    req: Request<Incoming>,
) -> Result<Response<TrackedBody>, Infallible> {
    let resp = match proxy::handle(ds, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        outstanding.0.upgraded.store(true, Ordering::Release);
    }
    Ok(resp.map(|body| TrackedBody {
        body,
        _outstanding: outstanding,
    }))
}

/// Serves one accepted connection until it ends.
pub async fn serve(
    stream: TcpStream,
    ds: Arc<Downstream>,
    ls: &Arc<ListenerShared>,
    ip_slot: Option<IpSlot>,
    stop: CancellationToken,
) {
    let protocol = match ls.server {
        Server::Http1(_) => HTTP1,
        Server::Http2(_) => HTTP2,
        Server::Auto(_) => UNDECIDED,
    };
    let state = Arc::new(ConnState::new(protocol));
    let io = TokioIo::new(Watched::new(
        stream,
        state.clone(),
        ds.clone(),
        ls.clone(),
        ip_slot,
    ));
    let peer = ds.peer;
    let shared = ds.shared.clone();
    let control = Arc::new(Control::default());
    let done = CancellationToken::new();
    ds.shared.tasks.spawn(watchdog(
        control.clone(),
        state.clone(),
        ds.clone(),
        ls.clone(),
        stop,
        done.clone(),
    ));
    let service_state = state.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let (outstanding, ambiguous) = Outstanding::enter(&service_state);
        if ambiguous {
            req.extensions_mut().insert(AmbiguousFraming);
        }
        handle(ds.clone(), outstanding, req)
    });
    let res = match &ls.server {
        Server::Http1(b) => {
            let conn = b.serve_connection(io, service).with_upgrades();
            drive(conn, &control, |c| c.graceful_shutdown()).await
        }
        Server::Http2(b) => {
            let conn = b.serve_connection(io, service);
            drive(conn, &control, |c| c.graceful_shutdown()).await
        }
        Server::Auto(b) => {
            let conn = b.serve_connection_with_upgrades(io, service);
            drive(conn, &control, |c| c.graceful_shutdown()).await
        }
    };
    done.cancel();
    match res {
        Some(Err(err)) => {
            let timed_out = err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            if timed_out {
                refusal::connection_refused(&shared, ls, peer, reason::HEADER_TIMEOUT);
            } else {
                tracing::debug!(%peer, error = %err, "connection ended with error");
            }
        }
        None => tracing::debug!(%peer, "connection closed by the gateway"),
        Some(Ok(())) => {}
    }
}

/// Polls `conn` until it ends (`Some`) or the watchdog orders it dropped (`None`).
///
/// The connection is polled on every wake-up (each read, write and upstream answer); it only
/// looks at one atomic for orders, so lifecycle signals cost traffic nothing.
async fn drive<C, E>(
    conn: C,
    control: &Control,
    graceful: fn(Pin<&mut C>),
) -> Option<Result<(), BoxError>>
where
    C: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    tokio::pin!(conn);
    let mut graceful_sent = false;
    std::future::poll_fn(|cx| {
        control.waker.register(cx.waker());
        match control.order.load(Ordering::Acquire) {
            CLOSE => return Poll::Ready(None),
            GRACEFUL if !graceful_sent => {
                graceful_sent = true;
                graceful(conn.as_mut());
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(|r| Some(r.map_err(Into::into)))
    })
    .await
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
/// polled on every wake-up of the connection. It
/// - drops the connection when no request reached the service within the listener's
///   `first_request_timeout` (silent connections, a bare HTTP/2 preface, a partial head);
/// - closes it gracefully when it has been idle for the keep-alive timeout: an HTTP/1.1
///   connection with no reads or writes and no request in flight, an HTTP/2 connection with
///   no open stream (its PINGs and SETTINGS do not keep it open), and drops it when it
///   ignores that close (HTTP/1.1: one more idle timeout; HTTP/2: one more check);
/// - closes it gracefully when the gateway drains, and drops it when the drain times out.
///
/// Ends with the connection (`done`).
async fn watchdog(
    control: Arc<Control>,
    state: Arc<ConnState>,
    ds: Arc<Downstream>,
    ls: Arc<ListenerShared>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    let idle = ls.keepalive;
    let force_close = ds.shared.force_close.clone();
    let first_request = tokio::time::sleep(ls.first_request);
    tokio::pin!(first_request);
    let mut waiting_first = true;
    let check_every = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut last_seen = (state.protocol() == HTTP2, 0);
    let mut quiet_checks = 0;
    let mut closing = false;
    // Closing because idle: a peer that ignores the graceful close (an HTTP/2 client that
    // never acknowledges the GOAWAY's PING) is dropped after a while.
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
            () = &mut first_request, if waiting_first => {
                waiting_first = false;
                if state.requests.load(Ordering::Relaxed) == 0 {
                    refusal::connection_refused(&ds.shared, &ls, ds.peer, reason::FIRST_REQUEST_TIMEOUT);
                    control.order(CLOSE);
                    return;
                }
            }
            () = stop.cancelled(), if !closing => {
                control.order(GRACEFUL);
                closing = true;
            }
            _ = ticker.tick(), if !closing || idle_closing => {
                let h2 = state.protocol() == HTTP2;
                // HTTP/2 is busy while a stream is open, whatever the frames in between;
                // HTTP/1.1 while a request is in flight or bytes move.
                let (now_seen, busy) = if h2 {
                    (
                        state.requests.load(Ordering::Relaxed),
                        state.outstanding.load(Ordering::Relaxed) > 0,
                    )
                } else {
                    (
                        state.activity.load(Ordering::Relaxed),
                        ds.in_flight.load(Ordering::Relaxed) > 0,
                    )
                };
                let seen = (h2, now_seen);
                if last_seen == seen && !busy {
                    quiet_checks += 1;
                    let patience = if h2 { 1 } else { IDLE_CHECKS };
                    if idle_closing && quiet_checks >= patience {
                        tracing::debug!(peer = %ds.peer, "idle connection ignored the close; dropping it");
                        control.order(CLOSE);
                        return;
                    }
                    if !idle_closing && quiet_checks >= IDLE_CHECKS {
                        tracing::debug!(peer = %ds.peer, "closing idle connection");
                        control.order(GRACEFUL);
                        closing = true;
                        idle_closing = true;
                        quiet_checks = 0;
                    }
                } else {
                    last_seen = seen;
                    quiet_checks = 0;
                }
            }
        }
    }
}
