//! Active health checks: GET a path on each endpoint; thresholds move endpoints in and out of rotation.
//!
//! [`HealthCheck`] is the parsed config, [`Thresholds`] the pure state machine that turns
//! pass/fail results into transitions, and [`spawn`] the per-endpoint loop that probes and
//! asks the upstream to rebuild its balancer on every transition.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Upstream};
use crate::body::Body;
use crate::config::schema::{HealthCheckConfig, StatusRange};

/// At most this much of a check's response body is read (so the connection can be reused).
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Why a health-check config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthCheckError {
    #[error("health_check.path {0:?}: must be an absolute path like /healthz")]
    Path(String),
    #[error("health_check.host {0:?}: not a valid header value")]
    Host(String),
    #[error(
        "health_check.expected_statuses {0:?}: expected a code 100-599 or a range like \"200-399\""
    )]
    Status(String),
}

/// A health-check config, parsed once.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: PathAndQuery,
    pub host: Option<HeaderValue>,
    pub interval: Duration,
    pub timeout: Duration,
    pub expected: Vec<RangeInclusive<u16>>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    pub fn from_config(config: &HealthCheckConfig) -> Result<Self, HealthCheckError> {
        let path = Some(config.path.as_str())
            .filter(|p| p.starts_with('/'))
            .and_then(|p| PathAndQuery::try_from(p).ok())
            .ok_or_else(|| HealthCheckError::Path(config.path.clone()))?;
        let host = match &config.host {
            Some(h) => Some(
                HeaderValue::try_from(h.as_str()).map_err(|_| HealthCheckError::Host(h.clone()))?,
            ),
            None => None,
        };
        Ok(Self {
            path,
            host,
            // tokio's interval panics on zero.
            interval: config.interval.max(Duration::from_millis(1)),
            timeout: config.timeout,
            expected: parse_status_ranges(&config.expected_statuses)?,
            healthy_threshold: config.healthy_threshold.max(1),
            unhealthy_threshold: config.unhealthy_threshold.max(1),
        })
    }

    /// Whether a response status passes the check.
    pub fn passes(&self, status: StatusCode) -> bool {
        self.expected.iter().any(|r| r.contains(&status.as_u16()))
    }
}

/// Parses `expected_statuses`: codes and inclusive ranges written `"200-399"`.
pub fn parse_status_ranges(
    statuses: &[StatusRange],
) -> Result<Vec<RangeInclusive<u16>>, HealthCheckError> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    statuses
        .iter()
        .map(|s| match s {
            StatusRange::Code(c) if (100..=599).contains(c) => Ok(*c..=*c),
            StatusRange::Code(c) => Err(HealthCheckError::Status(c.to_string())),
            StatusRange::Range(r) => {
                let (lo, hi) = match r.split_once('-') {
                    Some((lo, hi)) => (code(lo), code(hi)),
                    None => (code(r), code(r)),
                };
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
                    _ => Err(HealthCheckError::Status(r.clone())),
                }
            }
        })
        .collect()
}

/// Whether an endpoint is in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// A change of an endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// Consecutive-result thresholds: `unhealthy` failures in a row take a healthy endpoint out,
/// `healthy` passes in a row bring an unhealthy one back.
#[derive(Debug, Clone)]
pub struct Thresholds {
    state: Health,
    streak: u32,
    healthy: u32,
    unhealthy: u32,
}

