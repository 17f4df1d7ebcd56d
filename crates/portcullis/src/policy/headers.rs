//! Header edits (remove, then set, then add) compiled from a route's `request_headers` /
//! `response_headers`.

use http::HeaderMap;

use crate::config::schema::HeaderOps;

#[derive(Debug, Default)]
pub struct HeaderEdits {}

impl HeaderEdits {
    pub fn compile(_ops: &HeaderOps) -> anyhow::Result<Self> {
        Ok(Self {})
    }

    pub fn apply(&self, _headers: &mut HeaderMap) {}
}
