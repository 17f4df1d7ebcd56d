//! The one place where serde's words for Rust types (`expected usize`, `expected struct
//! variant RouteAction::Proxy`, `expected a duration`) become the config's words
//! (`expected a non-negative integer`, `expected a mapping with the settings of proxy`,
//! `expected a duration like 250ms, 5s, 1m or 1h 30m`). Enum choices are read from the JSON
//! Schema, so they follow the types.

use serde_json::Value;

/// `message` (a serde error, on one line) with Rust type names replaced.
pub fn user_words(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, user) in PHRASES {
        out = replace_phrase(&out, rust, user);
    }
    out = replace_named(&out, "expected struct variant ", |name| {
        let variant = name.rsplit("::").next().unwrap_or(name);
        format!(
            "expected a mapping with the settings of `{}`",
            snake(variant)
        )
    });
    out = replace_named(&out, "expected struct ", |_| {
        "expected a mapping".to_string()
    });
    out = replace_named(&out, "expected enum ", |name| match enum_choices(name) {
        Some(choices) => format!("expected one of: {}", choices.join(", ")),
        None => "expected one of the names listed in docs/config.md".to_string(),
    });
    out
}

/// Fixed phrases, each replaced only as a whole phrase (`expected u16`, not `expected u160`).
const PHRASES: [(&str, &str); 24] = [
    ("expected usize", "expected a non-negative integer"),
    ("expected u64", "expected a non-negative integer"),
    ("expected u32", "expected an integer from 0 to 4294967295"),
    ("expected u16", "expected an integer from 0 to 65535"),
    ("expected u8", "expected an integer from 0 to 255"),
    ("expected isize", "expected an integer"),
    ("expected i64", "expected an integer"),
    ("expected i32", "expected an integer"),
    ("expected f64", "expected a number"),
    ("expected f32", "expected a number"),
    ("expected a sequence", "expected a list"),
    ("expected a map", "expected a mapping"),
    ("expected a boolean", "expected true or false"),
    ("expected a string", "expected a string (quote it)"),
    (
        "expected a duration",
        "expected a duration like 250ms, 5s, 1m or 1h 30m",
    ),
    // bytesize's words.
    (
        "expected parsable string",
        "expected a size like 512B, 64KiB or 10MiB",
    ),
    (
        "expected integer overflow",
        "expected a size like 512B, 64KiB or 10MiB",
    ),
    (
        "invalid type: unit variant, expected a mapping with the settings of",
        "invalid type: a name alone, expected a mapping with the settings of",
    ),
    (
        "invalid type: unit variant, expected struct variant",
        "invalid type: a name alone, expected a one-key mapping with its settings (`name: { ... }`)",
    ),
    (
        "invalid value: map, expected map with a single key",
        "invalid value: a mapping with several keys (or none), expected exactly one of the choices (`name: { ... }`)",
    ),
    ("invalid type: sequence", "invalid type: a list"),
    ("invalid type: map", "invalid type: a mapping"),
    ("invalid type: unit value", "invalid type: nothing (null)"),
    ("invalid type: floating point", "invalid type: a decimal number"),
];

/// Replaces `phrase` where it is not followed by more of a word.
fn replace_phrase(text: &str, phrase: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(phrase) {
        let after = &rest[at + phrase.len()..];
        let whole = !after.starts_with(|c: char| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if whole { with } else { phrase });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Replaces `prefix` and the Rust path after it (`Name`, `Enum::Variant`) by `with(path)`.
fn replace_named(text: &str, prefix: &str, with: impl Fn(&str) -> String) -> String {
    let Some(at) = text.find(prefix) else {
        return text.to_string();
    };
    let after = &text[at + prefix.len()..];
    let len = after
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(after.len());
    let name = &after[..len];
    if name.is_empty() {
        return text.to_string();
    }
    format!("{}{}{}", &text[..at], with(name), &after[len..])
}

/// `RoundRobin` → `round_robin` (the schema's `rename_all = "snake_case"`).
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The names a config enum accepts, from the JSON Schema of the config.
fn enum_choices(name: &str) -> Option<Vec<String>> {
    let schema = serde_json::to_value(schemars::schema_for!(super::Config)).ok()?;
    let def = schema.get("$defs")?.get(name)?;
    let mut choices = Vec::new();
    collect_choices(def, &mut choices);
    (!choices.is_empty()).then_some(choices)
}

fn collect_choices(schema: &Value, out: &mut Vec<String>) {
    if let Some(Value::Array(values)) = schema.get("enum") {
        out.extend(values.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    if let Some(Value::String(v)) = schema.get("const") {
        out.push(v.clone());
    }
    if schema.get("type").and_then(Value::as_str) == Some("object") {
        if let Some(Value::Array(required)) = schema.get("required") {
            if let [Value::String(key)] = required.as_slice() {
                out.push(key.clone());
            }
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(variants)) = schema.get(key) {
            for v in variants {
                collect_choices(v, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_words_become_config_words() {
        for (serde, user) in [
            (
                "invalid value: integer `-5`, expected usize",
                "invalid value: integer `-5`, expected a non-negative integer",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "invalid value: integer `70000`, expected an integer from 0 to 65535",
            ),
            (
                "invalid type: string \"u\", expected struct variant RouteAction::Proxy",
                "invalid type: string \"u\", expected a mapping with the settings of `proxy`",
            ),
            (
                "invalid type: integer `5`, expected enum RouteAction",
                "invalid type: integer `5`, expected one of: proxy, respond, redirect",
            ),
            (
                "invalid type: integer `5`, expected enum LbPolicy",
                "invalid type: integer `5`, expected one of: round_robin, least_request, consistent_hash",
            ),
            (
                "invalid type: integer `5`, expected enum ListenerProtocol",
                "invalid type: integer `5`, expected one of: http1, http2, auto",
            ),
            (
                "invalid type: string \"x\", expected struct ListenerConfig",
                "invalid type: string \"x\", expected a mapping",
            ),
            (
                "invalid value: string \"soon\", expected a duration",
                "invalid value: string \"soon\", expected a duration like 250ms, 5s, 1m or 1h 30m",
            ),
            (
                "invalid type: string \"no\", expected a boolean",
                "invalid type: string \"no\", expected true or false",
            ),
            (
                "invalid type: string \"GET\", expected a sequence",
                "invalid type: string \"GET\", expected a list",
            ),
            (
                "invalid value: string \"lots\", expected parsable string",
                "invalid value: string \"lots\", expected a size like 512B, 64KiB or 10MiB",
            ),
            (
                "invalid type: floating point `1.5`, expected u32",
                "invalid type: a decimal number `1.5`, expected an integer from 0 to 4294967295",
            ),
            (
                "unknown field `upstrem`, expected `upstream`",
                "unknown field `upstrem`, expected `upstream`",
            ),
            ("expected u160", "expected u160"),
        ] {
            assert_eq!(user_words(serde), user, "{serde}");
        }
    }

    #[test]
    fn no_rust_type_names_are_left() {
        for serde in [
            "invalid type: unit variant, expected struct variant",
            "invalid value: map, expected map with a single key",
            "invalid type: map, expected enum PathRewrite",
            "invalid type: unit value, expected struct HeaderOps",
        ] {
            let user = user_words(serde);
            for rust in [
                "struct",
                "enum ",
                "variant,",
                "usize",
                "u16",
                "unit value",
                "map,",
            ] {
                assert!(!user.contains(rust), "{serde} -> {user}");
            }
        }
        assert_eq!(
            user_words("invalid type: map, expected enum PathRewrite"),
            "invalid type: a mapping, expected one of: strip_prefix, replace_prefix, regex"
        );
    }
}
