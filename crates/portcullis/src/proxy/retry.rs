//! A route's retry policy, compiled: which outcomes and methods are retried, how long to wait
//! between attempts, and which request bodies are kept so they can be sent again. The loop
//! that uses it is `forward::forward`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_limits::{honour_retry_after, Backoff};

use crate::config::schema::{FailureKind, RetryConfig};
use crate::upstream::outcome::Outcome;

/// The compiled `retry` section of a route.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    on: Vec<FailureKind>,
    statuses: Vec<u16>,
    grpc_statuses: Vec<u32>,
    backoff: Backoff,
    max_retry_after: Duration,
    methods: Vec<Method>,
    /// Largest request body kept for replay.
    pub max_body: u64,
}

impl RetryPolicy {
    /// Compiles the config; a method that does not parse is left out (validation reports it).
    pub fn from_config(cfg: &RetryConfig) -> Self {
        Self {
            attempts: cfg.attempts.max(1),
            per_try_timeout: cfg.per_try_timeout,
            on: cfg.on.clone(),
            statuses: cfg.statuses.clone(),
            grpc_statuses: cfg.grpc_statuses.clone(),
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_max),
            max_retry_after: cfg.max_retry_after,
            methods: cfg
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            max_body: cfg.max_body.as_u64(),
        }
    }

    /// Whether requests with this method may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Whether this outcome is one the route retries.
    pub fn retries(&self, outcome: &Outcome) -> bool {
        outcome.matches(&self.on, &self.statuses, &self.grpc_statuses)
    }

    /// The wait before retry number `retry` (0 for the first), with full jitter, honouring
    /// the upstream's `Retry-After` if the response had one; `None` when that asks for longer
    /// than `max_retry_after` (then the response is passed on instead).
    pub fn delay(&self, retry: u32, response: Option<&HeaderMap>) -> Option<Duration> {
        let computed = self.backoff.delay(retry, rand::random());
        let asked = response.and_then(retry_after);
        match asked {
            Some(_) => honour_retry_after(computed, asked, self.max_retry_after),
            None => Some(computed),
        }
    }
}

/// A `Retry-After` given in seconds (RFC 9110 §10.2.3). The HTTP-date form is not used for
/// retries: it depends on the two clocks agreeing, and upstreams asking for a pause of
/// seconds send the delay form.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads a request body whose declared length is at most the policy's `max_body`, so that it
/// can be sent again. The caller bounds the wait (the route's deadline).
pub async fn keep(body: Incoming) -> Result<Bytes, hyper::Error> {
    Ok(body.collect().await?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> RetryPolicy {
        RetryPolicy::from_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn defaults_retry_connect_failures_and_resets_of_idempotent_methods() {
        use crate::upstream::outcome::GatewayError;
        let p = policy("{}");
        assert_eq!(p.attempts, 2);
        assert!(p.retries(&Outcome::Failed(GatewayError::Connect)));
        assert!(p.retries(&Outcome::Failed(GatewayError::Reset)));
        assert!(!p.retries(&Outcome::Failed(GatewayError::Timeout)));
        let unavailable = Outcome::Response {
            status: 503,
            grpc_status: None,
        };
        assert!(!p.retries(&unavailable));
        assert!(p.allows(&Method::GET) && p.allows(&Method::PUT));
        assert!(!p.allows(&Method::POST) && !p.allows(&Method::PATCH));
        let p = policy("{ on: [], statuses: [503], methods: [POST] }");
        assert!(p.retries(&unavailable) && p.allows(&Method::POST));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling_and_honour_retry_after() {
        let p = policy("{ backoff_base: 10ms, backoff_max: 40ms, max_retry_after: 2s }");
        for retry in 0..6 {
            let d = p.delay(retry, None).unwrap();
            let ceiling = Duration::from_millis(10 << retry.min(2));
            assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(p.delay(0, Some(&h)), Some(Duration::from_secs(1)));
        h.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            p.delay(0, Some(&h)),
            None,
            "asks for more than max_retry_after"
        );
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert!(p.delay(0, Some(&h)).unwrap() <= Duration::from_millis(10));
    }
}
