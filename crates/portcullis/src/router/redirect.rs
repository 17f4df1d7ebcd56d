//! Redirect actions: compiling the config's overrides and building the `Location` value.

use std::fmt::Write as _;

use anyhow::Context as _;
use http::request::Parts;
use http::StatusCode;

use super::host::{default_port, normalize_config_host, request_authority};

/// A compiled redirect action. Parts left `None` are taken from the request.
#[derive(Debug)]
pub struct Redirect {
    /// Lower case, e.g. `https`.
    pub scheme: Option<String>,
    /// Lower case, no port; IPv6 literals in brackets.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Starts with `/`; the request's query is appended.
    pub path: Option<String>,
    /// A 3xx status.
    pub status: StatusCode,
}

impl Redirect {
    /// Validates and normalises a redirect action from the config.
    pub fn compile(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: Option<&str>,
        status: u16,
    ) -> anyhow::Result<Self> {
        let status = StatusCode::from_u16(status)
            .with_context(|| format!("invalid redirect status {status}"))?;
        anyhow::ensure!(
            status.is_redirection(),
            "redirect status {} is not a 3xx status",
            status.as_u16()
        );
        let scheme = scheme
            .map(|s| {
                let s = s.trim().to_ascii_lowercase();
                let valid = s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
                anyhow::ensure!(valid, "invalid redirect scheme {s:?}");
                Ok(s)
            })
            .transpose()?;
        let host = host
            .map(|h| normalize_config_host(h).context("redirect host"))
            .transpose()?;
        anyhow::ensure!(port != Some(0), "redirect port 0 is not valid");
        let path = path
            .map(|p| {
                anyhow::ensure!(
                    p.starts_with('/'),
                    "redirect path {p:?} must start with '/'"
                );
                http::uri::PathAndQuery::try_from(p)
                    .with_context(|| format!("invalid redirect path {p:?}"))?;
                Ok(p.to_string())
            })
            .transpose()?;
        Ok(Self {
            scheme,
            host,
            port,
            path,
            status,
        })
    }

    /// The `Location` value for a request; `scheme` is the request's own scheme.
    ///
    /// Scheme: the override, else the request's. Host: the override, else the request's.
    /// Port: the override, else the request's unless the scheme changed; a scheme's default
    /// port is left out. Path: the override with the request's query appended, else the
    /// request's path and query. A request without a usable host and no host override gets
    /// a relative `Location` (path and query only).
    pub fn location(&self, req: &Parts, scheme: &str) -> String {
        let authority = request_authority(req);
        let out_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = match (&self.host, &authority) {
            (Some(h), _) => Some(h.as_str()),
            (None, Some(a)) => Some(a.host.as_ref()),
            (None, None) => None,
        };
        let scheme_changed = !out_scheme.eq_ignore_ascii_case(scheme);
        let port = match self.port {
            Some(p) => Some(p),
            None if scheme_changed => None,
            None => authority.as_ref().and_then(|a| a.port),
        }
        .filter(|&p| default_port(out_scheme) != Some(p));

        let mut out = String::new();
        if let Some(host) = host {
            let _ = write!(out, "{}://{host}", out_scheme.to_ascii_lowercase());
            if let Some(port) = port {
                let _ = write!(out, ":{port}");
            }
        }
        match &self.path {
            Some(path) => {
                out.push_str(path);
                if let Some(q) = req.uri.query() {
                    out.push(if path.contains('?') { '&' } else { '?' });
                    out.push_str(q);
                }
            }
            None => {
                let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
                if pq.starts_with('/') {
                    out.push_str(pq);
                } else {
                    out.push('/');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn redirect(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: Option<&str>,
    ) -> Redirect {
        Redirect::compile(scheme, host, port, path, 301).unwrap()
    }

    #[test]
    fn keeps_everything_when_nothing_overridden() {
        let r = redirect(None, None, None, None);
        assert_eq!(
            r.location(&req("/a/b?x=1", Some("Example.com:8080")), "http"),
            "http://example.com:8080/a/b?x=1"
        );
        assert_eq!(
            r.location(&req("/", Some("example.com")), "http"),
            "http://example.com/"
        );
    }

    #[test]
    fn https_upgrade_drops_the_request_port() {
        let r = redirect(Some("HTTPS"), None, None, None);
        assert_eq!(
            r.location(&req("/login?next=%2F", Some("example.com:8080")), "http"),
            "https://example.com/login?next=%2F"
        );
    }

    #[test]
    fn port_override_and_default_port_omitted() {
        let r = redirect(Some("https"), None, Some(8443), None);
        assert_eq!(
            r.location(&req("/x", Some("example.com")), "http"),
            "https://example.com:8443/x"
        );
        let r = redirect(Some("https"), None, Some(443), None);
        assert_eq!(
            r.location(&req("/x", Some("example.com:80")), "http"),
            "https://example.com/x"
        );
        let r = redirect(None, None, None, None);
        assert_eq!(
            r.location(&req("/x", Some("example.com:80")), "http"),
            "http://example.com/x"
        );
    }

    #[test]
    fn host_override_keeps_request_port_when_scheme_same() {
        let r = redirect(None, Some("New.example.com"), None, None);
        assert_eq!(
            r.location(&req("/x", Some("old.example.com:8080")), "http"),
            "http://new.example.com:8080/x"
        );
    }

    #[test]
    fn path_override_keeps_query() {
        let r = redirect(None, None, None, Some("/new"));
        assert_eq!(
            r.location(&req("/old?a=1&b=2", Some("example.com")), "https"),
            "https://example.com/new?a=1&b=2"
        );
        assert_eq!(
            r.location(&req("/old", Some("example.com")), "https"),
            "https://example.com/new"
        );
        let r = redirect(None, None, None, Some("/new?from=old"));
        assert_eq!(
            r.location(&req("/old?a=1", Some("example.com")), "https"),
            "https://example.com/new?from=old&a=1"
        );
    }

    #[test]
    fn ipv6_and_h2_authority() {
        let r = redirect(None, None, None, None);
        assert_eq!(
            r.location(&req("/x", Some("[::1]:8080")), "http"),
            "http://[::1]:8080/x"
        );
        assert_eq!(
            r.location(&req("https://h2.example.com:8443/y?z", None), "https"),
            "https://h2.example.com:8443/y?z"
        );
        let r = redirect(None, Some("::1"), Some(9000), None);
        assert_eq!(
            r.location(&req("/x", Some("a.com")), "http"),
            "http://[::1]:9000/x"
        );
    }

    #[test]
    fn no_host_gives_relative_location() {
        let r = redirect(None, None, None, Some("/new"));
        assert_eq!(r.location(&req("/old?q", None), "http"), "/new?q");
    }

    #[test]
    fn invalid_redirects_are_errors() {
        assert!(Redirect::compile(None, None, None, None, 200).is_err());
        assert!(Redirect::compile(None, None, None, None, 1000).is_err());
        assert!(Redirect::compile(Some("ht tp"), None, None, None, 301).is_err());
        assert!(Redirect::compile(None, Some("a.com:80"), None, None, 301).is_err());
        assert!(Redirect::compile(None, None, None, Some("new"), 301).is_err());
        assert!(Redirect::compile(None, None, Some(0), None, 301).is_err());
    }
}
