//! Header handling at the proxy boundary: hop-by-hop removal (RFC 9110 §7.6.1) that cannot
//! touch the headers the gateway manages, the protocol upgrades a route lets through, the
//! `X-Forwarded-*` family with trusted proxies, `x-request-id`, and HTTP/2 cookie crumbs
//! joined for HTTP/1.1.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header carrying the request id, generated when absent and returned to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Only meaningful with `Upgrade: h2c` (RFC 7540 §3.2.1), which is never forwarded: always
/// hop-by-hop.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers the gateway sets on (or vouches for in) the upstream request: the request id, the
/// `X-Forwarded-*` family, the trace context and `grpc-timeout`. `Connection` cannot
/// nominate them away (a route's milliseconds deadline header is passed to
/// `strip_hop_by_hop` as well).
const MANAGED: [HeaderName; 7] = [
    REQUEST_ID,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    crate::proxy::deadline::GRPC_TIMEOUT,
];

/// The upgrade token that is never forwarded: HTTP/2 spoken to the upstream directly would
/// pass every later request by the routes.
const H2C: &str = "h2c";

/// Longest incoming request id that is kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Removes hop-by-hop headers: those named in `Connection`, and the fixed set. When `upgrade`
/// is true (a protocol upgrade being proxied), `Connection: upgrade` and `Upgrade` are kept.
/// `TE: trailers` is kept (gRPC needs it); any other `TE` is dropped. Names the gateway
/// manages (`MANAGED`, and `deadline_header` when the route has one) are not removed when
/// `Connection` lists them: the gateway sets them itself.
pub fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    upgrade: bool,
    deadline_header: Option<&HeaderName>,
) {
    // One pass over the names finds which hop-by-hop fields are present (most messages carry
    // none, or only `Connection`); only those are then looked up and removed.
    let mut present = Present::default();
    for name in headers.keys() {
        present.note(name);
    }
    if present.connection {
        // Fields listed in Connection are hop-by-hop too.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| *name != header::TE && !(upgrade && *name == header::UPGRADE))
            .filter(|name| !is_hop_by_hop(name))
            .filter(|name| !MANAGED.contains(name) && Some(name) != deadline_header)
            .collect();
        for name in listed {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    if present.keep_alive {
        headers.remove(KEEP_ALIVE);
    }
    if present.proxy_connection {
        headers.remove(PROXY_CONNECTION);
    }
    if present.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present.http2_settings {
        headers.remove(HTTP2_SETTINGS);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present.upgrade {
        headers.remove(header::UPGRADE);
    }
    if present.te {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Which fixed hop-by-hop fields a message carries.
#[derive(Default)]
struct Present {
    connection: bool,
    keep_alive: bool,
    proxy_connection: bool,
    transfer_encoding: bool,
    upgrade: bool,
    te: bool,
    http2_settings: bool,
}

impl Present {
    fn note(&mut self, name: &HeaderName) {
        if name == header::CONNECTION {
            self.connection = true;
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == header::UPGRADE {
            self.upgrade = true;
        } else if name == header::TE {
            self.te = true;
        } else if name == KEEP_ALIVE {
            self.keep_alive = true;
        } else if name == PROXY_CONNECTION {
            self.proxy_connection = true;
        } else if name == HTTP2_SETTINGS {
            self.http2_settings = true;
        }
    }
}

/// Names that are hop-by-hop whatever `Connection` says (and `Connection` itself).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == HTTP2_SETTINGS
}

/// Whether the request asks for a protocol upgrade (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether every protocol `Upgrade` offers is one of `allowed` (lower-case protocol names,
/// compared without case and without a `/version`), and it offers at least one; `h2c` never
/// is. Of a request, an `Upgrade` that fails this is not forwarded (the request goes on as a
/// plain one); of a 101 response, it is refused.
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[Box<str>]) -> bool {
    let mut offered = false;
    for value in headers.get_all(header::UPGRADE) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for token in value.split(',') {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            let name = token.split_once('/').map_or(token, |(name, _)| name).trim();
            if name.eq_ignore_ascii_case(H2C)
                || !allowed.iter().any(|a| name.eq_ignore_ascii_case(a))
            {
                return false;
            }
            offered = true;
        }
    }
    offered
}

/// Joins several `Cookie` fields (an HTTP/2 client may split its cookies, RFC 9113 §8.2.3)
/// into one with `"; "`, as an HTTP/1.1 request must carry them. One field or none is left
/// as it is, without allocating.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// The client's address as the gateway believes it: the peer, or — when the peer is a trusted
/// proxy — the right-most untrusted address of `X-Forwarded-For`.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(value) = value.to_str() else {
            return peer_ip;
        };
        for item in value.split(',') {
            match item.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip.to_canonical()),
                Err(_) => return peer_ip,
            }
        }
    }
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(chain.first())
        .copied()
        .unwrap_or(peer_ip)
}

