//! Header edits (`policy::headers::HeaderEdits`) from any operator-written `remove`/`set`/
//! `add` and any message headers: compiling never panics and never accepts a framing
//! header; applying removes, then sets, then adds.
//!
//! Input: edit lines (`-name`, `=name: value`, `+name: value`), a blank line, then the
//! message's header lines.
#![no_main]

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use portcullis::config::schema::HeaderOps;
use portcullis::policy::headers::HeaderEdits;
use portcullis_fuzz::{header, lines, text};

/// `name: value` split as the config holds it (strings, not yet parsed).
fn pair(line: &str) -> (String, String) {
    match line.split_once(':') {
        Some((n, v)) => (n.to_string(), v.trim_start().to_string()),
        None => (line.to_string(), String::new()),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let mut ops = HeaderOps::default();
    for line in input.by_ref() {
        if line.is_empty() {
            break;
        }
        let Some(line) = text(line) else { continue };
        if let Some(name) = line.strip_prefix('-') {
            ops.remove.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix('=') {
            let (n, v) = pair(rest);
            ops.set.insert(n, v);
        } else if let Some(rest) = line.strip_prefix('+') {
            let (n, v) = pair(rest);
            ops.add.insert(n, v);
        }
    }
    let mut headers = HeaderMap::new();
    for line in input {
        if let Some((name, value)) = header(line) {
            headers.append(name, value);
        }
    }

    let Ok(edits) = HeaderEdits::compile(&ops) else {
        return;
    };
    let named = |n: &String| HeaderName::from_bytes(n.trim().as_bytes()).ok();
    let edited: Vec<HeaderName> = ops
        .remove
        .iter()
        .chain(ops.set.keys())
        .chain(ops.add.keys())
        .filter_map(named)
        .collect();
    assert_eq!(
        edited.len(),
        ops.remove.len() + ops.set.len() + ops.add.len(),
        "an invalid name compiled: {ops:?}"
    );
    assert!(
        !edited
            .iter()
            .any(|n| *n == CONTENT_LENGTH || *n == TRANSFER_ENCODING),
        "a framing header is edited: {ops:?}"
    );

    let before = headers.clone();
    edits.apply(&mut headers);

    for (n, v) in &ops.set {
        let Some(name) = named(n) else { continue };
        let values: Vec<_> = headers.get_all(&name).iter().collect();
        assert_eq!(
            values.first().map(|x| x.as_bytes()),
            Some(v.as_bytes()),
            "set {n}"
        );
        let added = ops
            .add
            .iter()
            .filter(|(a, _)| named(a) == Some(name.clone()))
            .count();
        assert_eq!(values.len(), 1 + added, "set {n} replaces every value");
    }
    for n in &ops.remove {
        let Some(name) = named(n) else { continue };
        let kept = ops
            .set
            .keys()
            .chain(ops.add.keys())
            .any(|k| named(k) == Some(name.clone()));
        if !kept {
            assert!(!headers.contains_key(&name), "remove {n}");
        }
    }
    for (n, v) in &ops.add {
        let Some(name) = named(n) else { continue };
        let last = headers
            .get_all(&name)
            .iter()
            .last()
            .map(|x| x.as_bytes().to_vec());
        assert!(
            headers
                .get_all(&name)
                .iter()
                .any(|x| x.as_bytes() == v.as_bytes()),
            "add {n}: {last:?}"
        );
    }
    // Headers no edit names are untouched.
    for (name, value) in &before {
        if !edited.contains(name) {
            assert!(
                headers.get_all(name).iter().any(|x| x == value),
                "{name} lost"
            );
        }
    }
});
