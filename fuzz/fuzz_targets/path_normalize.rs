//! Path normalisation (`proxy::path::normalize`) on any request target: never panics, leaves
//! no dot segment behind, keeps the query and everything before the path, and is idempotent
//! (the router and the upstream see the same path).
#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::path::normalize;

/// Whether `segment` is `.` or `..`, also with `%2e` for a dot (what normalising removes).
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
}

fuzz_target!(|data: &[u8]| {
    let Ok(original) = Uri::try_from(data) else {
        return;
    };
    let mut uri = original.clone();
    normalize(&mut uri);

    assert_eq!(uri.scheme(), original.scheme(), "{original} -> {uri}");
    assert_eq!(uri.authority(), original.authority(), "{original} -> {uri}");
    assert_eq!(uri.query(), original.query(), "{original} -> {uri}");
    let path = uri.path();
    if original.path().starts_with('/') {
        assert!(path.starts_with('/'), "{original} -> {uri}");
        assert!(
            !path.split('/').any(is_dot_segment),
            "dot segment left: {original} -> {uri}"
        );
    } else {
        assert_eq!(path, original.path(), "{original} -> {uri}");
    }
    if !original.path().split('/').any(is_dot_segment) {
        assert_eq!(uri, original, "changed without a dot segment");
    }

    let mut again = uri.clone();
    normalize(&mut again);
    assert_eq!(again, uri, "not idempotent: {original}");
});
