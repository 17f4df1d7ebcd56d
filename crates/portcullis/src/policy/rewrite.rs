//! Path rewrites: strip or replace the matched prefix, or a regex substitution; the query is kept.

use anyhow::Context as _;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Response, StatusCode, Uri};

use crate::body::Body;
use crate::config::schema::{PathMatch, PathRewrite};
use crate::policy::Flow;
use crate::reason;
use crate::router::prefix_matches;

/// A compiled path rewrite.
#[derive(Debug)]
pub struct PathRewriter {
    op: Op,
}

#[derive(Debug)]
enum Op {
    /// Remove `prefix` (the route's prefix match).
    StripPrefix { prefix: String },
    /// Put `with` in place of `prefix` (the route's prefix match).
    ReplacePrefix { prefix: String, with: String },
    /// `replace_all` on the path; `$1` / `${name}` refer to capture groups.
    Regex {
        pattern: regex::Regex,
        replacement: String,
    },
}

impl PathRewriter {
    /// `path_match` is the route's path matcher; the prefix rewrites need a `prefix` one.
    pub fn compile(rewrite: &PathRewrite, path_match: Option<&PathMatch>) -> anyhow::Result<Self> {
        let route_prefix = || match path_match {
            Some(PathMatch::Prefix(p)) => Ok(p.clone()),
            _ => anyhow::bail!("rewrite of a prefix needs a `prefix` path match on the route"),
        };
        let op = match rewrite {
            PathRewrite::StripPrefix => Op::StripPrefix {
                prefix: route_prefix()?,
            },
            PathRewrite::ReplacePrefix(with) => {
                anyhow::ensure!(
                    with.starts_with('/'),
                    "replace_prefix {with:?} must start with '/'"
                );
                PathAndQuery::try_from(with.as_str())
                    .ok()
                    .filter(|pq| pq.query().is_none())
                    .with_context(|| format!("replace_prefix {with:?} is not a valid path"))?;
                Op::ReplacePrefix {
                    prefix: route_prefix()?,
                    with: with.clone(),
                }
            }
            PathRewrite::Regex {
                pattern,
                replacement,
            } => Op::Regex {
                pattern: regex::Regex::new(pattern)
                    .with_context(|| format!("invalid rewrite regex {pattern:?}"))?,
                replacement: replacement.clone(),
            },
        };
        Ok(Self { op })
    }

    /// Rewrites `req.uri`'s path, keeping scheme, authority and query. A result that is not
    /// a valid URI answers 400 `bad_request`. A path outside the route's prefix (which `find`
    /// never yields) is left alone.
    pub fn apply(&self, req: &mut Parts) -> Flow {
        let path = req.uri.path();
        let new_path = match &self.op {
            Op::StripPrefix { prefix } => match strip(prefix, path) {
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                Some(rest) => format!("/{rest}"),
                None => return Flow::Continue,
            },
            Op::ReplacePrefix { prefix, with } => match strip(prefix, path) {
                Some(rest) => join(with, rest),
                None => return Flow::Continue,
            },
            Op::Regex {
                pattern,
                replacement,
            } => {
                let out = pattern.replace_all(path, replacement.as_str());
                if out.starts_with('/') {
                    out.into_owned()
                } else {
                    format!("/{out}")
                }
            }
        };
        match with_path(&req.uri, new_path) {
            Some(uri) => {
                req.uri = uri;
                Flow::Continue
            }
            None => Flow::Respond(bad_request()),
        }
    }
}

/// The part of `path` after the route's `prefix`, if the prefix matches (segment-aware).
fn strip<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    if prefix_matches(prefix, path) {
        path.get(prefix.len()..)
    } else {
        None
    }
}

/// `with` followed by `rest` with exactly one `/` between them.
fn join(with: &str, rest: &str) -> String {
    match (with.ends_with('/'), rest.strip_prefix('/')) {
        (_, None) if rest.is_empty() => with.to_string(),
        (true, Some(tail)) => format!("{with}{tail}"),
        (false, None) => format!("{with}/{rest}"),
        _ => format!("{with}{rest}"),
    }
}

