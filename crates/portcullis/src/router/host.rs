//! The request's host and port (from `:authority` or `Host`), and host names from the config
//! normalised the same way, so the router compares like with like.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::request::Parts;

/// Where a request says it is going: host (lower-cased, IPv6 literals kept in brackets, no
/// trailing dot) and port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestAuthority<'a> {
    pub(crate) host: Cow<'a, str>,
    pub(crate) port: Option<u16>,
}

/// Reads the authority of a request: the URI's (HTTP/2 `:authority`, or an HTTP/1.1
/// absolute-form target), else the `Host` header. `None` when absent or malformed.
pub(crate) fn request_authority(req: &Parts) -> Option<RequestAuthority<'_>> {
    if let Some(authority) = req.uri.authority() {
        let host = normalize_request_host(authority.host())?;
        return Some(RequestAuthority {
            host,
            port: authority.port_u16(),
        });
    }
    let value = req.headers.get(http::header::HOST)?.to_str().ok()?;
    let (host, port) = split_host_port(value)?;
    Some(RequestAuthority {
        host: normalize_request_host(host)?,
        port,
    })
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 literal). `None` if malformed.
fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    let (host, rest) = if value.starts_with('[') {
        let end = value.find(']')?;
        value.split_at(end + 1)
    } else {
        match value.find(':') {
            Some(i) => value.split_at(i),
            None => (value, ""),
        }
    };
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some("") => None,
        Some(digits) => {
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse().ok()?)
        }
    };
    Some((host, port))
}

/// Checks the characters of a request host and lower-cases it, allocating only when it has
/// upper-case letters. A single trailing dot (`example.com.`) is dropped.
fn normalize_request_host(host: &str) -> Option<Cow<'_, str>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let valid = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    if !valid {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// A host name as written in the config, in the form `request_authority` produces: lower
/// case, no trailing dot, IPv6 literals in brackets. Rejects ports and stray characters.
pub(crate) fn normalize_config_host(host: &str) -> anyhow::Result<String> {
    let trimmed = host.trim();
    if trimmed.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("[{}]", trimmed.to_ascii_lowercase()));
    }
    match normalize_request_host(trimmed) {
        Some(h) => Ok(h.into_owned()),
        None => {
            anyhow::bail!("invalid host {host:?}: expected a host name or IP address without port")
        }
    }
}

/// The port implied by a scheme when none is written.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// The wildcard suffixes a host can match, longest first: `a.b.c` yields `b.c`, then `c`.
/// A suffix always leaves at least one character of label in front of its dot.
pub(crate) fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.char_indices()
        .filter(|&(i, c)| c == '.' && i > 0 && i + 1 < host.len())
        .map(move |(i, _)| &host[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn auth(uri: &str, host: Option<&str>) -> Option<(String, Option<u16>)> {
        let p = parts(uri, host);
        request_authority(&p).map(|a| (a.host.into_owned(), a.port))
    }

    #[test]
    fn host_header_with_and_without_port() {
        assert_eq!(
            auth("/", Some("example.com")),
            Some(("example.com".into(), None))
        );
        assert_eq!(
            auth("/", Some("Example.COM:8080")),
            Some(("example.com".into(), Some(8080)))
        );
        assert_eq!(
            auth("/", Some("example.com.")),
            Some(("example.com".into(), None))
        );
        assert_eq!(auth("/", None), None);
    }

    #[test]
    fn ipv6_literals_keep_brackets() {
        assert_eq!(
            auth("/", Some("[::1]:8080")),
            Some(("[::1]".into(), Some(8080)))
        );
        assert_eq!(auth("/", Some("[::1]")), Some(("[::1]".into(), None)));
        assert_eq!(
            auth("/", Some("[2001:DB8::1]")),
            Some(("[2001:db8::1]".into(), None))
        );
        assert_eq!(auth("/", Some("[::1")), None);
        assert_eq!(auth("/", Some("[::1]x")), None);
    }

    #[test]
    fn malformed_hosts_are_ignored() {
        assert_eq!(auth("/", Some("")), None);
        assert_eq!(auth("/", Some("a.com:port")), None);
        assert_eq!(auth("/", Some("a.com:99999")), None);
        assert_eq!(auth("/", Some("evil.com/path")), None);
        assert_eq!(auth("/", Some("a b")), None);
    }

    #[test]
    fn authority_wins_over_host_header() {
        assert_eq!(
            auth("https://H2.example.com:8443/x", Some("other.com")),
            Some(("h2.example.com".into(), Some(8443)))
        );
    }

    #[test]
    fn lower_case_hosts_are_borrowed() {
        let p = parts("/", Some("example.com:80"));
        let a = request_authority(&p).unwrap();
        assert!(matches!(a.host, Cow::Borrowed("example.com")));
    }

    #[test]
    fn config_hosts_are_normalised() {
        assert_eq!(
            normalize_config_host("API.Example.com").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_config_host("::1").unwrap(), "[::1]");
        assert_eq!(normalize_config_host("[::1]").unwrap(), "[::1]");
        assert!(normalize_config_host("a.com:80").is_err());
        assert!(normalize_config_host("").is_err());
    }

    #[test]
    fn suffixes_longest_first() {
        let s: Vec<_> = wildcard_suffixes("a.b.example.com").collect();
        assert_eq!(s, ["b.example.com", "example.com", "com"]);
        assert_eq!(wildcard_suffixes("example").count(), 0);
        assert_eq!(wildcard_suffixes(".com").count(), 0);
    }
}
