//! Configuration: raw text → environment substitution → typed `Config` → validated.
//!
//! `schema` is the file format, `env` the `${VAR}` substitution, `validate` the semantic
//! checks that collect every problem with its path. `portcullis check` runs exactly `load_file`.

pub mod env;
pub mod schema;
pub mod validate;
mod words;

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
///
/// Problems are collected, not stopped at: every unset variable, then (if the text is valid
/// YAML) every section and list element that does not deserialize, and only when all of it
/// parsed, every semantic problem found by `validate`.
pub fn from_str_with(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let text = env::substitute(text, lookup)?;
    let config = parse(&text)?;
    let errors = validate::validate(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Parses YAML text (already substituted) into a `Config` without semantic checks.
///
/// A YAML syntax error is one error with its line and column. Otherwise each top-level
/// section, and each element of `listeners`, `upstreams` and `routes`, is deserialized on its
/// own so that every bad element is reported with its path (`routes[2].action.proxy`).
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let path = match e.location() {
            Some(at) => format!("line {}, column {}", at.line(), at.column()),
            None => String::new(),
        };
        ConfigErrors(vec![ConfigError::new(path, yaml_message(&e))])
    })?;
    let mapping = match value {
        serde_yaml_ng::Value::Null => serde_yaml_ng::Mapping::new(),
        serde_yaml_ng::Value::Mapping(m) => m,
        other => {
            return Err(ConfigErrors(vec![ConfigError::new(
                "",
                format!(
                    "the config must be a mapping of sections ({}), found {}",
                    SECTIONS.join(", "),
                    kind(&other)
                ),
            )]))
        }
    };

    let mut config = Config::default();
    let mut errors = Vec::new();
    for (key, value) in mapping {
        let Some(key) = key.as_str() else {
            errors.push(ConfigError::new(
                "",
                format!("section names must be strings, found {}", kind(&key)),
            ));
            continue;
        };
        match key {
            "server" => {
                if let Some(v) = section(key, value, &mut errors) {
                    config.server = v;
                }
            }
            "admin" => {
                if let Some(v) = section(key, value, &mut errors) {
                    config.admin = v;
                }
            }
            "listeners" => config.listeners = list(key, value, &mut errors),
            "upstreams" => config.upstreams = list(key, value, &mut errors),
            "routes" => config.routes = list(key, value, &mut errors),
            "rate_limits" => config.rate_limits = list(key, value, &mut errors),
            "defaults" => {
                if let Some(v) = section(key, value, &mut errors) {
                    config.defaults = v;
                }
            }
            "telemetry" => {
                if let Some(v) = section(key, value, &mut errors) {
                    config.telemetry = v;
                }
            }
            unknown => errors.push(ConfigError::new(
                unknown,
                format!(
                    "unknown field `{unknown}`, expected one of {}",
                    SECTIONS
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Top-level keys of the config file, in documentation order.
const SECTIONS: [&str; 8] = [
    "server",
    "admin",
    "listeners",
    "upstreams",
    "routes",
    "rate_limits",
    "defaults",
    "telemetry",
];

/// Deserializes one value, recording a failure under `prefix` plus the path inside the value.
fn section<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_yaml_ng::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // serde_yaml_ng reads enums only in YAML tag form (`!proxy {...}`); `singleton_map_recursive`
    // makes every enum, at any depth, also read from the usual one-key mapping (`proxy: {...}`),
    // which is also what the JSON Schema describes. The tracker records the path of an error.
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    match serde_yaml_ng::with::singleton_map_recursive::deserialize::<T, _>(de) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = track.path().to_string();
            let path = if inner == "." {
                prefix.to_string()
            } else if inner.starts_with('[') {
                format!("{prefix}{inner}")
            } else {
                format!("{prefix}.{inner}")
            };
            errors.push(ConfigError::new(path, yaml_message(&e)));
            None
        }
    }
}

/// Deserializes a list section element by element so each bad element is its own error.
/// `null` (a key with nothing after it) is an empty list.
fn list<T: serde::de::DeserializeOwned>(
    key: &str,
    value: serde_yaml_ng::Value,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    match value {
        serde_yaml_ng::Value::Null => Vec::new(),
        serde_yaml_ng::Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| section(&format!("{key}[{i}]"), item, errors))
            .collect(),
        other => {
            errors.push(ConfigError::new(
                key,
                format!("expected a list, found {}", kind(&other)),
            ));
            Vec::new()
        }
    }
}

/// A serde_yaml_ng error message on one line, without its location (that goes in the path),
/// in the config's words (`words::user_words`).
fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let message = e.to_string();
    let message = match e.location() {
        Some(at) => message.replacen(
            &format!(" at line {} column {}", at.line(), at.column()),
            "",
            1,
        ),
        None => message,
    };
    words::user_words(&message.replace('\n', " "))
}

