//! Raw TCP helpers for tests that need bytes the HTTP clients would never send: malformed
//! requests, slowloris dribbling, pipelining.
//!
//! The timeouts here run on the tokio clock: under `start_paused = true` they auto-advance
//! while the runtime waits on real sockets, so use these helpers with real time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects, writes `bytes`, then reads until the peer closes or `timeout` passes; returns
/// what was read. Send `Connection: close` to get a prompt return.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("send_raw: cannot connect to {addr}: {e}"));
    // A write error means the peer already closed; whatever it answered is still readable.
    let _ = stream.write_all(bytes).await;
    read_until_close(&mut stream, timeout).await
}

/// Reads from `stream` until EOF, an error, or `timeout`; returns what was read.
pub async fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// A loopback address where every connection is refused, reserved for as long as the value
/// lives: a socket bound to the port but not listening. Binding a listener, noting its port
/// and closing it is not enough: another test running at the same time can be given the same
/// port by the next `bind(0)`, and the "dead" endpoint answers.
#[derive(Debug)]
pub struct RefusedAddr {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusedAddr {
    pub fn new() -> RefusedAddr {
        use socket2::{Domain, Socket, Type};
        // No SO_REUSEADDR: nothing else can bind the port while this socket holds it.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)
            .unwrap_or_else(|e| panic!("RefusedAddr: socket: {e}"));
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        socket
            .bind(&any_port.into())
            .unwrap_or_else(|e| panic!("RefusedAddr: bind: {e}"));
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| panic!("RefusedAddr: no local address"));
        RefusedAddr {
            _socket: socket,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusedAddr {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RefusedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// Reads (discarding) until the peer closes (true) or `bound` passes (false).
pub async fn closes_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The status code of the first response in raw bytes (`HTTP/1.1 200 OK` → 200).
pub fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// What a `slow_write` achieved.
#[derive(Debug, Clone)]
pub struct SlowWrite {
    /// Bytes written before the peer closed (or all of them).
    pub written: usize,
    /// Everything the peer sent back.
    pub response: Vec<u8>,
    /// True if the peer closed (EOF or write error) before every byte was written.
    pub closed_early: bool,
}

/// Dribbles `bytes` to `addr`, `chunk` bytes every `interval`, while reading whatever the peer
/// answers; stops early when the peer closes. After the last byte, keeps reading until the
/// peer closes or `linger` passes. For slowloris tests.
pub async fn slow_write(
    addr: SocketAddr,
    bytes: &[u8],
    chunk: usize,
    interval: Duration,
    linger: Duration,
) -> SlowWrite {
    assert!(chunk > 0, "slow_write: chunk must be at least 1 byte");
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("slow_write: cannot connect to {addr}: {e}"));
    let (mut reader, mut writer) = stream.into_split();
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<()>();
    let received = Arc::new(Mutex::new(Vec::new()));
    let reading = tokio::spawn({
        let received = received.clone();
        async move {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                }
            }
            let _ = closed_tx.send(());
        }
    });

    let mut written = 0;
    let mut closed_early = false;
    for piece in bytes.chunks(chunk) {
        if written > 0 {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut closed_rx => {
                    closed_early = true;
                    break;
                }
            }
        }
        if writer.write_all(piece).await.is_err() {
            closed_early = true;
            break;
        }
        written += piece.len();
    }
    if !closed_early {
        let _ = tokio::time::timeout(linger, &mut closed_rx).await;
    }
    drop(writer);
    reading.abort();
    let response = std::mem::take(&mut *received.lock().unwrap_or_else(|e| e.into_inner()));
    SlowWrite {
        written,
        response,
        closed_early,
    }
}
