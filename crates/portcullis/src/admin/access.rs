//! Who may use the admin listener (`docs/admin-api.md#security`): the `Host` a request names
//! (DNS rebinding), the `Origin` a browser sends (cross-site requests), the bearer token, and
//! the content type of a change (a browser sends `text/plain` and forms cross-site without
//! asking first, never `application/json`).

use std::fmt;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;
use crate::config::schema::{AdminConfig, SecretSource};

/// What an endpoint does, which decides what it asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `/healthz`, `/readyz`, `/metrics`: token only with `auth_health_and_metrics`.
    Probe,
    /// `GET /api/...`: token unless `auth_reads: false`.
    Read,
    /// A change (`POST /api/breakers/{id}/force`): token always, `application/json` only.
    Change,
}

/// The admin token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from its source, through `env` for environment variables.
    pub fn load(
        source: &SecretSource,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Token, String> {
        let text = match source {
            SecretSource::Env(name) => env(name).ok_or_else(|| {
                format!("admin.auth_token.env: environment variable {name:?} is not set")
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                format!("admin.auth_token.file: cannot read {}: {e}", path.display())
            })?,
        };
        let token = text.trim();
        let place = match source {
            SecretSource::Env(name) => format!("admin.auth_token.env: variable {name:?}"),
            SecretSource::File(path) => format!("admin.auth_token.file: {}", path.display()),
        };
        if token.is_empty() {
            return Err(format!("{place} holds an empty token"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{place}: the token must be printable ASCII without spaces (it is sent as `authorization: Bearer <token>`)"
            ));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ.
    fn matches(&self, given: &[u8]) -> bool {
        let mut diff = u8::from(self.0.len() != given.len());
        for (a, b) in self.0.iter().zip(given) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }
}

/// The admin listener's access rules, built once at start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    token: Option<Token>,
    reads_need_token: bool,
    probes_need_token: bool,
    /// Extra `Host` names, lower case.
    hosts: Vec<String>,
}

impl Access {
    /// The rules of `admin`, reading the token from its source (environment variables
    /// through `env`). Errors name the setting.
    pub fn from_config(
        admin: &AdminConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Access, String> {
        let token = admin
            .auth_token
            .as_ref()
            .map(|source| Token::load(source, env))
            .transpose()?;
        Ok(Access {
            reads_need_token: token.is_some() && admin.auth_reads.unwrap_or(true),
            probes_need_token: token.is_some() && admin.auth_health_and_metrics,
            token,
            hosts: admin.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        })
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The `Host` and `Origin` checks every request passes first (the refusal, if any);
    /// `local` is the address the client connected to.
    pub fn refuse_origin(&self, headers: &HeaderMap, local: SocketAddr) -> Option<Response<Body>> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| self.host_allowed(h, local));
        let Some(host) = host else {
            return Some(refusal(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "the Host header does not name this admin listener (its address, localhost on loopback, or one of admin.hosts)",
            ));
        };
        if let Some(origin) = headers.get(header::ORIGIN) {
            if !same_origin(origin.as_bytes(), host) {
                return Some(refusal(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "cross-origin requests are refused (the Origin header is not this admin listener)",
                ));
            }
        }
        None
    }

    /// The token and content-type checks of an endpoint of `class` (the refusal, if any).
    pub fn refuse_request(&self, headers: &HeaderMap, class: Class) -> Option<Response<Body>> {
        let needs_token = match class {
            Class::Probe => self.probes_need_token,
            Class::Read => self.reads_need_token,
            Class::Change => true,
        };
        if needs_token {
            if let Some(refused) = self.token.as_ref().and_then(|t| refuse_token(t, headers)) {
                return Some(refused);
            }
        }
        if class == Class::Change && !is_json(headers) {
            return Some(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "changes take a JSON body with content-type: application/json",
            ));
        }
        None
    }

    fn host_allowed(&self, host: &str, local: SocketAddr) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        // A Host without a port means the scheme's default port.
        let port_ok = port.unwrap_or(80) == local.port();
        let name = name.to_ascii_lowercase();
        if self.hosts.contains(&name) {
            return true;
        }
        if !port_ok {
            return false;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']');
        match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => ip == local.ip(),
            Err(_) => name == "localhost" && local.ip().is_loopback(),
        }
    }
}

