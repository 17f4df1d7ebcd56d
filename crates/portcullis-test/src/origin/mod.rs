//! In-process origins: HTTP/1.1 + cleartext HTTP/2 servers on `127.0.0.1:0` that answer per
//! a `Behavior` and record every request they receive.

mod behavior;
mod record;
mod respond;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use behavior::{Behavior, ResponseSpec, Script};
pub use record::RecordedRequest;

use record::RequestLog;

/// State shared by the accept loop, the connections and the `Origin` handle.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) behavior: Behavior,
    pub(crate) log: RequestLog,
    connections: AtomicUsize,
    /// 0 = answer per `behavior`; otherwise answer this status (see `Origin::set_status`).
    status_override: AtomicU16,
}

impl Shared {
    pub(crate) fn status_override(&self) -> Option<u16> {
        match self.status_override.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}

/// A running origin. Stops (closing its listener and every connection) on drop or `shutdown`.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin named `origin-<port>` on `127.0.0.1:0`.
    pub async fn start(behavior: Behavior) -> Origin {
        Self::start_inner(None, behavior).await
    }

    /// Starts an origin whose `x-origin` header and Echo JSON say `name`.
    pub async fn start_named(name: &str, behavior: Behavior) -> Origin {
        Self::start_inner(Some(name.to_owned()), behavior).await
    }

    async fn start_inner(name: Option<String>, behavior: Behavior) -> Origin {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("origin: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("origin: no local address");
        let initial_status = match behavior {
            Behavior::Status(code) => code,
            _ => 0,
        };
        let shared = Arc::new(Shared {
            name: name.unwrap_or_else(|| format!("origin-{}", addr.port())),
            behavior,
            log: RequestLog::default(),
            connections: AtomicUsize::new(0),
            status_override: AtomicU16::new(initial_status),
        });
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Origin {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// The bound address (`127.0.0.1:<port>`); its `Display` is what a YAML endpoint wants.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, slash(path))
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request received so far, in arrival order (bodies as received so far).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.all()
    }

    /// How many requests arrived (counted when the head arrives).
    pub fn hits(&self) -> usize {
        self.shared.log.len()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forgets the recorded requests (`hits` restarts at 0).
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// From now on every HTTP request gets `code` with an empty body, whatever the behavior
    /// (for a `Status` origin this just changes its status). For health-check tests.
    pub fn set_status(&self, code: u16) {
        assert!(
            (100..=999).contains(&code),
            "set_status: {code} is not a status code"
        );
        self.shared.status_override.store(code, Ordering::SeqCst);
    }

    /// Goes back to answering per the behavior (a `Status(code)` origin: back to `code`).
    pub fn clear_status(&self) {
        let initial = match self.shared.behavior {
            Behavior::Status(code) => code,
            _ => 0,
        };
        self.shared.status_override.store(initial, Ordering::SeqCst);
    }

    /// Polls (every 5 ms of tokio time) until `hits() >= n`, panicking after `timeout`.
    pub async fn wait_for_hits(&self, n: usize, timeout: Duration) {
        let waited = tokio::time::timeout(timeout, async {
            while self.hits() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "origin {}: expected {n} requests within {timeout:?}, got {}",
            self.name(),
            self.hits()
        );
    }

    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("behavior", &self.shared.behavior)
            .finish()
    }
}

pub(crate) fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(origin = %shared.name, error = %e, "accept failed");
                    continue;
                }
            },
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve_connection(stream, shared) => {}
            }
        });
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    if matches!(shared.behavior, Behavior::CloseConnection) {
        // Read what arrives promptly (so the close is a FIN, not a reset caused by unread
        // data), then close without a byte of answer.
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        return;
    }
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| respond::handle(shared.clone(), req))
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(origin = %shared.name, error = %e, "origin connection ended with an error");
    }
}
