//! Prometheus / OpenMetrics metrics, served at `GET /metrics` on the admin listener
//! (`docs/metrics.md` lists every metric; `docs/adr/0006-metrics.md` says why it is built
//! this way).
//!
//! Two sources make up a scrape: per-request counters and latency histograms, recorded when
//! a request's response body ends through handles resolved once per route (`requests`), and
//! the state the gateway already keeps (upstreams, breakers, limits, listeners, the process),
//! read when scraped (`state`, `listeners`, `process`). prometheus-client stores and encodes
//! (OpenMetrics text); `format` derives the Prometheus 0.0.4 text from it. Label values come
//! only from config names and closed sets, never from requests.

pub mod format;
pub mod listeners;
pub mod names;
pub mod process;
pub mod requests;
pub mod state;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::{BodyEnd, Record, SinkCounts};
use crate::config::schema::MetricsConfig;
use crate::config::Config;
use crate::runtime::Runtime;
use format::Format;
use listeners::ListenerState;
use requests::{RequestFamilies, RouteTable};

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: RequestFamilies,
    /// Handles for the routes of the runtime last bound (`bind`).
    table: ArcSwapOption<RouteTable>,
    listeners: Mutex<Vec<Arc<ListenerState>>>,
    /// Incremented by config reload, which does not exist yet.
    config_reloads: Counter,
    /// When the metrics were set up (the process start, to a few milliseconds).
    start_time: f64,
}

impl Metrics {
    /// `None` when metrics are turned off: requests then pay nothing for them.
    pub fn from_config(config: &MetricsConfig) -> anyhow::Result<Option<Metrics>> {
        if !config.enabled {
            return Ok(None);
        }
        let mut registry = Registry::default();
        let requests = RequestFamilies::register(&mut registry);
        let config_reloads = Counter::default();
        registry.register(
            names::CONFIG_RELOADS.name,
            names::CONFIG_RELOADS.help,
            config_reloads.clone(),
        );
        Ok(Some(Metrics {
            registry,
            requests,
            table: ArcSwapOption::empty(),
            listeners: Mutex::new(Vec::new()),
            config_reloads,
            start_time: super::wall_clock().as_secs_f64(),
        }))
    }

    /// Resolves the per-request handles of `runtime`'s routes. Call it with every runtime
    /// that is put in service; requests of a runtime not bound take a slower path (a label
    /// lookup) but are still counted.
    pub fn bind(&self, runtime: &Runtime) {
        self.table
            .store(Some(Arc::new(self.requests.table(runtime))));
    }

    /// Counts a config reload (for the reload to come).
    pub fn config_reloaded(&self) {
        self.config_reloads.inc();
    }

    /// Registers a listener whose connections take permits from `permits`.
    pub fn listener(
        &self,
        name: &str,
        permits: Arc<tokio::sync::Semaphore>,
        max_connections: usize,
    ) -> Arc<ListenerState> {
        let state = Arc::new(ListenerState::new(name, permits, max_connections));
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&state));
        state
    }

    /// Counts one finished request.
    pub fn record(&self, runtime: &Runtime, record: &Record, end: &BodyEnd) {
        let table = self.table.load();
        if let Some(entry) = table.as_ref().and_then(|t| t.get(runtime, record.route)) {
            entry.record(record, end);
            return;
        }
        // A runtime not bound (yet): resolve this request's route the slow way.
        let route = record.route.and_then(|id| runtime.router.route(id));
        if record.route.is_none() || route.is_some() {
            self.requests.entry(runtime, route).record(record, end);
        }
    }

    /// The scrape: everything in `format`, read against `runtime`.
    pub fn encode(
        &self,
        runtime: Arc<Runtime>,
        sinks: SinkCounts,
        format: Format,
    ) -> Result<String, std::fmt::Error> {
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(state::RuntimeState {
            sinks,
            config_hash: config_hash(&runtime.config).into(),
            runtime,
            listeners: self
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            start_time: self.start_time,
        }));
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &scrape)?;
        encode_eof(&mut out)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => format::to_prometheus_text(&out),
        })
    }
}

/// A stable hash of the config as the admin API shows it (credentials redacted, so the hash
/// cannot be used to test guesses of them): SipHash-1-3 with fixed keys over its JSON form,
/// as 32 hex digits. The same config gives the same hash on every instance and restart.
pub fn config_hash(config: &Config) -> String {
    let redacted = crate::admin::redact::redacted(config);
    let json = serde_json::to_vec(&redacted).unwrap_or_default();
    let mut h = SipHasher13::new_with_keys(0, 0);
    std::hash::Hasher::write(&mut h, &json);
    format!("{:032x}", h.finish128().as_u128())
}
