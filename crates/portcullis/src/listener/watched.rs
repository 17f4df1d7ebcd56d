//! The IO of one downstream connection. It counts reads and writes (the idle timer), tells an
//! HTTP/2 connection from an HTTP/1.1 one on `auto` listeners (by the first bytes), and
//! replaces the bare response hyper's HTTP/1.1 server writes by itself for a request head it
//! cannot parse with the gateway's own (`refusal::replacement`).
//!
//! hyper has no hook for those responses, but the IO can tell them: while no request of the
//! connection is outstanding in the service (`ConnState::outstanding`: from its entry until
//! its response body has been written out), hyper has nothing of ours to write, so a write
//! then is its automatic response. It is reported to hyper as written in full and our bytes
//! go out instead; hyper closes the connection after it, and anything else it writes is
//! dropped. A proxied body is never looked at: its request is outstanding while it is sent.
//!
//! The head read while nothing is outstanding (from the first byte after the previous
//! exchange to the blank line ending it) is also scanned for the framing headers the parser
//! folds (`head_scan`); an ambiguous one is noted in `ConnState::ambiguous_head` for the
//! request it belongs to, which the conformance check then refuses. Limits of a look at the
//! bytes rather than at parsed messages:
//! - a pipelined head read along with the request before it, while that one is outstanding,
//!   is not scanned (or only its rest that comes later): such a request gets the parser's
//!   handling (with `Transfer-Encoding` the body is read as chunked and the connection closed
//!   after the response; identical repeated `Content-Length` lines are folded into one);
//! - the rest of a request body the gateway did not read (it answered first) that arrives
//!   after the response is scanned as if it began the next head; this can only make the
//!   next request on that same connection refused, or leave it to the parser's handling.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection::{ConnState, HTTP1, HTTP2, UNDECIDED};
use super::head_scan::{HeadScan, Verdict};
use super::per_ip::IpSlot;
use super::{refusal, ListenerShared};
use crate::proxy::Downstream;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug)]
enum Rewrite {
    /// HTTP/2 or a tunnel: bytes pass untouched.
    Off,
    /// HTTP/1.1 (or not known yet): looking out for hyper's automatic responses.
    Watch,
    /// Sending our answer in place of hyper's (`written` of `bytes` sent so far); hyper's
    /// writes are dropped from here on.
    Replacing { bytes: Bytes, written: usize },
}

/// A downstream connection's stream (see the module doc).
#[derive(Debug)]
pub struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    ds: Arc<Downstream>,
    ls: Arc<ListenerShared>,
    rewrite: Rewrite,
    /// Bytes of the HTTP/2 preface matched so far, while the protocol is undecided.
    preface: usize,
    /// The head being read while nothing is outstanding has a line feed (it is past its
    /// request line), its framing scan, and the request count that head belongs to (both
    /// reset by a new request).
    head_lf: bool,
    head_scan: HeadScan,
    head_requests: u64,
    /// The connection's place under `max_connections_per_ip`: held as long as the stream,
    /// so a connection upgraded to a tunnel keeps counting.
    _ip_slot: Option<IpSlot>,
}

impl Watched {
    pub fn new(
        inner: TcpStream,
        state: Arc<ConnState>,
        ds: Arc<Downstream>,
        ls: Arc<ListenerShared>,
        ip_slot: Option<IpSlot>,
    ) -> Self {
        let rewrite = if state.protocol() == HTTP2 {
            Rewrite::Off
        } else {
            Rewrite::Watch
        };
        Self {
            inner,
            state,
            ds,
            ls,
            rewrite,
            preface: 0,
            head_lf: false,
            head_scan: HeadScan::new(),
            head_requests: 0,
            _ip_slot: ip_slot,
        }
    }

    /// Looks at bytes just read.
    fn on_read(&mut self, new: &[u8]) {
        self.state.activity.fetch_add(1, Ordering::Relaxed);
        if new.is_empty() || !matches!(self.rewrite, Rewrite::Watch) {
            return;
        }
        if self.state.protocol() == UNDECIDED {
            // As hyper-util decides: HTTP/2 when the whole preface is there, HTTP/1.1 at the
            // first byte that differs from it.
            let want = &PREFACE[self.preface..];
            let n = want.len().min(new.len());
            if new[..n] != want[..n] {
                self.state.protocol.store(HTTP1, Ordering::Relaxed);
            } else if self.preface + n == PREFACE.len() {
                self.state.protocol.store(HTTP2, Ordering::Relaxed);
                self.rewrite = Rewrite::Off;
                return;
            } else {
                self.preface += n;
            }
        }
        // Between requests: is the next head still in its request line? A heuristic for
        // 414 against 431 (`refusal::replacement`): it only looks at reads made while nothing
        // is outstanding, so bytes of a pipelined head read along with the request before it
        // are not seen (that head then counts as "still in its request line"). And is its
        // framing ambiguous (`head_scan`, same reads)? Costs a memchr and one pass over the
        // head's bytes, never over a body.
        if self.state.outstanding.load(Ordering::Acquire) == 0
            && !self.state.upgraded.load(Ordering::Acquire)
        {
            let requests = self.state.requests.load(Ordering::Relaxed);
            if requests != self.head_requests {
                self.head_requests = requests;
                self.head_lf = false;
                self.head_scan = HeadScan::new();
            }
            if !self.head_lf && new.contains(&b'\n') {
                self.head_lf = true;
            }
            if self.head_scan.feed(new) == Some(Verdict::Ambiguous) {
                // This head is the next request's: the one that will be counted `requests`.
                self.state
                    .ambiguous_head
                    .store(requests + 1, Ordering::Release);
            }
        }
    }

    /// Whether the write starting with `first` is to be replaced (or dropped).
    fn replaces(&mut self, first: &[u8]) -> bool {
        match self.rewrite {
            Rewrite::Off => false,
            Rewrite::Replacing { .. } => true,
            Rewrite::Watch => {
                let state = &self.state;
                if state.protocol() == HTTP2
                    || state.upgraded.load(Ordering::Acquire)
                    || state.outstanding.load(Ordering::Acquire) != 0
                {
                    if state.upgraded.load(Ordering::Acquire) {
                        self.rewrite = Rewrite::Off;
                    }
                    return false;
                }
                let Some(status) = refusal::automatic_status(first) else {
                    return false;
                };
                let bytes = refusal::replacement(&self.ds, &self.ls, status, !self.head_lf);
                self.rewrite = Rewrite::Replacing { bytes, written: 0 };
                true
            }
        }
    }

    /// Sends what is left of our answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Rewrite::Replacing { bytes, written } = &mut self.rewrite {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
                self.state.activity.fetch_add(1, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if res.is_ready() {
            let new = buf.filled().get(before..).unwrap_or(&[]);
            this.on_read(new);
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
        let this = self.get_mut();
        if this.replaces(buf) {
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if res.is_ready() {
            this.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper puts a response head in one buffer: the first non-empty slice starts it.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.replaces(first) {
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if res.is_ready() {
            this.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = res {
            // hyper flushes the socket only once its write buffer is empty: every response
            // that ended before this is out.
            if this.state.protocol() != HTTP2 {
                this.state.flushed();
            }
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
