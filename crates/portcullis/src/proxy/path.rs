//! Request path normalisation before routing: dot segments are removed (RFC 3986 §5.2.4),
//! with `%2e`/`%2E` read as `.` inside a segment made only of dots, so `/api/../admin` is
//! routed — and forwarded — as `/admin`, never as a request under `/api`.
//!
//! Nothing else is changed: percent-encoding (incl. `%2F`), repeated slashes and the query are
//! passed as received, so the upstream sees the same path the router matched.

use http::uri::{PathAndQuery, Uri};

/// Normalises the path of `uri` in place; a no-op (no allocation) when it has no dot segment.
pub fn normalize(uri: &mut Uri) {
    let Some(pq) = uri.path_and_query() else {
        return;
    };
    let path = pq.path();
    if !has_dot_segment(path) {
        return;
    }
    let normalized = remove_dot_segments(path);
    let text = match pq.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    let Ok(new_pq) = PathAndQuery::try_from(text) else {
        return;
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(new_pq);
    if let Ok(new_uri) = Uri::from_parts(parts) {
        *uri = new_uri;
    }
}

fn is_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

fn is_dot_dot(segment: &str) -> bool {
    matches!(segment.len(), 2 | 4 | 6) && {
        let lower = segment.to_ascii_lowercase();
        lower == ".." || lower == ".%2e" || lower == "%2e." || lower == "%2e%2e"
    }
}

fn has_dot_segment(path: &str) -> bool {
    path.starts_with('/') && path.split('/').any(|s| is_dot(s) || is_dot_dot(s))
}

/// RFC 3986 §5.2.4 on an absolute path; keeps a trailing slash when the last segment was a
/// dot segment (`/a/b/..` → `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if is_dot(segment) {
            trailing_slash = i == last;
        } else if is_dot_dot(segment) {
            out.pop();
            trailing_slash = i == last;
        } else {
            out.push(segment);
            trailing_slash = false;
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &out {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let mut uri: Uri = s.parse().unwrap();
        normalize(&mut uri);
        uri.to_string()
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/api/../admin"), "/admin");
        assert_eq!(norm("/a/./b/../c?x=/../y"), "/a/c?x=/../y");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/.."), "/");
    }

    #[test]
    fn encoded_dots_count_as_dots() {
        assert_eq!(norm("/api/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/api/%2E./admin"), "/admin");
        assert_eq!(norm("/api/.%2e/admin"), "/admin");
        assert_eq!(norm("/api/%2e/x"), "/api/x");
    }

    #[test]
    fn other_paths_are_untouched() {
        for p in [
            "/",
            "/a//b",
            "/a/..b/c",
            "/a/b.../c",
            "/a/%2F../b",
            "/file.txt",
            "http://h/a/b",
        ] {
            assert_eq!(norm(p), p, "{p}");
        }
        assert_eq!(norm("http://h/a/../b?q"), "http://h/b?q");
    }
}
