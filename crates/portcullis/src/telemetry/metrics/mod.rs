//! Prometheus / OpenMetrics metrics (being built: issue 5).

use super::{BodyEnd, Record};
use crate::config::schema::MetricsConfig;
use crate::runtime::Runtime;

#[derive(Debug)]
pub struct Metrics {}

impl Metrics {
    pub fn from_config(_config: &MetricsConfig) -> anyhow::Result<Option<Metrics>> {
        Ok(None)
    }

    pub fn record(&self, _runtime: &Runtime, _record: &Record, _end: &BodyEnd) {}
}
