//! Compiled request matchers for everything but the host: path, methods, headers and query.
//! Built once per route so matching a request parses nothing but the query string.

use std::borrow::Cow;

use anyhow::Context as _;
use http::request::Parts;
use http::{HeaderName, Method};

use crate::config::schema::{PathMatch, RouteMatch, ValueMatch};

/// Everything but the host that a request must satisfy to take a route.
#[derive(Debug)]
pub(crate) struct RequestMatcher {
    path: Option<PathMatcher>,
    methods: Vec<Method>,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
}

impl RequestMatcher {
    pub(crate) fn compile(m: &RouteMatch) -> anyhow::Result<Self> {
        let path = m.path.as_ref().map(PathMatcher::compile).transpose()?;
        let methods = m
            .methods
            .iter()
            .map(|name| {
                Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
                    .with_context(|| format!("invalid method {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let headers = m
            .headers
            .iter()
            .map(HeaderMatcher::compile)
            .collect::<anyhow::Result<_>>()?;
        let query = m
            .query
            .iter()
            .map(QueryMatcher::compile)
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            path,
            methods,
            headers,
            query,
        })
    }

    /// Cheapest checks first: method, path, headers, then the query (which needs parsing).
    pub(crate) fn matches(&self, req: &Parts) -> bool {
        (self.methods.is_empty() || self.methods.contains(&req.method))
            && self.path.as_ref().is_none_or(|p| p.matches(req.uri.path()))
            && self.headers.iter().all(|h| h.matches(req))
            && (self.query.is_empty() || {
                let query = req.uri.query().unwrap_or("");
                self.query.iter().all(|q| q.matches(query))
            })
    }
}

/// A compiled path matcher.
#[derive(Debug)]
pub(crate) enum PathMatcher {
    Exact(String),
    /// Segment-aware unless the prefix ends in `/`.
    Prefix(String),
    /// Anchored to the whole path.
    Regex(regex::Regex),
}

impl PathMatcher {
    pub(crate) fn compile(m: &PathMatch) -> anyhow::Result<Self> {
        Ok(match m {
            PathMatch::Exact(p) => PathMatcher::Exact(check_path(p)?.to_string()),
            PathMatch::Prefix(p) => PathMatcher::Prefix(check_path(p)?.to_string()),
            PathMatch::Regex(r) => PathMatcher::Regex(anchored(r)?),
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => prefix_matches(p, path),
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Segment-aware prefix test: `/api` takes `/api`, `/api/` and `/api/x` but not `/apix`; a
/// prefix ending in `/` takes anything that starts with it.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

fn check_path(p: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(p.starts_with('/'), "path {p:?} must start with '/'");
    Ok(p)
}

fn anchored(pattern: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .with_context(|| format!("invalid regex {pattern:?}"))
}

fn anchored_bytes(pattern: &str) -> anyhow::Result<regex::bytes::Regex> {
    regex::bytes::Regex::new(&format!("^(?:{pattern})$"))
        .with_context(|| format!("invalid regex {pattern:?}"))
}

/// What a header or query value must be; exactly one kind per `ValueMatch`.
#[derive(Debug)]
enum ValueTest<R> {
    /// Some value equals this.
    Exact(String),
    /// The name is there (`true`) or not (`false`).
    Present(bool),
    /// Some value matches the whole regex.
    Regex(R),
}

fn value_test<R>(
    m: &ValueMatch,
    compile: impl Fn(&str) -> anyhow::Result<R>,
) -> anyhow::Result<ValueTest<R>> {
    match (&m.exact, m.present, &m.regex) {
        (Some(v), None, None) => Ok(ValueTest::Exact(v.clone())),
        (None, Some(p), None) => Ok(ValueTest::Present(p)),
        (None, None, Some(r)) => Ok(ValueTest::Regex(compile(r)?)),
        _ => anyhow::bail!(
            "match on {:?} needs exactly one of `exact`, `present`, `regex`",
            m.name
        ),
    }
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderName,
    test: ValueTest<regex::bytes::Regex>,
}

impl HeaderMatcher {
    fn compile(m: &ValueMatch) -> anyhow::Result<Self> {
        let name = HeaderName::from_bytes(m.name.as_bytes())
            .with_context(|| format!("invalid header name {:?}", m.name))?;
        let test = value_test(m, anchored_bytes)?;
        Ok(Self { name, test })
    }

    fn matches(&self, req: &Parts) -> bool {
        let mut values = req.headers.get_all(&self.name).iter();
        match &self.test {
            ValueTest::Present(want) => values.next().is_some() == *want,
            ValueTest::Exact(v) => values.any(|h| h.as_bytes() == v.as_bytes()),
            ValueTest::Regex(re) => values.any(|h| re.is_match(h.as_bytes())),
        }
    }
}

#[derive(Debug)]
struct QueryMatcher {
    name: String,
    test: ValueTest<regex::Regex>,
}

impl QueryMatcher {
    fn compile(m: &ValueMatch) -> anyhow::Result<Self> {
        anyhow::ensure!(!m.name.is_empty(), "query parameter name is empty");
        let test = value_test(m, anchored)?;
        Ok(Self {
            name: m.name.clone(),
            test,
        })
    }

    /// `query` is the raw query string; names and values are percent-decoded (`+` is a space).
    fn matches(&self, query: &str) -> bool {
        let mut values = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == &self.name)
            .map(|(_, v): (_, Cow<'_, str>)| v);
        match &self.test {
            ValueTest::Present(want) => values.next().is_some() == *want,
            ValueTest::Exact(want) => values.any(|v| v == want.as_str()),
            ValueTest::Regex(re) => values.any(|v| re.is_match(&v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn vm(
        name: &str,
        exact: Option<&str>,
        present: Option<bool>,
        regex: Option<&str>,
    ) -> ValueMatch {
        ValueMatch {
            name: name.into(),
            exact: exact.map(Into::into),
            present,
            regex: regex.map(Into::into),
        }
    }

    fn matcher(m: RouteMatch) -> RequestMatcher {
        RequestMatcher::compile(&m).unwrap()
    }

    #[test]
    fn exact_path() {
        let m = PathMatcher::compile(&PathMatch::Exact("/a/b".into())).unwrap();
        assert!(m.matches("/a/b"));
        assert!(!m.matches("/a/b/"));
        assert!(!m.matches("/a"));
    }

    #[test]
    fn prefix_is_segment_aware() {
        let m = PathMatcher::compile(&PathMatch::Prefix("/api".into())).unwrap();
        assert!(m.matches("/api"));
        assert!(m.matches("/api/"));
        assert!(m.matches("/api/x/y"));
        assert!(!m.matches("/apix"));
        assert!(!m.matches("/ap"));
        assert!(!m.matches("/"));
    }

    #[test]
    fn prefix_with_trailing_slash() {
        let m = PathMatcher::compile(&PathMatch::Prefix("/api/".into())).unwrap();
        assert!(m.matches("/api/"));
        assert!(m.matches("/api/x"));
        assert!(!m.matches("/api"));
        let root = PathMatcher::compile(&PathMatch::Prefix("/".into())).unwrap();
        assert!(root.matches("/"));
        assert!(root.matches("/anything"));
    }

    #[test]
    fn regex_path_is_anchored() {
        let m = PathMatcher::compile(&PathMatch::Regex("/users/[0-9]+|/u".into())).unwrap();
        assert!(m.matches("/users/42"));
        assert!(m.matches("/u"));
        assert!(!m.matches("/users/42/x"));
        assert!(!m.matches("/x/users/42"));
        assert!(!m.matches("/ux"));
    }

    #[test]
    fn regex_path_ignores_query() {
        let m = matcher(RouteMatch {
            path: Some(PathMatch::Regex("/a".into())),
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/a?x=1", &[])));
    }

    #[test]
    fn bad_paths_and_regexes_are_errors() {
        assert!(PathMatcher::compile(&PathMatch::Prefix("api".into())).is_err());
        assert!(PathMatcher::compile(&PathMatch::Exact("".into())).is_err());
        assert!(PathMatcher::compile(&PathMatch::Regex("(".into())).is_err());
    }

    #[test]
    fn methods_any_of() {
        let m = matcher(RouteMatch {
            methods: vec!["GET".into(), "post".into()],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/", &[])));
        assert!(m.matches(&req("POST", "/", &[])));
        assert!(!m.matches(&req("DELETE", "/", &[])));
        assert!(matcher(RouteMatch::default()).matches(&req("DELETE", "/", &[])));
    }

    #[test]
    fn header_exact_any_value() {
        let m = matcher(RouteMatch {
            headers: vec![vm("X-Env", Some("canary"), None, None)],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/", &[("x-env", "prod"), ("x-env", "canary")])));
        assert!(!m.matches(&req("GET", "/", &[("x-env", "Canary")])));
        assert!(!m.matches(&req("GET", "/", &[])));
    }

    #[test]
    fn header_present_and_absent() {
        let present = matcher(RouteMatch {
            headers: vec![vm("authorization", None, Some(true), None)],
            ..Default::default()
        });
        let absent = matcher(RouteMatch {
            headers: vec![vm("authorization", None, Some(false), None)],
            ..Default::default()
        });
        let with = req("GET", "/", &[("authorization", "Bearer x")]);
        let without = req("GET", "/", &[]);
        assert!(present.matches(&with));
        assert!(!present.matches(&without));
        assert!(!absent.matches(&with));
        assert!(absent.matches(&without));
    }

    #[test]
    fn header_regex_full_match() {
        let m = matcher(RouteMatch {
            headers: vec![vm("x-version", None, None, Some("v[0-9]+"))],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/", &[("x-version", "v12")])));
        assert!(!m.matches(&req("GET", "/", &[("x-version", "v12-beta")])));
        assert!(!m.matches(&req("GET", "/", &[("x-version", "xv1")])));
    }

    #[test]
    fn all_headers_must_match() {
        let m = matcher(RouteMatch {
            headers: vec![
                vm("a", Some("1"), None, None),
                vm("b", None, Some(true), None),
            ],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/", &[("a", "1"), ("b", "")])));
        assert!(!m.matches(&req("GET", "/", &[("a", "1")])));
    }

    #[test]
    fn value_match_needs_exactly_one_kind() {
        let none = RouteMatch {
            headers: vec![vm("a", None, None, None)],
            ..Default::default()
        };
        let two = RouteMatch {
            query: vec![vm("a", Some("x"), Some(true), None)],
            ..Default::default()
        };
        assert!(RequestMatcher::compile(&none).is_err());
        assert!(RequestMatcher::compile(&two).is_err());
        let bad_name = RouteMatch {
            headers: vec![vm("bad name", Some("x"), None, None)],
            ..Default::default()
        };
        assert!(RequestMatcher::compile(&bad_name).is_err());
    }

    #[test]
    fn query_exact_is_percent_decoded() {
        let m = matcher(RouteMatch {
            query: vec![vm("q", Some("a b/é"), None, None)],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/?q=a%20b%2F%C3%A9", &[])));
        assert!(m.matches(&req("GET", "/?x=1&q=a+b/%C3%A9", &[])));
        assert!(m.matches(&req("GET", "/?q=other&q=a%20b%2f%c3%a9", &[])));
        assert!(!m.matches(&req("GET", "/?q=a%20b", &[])));
        assert!(!m.matches(&req("GET", "/", &[])));
    }

    #[test]
    fn query_name_is_decoded_too() {
        let m = matcher(RouteMatch {
            query: vec![vm("a b", None, Some(true), None)],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/?a%20b=1", &[])));
    }

    #[test]
    fn query_present_and_absent() {
        let present = matcher(RouteMatch {
            query: vec![vm("debug", None, Some(true), None)],
            ..Default::default()
        });
        let absent = matcher(RouteMatch {
            query: vec![vm("debug", None, Some(false), None)],
            ..Default::default()
        });
        assert!(present.matches(&req("GET", "/?debug", &[])));
        assert!(present.matches(&req("GET", "/?x=1&debug=", &[])));
        assert!(!present.matches(&req("GET", "/?debugger=1", &[])));
        assert!(absent.matches(&req("GET", "/?debugger=1", &[])));
        assert!(absent.matches(&req("GET", "/", &[])));
        assert!(!absent.matches(&req("GET", "/?debug=0", &[])));
    }

    #[test]
    fn query_regex_full_match_on_decoded_value() {
        let m = matcher(RouteMatch {
            query: vec![vm("id", None, None, Some("[0-9]+ [a-z]+"))],
            ..Default::default()
        });
        assert!(m.matches(&req("GET", "/?id=12%20ab", &[])));
        assert!(!m.matches(&req("GET", "/?id=12%20ab!", &[])));
    }
}
