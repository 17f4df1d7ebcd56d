//! OpenTelemetry traces (being built: issue 5).

use super::Record;
use crate::config::schema::TracingConfig;
use crate::runtime::Runtime;

#[derive(Debug)]
pub struct Tracer {}

/// The trace context of one request (and its span, when sampled).
#[derive(Debug)]
pub struct RequestSpan {}

impl RequestSpan {
    /// The request's W3C trace id (for the access log).
    pub fn trace_id(&self) -> Option<[u8; 16]> {
        None
    }
}

impl Tracer {
    pub fn from_config(_config: &TracingConfig) -> anyhow::Result<Option<Tracer>> {
        Ok(None)
    }

    /// Starts the request's span from the incoming headers (W3C trace context).
    pub fn start(&self, _parts: &http::request::Parts) -> Option<RequestSpan> {
        None
    }

    pub fn finish(&self, _runtime: &Runtime, _record: &mut Record, _end: &super::BodyEnd) {}
}