/// `uri` with its path replaced by `path` and its query kept; `None` if not a valid URI.
fn with_path(uri: &Uri, mut path: String) -> Option<Uri> {
    // A rewrite makes a path, never a query or a fragment: a `?` or `#` that a replacement
    // writes (or a capture carries) stays in the path, percent-encoded, so the request's
    // query is the client's and nothing else.
    if path.contains(['?', '#']) {
        path = path.replace('?', "%3F").replace('#', "%23");
    }
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let pq = PathAndQuery::try_from(path).ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

fn bad_request() -> Response<Body> {
    let mut resp = Response::new(Body::full(r#"{"reason":"bad_request"}"#));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static(reason::HEADER),
        HeaderValue::from_static(reason::BAD_REQUEST),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Parts {
        http::Request::builder()
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn rewrite(rw: &PathRewriter, uri: &str) -> String {
        let mut parts = req(uri);
        match rw.apply(&mut parts) {
            Flow::Continue => parts.uri.to_string(),
            Flow::Respond(resp) => panic!("unexpected response {}", resp.status()),
        }
    }

    /// Found by the `path_rewrite` fuzz target: a replacement with a `?` (or `#`) made a new
    /// query out of part of the path. Every kind of rewrite keeps the client's query.
    #[test]
    fn a_rewrite_never_makes_a_query_or_fragment() {
        let regex = PathRewrite::Regex {
            pattern: "^/users/([0-9]+)/(.*)$".into(),
            replacement: "/u/$1/?2#x".into(),
        };
        let rw = PathRewriter::compile(&regex, None).unwrap();
        assert_eq!(rewrite(&rw, "/users/42/a"), "/u/42/%3F2%23x");
        assert_eq!(rewrite(&rw, "/users/42/a?q=1"), "/u/42/%3F2%23x?q=1");
        let replace = PathRewrite::ReplacePrefix("/v2?admin=1".into());
        // A fixed replacement with a `?` is refused when the config is compiled.
        assert!(PathRewriter::compile(&replace, Some(&prefix("/api"))).is_err());
    }

    #[test]
    fn strip_prefix() {
        let rw = PathRewriter::compile(&PathRewrite::StripPrefix, Some(&prefix("/api"))).unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/users");
        assert_eq!(rewrite(&rw, "/api"), "/");
        assert_eq!(rewrite(&rw, "/api/"), "/");
        assert_eq!(rewrite(&rw, "/api/users?a=1&b=%20"), "/users?a=1&b=%20");
        assert_eq!(rewrite(&rw, "/api?x"), "/?x");
        // Outside the prefix (never routed here): left alone.
        assert_eq!(rewrite(&rw, "/apix"), "/apix");
    }

    #[test]
    fn strip_prefix_with_trailing_slash() {
        let rw = PathRewriter::compile(&PathRewrite::StripPrefix, Some(&prefix("/api/"))).unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/users");
        assert_eq!(rewrite(&rw, "/api/"), "/");
        let root = PathRewriter::compile(&PathRewrite::StripPrefix, Some(&prefix("/"))).unwrap();
        assert_eq!(rewrite(&root, "/users"), "/users");
    }

    #[test]
    fn replace_prefix() {
        let rw = PathRewriter::compile(
            &PathRewrite::ReplacePrefix("/v2".into()),
            Some(&prefix("/api")),
        )
        .unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/v2/users");
        assert_eq!(rewrite(&rw, "/api"), "/v2");
        assert_eq!(rewrite(&rw, "/api/"), "/v2/");
        assert_eq!(rewrite(&rw, "/api/users?q=1"), "/v2/users?q=1");
    }

    #[test]
    fn replace_prefix_slashes() {
        let rw = PathRewriter::compile(
            &PathRewrite::ReplacePrefix("/v2/".into()),
            Some(&prefix("/api")),
        )
        .unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/v2/users");
        let rw = PathRewriter::compile(
            &PathRewrite::ReplacePrefix("/v2".into()),
            Some(&prefix("/api/")),
        )
        .unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/v2/users");
        let rw = PathRewriter::compile(
            &PathRewrite::ReplacePrefix("/".into()),
            Some(&prefix("/api")),
        )
        .unwrap();
        assert_eq!(rewrite(&rw, "/api/users"), "/users");
        assert_eq!(rewrite(&rw, "/api"), "/");
    }

    #[test]
    fn regex_rewrite_with_groups() {
        let rw = PathRewriter::compile(
            &PathRewrite::Regex {
                pattern: "^/users/(?P<id>[0-9]+)/(\\w+)$".into(),
                replacement: "/u/${id}/$2".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(rewrite(&rw, "/users/42/posts?page=2"), "/u/42/posts?page=2");
        assert_eq!(rewrite(&rw, "/other"), "/other");

        let all = PathRewriter::compile(
            &PathRewrite::Regex {
                pattern: "//+".into(),
                replacement: "/".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(rewrite(&all, "/a//b///c"), "/a/b/c");
    }

    #[test]
    fn keeps_scheme_and_authority() {
        let rw = PathRewriter::compile(&PathRewrite::StripPrefix, Some(&prefix("/api"))).unwrap();
        assert_eq!(
            rewrite(&rw, "https://example.com:8443/api/x?y=1"),
            "https://example.com:8443/x?y=1"
        );
    }

    #[test]
    fn invalid_result_is_400() {
        let rw = PathRewriter::compile(
            &PathRewrite::Regex {
                pattern: "x".into(),
                replacement: "a b".into(),
            },
            None,
        )
        .unwrap();
        let mut parts = req("/x?q=1");
        match rw.apply(&mut parts) {
            Flow::Respond(resp) => {
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
                assert_eq!(resp.headers()[reason::HEADER], reason::BAD_REQUEST);
            }
            Flow::Continue => panic!("expected 400, got {}", parts.uri),
        }
        assert_eq!(parts.uri, "/x?q=1", "request left untouched");
    }

    #[test]
    fn prefix_rewrites_need_a_prefix_match() {
        assert!(PathRewriter::compile(&PathRewrite::StripPrefix, None).is_err());
        assert!(PathRewriter::compile(
            &PathRewrite::StripPrefix,
            Some(&PathMatch::Exact("/a".into()))
        )
        .is_err());
        assert!(PathRewriter::compile(
            &PathRewrite::ReplacePrefix("/v2".into()),
            Some(&PathMatch::Regex("/a".into()))
        )
        .is_err());
        assert!(PathRewriter::compile(
            &PathRewrite::ReplacePrefix("v2".into()),
            Some(&prefix("/a"))
        )
        .is_err());
        assert!(PathRewriter::compile(
            &PathRewrite::Regex {
                pattern: "(".into(),
                replacement: String::new()
            },
            None
        )
        .is_err());
    }
}