fn is_trusted(ip: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Sets `X-Forwarded-For`/`-Proto`/`-Host` for the upstream request. From a trusted peer the
/// incoming values are kept (and the peer appended to `For`); from anyone else they are replaced.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    trusted: &[ipnet::IpNet],
    proto: &'static str,
    host: Option<&str>,
) {
    let peer_ip = peer.ip().to_canonical();
    let from_trusted = is_trusted(peer_ip, trusted);
    let peer_text = peer_ip.to_string();
    let xff = match (from_trusted, joined(headers, &X_FORWARDED_FOR)) {
        (true, Some(prior)) => format!("{prior}, {peer_text}"),
        _ => peer_text,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(from_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(from_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host.and_then(|h| HeaderValue::from_str(h).ok()) {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?;
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

/// Keeps a well-formed incoming `x-request-id`, or generates one; returns its value.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let ok = !v.is_empty()
            && v.len() <= MAX_REQUEST_ID_LEN
            && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// A random 128-bit id in the UUID v4 text form, formatted without allocating.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::random();
    let bits = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut text = [b'-'; 36];
    let mut nibble = 32;
    for (i, byte) in text.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *byte = HEX[((bits >> (nibble * 4)) & 0xF) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn te_trailers_and_upgrade_survive_when_wanted() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true, None);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn connection_cannot_nominate_managed_headers() {
        let deadline = HeaderName::from_static("x-deadline-ms");
        let managed = [
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "traceparent",
            "tracestate",
            "grpc-timeout",
            "x-deadline-ms",
        ];
        let mut pairs = vec![("connection", "close, X-Other")];
        for name in managed {
            pairs.push(("connection", name));
            pairs.push((name, "v"));
        }
        pairs.push(("x-other", "1"));
        pairs.push(("http2-settings", "AAMAAABkAAQAAP__"));
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h, false, Some(&deadline));
        for name in managed {
            assert_eq!(h[name], "v", "{name}");
        }
        assert!(!h.contains_key("x-other"));
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("http2-settings"));
    }

    #[test]
    fn only_allowed_upgrade_tokens_pass_and_h2c_never() {
        let allowed: Vec<Box<str>> = vec!["websocket".into(), "h2c".into()];
        let case = |value: &str| upgrade_allowed(&map(&[("upgrade", value)]), &allowed);
        assert!(case("websocket"));
        assert!(case("WebSocket"));
        assert!(case("websocket/13"));
        for refused in ["h2c", "H2C", "websocket, h2c", "foo", "h2", " , ", ""] {
            assert!(!case(refused), "{refused:?}");
        }
        assert!(!upgrade_allowed(&HeaderMap::new(), &allowed));
    }

    #[test]
    fn cookie_crumbs_are_joined_and_a_single_cookie_is_untouched() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
        let mut h = map(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut h);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = HeaderMap::new();
        join_cookies(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers_from_untrusted_peer_are_replaced() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        set_forwarded(&mut h, peer, &[], "http", Some("api.example.com"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(client_ip(&h, peer, &[]), peer.ip());
    }

    #[test]
    fn forwarded_headers_from_trusted_peer_are_appended() {
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.7, 10.0.0.9"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            client_ip(&h, peer, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        set_forwarded(&mut h, peer, &trusted, "http", Some("a.example"));
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.0.0.9, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }

    #[test]
    fn garbage_forwarded_for_from_trusted_peer_falls_back_to_peer() {
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(&h, peer, &trusted), peer.ip());
    }

    #[test]
    fn request_id_is_kept_when_sane_and_generated_otherwise() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = map(&[("x-request-id", "has space")]);
        let id = ensure_request_id(&mut h);
        assert_ne!(id, "has space");
        assert_eq!(id.len(), 36);
        assert_eq!(h["x-request-id"], id);
        let mut h = HeaderMap::new();
        let a = ensure_request_id(&mut h);
        let b = ensure_request_id(&mut HeaderMap::new());
        assert_ne!(a, b);
        assert_eq!(&a.to_str().unwrap()[14..15], "4");
    }
}
