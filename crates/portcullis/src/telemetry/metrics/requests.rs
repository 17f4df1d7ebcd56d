//! The per-request metrics (count, latency, body bytes, deadline expirations) and the table
//! of handles the hot path uses instead of label lookups: one entry per route of a runtime
//! (by `Route::id`) plus one for unrouted requests, each with a handle slot per (status
//! class, reason) filled on first use through `Family::get_or_create_owned`. After that a
//! request costs an index, a pointer comparison and a few relaxed atomic additions.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::names::{self, Name};
use crate::reason;
use crate::router::{Action, Route};
use crate::runtime::Runtime;
use crate::telemetry::{BodyEnd, Record};

/// A label value: a config name or a constant (cloning is a reference count).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(Arc<str>);

impl Label {
    pub fn new(value: &str) -> Self {
        Self(value.into())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

pub type RouteLabels = [(&'static str, Label); 2];
pub type OutcomeLabels = [(&'static str, Label); 4];

/// Upper bounds of the latency buckets, in seconds: from half a millisecond (an answer from
/// the same host) to 30 s (beyond which "too long" is all there is to say).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type HistogramFamily = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Status classes: `1xx` to `5xx`, and `other` for codes 600 to 999.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Reason slots: none, every `reason::ALL` entry, other.
const REASONS: usize = reason::ALL.len() + 2;

/// The registered families the table hands out handles of.
#[derive(Debug, Clone)]
pub struct RequestFamilies {
    requests: Family<OutcomeLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    deadline_exceeded: Family<RouteLabels, Counter>,
}

impl RequestFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            deadline_exceeded: Family::default(),
        };
        let families: [(Name, &Family<RouteLabels, Counter>); 3] = [
            (names::REQUEST_BODY_BYTES, &f.request_bytes),
            (names::RESPONSE_BODY_BYTES, &f.response_bytes),
            (names::DEADLINE_EXCEEDED, &f.deadline_exceeded),
        ];
        registry.register(
            names::REQUESTS.name,
            names::REQUESTS.help,
            f.requests.clone(),
        );
        registry.register(
            names::REQUEST_DURATION.name,
            names::REQUEST_DURATION.help,
            f.duration.clone(),
        );
        for (n, family) in families {
            registry.register(n.name, n.help, family.clone());
        }
        f
    }

    /// The handle table for `runtime`'s routes.
    pub fn table(&self, runtime: &Runtime) -> RouteTable {
        RouteTable {
            routes: runtime
                .router
                .routes()
                .map(|route| self.entry(runtime, Some(route)))
                .collect(),
            unrouted: self.entry(runtime, None),
        }
    }

    /// The entry of `route` (`None`: requests that matched no route).
    pub fn entry(&self, runtime: &Runtime, route: Option<&Arc<Route>>) -> RouteEntry {
        let upstream = route
            .and_then(|r| match r.action {
                Action::Proxy { upstream } => runtime.upstreams.get(upstream),
                _ => None,
            })
            .map_or("", |u| &u.name);
        let labels: RouteLabels = [
            (names::ROUTE, Label::new(route.map_or("", |r| &r.name))),
            (names::UPSTREAM, Label::new(upstream)),
        ];
        RouteEntry {
            name: route.map(|r| Arc::clone(&r.name)),
            request_bytes: self.request_bytes.get_or_create_owned(&labels),
            response_bytes: self.response_bytes.get_or_create_owned(&labels),
            deadline_exceeded: self.deadline_exceeded.get_or_create_owned(&labels),
            outcomes: (0..STATUS_CLASSES.len() * REASONS)
                .map(|_| OnceLock::new())
                .collect(),
            labels,
            families: self.clone(),
        }
    }
}

/// The handles of one runtime's routes.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<RouteEntry>,
    unrouted: RouteEntry,
}

impl RouteTable {
    /// The entry for a request's route, if this table was built for the runtime the request
    /// used (the route at that index is the one the entry was made for).
    pub fn get(&self, runtime: &Runtime, route: Option<usize>) -> Option<&RouteEntry> {
        let Some(id) = route else {
            return Some(&self.unrouted);
        };
        let entry = self.routes.get(id)?;
        let route = runtime.router.route(id)?;
        entry
            .name
            .as_ref()
            .is_some_and(|name| Arc::ptr_eq(name, &route.name))
            .then_some(entry)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.routes.len()
    }
}

/// One route's handles.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route's own name (identity: a reload compiles new routes); `None` when unrouted.
    name: Option<Arc<str>>,
    labels: RouteLabels,
    request_bytes: Counter,
    response_bytes: Counter,
    deadline_exceeded: Counter,
    /// Indexed by `status class * REASONS + reason slot`.
    outcomes: Box<[OnceLock<Outcome>]>,
    families: RequestFamilies,
}

#[derive(Debug)]
struct Outcome {
    requests: Counter,
    duration: Histogram,
}

impl RouteEntry {
    /// Counts one finished request.
    pub fn record(&self, record: &Record, end: &BodyEnd) {
        let class = status_class(record.status.as_u16());
        let reason = reason_slot(record.reason);
        if let Some(outcome) = self.outcome(class, reason) {
            outcome.requests.inc();
            outcome.duration.observe(end.duration.as_secs_f64());
        }
        let bytes_in = record.bytes_in.get();
        if bytes_in > 0 {
            self.request_bytes.inc_by(bytes_in);
        }
        if end.bytes_out > 0 {
            self.response_bytes.inc_by(end.bytes_out);
        }
        if record.reason == reason::DEADLINE_EXCEEDED {
            self.deadline_exceeded.inc();
        }
    }

