//! Load balancers: smooth weighted round robin, least-request (P2C) and Maglev consistent hashing.

/// Hash of the request's consistent-hash key (placeholder until the balancers land).
pub fn request_hash(
    _key: &crate::config::schema::HashKey,
    _req: &http::request::Parts,
    _client_ip: std::net::IpAddr,
) -> Option<u64> {
    None
}
