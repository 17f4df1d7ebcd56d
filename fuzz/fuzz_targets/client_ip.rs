//! `X-Forwarded-For` and the client IP (`proxy::headers::client_ip`, `set_forwarded`) for
//! any peer, any trusted-proxy list and any forwarded headers. Never panics; an untrusted
//! peer's headers are never believed; the client IP is the peer or an address of the
//! chain; `set_forwarded` always ends the chain with the peer.
//!
//! Input: a first line with the peer (`1.2.3.4:5678`), a second with the trusted networks
//! (comma-separated CIDRs), a third with the request host, then header lines.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::headers::{client_ip, set_forwarded};
use portcullis_fuzz::{header, lines, text};

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let Some(peer) = input
        .next()
        .and_then(text)
        .and_then(|p| p.parse::<SocketAddr>().ok())
    else {
        return;
    };
    let trusted: Vec<ipnet::IpNet> = input
        .next()
        .and_then(text)
        .unwrap_or("")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let host = input.next().and_then(text).filter(|h| !h.is_empty());
    let mut headers = HeaderMap::new();
    for line in input {
        if let Some((name, value)) = header(line) {
            headers.append(name, value);
        }
    }
    let peer_ip = peer.ip().to_canonical();
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer_ip));

    let ip = client_ip(&headers, peer, &trusted);
    if !peer_trusted {
        assert_eq!(
            ip, peer_ip,
            "an untrusted peer's X-Forwarded-For was believed"
        );
    } else if ip != peer_ip {
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .collect();
        assert!(
            chain.contains(&ip),
            "{ip} is neither the peer nor in the chain"
        );
    }

    let before = headers.clone();
    set_forwarded(&mut headers, peer, &trusted, "http", host);
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "one X-Forwarded-For line goes upstream");
    let xff = xff[0].to_str().unwrap_or_default();
    let peer_text = peer_ip.to_string();
    if peer_trusted && before.contains_key("x-forwarded-for") {
        if before
            .get_all("x-forwarded-for")
            .iter()
            .all(|v| v.to_str().is_ok())
        {
            assert!(xff.ends_with(&format!(", {peer_text}")), "{xff:?}");
        }
    } else {
        assert_eq!(xff, peer_text, "an untrusted chain was kept");
    }
    if !peer_trusted {
        assert_eq!(
            headers.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        let fwd_host: Vec<_> = headers.get_all("x-forwarded-host").iter().collect();
        assert!(fwd_host.len() <= 1);
        if let Some(v) = fwd_host.first() {
            assert_eq!(Some(v.as_bytes()), host.map(str::as_bytes));
        }
    }
});
