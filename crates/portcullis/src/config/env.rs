//! `${VAR}` and `${VAR:-default}` substitution in config text, before YAML parsing.
//!
//! Rules (also in `docs/config.md`):
//! - `${VAR}` is replaced by the variable's value; unset is an error naming it and its line.
//! - `${VAR:-default}` uses `default` when `VAR` is unset or empty (as in POSIX shells).
//! - `$$` is a literal `$`; a `$` followed by anything else is kept as written.
//! - Lines whose first non-blank character is `#` are YAML comments and are copied verbatim,
//!   so a commented-out `${VAR}` is not an error.
//! - Values are inserted as written, without YAML quoting: quote the scalar in the file
//!   (`"${TOKEN}"`) when a value may contain YAML syntax.
//!
//! Every problem in the text is reported, not only the first.

use super::{ConfigError, ConfigErrors};

/// Replaces `${VAR}` / `${VAR:-default}`; `$$` is a literal `$`. An unset variable without a
/// default is an error naming it and its line; all such errors are returned together.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            substitute_line(line, index + 1, lookup, &mut out, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Substitutes within one line (`${...}` never spans lines), appending to `out`.
fn substitute_line(
    line: &str,
    line_no: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<ConfigError>,
) {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(ConfigError::new(
                    format!("line {line_no}"),
                    "unterminated \"${\" (expected \"}\" on the same line; write \"$$\" for a literal \"$\")",
                ));
                out.push_str(&rest[dollar..]);
                return;
            };
            let expr = &body[..close];
            rest = &body[close + 1..];
            match expand(expr, lookup) {
                Ok(value) => out.push_str(&value),
                Err(message) => errors.push(ConfigError::new(format!("line {line_no}"), message)),
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
}

/// Expands the inside of `${...}`: `NAME` or `NAME:-default`.
fn expand(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    if !is_valid_name(name) {
        return Err(format!(
            "invalid environment variable name \"{name}\" in \"${{{expr}}}\" (letters, digits and '_', not starting with a digit)"
        ));
    }
    match (lookup(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable \"{name}\" is not set and has no default (write ${{{name}:-default}} to give one)"
        )),
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".to_string()),
            "PORT" => Some("8080".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, ConfigErrors> {
        substitute(text, &env)
    }

    fn messages(text: &str) -> Vec<String> {
        match sub(text) {
            Ok(s) => panic!("expected errors, got {s:?}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn replaces_set_variables() {
        assert_eq!(sub("a: ${HOST}:${PORT}\n").unwrap(), "a: 10.0.0.1:8080\n");
    }

    #[test]
    fn text_without_dollars_is_unchanged() {
        let text = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n";
        assert_eq!(sub(text).unwrap(), text);
    }

    #[test]
    fn default_used_when_unset_or_empty() {
        assert_eq!(sub("${NOPE:-x:1}").unwrap(), "x:1");
        assert_eq!(sub("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(sub("${HOST:-d}").unwrap(), "10.0.0.1");
        assert_eq!(sub("${NOPE:-}").unwrap(), "");
    }

    #[test]
    fn set_but_empty_without_default_is_empty() {
        assert_eq!(sub("[${EMPTY}]").unwrap(), "[]");
    }

    #[test]
    fn double_dollar_is_literal() {
        assert_eq!(sub("a: $${HOST} $$ b$").unwrap(), "a: ${HOST} $ b$");
        assert_eq!(sub("price: $5").unwrap(), "price: $5");
    }

    #[test]
    fn comment_lines_are_not_substituted() {
        let text = "# set ${UNSET} to change\n  # ${ALSO}\na: ${PORT}\n";
        assert_eq!(
            sub(text).unwrap(),
            "# set ${UNSET} to change\n  # ${ALSO}\na: 8080\n"
        );
    }

    #[test]
    fn every_unset_variable_is_reported_with_its_line() {
        let text = "a: ${ONE}\nb: ok\nc: ${TWO} ${PORT} ${THREE}\n";
        assert_eq!(
            messages(text),
            vec![
                "line 1: environment variable \"ONE\" is not set and has no default (write ${ONE:-default} to give one)",
                "line 3: environment variable \"TWO\" is not set and has no default (write ${TWO:-default} to give one)",
                "line 3: environment variable \"THREE\" is not set and has no default (write ${THREE:-default} to give one)",
            ]
        );
    }

    #[test]
    fn error_path_is_the_line() {
        let err = sub("\n\n\n\n\n\n\n\n\n\n\nx: ${MISSING}\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "line 12");
    }

    #[test]
    fn invalid_names_and_unterminated_are_errors() {
        assert_eq!(
            messages("a: ${1X}\nb: ${A-B}\nc: ${OPEN\n"),
            vec![
                "line 1: invalid environment variable name \"1X\" in \"${1X}\" (letters, digits and '_', not starting with a digit)",
                "line 2: invalid environment variable name \"A-B\" in \"${A-B}\" (letters, digits and '_', not starting with a digit)",
                "line 3: unterminated \"${\" (expected \"}\" on the same line; write \"$$\" for a literal \"$\")",
            ]
        );
    }

    #[test]
    fn multibyte_text_is_preserved() {
        assert_eq!(sub("é ${PORT} ü\n").unwrap(), "é 8080 ü\n");
    }
}
