//! Path rewrites (`policy::rewrite::PathRewriter`) from any operator-written rewrite and any
//! request: compiling and applying never panic; a rewritten request keeps its scheme,
//! authority and query and has a path starting with `/`; a refused one is a 400.
//!
//! Input: a first line `strip PREFIX`, `replace PREFIX WITH` or `regex PATTERN<TAB>REPLACEMENT`,
//! then a request head (`portcullis_fuzz::head`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::schema::{PathMatch, PathRewrite};
use portcullis::policy::rewrite::PathRewriter;
use portcullis::policy::Flow;
use portcullis::proxy::path::normalize;
use portcullis_fuzz::{head, lines, text};

/// Longest regex compiled: longer ones only make the fuzzer slow, not find more.
const MAX_PATTERN: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let Some(spec) = input.next().and_then(text) else {
        return;
    };
    let (rewrite, prefix) = match spec.split_once(' ') {
        Some(("strip", prefix)) => (PathRewrite::StripPrefix, prefix),
        Some(("replace", rest)) => match rest.split_once(' ') {
            Some((prefix, with)) => (PathRewrite::ReplacePrefix(with.to_string()), prefix),
            None => return,
        },
        Some(("regex", rest)) if rest.len() <= MAX_PATTERN => {
            let (pattern, replacement) = rest.split_once('\t').unwrap_or((rest, ""));
            let rewrite = PathRewrite::Regex {
                pattern: pattern.to_string(),
                replacement: replacement.to_string(),
            };
            (rewrite, "/")
        }
        _ => return,
    };
    let path_match = PathMatch::Prefix(prefix.to_string());
    let Ok(rewriter) = PathRewriter::compile(&rewrite, Some(&path_match)) else {
        return;
    };
    let Some(mut req) = head(input) else {
        return;
    };
    normalize(&mut req.uri);
    let before = req.uri.clone();
    match rewriter.apply(&mut req) {
        Flow::Continue => {
            let after = &req.uri;
            assert_eq!(after.scheme(), before.scheme(), "{before} -> {after}");
            assert_eq!(after.authority(), before.authority(), "{before} -> {after}");
            assert_eq!(after.query(), before.query(), "{before} -> {after}");
            if before.path().starts_with('/') {
                assert!(after.path().starts_with('/'), "{before} -> {after}");
            }
            if let PathRewrite::ReplacePrefix(with) = &rewrite {
                if *after != before {
                    assert!(
                        after.path().starts_with(with.trim_end_matches('/')),
                        "{before} -> {after}"
                    );
                }
            }
        }
        Flow::Respond(resp) => {
            assert_eq!(resp.status(), http::StatusCode::BAD_REQUEST, "{before}");
            assert_eq!(req.uri, before, "a refused rewrite changed the request");
        }
    }
});
