//! Semantic checks on a parsed config; collects every problem, each with its path.

use super::{Config, ConfigError};

/// Returns every problem found; empty means valid.
pub fn validate(_config: &Config) -> Vec<ConfigError> {
    Vec::new()
}
