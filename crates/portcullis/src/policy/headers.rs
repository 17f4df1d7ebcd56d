//! Header edits (remove, then set, then add) compiled from a route's `request_headers` /
//! `response_headers`.

use anyhow::Context as _;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::schema::HeaderOps;

/// Header edits with names and values parsed once.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    /// Replaces every existing value.
    set: Vec<(HeaderName, HeaderValue)>,
    /// Appended after existing values.
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Parses names and values. Message framing headers (`content-length`,
    /// `transfer-encoding`) cannot be edited: a wrong value would corrupt the stream.
    pub fn compile(ops: &HeaderOps) -> anyhow::Result<Self> {
        let remove = ops
            .remove
            .iter()
            .map(|n| name(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let set = pairs(ops.set.iter(), "set")?;
        for (i, (n, _)) in set.iter().enumerate() {
            anyhow::ensure!(
                !set[..i].iter().any(|(m, _)| m == n),
                "header {n} is set twice (names are case-insensitive)"
            );
        }
        let add = pairs(ops.add.iter(), "add")?;
        Ok(Self { remove, set, add })
    }

    /// Removes, then sets (replacing), then adds (appending).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

fn name(n: &str) -> anyhow::Result<HeaderName> {
    let name = HeaderName::from_bytes(n.trim().as_bytes())
        .with_context(|| format!("invalid header name {n:?}"))?;
    anyhow::ensure!(
        name != CONTENT_LENGTH && name != TRANSFER_ENCODING,
        "header {name} cannot be edited"
    );
    Ok(name)
}

fn pairs<'a>(
    ops: impl Iterator<Item = (&'a String, &'a String)>,
    what: &str,
) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    ops.map(|(n, v)| {
        let n = name(n).with_context(|| format!("in `{what}`"))?;
        let v = HeaderValue::from_str(v)
            .with_context(|| format!("invalid value for header {n} in `{what}`"))?;
        Ok((n, v))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn remove_then_set_then_add() {
        let edits = HeaderEdits::compile(&HeaderOps {
            remove: vec!["X-Secret".into(), "x-a".into()],
            set: map(&[("x-a", "set"), ("X-B", "set")]),
            add: map(&[("x-a", "added"), ("x-c", "added")]),
        })
        .unwrap();
        let mut h = headers(&[
            ("x-secret", "1"),
            ("x-a", "old1"),
            ("x-a", "old2"),
            ("x-b", "old"),
            ("x-c", "old"),
            ("x-keep", "k"),
        ]);
        edits.apply(&mut h);
        assert!(h.get("x-secret").is_none());
        // Removed, set, then appended to: set value first, added value second.
        assert_eq!(values(&h, "x-a"), ["set", "added"]);
        assert_eq!(values(&h, "x-b"), ["set"]);
        assert_eq!(values(&h, "x-c"), ["old", "added"]);
        assert_eq!(values(&h, "x-keep"), ["k"]);
    }

    #[test]
    fn remove_happens_before_add() {
        let edits = HeaderEdits::compile(&HeaderOps {
            remove: vec!["x-a".into()],
            add: map(&[("x-a", "new")]),
            ..Default::default()
        })
        .unwrap();
        let mut h = headers(&[("x-a", "old")]);
        edits.apply(&mut h);
        assert_eq!(values(&h, "x-a"), ["new"]);
    }

    #[test]
    fn invalid_edits_are_errors() {
        let bad_name = HeaderOps {
            set: map(&[("bad name", "v")]),
            ..Default::default()
        };
        let bad_value = HeaderOps {
            add: map(&[("x-a", "line\nbreak")]),
            ..Default::default()
        };
        let framing = HeaderOps {
            remove: vec!["Content-Length".into()],
            ..Default::default()
        };
        let twice = HeaderOps {
            set: map(&[("X-A", "1"), ("x-a", "2")]),
            ..Default::default()
        };
        for ops in [bad_name, bad_value, framing, twice] {
            assert!(HeaderEdits::compile(&ops).is_err(), "{ops:?}");
        }
        assert!(HeaderEdits::compile(&HeaderOps::default())
            .unwrap()
            .is_empty());
    }
}
