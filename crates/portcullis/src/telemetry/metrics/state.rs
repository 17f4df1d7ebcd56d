//! The metrics read at scrape time from the running state rather than counted per request:
//! upstreams and their endpoints, circuit breakers, retries, load shedding, rate-limit
//! decisions, the build and config, and the process. The counters behind them already exist
//! for the admin API (`admin/api.rs` reads the same ones); this walks the runtime snapshot
//! the scrape loaded and encodes what it finds through prometheus-client's `Collector`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::listeners::ListenerState;
use super::names::{self as n, Name};
use super::process;
use crate::router::Action;
use crate::runtime::Runtime;
use crate::telemetry::SinkCounts;
use crate::upstream::breaker::{self, CircuitBreaker};
use crate::upstream::outcome::RetryCause;
use crate::upstream::outlier::EjectionCause;
use crate::upstream::shed::ShedCause;
use crate::upstream::{Endpoint, Upstream};

type Fmt = Result<(), std::fmt::Error>;

/// One scrape's view of a runtime snapshot.
#[derive(Debug)]
pub struct RuntimeState {
    pub runtime: Arc<Runtime>,
    /// `portcullis_config_info{hash}` of this runtime's config.
    pub config_hash: Arc<str>,
    /// The listeners started so far.
    pub listeners: Vec<Arc<ListenerState>>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time: f64,
    /// What the access log and the tracer delivered and dropped.
    pub sinks: SinkCounts,
}

impl Collector for RuntimeState {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let rt = &*self.runtime;
        listeners(&mut enc, &self.listeners)?;
        endpoints(&mut enc, rt)?;
        upstreams(&mut enc, rt)?;
        breakers(&mut enc, rt)?;
        rate_limits(&mut enc, rt)?;
        sinks(&mut enc, &self.sinks)?;
        info(
            &mut enc,
            n::BUILD,
            &[(n::VERSION, env!("CARGO_PKG_VERSION"))],
        )?;
        info(&mut enc, n::CONFIG, &[(n::HASH, &*self.config_hash)])?;
        process_metrics(&mut enc, self.start_time)
    }
}

/// Starts family `name` of type `ty`; the help text ends in a full stop, like the families
/// the registry encodes.
fn family<'a>(
    enc: &'a mut DescriptorEncoder,
    name: Name,
    ty: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    let help = format!("{}.", name.help);
    enc.encode_descriptor(name.name, &help, None, ty)
}

fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> Fmt {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauge(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: i64) -> Fmt {
    m.encode_family(labels)?.encode_gauge(&value)
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

fn info(enc: &mut DescriptorEncoder, name: Name, labels: &[(&str, &str)]) -> Fmt {
    family(enc, name, MetricType::Info)?.encode_info(&labels)
}

// ----- listeners -----

fn listeners(enc: &mut DescriptorEncoder, all: &[Arc<ListenerState>]) -> Fmt {
    let mut m = family(enc, n::LISTENER_CONNECTIONS, MetricType::Gauge)?;
    for l in all {
        gauge(&mut m, &[(n::LISTENER, &*l.name)], int(l.connections()))?;
    }
    let mut m = family(enc, n::LISTENER_REQUESTS_IN_FLIGHT, MetricType::Gauge)?;
    for l in all {
        gauge(
            &mut m,
            &[(n::LISTENER, &*l.name)],
            int(l.requests_in_flight()),
        )?;
    }
    let mut m = family(enc, n::LISTENER_CONNECTIONS_LIMITED, MetricType::Counter)?;
    for l in all {
        counter(&mut m, &[(n::LISTENER, &*l.name)], l.limited_total())?;
    }
    let mut m = family(enc, n::LISTENER_CONNECTIONS_REFUSED, MetricType::Counter)?;
    for l in all {
        for (i, reason) in super::listeners::REFUSALS.iter().enumerate() {
            let labels = [(n::LISTENER, &*l.name), (n::REASON, *reason)];
            counter(&mut m, &labels, l.refused_total(i))?;
        }
    }
    Ok(())
}

// ----- endpoints -----

fn endpoints(enc: &mut DescriptorEncoder, rt: &Runtime) -> Fmt {
    type Read = fn(&Endpoint) -> i64;
    let gauges: [(Name, Read); 3] = [
        (n::ENDPOINT_HEALTHY, |e| flag(e.is_healthy())),
        (n::ENDPOINT_EJECTED, |e| flag(e.is_ejected())),
        (n::ENDPOINT_REQUESTS_IN_FLIGHT, |e| int(e.in_flight())),
    ];
    // Every endpoint with its upstream's name and its address as a label value.
    let all: Vec<(&str, String, Arc<Endpoint>)> = rt
        .upstreams
        .iter()
        .flat_map(|u| {
            u.endpoints()
                .into_iter()
                .map(|e| (&*u.name, e.addr.to_string(), e))
        })
        .collect();
    for (name, read) in gauges {
        let mut m = family(enc, name, MetricType::Gauge)?;
        for (upstream, addr, e) in &all {
            gauge(
                &mut m,
                &[(n::UPSTREAM, *upstream), (n::ENDPOINT, addr)],
                read(e),
            )?;
        }
    }
    let mut m = family(enc, n::ENDPOINT_CONNECT_ERRORS, MetricType::Counter)?;
    for (upstream, addr, e) in &all {
        let labels = [(n::UPSTREAM, *upstream), (n::ENDPOINT, addr.as_str())];
        counter(&mut m, &labels, e.connect_errors())?;
    }
    Ok(())
}

// ----- upstreams -----

fn upstreams(enc: &mut DescriptorEncoder, rt: &Runtime) -> Fmt {
    let ups = &rt.upstreams;
    let one = |u: &Upstream| [(n::UPSTREAM, u.name.to_string())];

    let mut m = family(enc, n::UPSTREAM_CONNECTIONS_ACTIVE, MetricType::Gauge)?;
    for u in ups {
        gauge(
            &mut m,
            &one(u),
            i64::from(u.thresholds.connections.current()),
        )?;
    }
    let mut m = family(enc, n::UPSTREAM_CONNECTIONS_IDLE, MetricType::Gauge)?;
    for u in ups {
        let idle: usize = u.endpoints().iter().map(|e| e.h1_idle.len()).sum();
        gauge(&mut m, &one(u), int(idle))?;
    }
    let mut m = family(enc, n::UPSTREAM_OVERFLOWED, MetricType::Counter)?;
    for u in ups {
        let v = u
            .thresholds
            .overflowed
            .load(std::sync::atomic::Ordering::Relaxed);
        counter(&mut m, &one(u), v)?;
    }
    let mut m = family(enc, n::UPSTREAM_EJECTIONS, MetricType::Counter)?;
    for u in ups {
        for cause in EjectionCause::ALL {
            let labels = [(n::UPSTREAM, &*u.name), (n::CAUSE, cause.as_str())];
            counter(&mut m, &labels, u.ejections_total(cause))?;
        }
    }
    let mut m = family(enc, n::UPSTREAM_EJECTIONS_SKIPPED, MetricType::Counter)?;
    for u in ups {
        counter(&mut m, &one(u), u.ejections_skipped())?;
    }
    let mut m = family(enc, n::UPSTREAM_RETRIES, MetricType::Counter)?;
    for u in ups {
        for cause in RetryCause::ALL {
            let labels = [(n::UPSTREAM, &*u.name), (n::CAUSE, cause.as_str())];
            counter(&mut m, &labels, u.retries(cause))?;
        }
    }
    let mut m = family(enc, n::UPSTREAM_RETRIES_REFUSED, MetricType::Counter)?;
    for u in ups {
        let refused = u.retry_budget_stats().map_or(0, |s| s.refused);
        counter(&mut m, &one(u), refused)?;
    }
    shedding(enc, ups)
}

fn shedding(enc: &mut DescriptorEncoder, ups: &[Arc<Upstream>]) -> Fmt {
    let shedders: Vec<_> = ups
        .iter()
        .filter_map(|u| Some((&*u.name, u.shedder.as_ref()?)))
        .collect();
    let mut m = family(enc, n::UPSTREAM_SHED, MetricType::Counter)?;
    for (name, s) in &shedders {
        for cause in ShedCause::ALL {
            let labels = [(n::UPSTREAM, *name), (n::CAUSE, cause.as_str())];
            counter(&mut m, &labels, s.shed_by(cause))?;
        }
    }
    type Read = fn(&crate::upstream::shed::Shedder) -> i64;
    let gauges: [(Name, Read); 3] = [
        (n::UPSTREAM_CONCURRENCY_LIMIT, |s| i64::from(s.limit())),
        (n::UPSTREAM_CONCURRENCY_IN_FLIGHT, |s| {
            i64::from(s.in_flight())
        }),
        (n::UPSTREAM_QUEUED, |s| int(s.queued())),
    ];
    for (name, read) in gauges {
        let mut m = family(enc, name, MetricType::Gauge)?;
        for (upstream, s) in &shedders {
            gauge(&mut m, &[(n::UPSTREAM, *upstream)], read(s))?;
        }
    }
    Ok(())
}

// ----- circuit breakers -----

/// A breaker with its labels: scope, route, upstream, endpoint.
struct Located {
    labels: [(&'static str, String); 4],
    breaker: Arc<CircuitBreaker>,
}

fn all_breakers(rt: &Runtime) -> Vec<Located> {
    let mut out = Vec::new();
    for route in rt.router.routes() {
        let Some(b) = &route.breaker else { continue };
        let upstream = match route.action {
            Action::Proxy { upstream } => rt.upstreams.get(upstream).map(|u| u.name.to_string()),
            _ => None,
        };
        out.push(Located {
            labels: [
                (n::SCOPE, "route".into()),
                (n::ROUTE, route.name.to_string()),
                (n::UPSTREAM, upstream.unwrap_or_default()),
                (n::ENDPOINT, String::new()),
            ],
            breaker: Arc::clone(b),
        });
    }
    for u in &rt.upstreams {
        for e in u.endpoints() {
            let Some(b) = &e.breaker else { continue };
            out.push(Located {
                labels: [
                    (n::SCOPE, "endpoint".into()),
                    (n::ROUTE, String::new()),
                    (n::UPSTREAM, u.name.to_string()),
                    (n::ENDPOINT, e.addr.to_string()),
                ],
                breaker: Arc::clone(b),
            });
        }
    }
    out
}

fn breakers(enc: &mut DescriptorEncoder, rt: &Runtime) -> Fmt {
    let all = all_breakers(rt);
    let mut m = family(enc, n::BREAKER_STATE, MetricType::Gauge)?;
    for b in &all {
        let state = breaker::state_index(b.breaker.state());
        gauge(&mut m, &b.labels, int(state))?;
    }
    let mut m = family(enc, n::BREAKER_FORCED, MetricType::Gauge)?;
    for b in &all {
        let forced = match b.breaker.forced() {
            breaker::Forced::None => 0,
            breaker::Forced::Open => 1,
            breaker::Forced::Closed => 2,
        };
        gauge(&mut m, &b.labels, forced)?;
    }
    let mut m = family(enc, n::BREAKER_TRANSITIONS, MetricType::Counter)?;
    for b in &all {
        for (from, to) in breaker::TRANSITIONS {
            let labels = (
                b.labels.clone(),
                [
                    (n::FROM, breaker::state_name(from)),
                    (n::TO, breaker::state_name(to)),
                ],
            );
            counter(&mut m, &labels, b.breaker.stats.transitions(from, to))?;
        }
    }
    let mut m = family(enc, n::BREAKER_REJECTED, MetricType::Counter)?;
    for b in &all {
        let v = b
            .breaker
            .stats
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed);
        counter(&mut m, &b.labels, v)?;
    }
    Ok(())
}

// ----- rate limits -----

fn rate_limits(enc: &mut DescriptorEncoder, rt: &Runtime) -> Fmt {
    let mut m = family(enc, n::RATE_LIMIT_DECISIONS, MetricType::Counter)?;
    for l in &rt.rate_limits {
        let s = &l.stats;
        for (decision, c) in [
            ("allowed", &s.allowed),
            ("denied", &s.denied),
            ("delayed", &s.delayed),
            ("shadow_denied", &s.shadow_denied),
            ("skipped", &s.skipped),
        ] {
            let labels = [(n::POLICY, &*l.name), (n::DECISION, decision)];
            counter(
                &mut m,
                &labels,
                c.load(std::sync::atomic::Ordering::Relaxed),
            )?;
        }
    }
    Ok(())
}

// ----- the other telemetry sinks -----

fn sinks(enc: &mut DescriptorEncoder, sinks: &SinkCounts) -> Fmt {
    for (name, counts, delivered) in [
        (n::ACCESS_LOG_LINES, sinks.access_log, "written"),
        (n::TRACE_SPANS, sinks.spans, "exported"),
    ] {
        let Some(c) = counts else { continue };
        let mut m = family(enc, name, MetricType::Counter)?;
        for (outcome, value) in [
            (delivered, c.delivered),
            ("dropped", c.dropped),
            ("failed", c.failed),
        ] {
            counter(&mut m, &[(n::OUTCOME, outcome)], value)?;
        }
    }
    Ok(())
}

// ----- process -----

fn process_metrics(enc: &mut DescriptorEncoder, start_time: f64) -> Fmt {
    let p = process::read();
    if let Some(cpu) = p.cpu_seconds {
        family(enc, n::PROCESS_CPU_SECONDS, MetricType::Counter)?
            .encode_counter::<NoLabelSet, f64, f64>(&cpu, None)?;
    }
    let gauges = [
        (n::PROCESS_RESIDENT_MEMORY, p.resident_bytes),
        (n::PROCESS_OPEN_FDS, p.open_fds),
        (n::PROCESS_THREADS, p.threads),
    ];
    for (name, value) in gauges {
        if let Some(v) = value {
            family(enc, name, MetricType::Gauge)?.encode_gauge(&v)?;
        }
    }
    family(enc, n::PROCESS_START_TIME, MetricType::Gauge)?.encode_gauge(&start_time)
}