/// `name` and optional port of a `Host` value (`[v6]:port` included); `None` when malformed.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

/// Whether `origin` is `http://<host>` or `https://<host>` (ASCII case-insensitive).
fn same_origin(origin: &[u8], host: &str) -> bool {
    [&b"http://"[..], &b"https://"[..]].iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].eq_ignore_ascii_case(host.as_bytes())
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A 401 unless `headers` carry `authorization: Bearer <token>`.
fn refuse_token(token: &Token, headers: &HeaderMap) -> Option<Response<Body>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(6)?;
            let rest = rest.strip_prefix(b" ")?;
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        });
    let (challenge, message) = match given {
        None => (
            "Bearer realm=\"portcullis-admin\"",
            "this endpoint needs the admin token: authorization: Bearer <token>",
        ),
        Some(given) if token.matches(given) => return None,
        Some(_) => (
            "Bearer realm=\"portcullis-admin\", error=\"invalid_token\"",
            "the admin token does not match",
        ),
    };
    let mut resp = refusal(StatusCode::UNAUTHORIZED, "unauthorized", message);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(resp)
}

fn refusal(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    super::api::error(status, kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn access(hosts: &[&str]) -> Access {
        Access {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Access::default()
        }
    }

    #[test]
    fn hosts() {
        let a = access(&["gw-admin.internal"]);
        let v4 = local("127.0.0.1:9901");
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST:9901",
            "gw-admin.internal",
            "GW-admin.internal:443",
        ] {
            assert!(a.host_allowed(ok, v4), "{ok}");
        }
        for bad in [
            "127.0.0.1:9902",
            "127.0.0.1",
            "localhost",
            "evil.example:9901",
            "127.0.0.2:9901",
            "",
            ":9901",
            "127.0.0.1:99999",
            "127.0.0.1:9901:1",
            "localhost.:9901",
        ] {
            assert!(!a.host_allowed(bad, v4), "{bad}");
        }
        let v6 = local("[::1]:9901");
        assert!(a.host_allowed("[::1]:9901", v6));
        assert!(a.host_allowed("localhost:9901", v6));
        assert!(!a.host_allowed("[::1]", v6));
        assert!(!a.host_allowed("[::1]x", v6));
        let public = local("10.0.0.5:80");
        assert!(a.host_allowed("10.0.0.5", public));
        assert!(!a.host_allowed("localhost", public), "not loopback");
    }

    #[test]
    fn origins() {
        assert!(same_origin(b"http://127.0.0.1:9901", "127.0.0.1:9901"));
        assert!(same_origin(b"HTTP://LOCALHOST:9901", "localhost:9901"));
        assert!(same_origin(b"https://gw", "gw"));
        assert!(!same_origin(b"http://127.0.0.1:9902", "127.0.0.1:9901"));
        assert!(!same_origin(b"null", "127.0.0.1:9901"));
        assert!(!same_origin(b"http://evil.example", "127.0.0.1:9901"));
    }

    #[test]
    fn token_comparison() {
        let t = Token(b"s3cret".to_vec());
        assert!(t.matches(b"s3cret"));
        for bad in [&b"s3cres"[..], b"s3cre", b"s3crett", b"", b"S3CRET"] {
            assert!(!t.matches(bad));
        }
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn token_sources() {
        let env = |name: &str| match name {
            "SET" => Some(" tok\n".to_string()),
            "EMPTY" => Some("\n".to_string()),
            "SPACED" => Some("a b".to_string()),
            _ => None,
        };
        let load = |name: &str| Token::load(&SecretSource::Env(name.into()), &env);
        assert_eq!(load("SET"), Ok(Token(b"tok".to_vec())));
        assert_eq!(
            load("UNSET").unwrap_err(),
            "admin.auth_token.env: environment variable \"UNSET\" is not set"
        );
        assert!(load("EMPTY").unwrap_err().ends_with("holds an empty token"));
        assert!(load("SPACED").unwrap_err().contains("printable ASCII"));
        let missing = Token::load(&SecretSource::File("/nonexistent/token".into()), &env);
        assert!(missing
            .unwrap_err()
            .starts_with("admin.auth_token.file: cannot read /nonexistent/token: "));
    }
}
