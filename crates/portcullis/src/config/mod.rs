//! Configuration: raw text → environment substitution → typed `Config` → validated.
//!
//! `schema` is the file format, `env` the `${VAR}` substitution, `validate` the semantic
//! checks that collect every problem with its path. `portcullis check` runs exactly `load_file`.

pub mod env;
pub mod schema;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use schema::Config;

/// One problem in a config, with the path of the value it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// e.g. `routes[2].action.proxy.upstream`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates config text, substituting `${VAR}` from the process environment.
pub fn from_str(text: &str) -> Result<Config, ConfigErrors> {
    from_str_with(text, &|name| std::env::var(name).ok())
}

/// Parses and validates config text, substituting `${VAR}` through `lookup`.
pub fn from_str_with(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let text = env::substitute(text, lookup)?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            e.path().to_string(),
            e.inner().to_string(),
        )])
    })?;
    let errors = validate::validate(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    from_str(&text)
}