impl Thresholds {
    pub fn new(initial: Health, healthy: u32, unhealthy: u32) -> Self {
        Self {
            state: initial,
            streak: 0,
            healthy: healthy.max(1),
            unhealthy: unhealthy.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn record(&mut self, pass: bool) -> Option<Transition> {
        let (towards, needed) = match (self.state, pass) {
            (Health::Healthy, true) | (Health::Unhealthy, false) => {
                self.streak = 0;
                return None;
            }
            (Health::Healthy, false) => (Health::Unhealthy, self.unhealthy),
            (Health::Unhealthy, true) => (Health::Healthy, self.healthy),
        };
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        let from = self.state;
        self.state = towards;
        self.streak = 0;
        Some(Transition { from, to: towards })
    }
}

/// The result of one probe.
#[derive(Debug)]
enum Outcome {
    Status(StatusCode, bool),
    Timeout(Duration),
    Error(String),
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!(self, Outcome::Status(_, true))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(s, _) => write!(f, "status {}", s.as_u16()),
            Outcome::Timeout(t) => write!(f, "timeout after {t:?}"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Starts the check loop of one endpoint. It stops when `stop` is cancelled, the upstream is
/// dropped, or the endpoint is no longer one of the upstream's (DNS removed it).
pub(super) fn spawn(
    upstream: Weak<Upstream>,
    endpoint: Arc<Endpoint>,
    check: Arc<HealthCheck>,
    stop: CancellationToken,
) {
    tokio::spawn(run(upstream, endpoint, check, stop));
}

async fn run(
    upstream: Weak<Upstream>,
    endpoint: Arc<Endpoint>,
    check: Arc<HealthCheck>,
    stop: CancellationToken,
) {
    let initial = if endpoint.is_healthy() {
        Health::Healthy
    } else {
        Health::Unhealthy
    };
    let mut thresholds =
        Thresholds::new(initial, check.healthy_threshold, check.unhealthy_threshold);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        if !upstream.has_endpoint(&endpoint) {
            return;
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = probe(&upstream, &endpoint, &check) => outcome,
        };
        tracing::trace!(upstream = %upstream.name, endpoint = %endpoint.addr, result = %outcome, "health check");
        if let Some(t) = thresholds.record(outcome.passed()) {
            endpoint.set_healthy(t.to == Health::Healthy);
            upstream.rebuild_balancer();
            match t.to {
                Health::Healthy => tracing::info!(
                    upstream = %upstream.name, endpoint = %endpoint.addr,
                    from = %t.from, to = %t.to, cause = %outcome,
                    "endpoint back in rotation"
                ),
                Health::Unhealthy => tracing::warn!(
                    upstream = %upstream.name, endpoint = %endpoint.addr,
                    from = %t.from, to = %t.to, cause = %outcome,
                    "endpoint out of rotation"
                ),
            }
        }
    }
}

/// One GET of the check path, within the check timeout.
async fn probe(upstream: &Upstream, endpoint: &Arc<Endpoint>, check: &HealthCheck) -> Outcome {
    let uri = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(endpoint.authority.clone())
        .path_and_query(check.path.clone())
        .build();
    let host = match &check.host {
        Some(h) => Ok(h.clone()),
        None => HeaderValue::try_from(endpoint.authority.as_str()),
    };
    let request = match (uri, host) {
        (Ok(uri), Ok(host)) => http::Request::get(uri)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "portcullis-health-check")
            .body(Body::Empty),
        (Err(e), _) => return Outcome::Error(e.to_string()),
        (_, Err(e)) => return Outcome::Error(e.to_string()),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + check.timeout;
    let (response, conn) =
        match tokio::time::timeout_at(deadline, upstream.client.send(endpoint, request)).await {
            Err(_) => return Outcome::Timeout(check.timeout),
            Ok(Err(e)) => return Outcome::Error(e.to_string()),
            Ok(Ok(r)) => r,
        };
    let status = response.status();
    // Read a bounded amount of the body so the connection can be reused (it goes back to the
    // pool only when the body was read to its end); the verdict is the status either way.
    let drain = http_body_util::Limited::new(response.into_body(), MAX_DRAIN_BYTES).collect();
    if !matches!(tokio::time::timeout_at(deadline, drain).await, Ok(Ok(_))) {
        if let Some(conn) = conn {
            conn.discard();
        }
    }
    Outcome::Status(status, check.passes(status))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::config::schema::UpstreamConfig;

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Thresholds::new(Health::Healthy, 2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a pass resets the failure streak");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(
            t.record(false),
            Some(Transition {
                from: Health::Healthy,
                to: Health::Unhealthy
            })
        );
        assert_eq!(t.state(), Health::Unhealthy);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "a failure resets the pass streak");
        assert_eq!(t.record(true), None);
        assert_eq!(
            t.record(true),
            Some(Transition {
                from: Health::Unhealthy,
                to: Health::Healthy
            })
        );
        assert_eq!(t.record(true), None);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = Thresholds::new(Health::Healthy, 0, 0);
        assert!(t.record(false).is_some());
        assert!(t.record(true).is_some());
    }

    #[test]
    fn status_ranges_parse() {
        let parsed = parse_status_ranges(&[
            StatusRange::Code(204),
            StatusRange::Range("300-399".into()),
            StatusRange::Range(" 418 ".into()),
        ])
        .unwrap();
        assert_eq!(parsed, vec![204..=204, 300..=399, 418..=418]);
        for bad in ["399-300", "abc", "200-", "99-200", "200-600"] {
            assert!(
                parse_status_ranges(&[StatusRange::Range(bad.into())]).is_err(),
                "{bad}"
            );
        }
        assert!(parse_status_ranges(&[StatusRange::Code(42)]).is_err());
    }

    #[test]
    fn config_is_validated() {
        let mut c: HealthCheckConfig = serde_yaml_ng::from_str("path: /healthz").unwrap();
        let check = HealthCheck::from_config(&c).unwrap();
        assert!(check.passes(StatusCode::NO_CONTENT));
        assert!(!check.passes(StatusCode::MOVED_PERMANENTLY));
        c.path = "healthz".into();
        assert!(matches!(
            HealthCheck::from_config(&c),
            Err(HealthCheckError::Path(_))
        ));
    }

    /// An origin on 127.0.0.1:0 whose `/healthz` answers 200 while `up` is set, else 500.
    async fn origin(up: Arc<AtomicBool>, stop: CancellationToken) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let up = up.clone();
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let status = if req.uri().path() == "/healthz" && up.load(Ordering::SeqCst)
                        {
                            StatusCode::OK
                        } else {
                            StatusCode::INTERNAL_SERVER_ERROR
                        };
                        async move {
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let polled = tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(polled.is_ok(), "timed out waiting for {what}");
    }

    #[tokio::test]
    async fn endpoint_leaves_and_rejoins_rotation() {
        let stop = CancellationToken::new();
        let flaky_up = Arc::new(AtomicBool::new(true));
        let flaky = origin(flaky_up.clone(), stop.clone()).await;
        let steady = origin(Arc::new(AtomicBool::new(true)), stop.clone()).await;
        let config: UpstreamConfig = serde_yaml_ng::from_str(&format!(
            "name: app
endpoints: [{{address: \"{flaky}\"}}, {{address: \"{steady}\"}}]
health_check: {{path: /healthz, interval: 20ms, timeout: 500ms,
               healthy_threshold: 2, unhealthy_threshold: 2}}"
        ))
        .unwrap();
        let upstream = Upstream::new(&config);
        upstream.spawn_tasks(stop.clone());
        let in_rotation = |u: &Upstream, addr: SocketAddr| {
            u.balancer.load().endpoints().iter().any(|e| e.addr == addr)
        };
        let flaky_ep = upstream
            .endpoints()
            .into_iter()
            .find(|e| e.addr == flaky)
            .unwrap();
        assert!(in_rotation(&upstream, flaky) && in_rotation(&upstream, steady));

        flaky_up.store(false, Ordering::SeqCst);
        wait_for("flaky to leave", || !in_rotation(&upstream, flaky)).await;
        assert!(!flaky_ep.is_healthy());
        assert!(in_rotation(&upstream, steady));
        for _ in 0..20 {
            assert_eq!(upstream.pick(None).unwrap().endpoint.addr, steady);
        }

        flaky_up.store(true, Ordering::SeqCst);
        wait_for("flaky to rejoin", || in_rotation(&upstream, flaky)).await;
        assert!(flaky_ep.is_healthy());
        let same = upstream
            .endpoints()
            .into_iter()
            .find(|e| e.addr == flaky)
            .unwrap();
        assert!(Arc::ptr_eq(&same, &flaky_ep), "identity kept");
        stop.cancel();
    }
}