/// The YAML kind of a value, for messages.
fn kind(value: &serde_yaml_ng::Value) -> &'static str {
    match value {
        serde_yaml_ng::Value::Null => "nothing (null)",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "a string",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match from_str_with(yaml, &|name| (name == "PORT").then(|| "8080".to_string())) {
            Ok(_) => panic!("expected errors for:\n{yaml}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn parses_a_valid_config_with_substitution() {
        let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:${PORT}\n";
        let config = from_str_with(yaml, &|name| (name == "PORT").then(|| "8080".to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners[0].address, "127.0.0.1:8080");
        assert_eq!(config.admin.address, "127.0.0.1:9901");
    }

    #[test]
    fn unset_variables_stop_before_parsing() {
        assert_eq!(
            errors("listeners: [\n${A}\n${B}"),
            vec![
                "line 2: environment variable \"A\" is not set and has no default (write ${A:-default} to give one)",
                "line 3: environment variable \"B\" is not set and has no default (write ${B:-default} to give one)",
            ]
        );
    }

    #[test]
    fn yaml_syntax_error_is_one_error_with_location() {
        let errs = errors("listeners:\n  - name: a\n   address: [\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("line "), "{errs:?}");
        assert!(
            errs[0].starts_with("line 3, column 4: did not find expected '-' indicator, "),
            "{errs:?}"
        );
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        assert_eq!(
            errors("- a\n- b\n"),
            vec!["the config must be a mapping of sections (server, admin, listeners, upstreams, routes, rate_limits, defaults, telemetry), found a list"]
        );
    }

    #[test]
    fn every_bad_element_is_reported_with_its_path() {
        let yaml = r#"
servr: {}
server: { drain_timeout: soon }
listeners:
  - { name: a, address: "127.0.0.1:8080", protocol: http3 }
  - { name: b, address: "127.0.0.1:8081" }
upstreams: { name: x }
routes:
  - { name: ok, action: { respond: {} } }
  - { name: r1, action: { proxy: { upstrem: api } } }
  - { name: r2, action: { forward: {} } }
  - { action: { respond: {} } }
  - { name: r4, match: { path: { prefix: /a } }, action: { respond: { status: "x" } }, colour: red }
"#;
        let errs = errors(yaml);
        let expected_prefixes = [
            "servr: unknown field `servr`, expected one of `server`, `admin`, `listeners`, `upstreams`, `routes`",
            "server.drain_timeout: ",
            "listeners[0].protocol: unknown variant `http3`, expected one of `auto`, `http1`, `http2`",
            "upstreams: expected a list, found a mapping",
            "routes[1].action.proxy.upstrem: unknown field `upstrem`, expected `upstream`",
            "routes[2].action.forward: unknown variant `forward`, expected one of `proxy`, `respond`, `redirect`",
            "routes[3]: missing field `name`",
            "routes[4].",
        ];
        assert_eq!(errs.len(), expected_prefixes.len(), "{errs:#?}");
        for (err, prefix) in errs.iter().zip(expected_prefixes) {
            assert!(
                err.starts_with(prefix),
                "{err:?} should start with {prefix:?}"
            );
        }
    }

    #[test]
    fn unknown_nested_field_lists_expected_fields() {
        let yaml =
            "listeners:\n  - { name: a, address: \"127.0.0.1:1\", limits: { max_conns: 1 } }\n";
        let errs = errors(yaml);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "listeners[0].limits.max_conns: unknown field `max_conns`, expected one of `max_connections`"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn empty_document_is_missing_listeners() {
        assert_eq!(
            errors(""),
            vec!["listeners: at least one listener is required"]
        );
        assert_eq!(
            errors("listeners:\n"),
            vec!["listeners: at least one listener is required"]
        );
    }

    #[test]
    fn validation_runs_only_when_parsing_succeeded() {
        // The unknown upstream would be a validation error; the parse error hides it.
        let yaml = "listeners: [{ name: a, address: \"127.0.0.1:1\", bogus: 1 }]\nroutes: [{ name: r, action: { proxy: { upstream: nope } } }]\n";
        let errs = errors(yaml);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("listeners[0].bogus: unknown field `bogus`"));
    }
}