    fn outcome(&self, class: usize, reason: usize) -> Option<&Outcome> {
        let slot = self.outcomes.get(class * REASONS + reason)?;
        Some(slot.get_or_init(|| {
            let [route, upstream] = self.labels.clone();
            let labels: OutcomeLabels = [
                route,
                upstream,
                (
                    names::STATUS_CLASS,
                    Label::new(STATUS_CLASSES.get(class).copied().unwrap_or("other")),
                ),
                (names::REASON, Label::new(reason_label(reason))),
            ];
            Outcome {
                requests: self.families.requests.get_or_create_owned(&labels),
                duration: self.families.duration.get_or_create_owned(&labels),
            }
        }))
    }
}

/// Index into `STATUS_CLASSES`.
fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => usize::from(c - 1),
        _ => 5,
    }
}

/// Reason slot: 0 for none (the upstream answered), `1 + position in reason::ALL`, or the
/// last slot for a reason this table does not know.
fn reason_slot(reason: &str) -> usize {
    if reason.is_empty() {
        return 0;
    }
    reason::ALL
        .iter()
        .position(|r| *r == reason)
        .map_or(REASONS - 1, |i| i + 1)
}

fn reason_label(slot: usize) -> &'static str {
    match slot {
        0 => names::REASON_NONE,
        i => reason::ALL
            .get(i - 1)
            .copied()
            .unwrap_or(names::REASON_OTHER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ratelimit::Registry as Limits;

    fn runtime(yaml: &str) -> Runtime {
        let config = crate::config::from_str(yaml).unwrap();
        Runtime::compile(&config, &Limits::new()).unwrap()
    }

    const YAML: &str = "
listeners: [{ name: main, address: \"127.0.0.1:0\" }]
upstreams: [{ name: app, endpoints: [{ address: \"127.0.0.1:1\" }] }]
routes:
  - { name: a, match: { path: { prefix: /a } }, action: { proxy: { upstream: app } } }
  - { name: b, action: { respond: { status: 204 } } }
";

    #[test]
    fn slots_and_labels() {
        assert_eq!(status_class(101), 0);
        assert_eq!(status_class(204), 1);
        assert_eq!(status_class(599), 4);
        assert_eq!(status_class(600), 5);
        assert_eq!(reason_slot(""), 0);
        assert_eq!(reason_label(0), "none");
        for r in reason::ALL {
            assert_eq!(reason_label(reason_slot(r)), *r);
        }
        assert_eq!(reason_slot("made_up"), REASONS - 1);
        assert_eq!(reason_label(REASONS - 1), "other");
    }

    #[test]
    fn the_table_resolves_each_route_once_and_only_for_its_runtime() {
        let mut registry = Registry::default();
        let families = RequestFamilies::register(&mut registry);
        let rt = runtime(YAML);
        let table = families.table(&rt);
        assert_eq!(table.len(), 2);
        let a = table.get(&rt, Some(0)).unwrap();
        assert_eq!(a.labels[0].1, Label::new("a"));
        assert_eq!(a.labels[1].1, Label::new("app"));
        let b = table.get(&rt, Some(1)).unwrap();
        assert_eq!(
            b.labels[1].1,
            Label::new(""),
            "a direct response has no upstream"
        );
        assert!(table.get(&rt, Some(2)).is_none());
        assert_eq!(
            table.get(&rt, None).unwrap().labels[0].1,
            Label::new(""),
            "unrouted"
        );

        // The same handle every time; it is the family's series.
        let first = a.outcome(1, 0).unwrap() as *const Outcome;
        assert_eq!(a.outcome(1, 0).unwrap() as *const Outcome, first);
        a.outcome(1, 0).unwrap().requests.inc();
        let labels: OutcomeLabels = [
            (names::ROUTE, Label::new("a")),
            (names::UPSTREAM, Label::new("app")),
            (names::STATUS_CLASS, Label::new("2xx")),
            (names::REASON, Label::new("none")),
        ];
        assert_eq!(families.requests.get_or_create(&labels).get(), 1);
        assert!(a.outcome(6, 0).is_none(), "no such class");

        // Another runtime from the same config: new routes, so this table does not apply,
        // but a table built for it shares the series (they are keyed by names).
        let rt2 = runtime(YAML);
        assert!(table.get(&rt2, Some(0)).is_none());
        let table2 = families.table(&rt2);
        table2
            .get(&rt2, Some(0))
            .unwrap()
            .outcome(1, 0)
            .unwrap()
            .requests
            .inc();
        assert_eq!(families.requests.get_or_create(&labels).get(), 2);
    }
}
