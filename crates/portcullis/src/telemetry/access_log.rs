//! JSON access logs (being built: issue 5).

use super::{BodyEnd, Record};
use crate::config::schema::AccessLogConfig;
use crate::runtime::Runtime;

#[derive(Debug)]
pub struct AccessLog {}

impl AccessLog {
    pub fn from_config(_config: &AccessLogConfig) -> anyhow::Result<Option<AccessLog>> {
        Ok(None)
    }

    pub fn record(&self, _runtime: &Runtime, _record: &Record, _end: &BodyEnd) {}
}
