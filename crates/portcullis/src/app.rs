//! The application: compiles the config, binds listeners and the admin listener, starts
//! background tasks, and shuts everything down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::policy::ratelimit::Registry;
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use crate::{admin, listener};

/// Grace period after a forced close for tasks to notice it.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// State shared by every connection: the current runtime snapshot and lifecycle handles.
#[derive(Debug)]
pub struct Shared {
    /// The compiled config; swapped whole on reload, loaded once per request.
    pub runtime: ArcSwap<Runtime>,
    /// Data-plane tasks (accept loops, connections, tunnels), awaited on shutdown. The admin
    /// listener is not among them: it answers (`/readyz` 503) until the drain is over.
    pub tasks: TaskTracker,
    /// Cancelled when the drain timeout has passed: everything still open is closed.
    pub force_close: CancellationToken,
    /// Listeners bound and config compiled (`/readyz`).
    pub ready: AtomicBool,
    /// Rate-limit counters, kept across reloads for unchanged policies.
    pub rate_limits: Registry,
    /// Metrics, access log and tracer: one set per process.
    pub telemetry: Telemetry,
}

/// A running gateway (in this process).
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    drain_timeout: Duration,
    /// Stops accepting and starts draining.
    stop: CancellationToken,
    /// Stops the admin listener and background tasks once drained.
    stop_background: CancellationToken,
}

impl Gateway {
    /// Compiles `config`, binds every listener and the admin listener, and starts serving on
    /// the current tokio runtime. Port 0 in an address binds a free port (see `listener_addr`).
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let rate_limits = Registry::new();
        let telemetry = Telemetry::from_config(&config.telemetry).context("starting telemetry")?;
        let runtime = Runtime::compile(&config, &rate_limits).context("compiling config")?;
        if let Some(metrics) = &telemetry.metrics {
            metrics.bind(&runtime);
        }
        for upstream in &runtime.upstreams {
            if let Err(err) = upstream.resolve().await {
                tracing::warn!(upstream = %upstream.name, error = %err, "resolving endpoints failed; will retry");
            }
        }

        // Bind everything before serving anything, so a bad address fails the start whole.
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let socket = listener::bind(&l.address)
                .with_context(|| format!("binding listener {:?} on {}", l.name, l.address))?;
            bound.push(socket);
        }
        let admin_access = if config.admin.enabled {
            admin::access::Access::from_config(&config.admin, &|name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)?
        } else {
            admin::access::Access::default()
        };
        let admin_socket =
            if config.admin.enabled {
                Some(listener::bind(&config.admin.address).with_context(|| {
                    format!("binding admin listener on {}", config.admin.address)
                })?)
            } else {
                None
            };

        let stop = CancellationToken::new();
        let stop_background = CancellationToken::new();
        for upstream in &runtime.upstreams {
            upstream.spawn_tasks(stop_background.child_token());
        }
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            tasks: TaskTracker::new(),
            force_close: CancellationToken::new(),
            ready: AtomicBool::new(false),
            rate_limits,
            telemetry,
        });

        let mut listeners = Vec::with_capacity(bound.len());
        for (index, (socket, l)) in bound.into_iter().zip(&config.listeners).enumerate() {
            let addr = socket.local_addr()?;
            tracing::info!(listener = %l.name, %addr, protocol = ?l.protocol, "listening");
            listeners.push((l.name.clone(), addr));
            listener::spawn_accept_loop(socket, index, l, shared.clone(), stop.clone());
        }
        let admin_addr = match admin_socket {
            Some(socket) => {
                let addr = socket.local_addr()?;
                tracing::info!(%addr, token = admin_access.has_token(), "admin listening");
                admin::spawn(
                    socket,
                    shared.clone(),
                    admin_access,
                    stop_background.clone(),
                );
                Some(addr)
            }
            None => None,
        };
        shared.ready.store(true, Ordering::Release);

        Ok(Gateway {
            shared,
            listeners,
            admin_addr,
            drain_timeout: config.server.drain_timeout,
            stop,
            stop_background,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// The bound address of the admin listener, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared state (runtime snapshot, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish up to the drain timeout, then closes
    /// whatever is left.
    pub async fn shutdown(self) {
        tracing::info!(drain_timeout = ?self.drain_timeout, "draining");
        self.shared.ready.store(false, Ordering::Release);
        self.stop.cancel();
        self.shared.tasks.close();
        let drained = tokio::time::timeout(self.drain_timeout, self.shared.tasks.wait()).await;
        if drained.is_err() {
            tracing::warn!("drain timeout passed; closing remaining connections");
            self.shared.force_close.cancel();
            let _ = tokio::time::timeout(FORCE_CLOSE_GRACE, self.shared.tasks.wait()).await;
        }
        if let Some(tracer) = &self.shared.telemetry.tracer {
            tracer.shutdown().await; // the spans of the drained requests
        }
        self.stop_background.cancel();
        self.shared.telemetry.flush().await;
        tracing::info!("stopped");
    }
}

/// Starts the gateway and serves until SIGTERM or SIGINT, then drains and returns.
/// Used by `portcullis run`; the caller builds the tokio runtime (see `runtime_builder`).
/// An error says whether the gateway did not start or stopped.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    // Signal handlers first: a signal that arrives while starting is not fatal either.
    let signals = Signals::new().context("cannot start: installing signal handlers")?;
    let gateway = Gateway::start(config).await.context("cannot start")?;
    signals.wait().await;
    gateway.shutdown().await;
    Ok(())
}

/// The signals `run` reacts to: SIGTERM and SIGINT drain and stop; SIGHUP (which would
/// otherwise end the process at once, dropping requests in flight) is logged and ignored
/// until config reload exists.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM or SIGINT.
    async fn wait(mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => {
                    tracing::warn!("reload is not supported yet; ignoring SIGHUP");
                }
            }
        }
        tracing::info!("shutdown signal received");
    }
}

/// The tokio runtime for `worker_threads` workers: one worker gets the current-thread
/// scheduler (no work-stealing bookkeeping; the bench's one-core setup), more get the
/// multi-thread scheduler, 0 means one worker per core.
pub fn runtime_builder(worker_threads: usize) -> tokio::runtime::Builder {
    let mut b = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            b.worker_threads(worker_threads);
        }
        b
    };
    b.enable_all();
    b
}
